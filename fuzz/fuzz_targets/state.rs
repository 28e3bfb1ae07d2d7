//! What berth reads back from its state: a container's status.json and
//! config.json (runtime), the state database's records and events (state).
//! Seeds: fuzz/seeds/state.
#![no_main]

use std::sync::OnceLock;

static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| {
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a scratch dir: {e}"))
    });
    berth_runtime::fuzz::status_and_config(data, scratch.path());
    berth_state::fuzz::records(data);
});
