//! Which hierarchies a container uses: detected from the mounts, chosen for
//! its limits.

use std::path::PathBuf;

use berth_manifests::Resources;

use super::CgroupVersion;
use super::mountinfo::{CgroupMount, Kind};
use crate::error::{Error, Result};

/// The controllers the limits need, each with the limit in words for errors.
pub(super) fn required(resources: &Resources) -> Vec<(&'static str, String)> {
    let mut needed = Vec::new();
    if let Some(bytes) = resources.memory_bytes {
        needed.push(("memory", format!("memory limit of {bytes} bytes")));
    }
    // 0, no limit, needs no controller.
    if let Some(pids) = resources.pids.filter(|&pids| pids != 0) {
        needed.push(("pids", format!("pids limit of {pids}")));
    }
    if let Some(millicpus) = resources.millicpus {
        needed.push(("cpu", format!("CPU limit of {millicpus}m")));
    }
    needed
}

fn missing_controller(limit: &str, controller: &str) -> Error {
    Error::Cgroup(format!(
        "the {limit} needs the {controller} controller, which this host does not offer"
    ))
}

/// The mounts, one per hierarchy: bind mounts of the same hierarchy collapse
/// to one, preferring the mount of its root.
fn v1_hierarchies(mounts: &[CgroupMount]) -> Vec<(PathBuf, Vec<String>)> {
    let mut hierarchies: Vec<(PathBuf, Vec<String>, bool)> = Vec::new();
    for m in mounts {
        let Kind::V1 { controllers } = &m.kind else {
            continue;
        };
        if controllers.is_empty() {
            continue; // a named hierarchy such as name=systemd belongs to someone else
        }
        let at_root = m.root == "/";
        match hierarchies.iter_mut().find(|h| &h.1 == controllers) {
            Some(h) if at_root && !h.2 => *h = (m.mount_point.clone(), controllers.clone(), true),
            Some(_) => {}
            None => hierarchies.push((m.mount_point.clone(), controllers.clone(), at_root)),
        }
    }
    hierarchies.into_iter().map(|(m, c, _)| (m, c)).collect()
}

/// The cgroup2 mount (there is one v2 hierarchy; prefer a mount of its root)
/// and the controllers its root offers.
fn v2_hierarchy(mounts: &[CgroupMount]) -> Option<(PathBuf, Vec<String>)> {
    let v2 = mounts.iter().filter(|m| m.kind == Kind::V2);
    let mount = v2.clone().find(|m| m.root == "/").or(v2.clone().next())?;
    let controllers = std::fs::read_to_string(mount.mount_point.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Some((mount.mount_point.clone(), controllers))
}

pub(super) type Choice = (CgroupVersion, Vec<(PathBuf, Vec<String>)>);

/// Pick the hierarchies. v2 when it has the controllers the limits need and
/// `pids`; else v1 when it has those the limits need (a hybrid host's cgroup2
/// mount holds hugetlb at most, so v1 wins there); else v2 when it has the
/// controllers for the limits (tracking works without `pids` on v2).
pub(super) fn choose(mounts: &[CgroupMount], resources: &Resources) -> Result<Choice> {
    let needed = required(resources);
    let v1 = v1_hierarchies(mounts);
    let v2 = v2_hierarchy(mounts);

    let v2_has = |c: &str| v2.as_ref().is_some_and(|(_, cs)| cs.iter().any(|x| x == c));
    let v1_find = |c: &str| v1.iter().find(|(_, cs)| cs.iter().any(|x| x == c));
    let v2_enough = needed.iter().all(|(c, _)| v2_has(c));
    let v1_enough = !v1.is_empty() && needed.iter().all(|(c, _)| v1_find(c).is_some());

    if let Some((mount, _)) = &v2
        && v2_enough
        && (v2_has("pids") || !v1_enough)
    {
        let mut enable: Vec<String> = Vec::new();
        if v2_has("pids") {
            enable.push("pids".to_owned());
        }
        for (c, _) in &needed {
            if !enable.iter().any(|e| e == c) {
                enable.push((*c).to_owned());
            }
        }
        return Ok((CgroupVersion::V2, vec![(mount.clone(), enable)]));
    }

    if v1_enough {
        // Tracking first: pids, else memory, else freezer, else any hierarchy but
        // cpuset (whose new cgroups start with no CPUs), else whatever there is.
        let tracking = ["pids", "memory", "freezer"]
            .iter()
            .find_map(|c| v1_find(c))
            .or_else(|| v1.iter().find(|(_, cs)| !cs.iter().any(|c| c == "cpuset")))
            .or_else(|| v1.first());
        let mut chosen: Vec<(PathBuf, Vec<String>)> = tracking.into_iter().cloned().collect();
        // The devices controller, where there is one, limits the container to
        // its default device nodes.
        for c in needed.iter().map(|(c, _)| *c).chain(["devices"]) {
            if let Some(h) = v1_find(c)
                && !chosen.contains(h)
            {
                chosen.push(h.clone());
            }
        }
        return Ok((CgroupVersion::V1, chosen));
    }

    Err(cannot_enforce(&needed, &v1, v2.as_ref()))
}

/// Why no hierarchy fits: a limit whose controller the host lacks entirely, or
/// limits whose controllers sit in different cgroup versions.
fn cannot_enforce(
    needed: &[(&'static str, String)],
    v1: &[(PathBuf, Vec<String>)],
    v2: Option<&(PathBuf, Vec<String>)>,
) -> Error {
    let in_v1 = |c: &str| v1.iter().any(|(_, cs)| cs.iter().any(|x| x == c));
    let in_v2 = |c: &str| v2.is_some_and(|(_, cs)| cs.iter().any(|x| x == c));
    if v1.is_empty() && v2.is_none() {
        return Error::Cgroup(
            "no cgroup hierarchy is mounted (none in /proc/self/mountinfo)".to_owned(),
        );
    }
    if let Some((c, limit)) = needed.iter().find(|(c, _)| !in_v1(c) && !in_v2(c)) {
        return missing_controller(limit, c);
    }
    let limits: Vec<String> = needed
        .iter()
        .map(|(c, _)| format!("{c} ({})", if in_v1(c) { "v1" } else { "v2" }))
        .collect();
    Error::Cgroup(format!(
        "the limits need controllers from both cgroup v1 and v2, which berth does not mix: {}",
        limits.join(", ")
    ))
}
