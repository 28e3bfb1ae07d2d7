//! The bodies of the fuzz targets that read what an image or a state dir holds:
//! the libFuzzer targets in `fuzz/` call them, and so do their stable twins in
//! `runtime/tests/fuzz.rs`, so CI without a nightly toolchain still runs them. Each
//! takes arbitrary bytes; an error is an answer, a panic or a write outside the
//! scratch directory is the bug being looked for (they panic on the latter, which
//! is how libFuzzer learns of it).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::templates::{oci, unpack};

/// Unpack `archive` as a `tarball:` rootfs, as an OCI layer onto a rootfs that
/// already holds files and symlinks leading out (`up -> ..`, `abs -> /`, `out ->
/// ../../outside`), and as a layer alone in overlayfs's lower format, each into a
/// directory of its own under `scratch`. Panics if anything under `scratch` outside
/// those three directories changed, or anything appeared beside them.
pub fn unpack_archive(archive: &[u8], scratch: &Path) {
    let case = scratch.join("case");
    let boxed = case.join("box");
    let outside = case.join("outside");
    let setup = || -> std::io::Result<()> {
        std::fs::create_dir_all(&outside)?;
        std::fs::write(outside.join("canary"), b"untouched")?;
        std::fs::create_dir_all(boxed.join("apply/etc"))?;
        std::fs::write(boxed.join("apply/etc/passwd"), b"root:x:0:0::/:/bin/sh\n")?;
        std::os::unix::fs::symlink("..", boxed.join("apply/up"))?;
        std::os::unix::fs::symlink("/", boxed.join("apply/abs"))?;
        std::os::unix::fs::symlink("../../outside", boxed.join("apply/out"))?;
        std::fs::create_dir_all(boxed.join("keep"))?;
        std::fs::create_dir_all(boxed.join("overlay"))?;
        std::fs::write(boxed.join("archive"), archive)
    };
    if let Err(e) = setup() {
        panic!("cannot set up {}: {e}", case.display());
    }
    let inside = ["keep", "apply", "overlay"].map(|d| boxed.join(d));
    let before = snapshot(&case, &inside);
    let layer = boxed.join("archive");
    let _ = unpack::tarball(&layer, &inside[0]);
    let _ = unpack::layer(&layer, &inside[1], &unpack::Progress::with_total(0));
    let _ = unpack::overlay_layer(&layer, &inside[2]);
    let after = snapshot(&case, &inside);
    if before != after {
        let changed: Vec<_> = after
            .iter()
            .filter(|(path, entry)| before.get(*path) != Some(entry))
            .map(|(path, _)| path)
            .chain(before.keys().filter(|path| !after.contains_key(*path)))
            .collect();
        panic!("unpacking wrote outside the rootfs: {changed:?}");
    }
    if let Err(e) = crate::remove::remove_tree(&case) {
        panic!("cannot remove {}: {e}", case.display());
    }
}

/// Type and mode, size, owner, inode change time, link target.
type Stamp = (u32, u64, u32, u32, i64, i64, Option<PathBuf>);

/// Every entry under `root` outside the `skip` directories, with what a write
/// would change (type, size, mode, owner, link target, inode change time).
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Stamp> {
    let mut seen = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The rootfs directories are the unpacker's to change, themselves too.
            if skip.contains(&path) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let target = std::fs::read_link(&path).ok();
            seen.insert(
                path.clone(),
                (
                    meta.mode(),
                    meta.len(),
                    meta.uid(),
                    meta.gid(),
                    meta.ctime(),
                    meta.ctime_nsec(),
                    target,
                ),
            );
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    seen
}

/// Read `bytes` as each JSON document of an OCI image layout in turn: as its
/// `index.json`, as the image manifest an index names (by its real digest), and
/// as the image config a manifest names; and as a config alone. Nothing is
/// unpacked unless the bytes describe an image whose blobs are all there.
pub fn oci_layout(bytes: &[u8], scratch: &Path) {
    let layout = scratch.join("layout");
    let rootfs = scratch.join("rootfs");
    let digest = format!("sha256:{:x}", Sha256::digest(bytes));
    let blob = |content: &[u8]| -> std::io::Result<String> {
        let digest = format!("sha256:{:x}", Sha256::digest(content));
        std::fs::write(
            layout.join("blobs/sha256").join(&digest["sha256:".len()..]),
            content,
        )?;
        Ok(digest)
    };
    let index = |manifest: &str, size: usize| {
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{size},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
        )
    };
    let run = |index_json: &[u8]| -> std::io::Result<()> {
        std::fs::write(layout.join("index.json"), index_json)?;
        std::fs::create_dir_all(&rootfs)?;
        for reference in [Some("latest"), None] {
            let _ = oci::unpack(&layout, reference, &rootfs);
        }
        Ok(())
    };
    let cases = || -> std::io::Result<()> {
        std::fs::create_dir_all(layout.join("blobs/sha256"))?;
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        blob(bytes)?;
        // 1. the bytes as index.json.
        run(bytes)?;
        // 2. as the manifest the index names.
        run(index(&digest, bytes.len()).as_bytes())?;
        // 3. as the config of a manifest with one empty layer.
        let layer = blob(&[0u8; 1024])?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":1024}}]}}"#,
            bytes.len()
        );
        let manifest_digest = blob(manifest.as_bytes())?;
        run(index(&manifest_digest, manifest.len()).as_bytes())
    };
    if let Err(e) = cases() {
        panic!("cannot write the layout under {}: {e}", scratch.display());
    }
    let _ = oci::image_defaults(bytes);
    for dir in [&layout, &rootfs] {
        if let Err(e) = crate::remove::remove_tree(dir) {
            panic!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// Read `bytes` as a container's `status.json` and `config.json`, through the
/// readers the daemon and the CLI use.
pub fn status_and_config(bytes: &[u8], scratch: &Path) {
    let path = scratch.join("state.json");
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("cannot write {}: {e}", path.display());
    }
    let status = crate::Status::load(&path);
    let config = crate::SavedConfig::load(&path);
    // What reads back must write back: the daemon saves what it loaded.
    if let Ok(Some(status)) = status
        && let Err(e) = serde_json::to_vec(&status)
    {
        panic!("a status read from {bytes:?} does not serialize: {e}");
    }
    if let Ok(config) = config
        && let Err(e) = serde_json::to_vec(&config)
    {
        panic!("a config read from {bytes:?} does not serialize: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check the unpack target rests on: a write beside the rootfs shows, one
    /// inside it does not.
    #[test]
    fn the_snapshot_sees_writes_outside_the_rootfs_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("canary"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let skip = [rootfs.clone()];
        let before = snapshot(dir.path(), &skip);
        std::fs::write(rootfs.join("etc/passwd"), b"x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(before, snapshot(dir.path(), &skip));
        std::fs::write(dir.path().join("canary"), b"xy").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(before, snapshot(dir.path(), &skip));
        let before = snapshot(dir.path(), &skip);
        std::os::unix::fs::symlink("/", dir.path().join("escape"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(before, snapshot(dir.path(), &skip));
    }

    #[test]
    fn a_plain_archive_is_unpacked_all_three_ways() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/hostname", &b"fuzz\n"[..])
            .unwrap_or_else(|e| panic!("{e}"));
        let archive = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));
        // The three calls unpack_archive makes, on an archive that must unpack.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let layer = dir.path().join("layer.tar");
        std::fs::write(&layer, &archive).unwrap_or_else(|e| panic!("{e}"));
        let [a, b, c] = ["a", "b", "c"].map(|d| dir.path().join(d));
        for rootfs in [&a, &b, &c] {
            std::fs::create_dir(rootfs).unwrap_or_else(|e| panic!("{e}"));
        }
        let unpacked = [
            unpack::tarball(&layer, &a),
            unpack::layer(&layer, &b, &unpack::Progress::with_total(0)),
            unpack::overlay_layer(&layer, &c),
        ];
        for (result, rootfs) in unpacked.into_iter().zip([&a, &b, &c]) {
            result.unwrap_or_else(|e| panic!("{}: {e}", rootfs.display()));
            let hostname = std::fs::read(rootfs.join("etc/hostname"));
            assert_eq!(hostname.ok().as_deref(), Some(&b"fuzz\n"[..]));
        }
        unpack_archive(&archive, dir.path());
        assert!(!dir.path().join("case").exists(), "the case is cleaned up");
    }
}
