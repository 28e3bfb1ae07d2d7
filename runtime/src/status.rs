//! `status`: what the monitor knows, written atomically on every change so that
//! it outlives both the daemon and the monitor.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::read_json;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The monitor is setting the container up.
    Starting,
    Running,
    /// A stop (or reboot) was asked for; waiting for init to exit.
    Stopping,
    /// Exited with status 0, or halted (poweroff), or stopped on request.
    Stopped,
    /// Exited non-zero, killed by a signal, or failed to start.
    Failed,
    /// Its monitor is gone (killed) but its processes still run: `stop` kills
    /// them; `start` kills them and starts it anew.
    Orphaned,
}

/// How init's last exit is to be read (LXC's reading of the wait status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// The command exited by itself with `code`.
    Exited,
    /// Killed by `signal` (not one of the three below).
    Signaled,
    /// SIGHUP: reboot(2) inside the PID namespace, or `berth reboot`.
    Reboot,
    /// SIGINT: poweroff or halt inside the PID namespace.
    Halt,
    /// SIGSYS: killed by its seccomp policy.
    SeccompViolation,
    /// Stopped on request (`berth stop`).
    StopRequested,
    /// Its monitor was gone, and berth killed what was left (SIGKILL) on a stop
    /// or before a new start; how the command itself would have ended is unknown.
    OrphanKilled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    pub reason: ExitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// What the container's health check says (`spec.healthcheck`), kept by its
/// monitor, which runs the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthState {
    /// No verdict yet: within `startPeriod`, before the first check passes, or
    /// (with `notify`) before `READY=1`.
    Starting,
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub state: HealthState,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last check's output (exec: stdout and stderr; tcp/http: what
    /// happened), cut to a few KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_output: String,
    /// Unix seconds of the last check, and of the last change of `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: Phase,
    /// The monitor's pid while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<i32>,
    /// The host pid of the container's init, with its start time in clock ticks
    /// since boot (`/proc/PID/stat` field 22), so a reused pid is never taken for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_start_time: Option<u64>,
    /// Unix seconds of the last (re)start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    pub reboots: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// The error that made the last start fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The spec hash the container runs with.
    pub hash: String,
    /// Where its cgroups are, so they can be found without the monitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<crate::cgroup::Cgroups>,
    /// Absent when the spec has no `healthcheck`. Reset to Starting at each start
    /// and reboot; after an exit, the last verdict of that run (the daemon reads
    /// a run it stopped as Unhealthy as a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl Status {
    pub fn load(path: &Path) -> Result<Option<Status>> {
        read_json(path)
    }

    /// Atomic, not synced (see `write_replace`).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::config::write_json_replace(path, self)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after the
    // last ')' are plain. Field 3 is the first after it, so 22 is the 20th.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}
