//! overlayfs: tried at create on a superblock that is never mounted anywhere,
//! mounted at start by the container's init inside its own mount namespace.
//!
//! The new mount API (fsopen, fsconfig, fsmount, move_mount) takes each lower
//! with its own `lowerdir+` (Linux 6.8), so no number or length of layer paths
//! meets the one-page limit of mount(2)'s options. Older kernels get mount(2)
//! with every directory as a short `/proc/self/fd/N`.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno as NixErrno;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use crate::sync::SetupError;

/// An overlay rootfs as the container's init mounts it.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Bottom first, as images list their layers.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Why the kernel would not make the overlay.
#[derive(Debug)]
pub(super) enum Refused {
    /// No new mount API, or no `lowerdir+` in it: mount(2) must do.
    OldKernel,
    Kernel {
        errno: Errno,
        what: String,
    },
}

impl Refused {
    pub(super) fn explain(self) -> String {
        match self {
            Refused::OldKernel => "the kernel has no fsconfig lowerdir+ (Linux 6.8)".to_owned(),
            Refused::Kernel { errno, what } => format!(
                "overlayfs refused {what}: {}",
                std::io::Error::from_raw_os_error(errno.raw_os_error())
            ),
        }
    }
}

/// overlayfs's messages about what it refused (`e overlay: ...`), read from the
/// filesystem context.
fn kernel_says(fs: &OwnedFd) -> String {
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                let line = String::from_utf8_lossy(&buf[..n]);
                // Each message starts with its level: `e `, `w ` or `i `.
                let line = line.trim_end();
                said.push(line.get(2..).unwrap_or(line).to_owned());
            }
            _ => break,
        }
    }
    said.join("; ")
}

fn refused(fs: &OwnedFd, errno: Errno, what: String) -> Refused {
    let said = kernel_says(fs);
    Refused::Kernel {
        errno,
        what: if said.is_empty() {
            what
        } else {
            format!("{what} ({said})")
        },
    }
}

/// The overlay's superblock, made but not mounted; `lowers` bottom first (paths,
/// or `/proc/self/fd/N` of detached mounts).
pub(super) fn superblock<L: AsRef<OsStr>>(
    lowers: &[L],
    upper: &Path,
    work: &Path,
) -> Result<OwnedFd, Refused> {
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(Errno::NOSYS) => return Err(Refused::OldKernel),
        Err(e) => {
            return Err(Refused::Kernel {
                errno: e,
                what: "fsopen overlay".to_owned(),
            });
        }
    };
    // Top first, as overlayfs stacks them.
    for (i, lower) in lowers.iter().rev().enumerate() {
        let lower = lower.as_ref();
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower) {
            Ok(()) => {}
            Err(Errno::INVAL) if i == 0 => return Err(Refused::OldKernel),
            Err(e) => {
                return Err(refused(
                    &fs,
                    e,
                    format!("lower {}", Path::new(lower).display()),
                ));
            }
        }
    }
    for (key, value) in [
        ("upperdir", upper.as_os_str()),
        ("workdir", work.as_os_str()),
        // No inode index: a container's upper is only ever used by its own overlay.
        ("index", "off".as_ref()),
        ("xino", "off".as_ref()),
    ] {
        rustix::mount::fsconfig_set_string(&fs, key, value)
            .map_err(|e| refused(&fs, e, format!("{key} {}", value.to_string_lossy())))?;
    }
    rustix::mount::fsconfig_create(&fs)
        .map_err(|e| refused(&fs, e, format!("upper {}", upper.display())))?;
    Ok(fs)
}

/// A detached mount of the superblock `fs`.
pub(super) fn detached_mount(fs: &OwnedFd) -> Result<OwnedFd, Errno> {
    rustix::mount::fsmount(fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
}

/// Can this kernel make `overlay`, with its upper where it is? `Err` says why not.
/// Run at create: the superblock is made and dropped, never mounted, so the host
/// never sees it. This also makes overlayfs's `work/work`.
pub fn probe(overlay: &Overlay) -> Result<(), String> {
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| {
        text.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    if !listed {
        return Err("the kernel has no overlayfs (no overlay in /proc/filesystems)".to_owned());
    }
    match superblock(&overlay.lowers, &overlay.upper, &overlay.work) {
        Ok(_made) => Ok(()),
        // A kernel before 6.8: only a real mount could tell; the start does it.
        Err(Refused::OldKernel) => Ok(()),
        Err(refused) => Err(refused.explain()),
    }
}

fn setup_error(step: &str, errno: Errno, target: &Path) -> SetupError {
    SetupError {
        step: step.to_owned(),
        errno: errno.raw_os_error(),
        path: Some(target.display().to_string()),
    }
}

/// In the container's init, with / already private: the overlay on `target`.
pub fn mount(overlay: &Overlay, target: &Path) -> Result<(), SetupError> {
    let fs = match superblock(&overlay.lowers, &overlay.upper, &overlay.work) {
        Ok(fs) => fs,
        Err(Refused::OldKernel) => return mount_by_fds(overlay, target),
        Err(Refused::Kernel { errno, what }) => {
            return Err(setup_error(
                &format!("mount the overlay rootfs: {what}; on"),
                errno,
                target,
            ));
        }
    };
    let mnt =
        detached_mount(&fs).map_err(|e| setup_error("mount the overlay rootfs", e, target))?;
    attach(&mnt, target)
}

/// In the container's init: the detached overlay mount `mnt` onto `target`.
pub fn attach(mnt: &OwnedFd, target: &Path) -> Result<(), SetupError> {
    rustix::mount::move_mount(
        mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| setup_error("move the overlay rootfs to", e, target))
}

/// mount(2), every directory named by a `/proc/self/fd/N` of its own: short
/// whatever the paths, and no `:` or `,` in them to escape.
fn mount_by_fds(overlay: &Overlay, target: &Path) -> Result<(), SetupError> {
    let open = |dir: &Path| {
        rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| setup_error("open the layer", e, dir))
    };
    let lowers = overlay
        .lowers
        .iter()
        .rev()
        .map(|dir| open(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let (upper, work) = (open(&overlay.upper)?, open(&overlay.work)?);
    let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        lowers.iter().map(fd_path).collect::<Vec<_>>().join(":"),
        fd_path(&upper),
        fd_path(&work),
    );
    // mount(2) copies one page of options.
    if options.len() >= 4096 {
        return Err(setup_error(
            &format!(
                "mount the overlay rootfs: {} layers are too many for this kernel (before 6.8); on",
                overlay.lowers.len()
            ),
            Errno::TOOBIG,
            target,
        ));
    }
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| setup_error("mount the overlay rootfs on", Errno::INVAL, target))?;
    nix::mount::mount(
        Some("overlay"),
        target_c.as_c_str(),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e: NixErrno| {
        setup_error(
            "mount the overlay rootfs on",
            Errno::from_raw_os_error(e as i32),
            target,
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Runs `f` in a thread of its own mount namespace (/ private), which ends
    /// with the thread: nothing it mounts is ever seen outside.
    fn in_private_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    fn layers(dir: &Path, count: usize) -> Overlay {
        let mut lowers = Vec::new();
        for i in 0..count {
            // Long names, to pass mount(2)'s page of options by far if spelled out.
            let lower = dir.join(format!("{i:03}-{}", "l".repeat(200)));
            std::fs::create_dir(&lower).unwrap();
            std::fs::write(lower.join("shared"), format!("{i}")).unwrap();
            std::fs::write(lower.join(format!("only-{i}")), "").unwrap();
            lowers.push(lower);
        }
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        Overlay {
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }

    fn check_both_ways(count: usize) {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let overlay = layers(dir.path(), count);
        probe(&overlay).unwrap();
        let merged = dir.path().join("merged");
        for by_fds in [false, true] {
            let (o, m) = (overlay.clone(), merged.clone());
            let (top, all) = in_private_namespace(move || {
                if by_fds {
                    mount_by_fds(&o, &m).unwrap();
                } else {
                    mount(&o, &m).unwrap();
                }
                let top = std::fs::read_to_string(m.join("shared")).unwrap();
                let all = (0..count).all(|i| m.join(format!("only-{i}")).exists());
                (top, all)
            });
            assert_eq!(top, format!("{}", count - 1), "the last layer is on top");
            assert!(all, "every layer shows");
        }
        assert_eq!(
            std::fs::read_dir(&merged).unwrap().count(),
            0,
            "the mount ended with its namespace"
        );
    }

    #[test]
    fn sixty_layers_with_long_paths_mount_with_either_api() {
        check_both_ways(60);
    }

    #[test]
    fn two_layers_mount_with_either_api() {
        check_both_ways(2);
    }

    #[test]
    fn the_probe_refuses_an_upper_on_a_filesystem_overlayfs_cannot_use() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outer = layers(dir.path(), 1);
        let merged = dir.path().join("merged");
        // An upper inside an overlay (as when berth's state dir is in a container).
        let refused = in_private_namespace(move || {
            mount(&outer, &merged).unwrap();
            let inner = Overlay {
                lowers: outer.lowers.clone(),
                upper: merged.join("upper"),
                work: merged.join("work"),
            };
            std::fs::create_dir(&inner.upper).unwrap();
            std::fs::create_dir(&inner.work).unwrap();
            probe(&inner)
        });
        let why = refused.unwrap_err();
        assert!(
            why.starts_with("overlayfs refused upperdir")
                && why.contains("overlay: filesystem on")
                && why.contains("not supported as upperdir): Invalid argument"),
            "{why}"
        );
    }
}
