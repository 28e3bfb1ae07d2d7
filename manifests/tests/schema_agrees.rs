//! `berth schema` says what `berth validate` says: a standard validator (Python's
//! `jsonschema`, the one editors' YAML tooling and CI scripts use) given the schema
//! accepts exactly the manifests of the corpus that `parse_str` accepts. The Rust
//! `jsonschema` crate must give the same verdict as Python's on every document.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_manifests::{json_schema, manifest_files, parse_str};

/// Validates every instance with Python's jsonschema (the schema's own draft);
/// one verdict per instance, in order.
const CHECK: &str = r#"
import json, sys
import jsonschema
job = json.load(sys.stdin)
cls = jsonschema.validators.validator_for(job["schema"])
cls.check_schema(job["schema"])
v = cls(job["schema"])
print(json.dumps([[e.message for e in v.iter_errors(i)] for i in job["instances"]]))
"#;

fn python_has_jsonschema() -> bool {
    Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The schema errors of each instance, from Python's jsonschema.
fn python_verdicts(instances: &[serde_json::Value]) -> Vec<Vec<String>> {
    assert!(
        python_has_jsonschema(),
        "Python's jsonschema is missing: apt-get install python3-jsonschema"
    );
    let job = serde_json::json!({ "schema": json_schema(), "instances": instances });
    let mut child = Command::new("python3")
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 jsonschema failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let (files, errors) = manifest_files(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    files
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    // As berth reads it: a byte order mark is not part of the text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        // An empty document desires nothing; it is no manifest to check.
        .filter(|document: &serde_json::Value| !document.is_null())
        .collect()
}

/// (file, berth validate's verdict, the schema's errors) for every file.
fn verdicts(files: &[PathBuf]) -> Vec<(PathBuf, bool, Vec<String>)> {
    let mut per_file = Vec::new();
    let mut instances = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = documents(&text);
        per_file.push((
            file.clone(),
            parse_str(file, &text).diagnostics.is_empty(),
            docs.len(),
        ));
        instances.extend(docs);
    }
    let python = python_verdicts(&instances);
    let rust = jsonschema::validator_for(&json_schema()).unwrap();
    for (instance, errors) in instances.iter().zip(&python) {
        assert_eq!(
            rust.is_valid(instance),
            errors.is_empty(),
            "Python's and Rust's jsonschema disagree on {instance}: {errors:?}"
        );
    }
    let mut schema = python.into_iter();
    per_file
        .into_iter()
        .map(|(file, valid, n)| {
            let errors: Vec<String> = schema.by_ref().take(n).flatten().collect();
            (file, valid, errors)
        })
        .collect()
}

#[test]
fn the_schema_accepts_what_validate_accepts() {
    let mut files = corpus("good");
    files.extend(manifest_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).0);
    assert!(files.len() >= 8, "{files:?}");
    let mut disagreements = Vec::new();
    for (file, valid, errors) in verdicts(&files) {
        assert!(valid, "berth validate rejects {}", file.display());
        if !errors.is_empty() {
            disagreements.push(format!("{}: {errors:?}", file.display()));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the schema rejects what berth validate accepts: {disagreements:#?}"
    );
}

#[path = "corpus/table.rs"]
mod table;

#[test]
fn the_schema_rejects_what_validate_rejects() {
    // The files of the bad corpus's table marked y: the others are checks of
    // `berth validate`'s alone, or not YAML at all.
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad");
    let mut files: Vec<PathBuf> = table::expected()
        .into_iter()
        .filter(|row| row.schema)
        .map(|row| bad.join(row.path))
        .collect();
    files.dedup();
    assert!(files.len() >= 15, "{files:?}");
    let mut disagreements = Vec::new();
    for (file, valid, errors) in verdicts(&files) {
        assert!(!valid, "berth validate accepts {}", file.display());
        if errors.is_empty() {
            disagreements.push(file.display().to_string());
        }
    }
    assert!(
        disagreements.is_empty(),
        "the schema accepts what berth validate rejects: {disagreements:#?}"
    );
}
