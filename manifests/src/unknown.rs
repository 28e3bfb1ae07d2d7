//! Unknown fields, found by walking a document against `berth schema` before it
//! is deserialized. serde's `deny_unknown_fields` stops at the first one and hides
//! every other problem of the document; found here, they are reported alongside
//! the rest, and serde (which now skips them) goes on to check what is known.

use std::sync::LazyLock;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// A key that no schema object at its place defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The mapping it is in, as `locate` writes paths (`spec.mounts[0]`); empty at the top.
    pub parent: String,
    pub key: String,
    /// The fields that mapping may have, in the schema's (alphabetical) order.
    pub expected: Vec<String>,
}

impl Unknown {
    /// The key's own path, for its position.
    pub fn path(&self) -> String {
        join(&self.parent, &self.key)
    }
}

static SCHEMA: LazyLock<Json> = LazyLock::new(crate::json_schema);

/// Every unknown key of `document`, in document order.
pub fn fields(document: &Yaml) -> Vec<Unknown> {
    let mut out = Vec::new();
    walk(document, &SCHEMA, "", &mut out);
    out
}

/// The schema `node` stands for: its `$ref` target, or itself.
fn resolve(node: &Json) -> &Json {
    match node.get("$ref").and_then(Json::as_str) {
        Some(reference) => SCHEMA
            .get("$defs")
            .and_then(|defs| defs.get(reference.trim_start_matches("#/$defs/")))
            .unwrap_or(node),
        None => node,
    }
}

/// `node` and its `anyOf`/`oneOf` alternatives, resolved: the untagged types
/// (a name or a mapping) are alternatives.
fn alternatives(node: &Json) -> Vec<&Json> {
    let node = resolve(node);
    let mut all = vec![node];
    for key in ["anyOf", "oneOf"] {
        for alternative in node.get(key).and_then(Json::as_array).into_iter().flatten() {
            all.push(resolve(alternative));
        }
    }
    all
}

fn walk(value: &Yaml, node: &Json, path: &str, out: &mut Vec<Unknown>) {
    match value {
        Yaml::Mapping(mapping) => {
            let Some(object) = alternatives(node)
                .into_iter()
                .find(|n| n.get("properties").is_some())
            else {
                return;
            };
            let closed = object.get("additionalProperties") == Some(&Json::Bool(false));
            let properties = object.get("properties").and_then(Json::as_object);
            for (key, child) in mapping {
                // A key that is not a string is serde's to report.
                let Some(key) = key.as_str() else { continue };
                match properties.and_then(|p| p.get(key)) {
                    Some(schema) => walk(child, schema, &join(path, key), out),
                    None if closed => out.push(Unknown {
                        parent: path.to_owned(),
                        key: key.to_owned(),
                        expected: properties
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k.clone())
                            .collect(),
                    }),
                    None => {}
                }
            }
        }
        Yaml::Sequence(items) => {
            let Some(schema) = alternatives(node).into_iter().find_map(|n| n.get("items")) else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                walk(item, schema, &format!("{path}[{i}]"), out);
            }
        }
        Yaml::Tagged(tagged) => walk(&tagged.value, node, path, out),
        _ => {}
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown_paths(text: &str) -> Vec<String> {
        let document: Yaml = serde_yaml::from_str(text).unwrap_or(Yaml::Null);
        fields(&document).iter().map(Unknown::path).collect()
    }

    #[test]
    fn unknown_keys_are_found_at_every_depth_and_maps_stay_open() {
        let text = "apiVersion: berth.dev/v1\nkind: Container\nextra: 1\n\
                    metadata: {name: a, labels: {any: thing}}\n\
                    spec:\n  command: [x]\n  env: {ANY: x}\n  mounts: [{source: /a, target: /b, ro: true}]\n  \
                    rootfs: {template: {script: /s, argz: []}}\n  security: {userns: {uidMap: [{container: 0, host: 1, size: 1, x: 1}]}}\n";
        assert_eq!(
            unknown_paths(text),
            [
                "extra",
                "spec.mounts[0].ro",
                "spec.rootfs.template.argz",
                "spec.security.userns.uidMap[0].x"
            ]
        );
    }
}
