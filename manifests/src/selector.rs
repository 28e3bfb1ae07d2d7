//! `metadata.selector`: which devices run a container, by their labels, with
//! Kubernetes' label-selector semantics and its rules for keys and values (so that
//! a selector written for Kubernetes tooling means the same here).

use std::collections::BTreeMap;

use crate::schema::{LabelSelector, SelectorOperator, SelectorRequirement};

const MAX_PREFIX: usize = 253;
const MAX_NAME: usize = 63;

impl LabelSelector {
    /// Does a device with `labels` run the container? Every `matchLabels` pair and
    /// every requirement must hold; an empty selector holds everywhere.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl SelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            // As in Kubernetes: a device without the key is not in the set.
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label key as Kubernetes takes it: `[PREFIX/]NAME`, the prefix a DNS
/// subdomain of at most 253 characters, the name at most 63 characters of
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if prefix.len() > MAX_PREFIX || !prefix.split('.').all(label_ok) {
            return Err(format!(
                "{key:?}: the prefix before '/' must be a DNS subdomain (lower-case letters, \
                 digits, '-' and '.', at most {MAX_PREFIX} characters), e.g. fleet.example/group"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("{key:?}: the key has no name"));
    }
    check_name_part(name).map_err(|why| format!("{key:?}: the name {why}"))
}

/// A label value as Kubernetes takes it: empty, or like a key's name.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|why| format!("{value:?}: a label value {why}"))
}

fn check_name_part(text: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if text.len() > MAX_NAME {
        return Err(format!(
            "is {} characters long; the limit is {MAX_NAME}",
            text.len()
        ));
    }
    let starts_and_ends = text.chars().next().is_some_and(alnum) && text.ends_with(alnum);
    if !starts_and_ends || !text.chars().all(|c| alnum(c) || "-_.".contains(c)) {
        return Err(
            "must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                .to_owned(),
        );
    }
    Ok(())
}

/// Where a problem stands: a field's value, or (for a bad `matchLabels` key) its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Value,
    Key,
}

/// Every problem of a selector, as (field path, where in it, message).
pub(crate) fn problems(selector: &LabelSelector) -> Vec<(String, At, String)> {
    let mut out = Vec::new();
    for (key, value) in &selector.match_labels {
        let at = format!("metadata.selector.matchLabels.{key}");
        if let Err(message) = check_label_key(key) {
            out.push((at.clone(), At::Key, message));
        }
        if let Err(message) = check_label_value(value) {
            out.push((at, At::Value, message));
        }
    }
    for (i, requirement) in selector.match_expressions.iter().enumerate() {
        let at = format!("metadata.selector.matchExpressions[{i}]");
        if let Err(message) = check_label_key(&requirement.key) {
            out.push((format!("{at}.key"), At::Value, message));
        }
        let operator = requirement.operator;
        match (operator, requirement.values.is_empty()) {
            (SelectorOperator::In | SelectorOperator::NotIn, true) => out.push((
                format!("{at}.values"),
                At::Value,
                format!("{operator:?} needs at least one value"),
            )),
            (SelectorOperator::Exists | SelectorOperator::DoesNotExist, false) => out.push((
                format!("{at}.values"),
                At::Value,
                format!("{operator:?} takes no values; leave values out"),
            )),
            _ => {}
        }
        for (j, value) in requirement.values.iter().enumerate() {
            if let Err(message) = check_label_value(value) {
                out.push((format!("{at}.values[{j}]"), At::Value, message));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    fn expressions(requirements: Vec<SelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: requirements,
        }
    }

    #[test]
    fn an_empty_selector_selects_every_device() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_need_every_pair_with_its_value() {
        let selector = LabelSelector {
            match_labels: labels(&[("group", "cameras"), ("berth.dev/arch", "arm64")]),
            match_expressions: Vec::new(),
        };
        assert!(selector.matches(&labels(&[
            ("group", "cameras"),
            ("berth.dev/arch", "arm64"),
            ("site", "x")
        ])));
        assert!(!selector.matches(&labels(&[("group", "cameras")])));
        assert!(!selector.matches(&labels(&[
            ("group", "cameras"),
            ("berth.dev/arch", "amd64")
        ])));
    }

    #[test]
    fn in_and_not_in_follow_kubernetes_also_for_a_missing_key() {
        use SelectorOperator::*;
        let in_ = expressions(vec![requirement("group", In, &["cameras", "gates"])]);
        let not_in = expressions(vec![requirement("group", NotIn, &["cameras"])]);
        for (device, is_in, not_in_holds) in [
            (labels(&[("group", "gates")]), true, true),
            (labels(&[("group", "cameras")]), true, false),
            (labels(&[("group", "other")]), false, true),
            // Kubernetes: NotIn holds for a device without the key; In does not.
            (labels(&[]), false, true),
        ] {
            assert_eq!(in_.matches(&device), is_in, "In on {device:?}");
            assert_eq!(not_in.matches(&device), not_in_holds, "NotIn on {device:?}");
        }
    }

    #[test]
    fn exists_and_does_not_exist_look_at_the_key_alone() {
        use SelectorOperator::*;
        let exists = expressions(vec![requirement("gpu", Exists, &[])]);
        let absent = expressions(vec![requirement("gpu", DoesNotExist, &[])]);
        assert!(exists.matches(&labels(&[("gpu", "")])));
        assert!(!exists.matches(&labels(&[("cpu", "x")])));
        assert!(absent.matches(&labels(&[("cpu", "x")])));
        assert!(!absent.matches(&labels(&[("gpu", "nvidia")])));
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        use SelectorOperator::*;
        let selector = LabelSelector {
            match_labels: labels(&[("berth.dev/os", "linux")]),
            match_expressions: vec![
                requirement("group", In, &["cameras"]),
                requirement("berth.dev/hostname", NotIn, &["cam-02"]),
            ],
        };
        let device = |host: &str| {
            labels(&[
                ("berth.dev/os", "linux"),
                ("group", "cameras"),
                ("berth.dev/hostname", host),
            ])
        };
        assert!(selector.matches(&device("cam-01")));
        assert!(!selector.matches(&device("cam-02")));
    }

    #[test]
    fn keys_and_values_follow_kubernetes_syntax() {
        for good in [
            "group",
            "berth.dev/arch",
            "fleet.example/group",
            "a",
            "A_b.c-9",
            "x/y",
        ] {
            assert_eq!(check_label_key(good), Ok(()), "{good}");
        }
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}/a", "a".repeat(254));
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "a b",
            "Fleet.example/group",
            "a/b/c",
            ".a",
            "fleet..example/a",
            long_name.as_str(),
            long_prefix.as_str(),
        ] {
            assert!(check_label_key(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["", "cameras", "v1.2_3-x", "A"] {
            assert_eq!(check_label_value(good), Ok(()), "{good}");
        }
        for bad in ["-x", "x-", "a b", "a/b", "é", long_name.as_str()] {
            assert!(check_label_value(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn values_must_agree_with_the_operator() {
        use SelectorOperator::*;
        let selector = expressions(vec![
            requirement("a", In, &[]),
            requirement("b", NotIn, &[]),
            requirement("c", Exists, &["x"]),
            requirement("d", DoesNotExist, &["x"]),
            requirement("e", In, &["ok", "not ok"]),
        ]);
        let fields: Vec<String> = problems(&selector).into_iter().map(|(f, ..)| f).collect();
        assert_eq!(
            fields,
            [
                "metadata.selector.matchExpressions[0].values",
                "metadata.selector.matchExpressions[1].values",
                "metadata.selector.matchExpressions[2].values",
                "metadata.selector.matchExpressions[3].values",
                "metadata.selector.matchExpressions[4].values[1]",
            ]
        );
    }
}
