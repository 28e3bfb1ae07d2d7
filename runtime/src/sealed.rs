//! runc's CVE-2019-5736: a process that joins a container is visible inside it,
//! and its /proc/PID/exe is a handle on berth's own binary that the container
//! can reopen for writing once no berth runs it any more, replacing the host's
//! berth. A command that is `#!/proc/self/exe` even runs that binary inside. So
//! `berth exec` and the monitors (which the containers' inits are cloned from)
//! run from a sealed binary, as runc and crun do: all a container can reach is
//! a file nobody can write.
//!
//! Sealed two ways. First, as runc 1.2 does: the binary seen through a read-only
//! overlayfs of its own directory, mounted nowhere (a detached `fsmount`), so
//! nothing can reach the file under it and no remount can make it writable; it
//! costs no copy (the page cache is the binary's). Where that cannot be made (no
//! new mount API or overlayfs, no directory for its empty second layer), a memfd
//! copy sealed against writes, which costs a copy of the binary in memory per
//! process that runs from it (about 16 ms and 18 MB a start by hand).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, OFlags, SealFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use crate::error::{Error, Result};

const SELF_EXE: &str = "/proc/self/exe";

/// No write, no resize, and no way to lift the seals.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// `statfs`'s magic number of overlayfs.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Whether this process runs from a sealed binary: a memfd sealed against
/// writes, or a file on a read-only overlayfs that is mounted nowhere.
pub(crate) fn running_from_sealed_copy() -> bool {
    // What a process runs from never changes: asked once (the daemon asks at
    // every start of a container, where it would read mountinfo each time).
    static SEALED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEALED.get_or_init(exe_is_sealed)
}

fn exe_is_sealed() -> bool {
    let Ok(exe) = File::open(SELF_EXE) else {
        return false;
    };
    if rustix::fs::fcntl_get_seals(&exe).is_ok_and(|seals| seals.contains(SEALS)) {
        return true;
    }
    on_detached_read_only_overlay(&exe)
}

fn on_detached_read_only_overlay(file: &File) -> bool {
    // f_type is i64 here and another width on other architectures.
    #[allow(clippy::unnecessary_cast)]
    let overlay =
        rustix::fs::fstatfs(file).is_ok_and(|fs| fs.f_type as i64 == OVERLAYFS_SUPER_MAGIC);
    let read_only = rustix::fs::fstatvfs(file)
        .is_ok_and(|vfs| vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    if !overlay || !read_only {
        return false;
    }
    // Detached: no mount of this namespace has its id.
    let Ok(stat) = rustix::fs::statx(
        file,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    ) else {
        return false;
    };
    if !rustix::fs::StatxFlags::from_bits_retain(stat.stx_mask)
        .contains(rustix::fs::StatxFlags::MNT_ID)
    {
        return false;
    }
    let id = stat.stx_mnt_id.to_string();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        !mounts
            .lines()
            .any(|line| line.split(' ').next() == Some(id.as_str()))
    })
}

/// Re-execute this process, with the same arguments and environment, from a
/// sealed binary, unless it already runs from one (then `Ok`). Call it first
/// thing in a command that will join a container. `state_dir` holds the empty
/// directory the overlay needs.
pub fn reexec_from_sealed_copy(state_dir: &Path) -> Result<()> {
    if running_from_sealed_copy() {
        return Ok(());
    }
    let copy = sealed(state_dir)?;
    let args = to_cstrings(std::env::args_os().map(OsStringExt::into_vec))?;
    let env = to_cstrings(std::env::vars_os().map(|(key, value)| {
        let mut pair = key.into_vec();
        pair.push(b'=');
        pair.extend(value.into_vec());
        pair
    }))?;
    let error = match nix::unistd::fexecve(&copy, &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(crate::error::errno("run a sealed copy of", SELF_EXE)(error))
}

/// A sealed copy of this process's binary for a child to run: this process's
/// own when it already runs from one (the daemon: one copy for all the monitors
/// it starts), else a new one, which the child keeps alive while it runs.
#[derive(Debug)]
pub(crate) struct SealedBinary {
    copy: Option<OwnedFd>,
}

impl SealedBinary {
    pub(crate) fn new(state_dir: &Path) -> Result<SealedBinary> {
        if running_from_sealed_copy() {
            return Ok(SealedBinary { copy: None });
        }
        let copy = sealed(state_dir)?;
        // Above the low fds a child may be handed with dup2 (the monitor's report
        // pipe goes to 3), which would replace the copy before its exec.
        let copy = rustix::io::fcntl_dupfd_cloexec(&copy, 10)
            .map_err(|e| crate::error::io("keep the copy of", Path::new(SELF_EXE))(e.into()))?;
        Ok(SealedBinary { copy: Some(copy) })
    }

    /// What to exec: valid in this process and in a child forked from it, until
    /// the child's exec (the fd is close-on-exec).
    pub(crate) fn path(&self) -> PathBuf {
        match &self.copy {
            None => PathBuf::from(SELF_EXE),
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        }
    }
}

/// This process's binary, sealed: through a detached read-only overlay, else as
/// a sealed memfd copy.
fn sealed(state_dir: &Path) -> Result<OwnedFd> {
    match sealed_overlay(state_dir) {
        Ok(file) => Ok(file),
        Err(why) => {
            tracing::debug!("running from a memfd copy of berth, not an overlay: {why}");
            sealed_copy()
        }
    }
}

/// An `O_PATH` handle on this process's binary through an overlayfs of its
/// directory over an empty one (two lower layers and no upper: read-only),
/// mounted read-only and nowhere. Exec'd through /proc/self/fd/N.
fn sealed_overlay(state_dir: &Path) -> std::result::Result<OwnedFd, String> {
    let exe = std::fs::read_link(SELF_EXE).map_err(|e| format!("read {SELF_EXE}: {e}"))?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(format!("{} has no directory", exe.display()));
    };
    if !exe.is_file() {
        // Replaced or removed since it started (" (deleted)").
        return Err(format!(
            "{} is not the running binary's file",
            exe.display()
        ));
    }
    let empty = state_dir.join("empty");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .and_then(
            |()| match std::fs::DirBuilder::new().mode(0o755).create(&empty) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            },
        )
        .map_err(|e| format!("create {}: {e}", empty.display()))?;
    if std::fs::read_dir(&empty).map_or(true, |mut d| d.next().is_some()) {
        return Err(format!("{} is not an empty directory", empty.display()));
    }
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| format!("fsopen overlay: {e}"))?;
    // Top first: the binary's directory, so nothing below can hide the binary.
    let added = [dir, empty.as_path()]
        .iter()
        .try_for_each(|lower| rustix::mount::fsconfig_set_string(&fs, "lowerdir+", *lower));
    if added.is_err() {
        // Before Linux 6.8: one string, `:` between layers, `\` escaping.
        let escape = |p: &Path| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
        };
        let lowers = format!("{}:{}", escape(dir), escape(&empty));
        rustix::mount::fsconfig_set_string(&fs, "lowerdir", lowers.as_str())
            .map_err(|e| format!("overlay lowerdir {lowers}: {e}"))?;
    }
    // Its inode numbers are not ours to care about; only spares dmesg a warning.
    let _ = rustix::mount::fsconfig_set_string(&fs, "xino", "off");
    rustix::mount::fsconfig_create(&fs).map_err(|e| format!("make the overlay: {e}"))?;
    let mount = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(|e| format!("fsmount the overlay: {e}"))?;
    let file = rustix::fs::openat(
        &mount,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("open {} in the overlay: {e}", name.to_string_lossy()))?;
    let file = File::from(file);
    if !on_detached_read_only_overlay(&file) {
        return Err("the overlay is not read-only and detached".to_owned());
    }
    Ok(file.into())
}

/// A memfd holding this process's binary, sealed.
fn sealed_copy() -> Result<OwnedFd> {
    let failed = |op| crate::error::io(op, Path::new(SELF_EXE));
    let mut exe = File::open(SELF_EXE).map_err(failed("open"))?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Since Linux 6.3 a memfd meant to be executed says so (vm.memfd_noexec).
    let memfd = rustix::fs::memfd_create("berth", flags | MemfdFlags::EXEC)
        .or_else(|e| match e {
            rustix::io::Errno::INVAL => rustix::fs::memfd_create("berth", flags),
            e => Err(e),
        })
        .map_err(|e| failed("make an in-memory copy of")(e.into()))?;
    let mut copy = File::from(memfd);
    // std's copy uses copy_file_range or sendfile: no pass through user space.
    std::io::copy(&mut exe, &mut copy).map_err(failed("copy"))?;
    rustix::fs::fcntl_add_seals(&copy, SEALS).map_err(|e| failed("seal the copy of")(e.into()))?;
    Ok(copy.into())
}

fn to_cstrings(items: impl Iterator<Item = Vec<u8>>) -> Result<Vec<CString>> {
    items
        .map(|bytes| {
            CString::new(bytes).map_err(|_| {
                Error::Start("an argument or environment variable holds a NUL byte".to_owned())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_binary_cannot_be_written_and_is_the_running_binary() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root to make an overlay");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let sealed = sealed_overlay(state.path()).unwrap();
        let path = format!("/proc/self/fd/{}", sealed.as_raw_fd());
        let write = std::fs::OpenOptions::new().write(true).open(&path);
        assert_eq!(
            write.map_err(|e| e.raw_os_error()).err(),
            Some(Some(nix::libc::EROFS))
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(SELF_EXE).unwrap(),
            "not the running binary"
        );
        assert!(on_detached_read_only_overlay(&File::open(&path).unwrap()));
        assert!(!on_detached_read_only_overlay(
            &File::open(SELF_EXE).unwrap()
        ));
    }

    #[test]
    fn the_copy_is_sealed_against_writes_and_resizing() {
        let copy = File::from(sealed_copy().unwrap());
        let seals = rustix::fs::fcntl_get_seals(&copy).unwrap();
        assert!(seals.contains(SEALS));
        assert!(std::io::Write::write_all(&mut &copy, b"X").is_err());
        assert!(copy.set_len(0).is_err());
        let size = std::fs::metadata(SELF_EXE).unwrap().len();
        assert_eq!(copy.metadata().unwrap().len(), size);
    }
}
