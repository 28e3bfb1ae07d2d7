//! No input makes the parser panic: arbitrary bytes, arbitrary YAML built from
//! the manifest's own field names, and random edits of a real manifest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use proptest::prelude::*;
use serde_yaml::Value;

const WORDS: &[&str] = &[
    "apiVersion",
    "berth.dev/v1",
    "kind",
    "Container",
    "metadata",
    "name",
    "labels",
    "spec",
    "rootfs",
    "template",
    "host",
    "busybox",
    "script",
    "args",
    "path",
    "tarball",
    "oci",
    "layout",
    "ref",
    "command",
    "env",
    "workingDir",
    "hostname",
    "state",
    "Running",
    "Stopped",
    "restartPolicy",
    "Always",
    "stopSignal",
    "SIGTERM",
    "stopTimeout",
    "10s",
    "resources",
    "memory",
    "64Mi",
    "pids",
    "cpus",
    "500m",
    "network",
    "mode",
    "none",
    "bridge",
    "mounts",
    "source",
    "target",
    "readOnly",
    "security",
    "readOnlyRootfs",
    "capabilities",
    "add",
    "drop",
    "seccomp",
    "profile",
    "/srv",
    "../etc",
    "",
    "web",
    "ALL",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn yaml_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(WORDS), inner), 0..8).prop_map(|pairs| {
                Value::Mapping(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (Value::String(k.to_owned()), v))
                        .collect(),
                )
            }),
        ]
    })
}

const EXAMPLE: &str = include_str!("../examples/web.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = berth_manifests::parse_bytes(Path::new("fuzz.yaml"), &bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,512}") {
        let _ = berth_manifests::parse_str(Path::new("fuzz.yaml"), &text);
    }

    #[test]
    fn arbitrary_yaml_documents_never_panic(docs in prop::collection::vec(yaml_value(), 1..4)) {
        let text: String = docs
            .iter()
            .filter_map(|doc| serde_yaml::to_string(doc).ok())
            .collect::<Vec<_>>()
            .join("---\n");
        let parsed = berth_manifests::parse_str(Path::new("fuzz.yaml"), &text);
        for d in &parsed.diagnostics {
            prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
        }
    }

    #[test]
    fn edits_of_a_real_manifest_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, ".{0,3}"), 1..6)
    ) {
        let mut text = EXAMPLE.to_owned();
        for (at, op, insert) in edits {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match op {
                0 => text.insert_str(at, &insert),
                1 => { let end = text[at..].char_indices().nth(3).map_or(text.len(), |(i, _)| at + i); text.replace_range(at..end, ""); }
                2 => text.insert(at, '\n'),
                _ => text.insert_str(at, ": "),
            }
        }
        let _ = berth_manifests::parse_str(Path::new("fuzz.yaml"), &text);
    }
}
