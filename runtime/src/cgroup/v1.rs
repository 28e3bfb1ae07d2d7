//! cgroup v1: one hierarchy per controller (or per co-mounted group), each
//! holding its own copy of `PARENT/NAME/{monitor,payload}`.

use berth_manifests::Resources;

use super::{Hierarchy, make_dir, pids_max, write_value};
use crate::error::{Result, io};

/// CFS period for CPU limits, in microseconds: the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// mkdir the levels down to NAME, then `leaves`.
pub(super) fn create(h: &Hierarchy, leaves: &[std::path::PathBuf]) -> Result<()> {
    for dir in h.levels().iter().skip(1).chain(leaves) {
        make_dir(dir)?;
        if h.has("cpuset") {
            inherit_cpuset(dir)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset has no CPUs and no memory nodes, and no process can enter it
/// until it has: copy them from the parent (only if cpuset is co-mounted with a
/// hierarchy berth uses).
fn inherit_cpuset(dir: &std::path::Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let current = std::fs::read_to_string(&own).map_err(io("read", &own))?;
        if current.trim().is_empty() {
            let from = parent.join(file);
            let value = std::fs::read_to_string(&from).map_err(io("read", &from))?;
            write_value(&own, value.trim())?;
        }
    }
    Ok(())
}

/// The files the limits are written to: (controller, file, value).
pub(super) fn limit_files(resources: &Resources) -> Vec<(&'static str, &'static str, String)> {
    let mut files = Vec::new();
    if let Some(bytes) = resources.memory_bytes {
        files.push(("memory", "memory.limit_in_bytes", bytes.to_string()));
    }
    if let Some(pids) = resources.pids {
        files.push(("pids", "pids.max", pids_max(pids)));
    }
    if let Some(millicpus) = resources.millicpus {
        // The period first: the quota is checked against it.
        files.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
        let quota = millicpus.saturating_mul(CPU_PERIOD_US / 1000);
        files.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
    }
    files
}

/// Deny every device, then allow the nodes berth puts in /dev (null, zero, full,
/// random, urandom, tty, ptmx) and the container's own pseudo-terminals.
pub(super) fn restrict_devices(payload: &std::path::Path) -> Result<()> {
    write_value(&payload.join("devices.deny"), "a")?;
    for rule in [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
    ] {
        write_value(&payload.join("devices.allow"), rule)?;
    }
    Ok(())
}
