//! The stable twin of the fuzz target `image` (its registry half): what a
//! registry sends and the host's registry settings, read from the seeds in
//! `fuzz/seeds/image/` and seeded mutations of them (`fuzz/mutate.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

#[test]
fn arbitrary_manifests_indexes_and_registry_settings_are_errors_not_panics() {
    let inputs =
        mutate::seed_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/image"));
    let scratch = tempfile::tempdir().unwrap();
    let dictionary: &[&[u8]] = &[
        b"\"manifests\":[",
        b"\"mediaType\":\"application/vnd.oci.image.index.v1+json\"",
        b"\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        b"\"size\":-9223372036854775808",
        b"[[registry]]\n",
        b"prefix = \"",
        b"\"auth\":\"",
    ];
    mutate::run(
        "registry",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(2000),
        |bytes| {
            berth_registry::fuzz::registry_documents(bytes, scratch.path());
        },
    );
}
