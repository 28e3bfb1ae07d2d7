//! The tar unpacker (tarball rootfs, OCI layer with whiteouts, overlayfs lower):
//! no input may write outside its rootfs. Seeds: fuzz/seeds/unpack (made by
//! runtime/tests/fuzz.rs). Run it as an unprivileged user where you can: as root
//! an escape that the scratch-dir check misses could write anywhere.
#![no_main]

use std::sync::OnceLock;

static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| {
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a scratch dir: {e}"))
    });
    berth_runtime::fuzz::unpack_archive(data, scratch.path());
});
