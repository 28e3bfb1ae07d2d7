//! Watching the manifest directory with inotify (notify). Events carry no
//! meaning here: any of them means "rescan soon"; the desired set compares
//! contents. The parent is watched too, so that a directory that is a symlink
//! swapped atomically (a ConfigMap's `..data`, git-sync) is noticed.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug)]
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    /// What `dir` resolved to when the watch was set up.
    pub target: PathBuf,
}

/// Watch `dir` (recursively, following it if it is a symlink) and its parent.
pub fn watch(dir: &Path, tx: UnboundedSender<()>) -> Result<Watcher, String> {
    let target = std::fs::canonicalize(dir)
        .map_err(|e| format!("manifest directory {}: {e}", dir.display()))?;
    let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (e.g. the inotify queue overflowed) also means: rescan everything.
        let _ = event;
        let _ = tx.send(());
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
