//! `spec.init`: a minimal init as the container's PID 1, as `podman --init`
//! (catatonit), `docker --init` (tini) and LXC's `lxc-init` give. The command
//! runs as its child; PID 1 forwards every catchable signal to it, reaps every
//! orphan that the kernel reparents to it, and exits with the command's status
//! (128 + N when the command was killed by signal N).
//!
//! It is not a second program: PID 1 is the container's init process itself,
//! which stays in the code it already runs, a fork of the monitor, which runs
//! from a sealed in-memory copy of berth (sealed.rs, CVE-2019-5736). It closes
//! every fd it inherited, drops every capability, sets no_new_privs and takes
//! the container's seccomp filter before it waits, so it holds nothing that the
//! command does not.

use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::init::Plan;
use crate::sync::{self, FromInit, SetupError};

/// The exit status of a command killed by `signal`, as a shell reports it.
pub fn status_of_signal(signal: i32) -> i32 {
    128 + signal
}

/// Fork the command and stay behind as PID 1. Returns only if the fork fails.
pub(crate) fn run(plan: &Plan, sync: &UnixStream) -> SetupError {
    let fail = |step: &str, errno: Errno| SetupError {
        step: step.to_owned(),
        errno: errno as i32,
        path: None,
    };
    // Every signal waits for sigwait from now on, so none that arrives between
    // the fork and the loop is lost; the command gets a clean mask back.
    let all = SigSet::all();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None) {
        return fail("block signals in init", e);
    }
    let forking = crate::trace::start();
    // SAFETY: this process is single-threaded (a clone of the single-threaded
    // monitor), so the child may go on running Rust code.
    match unsafe { fork() } {
        Err(e) => fail("fork the command from init", e),
        Ok(ForkResult::Child) => {
            crate::trace::record(
                "fork the command from PID 1",
                forking,
                Some(crate::trace::now()),
            );
            let error = match sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
                Err(e) => fail("unblock signals", e),
                Ok(()) => crate::init::confine_and_exec(plan, &plan.command, || {
                    let _ = sync::send(sync, &FromInit::Exec);
                }),
            };
            let _ = sync::send(sync, &FromInit::Failed(error));
            // SAFETY: _exit ends this process only.
            unsafe { nix::libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => wait_loop(plan, child),
    }
}

/// PID 1's life: confined like the command, then signals in, statuses out.
fn wait_loop(plan: &Plan, command: Pid) -> ! {
    // The command writes the rest of the trace; PID 1 keeps no host file.
    crate::trace::close();
    // The monitor hears from the command (its exec, or why it failed): our copy
    // of the socket, and everything else the monitor's fork left us, goes.
    // Without /proc (its listing is the fallback) some may stay; nothing here
    // uses them, and the confinement below still holds.
    let _ = crate::init::above_stdio(crate::init::FdsAbove::Close);
    hide_the_monitor();
    let confined = crate::security::drop_privileges(
        &std::collections::HashSet::new(),
        &crate::user::Ids::root(),
    )
    .and_then(|()| {
        crate::seccomp::install(&plan.seccomp).map_err(|e| SetupError {
            step: format!("install the seccomp filter: {e}"),
            errno: 0,
            path: None,
        })
    });
    if let Err(e) = confined {
        // Nothing is left to tell the monitor through; the console is.
        eprintln!("berth init: {e}");
        let _ = kill(command, Signal::SIGKILL);
        exit(1);
    }
    let all = SigSet::all();
    loop {
        let Ok(signal) = all.wait() else { continue };
        if signal != Signal::SIGCHLD {
            // ESRCH: the command is gone and its SIGCHLD is on its way.
            let _ = kill(command, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => exit(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => {
                    exit(status_of_signal(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                // An orphan reaped, or a stop or continue of the command.
                Ok(_) => {}
            }
        }
    }
}

/// PID 1 is a fork of the monitor: `ps` in the container would show the
/// monitor's title (with the host's state dir) and a ptrace of it would read the
/// monitor's memory. Titled `init` instead, with its arguments blanked, and not
/// dumpable (no ptrace, no /proc/1/mem or environ without CAP_SYS_PTRACE).
fn hide_the_monitor() {
    let _ = nix::sys::prctl::set_name(c"init");
    let _ = nix::sys::prctl::set_dumpable(false);
    // Fields 48 and 49 of /proc/self/stat, counted after the `(comm)` field.
    let Some((start, end)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let field = |n: usize| rest.get(n - 3)?.parse::<usize>().ok();
            Some((field(48)?, field(49)?))
        })
    else {
        return;
    };
    if end <= start || end - start > 1 << 20 {
        return;
    }
    let title = b"init";
    // SAFETY: [arg_start, arg_end) is this process's own argument area on its
    // stack, as the kernel reports it; nothing in this process reads argv again
    // (std copied it at startup). Writing inside it is what setproctitle does.
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
        std::ptr::copy_nonoverlapping(
            title.as_ptr(),
            start as *mut u8,
            title.len().min(end - start - 1),
        );
    }
}

fn exit(code: i32) -> ! {
    // Not exit(): nothing of the monitor's (atexit handlers, buffers) may run twice.
    // SAFETY: _exit ends this process only.
    unsafe { nix::libc::_exit(code) }
}
