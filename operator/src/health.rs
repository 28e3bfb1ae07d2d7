//! What the daemon knows of itself and of its manifest source: shown by `berth
//! status` (no name), `GET /v1/status`, the metrics and systemd's `STATUS=`.
//! The source (a directory, or a Git repository) writes it; the rest read it.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A commit the manifests came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The full commit id (hex).
    pub commit: String,
    /// The committer's time, Unix seconds.
    pub time: i64,
}

/// Where the desired state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceKind {
    Directory,
    Git,
}

/// The outcome of one look at the source (a directory scan or a Git fetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sync {
    /// When it finished, Unix seconds.
    pub at: i64,
    pub ok: bool,
    /// What went wrong (with the commit and FILE:LINE:COLUMN where there is
    /// one), or None.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub kind: SourceKind,
    /// The directory, or the repository's URL (no credentials in it).
    pub location: String,
    /// Git: the branch, tag or commit followed, and the subdirectory served.
    pub reference: Option<String>,
    pub path: Option<String>,
    /// Git: the revision applied (the last good one).
    pub revision: Option<Revision>,
    pub last_sync: Option<Sync>,
    /// The last failure of the source, kept after later successes.
    pub last_error: Option<Sync>,
}

/// The daemon's own state, shared by its tasks.
#[derive(Debug)]
pub struct Health {
    pub started: SystemTime,
    source: Mutex<Source>,
}

impl Health {
    pub fn new(source: Source) -> Health {
        Health {
            started: SystemTime::now(),
            source: Mutex::new(source),
        }
    }

    pub fn source(&self) -> Source {
        match self.source.lock() {
            Ok(source) => source.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Change the source's state in place.
    pub fn update_source(&self, change: impl FnOnce(&mut Source)) {
        let mut source = match self.source.lock() {
            Ok(source) => source,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(&mut source);
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
