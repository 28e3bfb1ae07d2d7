//! The stable twin of the fuzz target `state` (its database half): records and
//! events as the store reads them back, from the seeds in `fuzz/seeds/state/`
//! and seeded mutations of them (`fuzz/mutate.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

#[test]
fn arbitrary_database_values_are_skipped_not_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/state");
    let mut record = berth_state::Record::new("web");
    record.message = Some("started".to_owned());
    let mut inputs = vec![serde_json::to_vec(&record).unwrap()];
    if std::env::var_os("BERTH_FUZZ_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("record.json"), &inputs[0]).unwrap();
    }
    inputs.extend(mutate::seed_files(&dir));
    let dictionary: &[&[u8]] = &[
        b"\"phase\":\"Running\"",
        b"\"desired\":",
        b"null",
        b"4294967296",
        b"{",
        b"[",
    ];
    mutate::run(
        "state",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(2000),
        berth_state::fuzz::records,
    );
}
