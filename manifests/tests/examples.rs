//! The shipped examples validate, keep their spec hash, and match `berth schema`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};

use berth_manifests::{manifest_files, parse_file, reject_duplicate_names};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (files, errors) = manifest_files(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(files.len() >= 3, "examples missing from {}", dir.display());
    files
}

#[test]
fn every_example_validates() {
    let mut parsed: Vec<_> = examples().iter().map(|f| parse_file(f)).collect();
    reject_duplicate_names(&mut parsed);
    for file in &parsed {
        assert!(
            file.is_valid(),
            "{}: {:?}",
            file.path.display(),
            file.diagnostics
        );
        assert!(
            !file.containers.is_empty(),
            "{} holds no container",
            file.path.display()
        );
    }
}

/// A changed hash restarts every workload on upgrade (kubernetes#87461). If this
/// fails, the canonical form of a spec changed: make the change hash-neutral
/// (skip new fields at their default) instead of updating the pin.
#[test]
fn the_spec_hash_of_an_example_is_pinned() {
    // hello.yaml as it was before `init` existed: fields added since must leave it be.
    let text = "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: hello\n  \
                labels: {app: hello}\nspec:\n  \
                command: [\"/bin/sh\", \"-c\", \"echo hello from $(hostname); exec sleep infinity\"]\n  \
                resources: {memory: 32Mi, pids: 64}\n";
    let parsed = berth_manifests::parse_str(Path::new("hello.yaml"), text);
    assert_eq!(
        parsed.containers[0].hash,
        "sha256:4793a32d6d903aa027e048cec39037ac0b71fe886db07ca621cea70d6d8c310e"
    );
}

#[test]
fn the_spec_hash_ignores_key_order_style_and_run_state() {
    let a = "apiVersion: berth.dev/v1\nkind: Container\nmetadata: {name: a}\n\
             spec: {command: [x], env: {A: '1', B: '2'}, resources: {memory: 64Mi}}\n";
    let b = "kind: Container\napiVersion: berth.dev/v1\nmetadata:\n  name: a\n  labels: {x: y}\nspec:\n  state: Stopped\n  \
             resources:\n    memory: 67108864\n  env:\n    B: \"2\"\n    A: \"1\"\n  command:\n    - x\n";
    let hash = |text| {
        berth_manifests::parse_str(Path::new("m.yaml"), text).containers[0]
            .hash
            .clone()
    };
    assert_eq!(hash(a), hash(b));
    assert_ne!(hash(a), hash(&a.replace("64Mi", "65Mi")));
}

#[test]
fn the_json_schema_accepts_the_examples_and_rejects_typos() {
    let schema = berth_manifests::json_schema();
    let validator =
        jsonschema::validator_for(&schema).expect("berth schema is a valid JSON Schema");
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", file.display());
        }
    }
    let typo: serde_json::Value = serde_json::json!({
        "apiVersion": "berth.dev/v1", "kind": "Container", "metadata": {"name": "a"},
        "spec": {"command": ["x"], "restartPolcy": "Always"}
    });
    assert!(!validator.is_valid(&typo));
    let wrong_kind = serde_json::json!({
        "apiVersion": "berth.dev/v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"command": ["x"]}
    });
    assert!(!validator.is_valid(&wrong_kind));
}

/// Every field path of the schema, e.g. `spec.mounts[].target`.
fn schema_fields(schema: &serde_json::Value) -> Vec<String> {
    fn walk(node: &serde_json::Value, defs: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        let node = match node["$ref"].as_str() {
            Some(reference) => &defs[reference.trim_start_matches("#/$defs/")],
            None => node,
        };
        for key in ["anyOf", "oneOf"] {
            for alternative in node[key].as_array().into_iter().flatten() {
                walk(alternative, defs, path, out);
            }
        }
        if node.get("items").is_some() {
            walk(&node["items"], defs, &format!("{path}[]"), out);
        }
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            out.push(child_path.clone());
            walk(child, defs, &child_path, out);
        }
    }
    let mut out = Vec::new();
    walk(schema, &schema["$defs"], "", &mut out);
    out
}

#[test]
fn the_readme_reference_lists_every_schema_field() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let fields = schema_fields(&berth_manifests::json_schema());
    assert!(fields.len() > 30, "{fields:?}");
    let missing: Vec<_> = fields
        .iter()
        .filter(|f| !readme.contains(&format!("| `{f}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's manifest reference lacks {missing:?}"
    );
}

#[test]
fn the_readme_example_manifest_is_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("```yaml\n").expect("README has a yaml example") + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let parsed = berth_manifests::parse_str(Path::new("README.md"), &readme[start..end]);
    assert!(parsed.is_valid(), "{:?}", parsed.diagnostics);
    assert_eq!(parsed.containers.len(), 1);
}
