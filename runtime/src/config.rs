//! `config.json`: the resolved spec a container was created from, written
//! atomically (temp file, fsync, rename, fsync of the directory).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use berth_manifests::Container;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io};

/// LXC prepends a comment naming the template to its config; JSON has no comments,
/// so the header is the first field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// `host`, `busybox`, the script path, `tarball` or `oci`.
    pub template: String,
    pub args: Vec<String>,
    pub berth_version: String,
    /// Who asked for it: `cli` (by hand) or `manifest` (the daemon).
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    Cli,
    Manifest,
}

/// What an OCI image says to run when the manifest does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDefaults {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `User` of the image config: `name`, `uid`, `uid:gid` or `name:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The manifest digest of an image from the store: what `berth images` counts
    /// a container's use of, and `rmi` refuses to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedConfig {
    /// Absent until the template has run (step 6 of the create path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    pub container: Container,
    /// Where the root filesystem is: `<dir>/rootfs`, or a `path:` used in place.
    pub rootfs: PathBuf,
    /// Host directories the `host` template binds read-only at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_binds: Vec<PathBuf>,
    /// Directories shared by containers (the busybox template's skeleton), bound
    /// read-only at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_binds: Vec<crate::templates::SharedBind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageDefaults>,
    /// The user namespace maps, resolved at create (`userns: auto` picks them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_maps: Option<crate::userns::IdMaps>,
    /// Set for a rootfs made from an image's unpacked layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<crate::layers::LayeredRootfs>,
}

impl SavedConfig {
    pub fn load(path: &Path) -> Result<SavedConfig> {
        read_json(path)?.ok_or_else(|| io("read", path)(std::io::ErrorKind::NotFound.into()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// Put it in place atomically but unsynced (see `write_replace`): for the
    /// saves of a create under way, which a crash undoes anyway (its `partial`).
    pub fn save_unsynced(&self, path: &Path) -> Result<()> {
        write_json_replace(path, self)
    }

    /// Write it beside `path`, synced, without putting it in place yet.
    pub fn stage(&self, path: &Path) -> Result<Staged> {
        stage(path, &to_json(path, self)?)
    }
}

/// A JSON file of berth's own; `None` if it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Write `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &to_json(path, value)?)
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Replace `path` with `bytes` by a rename, without waiting for the disk: a
/// reader never sees a mix, and a crash of berth leaves the old or the new
/// content; a power cut may leave the old one, or on a filesystem that does not
/// flush a replacing rename's data first (ext4 and btrfs do) an empty file. For
/// what a power cut makes moot anyway: a monitor's status (every monitor is gone
/// after one) — two fsyncs a start saved, 1.5 to 20 ms here.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(path, bytes, false)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("rename", path)(e)
    })
}

/// `value` as pretty JSON, by `write_replace`.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_replace(path, &to_json(path, value)?)
}

/// Write `bytes` to `path` so that a crash leaves the old or the new content,
/// never a mix: a temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    stage(path, bytes)?.commit()
}

/// A file written and synced under a temp name beside its destination.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    /// Rename it into place, leaving the directory's sync to the caller.
    pub fn rename(self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(io("rename", &self.path))
    }

    /// Rename it into place and sync the directory.
    pub fn commit(self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(io("rename", &self.path))?;
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))
    }
}

fn stage(path: &Path, bytes: &[u8]) -> Result<Staged> {
    let tmp = write_temp(path, bytes, true)?;
    Ok(Staged {
        tmp,
        path: path.to_owned(),
    })
}

/// `bytes` in `<path>.tmp` (0600), synced if asked; on failure (a full disk)
/// no partial temp file is left taking the space.
fn write_temp(path: &Path, bytes: &[u8], sync: bool) -> Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))
        .and_then(|mut file| {
            file.write_all(bytes).map_err(io("write", &tmp))?;
            if sync {
                file.sync_all().map_err(io("fsync", &tmp))?;
            }
            Ok(())
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}
