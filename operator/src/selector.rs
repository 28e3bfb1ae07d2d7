//! Label selectors in Kubernetes' equality-based syntax (`app=web,tier!=db`),
//! for `berth get -l` and the API's `labelSelector=`.

use std::collections::BTreeMap;

/// One term of a selector.
#[derive(Debug, PartialEq, Eq)]
enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also true of a container without the key, as in Kubernetes.
    NotEquals(String, String),
    /// `key`.
    Exists(String),
    /// `!key`.
    Absent(String),
}

/// Comma-separated terms, every one of which must hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        text.split(',')
            .map(str::trim)
            .map(|term| {
                let requirement = if let Some((key, value)) = term.split_once("!=") {
                    Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
                } else if let Some((key, value)) =
                    term.split_once("==").or_else(|| term.split_once('='))
                {
                    Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
                } else if let Some(key) = term.strip_prefix('!') {
                    Requirement::Absent(key.trim().to_owned())
                } else {
                    Requirement::Exists(term.to_owned())
                };
                let (Requirement::Equals(key, _)
                | Requirement::NotEquals(key, _)
                | Requirement::Exists(key)
                | Requirement::Absent(key)) = &requirement;
                if key.is_empty() || key.contains(char::is_whitespace) {
                    return Err(format!(
                        "bad label selector term {term:?}: use KEY=VALUE, KEY!=VALUE, KEY or !KEY, comma-separated"
                    ));
                }
                Ok(requirement)
            })
            .collect::<Result<_, _>>()
            .map(Selector)
    }

    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::Absent(key) => !labels.contains_key(key),
        })
    }
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

    #[test]
    fn a_selector_holds_when_every_term_does_and_inequality_holds_without_the_key() {
        let selector = Selector::parse("app=web, tier!=db").unwrap();
        assert!(selector.selects(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(selector.selects(&labels(&[("app", "web")])));
        assert!(!selector.selects(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!selector.selects(&labels(&[("tier", "front")])));
        let selector = Selector::parse("app==web,gpu,!canary").unwrap();
        assert!(selector.selects(&labels(&[("app", "web"), ("gpu", "")])));
        assert!(!selector.selects(&labels(&[("app", "web"), ("gpu", ""), ("canary", "1")])));
        assert!(!selector.selects(&labels(&[("app", "web")])));
    }

    #[test]
    fn a_selector_term_without_a_key_is_refused() {
        for bad in ["=web", "app=web,", "!", "tier in (db)"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
