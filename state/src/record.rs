//! What berth knows about one container: the value of the `containers` tree.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The actual state of one container as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub name: String,
    /// Hash of the spec last applied.
    pub spec_hash: Option<String>,
    /// Manifest file and document index the container came from.
    pub source: Option<SourceRef>,
    /// The last good spec the daemon applied from that manifest: a restarted
    /// daemon keeps it while the file cannot be used.
    #[serde(default)]
    pub desired: Option<berth_manifests::Container>,
    /// Created from a manifest by the daemon; only these are pruned.
    pub managed: bool,
    /// "Pending" | "Creating" | "Created" | "Starting" | "Running" | "Stopping"
    /// | "Stopped" | "Rebooting" | "CrashLoopBackOff" | "Failed"
    pub phase: String,
    /// Human-readable reason for the phase.
    pub message: Option<String>,
    pub init_pid: Option<i32>,
    pub init_start_time: Option<u64>,
    pub restarts: u32,
    pub reboots: u32,
    /// Opaque to this crate.
    pub last_exit: Option<serde_json::Value>,
    pub conditions: Vec<Condition>,
    /// Finished under restartPolicy Never/OnFailure: never run again.
    pub completed: bool,
    /// Unix seconds; crash-loop backoff.
    pub backoff_until: Option<u64>,
    pub backoff_delay_secs: Option<u64>,
    /// Unix seconds, for resetting backoff after 10 minutes of running.
    pub running_since: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Where a managed container's spec came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    pub file: PathBuf,
    /// Index of the YAML document within the file.
    pub document: usize,
}

/// A standing problem with a container, e.g. kind "InvalidManifest".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
            spec_hash: None,
            source: None,
            desired: None,
            managed: false,
            phase: "Pending".to_owned(),
            message: None,
            init_pid: None,
            init_start_time: None,
            restarts: 0,
            reboots: 0,
            last_exit: None,
            conditions: Vec::new(),
            completed: false,
            backoff_until: None,
            backoff_delay_secs: None,
            running_since: None,
            created_at: now,
            updated_at: now,
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
        record.spec_hash = Some("abc".into());
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["specHash"], "abc");
        assert_eq!(json["phase"], "Pending");
        assert!(json.get("backoffDelaySecs").is_some());
    }
}
