//! The cgroups of one container: `PARENT/NAME/monitor` for berth's monitor and
//! `PARENT/NAME/payload` for the container's processes, at the root of each
//! hierarchy berth uses; `PARENT/NAME/create` (tracking hierarchy only) holds a
//! template script and whatever it forks while the container is created. Which hierarchies those are is decided once, from
//! `/proc/self/mountinfo`, and saved with the container (`Cgroups` is
//! serializable) so any later process can find, kill and remove them.
//!
//! One file per backend, as in crun: `v1.rs` and `v2.rs`; `choose.rs` picks
//! the hierarchies from what `mountinfo.rs` finds.

mod choose;
mod delegate;
mod mountinfo;
mod v1;
mod v2;

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use berth_manifests::Resources;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io};
use choose::{choose, required};
pub use delegate::{
    RECORD as DELEGATE_RECORD, delegate_self, forget as forget_delegation, recorded_parent,
};

/// How long `kill_payload` keeps killing before it reports what is left.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The pids limit of a container whose manifest sets none, as Podman's
/// `pids_limit`: a fork bomb stops there instead of at the host's limit. Applied
/// here, at start, so the spec (and its hash) stays as written.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// One hierarchy berth uses for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hierarchy {
    /// Where the hierarchy is mounted: its root cgroup.
    mount: PathBuf,
    /// v1: the controllers attached to the hierarchy; v2: those berth enables
    /// down to the container.
    controllers: Vec<String>,
    /// `mount/PARENT`.
    parent: PathBuf,
    /// `mount/PARENT/NAME`, holding `monitor` and `payload`.
    dir: PathBuf,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    fn monitor(&self) -> PathBuf {
        self.dir.join("monitor")
    }

    fn payload(&self) -> PathBuf {
        self.dir.join("payload")
    }

    fn create_leaf(&self) -> PathBuf {
        self.dir.join("create")
    }

    /// The cgroups from the root down to `PARENT/NAME`, root first.
    fn levels(&self) -> Vec<PathBuf> {
        let mut level = self.mount.clone();
        let mut levels = vec![level.clone()];
        for part in self.dir.strip_prefix(&self.mount).unwrap_or(Path::new("")) {
            level.push(part);
            levels.push(level.clone());
        }
        levels
    }
}

/// The cgroups of one container in every hierarchy berth uses on this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cgroups {
    version: CgroupVersion,
    /// The first tracks the container's processes: it is the one `payload_pids`
    /// and `kill_payload` read (v1: `pids` if the host has it).
    hierarchies: Vec<Hierarchy>,
}

impl Cgroups {
    /// Detect the layout from /proc/self/mountinfo and choose hierarchies for these resources.
    pub fn new(parent: &str, name: &str, resources: &Resources) -> Result<Cgroups> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(io("read", path))?;
        Cgroups::from_mountinfo(&text, parent, name, resources)
    }

    /// Same, from a given mountinfo text. A cgroup2 mount's controllers are read
    /// from `cgroup.controllers` under its mount point.
    pub fn from_mountinfo(
        mountinfo: &str,
        parent: &str,
        name: &str,
        resources: &Resources,
    ) -> Result<Cgroups> {
        let relative = relative_dir(parent, name)?;
        let (version, chosen) = choose(&mountinfo::cgroup_mounts(mountinfo), resources)?;
        let hierarchies = chosen
            .into_iter()
            .map(|(mount, controllers)| Hierarchy {
                parent: mount.join(parent_path(parent)),
                dir: mount.join(&relative),
                mount,
                controllers,
            })
            .collect();
        Ok(Cgroups {
            version,
            hierarchies,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// mkdir -p PARENT/NAME/{monitor,payload} in each hierarchy (enabling v2
    /// controllers along the way); idempotent.
    pub fn create(&self) -> Result<()> {
        for h in &self.hierarchies {
            crate::trace::step(
                format_args!("cgroups: mkdir in {}", h.mount.display()),
                || self.make_leaves(h, &[h.monitor(), h.payload()]),
            )?;
        }
        Ok(())
    }

    fn make_leaves(&self, h: &Hierarchy, leaves: &[PathBuf]) -> Result<()> {
        match self.version {
            CgroupVersion::V1 => v1::create(h, leaves),
            CgroupVersion::V2 => v2::create(h, leaves),
        }
    }

    /// mkdir -p PARENT/NAME/create in the tracking hierarchy, for a template
    /// script; returns its `cgroup.procs`, which the script writes `0` to (its
    /// own pid) before it execs, so that nothing it forks escapes.
    pub fn make_create(&self) -> Result<PathBuf> {
        let h = self.tracking()?;
        self.make_leaves(h, &[h.create_leaf()])?;
        Ok(h.create_leaf().join("cgroup.procs"))
    }

    /// SIGKILL everything a template script left in PARENT/NAME/create, then
    /// remove it, and NAME too unless a monitor's cgroups are in it. A create
    /// cgroup that does not exist is fine.
    pub fn kill_create(&self) -> Result<()> {
        let h = self.tracking()?;
        self.kill_all(&h.create_leaf())?;
        rmdir(&h.create_leaf())?;
        // Not rmdir(): a NAME that still holds monitor or payload is no error here.
        let _ = std::fs::remove_dir(&h.dir);
        Ok(())
    }

    /// Move the calling monitor, single-threaded, into monitor in every hierarchy.
    pub fn enter_monitor(&self) -> Result<()> {
        self.enter_self("monitor", Hierarchy::monitor)
    }

    /// Move the calling process, which must be single-threaded (a container's
    /// init before it execs, `exec`'s first child), into payload in every
    /// hierarchy.
    pub fn enter_payload_self(&self) -> Result<()> {
        self.enter_self("init", Hierarchy::payload)
    }

    /// The calling process moves itself: on v1 by writing `0` to `tasks`, which
    /// moves only the calling thread (all there is) and so, unlike a write to
    /// `cgroup.procs` or of another pid, skips the cgroup threadgroup lock, whose
    /// write side waits out an RCU grace period: 8 to 16 ms a start on this
    /// kernel, most of a start (`berth start --trace`), against 0.1 ms. v2 has no
    /// `tasks`: there `0` goes to `cgroup.procs`.
    fn enter_self(&self, who: &str, leaf: fn(&Hierarchy) -> PathBuf) -> Result<()> {
        for h in &self.hierarchies {
            let path = leaf(h).join(self.self_attach_file());
            crate::trace::step(
                format_args!("cgroups: {who} into {}", path.display()),
                || write_value(&path, "0"),
            )?;
        }
        Ok(())
    }

    /// Where a process writes `0` to move itself (see `enter_self`).
    fn self_attach_file(&self) -> &'static str {
        match self.version {
            CgroupVersion::V1 => "tasks",
            CgroupVersion::V2 => "cgroup.procs",
        }
    }

    /// Write pid to cgroup.procs of payload in every hierarchy.
    pub fn enter_payload(&self, pid: i32) -> Result<()> {
        for h in &self.hierarchies {
            let procs = h.payload().join("cgroup.procs");
            crate::trace::step(
                format_args!("cgroups: init into {}", procs.display()),
                || write_value(&procs, &pid.to_string()),
            )?;
        }
        Ok(())
    }

    /// Apply the limits to payload. Errors name the file written and the value.
    /// A limit whose controller these cgroups were not chosen with is an error.
    pub fn apply_limits(&self, resources: &Resources) -> Result<()> {
        for (controller, limit) in required(resources) {
            if self.payload_dir(controller).is_none() {
                return Err(Error::Cgroup(format!(
                    "the {limit} needs the {controller} controller, which these cgroups \
                     were not chosen with (give Cgroups::new the same resources)"
                )));
            }
        }
        let resources = &self.with_default_pids(resources);
        let files = match self.version {
            CgroupVersion::V1 => v1::limit_files(resources),
            CgroupVersion::V2 => v2::limit_files(resources),
        };
        for (controller, file, value) in files {
            if let Some(payload) = self.payload_dir(controller) {
                write_value(&payload.join(file), &value)?;
            }
        }
        if let Some(payload) = self.payload_dir("devices") {
            v1::restrict_devices(&payload)?;
        }
        Ok(())
    }

    /// `resources` with the default pids limit if they set none and these cgroups
    /// have the pids controller (a host without it runs containers unlimited, as
    /// before, rather than refusing them).
    fn with_default_pids(&self, resources: &Resources) -> Resources {
        let mut resources = resources.clone();
        if resources.pids.is_none() && self.payload_dir("pids").is_some() {
            resources.pids = Some(DEFAULT_PIDS_LIMIT);
        }
        resources
    }

    /// Does the host enforce which devices the container may use?
    pub fn restricts_devices(&self) -> bool {
        self.payload_dir("devices").is_some()
    }

    /// The pids in payload, from the tracking hierarchy's cgroup.procs; none if
    /// there is no payload cgroup.
    pub fn payload_pids(&self) -> Result<Vec<i32>> {
        leaf_pids(&self.tracking()?.payload())
    }

    /// SIGKILL everything in payload until it is empty: `cgroup.kill` on v2
    /// where the kernel has it, else each pid of `cgroup.procs` in a loop (which
    /// also catches processes forked meanwhile). Gives up after 5 s naming the
    /// pids left. A payload that does not exist is empty.
    pub fn kill_payload(&self) -> Result<()> {
        self.kill_all(&self.tracking()?.payload())
    }

    /// SIGKILL every process in the cgroup `leaf` until it is empty (see
    /// `kill_payload`). No freezer: each round kills what the last one missed,
    /// and a container's init takes its whole PID namespace with it.
    fn kill_all(&self, leaf: &Path) -> Result<()> {
        if !leaf.is_dir() {
            return Ok(());
        }
        let kill_file = leaf.join("cgroup.kill");
        let use_kill_file = self.version == CgroupVersion::V2 && kill_file.exists();
        let deadline = Instant::now() + KILL_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = leaf_pids(leaf)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Cgroup(format!(
                    "processes {pids:?} are still in {} after {} s of SIGKILL",
                    leaf.display(),
                    KILL_TIMEOUT.as_secs()
                )));
            }
            if use_kill_file {
                write_value(&kill_file, "1")?;
            } else {
                for pid in pids {
                    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(e) => {
                            return Err(Error::Cgroup(format!(
                                "kill {pid} in {}: {e}",
                                leaf.display()
                            )));
                        }
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Move the calling process out of monitor (into the root cgroup of each
    /// hierarchy) if it is there, then rmdir payload, monitor, create and NAME (not
    /// PARENT) in every hierarchy. Missing dirs are fine; a cgroup that still
    /// holds processes is an error naming them. Every hierarchy is tried; the
    /// first error is returned.
    pub fn remove(&self) -> Result<()> {
        let me = i32::try_from(std::process::id())
            .map_err(|_| Error::Cgroup("own pid does not fit in an i32".to_owned()))?;
        let mut first_error = None;
        for h in &self.hierarchies {
            let result = leave(h, me)
                .and_then(|()| rmdir(&h.payload()))
                .and_then(|()| rmdir(&h.monitor()))
                .and_then(|()| rmdir(&h.create_leaf()))
                .and_then(|()| rmdir(&h.dir));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The payload directory in the hierarchy that holds `controller` ("memory",
    /// "pids", "cpu"). On v2 that is the controllers berth enables: `memory` and
    /// `cpu` only with a limit of theirs.
    pub fn payload_dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(Hierarchy::payload)
    }

    /// What the payload uses now, read from its cgroup files (`describe` and the
    /// daemon's metrics). A figure is `None` where no hierarchy berth uses for
    /// this container keeps it: memory needs the memory controller (enabled for
    /// a memory limit only); CPU time is in every v2 cgroup's `cpu.stat`, and on
    /// v1 only where `cpuacct` shares a hierarchy berth uses (`cpu,cpuacct`).
    /// Blocking (file reads): not for async threads.
    pub fn usage(&self) -> Usage {
        let read = |controller: &str, files: &[&str]| -> Option<u64> {
            let dir = self.payload_dir(controller)?;
            files
                .iter()
                .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let cpu_seconds = match self.version {
            CgroupVersion::V2 => self
                .hierarchies
                .first()
                .and_then(|h| std::fs::read_to_string(h.payload().join("cpu.stat")).ok())
                .and_then(|stat| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .map(|usec| usec as f64 / 1e6),
            CgroupVersion::V1 => read("cpuacct", &["cpuacct.usage"]).map(|ns| ns as f64 / 1e9),
        };
        Usage {
            cpu_seconds,
            memory_bytes: read("memory", &["memory.current", "memory.usage_in_bytes"]),
            pids: read("pids", &["pids.current"]),
        }
    }

    /// The dirs of PARENT in every hierarchy used.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.parent.clone()).collect()
    }

    fn tracking(&self) -> Result<&Hierarchy> {
        self.hierarchies
            .first()
            .ok_or_else(|| Error::Cgroup("no cgroup hierarchy recorded".to_owned()))
    }
}

/// A container's cgroup usage at one moment; see [`Cgroups::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time of all its processes, user and system.
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

/// `PARENT/NAME`, refusing anything that could leave the hierarchy or name
/// more than one cgroup.
fn relative_dir(parent: &str, name: &str) -> Result<PathBuf> {
    berth_manifests::check_name(name).map_err(|why| Error::BadName(name.to_owned(), why))?;
    let parent_ok = !parent.is_empty()
        && Path::new(parent)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !parent_ok {
        return Err(Error::Cgroup(format!(
            "cgroup parent {parent:?} must be a relative path without '.' or '..'"
        )));
    }
    Ok(parent_path(parent).join(name))
}

fn parent_path(parent: &str) -> PathBuf {
    Path::new(parent).components().collect()
}

/// Write one value to a cgroup file in one write(2), as the kernel wants.
fn write_value(path: &Path, value: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| Error::Cgroup(format!("write {value:?} to {}: {e}", path.display())))
}

/// The pids in a leaf cgroup; none if it does not exist.
fn leaf_pids(leaf: &Path) -> Result<Vec<i32>> {
    match read_pids(&leaf.join("cgroup.procs")) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        other => other,
    }
}

fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    text.split_whitespace()
        .map(|p| {
            p.parse()
                .map_err(|_| Error::Cgroup(format!("{}: {p:?} is not a pid", path.display())))
        })
        .collect()
}

/// Move `me` to the root cgroup if it is in monitor or payload, which could
/// not be removed with it inside.
fn leave(h: &Hierarchy, me: i32) -> Result<()> {
    for leaf in [h.monitor(), h.payload()] {
        let procs = leaf.join("cgroup.procs");
        if procs.exists() && read_pids(&procs)?.contains(&me) {
            write_value(&h.mount.join("cgroup.procs"), &me.to_string())?;
        }
    }
    Ok(())
}

/// rmdir(2) a cgroup; a missing one is fine. Processes that were just killed
/// may take a moment to leave, so EBUSY is retried for about a second.
fn rmdir(dir: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
                let pids = read_pids(&dir.join("cgroup.procs")).unwrap_or_default();
                return Err(Error::Cgroup(format!(
                    "cannot remove {}: {e} (processes in it: {pids:?})",
                    dir.display()
                )));
            }
            Err(e) => return Err(io("remove", dir)(e)),
        }
    }
}

/// Make a cgroup directory unless it exists; returns whether it was made.
fn make_dir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("create", dir)(e)),
    }
}

#[cfg(test)]
mod tests;

/// `pids.max` for a pids limit: `0` is the manifest's word for no limit.
fn pids_max(pids: u64) -> String {
    match pids {
        0 => "max".to_owned(),
        n => n.to_string(),
    }
}
