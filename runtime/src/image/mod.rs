//! The image store, `<state-dir>/images/`: what `berth pull` brings in and
//! containers of registry images are made from.
//!
//! - `blobs/sha256/<hex>`: manifests, configs and layers by digest, each verified
//!   while it streamed in (`BlobWriter`);
//! - `layers/<hex>/`: each layer unpacked once, in overlayfs's lower format,
//!   shared by every image that has it;
//! - `refs/<sha256 of the reference>.json`: one record per reference;
//! - `tmp/`: blobs and layers being written; never read, emptied on open;
//! - `lock`: `flock`ed per operation. Adding (a pull) and reading take it shared:
//!   everything added is content-addressed and renamed into place whole, so two
//!   pulls cannot spoil each other. Removing (`remove`, `gc`, emptying `tmp/`)
//!   takes it exclusive, so nothing a running pull has written is taken away
//!   before its record names it.

pub(crate) mod blob;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_manifests::ImageRef;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use blob::{BlobWriter, sha256_of};

use crate::config::{ImageDefaults, SavedConfig, read_json};
use crate::error::{Error, Result, io};
use crate::remove;

/// Manifests and configs are read whole; refuse giants.
const MAX_JSON_BLOB: u64 = 4 << 20;

/// An image in the store, ready to be a container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredImage {
    pub reference: ImageRef,
    /// The image manifest's digest (for a multi-platform image: this platform's).
    pub digest: String,
    /// The digest of the multi-platform index the reference named, if it named
    /// one: what the registry answers for the tag (`registry_digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub config_digest: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
    /// Command, env, working dir and user from the image config; `digest` set.
    pub defaults: ImageDefaults,
    /// The unpacked layer directories, bottom first: overlayfs lowers (mount them
    /// with the top one first in `lowerdir=`). Not kept in the record.
    #[serde(skip)]
    pub lowers: Vec<PathBuf>,
    /// Bytes of the config and the (compressed) layers, as the registry sent them.
    pub size: u64,
    /// Seconds since the epoch.
    pub pulled_at: u64,
}

impl StoredImage {
    /// The digest the registry gives for the reference when this image was
    /// pulled: compare it with `resolve_digest` to see whether a tag moved.
    pub fn registry_digest(&self) -> &str {
        self.index_digest.as_deref().unwrap_or(&self.digest)
    }
}

/// The store's lock, shared, held while it lives.
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] Flock<File>);

/// What `gc` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub blobs: usize,
    pub layers: usize,
    /// Bytes of the files removed (blobs and unpacked layers).
    pub bytes: u64,
}

/// The store under a state directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Open (and make) `<state_dir>/images`. Leftovers in `tmp/` of a pull that
    /// was killed are removed here, unless another process is using the store.
    pub fn open(state_dir: &Path) -> Result<ImageStore> {
        let store = ImageStore {
            root: state_dir.join("images"),
        };
        // 0700, as berth makes its state dir and `containers/`.
        for dir in [
            store.root.clone(),
            store.root.join("blobs/sha256"),
            store.layers_dir(),
            store.refs_dir(),
            store.tmp_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("create", &dir))?;
        }
        if let Some(_lock) = store.try_lock_exclusive()? {
            store.empty_tmp()?;
        }
        Ok(store)
    }

    /// `<state-dir>/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs/sha256")
            .join(blob::sha256_hex(digest)?))
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn layer_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.layers_dir().join(blob::sha256_hex(digest)?))
    }

    fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    fn record_path(&self, reference: &ImageRef) -> PathBuf {
        let name = blob::sha256_of(reference.to_string().as_bytes());
        let hex = name.trim_start_matches("sha256:");
        self.refs_dir().join(format!("{hex}.json"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The image stored for `reference`, if any.
    pub fn get(&self, reference: &ImageRef) -> Result<Option<StoredImage>> {
        let _lock = self.lock(FlockArg::LockShared)?;
        self.read_record(&self.record_path(reference))
    }

    /// The image stored for `reference`, with the store's shared lock, held until
    /// the `StoreLock` is dropped: no `rmi` or `gc` takes it away meanwhile (a
    /// create holds it until its config names the image).
    pub fn get_locked(&self, reference: &ImageRef) -> Result<Option<(StoredImage, StoreLock)>> {
        let lock = self.lock(FlockArg::LockShared)?;
        Ok(self
            .read_record(&self.record_path(reference))?
            .map(|image| (image, StoreLock(lock))))
    }

    /// Every stored image, sorted by reference.
    pub fn list(&self) -> Result<Vec<StoredImage>> {
        let _lock = self.lock(FlockArg::LockShared)?;
        self.records()
    }

    /// Forget the image of `reference` (its blobs and layers stay until `gc`).
    /// Returns whether there was one. Whether a container still uses it is the
    /// caller's to check first (`containers_by_image`).
    pub fn remove(&self, reference: &ImageRef) -> Result<bool> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let path = self.record_path(reference);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.refs_dir())?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Remove every blob and unpacked layer that no image record names.
    pub fn gc(&self) -> Result<Freed> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        self.empty_tmp()?;
        let mut wanted = BTreeSet::new();
        for image in self.records()? {
            wanted.insert(image.digest.clone());
            wanted.insert(image.config_digest.clone());
            wanted.extend(image.index_digest.clone());
            wanted.extend(image.layers.iter().cloned());
        }
        let wanted: BTreeSet<String> = wanted
            .iter()
            .filter_map(|d| blob::sha256_hex(d).ok().map(str::to_owned))
            .collect();
        // Layers a container reads at every start stay, whether or not a record
        // still names them (its tag moved on, or an rmi raced its create). Known
        // by device and inode: config.json names them by whatever path the state
        // dir had for its create (a symlink, a relative path).
        let state_dir = self.root.parent().unwrap_or(&self.root);
        let mut in_use = BTreeSet::new();
        for (_, config) in container_configs(state_dir)? {
            for lower in config.layers.iter().flat_map(|l| l.lowers.iter()) {
                if let Ok(meta) = std::fs::metadata(lower) {
                    in_use.insert((meta.dev(), meta.ino()));
                }
            }
        }
        let mut freed = Freed::default();
        let blobs = self.root.join("blobs/sha256");
        for (name, path) in entries(&blobs)? {
            if !wanted.contains(&name) {
                freed.bytes += std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                freed.blobs += 1;
            }
        }
        for (name, path) in entries(&self.layers_dir())? {
            let used = std::fs::symlink_metadata(&path)
                .is_ok_and(|meta| in_use.contains(&(meta.dev(), meta.ino())));
            if !wanted.contains(&name) && !used {
                freed.bytes += tree_size(&path, 0);
                remove::remove_tree(&path)?;
                freed.layers += 1;
            }
        }
        sync_dir(&blobs)?;
        sync_dir(&self.layers_dir())?;
        Ok(freed)
    }

    /// Begin adding to the store: the shared lock is held until the `Pull` is
    /// dropped, so no `gc` removes what it writes before its record is in place.
    pub fn begin_pull(&self) -> Result<Pull<'_>> {
        Ok(Pull {
            store: self,
            _lock: self.lock(FlockArg::LockShared)?,
        })
    }

    fn lock(&self, how: FlockArg) -> Result<Flock<File>> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        // Waits for the holder: a pull in another process finishes, then we go on.
        Flock::lock(file, how).map_err(|(_, e)| crate::error::errno("flock", &path)(e))
    }

    fn try_lock_exclusive(&self) -> Result<Option<Flock<File>>> {
        match self.lock(FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err(Error::Io { source, .. })
                if source.raw_os_error() == Some(nix::errno::Errno::EWOULDBLOCK as i32) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Called with the lock held exclusive.
    fn empty_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        for (_, path) in entries(&tmp)? {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => remove::remove_tree(&path)?,
                Ok(_) => std::fs::remove_file(&path).map_err(io("remove", &path))?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn records(&self) -> Result<Vec<StoredImage>> {
        let mut images = Vec::new();
        for (name, path) in entries(&self.refs_dir())? {
            if name.ends_with(".json")
                && let Some(image) = self.read_record(&path)?
            {
                images.push(image);
            }
        }
        images.sort_by_key(|image| image.reference.to_string());
        Ok(images)
    }

    fn read_record(&self, path: &Path) -> Result<Option<StoredImage>> {
        let Some(mut image) = read_json::<StoredImage>(path)? else {
            return Ok(None);
        };
        image.lowers = image
            .layers
            .iter()
            .map(|digest| self.layer_path(digest))
            .collect::<Result<_>>()?;
        Ok(Some(image))
    }
}

/// A pull under way: what a registry client writes into the store through.
#[derive(Debug)]
pub struct Pull<'a> {
    store: &'a ImageStore,
    _lock: Flock<File>,
}

impl Pull<'_> {
    /// Is this blob in the store already (verified when it came in)?
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.store.blob_path(digest)?.is_file())
    }

    /// Is this layer unpacked already?
    pub fn has_layer(&self, digest: &str) -> Result<bool> {
        Ok(self.store.layer_path(digest)?.is_dir())
    }

    /// A writer for the blob `digest` of `size` bytes; see `BlobWriter::commit`.
    pub fn blob_writer(&self, digest: &str, size: u64) -> Result<BlobWriter> {
        let dest = self.store.blob_path(digest)?;
        BlobWriter::create(&self.store.tmp_dir(), dest, digest, size)
    }

    /// A small blob (manifest, config) already in the store, whole.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.store.blob_path(digest)?;
        let size = std::fs::metadata(&path).map_err(io("read", &path))?.len();
        if size > MAX_JSON_BLOB {
            return Err(Error::Blob {
                digest: digest.to_owned(),
                message: format!("{size} bytes is too large for a manifest or config"),
            });
        }
        std::fs::read(&path).map_err(io("read", &path))
    }

    /// Unpack the layer blob `digest` into `layers/<hex>`, unless it is there.
    /// It is unpacked in `tmp/` and renamed into place, so a half-unpacked layer
    /// is never used.
    pub fn unpack_layer(&self, digest: &str) -> Result<()> {
        let dest = self.store.layer_path(digest)?;
        if dest.is_dir() {
            return Ok(());
        }
        let blob = self.store.blob_path(digest)?;
        let work = blob::temp_name(&self.store.tmp_dir(), "layer");
        std::fs::create_dir(&work).map_err(io("create", &work))?;
        let unpacked =
            crate::templates::unpack::overlay_layer(&blob, &work).and_then(|()| sync_dir(&work));
        if let Err(e) = unpacked {
            let _ = remove::remove_tree(&work);
            return Err(e);
        }
        match std::fs::rename(&work, &dest) {
            Ok(()) => sync_dir(&self.store.layers_dir()),
            // Another pull unpacked it meanwhile: theirs is as good.
            Err(_) if dest.is_dir() => remove::remove_tree(&work),
            Err(e) => {
                let _ = remove::remove_tree(&work);
                Err(io("rename", &dest)(e))
            }
        }
    }

    /// Write the record of an image whose manifest, config and layers are all in
    /// the store and unpacked; returns it with `lowers` filled in.
    pub fn commit(&self, image: StoredImage) -> Result<StoredImage> {
        for digest in [&image.digest, &image.config_digest]
            .into_iter()
            .chain(image.index_digest.as_ref())
        {
            if !self.has_blob(digest)? {
                return Err(Error::Blob {
                    digest: digest.clone(),
                    message: "is not in the store; the image cannot be recorded".to_owned(),
                });
            }
        }
        for digest in &image.layers {
            if !self.has_layer(digest)? {
                return Err(Error::Blob {
                    digest: digest.clone(),
                    message: "is not unpacked; the image cannot be recorded".to_owned(),
                });
            }
        }
        let path = self.store.record_path(&image.reference);
        // A temp name of its own in tmp/ (not config's fixed `NAME.tmp`): two pulls
        // of one reference may commit at once.
        let bytes = serde_json::to_vec_pretty(&image).map_err(|e| Error::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = blob::temp_name(&self.store.tmp_dir(), "ref");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &bytes)?;
                file.sync_all()
            })
            .map_err(io("write", &tmp))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(io("rename", &path)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.store.refs_dir())?;
        self.store
            .read_record(&path)?
            .ok_or_else(|| io("read", &path)(std::io::ErrorKind::NotFound.into()))
    }

    /// The run defaults of a config blob in the store.
    pub fn image_defaults(&self, config_digest: &str) -> Result<ImageDefaults> {
        let bytes = self.read_blob(config_digest)?;
        crate::templates::oci::image_defaults(&bytes).map_err(|message| Error::Blob {
            digest: config_digest.to_owned(),
            message,
        })
    }
}

/// Which containers use which image: manifest digest → container names, from
/// each `<state-dir>/containers/*/config.json` (`image.digest`). A container
/// whose config is not written yet (a create under way) is not counted.
pub fn containers_by_image(state_dir: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, saved) in container_configs(state_dir)? {
        if let Some(digest) = saved.image.and_then(|image| image.digest) {
            users.entry(digest).or_default().push(name);
        }
    }
    Ok(users)
}

/// Every container's saved config; one whose config is not written yet (a
/// create under way) is left out.
fn container_configs(state_dir: &Path) -> Result<Vec<(String, SavedConfig)>> {
    let runtime = crate::Runtime::new(state_dir);
    let mut configs = Vec::new();
    for name in runtime.list()? {
        let config = runtime.dir(&name)?.config();
        match SavedConfig::load(&config) {
            Ok(saved) => configs.push((name, saved)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(configs)
}

/// `(name, path)` of each entry of `dir`; none if it is missing.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in read {
        let entry = entry.map_err(io("read", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            found.push((name, entry.path()));
        }
    }
    Ok(found)
}

/// Bytes of the regular files under `path`, not following symlinks (an estimate
/// below the depth `remove_tree` refuses anyway).
fn tree_size(path: &Path, depth: usize) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if depth > 512 {
        return 0;
    }
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| tree_size(&entry.path(), depth + 1))
        .sum()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A tar layer of `(path, kind)` where kind is `Some(content)` for a file,
    /// `None` for a directory.
    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    tar.append_data(&mut header, path, *bytes).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    tar.append_data(&mut header, path, std::io::empty())
                        .unwrap();
                }
            }
        }
        tar.into_inner().unwrap()
    }

    fn add_blob(pull: &Pull, bytes: &[u8]) -> String {
        let digest = blob::sha256_of(bytes);
        let mut writer = pull.blob_writer(&digest, bytes.len() as u64).unwrap();
        writer.write_all(bytes).unwrap();
        writer.commit().unwrap();
        digest
    }

    fn record(reference: &str, config: &str, layers: Vec<String>) -> StoredImage {
        StoredImage {
            reference: reference.parse().unwrap(),
            digest: config.to_owned(),
            index_digest: None,
            config_digest: config.to_owned(),
            layers,
            defaults: ImageDefaults::default(),
            lowers: Vec::new(),
            size: 0,
            pulled_at: 0,
        }
    }

    #[test]
    fn a_layer_is_unpacked_once_in_overlay_lower_format() {
        if !is_root() {
            eprintln!("skipped: whiteouts are device nodes and trusted xattrs; run as root");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let store = ImageStore::open(state.path()).unwrap();
        let pull = store.begin_pull().unwrap();
        let bytes = layer(&[
            ("etc/", None),
            ("etc/hostname", Some(b"box\n")),
            ("etc/.wh.passwd", Some(b"")),
            ("var/", None),
            ("var/.wh..wh..opq", Some(b"")),
            ("var/new", Some(b"x")),
        ]);
        let digest = add_blob(&pull, &bytes);
        pull.unpack_layer(&digest).unwrap();
        let dir = store.layer_path(&digest).unwrap();
        assert_eq!(std::fs::read(dir.join("etc/hostname")).unwrap(), b"box\n");
        let whiteout = std::fs::symlink_metadata(dir.join("etc/passwd")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dir.join("etc/.wh.passwd").exists());
        let opaque = rustix::fs::getxattr(dir.join("var"), "trusted.overlay.opaque", &mut [0u8; 4]);
        assert_eq!(opaque, Ok(1));
        assert!(dir.join("var/new").is_file());
        assert!(!dir.join("var/.wh..wh..opq").exists());
        // Once: a second unpack leaves the first alone.
        std::fs::write(dir.join("marker"), b"").unwrap();
        pull.unpack_layer(&digest).unwrap();
        assert!(dir.join("marker").exists());
    }

    #[test]
    fn a_whiteout_through_a_symlink_stays_inside_the_layer() {
        if !is_root() {
            eprintln!("skipped: whiteouts are device nodes; run as root");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = ImageStore::open(state.path()).unwrap();
        let pull = store.begin_pull().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_uid(0);
        link.set_gid(0);
        link.set_mtime(0);
        link.set_mode(0o777);
        link.set_size(0);
        tar.append_link(&mut link, "esc", outside.path()).unwrap();
        let mut whiteout = tar::Header::new_ustar();
        whiteout.set_entry_type(tar::EntryType::Regular);
        whiteout.set_uid(0);
        whiteout.set_gid(0);
        whiteout.set_mtime(0);
        whiteout.set_mode(0o644);
        whiteout.set_size(0);
        tar.append_data(&mut whiteout, "esc/.wh.victim", std::io::empty())
            .unwrap();
        let digest = add_blob(&pull, &tar.into_inner().unwrap());
        // Made inside the layer (the link resolved as if the layer were /), or
        // refused; never in the directory the link names on the host.
        let _ = pull.unpack_layer(&digest);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_layer_may_not_set_overlay_xattrs_itself() {
        let state = tempfile::tempdir().unwrap();
        let store = ImageStore::open(state.path()).unwrap();
        let pull = store.begin_pull().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let record = "SCHILY.xattr.trusted.overlay.redirect=/x\n";
        let line = format!("{} {record}", record.len() + 3);
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(line.len() as u64);
        tar.append_data(&mut pax, "pax", line.as_bytes()).unwrap();
        let mut dir = tar::Header::new_ustar();
        dir.set_uid(0);
        dir.set_gid(0);
        dir.set_mtime(0);
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        tar.append_data(&mut dir, "d/", std::io::empty()).unwrap();
        let digest = add_blob(&pull, &tar.into_inner().unwrap());
        let e = pull.unpack_layer(&digest).unwrap_err().to_string();
        assert!(e.contains("overlayfs xattr"), "{e}");
        assert!(!store.layer_path(&digest).unwrap().exists());
        assert_eq!(entries(&store.tmp_dir()).unwrap(), []);
    }

    #[test]
    fn records_list_get_remove_and_gc_frees_what_no_record_names() {
        let state = tempfile::tempdir().unwrap();
        let store = ImageStore::open(state.path()).unwrap();
        let pull = store.begin_pull().unwrap();
        let config = add_blob(
            &pull,
            br#"{"config":{"Cmd":["/bin/sh"],"User":"1000:1000"}}"#,
        );
        let shared = add_blob(&pull, &layer(&[("a", Some(b"a"))]));
        let only_b = add_blob(&pull, &layer(&[("b", Some(b"b"))]));
        for digest in [&shared, &only_b] {
            pull.unpack_layer(digest).unwrap();
        }
        let defaults = pull.image_defaults(&config).unwrap();
        assert_eq!(defaults.command, ["/bin/sh"]);
        assert_eq!(defaults.user.as_deref(), Some("1000:1000"));
        let a = pull
            .commit(record("localhost/a:1", &config, vec![shared.clone()]))
            .unwrap();
        assert_eq!(a.lowers, [store.layer_path(&shared).unwrap()]);
        pull.commit(record(
            "localhost/b:1",
            &config,
            vec![shared.clone(), only_b.clone()],
        ))
        .unwrap();
        drop(pull);

        let a_ref: ImageRef = "localhost/a:1".parse().unwrap();
        assert_eq!(store.get(&a_ref).unwrap(), Some(a));
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.gc().unwrap(), Freed::default());

        assert!(store.remove(&"localhost/b:1".parse().unwrap()).unwrap());
        assert!(!store.remove(&"localhost/b:1".parse().unwrap()).unwrap());
        let freed = store.gc().unwrap();
        assert_eq!((freed.blobs, freed.layers), (1, 1));
        assert!(freed.bytes > 0);
        assert!(
            store.layer_path(&shared).unwrap().is_dir(),
            "a still has it"
        );
        assert!(!store.layer_path(&only_b).unwrap().exists());
        assert!(!store.blob_path(&only_b).unwrap().exists());
    }

    #[test]
    fn tmp_leftovers_of_a_killed_pull_go_on_the_next_open_unless_a_pull_runs() {
        let state = tempfile::tempdir().unwrap();
        let store = ImageStore::open(state.path()).unwrap();
        std::fs::write(store.tmp_dir().join("blob-1-2-3"), b"half").unwrap();
        std::fs::create_dir(store.tmp_dir().join("layer-1-2-3")).unwrap();
        let busy = store.begin_pull().unwrap();
        ImageStore::open(state.path()).unwrap();
        assert_eq!(
            entries(&store.tmp_dir()).unwrap().len(),
            2,
            "a pull is running"
        );
        drop(busy);
        ImageStore::open(state.path()).unwrap();
        assert_eq!(entries(&store.tmp_dir()).unwrap(), []);
    }
}
