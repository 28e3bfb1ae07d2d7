//! `berth exec`: run a command inside a running container, like `lxc-attach`.
//! Join its namespaces through a pidfd of its init, enter its payload cgroup,
//! take the same capabilities, no_new_privs and seccomp filters and its
//! environment, then exec. Its exit code becomes berth's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use crate::Runtime;
use crate::error::{Error, Result};
use crate::status::process_start_time;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// `KEY=VALUE`, on top of the container's environment.
    pub env: Vec<String>,
    /// Default: the container's working directory.
    pub working_dir: Option<String>,
    /// `-i`: pass stdin through (otherwise the command reads /dev/null).
    pub stdin: bool,
    /// `-t`: a pseudo-terminal inside the container, proxied to berth's.
    pub tty: bool,
}

impl Runtime {
    /// Run `options.command` in the running container `name`, with stdio passed
    /// through; returns its exit code (128 + signal when killed).
    pub fn exec(&self, name: &str, options: &ExecOptions) -> Result<i32> {
        if options.command.is_empty() {
            return Err(Error::Start("exec needs a command".to_owned()));
        }
        if !crate::sealed::running_from_sealed_copy() {
            return Err(Error::NotSealed);
        }
        let config = self.config(name)?;
        let status = self
            .status(name)?
            .filter(|s| s.monitor_pid.is_some())
            .ok_or_else(|| Error::NotRunning(name.to_owned()))?;
        let (Some(pid), Some(started)) = (status.init_pid, status.init_start_time) else {
            return Err(Error::NotRunning(name.to_owned()));
        };
        // The pid must still be that init, not a reuse of its number.
        if process_start_time(pid) != Some(started) {
            return Err(Error::NotRunning(name.to_owned()));
        }
        // SAFETY: pidfd_open with a pid and no flags returns a new fd or -1.
        let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            return Err(Error::NotRunning(name.to_owned()));
        }
        // SAFETY: the fd was just returned to us and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };

        // The container's filters, from the cache its create or start wrote
        // (recompiled if the profile changed since, as they would be without it).
        let cache = self.dir(name)?.seccomp_cache();
        let mut plan = crate::monitor::plan(&config, Some(&cache)).map_err(Error::Start)?;
        for pair in &options.env {
            let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
            plan.env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            plan.env.push(pair.clone());
        }
        let working_dir = options
            .working_dir
            .clone()
            .unwrap_or(plan.working_dir.clone());
        let cgroups = status.cgroups.clone();
        let command = options.command.clone();

        let terminal = if options.tty {
            Some(
                UnixStream::pair()
                    .map_err(crate::error::io("create a socket for", PathBuf::from(name)))?,
            )
        } else {
            None
        };
        let io = Io {
            stdin: options.stdin || options.tty,
            terminal: terminal.as_ref().map(|(_, inner)| inner),
        };
        // SAFETY: the CLI is single-threaded here; the children only exec or exit.
        match unsafe { fork() } {
            Err(e) => Err(crate::error::errno("fork for", PathBuf::from(name))(e)),
            Ok(ForkResult::Child) => {
                let code =
                    match attach(&pidfd, cgroups.as_ref(), &plan, &working_dir, &command, &io) {
                        Ok(code) => code,
                        Err(message) => {
                            eprintln!("berth: exec in {name}: {message}");
                            126
                        }
                    };
                // SAFETY: _exit ends only this child.
                unsafe { nix::libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                if let Some((outer, inner)) = terminal {
                    drop(inner);
                    match crate::pty::receive_master(&outer) {
                        Ok(master) => crate::pty::proxy(master),
                        Err(message) => eprintln!("berth: exec in {name}: {message}"),
                    }
                }
                Ok(exit_code(waitpid(child, None)))
            }
        }
    }
}

/// How the command's stdio is set up.
pub(crate) struct Io<'a> {
    pub(crate) stdin: bool,
    /// `-t`: where to send the pty master.
    pub(crate) terminal: Option<&'a UnixStream>,
}

pub(crate) fn exit_code(status: nix::Result<WaitStatus>) -> i32 {
    match status {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
        _ => 1,
    }
}

/// In the first child: non-dumpable, cgroup, namespaces, then a grandchild that
/// is in the container's PID namespace runs the command. Returns its exit code.
fn attach(
    pidfd: &OwnedFd,
    cgroups: Option<&crate::cgroup::Cgroups>,
    plan: &crate::init::Plan,
    working_dir: &str,
    command: &[String],
    io: &Io,
) -> std::result::Result<i32, String> {
    join(pidfd, cgroups, plan)?;
    // SAFETY: still a single thread.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Parent { child }) => Ok(exit_code(waitpid(child, None))),
        Ok(ForkResult::Child) => {
            let message = run_command(plan, working_dir, command, io);
            eprintln!("berth: exec: {message}");
            // SAFETY: _exit ends only this grandchild.
            unsafe {
                nix::libc::_exit(if message.contains("No such file") {
                    127
                } else {
                    126
                })
            }
        }
    }
}

/// In a forked child of a single-threaded process: non-dumpable, into the
/// payload cgroup, into the container's namespaces (its PID namespace for the
/// children only). Shared by `berth exec` and the monitor's exec health checks.
pub(crate) fn join(
    pidfd: &OwnedFd,
    cgroups: Option<&crate::cgroup::Cgroups>,
    plan: &crate::init::Plan,
) -> std::result::Result<(), String> {
    // Until the command is exec'd, the container must not open this process's
    // /proc/PID/{exe,fd,mem,environ}; the grandchild inherits this.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("make berth non-dumpable: {e}"))?;
    // A forked child: single-threaded.
    if let Some(cgroups) = cgroups {
        cgroups.enter_payload_self().map_err(|e| e.to_string())?;
    }
    let mut flags = nix::libc::CLONE_NEWNS
        | nix::libc::CLONE_NEWUTS
        | nix::libc::CLONE_NEWIPC
        | nix::libc::CLONE_NEWPID
        | nix::libc::CLONE_NEWCGROUP;
    if plan.network != berth_manifests::NetworkMode::Host {
        flags |= nix::libc::CLONE_NEWNET;
    }
    if plan.id_maps.is_some() {
        flags |= nix::libc::CLONE_NEWUSER;
    }
    // SAFETY: setns on a pidfd joins the listed namespaces of that process at once.
    if unsafe { nix::libc::setns(pidfd.as_raw_fd(), flags) } < 0 {
        return Err(format!(
            "join its namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    if plan.id_maps.is_some() {
        crate::userns::become_root()
            .map_err(|e| format!("become root of the user namespace: {e}"))?;
    }
    Ok(())
}

/// In the grandchild, inside the container: returns only on failure.
pub(crate) fn run_command(
    plan: &crate::init::Plan,
    working_dir: &str,
    command: &[String],
    io: &Io,
) -> String {
    if let Some(terminal) = io.terminal {
        if let Err(e) = crate::pty::attach_inside(terminal) {
            return e;
        }
    } else if !io.stdin
        && let Ok(null) = std::fs::File::open("/dev/null")
    {
        // SAFETY: dup2 onto this process's own stdin.
        unsafe { nix::libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) };
    }
    if let Err(e) = nix::unistd::chdir(working_dir) {
        return format!("enter {working_dir}: {e}");
    }
    crate::init::confine_and_exec(plan, command, || {}).to_string()
}
