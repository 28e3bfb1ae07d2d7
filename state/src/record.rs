//! What berth knows about one container: the value of the `containers` tree.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What only the daemon knows about one container. What the monitor knows (init
/// pid, reboots, exits, the hash it runs with) is in the container's status file
/// and nowhere else; readers merge the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub name: String,
    /// Created from a manifest by the daemon; only these are pruned.
    pub managed: bool,
    /// The last good spec the daemon applied, with the file and document it came
    /// from: a restarted daemon keeps it while that file cannot be used.
    #[serde(default)]
    pub desired: Option<berth_manifests::Container>,
    pub phase: Phase,
    /// Human-readable reason for the phase.
    pub message: Option<String>,
    /// Restarts by the daemon under the restart policy.
    pub restarts: u32,
    pub conditions: Vec<Condition>,
    /// Finished under restartPolicy Never/OnFailure: never run again.
    pub completed: bool,
    /// Unix seconds; crash-loop backoff.
    pub backoff_until: Option<u64>,
    pub backoff_delay_secs: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
    /// The Git commit its spec (`desired`) came from, like Flux's
    /// lastAppliedRevision; None for a directory source or a container made by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    /// The last spec that proved itself (ran `healthyFor` under an update
    /// strategy with rollback): what a failed update goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<berth_manifests::Container>,
    /// A changed spec on trial (`updateStrategy.rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::Rollout>,
    /// The spec last rolled back, not tried again until the manifest changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<crate::RolledBack>,
}

/// A commit of a Git source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The full commit id (hex).
    pub commit: String,
    /// The committer's time, Unix seconds.
    pub time: i64,
}

/// Where a container stands, as the daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Creating,
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    CrashLoopBackOff,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A standing problem with a container, e.g. kind "InvalidManifest".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub kind: String,
    pub message: String,
    pub since: u64,
}

impl Record {
    /// A fresh record in phase "Pending", created and updated now.
    pub fn new(name: &str) -> Record {
        let now = unix_now();
        Record {
            name: name.to_owned(),
            managed: false,
            desired: None,
            phase: Phase::Pending,
            message: None,
            restarts: 0,
            conditions: Vec::new(),
            completed: false,
            backoff_until: None,
            backoff_delay_secs: None,
            created_at: now,
            updated_at: now,
            revision: None,
            last_good: None,
            rollout: None,
            rolled_back: None,
        }
    }
}

/// Seconds since the epoch; 0 if the clock is before 1970 (an unset RTC on a
/// device that has not synced time yet must not fail a write).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_serialises_in_camel_case() {
        let mut record = Record::new("web");
        record.backoff_until = Some(7);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["backoffUntil"], 7);
        assert_eq!(json["phase"], "Pending");
        assert!(json.get("backoffDelaySecs").is_some());
    }
}
