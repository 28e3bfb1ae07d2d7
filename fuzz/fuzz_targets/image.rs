//! OCI image documents: an image layout's index, manifest and config (runtime),
//! a registry's manifest or index response, auth.json and registries.conf
//! (registry). Seeds: fuzz/seeds/image.
#![no_main]

use std::sync::OnceLock;

static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| {
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a scratch dir: {e}"))
    });
    berth_runtime::fuzz::oci_layout(data, scratch.path());
    berth_registry::fuzz::registry_documents(data, scratch.path());
});
