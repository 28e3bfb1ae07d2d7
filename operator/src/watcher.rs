//! Watching the manifest directory with inotify (notify). An event only says
//! when to rescan; the desired set compares contents. A file renamed into place
//! or closed after writing is complete: rescan now. Other changes come in bursts
//! (an editor's swap files, a `git checkout`): rescan once the burst is quiet.
//! Opens and reads are not changes (the rescan itself opens every file): they are
//! dropped here, or each rescan would cause the next. The parent is watched too,
//! so that a directory that is a symlink swapped atomically (a ConfigMap's
//! `..data`, git-sync) is noticed.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug)]
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    /// What `dir` resolved to when the watch was set up.
    pub target: PathBuf,
}

/// When a change asks for a rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescan {
    /// A file is complete: read it at once.
    Now,
    /// Part of a burst: read once it is quiet.
    Soon,
}

/// What an inotify event asks for; `None` for what changes nothing.
fn rescan_for(event: &notify::Result<notify::Event>) -> Option<Rescan> {
    let Ok(event) = event else {
        // An error (e.g. the inotify queue overflowed): rescan everything.
        return Some(Rescan::Soon);
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
            Some(Rescan::Now)
        }
        EventKind::Access(_) => None,
        _ => Some(Rescan::Soon),
    }
}

/// Watch `dir` (recursively, following it if it is a symlink) and its parent.
pub fn watch(dir: &Path, tx: UnboundedSender<Rescan>) -> Result<Watcher, String> {
    let target = std::fs::canonicalize(dir)
        .map_err(|e| format!("manifest directory {}: {e}", dir.display()))?;
    let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(rescan) = rescan_for(&event) {
            let _ = tx.send(rescan);
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    inner
        .watch(&target, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", target.display()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Best effort: the directory itself is what matters.
        let _ = inner.watch(parent, RecursiveMode::NonRecursive);
    }
    Ok(Watcher {
        _inner: inner,
        target,
    })
}

/// Does `dir` still resolve to what `watcher` watches?
pub fn still_current(watcher: &Watcher, dir: &Path) -> bool {
    std::fs::canonicalize(dir).is_ok_and(|now| now == watcher.target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    fn kind(kind: EventKind) -> Option<Rescan> {
        rescan_for(&Ok(notify::Event::new(kind)))
    }

    #[test]
    fn opens_and_reads_are_not_changes_and_complete_files_are_read_at_once() {
        assert_eq!(
            kind(EventKind::Access(AccessKind::Open(AccessMode::Any))),
            None
        );
        assert_eq!(
            kind(EventKind::Access(AccessKind::Close(AccessMode::Read))),
            None
        );
        assert_eq!(
            kind(EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Some(Rescan::Now)
        );
        assert_eq!(
            kind(EventKind::Modify(ModifyKind::Name(RenameMode::To))),
            Some(Rescan::Now)
        );
        assert_eq!(
            kind(EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Some(Rescan::Soon)
        );
        assert_eq!(
            kind(EventKind::Create(CreateKind::File)),
            Some(Rescan::Soon)
        );
        assert_eq!(
            rescan_for(&Err(notify::Error::generic("overflow"))),
            Some(Rescan::Soon)
        );
    }
}
