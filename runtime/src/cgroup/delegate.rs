//! `berth daemon --cgroup-delegate`: the cgroup systemd delegated to the unit
//! (`Delegate=yes`) becomes the containers' cgroup parent, so on a cgroup v2 host
//! they are the unit's to own: accounted to it, out of the way of systemd's own
//! management of the root, and found under `systemctl status berth`.
//!
//! cgroup v2 lets a cgroup enable controllers for its children only while it
//! holds no process (the "no internal processes" rule), and berth enables them at
//! every level down to a container. So the daemon first moves itself into a leaf
//! of its own, `UNIT/daemon`; the containers go beside it, `UNIT/NAME/...`. This
//! is the layout systemd's CGROUP_DELEGATION document asks a delegated manager
//! for (and what `DelegateSubgroup=` of newer systemd sets up).
//!
//! The parent is recorded in `<state-dir>/cgroup-parent`, for two readers: the
//! CLI (`berth create`/`start` from a shell put their containers beside the
//! daemon's) and the daemon itself after a restart. systemd before 254 puts a
//! restarted unit's main process into the unit's cgroup, which the containers
//! have made an inner node; the kernel refuses that (EBUSY) and systemd falls
//! back to an ancestor. The record, not where systemd happened to put it, says
//! where the daemon belongs.

use std::path::{Component, Path, PathBuf};

use super::mountinfo::{Kind, cgroup_mounts};
use super::{make_dir, write_value};
use crate::error::{Error, Result, io};

/// The file under the state dir that holds the delegated parent.
pub const RECORD: &str = "cgroup-parent";

/// The leaf the daemon moves itself into.
const DAEMON_LEAF: &str = "daemon";

/// Move this process into `PARENT/daemon` of the cgroup2 hierarchy and return
/// `PARENT`, relative to the hierarchy's root: the recorded one, else this
/// process's own cgroup. Records it.
pub fn delegate_self(state_dir: &Path) -> Result<String> {
    let mountinfo = read("/proc/self/mountinfo")?;
    let own = read("/proc/self/cgroup")?;
    let recorded = recorded_parent(state_dir)?;
    let (mount, parent) = choose(&mountinfo, &own, recorded.as_deref())?;
    let leaf = mount.join(&parent).join(DAEMON_LEAF);
    make_dir(&leaf)?;
    write_value(&leaf.join("cgroup.procs"), "0")?;
    if recorded.as_deref() != Some(parent.as_str()) {
        crate::config::write_atomic(&state_dir.join(RECORD), format!("{parent}\n").as_bytes())?;
    }
    Ok(parent)
}

/// The parent a delegated daemon recorded in this state dir, if any.
pub fn recorded_parent(state_dir: &Path) -> Result<Option<String>> {
    let path = state_dir.join(RECORD);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let parent = text.trim().to_owned();
            check_parent(&parent).map_err(|why| {
                Error::Cgroup(format!(
                    "{}: {why}; remove the file to start anew",
                    path.display()
                ))
            })?;
            Ok(Some(parent))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Forget the record: the daemon runs with a parent of its own choosing again.
pub fn forget(state_dir: &Path) -> Result<()> {
    let path = state_dir.join(RECORD);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &path)(e)),
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

/// The cgroup2 mount point and the parent: `recorded`, else the `0::` line of
/// `/proc/self/cgroup` (less a trailing `/daemon`: already moved).
fn choose(mountinfo: &str, own: &str, recorded: Option<&str>) -> Result<(PathBuf, String)> {
    let mounts = cgroup_mounts(mountinfo);
    let mount = mounts
        .iter()
        .filter(|m| m.kind == Kind::V2)
        .find(|m| m.root == "/")
        .ok_or_else(|| {
            Error::Cgroup(
                "--cgroup-delegate needs the cgroup2 hierarchy mounted at its root; \
                 none is in /proc/self/mountinfo"
                    .to_owned(),
            )
        })?
        .mount_point
        .clone();
    if let Some(parent) = recorded {
        return Ok((mount, parent.to_owned()));
    }
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| Error::Cgroup("/proc/self/cgroup has no cgroup2 (0::) line".to_owned()))?;
    let path = path
        .strip_suffix(&format!("/{DAEMON_LEAF}"))
        .unwrap_or(path);
    let parent = path.trim_start_matches('/').to_owned();
    if parent.is_empty() {
        return Err(Error::Cgroup(
            "--cgroup-delegate: berth runs in the root cgroup, which is nobody's to \
             delegate; run it as a systemd service with Delegate=yes (deploy/berth.service), \
             or drop the flag"
                .to_owned(),
        ));
    }
    check_parent(&parent).map_err(Error::Cgroup)?;
    Ok((mount, parent))
}

fn check_parent(parent: &str) -> std::result::Result<(), String> {
    let ok = !parent.is_empty()
        && !parent.contains('\n')
        && Path::new(parent)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cgroup parent {parent:?} must be a relative path without '.' or '..'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";
    const PURE: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn the_units_own_cgroup_is_the_parent() {
        let own = "0::/system.slice/berth.service\n";
        let (mount, parent) = choose(PURE, own, None).unwrap();
        assert_eq!(mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(parent, "system.slice/berth.service");
        let (mount, _) =
            choose(HYBRID, "1:pids:/x\n0::/system.slice/berth.service\n", None).unwrap();
        assert_eq!(mount, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn a_daemon_already_in_its_leaf_keeps_the_parent() {
        let own = "0::/system.slice/berth.service/daemon\n";
        assert_eq!(
            choose(PURE, own, None).unwrap().1,
            "system.slice/berth.service"
        );
    }

    #[test]
    fn the_record_wins_over_where_systemd_put_a_restarted_daemon() {
        // systemd < 254 fell back to the slice when the unit's cgroup refused it.
        let own = "0::/system.slice\n";
        let (_, parent) = choose(PURE, own, Some("system.slice/berth.service")).unwrap();
        assert_eq!(parent, "system.slice/berth.service");
    }

    #[test]
    fn the_root_cgroup_and_a_v1_only_host_are_refused_with_what_to_do() {
        let e = choose(PURE, "0::/\n", None).unwrap_err().to_string();
        assert!(
            e.contains("root cgroup") && e.contains("Delegate=yes"),
            "{e}"
        );
        let v1 = "35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let e = choose(v1, "0::/system.slice/berth.service\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup2"), "{e}");
    }

    #[test]
    fn a_record_that_climbs_out_is_refused() {
        for bad in ["../x", "/abs", "a/../b", ""] {
            assert!(check_parent(bad).is_err(), "{bad}");
        }
        assert!(check_parent("system.slice/berth.service").is_ok());
    }
}
