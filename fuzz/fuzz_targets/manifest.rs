//! The manifest parser: what `berth validate` and the daemon's watcher read.
//! Seeds: manifests/tests/corpus/{good,bad} and manifests/examples.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_manifests::fuzz::manifest(data));
