//! The daemon under a burst: 100 manifests renamed at once into the watched
//! directory of a running `berth daemon`, timed until `berth get` shows all 100
//! `Running`; then the daemon's resident memory (VmRSS, and VmHWM, its peak) and
//! that of the containers' monitors, beside the monitor's target (under 2 MiB).
//!
//! `cargo bench -p berth-operator --bench daemon` (as root). The manifests are
//! written to a staging directory first and renamed into the watched one in a tight
//! loop; the clock starts at the first rename, and `berth get -o json` is polled
//! every 100 ms, so both times are at that resolution. Nothing is asserted, but the
//! run fails (exit 1) if the containers are not all `Running` within 5 minutes.
//! `BERTH_BENCH_CONCURRENCY=N` passes `--concurrency N` to the daemon (default:
//! the daemon's own, the number of CPUs).
//!
//! Everything lives in a fresh temp dir and under the cgroup parent
//! `berth-bench-daemon-<pid>`. A guard removes the manifests and waits for the
//! daemon to stop and destroy the containers, SIGTERMs the daemon, stops and
//! destroys whatever container is left, and rmdirs those cgroups, also on failure,
//! panic or Ctrl-C. Run without `--bench` (as `cargo test --benches` does), it
//! drops 10 manifests instead of 100, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;

use common::{INTERRUPTED, Run, check_interrupted, run};

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CONTAINERS: usize = 100;
const SMOKE_CONTAINERS: usize = 10;

/// The containers must all be Running within this, or the run fails.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(300);
/// After the manifests are removed, the daemon gets this long to destroy them all.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one `berth get/status` may take before it is killed (by pid).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM lets running reconciles finish (the daemon allows them 30 s), then SIGKILL.
const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// What one container monitor should stay under, resident.
const MONITOR_TARGET_KIB: u64 = 2048;

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

/// The `kB` fields of `/proc/PID/status` (VmRSS, VmHWM, RssAnon...) and of
/// `/proc/PID/smaps_rollup` (Pss: the process's share of pages it shares), in KiB.
fn proc_memory(pid: u32) -> Result<BTreeMap<String, u64>, String> {
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

fn field(memory: &BTreeMap<String, u64>, key: &str) -> u64 {
    memory.get(key).copied().unwrap_or(0)
}

/// Seconds since boot (CLOCK_BOOTTIME, the clock of `/proc/PID/stat` start times).
fn boottime() -> f64 {
    // SAFETY: timespec is plain data; all zeroes is a valid value.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes only into `now`, which outlives the call.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\n\
         kind: Container\n\
         metadata:\n  name: {name}\n\
         spec:\n  \
           command: [\"/bin/sleep\", \"infinity\"]\n  \
           stopTimeout: 0s\n  \
           resources: {{pids: 16}}\n"
    )
}

/// How the drop went.
#[derive(Debug)]
struct Burst {
    renames: Duration,
    first_running: Duration,
    all_running: Duration,
    /// CLOCK_BOOTTIME at the first rename.
    t0_boot: f64,
}

/// One monitor's memory and its container's init start, from `berth status`.
#[derive(Debug)]
struct Monitor {
    name: String,
    pid: u32,
    memory: BTreeMap<String, u64>,
    /// Seconds since boot, in clock ticks' resolution.
    init_started: Option<f64>,
}

/// Everything the benchmark made, undone on drop (also on panic and after Ctrl-C).
#[derive(Debug)]
struct Bench {
    berth: PathBuf,
    cgroup_parent: String,
    state_dir: PathBuf,
    /// The watched directory.
    manifests: PathBuf,
    /// Where the manifests are written before their rename.
    staging: PathBuf,
    /// Where commands' output goes.
    out: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::Builder::new()
            .prefix("berth-bench-daemon-")
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
            berth: PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            cgroup_parent: format!("berth-bench-daemon-{}", std::process::id()),
            state_dir,
            manifests,
            staging,
            out,
            log: tmp.path().join("daemon.log"),
            daemon: None,
            tmp: Some(tmp),
        }
    }

    fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().unwrap().path()
    }

    /// `berth --state-dir <ours> --cgroup-parent berth-bench-daemon-<pid> ARGS...`
    fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.berth);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args);
        command
    }

    fn run_berth(&self, args: &[&str], timeout: Duration) -> Result<Run, String> {
        run(&mut self.berth(args), timeout, &self.out)
    }

    fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Is the daemon still running? (A daemon that exited is reaped here.)
    fn daemon_alive(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Start the daemon (its own process group, logs to `daemon.log`) and wait
    /// for its socket.
    fn start_daemon(&mut self, concurrency: Option<usize>) -> Result<(), String> {
        let log = File::create(&self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log_too = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut command = self.berth(&["daemon", "--manifests"]);
        command.arg(&self.manifests).args(["--resync", "5m"]);
        if let Some(n) = concurrency {
            command.arg("--concurrency").arg(n.to_string());
        }
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

    /// `berth get -o json`: name → phase (and message, if any).
    fn phases(&self) -> Result<BTreeMap<String, (String, Option<String>)>, String> {
        let get = self
            .run_berth(&["get", "-o", "json"], COMMAND_TIMEOUT)?
            .ok("berth get")?;
        let json: serde_json::Value = serde_json::from_str(&get.stdout)
            .map_err(|e| format!("berth get -o json printed no JSON ({e}): {}", get.stdout))?;
        let items = json
            .as_array()
            .ok_or_else(|| format!("berth get -o json printed no array: {}", get.stdout))?;
        Ok(items
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
    fn stage(&self, names: &[String]) -> Result<(), String> {
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
    fn drop_and_wait(&mut self, names: &[String]) -> Result<Burst, String> {
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
    fn monitors(&self, names: &[String]) -> Result<Vec<Monitor>, String> {
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
    fn remove_all(&mut self, timeout: Duration) -> Result<Duration, String> {
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
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM (by pid), then SIGKILL if it does not exit in time.
    fn stop_daemon(&mut self) {
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
    fn destroy_leftovers(&self) -> bool {
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
    fn remove_cgroups(&self) -> Vec<String> {
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
fn rmdir(dir: &Path, problems: &mut Vec<String>) {
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
            match self.remove_all(REMOVE_TIMEOUT) {
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
        // Never delete through a mount point left inside the temp dir.
        let tmp = self.tmp_path().to_owned();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .any(|point| Path::new(point).starts_with(&tmp));
        if (!clean || mounted)
            && let Some(tmp) = self.tmp.take()
        {
            let kept = tmp.keep();
            eprintln!(
                "bench cleanup: left {} in place (a destroy failed or a mount is inside)",
                kept.display()
            );
        }
    }
}

/// `Running 57, Creating 3, ...` over `names`.
fn histogram(names: &[String], phases: &BTreeMap<String, (String, Option<String>)>) -> String {
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

fn seconds(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn median(sorted: &[u64]) -> u64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn benchmark(bench: &mut Bench, count: usize) -> Result<(), String> {
    let concurrency = std::env::var("BERTH_BENCH_CONCURRENCY")
        .ok()
        .map(|n| {
            n.parse::<usize>()
                .map_err(|e| format!("BERTH_BENCH_CONCURRENCY={n}: {e}"))
        })
        .transpose()?;
    println!(
        "berth daemon benchmark: {count} manifests dropped at once (host template, sleep infinity, pids 16); \
         concurrency {}; state {}, cgroup parent {}",
        concurrency.map_or_else(|| "default (CPUs)".to_owned(), |n| n.to_string()),
        bench.state_dir.display(),
        bench.cgroup_parent
    );
    bench.start_daemon(concurrency)?;
    let daemon_pid = bench.daemon_pid().unwrap();
    let listed = bench.phases()?;
    if !listed.is_empty() {
        return Err(format!(
            "a fresh daemon lists containers: {:?}",
            listed.keys()
        ));
    }
    let idle = proc_memory(daemon_pid)?;

    let names: Vec<String> = (0..count).map(|i| format!("bench-c{i:03}")).collect();
    bench.stage(&names)?;
    let burst = bench.drop_and_wait(&names)?;
    let daemon = proc_memory(daemon_pid)?;
    let monitors = bench.monitors(&names)?;

    let started: Vec<f64> = monitors.iter().filter_map(|m| m.init_started).collect();
    let first_init = started.iter().copied().fold(f64::INFINITY, f64::min) - burst.t0_boot;
    let last_init = started.iter().copied().fold(f64::NEG_INFINITY, f64::max) - burst.t0_boot;
    let mut rss: Vec<u64> = monitors.iter().map(|m| field(&m.memory, "VmRSS")).collect();
    rss.sort_unstable();
    let one = &monitors[0];
    let one_rss = field(&one.memory, "VmRSS");

    let row = |label: &str, text: String| println!("{label:<18} {text}");
    println!();
    row(
        "renames",
        format!(
            "{count} files in {:.2} ms",
            burst.renames.as_secs_f64() * 1000.0
        ),
    );
    row(
        "first Running",
        format!(
            "{} s after the first rename (polled every {} ms)",
            seconds(burst.first_running),
            POLL.as_millis()
        ),
    );
    row(
        &format!("all {count} Running"),
        format!(
            "{} s after the first rename (polled every {} ms)",
            seconds(burst.all_running),
            POLL.as_millis()
        ),
    );
    if started.len() == monitors.len() {
        row(
            "inits started",
            format!("first +{first_init:.2} s, last +{last_init:.2} s (/proc start times)"),
        );
    }
    row(
        "daemon",
        format!(
            "pid {daemon_pid}: VmRSS {} KiB, VmHWM {} KiB (idle, before the drop: VmRSS {} KiB)",
            field(&daemon, "VmRSS"),
            field(&daemon, "VmHWM"),
            field(&idle, "VmRSS"),
        ),
    );
    row(
        "monitor",
        format!(
            "{} pid {}: VmRSS {one_rss} KiB (RssAnon {}, RssFile {}, RssShmem {}; Pss {}); target < {MONITOR_TARGET_KIB} KiB: {}",
            one.name,
            one.pid,
            field(&one.memory, "RssAnon"),
            field(&one.memory, "RssFile"),
            field(&one.memory, "RssShmem"),
            field(&one.memory, "Pss"),
            if one_rss < MONITOR_TARGET_KIB {
                "within"
            } else {
                "OVER"
            }
        ),
    );
    row(
        &format!("all {count} monitors"),
        format!(
            "VmRSS min {} / median {} / max {} KiB, {} of {count} under {MONITOR_TARGET_KIB} KiB; Pss total {} KiB",
            rss[0],
            median(&rss),
            rss[rss.len() - 1],
            rss.iter().filter(|&&kib| kib < MONITOR_TARGET_KIB).count(),
            monitors
                .iter()
                .map(|m| field(&m.memory, "Pss"))
                .sum::<u64>()
        ),
    );

    let removed = bench.remove_all(REMOVE_TIMEOUT);
    row(
        "manifests removed",
        match &removed {
            Ok(took) => format!(
                "all {count} stopped and destroyed by the daemon in {} s",
                seconds(*took)
            ),
            Err(e) => format!("failed: {e}"),
        },
    );

    println!();
    println!(
        "bench: daemon_first_running_s={}",
        seconds(burst.first_running)
    );
    println!(
        "bench: daemon_all_running_s={} n={count}",
        seconds(burst.all_running)
    );
    println!("bench: daemon_vmrss_kib={}", field(&daemon, "VmRSS"));
    println!("bench: daemon_vmhwm_kib={}", field(&daemon, "VmHWM"));
    println!("bench: monitor_vmrss_kib={one_rss} target_kib={MONITOR_TARGET_KIB}");
    removed.map(drop)
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench daemon: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a smaller smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let count = if full { CONTAINERS } else { SMOKE_CONTAINERS };

    common::catch_interrupts();

    let mut bench = Bench::new();
    let result = benchmark(&mut bench, count);
    drop(bench);
    if let Err(e) = result {
        eprintln!("bench daemon: FAILED: {e}");
        std::process::exit(if INTERRUPTED.load(Ordering::SeqCst) {
            130
        } else {
            1
        });
    }
}
