//! What keeps a workload from reaching the host, set up in the container's init
//! before exec, as runc and LXC do: capabilities, no_new_privs, masked and
//! read-only paths under /proc and /sys, a read-only root, seccomp.

use std::collections::HashSet;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use crate::sync::SetupError;

/// The OCI/Docker default set, plus CAP_SYS_BOOT (reboot(2) in a PID namespace
/// restarts only the container). CAP_MKNOD is left out: berth installs no device
/// cgroup rules yet, and without them a device node made inside would reach the
/// host's devices.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_BOOT,
    Capability::CAP_SYS_CHROOT,
];

/// Paths runc masks: files get /dev/null bound over them, directories an empty
/// read-only tmpfs.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default set with the manifest's `add` and `drop` (names as `CAP_*` or `ALL`).
pub fn capability_set(add: &[String], drop: &[String]) -> HashSet<Capability> {
    let parse = |names: &[String]| -> (bool, HashSet<Capability>) {
        let all = names.iter().any(|n| n == "ALL");
        (all, names.iter().filter_map(|n| n.parse().ok()).collect())
    };
    let (add_all, added) = parse(add);
    let (drop_all, dropped) = parse(drop);
    let mut set: HashSet<Capability> = if drop_all {
        HashSet::new()
    } else {
        DEFAULT_CAPABILITIES.iter().copied().collect()
    };
    if add_all {
        set.extend(caps::all());
    }
    set.extend(added);
    set.retain(|c| !dropped.contains(c));
    set
}

fn fail(step: &str, errno: Errno, path: &str) -> SetupError {
    SetupError {
        step: step.to_owned(),
        errno: errno as i32,
        path: Some(path.to_owned()),
    }
}

/// After pivot_root: hide what the container must not read, freeze what it must
/// not write.
pub fn protect_proc_and_sys() -> Result<(), SetupError> {
    for path in MASKED {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                *path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
        } else {
            mount(
                Some("/dev/null"),
                *path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|e| fail("mask", e, path))?;
    }
    for path in READ_ONLY {
        if !Path::new(path).exists() {
            continue;
        }
        mount(
            Some(*path),
            *path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| {
            crate::init::remount_read_only(Path::new(path), MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        })
        .map_err(|e| fail("make read-only", e, path))?;
    }
    Ok(())
}

/// `readOnlyRootfs`: tmpfs /tmp and /run stay writable, the rest is read-only.
pub fn read_only_root() -> Result<(), SetupError> {
    for (dir, mode) in [("/tmp", "1777"), ("/run", "755")] {
        let _ = std::fs::create_dir_all(dir);
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode={mode},size=65536k").as_str()),
        )
        .map_err(|e| fail("mount tmpfs", e, dir))?;
    }
    crate::init::remount_read_only(Path::new("/"), MsFlags::empty())
        .map_err(|e| fail("remount read-only", e, "/"))
}

/// The bounding set becomes `set`; then the command's user (`ids`). Root keeps
/// `set` in its inheritable, permitted, effective and ambient sets, as runc
/// does; any other user keeps none (setuid cleared them; inheritable follows),
/// as with Docker and Podman. Then no_new_privs, so nothing exec'd can gain more.
pub(crate) fn drop_privileges(
    set: &HashSet<Capability>,
    ids: &crate::user::Ids,
) -> Result<(), SetupError> {
    let io = |step: &str, e: caps::errors::CapsError| SetupError {
        step: format!("{step}: {e}"),
        errno: 0,
        path: None,
    };
    for cap in caps::all() {
        if !set.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| io("drop from the bounding set", e))?;
        }
    }
    crate::user::become_user(ids)?;
    if ids.uid == 0 {
        let set: caps::CapsHashSet = set.iter().copied().collect();
        caps::set(None, CapSet::Effective, &set)
            .map_err(|e| io("set effective capabilities", e))?;
        caps::set(None, CapSet::Permitted, &set)
            .map_err(|e| io("set permitted capabilities", e))?;
        caps::set(None, CapSet::Inheritable, &set)
            .map_err(|e| io("set inheritable capabilities", e))?;
        // Ambient needs each cap in permitted and inheritable, which now holds.
        caps::set(None, CapSet::Ambient, &set).map_err(|e| io("set ambient capabilities", e))?;
    } else {
        caps::clear(None, CapSet::Inheritable)
            .map_err(|e| io("clear inheritable capabilities", e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError {
        step: "set no_new_privs".to_owned(),
        errno: e as i32,
        path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_drop_change_the_default_set() {
        let set = capability_set(&["CAP_NET_ADMIN".to_owned()], &["CAP_NET_RAW".to_owned()]);
        assert!(set.contains(&Capability::CAP_NET_ADMIN));
        assert!(!set.contains(&Capability::CAP_NET_RAW));
        assert!(set.contains(&Capability::CAP_SYS_BOOT));
        assert!(!set.contains(&Capability::CAP_SYS_ADMIN));
        assert!(capability_set(&[], &["ALL".to_owned()]).is_empty());
        assert_eq!(
            capability_set(&["CAP_CHOWN".to_owned()], &["ALL".to_owned()]),
            HashSet::from([Capability::CAP_CHOWN])
        );
        assert!(capability_set(&["ALL".to_owned()], &[]).contains(&Capability::CAP_SYS_ADMIN));
    }
}
