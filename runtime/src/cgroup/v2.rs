//! cgroup v2: one hierarchy. Controllers reach a cgroup only if every ancestor
//! enables them in `cgroup.subtree_control`, and a cgroup that does so may hold
//! no processes: they live only in the leaves `monitor` and `payload`.

use std::path::Path;

use berth_manifests::Resources;

use super::{Hierarchy, make_dir, pids_max, write_value};
use crate::error::{Result, io};

/// CPU period for `cpu.max`, in microseconds: the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// mkdir the levels down to NAME (enabling the controllers), then `leaves`.
pub(super) fn create(h: &Hierarchy, leaves: &[std::path::PathBuf]) -> Result<()> {
    for (depth, level) in h.levels().iter().enumerate() {
        if depth > 0 {
            make_dir(level)?;
        }
        enable(level, &h.controllers)?;
    }
    for leaf in leaves {
        make_dir(leaf)?;
    }
    Ok(())
}

/// Enable each controller not yet enabled, one write each so an error names it.
fn enable(dir: &Path, controllers: &[String]) -> Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).map_err(io("read", &file))?;
    for controller in controllers {
        if !enabled.split_whitespace().any(|e| e == controller) {
            write_value(&file, &format!("+{controller}"))?;
        }
    }
    Ok(())
}

/// The files the limits are written to: (controller, file, value).
pub(super) fn limit_files(resources: &Resources) -> Vec<(&'static str, &'static str, String)> {
    let mut files = Vec::new();
    if let Some(bytes) = resources.memory_bytes {
        files.push(("memory", "memory.max", bytes.to_string()));
    }
    if let Some(pids) = resources.pids {
        files.push(("pids", "pids.max", pids_max(pids)));
    }
    if let Some(millicpus) = resources.millicpus {
        let quota = millicpus.saturating_mul(CPU_PERIOD_US / 1000);
        files.push(("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
    }
    files
}
