//! What the daemon keeps of an update under `spec.updateStrategy.rollback`: the
//! spec to go back to, the update on trial, and the spec that failed. Kept in the
//! container's record (flushed with it), so that a daemon killed in the middle of
//! an update finishes the rollback or the update when it starts again.

use serde::{Deserialize, Serialize};

use crate::Revision;

/// A changed spec on trial: it must stay Running (and Ready) for `healthyFor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The spec that ran before, to be put back if the new one fails.
    pub previous: berth_manifests::Container,
    /// The spec hash on trial.
    pub hash: String,
    /// The commit the new spec came from (Git source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    /// When the update was applied, Unix milliseconds.
    pub since_ms: u64,
}

/// A spec that did not prove itself and was rolled back: not tried again until
/// the manifest changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The spec hash that failed.
    pub hash: String,
    /// The commit it came from (Git source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    /// Why it failed.
    pub reason: String,
    /// The spec hash running instead.
    pub restored: String,
    /// Unix seconds.
    pub at: u64,
}
