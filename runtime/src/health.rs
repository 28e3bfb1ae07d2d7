//! Health checks (`spec.healthcheck`), run by the container's monitor, so that
//! they go on while the daemon is down or restarting.
//!
//! Each check is a forked child of the single-threaded monitor (the monitor
//! itself never joins a namespace): an `exec` check joins the container as
//! `berth exec` does (cgroup, namespaces, then a grandchild confined like the
//! command), a `tcp` or `http` check joins only its network namespace and
//! connects to loopback there. The child enforces the check's timeout itself and
//! writes what it has to say to a pipe; the monitor polls the child's pidfd and
//! the pipe, never waits on them, and reaps the child by its pid alone, so the
//! payload's reaping is untouched.
//!
//! `notify: true` gives the container an sd_notify socket, as Podman's
//! `--sdnotify=container` does: a datagram socket the monitor binds in a
//! directory of the container's own, bound read-only into the container at
//! [`NOTIFY_DIR_IN_CONTAINER`]. `READY=1` marks it Healthy (no probe), or lets the
//! probes begin.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_manifests::{Healthcheck, Probe};
use nix::sys::signal::Signal;
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::cgroup::Cgroups;
use crate::init::Plan;
use crate::status::{Health, HealthState, now};

/// Output kept of one check, as Docker keeps: the first 4 KiB.
pub(crate) const OUTPUT_MAX: usize = 4096;
/// An sd_notify message is a few short lines; a larger datagram is dropped.
const DATAGRAM_MAX: usize = 4096;
/// Datagrams read at one wake-up: a container that floods its socket cannot
/// keep its monitor from the rest of its work.
const DATAGRAMS_PER_WAKE: usize = 64;
/// Where the notify socket's directory appears in the container (Podman's).
pub(crate) const NOTIFY_DIR_IN_CONTAINER: &str = "/run/notify";
const NOTIFY_SOCKET_NAME: &str = "notify.sock";
/// A check child still there this long after its timeout is killed by the
/// monitor (the child enforces the timeout itself first).
const GRACE: Duration = Duration::from_secs(2);
/// The first check after a start runs this soon (or after `interval`, if shorter),
/// as the kubelet's first probe does, rather than a whole interval later.
const FIRST_CHECK: Duration = Duration::from_secs(1);
/// A `berth exec`-style exit code for a check that ran out of time (timeout(1)'s).
const TIMED_OUT: i32 = 124;

/// `NOTIFY_SOCKET` for the container's command.
pub(crate) fn notify_socket_env() -> String {
    format!("NOTIFY_SOCKET={NOTIFY_DIR_IN_CONTAINER}/{NOTIFY_SOCKET_NAME}")
}

/// The container as its monitor holds it, for a check to join.
pub(crate) struct Target<'a> {
    pub pidfd: &'a OwnedFd,
    pub cgroups: &'a Cgroups,
    pub plan: &'a Plan,
}

/// The checks of one monitor's container, across its starts and reboots.
pub(crate) struct Checker {
    check: Healthcheck,
    /// The current run's start: `startPeriod` counts from here.
    started: Instant,
    /// When the next check is due; `None` while none may run (stopping, or
    /// waiting for `READY=1`).
    next: Option<Instant>,
    /// `READY=1` seen in this run (always true without `notify`).
    ready: bool,
    running: Option<Running>,
    notify: Option<NotifySocket>,
}

/// A check under way.
struct Running {
    pid: Pid,
    pidfd: OwnedFd,
    output: OwnedFd,
    text: Vec<u8>,
    kill_at: Instant,
    killed: bool,
}

impl Checker {
    /// With `notify`, binds the socket in `notify_dir` (under the container's
    /// directory).
    pub(crate) fn new(check: &Healthcheck, notify_dir: &Path) -> Result<Checker, String> {
        let notify = if check.notify {
            Some(NotifySocket::bind(notify_dir)?)
        } else {
            None
        };
        Ok(Checker {
            check: check.clone(),
            started: Instant::now(),
            next: None,
            ready: !check.notify,
            running: None,
            notify,
        })
    }

    /// The host directory init binds at [`NOTIFY_DIR_IN_CONTAINER`], with `notify`.
    pub(crate) fn notify_dir(&self) -> Option<&Path> {
        self.notify.as_ref().map(|n| n.dir.as_path())
    }

    /// A (re)start or reboot: Starting again, the first check soon.
    pub(crate) fn reset(&mut self) -> Health {
        self.abort();
        self.started = Instant::now();
        self.ready = !self.check.notify;
        if let Some(notify) = &self.notify {
            // What the previous run said is not this one's word.
            for _ in 0..1024 {
                if notify.receive().is_none() {
                    break;
                }
            }
        }
        self.next = self.first_check();
        Health {
            state: HealthState::Starting,
            failing_streak: 0,
            last_output: String::new(),
            checked_at: None,
            since: Some(now()),
        }
    }

    fn first_check(&self) -> Option<Instant> {
        let interval = Duration::from_millis(self.check.interval_ms);
        (self.ready && self.check.probe.is_some())
            .then(|| Instant::now() + interval.min(FIRST_CHECK))
    }

    /// No more checks (the container stops or is gone); one under way is killed.
    pub(crate) fn pause(&mut self) {
        self.abort();
        self.next = None;
    }

    /// The fds the monitor polls for it.
    pub(crate) fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = Vec::new();
        if let Some(notify) = &self.notify {
            fds.push(notify.socket.as_fd());
        }
        if let Some(running) = &self.running {
            fds.push(running.pidfd.as_fd());
            fds.push(running.output.as_fd());
        }
        fds
    }

    /// How long the monitor may sleep before `service` has something to do.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        let at = match &self.running {
            Some(running) if !running.killed => Some(running.kill_at),
            Some(_) => None,
            None => self.next,
        }?;
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// Everything due now, never blocking: notify datagrams read, a finished
    /// check's verdict recorded, a late one killed, a due one started (only with
    /// a `target`: the container runs and is not stopping). Returns whether
    /// `health` changed enough to be saved and told (its state or streak).
    pub(crate) fn service(&mut self, health: &mut Health, target: Option<&Target>) -> bool {
        let mut changed = self.read_notify(health);
        if let Some(running) = &mut self.running {
            running.drain();
            if !running.killed && Instant::now() >= running.kill_at {
                let _ = crate::monitor::pidfd_signal(&running.pidfd, Signal::SIGKILL);
                running.killed = true;
            }
            match waitpid(running.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
                ended => {
                    running.drain();
                    let passed = matches!(ended, Ok(WaitStatus::Exited(_, 0)));
                    let mut output = String::from_utf8_lossy(&running.text).trim().to_owned();
                    if running.killed {
                        output = format!("{output}\nberth: the check did not end: killed")
                            .trim()
                            .to_owned();
                    }
                    self.running = None;
                    changed |= self.record(health, passed, output);
                    self.next =
                        Some(Instant::now() + Duration::from_millis(self.check.interval_ms));
                }
            }
        }
        let due = self.next.is_some_and(|at| Instant::now() >= at);
        if due && target.is_none() {
            // Not now (a stop or a reboot under way): never a due time in the
            // past, which would have the monitor's poll loop spin.
            self.next = Some(Instant::now() + Duration::from_millis(self.check.interval_ms));
        }
        if due
            && self.running.is_none()
            && let (Some(target), Some(probe)) = (target, &self.check.probe)
        {
            let timeout = Duration::from_millis(self.check.timeout_ms);
            match spawn(probe, target, timeout) {
                Ok(running) => {
                    self.running = Some(running);
                    self.next = None;
                }
                Err(message) => {
                    changed |= self.record(health, false, format!("berth: {message}"));
                    self.next =
                        Some(Instant::now() + Duration::from_millis(self.check.interval_ms));
                }
            }
        }
        changed
    }

    fn record(&self, health: &mut Health, passed: bool, output: String) -> bool {
        let in_start_period =
            self.started.elapsed() < Duration::from_millis(self.check.start_period_ms);
        record(
            health,
            passed,
            output,
            in_start_period,
            self.check.retries,
            now(),
        )
    }

    /// Datagrams on the notify socket: `READY=1` and `STATUS=`.
    fn read_notify(&mut self, health: &mut Health) -> bool {
        let Some(notify) = &self.notify else {
            return false;
        };
        let mut changed = false;
        for _ in 0..DATAGRAMS_PER_WAKE {
            let Some(message) = notify.receive() else {
                break;
            };
            let text = String::from_utf8_lossy(&message);
            for line in text.lines() {
                if line == "READY=1" && !self.ready {
                    self.ready = true;
                    if self.check.probe.is_none() {
                        health.checked_at = Some(now());
                        changed |= set_state(health, HealthState::Healthy, now());
                    } else {
                        self.next = Some(Instant::now());
                    }
                } else if let Some(status) = line.strip_prefix("STATUS=")
                    && self.check.probe.is_none()
                {
                    health.last_output = status.chars().take(OUTPUT_MAX).collect();
                }
            }
        }
        changed
    }

    /// Kill and reap a check under way.
    fn abort(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = crate::monitor::pidfd_signal(&running.pidfd, Signal::SIGKILL);
            let _ = waitpid(running.pid, None);
        }
    }

    /// The monitor is done: no check, no socket left in the container's directory.
    pub(crate) fn close(&mut self) {
        self.pause();
        if let Some(notify) = self.notify.take() {
            notify.remove();
        }
    }
}

/// One check's result applied to `health`, Docker's way: a pass makes it Healthy
/// and clears the streak; a failure counts, except while it is still Starting
/// within `startPeriod`; `retries` failures in a row make it Unhealthy. Returns
/// whether the state or the streak (up to `retries`) changed.
fn record(
    health: &mut Health,
    passed: bool,
    output: String,
    in_start_period: bool,
    retries: u32,
    at: u64,
) -> bool {
    let streak = health.failing_streak;
    health.checked_at = Some(at);
    health.last_output = output;
    let mut changed = false;
    if passed {
        health.failing_streak = 0;
        changed |= set_state(health, HealthState::Healthy, at);
    } else if !(in_start_period && health.state == HealthState::Starting) {
        health.failing_streak = health.failing_streak.saturating_add(1);
        if health.failing_streak >= retries {
            changed |= set_state(health, HealthState::Unhealthy, at);
        }
    }
    // Past `retries` the streak only grows: not a write to the disk per interval
    // for as long as it stays Unhealthy (the monitor's answers still show it).
    changed || (streak != health.failing_streak && health.failing_streak <= retries)
}

fn set_state(health: &mut Health, state: HealthState, at: u64) -> bool {
    if health.state == state {
        return false;
    }
    health.state = state;
    health.since = Some(at);
    true
}

impl Running {
    /// Read what the check wrote so far (the pipe is non-blocking), keeping the
    /// first `OUTPUT_MAX` bytes.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match nix::unistd::read(&self.output, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let room = OUTPUT_MAX.saturating_sub(self.text.len());
                    self.text.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    }
}

/// Fork the child that runs one check; its stdout and stderr are the pipe.
fn spawn(probe: &Probe, target: &Target, timeout: Duration) -> Result<Running, String> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("health check: pipe: {e}"))?;
    nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("health check: pipe: {e}"))?;
    // SAFETY: the monitor is single-threaded; the child runs the check and _exits.
    match unsafe { fork() } {
        Err(e) => Err(format!("health check: fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read);
            // SAFETY: dup2 onto this child's own stdout and stderr.
            unsafe {
                nix::libc::dup2(write.as_raw_fd(), 1);
                nix::libc::dup2(write.as_raw_fd(), 2);
            }
            drop(write);
            let code = match probe {
                Probe::Exec(command) => exec_check(target, command, timeout),
                Probe::Tcp(port) => net_check(target, *port, None, timeout),
                Probe::Http { port, path } => net_check(target, *port, Some(path), timeout),
            };
            // SAFETY: _exit ends only this child; nothing of the monitor's runs twice.
            unsafe { nix::libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            let pidfd = match pidfd_open(child) {
                Ok(pidfd) => pidfd,
                Err(e) => {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Err(format!("health check: pidfd_open: {e}"));
                }
            };
            Ok(Running {
                pid: child,
                pidfd,
                output: read,
                text: Vec::new(),
                kill_at: Instant::now() + timeout + GRACE,
                killed: false,
            })
        }
    }
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags returns a new fd or -1.
    let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// In the check's child: join the container as `berth exec` does, then a
/// grandchild inside its PID namespace (the check's keeper) runs the command and
/// enforces the timeout. Exits with the command's code.
fn exec_check(target: &Target, command: &[String], timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    if let Err(message) = crate::exec::join(target.pidfd, Some(target.cgroups), target.plan) {
        eprintln!("berth: health check: {message}");
        return 126;
    }
    // SAFETY: this child is single-threaded.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("berth: health check: fork: {e}");
            126
        }
        Ok(ForkResult::Child) => {
            let code = keep(target.plan, command, timeout, deadline);
            // SAFETY: _exit ends only this grandchild.
            unsafe { nix::libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => crate::exec::exit_code(waitpid(child, None)),
    }
}

/// The keeper, in the container's PID namespace: a subreaper, so that what the
/// command leaves behind comes back to it rather than to the container's init
/// (which may never reap: a `sleep` as PID 1 would collect a zombie per timed-out
/// check). Runs the command in its own process group; on timeout kills the group
/// and the command; then reaps every process that came back to it.
fn keep(plan: &Plan, command: &[String], timeout: Duration, deadline: Instant) -> i32 {
    // Nothing of the monitor's stays open in a process the container can see.
    let _ = crate::init::above_stdio(crate::init::FdsAbove::Close);
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) changes only this process's flags.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: this process is single-threaded.
    let child = match unsafe { fork() } {
        Err(e) => {
            eprintln!("berth: health check: fork: {e}");
            return 126;
        }
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            let io = crate::exec::Io {
                stdin: false,
                terminal: None,
            };
            let message = crate::exec::run_command(plan, &plan.working_dir, command, &io);
            eprintln!("berth: health check: {message}");
            // SAFETY: _exit ends only this process.
            unsafe {
                nix::libc::_exit(if message.contains("No such file") {
                    127
                } else {
                    126
                })
            }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    keep_only_cap_kill();
    let code = match wait_until(child, deadline) {
        Some(status) => crate::exec::exit_code(Ok(status)),
        None => {
            // The group, then the command itself (it may have left it).
            let _ = nix::sys::signal::kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            eprintln!("berth: health check: timed out after {timeout:?}: killed");
            TIMED_OUT
        }
    };
    // What came back to this subreaper, for a moment: a process still running
    // (it left the group) goes on to the container's init.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    code
}

/// The keeper is in the container's PID namespace for as long as the check runs,
/// where a container granted CAP_SYS_PTRACE could attach to it even though it is
/// not dumpable. Once the command is forked it needs one capability, CAP_KILL
/// (the command may run as another user): everything else goes, bounding set
/// first (that needs CAP_SETPCAP), then what it holds.
fn keep_only_cap_kill() {
    use caps::{CapSet, Capability};
    for cap in caps::all() {
        if cap != Capability::CAP_KILL {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let kill: caps::CapsHashSet = [Capability::CAP_KILL].into_iter().collect();
    let _ = caps::clear(None, CapSet::Inheritable);
    let _ = caps::set(None, CapSet::Effective, &kill);
    let _ = caps::set(None, CapSet::Permitted, &kill);
}

/// Wait for `child` until `deadline`; `None`: it still runs.
fn wait_until(child: Pid, deadline: Instant) -> Option<WaitStatus> {
    let pidfd = pidfd_open(child).ok();
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(status) => return Some(status),
            Err(_) => return Some(WaitStatus::Exited(child, 1)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(pidfd) => {
                let mut fds = [nix::poll::PollFd::new(
                    pidfd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            }
            None => std::thread::sleep(left.min(Duration::from_millis(10))),
        }
    }
}

/// In the check's child: into the container's network namespace only, then a
/// connection to its loopback (and, for `http`, a GET). Exit 0 when healthy.
fn net_check(target: &Target, port: u16, path: Option<&str>, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: setns on a pidfd joins that process's network namespace; this
    // child is single-threaded.
    if unsafe { nix::libc::setns(target.pidfd.as_raw_fd(), nix::libc::CLONE_NEWNET) } < 0 {
        println!(
            "berth: health check: join the network namespace: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let mut stream = match connect(port, deadline) {
        Ok(stream) => stream,
        Err(e) => {
            println!("connect to port {port}: {e}");
            return 1;
        }
    };
    let Some(path) = path else {
        println!("connected to port {port}");
        return 0;
    };
    match http_get(&mut stream, port, path, deadline) {
        Ok((code, line)) => {
            println!("{line}");
            i32::from(!(200..400).contains(&code))
        }
        Err(e) => {
            println!("GET {path} on port {port}: {e}");
            1
        }
    }
}

/// 127.0.0.1, then ::1 when nothing listens there.
fn connect(port: u16, deadline: Instant) -> std::io::Result<std::net::TcpStream> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let mut first = None;
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(first.unwrap_or_else(timed_out));
        }
        match std::net::TcpStream::connect_timeout(&(ip, port).into(), left) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                first.get_or_insert(e);
            }
            Err(e) => return Err(first.unwrap_or(e)),
        }
    }
    Err(first.unwrap_or_else(timed_out))
}

/// A GET of `path`; the status code and status line.
fn http_get(
    stream: &mut std::net::TcpStream,
    port: u16,
    path: &str,
    deadline: Instant,
) -> std::io::Result<(u16, String)> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero())
            .then_some(left)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: berth-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < OUTPUT_MAX {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let code = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {line:?}"),
            )
        })?;
    Ok((code, line))
}

/// The monitor's end of the container's sd_notify socket.
struct NotifySocket {
    socket: OwnedFd,
    dir: PathBuf,
}

impl NotifySocket {
    /// Make `dir` (a real directory: never through a symlink), bind
    /// `dir/notify.sock` (by `/proc/self/fd`, so that no path component is
    /// followed, and short whatever the state dir), writable by any user of the
    /// container (a user namespace's root is "other" to the host's root).
    fn bind(dir: &Path) -> Result<NotifySocket, String> {
        let shown = dir.display();
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("spec.healthcheck.notify: create {shown}: {e}")),
        }
        let opened = rustix::fs::open(
            dir,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            format!(
                "spec.healthcheck.notify: open {shown}: {e} (it must be a directory, not a symlink)"
            )
        })?;
        let owner = rustix::fs::fstat(&opened)
            .map_err(|e| format!("spec.healthcheck.notify: stat {shown}: {e}"))?
            .st_uid;
        if owner != rustix::process::geteuid().as_raw() {
            return Err(format!(
                "spec.healthcheck.notify: {shown} belongs to uid {owner}, not berth; remove it"
            ));
        }
        match rustix::fs::unlinkat(&opened, NOTIFY_SOCKET_NAME, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(format!(
                    "spec.healthcheck.notify: remove the old {shown}/{NOTIFY_SOCKET_NAME}: {e}"
                ));
            }
        }
        let by_fd = PathBuf::from(format!(
            "/proc/self/fd/{}/{NOTIFY_SOCKET_NAME}",
            opened.as_raw_fd()
        ));
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| format!("spec.healthcheck.notify: socket: {e}"))?;
        let address = nix::sys::socket::UnixAddr::new(&by_fd)
            .map_err(|e| format!("spec.healthcheck.notify: {shown}: {e}"))?;
        nix::sys::socket::bind(socket.as_raw_fd(), &address).map_err(|e| {
            format!("spec.healthcheck.notify: bind {shown}/{NOTIFY_SOCKET_NAME}: {e}")
        })?;
        std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(0o666)).map_err(|e| {
            format!("spec.healthcheck.notify: chmod {shown}/{NOTIFY_SOCKET_NAME}: {e}")
        })?;
        Ok(NotifySocket {
            socket,
            dir: dir.to_owned(),
        })
    }

    /// One datagram, if one waits. Read without a control buffer, so the kernel
    /// discards any fds passed with it (SCM_RIGHTS) rather than install them here;
    /// a datagram larger than `DATAGRAM_MAX` is dropped whole.
    fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            match nix::sys::socket::recv(
                self.socket.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(n) if n > DATAGRAM_MAX => continue,
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }

    fn remove(self) {
        let _ = std::fs::remove_file(self.dir.join(NOTIFY_SOCKET_NAME));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starting() -> Health {
        Health {
            state: HealthState::Starting,
            failing_streak: 0,
            last_output: String::new(),
            checked_at: None,
            since: Some(1),
        }
    }

    #[test]
    fn the_watch_request_is_what_the_monitor_parses() {
        let line = serde_json::to_string(&crate::sync::Request::Watch).unwrap() + "\n";
        assert_eq!(line, crate::monitor::WATCH_REQUEST);
    }

    #[test]
    fn a_pass_makes_it_healthy_and_clears_the_streak() {
        let mut health = starting();
        assert!(record(&mut health, false, "no".into(), false, 3, 10));
        assert_eq!(health.failing_streak, 1);
        assert!(record(&mut health, true, "yes".into(), false, 3, 11));
        assert_eq!(health.state, HealthState::Healthy);
        assert_eq!(health.failing_streak, 0);
        assert_eq!(health.since, Some(11));
        assert_eq!(health.last_output, "yes");
        // Another pass changes nothing worth saving.
        assert!(!record(&mut health, true, "yes".into(), false, 3, 12));
        assert_eq!(health.checked_at, Some(12));
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let mut health = starting();
        record(&mut health, true, String::new(), false, 3, 1);
        record(&mut health, false, String::new(), false, 3, 2);
        record(&mut health, false, String::new(), false, 3, 3);
        assert_eq!(health.state, HealthState::Healthy);
        record(&mut health, false, "down".into(), false, 3, 4);
        assert_eq!(health.state, HealthState::Unhealthy);
        assert_eq!(health.failing_streak, 3);
        assert_eq!(health.since, Some(4));
        // Still failing: counted, not worth a write.
        assert!(!record(&mut health, false, "down".into(), false, 3, 5));
        assert_eq!(health.failing_streak, 4);
    }

    #[test]
    fn failures_within_the_start_period_do_not_count_while_starting() {
        let mut health = starting();
        for at in 0..10 {
            record(&mut health, false, String::new(), true, 1, at);
        }
        assert_eq!(health.state, HealthState::Starting);
        assert_eq!(health.failing_streak, 0);
        // Once healthy, they count even within the period.
        record(&mut health, true, String::new(), true, 1, 11);
        record(&mut health, false, String::new(), true, 1, 12);
        assert_eq!(health.state, HealthState::Unhealthy);
    }

    #[test]
    fn notify_socket_takes_ready_and_refuses_a_symlinked_directory() {
        let tmp = std::env::temp_dir().join(format!("berth-notify-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let elsewhere = tmp.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.join("link")).unwrap();
        assert!(NotifySocket::bind(&tmp.join("link")).is_err());
        assert!(!elsewhere.join(NOTIFY_SOCKET_NAME).exists());

        let check = Healthcheck {
            probe: None,
            interval_ms: 1000,
            timeout_ms: 1000,
            retries: 3,
            start_period_ms: 0,
            notify: true,
        };
        let mut checker = Checker::new(&check, &tmp.join("notify")).unwrap();
        let mut health = checker.reset();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let socket = tmp.join("notify").join(NOTIFY_SOCKET_NAME);
        sender.send_to(b"STATUS=warming up\n", &socket).unwrap();
        // Too large: dropped whole.
        sender
            .send_to(&vec![b'x'; DATAGRAM_MAX + 1], &socket)
            .unwrap();
        assert!(!checker.service(&mut health, None));
        assert_eq!(health.state, HealthState::Starting);
        assert_eq!(health.last_output, "warming up");
        // READY=1 with an fd passed along: the message counts, the fd is never
        // installed in the monitor.
        let passed = tmp.join("passed-fd");
        let file = std::fs::File::create(&passed).unwrap();
        let address = nix::sys::socket::UnixAddr::new(&socket).unwrap();
        let fds = [file.as_raw_fd()];
        nix::sys::socket::sendmsg(
            sender.as_raw_fd(),
            &[std::io::IoSlice::new(b"MAINPID=1\nREADY=1\n")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&address),
        )
        .unwrap();
        drop(file);
        assert!(checker.service(&mut health, None));
        assert_eq!(health.state, HealthState::Healthy);
        let open: Vec<PathBuf> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .collect();
        assert!(!open.contains(&passed), "the passed fd was installed");
        // A restart forgets it.
        assert_eq!(checker.reset().state, HealthState::Starting);
        checker.close();
        assert!(!tmp.join("notify").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
