//! The monitor's side of starting a container (LXC's `lxc_spawn`): clone the
//! child into its namespaces, put it into the payload cgroup, let it configure
//! itself, and learn whether its command was exec'd.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use berth_manifests::NetworkMode;
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::Cgroups;
use crate::init::{self, Plan};
use crate::network::Wiring;
use crate::sync::{self, FromInit, ToInit};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A running container init, as the monitor holds it.
#[derive(Debug)]
pub struct Payload {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub start_time: Option<u64>,
}

/// `struct clone_args` up to `tls` (CLONE_ARGS_SIZE_VER0); libc has no binding
/// for it on every target.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Start the container's init. The error is the message `berth start` prints.
pub fn spawn(
    plan: &Plan,
    cgroups: &Cgroups,
    console: &OwnedFd,
    wiring: Option<&Wiring>,
) -> Result<Payload, String> {
    let (mut parent_end, child_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let console = console
        .try_clone()
        .map_err(|e| format!("console pipe: {e}"))?;

    let mut flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_PIDFD;
    if plan.network != NetworkMode::Host {
        flags |= libc::CLONE_NEWNET;
    }
    if plan.id_maps.is_some() {
        // Created first by the kernel, so it owns the other new namespaces.
        flags |= libc::CLONE_NEWUSER;
    }
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let cloning = crate::trace::start();
    // SAFETY: clone3 without CLONE_VM or a stack behaves like fork(). The monitor is
    // single-threaded, so the child may go on running Rust code (and allocate).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(format!(
            "clone3 into new namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Init moves itself into its cgroups, cheaply (see `enter_payload_self`),
    // before it waits for its go-ahead; in a new user namespace it may not write
    // the host's cgroup files, and the monitor moves it.
    let init_attaches_itself = plan.id_maps.is_none();
    if pid == 0 {
        crate::trace::set_process(crate::trace::Process::Init);
        drop(parent_end);
        let attached = if init_attaches_itself {
            cgroups.enter_payload_self().map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        init::run(plan, child_end, console, attached);
    }
    crate::trace::record("clone3 of init", cloning, Some(crate::trace::now()));
    drop(child_end);
    drop(console);
    let pid = i32::try_from(pid).map_err(|_| "clone3 returned an impossible pid".to_owned())?;
    // SAFETY: the kernel wrote a fresh pidfd for the child; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };

    let abort = |message: String| {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        message
    };
    // Into its cgroups before it may do anything.
    if !init_attaches_itself && let Err(e) = cgroups.enter_payload(pid) {
        return Err(abort(format!("cgroups: {e}")));
    }
    if let Some(maps) = &plan.id_maps
        && let Err(e) = crate::trace::step("user namespace: write the id maps", || {
            crate::userns::write_maps(pid, maps)
        })
    {
        return Err(abort(format!("user namespace: {e}")));
    }
    // Its eth0 is there before its command runs.
    if let Some(wiring) = wiring
        && let Err(e) = crate::trace::step("network: plug the veth", || wiring.plug(pid))
    {
        return Err(abort(format!("network: {e}")));
    }
    // Until init's first step: the barrier, and init waking up on it.
    crate::trace::record("go-ahead to init", crate::trace::start(), None);
    if let Err(e) = sync::send(&parent_end, &ToInit::Configure) {
        return Err(abort(format!(
            "the container's init did not take its go-ahead: {e}"
        )));
    }
    // Everything until EOF: a `Failed`, or `Exec` followed by the close-on-exec EOF.
    let mut replies = Vec::new();
    if let Err(e) = (&mut parent_end).take(1 << 20).read_to_end(&mut replies) {
        return Err(abort(format!("reading from the container's init: {e}")));
    }
    // Ends init's last step, its execve, which closed the socket.
    let exec_seen = crate::trace::start();
    let mut exec_sent = false;
    for line in replies.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<FromInit>(line) {
            Ok(FromInit::Failed(error)) => return Err(abort(error.to_string())),
            Ok(FromInit::Exec) => exec_sent = true,
            Err(_) => {
                return Err(abort(
                    "garbled message from the container's init".to_owned(),
                ));
            }
        }
    }
    if !exec_sent {
        return Err(abort("the container's init died during setup".to_owned()));
    }
    let start_time = crate::status::process_start_time(pid);
    crate::trace::record(
        "read init's replies and its start time",
        exec_seen,
        Some(crate::trace::now()),
    );
    Ok(Payload {
        pid,
        pidfd,
        start_time,
    })
}
