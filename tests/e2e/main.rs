//! End-to-end tests: they run the real `berth` binary as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod api_abuse;
mod cli;
mod corpus;
mod create;
mod daemon;
mod delegate;
mod exec;
mod exec_isolation;
mod fleet;
mod git;
mod health;
mod health_rollout;
mod images;
mod layers;
mod metrics;
mod network;
mod order;
mod orphan;
mod pid1;
mod pull;
mod registry;
mod rollback;
mod security;
mod service;
mod start;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `berth` binary cargo built for this test run.
pub fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A state directory of a test's own, removed when the test ends (also on failure).
#[derive(Debug)]
pub struct StateDir {
    pub dir: tempfile::TempDir,
    /// The state dir itself: `dir`, or a directory nested inside it.
    path: PathBuf,
    /// A cgroup parent of this test's own, removed on drop.
    pub cgroup_parent: String,
}

impl StateDir {
    #[allow(clippy::new_without_default)] // creating one has effects; no Default
    pub fn new() -> StateDir {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test creates containers and must run as root (sudo -E cargo test --workspace)"
        );
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .unwrap();
        StateDir {
            path: dir.path().to_owned(),
            dir,
            cgroup_parent: format!("berth-test-{}-{n}", std::process::id()),
        }
    }

    /// A state dir whose path is `length` bytes long (a directory nested in the
    /// temporary one, made by berth itself).
    pub fn with_path_length(length: usize) -> StateDir {
        let mut state = StateDir::new();
        let base = state.dir.path().join("s");
        let pad = length.saturating_sub(base.as_os_str().len());
        let mut path = base.into_os_string();
        path.push("x".repeat(pad));
        state.path = PathBuf::from(path);
        state
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `berth --state-dir <this> ARGS...`
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = berth();
        cmd.arg("--state-dir")
            .arg(self.path())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.berth(args).output().unwrap()
    }

    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.path().join("containers").join(name)
    }

    /// Writes a manifest file for `name` with `spec_yaml` (indented by two) and returns its path.
    pub fn manifest(&self, name: &str, spec_yaml: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec_yaml}"),
        )
        .unwrap();
        path
    }

    /// Every container directory left.
    pub fn leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(self.path().join("containers")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A unique container name for this test process.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

impl Drop for StateDir {
    /// Stop every container this test left running, then remove its cgroup parent
    /// in every hierarchy (rmdir only: the monitors removed their own cgroups).
    fn drop(&mut self) {
        for name in self.leftovers() {
            let _ = self.berth(&["stop", &name, "--timeout", "0s"]).output();
        }
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(entries.flatten().map(|e| e.path()));
        }
        for root in roots {
            let parent = root.join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    // A template's leftovers, if berth failed to kill them.
                    let create = child.path().join("create");
                    if let Ok(procs) = std::fs::read_to_string(create.join("cgroup.procs")) {
                        for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        process_gone_all(&create.join("cgroup.procs"));
                    }
                    let _ = std::fs::remove_dir(&create);
                    let _ = std::fs::remove_dir(child.path().join("payload"));
                    let _ = std::fs::remove_dir(child.path().join("monitor"));
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            // A monitor still finishing its own clean-up may hold a child a moment
            // (seen once to outlast 2 s under load: 10 s, then say what held it).
            for attempt in 0..100 {
                if std::fs::remove_dir(&parent).is_ok() || !parent.exists() {
                    break;
                }
                if let Ok(children) = std::fs::read_dir(&parent) {
                    for child in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(child.path().join("payload"));
                        let _ = std::fs::remove_dir(child.path().join("monitor"));
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                if attempt == 99 {
                    let left: Vec<String> = walk_procs(&parent);
                    eprintln!(
                        "test clean-up: cannot remove {} after 10 s; left: {left:?}",
                        parent.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Every cgroup below `dir` with the pids in it, for a clean-up that failed.
fn walk_procs(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let procs = std::fs::read_to_string(entry.path().join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(",");
            found.push(format!("{} [{procs}]", entry.path().display()));
            found.extend(walk_procs(&entry.path()));
        }
    }
    found
}

/// Waits (up to 5 s) for a cgroup's `cgroup.procs` to be empty.
fn process_gone_all(procs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && std::fs::read_to_string(procs).is_ok_and(|p| !p.trim().is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 5 s) for `pid` to be gone; a zombie waiting for the host's init
/// to reap it counts as gone.
pub fn process_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if process_gone_now(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Is `pid` gone, or a zombie (its state says Z)?
pub fn process_gone_now(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Every live process whose root directory is `rootfs` (same device and inode):
/// the container's processes, found without asking berth.
pub fn processes_in(rootfs: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(rootfs).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/root/"))
                .is_ok_and(|m| m.dev() == want.dev() && m.ino() == want.ino())
        })
        .filter(|pid| !process_gone_now(*pid))
        .collect()
}

/// The console output once it holds `marker`.
pub fn console_until(state: &StateDir, name: &str, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(state.container_dir(name).join("console.log"))
            .unwrap_or_default();
        if log.contains(marker) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {marker:?} in the output:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The cgroup directories `berth status` names for a container.
pub fn cgroup_dirs(status: &serde_json::Value) -> Vec<PathBuf> {
    status["cgroups"]["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| PathBuf::from(h["dir"].as_str().unwrap()))
        .collect()
}
