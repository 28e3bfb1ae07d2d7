//! The overlay of a container with a user namespace. Its layers belong to host
//! ids, so each is cloned as a detached mount idmapped to the container's ids
//! (open_tree OPEN_TREE_CLONE, mount_setattr MOUNT_ATTR_IDMAP). The overlay is
//! made from them in the initial user namespace (so overlayfs still reads the
//! layers' `trusted.overlay.*` attributes) and handed to the container's init as
//! a detached mount, which it moves onto its rootfs in its own mount namespace.
//! Needs a kernel that takes detached mounts as layers (6.15 or so); the create
//! tries it and copies the layers where it fails.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::libc;
use rustix::fs::{Mode, OFlags};
use rustix::mount::OpenTreeFlags;

use super::overlay::{self, Overlay};
use crate::userns::IdMaps;

/// `struct mount_attr` (linux/mount.h), which libc does not bind everywhere.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// The overlay of `overlay`'s layers seen through `maps`, as a detached mount
/// (close-on-exec). Nothing is mounted anywhere until someone moves it.
pub fn detached_overlay(overlay: &Overlay, maps: &IdMaps) -> Result<OwnedFd, String> {
    let userns = user_namespace(maps)?;
    let lowers = overlay
        .lowers
        .iter()
        .map(|lower| idmapped_clone(lower, &userns))
        .collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<String> = lowers
        .iter()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .collect();
    let fs = overlay::superblock(&paths, &overlay.upper, &overlay.work)
        .map_err(|refused| refused.explain())?;
    overlay::detached_mount(&fs).map_err(|e| format!("fsmount the overlay: {e}"))
}

/// A detached copy of the mount at `dir`, read-only, its ids mapped by `userns`.
fn idmapped_clone(dir: &Path, userns: &OwnedFd) -> Result<OwnedFd, String> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| format!("open_tree {}: {e}", dir.display()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes of `attr`, which
    // lives across the call, and changes only the detached mount `tree` we own.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(format!(
            "idmap {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(tree)
}

/// A user namespace with `maps`, held by an fd: a child unshares one and waits
/// while its maps are written and the namespace is opened, then exits.
fn user_namespace(maps: &IdMaps) -> Result<OwnedFd, String> {
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (ready_read, ready_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    // SAFETY: the child makes only async-signal-safe system calls (close, unshare,
    // write, read, _exit) and touches no memory it shares with other threads, so
    // forking is sound even in a multi-threaded caller (the daemon's creates).
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            // SAFETY: see above; the fds are this process's own copies.
            libc::close(go_write.as_raw_fd());
            libc::close(ready_read.as_raw_fd());
            let made = [u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0)];
            libc::write(ready_write.as_raw_fd(), made.as_ptr().cast(), 1);
            let mut go = [0u8; 1];
            libc::read(go_read.as_raw_fd(), go.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("fork: {e}")),
    };
    drop(ready_write);
    drop(go_read);
    let opened = (|| {
        let mut made = [0u8; 1];
        match nix::unistd::read(&ready_read, &mut made) {
            Ok(1) if made[0] == 1 => {}
            _ => return Err("cannot make a user namespace for the layers".to_owned()),
        }
        crate::userns::write_maps(child.as_raw(), maps)?;
        let path = format!("/proc/{child}/ns/user");
        rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open {path}: {e}"))
    })();
    drop(go_write);
    let _ = nix::sys::wait::waitpid(child, None);
    opened
}
