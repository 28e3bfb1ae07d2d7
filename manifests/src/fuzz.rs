//! The body of the manifest parser's fuzz target: the libFuzzer target in
//! `fuzz/` calls it, and so does its stable twin in `tests/fuzz.rs` (a seeded
//! mutation loop over the corpus), so CI without a nightly toolchain runs it too.

use std::path::Path;

use crate::{parse_bytes, reject_duplicate_names};

/// Check `bytes` as a manifest file, twice, as `berth validate` checks two files
/// together. Panics (the finding) if a diagnostic points before the start or past
/// the end of the text, or a valid container's spec does not serialize.
pub fn manifest(bytes: &[u8]) {
    let mut files = vec![
        parse_bytes(Path::new("a.yaml"), bytes),
        parse_bytes(Path::new("b.yaml"), bytes),
    ];
    reject_duplicate_names(&mut files);
    // libyaml ends a line at \n, \r\n or a lone \r.
    let lines = bytes
        .iter()
        .filter(|b| **b == b'\n' || **b == b'\r')
        .count()
        + 1;
    for diagnostic in files.iter().flat_map(|f| &f.diagnostics) {
        assert!(
            diagnostic.line >= 1 && diagnostic.column >= 1 && diagnostic.line <= lines,
            "{diagnostic} points outside a text of {lines} lines"
        );
    }
    for container in files.iter().flat_map(|f| &f.containers) {
        if let Err(e) = serde_json::to_string(&container.spec) {
            panic!("the spec of {} does not serialize: {e}", container.name);
        }
    }
}
