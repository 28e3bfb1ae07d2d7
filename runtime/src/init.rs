//! The container side of the spawn: what the child does between clone and exec
//! (the part of LXC's `do_start` that runs in the new namespaces). It runs in a
//! fork-like child of the single-threaded monitor, so allocating is safe; every
//! failure is sent to the monitor as a `SetupError` before exiting.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use berth_manifests::NetworkMode;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rustix::fs::{OFlags, ResolveFlags};

use crate::sync::{self, FromInit, SetupError, ToInit};

/// Everything the child needs, prepared by the monitor before the clone.
#[derive(Debug)]
pub struct Plan {
    pub rootfs: PathBuf,
    /// Set: `rootfs` is the mount point of this overlay, not a directory to bind.
    pub overlay: Option<crate::layers::Overlay>,
    /// The overlay made by the monitor (idmapped layers, for a user namespace),
    /// detached, for init to move onto `rootfs`; made afresh for every start.
    pub overlay_mount: Option<OwnedFd>,
    /// Host directories bound read-only at the same place (the host template).
    pub host_binds: Vec<PathBuf>,
    /// Shared directories bound read-only (the busybox template's skeleton).
    pub shared_binds: Vec<crate::templates::SharedBind>,
    pub mounts: Vec<berth_manifests::Mount>,
    /// Device and inode of each of `mounts`' sources as the monitor checked them:
    /// init binds a source only if the path still leads there.
    pub mount_ids: Vec<crate::sources::FileId>,
    /// A bridged container's /etc/hosts and /etc/resolv.conf (files in its
    /// directory, written by the monitor) and where init binds them, read-only.
    pub etc_files: Vec<(PathBuf, PathBuf)>,
    pub hostname: String,
    pub command: Vec<String>,
    /// `KEY=VALUE`, final.
    pub env: Vec<String>,
    pub working_dir: String,
    pub network: NetworkMode,
    pub read_only_rootfs: bool,
    pub capabilities: std::collections::HashSet<caps::Capability>,
    /// Compiled before the clone; installed last.
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// Set: the child is in a new user namespace, and becomes its root.
    pub id_maps: Option<crate::userns::IdMaps>,
    /// Run berth's minimal init as PID 1 and the command as its child.
    pub init: bool,
    /// `None`: root.
    pub user: Option<berth_manifests::User>,
    pub supplemental_groups: Vec<u32>,
    /// `spec.healthcheck.notify`: the host directory of the notify socket (the
    /// container's own), bound read-only at `/run/notify`.
    pub notify_dir: Option<PathBuf>,
}

type Step<T = ()> = Result<T, SetupError>;

fn fail(step: &str, errno: Errno, path: impl Into<Option<String>>) -> SetupError {
    SetupError {
        step: step.to_owned(),
        errno: errno as i32,
        path: path.into(),
    }
}

fn shown(path: &Path) -> Option<String> {
    Some(path.display().to_string())
}

/// The child's whole life: wait for the go-ahead, set up, exec. Never returns.
/// `attached`: how init's own move into its cgroups went (`Ok` when the monitor
/// moves it); a failure is reported once the monitor listens.
pub fn run(
    plan: &Plan,
    mut sync: UnixStream,
    console: OwnedFd,
    attached: std::result::Result<(), String>,
) -> ! {
    let result = match sync::receive::<ToInit>(&mut sync) {
        Ok(Some(ToInit::Configure)) => attached
            .map_err(|message| SetupError {
                step: message,
                errno: 0,
                path: None,
            })
            .and_then(|()| setup_and_exec(plan, &sync, console)),
        _ => Err(fail("wait for the monitor", Errno::EPIPE, None)),
    };
    if let Err(error) = result {
        let _ = sync::send(&sync, &FromInit::Failed(error));
    }
    // Not exit(): nothing of the monitor's (atexit handlers, buffers) may run twice.
    // SAFETY: _exit ends this process only and is always safe to call.
    unsafe { nix::libc::_exit(1) }
}

fn setup_and_exec(plan: &Plan, sync: &UnixStream, console: OwnedFd) -> Step {
    use crate::trace::step;
    // The monitor has written our id maps: become the namespace's root.
    if plan.id_maps.is_some() {
        step(
            "become root of the user namespace",
            crate::userns::become_root,
        )
        .map_err(|e| fail("become root of the user namespace", e, None))?;
    }
    // The cgroup namespace only now, with the monitor having put us into the payload
    // cgroup: /proc/self/cgroup inside then shows "/".
    step("unshare the cgroup namespace", || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
    })
    .map_err(|e| fail("unshare the cgroup namespace", e, None))?;
    // Before anything else: no mount of ours may propagate back to the host.
    step("mount: make / private", || {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    })
    .map_err(|e| fail("make / private", e, shown(Path::new("/"))))?;
    build_root(plan)?;
    // Taken while the host's path is reachable, put in place once /run is final
    // (a read-only root gets a tmpfs /run after the pivot).
    let notify = step("mount: clone the notify socket's directory", || {
        plan.notify_dir.as_deref().map(clone_tree).transpose()
    })?;
    step("pivot_root", || enter_root(&plan.rootfs))?;
    step("mount: mask /proc and /sys", || {
        crate::security::protect_proc_and_sys()?;
        if plan.read_only_rootfs {
            crate::security::read_only_root()?;
        }
        Ok(())
    })?;
    if let Some(tree) = notify {
        step("mount: the notify socket's directory", || {
            attach_read_only(&tree, Path::new(crate::health::NOTIFY_DIR_IN_CONTAINER))
        })?;
    }
    step("hostname, loopback, stdio, setsid, workingDir", || {
        nix::unistd::sethostname(&plan.hostname)
            .map_err(|e| fail("set the hostname", e, Some(plan.hostname.clone())))?;
        if plan.network == NetworkMode::None {
            loopback_up().map_err(|e| fail("bring up loopback", e, Some("lo".to_owned())))?;
        }
        redirect_stdio(&console)?;
        drop(console);
        nix::unistd::setsid().map_err(|e| fail("setsid", e, None))?;
        nix::unistd::chdir(Path::new(&plan.working_dir))
            .map_err(|e| fail("enter workingDir", e, Some(plan.working_dir.clone())))
    })?;
    exec(plan, sync)
}

/// The new root: the rootfs as a mount point (a bind of itself, or an image's
/// overlay), the host's binds, spec.mounts, /proc, /sys, /dev.
fn build_root(plan: &Plan) -> Step {
    use crate::trace::step;
    let rootfs = &plan.rootfs;
    let mounting_rootfs = crate::trace::start();
    match (&plan.overlay_mount, &plan.overlay) {
        (Some(detached), _) => crate::layers::attach_overlay(detached, rootfs)?,
        (None, Some(overlay)) => crate::layers::mount_overlay(overlay, rootfs)?,
        (None, None) => mount(
            Some(rootfs),
            rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail("bind the rootfs", e, shown(rootfs)))?,
    }
    for dir in &plan.host_binds {
        bind(dir, rootfs, dir, true)?;
    }
    for shared in &plan.shared_binds {
        bind(&shared.source, rootfs, &shared.target, true)?;
    }
    crate::trace::record(
        "mount: the rootfs and the host's binds",
        mounting_rootfs,
        Some(crate::trace::now()),
    );
    let mounting_proc = crate::trace::start();
    let at = |p: &str| rootfs.join(p);
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    ensure_dir(&at("proc"))?;
    mount(
        Some("proc"),
        &at("proc"),
        Some("proc"),
        nosuid_noexec_nodev,
        None::<&str>,
    )
    .map_err(|e| fail("mount /proc", e, shown(&at("proc"))))?;
    ensure_dir(&at("sys"))?;
    mount(
        Some("sysfs"),
        &at("sys"),
        Some("sysfs"),
        nosuid_noexec_nodev | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .or_else(|_| {
        // Sharing the host's network namespace, sysfs may refuse a new mount: bind it.
        mount(
            Some("/sys"),
            &at("sys"),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| remount_read_only(&at("sys"), nosuid_noexec_nodev))
    })
    .map_err(|e| fail("mount /sys", e, shown(&at("sys"))))?;
    crate::trace::record(
        "mount: /proc and /sys",
        mounting_proc,
        Some(crate::trace::now()),
    );
    step("mount: /dev", || build_dev(&at("dev")))?;
    step("mount: /etc files and spec.mounts", || {
        for (file, target) in &plan.etc_files {
            bind(file, rootfs, target, true)?;
        }
        // The manifest's mounts last, so that one under /dev or /proc is not hidden.
        for (i, m) in plan.mounts.iter().enumerate() {
            let source = reopen_source(&m.source, plan.mount_ids.get(i))?;
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
            bind(&by_fd, rootfs, &m.target, m.read_only)?;
        }
        Ok(())
    })
}

/// The mount source opened again in this mount namespace (an fd from the
/// monitor's cannot be bound here), refused unless it is the file the monitor
/// checked.
fn reopen_source(source: &Path, checked: Option<&crate::sources::FileId>) -> Step<OwnedFd> {
    let changed = || fail("find the mount source", Errno::ESTALE, shown(source));
    let checked = checked.ok_or_else(changed)?;
    let fd = rustix::fs::open(
        source,
        OFlags::PATH | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "find the mount source",
            Errno::from_raw(e.raw_os_error()),
            shown(source),
        )
    })?;
    match crate::sources::identify(&fd) {
        Ok((id, _)) if id == *checked => Ok(fd),
        _ => Err(changed()),
    }
}

fn ensure_dir(path: &Path) -> Step {
    match std::fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(fail(
            "create the mount point",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            shown(path),
        )),
    }
}

/// Bind `source` at `target` inside `rootfs`, resolving `target` as if `rootfs`
/// were `/` so that a symlink in the image cannot point the mount at the host.
fn bind(source: &Path, rootfs: &Path, target: &Path, read_only: bool) -> Step {
    let is_dir = std::fs::metadata(source)
        .map_err(|e| {
            fail(
                "find the mount source",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                shown(source),
            )
        })?
        .is_dir();
    let fd = open_in_root(rootfs, target, is_dir)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let shown_target = shown(&rootfs.join(target.strip_prefix("/").unwrap_or(target)));
    // A symlink in the image may lead the target into /proc or /sys, where a
    // mount would hide what berth masks.
    if on_kernel_filesystem(&fd) {
        return Err(fail(
            "mount over /proc or /sys (a symlink led there)",
            Errno::EPERM,
            shown_target,
        ));
    }
    mount(
        Some(source),
        proc_path.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail("bind mount", e, shown_target.clone()))?;
    if read_only {
        // The remount goes to the new mount on top, which the old fd does not see:
        // resolve the target again.
        drop(fd);
        let fd = open_in_root(rootfs, target, is_dir)?;
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        remount_read_only(
            Path::new(&proc_path),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )
        .map_err(|e| fail("remount read-only", e, shown_target))?;
    }
    Ok(())
}

/// A detached copy of the host directory `dir` (open_tree), to be attached
/// after the pivot, when no host path is reachable any more.
fn clone_tree(dir: &Path) -> Step<OwnedFd> {
    rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
            | rustix::mount::OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| fail("open_tree", Errno::from_raw(e.raw_os_error()), shown(dir)))
}

/// After the pivot: the detached mount `tree` at `target` of the container's
/// root, resolved inside it as `bind` resolves, then made read-only.
fn attach_read_only(tree: &OwnedFd, target: &Path) -> Step {
    let root = Path::new("/");
    let fd = open_in_root(root, target, true)?;
    if on_kernel_filesystem(&fd) {
        return Err(fail(
            "mount over /proc or /sys (a symlink led there)",
            Errno::EPERM,
            shown(target),
        ));
    }
    rustix::mount::move_mount(
        tree,
        "",
        &fd,
        "",
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
            | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| {
        fail(
            "move_mount",
            Errno::from_raw(e.raw_os_error()),
            shown(target),
        )
    })?;
    drop(fd);
    // The new mount is on top: resolve the target again.
    let fd = open_in_root(root, target, true)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    remount_read_only(
        Path::new(&proc_path),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
    .map_err(|e| fail("remount read-only", e, shown(target)))
}

fn on_kernel_filesystem(fd: &OwnedFd) -> bool {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};
    fstatfs(fd).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == PROC_SUPER_MAGIC || kind == SYSFS_MAGIC
    })
}

/// An `O_PATH` fd of `rootfs/target`, creating it (a directory, or an empty file
/// for a file source) where missing; every step resolved inside `rootfs`.
fn open_in_root(rootfs: &Path, target: &Path, is_dir: bool) -> Step<OwnedFd> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::PATH,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "open the rootfs",
            Errno::from_raw(e.raw_os_error()),
            shown(rootfs),
        )
    })?;
    let relative: PathBuf = target
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |path: &Path, flags: OFlags| {
        rustix::fs::openat2(
            &root,
            path,
            flags | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            resolve,
        )
    };
    if let Ok(fd) = open(&relative, OFlags::PATH) {
        return Ok(fd);
    }
    // Create what is missing, one component at a time, each inside the root.
    let mut so_far = PathBuf::new();
    let parts: Vec<&OsStr> = relative.iter().collect();
    for (i, part) in parts.iter().enumerate() {
        let parent = open(
            if so_far.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &so_far
            },
            OFlags::DIRECTORY | OFlags::PATH,
        )
        .map_err(|e| {
            fail(
                "open the mount target",
                Errno::from_raw(e.raw_os_error()),
                shown(&rootfs.join(&so_far)),
            )
        })?;
        so_far.push(part);
        let last = i + 1 == parts.len();
        let made = if last && !is_dir {
            rustix::fs::openat(
                &reopen_dir(&parent, rootfs, &so_far)?,
                *part,
                // Never through a symlink: a dangling one in the image would have the
                // file made where it points, outside the rootfs.
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(
                &reopen_dir(&parent, rootfs, &so_far)?,
                *part,
                rustix::fs::Mode::from_raw_mode(0o755),
            )
        };
        match made {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(fail(
                    "create the mount target",
                    Errno::from_raw(e.raw_os_error()),
                    shown(&rootfs.join(&so_far)),
                ));
            }
        }
    }
    open(&relative, OFlags::PATH).map_err(|e| {
        fail(
            "open the mount target",
            Errno::from_raw(e.raw_os_error()),
            shown(&rootfs.join(&relative)),
        )
    })
}

/// mkdirat/openat need a real directory fd, not O_PATH.
fn reopen_dir(parent: &OwnedFd, rootfs: &Path, for_path: &Path) -> Step<OwnedFd> {
    rustix::fs::openat(
        parent,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "open the mount target",
            Errno::from_raw(e.raw_os_error()),
            shown(&rootfs.join(for_path)),
        )
    })
}

/// A tmpfs /dev with the usual nodes, a private devpts, /dev/shm and /dev/mqueue.
fn build_dev(dev: &Path) -> Step {
    ensure_dir(dev)?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| fail("mount /dev", e, shown(dev)))?;
    // The host's own nodes, bound: mknod is not allowed in a user namespace, and a
    // bind gives exactly these devices and no others.
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = dev.join(name);
        let host = Path::new("/dev").join(name);
        std::fs::File::create(&node).map_err(|e| {
            fail(
                "create device",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                shown(&node),
            )
        })?;
        mount(
            Some(&host),
            &node,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| fail("bind device", e, shown(&host)))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| {
            fail(
                "create symlink",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                shown(&dev.join(link)),
            )
        })?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| fail("mount /dev/pts", e, shown(&pts)))?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| fail("mount /dev/shm", e, shown(&shm)))?;
    let mqueue = dev.join("mqueue");
    ensure_dir(&mqueue)?;
    mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| fail("mount /dev/mqueue", e, shown(&mqueue)))
}

/// pivot_root into the rootfs and detach the old root (runc's pivot_root(".", ".")
/// trick: no put_old directory needed).
fn enter_root(rootfs: &Path) -> Step {
    nix::unistd::chdir(rootfs).map_err(|e| fail("enter the rootfs", e, shown(rootfs)))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e, shown(rootfs)))?;
    // The old root is now on top of "."; make it private, then detach it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail("make the old root a slave", e, None))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach the old root", e, None))?;
    nix::unistd::chdir("/").map_err(|e| fail("enter /", e, None))
}

fn loopback_up() -> Result<(), Errno> {
    use nix::libc;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value. The ioctls read and write
    // only the struct passed, which lives across both calls.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(Errno::last());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// stdin from /dev/null, stdout and stderr to the monitor's console pipe.
fn redirect_stdio(console: &OwnedFd) -> Step {
    let null = rustix::fs::open(
        "/dev/null",
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "open",
            Errno::from_raw(e.raw_os_error()),
            Some("/dev/null".to_owned()),
        )
    })?;
    let mut stdin = unsafe_stdio(0);
    let mut stdout = unsafe_stdio(1);
    let mut stderr = unsafe_stdio(2);
    let dup = |from: &dyn AsFd, to: &mut OwnedFd| {
        rustix::io::dup2(from, to)
            .map_err(|e| fail("redirect stdio", Errno::from_raw(e.raw_os_error()), None))
    };
    let result = dup(&null, &mut stdin)
        .and_then(|()| dup(console, &mut stdout))
        .and_then(|()| dup(console, &mut stderr));
    // The standard fds stay open: forget the owners without closing them.
    std::mem::forget(stdin);
    std::mem::forget(stdout);
    std::mem::forget(stderr);
    result
}

fn unsafe_stdio(fd: i32) -> OwnedFd {
    // SAFETY: 0, 1 and 2 are open in the child (the monitor points them at
    // /dev/null); the OwnedFd is forgotten, never closed.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// execve the command, looked up on the container's PATH like execvp.
fn exec(plan: &Plan, sync: &UnixStream) -> Step {
    if plan.init {
        return Err(crate::pid1::run(plan, sync));
    }
    // Told before the attempt: after a successful execve there is no one left to tell.
    Err(confine_and_exec(plan, &plan.command, || {
        let _ = sync::send(sync, &FromInit::Exec);
    }))
}

/// Close every fd above stderr on exec, take the container's capabilities,
/// no_new_privs and seccomp filters, then execve `command` with `plan.env`, looked up on its PATH like execvp. Used by
/// the container's init and by `berth exec`. Returns only on failure; `announce`
/// runs just before the first execve.
pub(crate) fn confine_and_exec(
    plan: &Plan,
    command: &[String],
    announce: impl FnOnce(),
) -> SetupError {
    let Some(program) = command.first() else {
        return fail("exec", Errno::ENOENT, Some(String::new()));
    };
    let cstring = |s: &str| {
        CString::new(s.as_bytes()).map_err(|_| fail("exec", Errno::EINVAL, Some(s.to_owned())))
    };
    let args = match command.iter().map(|a| cstring(a)).collect::<Step<Vec<_>>>() {
        Ok(args) => args,
        Err(e) => return e,
    };
    use crate::trace::step;
    if let Err(e) = step("close-on-exec every fd above stderr", || {
        above_stdio(FdsAbove::CloseOnExec)
    }) {
        return e;
    }
    // Looked up now, in the container's root, before privileges go.
    let ids = match step("resolve the user", || {
        crate::user::resolve(plan.user.as_ref(), &plan.supplemental_groups)
    }) {
        Ok(ids) => ids,
        Err(e) => return e,
    };
    let home = (!plan.env.iter().any(|e| e.starts_with("HOME=")))
        .then(|| format!("HOME={}", ids.home.as_deref().unwrap_or("/")));
    let env = match plan
        .env
        .iter()
        .chain(home.as_ref())
        .map(|e| cstring(e))
        .collect::<Step<Vec<_>>>()
    {
        Ok(env) => env,
        Err(e) => return e,
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path = plan
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(crate::spawn::DEFAULT_PATH);
        std::env::split_paths(OsStr::new(path))
            .map(|dir| dir.join(program))
            .collect()
    };
    if let Err(e) = step("drop capabilities, set ids, no_new_privs", || {
        crate::security::drop_privileges(&plan.capabilities, &ids)
    }) {
        return e;
    }
    if let Err(e) = step("load the seccomp filter", || {
        crate::seccomp::install(&plan.seccomp)
    }) {
        return SetupError {
            step: format!("install the seccomp filter: {e}"),
            errno: 0,
            path: None,
        };
    }
    step("tell the monitor: exec", announce);
    // The command must never see the trace file: closed here, not only on exec.
    // The step lasts until the monitor sees the exec (its next record).
    crate::trace::record("exec", crate::trace::start(), None);
    crate::trace::close();
    let mut last = Errno::ENOENT;
    for candidate in candidates {
        let Ok(path) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        match nix::unistd::execve(&path, &args, &env) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => {
                last = e;
                if e != Errno::EACCES {
                    break;
                }
            }
            Ok(never) => match never {},
        }
    }
    fail("exec", last, Some(program.clone()))
}

/// What `above_stdio` does to every fd but stdin, stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdsAbove {
    /// Close on exec: nothing berth or its caller holds (a socket, the caller's
    /// terminal, a file) reaches the command.
    CloseOnExec,
    /// Close now (berth's init, which never execs).
    Close,
}

/// Apply `what` to every fd above stderr.
pub(crate) fn above_stdio(what: FdsAbove) -> Step {
    use nix::libc;
    let flags = match what {
        FdsAbove::CloseOnExec => libc::CLOSE_RANGE_CLOEXEC,
        FdsAbove::Close => 0,
    };
    // SAFETY: close_range acts on this process's own fds only; whoever calls it
    // uses none of them again (or, with CLOEXEC, keeps them until exec).
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, flags) };
    if done == 0 {
        return Ok(());
    }
    // Before Linux 5.9 (5.11 for CLOEXEC): each open fd, as /proc lists them.
    let listed = std::fs::read_dir("/proc/self/fd").map_err(|e| {
        fail(
            "list open fds",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            Some("/proc/self/fd".to_owned()),
        )
    })?;
    let fds: Vec<i32> = listed
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: on an fd number of this process; the one that was the
        // directory listing is closed now and just fails with EBADF.
        unsafe {
            match what {
                FdsAbove::CloseOnExec => libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC),
                FdsAbove::Close => libc::close(fd),
            }
        };
    }
    Ok(())
}

/// Make the bind mount at `path` read-only, adding `extra` flags and keeping the
/// ones the kernel locks.
pub(crate) fn remount_read_only(path: &Path, extra: MsFlags) -> nix::Result<()> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra | locked_flags(path),
        None::<&str>,
    )
}

/// The flags a read-only remount must keep: in a user namespace the kernel locks
/// nosuid, nodev, noexec and the atime flags of a bind, and refuses to clear them.
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let flags = stat.flags();
    let mut ms = MsFlags::empty();
    for (fs, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(fs) {
            ms |= m;
        }
    }
    ms
}
