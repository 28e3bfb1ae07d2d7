//! The `partial` marker: a create is under way for as long as its creator holds an
//! exclusive `flock` on it (LXC's `create_partial`). flock, not fcntl locks, which
//! a multi-threaded caller would drop by closing any fd of the file.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result, io};

/// A held `partial` lock. Dropping it releases the lock but leaves the file: only
/// `finish` marks the create complete.
#[derive(Debug)]
pub struct PartialLock {
    path: PathBuf,
    _lock: Flock<File>,
}

/// What a try-lock of an existing `partial` found.
#[derive(Debug)]
pub enum Probe {
    /// No `partial`: the container is complete.
    Absent,
    /// Someone holds the lock: a create is running.
    Held,
    /// Nobody holds it: a create died. The lock is now ours.
    Stale(PartialLock),
}

impl PartialLock {
    /// Create `partial` and lock it; `name` is for the "being created" error.
    pub fn create(path: &Path, name: &str) -> Result<PartialLock> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("create", path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(PartialLock {
                path: path.to_owned(),
                _lock: lock,
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::Busy(name.to_owned())),
            Err((_, e)) => Err(crate::error::errno("lock", path)(e)),
        }
    }

    /// Try-lock an existing `partial` (never guess from timestamps).
    pub fn probe(path: &Path) -> Result<Probe> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
            Err(e) => return Err(io("open", path)(e)),
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(Probe::Held),
            Err((_, e)) => return Err(crate::error::errno("lock", path)(e)),
        };
        // The creator may have finished (unlinked the file) between our open and our
        // lock: then the lock is on a file that no longer marks anything.
        let ours = lock.metadata().map_err(io("stat", path))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                Ok(Probe::Stale(PartialLock {
                    path: path.to_owned(),
                    _lock: lock,
                }))
            }
            Ok(_) => Ok(Probe::Held),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Probe::Absent),
            Err(e) => Err(io("stat", path)(e)),
        }
    }

    /// The create is complete: remove the marker, then release the lock.
    pub fn finish(self) -> Result<()> {
        std::fs::remove_file(&self.path).map_err(io("remove", &self.path))
    }
}
