//! A stopped container's directory kept aside (`<state-dir>/aside/<name>/`) while
//! a replacement made from another rootfs source proves itself: a rollback takes
//! it back whole (its rootfs, its writable layer, its config) with no network and
//! no template run. Each move is one rename(2) on the state dir's filesystem,
//! synced, so a crash leaves the directory in one place or the other.

use std::path::{Path, PathBuf};

use crate::config::SavedConfig;
use crate::error::{Error, Result, io};
use crate::partial::{PartialLock, Probe};
use crate::{Runtime, remove};

impl Runtime {
    fn aside_path(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir(name)?;
        Ok(self.state_dir.join("aside").join(&dir.name))
    }

    /// Moves the stopped container `name` aside, replacing what was aside for it.
    pub fn set_aside(&self, name: &str) -> Result<()> {
        let dir = self.dir(name)?;
        if !dir.config().is_file() {
            return Err(Error::NotFound(name.to_owned()));
        }
        if self.connect(name)?.is_some() || self.orphan(name)?.is_some() {
            return Err(Error::Running(name.to_owned()));
        }
        if let Probe::Held = PartialLock::probe(&dir.partial())? {
            return Err(Error::Busy(name.to_owned()));
        }
        let target = self.aside_path(name)?;
        let parent = target.parent().unwrap_or(&self.state_dir).to_owned();
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&parent)
            .map_err(io("create", &parent))?;
        if std::fs::symlink_metadata(&target).is_ok() {
            remove::remove_tree(&target)?;
        }
        std::fs::rename(&dir.path, &target).map_err(io("rename", &dir.path))?;
        sync_dir(&parent)?;
        sync_dir(dir.path.parent().unwrap_or(&self.state_dir))
    }

    /// The config of what is aside for `name`, if anything.
    pub fn aside_config(&self, name: &str) -> Result<Option<SavedConfig>> {
        let path = self.aside_path(name)?.join(crate::layout::CONFIG);
        if !path.is_file() {
            return Ok(None);
        }
        SavedConfig::load(&path).map(Some)
    }

    /// Puts what is aside for `name` back in place; `name` must not exist.
    pub fn take_back(&self, name: &str) -> Result<()> {
        let dir = self.dir(name)?;
        if std::fs::symlink_metadata(&dir.path).is_ok() {
            return Err(Error::Exists(name.to_owned()));
        }
        let from = self.aside_path(name)?;
        std::fs::rename(&from, &dir.path).map_err(io("rename", &from))?;
        sync_dir(dir.path.parent().unwrap_or(&self.state_dir))?;
        sync_dir(from.parent().unwrap_or(&self.state_dir))
    }

    /// Removes what is aside for `name`; returns whether there was anything.
    pub fn drop_aside(&self, name: &str) -> Result<bool> {
        let path = self.aside_path(name)?;
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(false);
        }
        remove::remove_tree(&path)?;
        Ok(true)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", dir))
}
