//! The per-container monitor: a small single-threaded process (no async runtime)
//! that outlives the daemon. It starts the container, serves `monitor.sock`,
//! forwards the console to `console.log`, and reads init's exit the way LXC's
//! `lxc_poll` does: reboot, halt, seccomp violation, or an ordinary exit.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::cgroup::Cgroups;
use crate::config::SavedConfig;
use crate::init::Plan;
use crate::layout::ContainerDir;
use crate::network::Wiring;
use crate::spawn::{self, DEFAULT_PATH, Payload};
use crate::status::{ExitReason, LastExit, Phase, Status, now};
use crate::sync::{self, FailReason, Report, Request};
use berth_manifests::NetworkMode;

/// argv[0] of a monitor: `ps` shows `[berth monitor] <state-dir> <name>`.
pub const TITLE: &str = "[berth monitor] ";
/// The fd on which a monitor reports to the `berth start` that launched it.
pub const REPORT_FD_ENV: &str = "BERTH_REPORT_FD";
pub const CGROUP_PARENT_ENV: &str = "BERTH_CGROUP_PARENT";
/// console.log is rotated to console.log.1 past this size.
const CONSOLE_MAX: u64 = 1 << 20;
/// Health watchers kept at once (`Request::Watch`): the daemon holds one.
const MAX_WATCHERS: usize = 8;
/// What a client sends on `monitor.sock` to be told of each change of the
/// container's health: one `Status` line at once and one at each change, until
/// the stream closes with the monitor.
pub const WATCH_REQUEST: &str = "{\"op\":\"watch\"}\n";

/// Entry point when the binary runs as a monitor (argv[0] starts with `TITLE`).
/// Returns the exit code of the first process; the monitor itself runs on in a
/// grandchild.
pub fn main(argv0: &str) -> i32 {
    let Some((state_dir, name)) = argv0
        .strip_prefix(TITLE)
        .and_then(|rest| rest.rsplit_once(' '))
    else {
        return 2;
    };
    let report = std::env::var(REPORT_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse::<i32>().ok())
        // SAFETY: `berth start` put the pipe at this fd for us alone.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let cgroup_parent = std::env::var(CGROUP_PARENT_ENV).unwrap_or_else(|_| "berth".to_owned());
    // A traced start: when the starter spawned us, and when we got here.
    let traced = std::env::var(crate::trace::ENV)
        .ok()
        .and_then(|at| at.parse::<u64>().ok())
        .map(|spawned| (spawned, crate::trace::now()));
    if let Some(report) = &report {
        // The container must never inherit it, or `berth start` would wait forever.
        let _ = nix::fcntl::fcntl(
            report,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    // Daemonize like LXC: fork; the first parent waits for the second, which forks
    // the monitor and exits, so the monitor is reparented to init.
    // SAFETY: this process was just exec'd and has a single thread.
    match unsafe { fork() } {
        Err(_) => return 1,
        Ok(ForkResult::Parent { child }) => {
            return match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => 0,
                _ => 1,
            };
        }
        Ok(ForkResult::Child) => {}
    }
    if nix::unistd::setsid().is_err() {
        // SAFETY: _exit is always safe.
        unsafe { nix::libc::_exit(1) }
    }
    // SAFETY: still single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {}
        // SAFETY: _exit is always safe; the intermediate process has nothing to flush.
        Ok(ForkResult::Parent { .. }) => unsafe { nix::libc::_exit(0) },
        Err(_) => unsafe { nix::libc::_exit(1) },
    }
    let _ = nix::unistd::chdir("/");
    detach_stdio();
    close_inherited_fds(report.as_ref().map(AsRawFd::as_raw_fd));
    let _ = nix::sys::prctl::set_name(c"berth-monitor");
    if let Some((spawned, entered)) = traced {
        start_tracing(Path::new(state_dir), name, spawned, entered);
    }
    let code = Monitor::run(Path::new(state_dir), name, &cgroup_parent, report);
    // SAFETY: _exit is always safe.
    unsafe { nix::libc::_exit(code) }
}

/// Append this monitor's steps, and its init's, to the file the starter made
/// (opened before anything else, so init inherits it close-on-exec).
fn start_tracing(state_dir: &Path, name: &str, spawned: u64, entered: u64) {
    let Ok(dir) = ContainerDir::new(&state_dir.join("containers"), name) else {
        return;
    };
    if crate::trace::open(&dir.trace()).is_err() {
        return;
    }
    crate::trace::set_process(crate::trace::Process::Monitor);
    crate::trace::record(
        "re-exec the monitor (fork, exec, Rust start-up)",
        Some(spawned),
        Some(entered),
    );
    crate::trace::record(
        "daemonize (fork, setsid, fork, close fds)",
        Some(entered),
        Some(crate::trace::now()),
    );
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds, which this process owns.
            unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Keep only stdio and the report pipe: an fd inherited from whoever ran
/// `berth start` (a test harness's pipe, a terminal) must not be held for the
/// monitor's whole life, nor reach the container.
fn close_inherited_fds(keep: Option<i32>) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd > 2 && Some(*fd) != keep)
        .collect();
    for fd in fds {
        // The fd of the read_dir itself is already closed and fails harmlessly.
        let _ = nix::unistd::close(fd);
    }
}

struct Monitor {
    dir: ContainerDir,
    config: SavedConfig,
    cgroups: Cgroups,
    status: Status,
    plan: Plan,
    listener: UnixListener,
    console_in: OwnedFd,
    console_out: OwnedFd,
    console: Console,
    /// Clients waiting for the container to stop for good.
    waiting: Vec<UnixStream>,
    /// What to do when init next exits, and when to SIGKILL it.
    stopping: Option<Stopping>,
    /// `network.mode: bridge`: its bridge, address and veth, the same for every
    /// start of this monitor (reboots included).
    wiring: Option<Wiring>,
    /// `spec.healthcheck`: its checks and notify socket (health.rs).
    checker: Option<crate::health::Checker>,
    /// Clients told of each change of its health (`Request::Watch`).
    watchers: Vec<UnixStream>,
}

/// Why a start failed, for `berth start` (and the daemon) to tell apart.
struct Failure {
    message: String,
    reason: Option<FailReason>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            reason: None,
        }
    }
}

#[derive(Clone, Copy)]
struct Stopping {
    reboot: bool,
    kill_at: Instant,
    killed: bool,
}

impl Monitor {
    fn run(state_dir: &Path, name: &str, cgroup_parent: &str, report: Option<OwnedFd>) -> i32 {
        // After a failure the pipe is left for _exit to close, so that `berth start`
        // returns only once this monitor is gone; after a start it closes at once.
        let report_to = |report: Option<OwnedFd>, message: &Report| {
            // Lasts until the starter's next step: its wake-up on the report.
            crate::trace::record("report to berth start", crate::trace::start(), None);
            crate::trace::close();
            if let Some(fd) = report {
                let file = std::fs::File::from(fd);
                let _ = sync::send(&file, message);
                if matches!(message, Report::Failed { .. }) {
                    std::mem::forget(file);
                }
            }
        };
        let mut monitor = match Monitor::prepare(state_dir, name, cgroup_parent) {
            Ok(monitor) => monitor,
            Err(message) => {
                report_to(
                    report,
                    &Report::Failed {
                        message,
                        reason: None,
                    },
                );
                return 1;
            }
        };
        match monitor.start_payload() {
            Ok(payload) => {
                report_to(
                    report,
                    &Report::Started {
                        init_pid: payload.pid,
                    },
                );
                monitor.save();
                monitor.watch(payload);
                0
            }
            Err(Failure { message, reason }) => {
                monitor.status.phase = Phase::Failed;
                monitor.status.error = Some(message.clone());
                monitor.finish();
                report_to(report, &Report::Failed { message, reason });
                1
            }
        }
    }

    fn prepare(state_dir: &Path, name: &str, cgroup_parent: &str) -> Result<Monitor, String> {
        let dir =
            ContainerDir::new(&state_dir.join("containers"), name).map_err(|e| e.to_string())?;
        let config = crate::trace::step("read config.json", || SavedConfig::load(&dir.config()))
            .map_err(|e| e.to_string())?;
        // What can fail cheaply fails before anything is made.
        let mut plan = plan(&config, Some(&dir.seccomp_cache()))?;
        let spec = &config.container.spec;
        let sources = crate::trace::step("check the rootfs and mount sources", || {
            crate::sources::refuse_host_root(&config.rootfs)?;
            let allowed = spec
                .security
                .allow_host_paths
                .as_deref()
                .unwrap_or_default();
            let sources = crate::sources::check(&spec.mounts, state_dir, allowed)?;
            if let Some(uid) = config.id_maps.as_ref().and_then(|m| m.root_uid()) {
                crate::userns::check_reachable(&config.rootfs, uid)?;
            }
            Ok::<_, String>(sources)
        })?;
        plan.mount_ids = sources.iter().map(|s| s.id).collect();
        let wiring = match spec.network {
            NetworkMode::Bridge => {
                let joined = crate::trace::step("network: join the bridge", || {
                    crate::network::join(state_dir, &dir, spec.address)
                })
                .map_err(|e| format!("cannot start {name}: {e}"))?;
                plan.etc_files = joined.etc_files;
                Some(joined.wiring)
            }
            NetworkMode::None | NetworkMode::Host => None,
        };
        let listener = crate::trace::step("listen on monitor.sock", || {
            bind_socket(&dir.monitor_socket())
        })?;
        let (console_in, console_out, console) =
            crate::trace::step("open the console pipe and console.log", || {
                let (console_in, console_out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("console pipe: {e}"))?;
                // Our end only: the container's stdout stays blocking, as programs expect.
                nix::fcntl::fcntl(
                    &console_in,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(|e| format!("console pipe: {e}"))?;
                Ok::<_, String>((console_in, console_out, Console::open(dir.console_log())?))
            })?;
        let resources = &config.container.spec.resources;
        let cgroups = crate::trace::step("cgroups: find the hierarchies (mountinfo)", || {
            Cgroups::new(cgroup_parent, name, resources)
        })
        .map_err(|e| e.to_string())?;
        crate::trace::step("cgroups: check payload is empty", || {
            refuse_a_second_init(&cgroups, name)
        })?;
        if !cgroups.restricts_devices() {
            refuse_device_mounts(&config, &sources)?;
        }
        let made = cgroups
            .create()
            .and_then(|()| cgroups.enter_monitor())
            .and_then(|()| {
                crate::trace::step("cgroups: write the limits", || {
                    cgroups.apply_limits(resources)
                })
            });
        if let Err(e) = made {
            let _ = cgroups.remove();
            let _ = std::fs::remove_file(dir.monitor_socket());
            return Err(e.to_string());
        }
        let checker = match &config.container.spec.healthcheck {
            Some(check) => match crate::health::Checker::new(check, &dir.notify_dir()) {
                Ok(checker) => {
                    if let Some(notify_dir) = checker.notify_dir() {
                        plan.notify_dir = Some(notify_dir.to_owned());
                        // berth's socket, whatever spec.env said.
                        plan.env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
                        plan.env.push(crate::health::notify_socket_env());
                    }
                    Some(checker)
                }
                Err(e) => {
                    let _ = cgroups.remove();
                    let _ = std::fs::remove_file(dir.monitor_socket());
                    return Err(e);
                }
            },
            None => None,
        };
        let status = Status {
            phase: Phase::Starting,
            monitor_pid: Some(std::process::id() as i32),
            init_pid: None,
            init_start_time: None,
            started_at: None,
            reboots: 0,
            last_exit: None,
            error: None,
            hash: config.container.hash.clone(),
            cgroups: Some(cgroups.clone()),
            health: None,
        };
        Ok(Monitor {
            dir,
            config,
            cgroups,
            status,
            plan,
            listener,
            console_in,
            console_out,
            console,
            waiting: Vec::new(),
            stopping: None,
            wiring,
            checker,
            watchers: Vec::new(),
        })
    }

    fn save(&self) {
        if let Err(e) = self.status.save(&self.dir.status()) {
            tracing::error!(container = %self.dir.name, "cannot save status: {e}");
        }
    }

    fn start_payload(&mut self) -> Result<Payload, Failure> {
        self.status.phase = Phase::Starting;
        crate::trace::step("write status (Starting)", || self.save());
        // An idmapped overlay is made here, in the initial user namespace, and
        // inherited by init; the monitor's copy closes once init is cloned.
        if let (Some(overlay), Some(maps)) = (&self.plan.overlay, &self.plan.id_maps) {
            let made = crate::trace::step("make the idmapped overlay", || {
                crate::layers::detached_overlay(overlay, maps)
            })
            .map_err(|e| format!("cannot start {}: the overlay rootfs: {e}", self.dir.name))?;
            self.plan.overlay_mount = Some(made);
        }
        // The bridge's NAT and published ports first: the address is this
        // container's already, and a port another program holds fails the start
        // before anything runs.
        if let Some(wiring) = &self.wiring {
            let ports = &self.config.container.spec.ports;
            crate::trace::step("network: publish ports", || {
                crate::network::publish(wiring, &self.dir.name, ports)
            })
            .map_err(|e| Failure {
                message: format!("cannot start {}: spec.network.ports: {e}", self.dir.name),
                reason: e.port_in_use.then_some(FailReason::PortInUse),
            })?;
        }
        let spawned = spawn::spawn(
            &self.plan,
            &self.cgroups,
            &self.console_out,
            self.wiring.as_ref(),
        );
        self.plan.overlay_mount = None;
        let payload = spawned.map_err(|e| format!("cannot start {}: {e}", self.dir.name))?;
        self.status.phase = Phase::Running;
        self.status.init_pid = Some(payload.pid);
        self.status.init_start_time = payload.start_time;
        self.status.started_at = Some(now());
        self.status.error = None;
        // Every run starts with no verdict.
        self.status.health = self.checker.as_mut().map(crate::health::Checker::reset);
        // Saved by the caller: after telling `berth start`, which need not wait for
        // the disk (anyone asking meanwhile gets the status from this monitor).
        Ok(payload)
    }

    /// The poll loop: init's pidfd, the command socket, the console pipe.
    fn watch(&mut self, mut payload: Payload) {
        settle();
        loop {
            let stop_left = match self.stopping {
                Some(s) if !s.killed => Some(s.kill_at.saturating_duration_since(Instant::now())),
                _ => None,
            };
            let check_left = self.checker.as_ref().and_then(|c| c.timeout());
            let timeout = match stop_left.into_iter().chain(check_left).min() {
                // Rounded up: woken a little early, the loop would spin until due.
                Some(left) => {
                    PollTimeout::try_from((left.as_micros().div_ceil(1000)).min(60_000) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = vec![
                PollFd::new(payload.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.console_in.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(checker) = &self.checker {
                fds.extend(
                    checker
                        .poll_fds()
                        .into_iter()
                        .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
                );
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let (exited, client, console) = (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]));
            drop(fds);
            if !exited {
                self.check_health(&payload);
            }
            if console {
                self.forward_console();
            }
            if client && let Ok((stream, _)) = self.listener.accept() {
                // No settle after a request: `berth get` asks every monitor for
                // its state, and what that touches is the same few pages each time.
                self.serve(stream, &payload);
            }
            if let Some(s) = self.stopping
                && !s.killed
                && Instant::now() >= s.kill_at
            {
                let _ = pidfd_signal(&payload.pidfd, Signal::SIGKILL);
                self.stopping = Some(Stopping { killed: true, ..s });
            }
            if exited {
                let status = waitpid(Pid::from_raw(payload.pid), None);
                self.forward_console();
                match self.on_exit(status) {
                    Some(next) => {
                        payload = next;
                        // The reboot ran the start's code again.
                        settle();
                    }
                    None => return,
                }
            }
        }
    }

    /// The health checks' due work (never blocking); a change is saved and told.
    fn check_health(&mut self, payload: &Payload) {
        let Some(checker) = &mut self.checker else {
            return;
        };
        let Some(health) = &mut self.status.health else {
            return;
        };
        let runs = self.stopping.is_none() && self.status.phase == Phase::Running;
        let target = crate::health::Target {
            pidfd: &payload.pidfd,
            cgroups: &self.cgroups,
            plan: &self.plan,
        };
        if checker.service(health, runs.then_some(&target)) {
            self.save();
            self.tell_watchers();
        }
    }

    /// Each watcher gets the status; one that cannot take it (gone, or not
    /// reading) is dropped.
    fn tell_watchers(&mut self) {
        let status = &self.status;
        self.watchers
            .retain(|watcher| sync::send(watcher, status).is_ok());
    }

    /// LXC's reading of the wait status. Returns the new payload after a reboot.
    fn on_exit(&mut self, status: nix::Result<WaitStatus>) -> Option<Payload> {
        if let Some(checker) = &mut self.checker {
            checker.pause();
        }
        let stop = self.stopping.take();
        let sigsys = crate::pid1::status_of_signal(Signal::SIGSYS as i32);
        let (reason, code, signal) = match status {
            // berth's init passes on a seccomp kill of its command as 128 + SIGSYS.
            Ok(WaitStatus::Exited(_, code))
                if code == sigsys && self.config.container.spec.init && stop.is_none() =>
            {
                let signal = Some(Signal::SIGSYS.as_str().to_owned());
                (ExitReason::SeccompViolation, Some(code), signal)
            }
            Ok(WaitStatus::Exited(_, code)) => (ExitReason::Exited, Some(code), None),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                let reason = match signal {
                    _ if stop.is_some_and(|s| s.reboot) => ExitReason::Reboot,
                    _ if stop.is_some() => ExitReason::StopRequested,
                    Signal::SIGHUP => ExitReason::Reboot,
                    Signal::SIGINT => ExitReason::Halt,
                    Signal::SIGSYS => ExitReason::SeccompViolation,
                    _ => ExitReason::Signaled,
                };
                (reason, None, Some(signal.as_str().to_owned()))
            }
            _ => (ExitReason::Signaled, None, None),
        };
        let reason = match reason {
            ExitReason::Exited if stop.is_some_and(|s| s.reboot) => ExitReason::Reboot,
            ExitReason::Exited if stop.is_some() => ExitReason::StopRequested,
            other => other,
        };
        self.status.last_exit = Some(LastExit {
            reason,
            code,
            signal,
            at: now(),
        });
        self.status.init_pid = None;
        self.status.init_start_time = None;
        // The PID namespace went with its init; the cgroup may still hold strays.
        if let Err(e) = self.cgroups.kill_payload() {
            tracing::error!(container = %self.dir.name, "{e}");
        }
        if reason == ExitReason::Reboot {
            self.status.reboots += 1;
            match self.start_payload() {
                Ok(payload) => {
                    self.save();
                    return Some(payload);
                }
                Err(Failure { message, .. }) => {
                    self.status.phase = Phase::Failed;
                    self.status.error = Some(message);
                }
            }
        } else {
            self.status.phase = match (reason, code) {
                (ExitReason::Exited, Some(0))
                | (ExitReason::Halt | ExitReason::StopRequested, _) => Phase::Stopped,
                _ => Phase::Failed,
            };
            // The verdict first, while this monitor is still alive to vouch for it:
            // whoever reads `status` during the clean-up sees how it ended.
            self.save();
        }
        self.finish();
        None
    }

    /// Remove cgroups and the socket, record the final status, answer the waiters.
    fn finish(&mut self) {
        let cleaned = self
            .cgroups
            .kill_payload()
            .and_then(|()| self.cgroups.remove());
        if let Err(e) = &cleaned {
            tracing::error!(container = %self.dir.name, "{e}");
        }
        if let Some(wiring) = &self.wiring {
            if !self.config.container.spec.ports.is_empty()
                && let Err(e) = crate::network::unpublish(wiring, &self.dir.name)
            {
                tracing::error!(container = %self.dir.name, "cannot unpublish its ports: {e}");
            }
            if let Err(e) = wiring.unplug() {
                tracing::error!(container = %self.dir.name, "{e}");
            }
        }
        let _ = std::fs::remove_file(self.dir.monitor_socket());
        if let Some(checker) = &mut self.checker {
            checker.close();
        }
        // Closed: the watchers' end of the stream tells them it is over.
        self.watchers.clear();
        self.status.monitor_pid = None;
        // Recorded only once they are gone: a status without cgroups says nothing
        // of this run can be left (see `Runtime::orphan`), so one whose processes
        // outlived their SIGKILL (stuck in the kernel) keeps naming where they are.
        if cleaned.is_ok() {
            self.status.cgroups = None;
        }
        self.save();
        for client in std::mem::take(&mut self.waiting) {
            let _ = sync::send(&client, &self.status);
        }
    }

    fn serve(&mut self, stream: UnixStream, payload: &Payload) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = match sync::receive::<Request>(&stream) {
            Ok(Some(request)) => request,
            _ => return,
        };
        match request {
            Request::State => {
                let _ = sync::send(&stream, &self.status);
            }
            Request::Wait => self.waiting.push(stream),
            Request::Watch => {
                // Never blocking the monitor on a watcher that does not read.
                if stream.set_nonblocking(true).is_ok() && sync::send(&stream, &self.status).is_ok()
                {
                    // A daemon restarted many times leaves dead watchers: the
                    // oldest go first.
                    if self.watchers.len() >= MAX_WATCHERS {
                        self.watchers.remove(0);
                    }
                    self.watchers.push(stream);
                }
            }
            Request::Stop { timeout_ms } => {
                let timeout = timeout_ms.unwrap_or(self.config.container.spec.stop_timeout_ms);
                self.begin_stop(payload, false, Duration::from_millis(timeout));
                self.waiting.push(stream);
            }
            Request::Reboot => {
                let timeout = self.config.container.spec.stop_timeout_ms;
                self.begin_stop(payload, true, Duration::from_millis(timeout));
                let _ = sync::send(&stream, &self.status);
            }
        }
    }

    fn begin_stop(&mut self, payload: &Payload, reboot: bool, timeout: Duration) {
        if let Some(pending) = &mut self.stopping {
            // A stop asked for while a reboot is under way turns it into a stop:
            // the command goes down either way, and must then stay down, with the
            // stop's caller answered, rather than start again and leave that
            // caller waiting for an exit that never comes.
            if pending.reboot && !reboot {
                pending.reboot = false;
                let kill_at = Instant::now() + timeout;
                if !pending.killed && kill_at < pending.kill_at {
                    pending.kill_at = kill_at;
                    if timeout.is_zero() {
                        let _ = pidfd_signal(&payload.pidfd, Signal::SIGKILL);
                        pending.killed = true;
                    }
                }
            }
            return;
        }
        self.status.phase = Phase::Stopping;
        if let Some(checker) = &mut self.checker {
            checker.pause();
        }
        self.save();
        let signal = self
            .config
            .container
            .spec
            .stop_signal
            .parse::<Signal>()
            .unwrap_or(Signal::SIGTERM);
        let _ = pidfd_signal(&payload.pidfd, signal);
        let killed = timeout.is_zero();
        if killed {
            let _ = pidfd_signal(&payload.pidfd, Signal::SIGKILL);
        }
        self.stopping = Some(Stopping {
            reboot,
            kill_at: Instant::now() + timeout,
            killed,
        });
    }

    fn forward_console(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        // The read end is non-blocking: drain what is there.
        for _ in 0..64 {
            match nix::unistd::read(&self.console_in, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.console.write(&buf[..n]),
            }
        }
    }
}

pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo, no flags.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as nix::libc::c_int,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Never two inits of one name: processes left in the payload cgroup (by a
/// monitor that was killed) must be killed first, which `berth start` does.
fn refuse_a_second_init(cgroups: &Cgroups, name: &str) -> Result<(), String> {
    let left = cgroups.payload_pids().map_err(|e| e.to_string())?;
    if left.is_empty() {
        return Ok(());
    }
    Err(format!(
        "cannot start {name}: processes {left:?} of an earlier run still live in its payload cgroup; `berth stop {name}` kills them"
    ))
}

/// Without a devices controller (cgroup v2: berth loads no device BPF program)
/// nothing would stop a bound device node from being used: refuse them.
fn refuse_device_mounts(
    config: &SavedConfig,
    sources: &[crate::sources::CheckedSource],
) -> Result<(), String> {
    for (mount, source) in config.container.spec.mounts.iter().zip(sources) {
        if source.is_device {
            return Err(format!(
                "mount source {} is a device node, and this host has no devices cgroup controller to confine its use",
                mount.source.display()
            ));
        }
    }
    Ok(())
}

fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    // A socket left by a monitor that died: nobody answers on it.
    if crate::socket::connect(path).is_ok() {
        return Err(format!("a monitor already serves {}", path.display()));
    }
    let _ = std::fs::remove_file(path);
    let listener = crate::socket::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}

/// What the child will do, from the saved config (image defaults filled in).
/// `seccomp_cache`: where compiled filters are kept between starts (the
/// container's directory), if anywhere.
pub(crate) fn plan(config: &SavedConfig, seccomp_cache: Option<&Path>) -> Result<Plan, String> {
    let spec = &config.container.spec;
    let image = config.image.clone().unwrap_or_default();
    let command = if spec.command.is_empty() {
        image.command
    } else {
        spec.command.clone()
    };
    let working_dir = match (&image.working_dir, spec.working_dir.as_str()) {
        (Some(dir), "/") => dir.clone(),
        _ => spec.working_dir.clone(),
    };
    // Image env, then the manifest's, then container=berth, then defaults.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set =
        |key: &str, value: &str, replace: bool| match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) if replace => entry.1 = value.to_owned(),
            Some(_) => {}
            None => env.push((key.to_owned(), value.to_owned())),
        };
    for pair in &image.env {
        if let Some((k, v)) = pair.split_once('=') {
            set(k, v, true);
        }
    }
    for (k, v) in &spec.env {
        set(k, v, true);
    }
    set("container", "berth", true);
    set("PATH", DEFAULT_PATH, false);
    if spec.user.is_none() && image.user.as_deref().is_none_or(str::is_empty) {
        set("HOME", "/root", false);
    }
    set("TERM", "xterm", false);
    let security = &spec.security;
    let capabilities = crate::security::capability_set(&security.cap_add, &security.cap_drop);
    let seccomp = crate::trace::step("compile the seccomp filter (or read it)", || {
        crate::seccomp::for_container(security, seccomp_cache)
    })
    .map_err(|e| e.to_string())?;
    let overlay = match (&config.layers, config.rootfs.parent()) {
        (Some(layers), Some(dir)) => layers.overlay(dir),
        _ => None,
    };
    Ok(Plan {
        rootfs: config.rootfs.clone(),
        overlay,
        overlay_mount: None,
        host_binds: config.host_binds.clone(),
        shared_binds: config.shared_binds.clone(),
        mounts: spec.mounts.clone(),
        // Filled in by the monitor's checks; without them init binds nothing.
        mount_ids: Vec::new(),
        // Filled in by the monitor for a bridged container.
        etc_files: Vec::new(),
        hostname: spec.hostname.clone(),
        command,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir,
        network: spec.network,
        read_only_rootfs: security.read_only_rootfs,
        capabilities,
        seccomp,
        id_maps: config.id_maps.clone(),
        init: spec.init,
        // The manifest's user, else the image's (`User` of its config).
        user: spec
            .user
            .as_deref()
            .or(image.user.as_deref().filter(|u| !u.is_empty()))
            .map(str::parse::<berth_manifests::User>)
            .transpose()
            .map_err(|e| format!("user: {e}"))?,
        supplemental_groups: spec.supplemental_groups.clone(),
        // Filled in by the monitor, which binds the socket.
        notify_dir: None,
    })
}

/// console.log, capped at CONSOLE_MAX and rotated once.
struct Console {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
}

impl Console {
    fn open(path: PathBuf) -> Result<Console, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Console {
            path,
            file: Some(file),
            size,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.size + bytes.len() as u64 > CONSOLE_MAX {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
            if let Ok(fresh) = Console::open(self.path.clone()) {
                *self = fresh;
            }
        }
        if let Some(file) = &mut self.file
            && file.write_all(bytes).is_ok()
        {
            self.size += bytes.len() as u64;
        }
    }
}

/// Before a monitor sleeps after a start or a reboot: what that touched and no
/// longer needs goes back. A monitor lives as long as its container.
fn settle() {
    release_start_up_code();
    // What was allocated and freed (the smaps text just read, the start's JSON)
    // goes back to the kernel.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of this process's heap.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Unmap from this process the pages of code and read-only data the start
/// touched: what a monitor runs at rest is a poll loop. Only private file
/// mappings with no page of their own (none written, so none differs from the
/// file) are dropped: their pages stay in the page cache, shared with the daemon
/// and the other monitors, and come back on a fault when a stop or a reboot
/// needs them. The monitor's RSS becomes its working set.
fn release_start_up_code() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut lines = smaps.lines().peekable();
    while let Some(header) = lines.next() {
        let mut fields = header.split_ascii_whitespace();
        let (Some(range), Some(perms), _, _, Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let mut anonymous = None;
        // The mapping's fields, up to the next header (which has a '-' range).
        while let Some(line) = lines.next_if(|l| !is_smaps_header(l)) {
            if let Some(kib) = line.strip_prefix("Anonymous:") {
                anonymous = kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok();
            }
        }
        let droppable = perms.len() == 4
            && !perms.contains('w')
            && perms.ends_with('p')
            && inode != "0"
            && anonymous == Some(0);
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if droppable && end > start {
            // SAFETY: the range is a whole mapping of this process, private,
            // read-only and file-backed with no anonymous page: MADV_DONTNEED
            // only drops page-table entries the next access maps again from the
            // same file, so no content changes.
            unsafe {
                nix::libc::madvise(
                    start as *mut nix::libc::c_void,
                    end - start,
                    nix::libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// A smaps mapping header starts with `start-end perms`; a field line with `Name:`.
fn is_smaps_header(line: &str) -> bool {
    line.split_ascii_whitespace()
        .next()
        .is_some_and(|first| first.contains('-') && !first.ends_with(':'))
}
