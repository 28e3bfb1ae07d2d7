//! The bad corpus's speed and memory targets: `berth validate` on each input of
//! manifests/tests/corpus/bad/EXPECTED.tsv (and the generated ones: 10,000
//! levels of nesting, alias bombs, files at and over the size limit) takes at
//! most 100 ms and 50 MiB, measured per child with wait4. A release build only
//! (`cargo bench -p berth-operator --bench corpus`); `cargo test --benches` runs
//! it as a smoke test with tests/e2e/corpus.rs's loose bound. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failure report

// The e2e test's runner; its #[test]s and their constants are not this bench's.
#[allow(dead_code)]
#[path = "../e2e/corpus.rs"]
mod corpus;

use std::path::Path;
use std::time::Duration;

fn main() {
    // A debug build (cargo test --benches) gets the e2e test's loose bound.
    let limit = if cfg!(debug_assertions) {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(100)
    };
    let (failures, runs) = corpus::check_corpus(Path::new(env!("CARGO_BIN_EXE_berth")), limit);
    corpus::print_runs(&runs);
    let slowest = runs.iter().map(|(_, r)| r.wall).max().unwrap_or_default();
    let largest = runs
        .iter()
        .map(|(_, r)| r.max_rss_kib)
        .max()
        .unwrap_or_default();
    println!(
        "{} inputs: slowest {:.1} ms (limit {} ms), largest peak RSS {} KiB (limit {} KiB but for KNOWN_OVER)",
        runs.len(),
        slowest.as_secs_f64() * 1000.0,
        limit.as_millis(),
        largest,
        corpus::MAX_RSS_KIB
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
