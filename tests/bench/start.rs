//! Start latency: `berth start` (host and busybox templates, busybox on a bridge) beside
//! the floor of bare namespaces (`unshare`). The side-by-side run with LXC, crun and
//! runc is the `peers` bench.
//!
//! `cargo bench -p berth-operator --bench start` (as root). Each row is timed from
//! spawn to exit of one command, N times after warm-ups; the untimed `berth stop`
//! runs between iterations. Everything lives in a fresh temp
//! state dir and under the cgroup parent `berth-bench-<pid>`; a guard stops and
//! destroys the containers and rmdirs those cgroup parents, also on failure or
//! Ctrl-C. Run without `--bench` (as `cargo test --benches` does), every row is
//! measured once, without warm-ups, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;

use common::{INTERRUPTED, Run, check_interrupted, run};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::libc;

const ITERATIONS: usize = 20;
const WARMUPS: usize = 2;

/// The longest any one command may take before it is killed (by pid).
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);

const HOST: &str = "bench-host";
const BUSYBOX: &str = "bench-busybox";
const BRIDGED: &str = "bench-bridged";
/// The bridged row's subnet: one that no host interface should use.
const BENCH_SUBNET: &str = "10.213.251.0/24";

/// What one row came to.
#[derive(Debug)]
enum Outcome {
    Measured(Vec<Duration>),
    Skipped(String),
    Failed(String),
}

impl From<Result<Vec<Duration>, String>> for Outcome {
    fn from(result: Result<Vec<Duration>, String>) -> Outcome {
        match result {
            Ok(times) => Outcome::Measured(times),
            Err(message) => Outcome::Failed(message),
        }
    }
}

/// An executable `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Everything the benchmark made, undone on drop (also on panic and after Ctrl-C).
#[derive(Debug)]
struct Bench {
    berth: PathBuf,
    state_dir: PathBuf,
    cgroup_parent: String,
    /// The bridged row's bridge, deleted on drop.
    bridge: String,
    /// The host's ip_forward before the bench, put back on drop.
    ip_forward: String,
    /// Where commands' output goes.
    out: PathBuf,
    /// Containers berth may have made (pushed before their create).
    containers: Vec<String>,
    tmp: Option<tempfile::TempDir>,
    iterations: usize,
    warmups: usize,
}

impl Bench {
    fn new(iterations: usize, warmups: usize) -> Bench {
        let tmp = tempfile::Builder::new()
            .prefix("berth-bench-")
            .tempdir()
            .unwrap();
        let state_dir = tmp.path().join("state");
        let out = tmp.path().join("out");
        std::fs::create_dir(&state_dir).unwrap();
        std::fs::create_dir(&out).unwrap();
        Bench {
            berth: PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            state_dir,
            cgroup_parent: format!("berth-bench-{}", std::process::id()),
            bridge: format!("btbench{}", std::process::id() % 10_000_000),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .map_or_else(|_| "0".to_owned(), |v| v.trim().to_owned()),
            out,
            containers: Vec::new(),
            tmp: Some(tmp),
            iterations,
            warmups,
        }
    }

    fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().unwrap().path()
    }

    /// `berth --state-dir <ours> --cgroup-parent berth-bench-<pid> ARGS...`
    fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.berth);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--bridge")
            .arg(&self.bridge)
            .arg("--subnet")
            .arg(BENCH_SUBNET)
            .args(args);
        command
    }

    fn run_berth(&self, args: &[&str], timeout: Duration) -> Result<Run, String> {
        run(&mut self.berth(args), timeout, &self.out)
    }

    /// Time `f` `iterations` times after `warmups` untimed calls.
    fn measure(
        &self,
        mut f: impl FnMut(usize) -> Result<Duration, String>,
    ) -> Result<Vec<Duration>, String> {
        let mut times = Vec::with_capacity(self.iterations);
        for i in 0..self.warmups + self.iterations {
            check_interrupted()?;
            let elapsed = f(i)?;
            if i >= self.warmups {
                times.push(elapsed);
            }
        }
        Ok(times)
    }

    /// Create `name` from `spec` (indented YAML) and time `berth start` of it.
    fn berth_start(&mut self, name: &str, spec: &str) -> Result<Vec<Duration>, String> {
        check_interrupted()?;
        let manifest = self.tmp_path().join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec}"
            ),
        )
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
        self.containers.push(name.to_owned());
        let manifest = manifest
            .to_str()
            .ok_or("temp path is not UTF-8")?
            .to_owned();
        self.run_berth(&["create", "-f", &manifest], CREATE_TIMEOUT)?
            .ok("berth create")?;

        self.measure(|i| {
            let start = self.run_berth(&["start", name], START_TIMEOUT)?;
            let elapsed = start.elapsed;
            let start = start.ok("berth start");
            if let Ok(start) = &start
                && !start.stdout.contains(&format!("started {name}"))
            {
                let _ = self.stop(name);
                return Err(format!("berth start printed {:?}", start.stdout.trim()));
            }
            if i == 0 && start.is_ok() {
                let phase = self.phase(name);
                if phase.as_deref() != Ok("Running") {
                    let _ = self.stop(name);
                    return Err(format!("after berth start, phase {phase:?}, not Running"));
                }
            }
            self.stop(name)?;
            start.map(|_| elapsed)
        })
    }

    fn stop(&self, name: &str) -> Result<(), String> {
        self.run_berth(&["stop", name, "--timeout", "0s"], STOP_TIMEOUT)?
            .ok("berth stop")
            .map(drop)
    }

    fn phase(&self, name: &str) -> Result<String, String> {
        let status = self
            .run_berth(&["status", name], START_TIMEOUT)?
            .ok("berth status")?;
        let json: serde_json::Value = serde_json::from_str(&status.stdout)
            .map_err(|e| format!("berth status printed no JSON: {e}"))?;
        json["phase"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("berth status without a phase: {}", status.stdout.trim()))
    }

    fn unshare(&self) -> Outcome {
        let Some(unshare) = on_path("unshare") else {
            return Outcome::Skipped("unshare: not installed (apt-get install util-linux)".into());
        };
        self.measure(|_| {
            let mut command = Command::new(&unshare);
            command.args(["-p", "-f", "-m", "-u", "-i", "-n", "--mount-proc", "true"]);
            run(&mut command, START_TIMEOUT, &self.out)?
                .ok("unshare")
                .map(|r| r.elapsed)
        })
        .into()
    }

    /// rmdir `/sys/fs/cgroup/*/berth-bench-<pid>` and `/sys/fs/cgroup/berth-bench-<pid>`
    /// (pure v2): only rmdir, only those names. Returns what could not be removed.
    fn remove_cgroup_parents(&self) -> Vec<String> {
        let root = Path::new("/sys/fs/cgroup");
        let mut candidates = vec![root.join(&self.cgroup_parent)];
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                candidates.push(entry.path().join(&self.cgroup_parent));
            }
        }
        let mut problems = Vec::new();
        for dir in candidates {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // NotADirectory: a plain file such as cgroup.procs/berth-bench-<pid>.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => break,
                    // Processes that were just killed can keep a cgroup busy briefly.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        problems.push(format!("{}: {e}", dir.display()));
                        break;
                    }
                }
            }
        }
        problems
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let mut clean = true;
        for name in self.containers.clone().iter().rev() {
            if let Err(e) = self.stop(name) {
                eprintln!("bench cleanup: {e}");
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
        for problem in self.remove_cgroup_parents() {
            eprintln!("bench cleanup: cannot remove cgroup {problem}");
        }
        // The bridged row's bridge (its veths went with its stops), berth's table
        // on it, and the host's ip_forward as it was (a bridged start turns it on).
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("berth_{}", self.bridge)])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.ip_forward);
        common::keep_if_unsafe_to_delete(&mut self.tmp, clean);
    }
}

fn format_ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn report(rows: &[(&str, Outcome)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    println!();
    println!(
        "{:<width$}  {:>3}  {:>8}  {:>9}  {:>8}",
        "benchmark", "n", "min_ms", "median_ms", "max_ms"
    );
    let mut lines = Vec::new();
    for (name, outcome) in rows {
        match outcome {
            Outcome::Measured(times) if !times.is_empty() => {
                let mut sorted = times.clone();
                sorted.sort();
                let med = format_ms(median(&sorted));
                println!(
                    "{name:<width$}  {:>3}  {:>8}  {med:>9}  {:>8}",
                    sorted.len(),
                    format_ms(sorted[0]),
                    format_ms(sorted[sorted.len() - 1]),
                );
                lines.push(format!("bench: {name} median_ms={med}"));
            }
            Outcome::Measured(_) => {
                println!("{name:<width$}  no iterations");
                lines.push(format!("bench: {name} median_ms=n/a (no iterations)"));
            }
            Outcome::Skipped(why) => {
                println!("{name:<width$}  {why}");
                lines.push(format!("bench: {name} median_ms=n/a ({why})"));
            }
            Outcome::Failed(why) => {
                println!("{name:<width$}  failed: {why}");
                lines.push(format!("bench: {name} median_ms=n/a (failed: {why})"));
            }
        }
    }
    println!();
    for line in lines {
        println!("{line}");
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench start: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a quick smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (iterations, warmups) = if full { (ITERATIONS, WARMUPS) } else { (1, 0) };

    common::catch_interrupts();

    let mut bench = Bench::new(iterations, warmups);
    println!(
        "berth start benchmark: {iterations} iterations after {warmups} warm-ups; state {}, cgroup parent {}",
        bench.state_dir.display(),
        bench.cgroup_parent
    );

    let mut rows = Vec::new();
    let host = bench.berth_start(
        HOST,
        "  command: [\"/bin/sleep\", \"infinity\"]\n  restartPolicy: Never\n",
    );
    rows.push(("berth_start_host", Outcome::from(host)));

    let busybox = if Path::new("/bin/busybox").is_file() {
        bench
            .berth_start(
                BUSYBOX,
                "  rootfs: {template: busybox}\n  command: [\"/bin/sleep\", \"1000\"]\n  restartPolicy: Never\n",
            )
            .into()
    } else {
        Outcome::Skipped("skipped: /bin/busybox missing (apt-get install busybox-static)".into())
    };
    rows.push(("berth_start_busybox", busybox));

    let bridged = if Path::new("/bin/busybox").is_file() {
        bench
            .berth_start(
                BRIDGED,
                "  rootfs: {template: busybox}\n  command: [\"/bin/sleep\", \"1000\"]\n  restartPolicy: Never\n  network: {mode: bridge}\n",
            )
            .into()
    } else {
        Outcome::Skipped("skipped: /bin/busybox missing (apt-get install busybox-static)".into())
    };
    rows.push(("berth_start_busybox_bridged", bridged));

    rows.push(("unshare_baseline", bench.unshare()));

    drop(bench);
    report(&rows);
    if INTERRUPTED.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
}
