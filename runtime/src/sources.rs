//! Mount sources judged by what they are, not by how they are spelled: each is
//! opened once (`O_PATH`, symlinks followed by the kernel) and compared by device
//! and inode with berth's state directory and the host's /proc, /sys and /dev,
//! and with every directory above them. A symlink, a `..`, `/proc/self/root/...`
//! or a bind-mount alias all resolve to the same (device, inode).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};

use berth_manifests::Mount;

/// Where a file is, independent of the path it was reached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The host paths no mount source may be, contain or sit inside without an
/// explicit `spec.security.allowHostPaths`: writing there reaches the host's kernel
/// settings and devices.
const HOST_KERNEL_PATHS: &[&str] = &["/proc", "/sys", "/dev"];

/// Filesystems that are the kernel's own interfaces, wherever they are mounted.
const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "binfmt_misc",
];

/// A mount source that passed the checks: what the container's init must find
/// again at the same path before binding it.
#[derive(Debug, Clone, Copy)]
pub struct CheckedSource {
    pub id: FileId,
    pub is_device: bool,
}

fn open_path(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
}

/// (device, inode) and file type of an open file.
pub fn identify(fd: &OwnedFd) -> rustix::io::Result<(FileId, FileType)> {
    let stat = rustix::fs::fstat(fd)?;
    Ok((
        FileId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        },
        FileType::from_raw_mode(stat.st_mode),
    ))
}

/// The directory `dir` and every directory above it up to `/`, climbing by `..`
/// from the open directory (a mount's root climbs to where it is mounted).
fn ancestors(dir: OwnedFd) -> rustix::io::Result<Vec<FileId>> {
    let mut ids = Vec::new();
    let mut current = dir;
    loop {
        let (id, _) = identify(&current)?;
        if ids.last() == Some(&id) || ids.len() > 4096 {
            return Ok(ids);
        }
        ids.push(id);
        current = rustix::fs::openat(
            &current,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
}

/// The directory that holds a non-directory `fd`: the kernel's own name for it
/// (`/proc/self/fd/N`), re-checked by inode so that a rename in between is caught.
fn parent_dir(fd: &OwnedFd, id: FileId) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let path = std::fs::read_link(&link).map_err(|e| format!("{link}: {e}"))?;
    let (Some(parent), Some(file)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} has no parent directory", path.display()));
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", parent.display()))?;
    let entry = rustix::fs::statat(&dir, file, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if entry.st_dev != id.dev || entry.st_ino != id.ino {
        return Err(format!("{} moved while it was checked", path.display()));
    }
    Ok(dir)
}

/// `struct file_handle` with room for the largest handle (MAX_HANDLE_SZ).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

/// The directory `dir` as seen from the mount of `on`: opened again by its file
/// handle, so that a bind mount of one of its subdirectories climbs (`..`) to
/// where the directory really is in the filesystem. `None` where the
/// filesystems differ or do not give handles.
fn reopen_on_mount_of(dir: &OwnedFd, on: &OwnedFd) -> Option<OwnedFd> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `handle` is a file_handle with `handle_bytes` bytes of room after
    // its header, the path is a NUL-terminated empty string used with
    // AT_EMPTY_PATH on a valid fd, and `mount_id` is a valid int to write.
    let rc = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c"".as_ptr(),
            (&raw mut handle).cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return None;
    }
    // SAFETY: the handle was filled in by the kernel just above; `on` is a valid
    // fd naming the mount to open it in. The kernel refuses a handle of another
    // filesystem (ESTALE).
    let fd = unsafe {
        libc::open_by_handle_at(
            on.as_raw_fd(),
            (&raw mut handle).cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The filesystem type of the mount `fd` is on, from /proc/self/mountinfo.
fn filesystem_type(fd: &OwnedFd) -> Result<String, String> {
    let statx = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map_err(|e| format!("statx: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let id = statx.stx_mnt_id.to_string();
    mountinfo
        .lines()
        .find(|line| line.split(' ').next() == Some(id.as_str()))
        .and_then(|line| line.split_once(" - "))
        .and_then(|(_, rest)| rest.split(' ').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("mount {id} is not in /proc/self/mountinfo"))
}

/// Ids of each existing path and of every directory above it.
fn ancestors_of(path: &Path) -> rustix::io::Result<Vec<FileId>> {
    ancestors(open_path(path)?)
}

/// What the sources are compared with, gathered once per start.
struct Landmarks {
    state_dir: PathBuf,
    /// The state dir and every directory above it.
    state_and_above: Vec<FileId>,
    state: FileId,
    /// The state dir, open for reading: a source on its filesystem is reopened on
    /// its mount.
    state_fd: OwnedFd,
    /// Each host kernel path, its id, and every directory above it.
    kernel: Vec<(&'static str, FileId, Vec<FileId>)>,
    /// The ids of `allowHostPaths` entries that exist.
    allowed: Vec<FileId>,
}

impl Landmarks {
    fn gather(state_dir: &Path, allowed: &[PathBuf]) -> Result<Landmarks, String> {
        let shown = |e| format!("berth's state directory {}: {e}", state_dir.display());
        // open_by_handle_at takes no O_PATH fd as its mount.
        let state_fd = rustix::fs::open(
            state_dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(shown)?;
        let state_and_above = ancestors_of(state_dir).map_err(shown)?;
        let state = *state_and_above
            .first()
            .ok_or_else(|| format!("berth's state directory {}", state_dir.display()))?;
        let mut kernel = Vec::new();
        for path in HOST_KERNEL_PATHS {
            // A host without one of them has nothing there to protect.
            if let Ok(ids) = ancestors_of(Path::new(path))
                && let Some(id) = ids.first()
            {
                kernel.push((*path, *id, ids.clone()));
            }
        }
        // An allowed path that does not exist allows nothing.
        let allowed = allowed
            .iter()
            .filter_map(|p| open_path(p).ok())
            .filter_map(|fd| identify(&fd).ok().map(|(id, _)| id))
            .collect();
        Ok(Landmarks {
            state_dir: state_dir.to_owned(),
            state_and_above,
            state,
            state_fd,
            kernel,
            allowed,
        })
    }

    /// Check one source; the error is the message `berth start` prints.
    fn check(&self, source: &Path) -> Result<CheckedSource, String> {
        let shown = source.display();
        let fd = open_path(source).map_err(|e| format!("mount source {shown}: {e}"))?;
        let (id, kind) = identify(&fd).map_err(|e| format!("mount source {shown}: {e}"))?;
        let holder = if kind == FileType::Directory {
            rustix::fs::openat(
                &fd,
                ".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("mount source {shown}: {e}"))?
        } else {
            parent_dir(&fd, id).map_err(|e| format!("mount source {shown}: {e}"))?
        };
        // A bind mount of a directory inside the state dir climbs to where it is
        // mounted, not to the state dir: climb from the same directory as seen on
        // the state dir's mount too.
        let in_state_mount = (id.dev == self.state.dev)
            .then(|| reopen_on_mount_of(&holder, &self.state_fd))
            .flatten()
            .and_then(|fd| ancestors(fd).ok())
            .unwrap_or_default();
        // The source and every directory above it.
        let mut above = vec![id];
        above.extend(ancestors(holder).map_err(|e| format!("mount source {shown}: {e}"))?);
        // Never allowed, whatever the manifest says.
        if self.state_and_above.contains(&id)
            || above.contains(&self.state)
            || in_state_mount.contains(&self.state)
        {
            return Err(format!(
                "mount source {shown} overlaps berth's state directory {}; containers may not see berth's own files",
                self.state_dir.display()
            ));
        }
        if self.allowed.iter().any(|a| above.contains(a)) {
            return Ok(CheckedSource {
                id,
                is_device: is_device(kind),
            });
        }
        let opt_in = "name it in spec.security.allowHostPaths to allow it";
        for (path, kernel_id, kernel_and_above) in &self.kernel {
            if kernel_and_above.contains(&id) {
                return Err(format!(
                    "mount source {shown} is or contains the host's {path}; {opt_in}"
                ));
            }
            if above.contains(kernel_id) {
                return Err(format!(
                    "mount source {shown} is inside the host's {path}; {opt_in}"
                ));
            }
        }
        let fs = filesystem_type(&fd).map_err(|e| format!("mount source {shown}: {e}"))?;
        if KERNEL_FILESYSTEMS.contains(&fs.as_str()) {
            return Err(format!(
                "mount source {shown} is on a {fs} filesystem, one of the kernel's own; {opt_in}"
            ));
        }
        Ok(CheckedSource {
            id,
            is_device: is_device(kind),
        })
    }
}

fn is_device(kind: FileType) -> bool {
    matches!(kind, FileType::CharacterDevice | FileType::BlockDevice)
}

/// Check every `spec.mounts` source against the state dir and the host's kernel
/// paths; `allowed` are the manifest's `allowHostPaths`. Returns one checked
/// source per mount, in order.
pub fn check(
    mounts: &[Mount],
    state_dir: &Path,
    allowed: &[PathBuf],
) -> Result<Vec<CheckedSource>, String> {
    if mounts.is_empty() {
        return Ok(Vec::new());
    }
    let landmarks = Landmarks::gather(state_dir, allowed)?;
    mounts
        .iter()
        .map(|mount| landmarks.check(&mount.source))
        .collect()
}

/// A `rootfs.path` that is the host's `/` by another name: pivoting into it would
/// leave the container on the host's own files.
pub fn refuse_host_root(rootfs: &Path) -> Result<(), String> {
    let id = |path: &Path| {
        open_path(path)
            .and_then(|fd| identify(&fd))
            .map(|(id, _)| id)
            .map_err(|e| format!("rootfs {}: {e}", path.display()))
    };
    if id(rootfs)? == id(Path::new("/"))? {
        return Err(format!(
            "rootfs {} is the host's root; a container needs a root of its own",
            rootfs.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &Path) -> Mount {
        Mount {
            source: source.to_owned(),
            target: PathBuf::from("/data"),
            read_only: false,
        }
    }

    fn refused(source: &Path, state: &Path, allowed: &[PathBuf]) -> String {
        match check(&[mount(source)], state, allowed) {
            Ok(_) => panic!("{} was accepted", source.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn every_spelling_of_the_state_dir_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let state = top.path().join("state");
        std::fs::create_dir_all(state.join("containers")).unwrap();
        std::fs::write(state.join("berth.sock"), "").unwrap();
        std::os::unix::fs::symlink(&state, top.path().join("alias")).unwrap();
        let dotted = top.path().join("state/containers/../containers/..");
        let via_root = PathBuf::from(format!("/proc/self/root{}", state.display()));
        for source in [
            state.clone(),
            top.path().join("alias"),
            top.path().join("alias/containers"),
            top.path().join("alias/berth.sock"),
            dotted,
            via_root,
            top.path().to_owned(),
        ] {
            let why = refused(&source, &state, &[]);
            assert!(why.contains("overlaps berth's state directory"), "{why}");
        }
        // Not even when the manifest allows host paths.
        let why = refused(&state, &state, &[PathBuf::from("/")]);
        assert!(why.contains("overlaps"), "{why}");
    }

    #[test]
    fn the_hosts_kernel_paths_need_an_explicit_opt_in() {
        let top = tempfile::tempdir().unwrap();
        let state = top.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink("/proc/sys", top.path().join("sys-alias")).unwrap();
        for (source, why) in [
            ("/proc", "is or contains the host's /proc"),
            ("/sys", "is or contains the host's /sys"),
            ("/dev", "is or contains the host's /dev"),
            ("/dev/null", "is inside the host's /dev"),
            ("/proc/sys/kernel", "is inside the host's /proc"),
        ] {
            let message = refused(Path::new(source), &state, &[]);
            assert!(message.contains(why), "{message}");
        }
        let message = refused(&top.path().join("sys-alias"), &state, &[]);
        assert!(message.contains("inside the host's /proc"), "{message}");
        // `/` contains the state dir too: that reason comes first.
        assert!(refused(Path::new("/"), &state, &[]).contains("overlaps"));
        let checked = check(
            &[mount(Path::new("/dev/null"))],
            &state,
            &[PathBuf::from("/dev/null")],
        )
        .unwrap();
        assert!(checked[0].is_device);
        // Allowing one node allows nothing beside it.
        refused(
            Path::new("/dev/zero"),
            &state,
            &[PathBuf::from("/dev/null")],
        );
    }

    #[test]
    fn an_ordinary_directory_is_accepted() {
        let top = tempfile::tempdir().unwrap();
        let state = top.path().join("state");
        let data = top.path().join("data");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let checked = check(&[mount(&data)], &state, &[]).unwrap();
        assert!(!checked[0].is_device);
    }
}
