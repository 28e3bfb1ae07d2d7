//! The stable twin of the fuzz target `manifest`: the target's body run over
//! the good and bad corpus and the examples, then over seeded mutations of them
//! (`fuzz/mutate.rs`). `no_panic.rs` adds proptest's structured inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

#[test]
fn mutations_of_the_corpus_never_panic_and_point_inside_the_text() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    for dir in ["tests/corpus/good", "tests/corpus/bad", "examples"] {
        inputs.extend(mutate::seed_files(&here.join(dir)));
    }
    assert!(inputs.len() > 100, "{} seeds", inputs.len());
    let dictionary: &[&[u8]] = &[
        b"apiVersion: berth.dev/v1\n",
        b"kind: Container\n",
        b"metadata:\n  name: ",
        b"spec:\n  ",
        b"command: [",
        b"&a ",
        b"*a",
        b"<<: ",
        b"---\n",
        b"!!binary ",
        b"!!str ",
        b"? ",
        b"%YAML 1.1\n",
        b"\xef\xbb\xbf",
        b"\r\n",
        b"\t",
        b"mounts: [{source: /srv, target: ",
        b"resources: {memory: ",
        b"selector: {matchExpressions: [{key: ",
    ];
    mutate::run(
        "manifest",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(20_000),
        berth_manifests::fuzz::manifest,
    );
}
