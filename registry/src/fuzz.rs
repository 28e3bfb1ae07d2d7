//! The body of the fuzz target for what a registry sends and what the host's
//! registry settings say: the libFuzzer target in `fuzz/` calls it, and so does
//! its stable twin in `registry/tests/fuzz.rs`. Arbitrary bytes must give an
//! answer or an error, never a panic.

use std::path::Path;
use std::sync::OnceLock;

use oci_client::manifest::OciImageManifest;

use crate::{INDEX_TYPES, PullOptions, Session, media_type};

/// Read `bytes` as a registry's manifest response (an index, whose platform is
/// chosen, or an image manifest, whose sizes are checked), as `auth.json` and
/// as `registries.conf`.
pub fn registry_documents(bytes: &[u8], scratch: &Path) {
    // One session: making one reads the host's auth files and builds a client.
    static SESSION: OnceLock<Option<Session>> = OnceLock::new();
    let session = SESSION.get_or_init(|| {
        let reference = "127.0.0.1:5000/fuzz/app:1".parse().ok()?;
        Session::new(&reference, &PullOptions::default()).ok()
    });
    let Some(session) = session else {
        panic!("cannot make a registry session for 127.0.0.1:5000/fuzz/app:1");
    };
    if INDEX_TYPES.contains(&media_type(bytes).as_str()) {
        let _ = session.choose_platform(bytes);
    }
    if let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(bytes) {
        for descriptor in manifest.layers.iter().chain([&manifest.config]) {
            let _ = session.size(descriptor);
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(conf) = crate::RegistriesConf::parse(text)
    {
        let _ = conf.find("127.0.0.1:5000", "fuzz/app");
    }
    let authfile = scratch.join("auth.json");
    if let Err(e) = std::fs::write(&authfile, bytes) {
        panic!("cannot write {}: {e}", authfile.display());
    }
    let _ = crate::auth::credentials(
        &crate::auth::auth_files(Some(&authfile)),
        "127.0.0.1:5000",
        "fuzz/app",
    );
}
