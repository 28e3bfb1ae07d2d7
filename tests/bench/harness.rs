//! What the daemon benchmarks share: a `berth daemon` on a fresh temp state dir and
//! cgroup parent, with its manifests staged and renamed into the watched directory,
//! `berth get` polled, and a guard that cleans everything up. Included by each
//! daemon bench with `#[path]`, beside `common.rs`.
//!
//! `BERTH_BENCH_BIN=/path/to/berth` measures that binary instead of the one cargo
//! built (for example an older build, to compare with the same bench code).

#![allow(dead_code)] // each bench uses its own part

use crate::common::{Run, check_interrupted, run};

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The containers must all be Running within this, or the run fails.
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(300);
/// After the manifests are removed, the daemon gets this long to destroy them all.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);
pub const POLL: Duration = Duration::from_millis(100);
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one `berth get/status` may take before it is killed (by pid).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM lets running reconciles finish (the daemon allows them 30 s), then SIGKILL.
pub const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// The berth binary to measure: `BERTH_BENCH_BIN`, or the one cargo built.
pub fn bench_binary() -> PathBuf {
    std::env::var_os("BERTH_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")), PathBuf::from)
}

pub fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

/// The `kB` fields of `/proc/PID/status` (VmRSS, VmHWM, RssAnon...) and of
/// `/proc/PID/smaps_rollup` (Pss: the process's share of pages it shares), in KiB.
pub fn proc_memory(pid: u32) -> Result<BTreeMap<String, u64>, String> {
    let mut fields = BTreeMap::new();
    for file in ["status", "smaps_rollup"] {
        let path = format!("/proc/{pid}/{file}");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        fields.extend(text.lines().filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let kib = value.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((key.to_owned(), kib))
        }));
    }
    Ok(fields)
}

pub fn field(memory: &BTreeMap<String, u64>, key: &str) -> u64 {
    memory.get(key).copied().unwrap_or(0)
}

/// Seconds since boot (CLOCK_BOOTTIME, the clock of `/proc/PID/stat` start times).
pub fn boottime() -> f64 {
    // SAFETY: timespec is plain data; all zeroes is a valid value.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes only into `now`, which outlives the call.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// How the drop went.
#[derive(Debug)]
pub struct Burst {
    pub renames: Duration,
    pub first_running: Duration,
    pub all_running: Duration,
    /// CLOCK_BOOTTIME at the first rename.
    pub t0_boot: f64,
}

/// One monitor's memory and its container's init start, from `berth status`.
#[derive(Debug)]
pub struct Monitor {
    pub name: String,
    pub pid: u32,
    pub memory: BTreeMap<String, u64>,
    /// Seconds since boot, in clock ticks' resolution.
    pub init_started: Option<f64>,
}

/// Everything the benchmark made, undone on drop (also on panic and after Ctrl-C).
#[derive(Debug)]
pub struct Bench {
    pub berth: PathBuf,
    pub cgroup_parent: String,
    pub state_dir: PathBuf,
    /// The watched directory.
    pub manifests: PathBuf,
    /// Where the manifests are written before their rename.
    pub staging: PathBuf,
    /// Where commands' output goes.
    pub out: PathBuf,
    pub log: PathBuf,
    pub daemon: Option<Child>,
    pub tmp: Option<tempfile::TempDir>,
}

impl Bench {
    /// A fresh temp dir `<prefix>-XXXX` and cgroup parent `<prefix>-<pid>`.
    pub fn new(prefix: &str) -> Bench {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap();
        let dir = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        let state_dir = dir("state");
        // The daemon also watches the manifest directory's parent: give it one of
        // its own, so that the log and the commands' output do not wake it.
        let manifests = dir("watched").join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        // The daemon refuses a manifest directory others could write to.
        std::fs::set_permissions(&manifests, std::fs::Permissions::from_mode(0o755)).unwrap();
        let staging = dir("staging");
        let out = dir("out");
        Bench {
            berth: bench_binary(),
            cgroup_parent: format!("{prefix}-{}", std::process::id()),
            state_dir,
            manifests,
            staging,
            out,
            log: tmp.path().join("daemon.log"),
            daemon: None,
            tmp: Some(tmp),
        }
    }

    pub fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().unwrap().path()
    }

    /// `berth --state-dir <ours> --cgroup-parent berth-bench-daemon-<pid> ARGS...`
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.berth);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args);
        command
    }

    pub fn run_berth(&self, args: &[&str], timeout: Duration) -> Result<Run, String> {
        run(&mut self.berth(args), timeout, &self.out)
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Is the daemon still running? (A daemon that exited is reaped here.)
    pub fn daemon_alive(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Start the daemon (its own process group, logs to `daemon.log`) and wait
    /// for its socket.
    pub fn start_daemon(&mut self, args: &[String]) -> Result<(), String> {
        let log = File::create(&self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log_too = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut command = self.berth(&["daemon", "--manifests"]);
        command
            .arg(&self.manifests)
            .args(["--resync", "5m"])
            // Never the host's /etc/berth/labels.
            .arg("--labels-file")
            .arg(self.state_dir.join("labels"))
            .args(args);
        command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .process_group(0);
        self.daemon = Some(
            command
                .spawn()
                .map_err(|e| format!("cannot run berth daemon: {e}"))?,
        );

        let socket = self.state_dir.join("berth.sock");
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        loop {
            check_interrupted()?;
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if !self.daemon_alive() {
                return Err(format!(
                    "berth daemon exited before listening; its log:\n{}",
                    self.log_tail(15)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "berth daemon: no socket {} after {}s; its log:\n{}",
                    socket.display(),
                    SOCKET_TIMEOUT.as_secs(),
                    self.log_tail(15)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `berth get -o json`: a ContainerList, one JSON object per container in `items`.
    pub fn items(&self) -> Result<Vec<serde_json::Value>, String> {
        let get = self
            .run_berth(&["get", "-o", "json"], COMMAND_TIMEOUT)?
            .ok("berth get")?;
        let json: serde_json::Value = serde_json::from_str(&get.stdout)
            .map_err(|e| format!("berth get -o json printed no JSON ({e}): {}", get.stdout))?;
        match json {
            serde_json::Value::Object(mut list) => match list.remove("items") {
                Some(serde_json::Value::Array(items)) => Ok(items),
                _ => Err(format!(
                    "berth get -o json printed no items: {}",
                    get.stdout
                )),
            },
            _ => Err(format!(
                "berth get -o json printed no ContainerList: {}",
                get.stdout
            )),
        }
    }

    /// `berth get -o json`: name → phase (and message, if any).
    pub fn phases(&self) -> Result<BTreeMap<String, (String, Option<String>)>, String> {
        Ok(self
            .items()?
            .iter()
            .map(|item| {
                (
                    item["name"].as_str().unwrap_or("?").to_owned(),
                    (
                        item["phase"].as_str().unwrap_or("?").to_owned(),
                        item["message"].as_str().map(str::to_owned),
                    ),
                )
            })
            .collect())
    }

    /// Write the manifests to the staging directory (root's, mode 0644).
    pub fn stage(&self, names: &[String], manifest: impl Fn(&str) -> String) -> Result<(), String> {
        for name in names {
            let path = self.staging.join(format!("{name}.yaml"));
            std::fs::write(&path, manifest(name))
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                })
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Rename the staged manifests into the watched directory, then poll until
    /// all of them are Running.
    pub fn drop_and_wait(&mut self, names: &[String]) -> Result<Burst, String> {
        let files: Vec<(PathBuf, PathBuf)> = names
            .iter()
            .map(|name| {
                let file = format!("{name}.yaml");
                (self.staging.join(&file), self.manifests.join(&file))
            })
            .collect();
        let t0_boot = boottime();
        let t0 = Instant::now();
        for (from, to) in &files {
            std::fs::rename(from, to).map_err(|e| format!("rename to {}: {e}", to.display()))?;
        }
        let renames = t0.elapsed();

        let deadline = t0 + RUNNING_TIMEOUT;
        let mut first_running = None;
        let mut next_progress = t0 + PROGRESS_EVERY;
        let mut last = BTreeMap::new();
        let mut last_error = None;
        loop {
            check_interrupted()?;
            let poll = Instant::now();
            match self.phases() {
                Ok(phases) => {
                    let now = Instant::now();
                    let running = names
                        .iter()
                        .filter(|name| phases.get(*name).is_some_and(|(p, _)| p == "Running"))
                        .count();
                    if running > 0 && first_running.is_none() {
                        first_running = Some(now - t0);
                    }
                    if running == names.len() {
                        return Ok(Burst {
                            renames,
                            first_running: first_running.unwrap_or(now - t0),
                            all_running: now - t0,
                            t0_boot,
                        });
                    }
                    if now >= next_progress {
                        println!(
                            "  {:>5.1} s: {running}/{} Running ({})",
                            (now - t0).as_secs_f64(),
                            names.len(),
                            histogram(names, &phases)
                        );
                        next_progress += PROGRESS_EVERY;
                    }
                    last = phases;
                }
                Err(e) => last_error = Some(e),
            }
            if !self.daemon_alive() {
                return Err(format!(
                    "the daemon exited while the containers were starting; its log:\n{}",
                    self.log_tail(15)
                ));
            }
            if Instant::now() >= deadline {
                let stuck = names
                    .iter()
                    .filter_map(|name| match last.get(name) {
                        Some((phase, _)) if phase == "Running" => None,
                        Some((phase, message)) => Some(format!(
                            "{name}: {phase}{}",
                            message
                                .as_deref()
                                .map_or_else(String::new, |m| format!(": {m}"))
                        )),
                        None => Some(format!("{name}: not listed")),
                    })
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n  ");
                return Err(format!(
                    "not all {} containers Running after {}s ({}); for example:\n  {stuck}{}\ndaemon log (tail):\n{}",
                    names.len(),
                    RUNNING_TIMEOUT.as_secs(),
                    histogram(names, &last),
                    last_error.map_or_else(String::new, |e| format!("\nlast berth get error: {e}")),
                    self.log_tail(15)
                ));
            }
            std::thread::sleep(POLL.saturating_sub(poll.elapsed()));
        }
    }

    /// The monitor of each container, from `berth status NAME` ("monitorPid").
    pub fn monitors(&self, names: &[String]) -> Result<Vec<Monitor>, String> {
        let ticks = clock_ticks_per_second();
        let mut monitors = Vec::new();
        for name in names {
            check_interrupted()?;
            let status = self
                .run_berth(&["status", name], COMMAND_TIMEOUT)?
                .ok("berth status")?;
            let json: serde_json::Value = serde_json::from_str(&status.stdout)
                .map_err(|e| format!("berth status {name} printed no JSON: {e}"))?;
            let pid = json["monitorPid"]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .ok_or_else(|| format!("berth status {name}: no monitorPid: {}", status.stdout))?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !cmdline.starts_with(b"[berth monitor] ") {
                return Err(format!(
                    "pid {pid} (monitorPid of {name}) is not a berth monitor: {:?}",
                    String::from_utf8_lossy(&cmdline)
                ));
            }
            monitors.push(Monitor {
                name: name.clone(),
                pid,
                memory: proc_memory(pid)?,
                init_started: json["initStartTime"].as_u64().map(|t| t as f64 / ticks),
            });
        }
        Ok(monitors)
    }

    /// Empty the watched directory and wait until the daemon has stopped and
    /// destroyed every container (`berth get` lists nothing).
    pub fn remove_all(&mut self, timeout: Duration, poll: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        if let Ok(entries) = std::fs::read_dir(&self.manifests) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let deadline = started + timeout;
        loop {
            if !self.daemon_alive() {
                return Err("the daemon is not running".to_owned());
            }
            let last = match self.phases() {
                Ok(phases) if phases.is_empty() => return Ok(started.elapsed()),
                Ok(phases) => format!("{} still listed", phases.len()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {}s: {last}; daemon log (tail):\n{}",
                    timeout.as_secs(),
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(poll);
        }
    }

    /// SIGTERM (by pid), then SIGKILL if it does not exit in time.
    pub fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = kill(pid_of(&child), Signal::SIGTERM);
        let deadline = Instant::now() + DAEMON_EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench cleanup: the daemon did not exit {}s after SIGTERM; SIGKILL",
            DAEMON_EXIT_TIMEOUT.as_secs()
        );
        let _ = kill(pid_of(&child), Signal::SIGKILL);
        let _ = child.wait();
    }

    /// Stop and destroy, without the daemon, any container still in the state dir.
    /// Returns false if a destroy failed.
    pub fn destroy_leftovers(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("containers")) else {
            return true;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        let mut clean = true;
        for name in &names {
            eprintln!("bench cleanup: {name} was left; stopping and destroying it");
            match self.run_berth(&["stop", name, "--timeout", "0s"], STOP_TIMEOUT) {
                Ok(r) if r.status.success() => {}
                Ok(r) => eprintln!("bench cleanup: berth stop {name}: {}", r.first_error_line()),
                Err(e) => eprintln!("bench cleanup: {e}"),
            }
            match self.run_berth(&["destroy", name], STOP_TIMEOUT) {
                Ok(r) if r.status.success() => {}
                Ok(r) => {
                    clean = false;
                    eprintln!(
                        "bench cleanup: berth destroy {name}: {}",
                        r.first_error_line()
                    );
                }
                Err(e) => {
                    clean = false;
                    eprintln!("bench cleanup: {e}");
                }
            }
        }
        clean
    }

    /// rmdir `/sys/fs/cgroup/*/berth-bench-daemon-<pid>` (with any empty
    /// `<name>/payload`, `<name>/monitor` and `<name>` left in it) and
    /// `/sys/fs/cgroup/berth-bench-daemon-<pid>` (pure v2): only rmdir, only those
    /// names. Returns what could not be removed.
    pub fn remove_cgroups(&self) -> Vec<String> {
        let root = Path::new("/sys/fs/cgroup");
        let mut parents = vec![root.join(&self.cgroup_parent)];
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                parents.push(entry.path().join(&self.cgroup_parent));
            }
        }
        let mut problems = Vec::new();
        for parent in parents {
            if !parent.is_dir() {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for entry in entries.flatten() {
                    if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let container = entry.path();
                    for dir in [
                        container.join("payload"),
                        container.join("monitor"),
                        container,
                    ] {
                        rmdir(&dir, &mut problems);
                    }
                }
            }
            rmdir(&parent, &mut problems);
        }
        problems
    }
}

/// rmdir one cgroup, retrying while it is busy (just-killed processes can keep it
/// so briefly); a missing one is fine.
pub fn rmdir(dir: &Path, problems: &mut Vec<String>) {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                return;
            }
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let has_manifests = std::fs::read_dir(&self.manifests)
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false);
            match self.remove_all(REMOVE_TIMEOUT, POLL) {
                Ok(_) => {}
                Err(e) if has_manifests => {
                    eprintln!("bench cleanup: removing the manifests: {e}");
                }
                Err(_) => {}
            }
        }
        self.stop_daemon();
        let clean = self.destroy_leftovers();
        for problem in self.remove_cgroups() {
            eprintln!("bench cleanup: cannot remove cgroup {problem}");
        }
        crate::common::keep_if_unsafe_to_delete(&mut self.tmp, clean);
    }
}

/// `Running 57, Creating 3, ...` over `names`.
pub fn histogram(names: &[String], phases: &BTreeMap<String, (String, Option<String>)>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        let phase = phases.get(name).map_or("not listed", |(p, _)| p.as_str());
        *counts.entry(phase).or_default() += 1;
    }
    counts
        .iter()
        .map(|(phase, n)| format!("{phase} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

pub fn median(sorted: &[u64]) -> u64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}
