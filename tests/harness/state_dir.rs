//! The state dir and cgroup parent of a harness-less test binary (the faults
//! rounds, the soak), included by `#[path]`: tests/e2e/main.rs's own StateDir
//! lives in a module tree these binaries cannot include.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A state dir and cgroup parent of the test's own. On drop (also on failure or
/// interruption; the daemon must be gone first) every container is destroyed,
/// what is left in the cgroups killed and the cgroup parent removed.
#[derive(Debug)]
pub struct StateDir {
    dir: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl StateDir {
    /// `prefix` names the temp dir and the cgroup parent (`berth-faults-`, ...).
    pub fn new(prefix: &str) -> Result<StateDir, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(
                "this test creates containers and must run as root (sudo -E cargo test --workspace)"
                    .to_owned(),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        Ok(StateDir {
            dir,
            cgroup_parent: format!("{prefix}{}", std::process::id()),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifests(&self) -> PathBuf {
        self.path().join("manifests")
    }

    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--state-dir")
            .arg(self.path())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    #[allow(dead_code)] // the faults rounds' only
    pub fn run(&self, args: &[&str]) -> Result<Output, String> {
        self.berth(args)
            .output()
            .map_err(|e| format!("berth {args:?}: {e}"))
    }

    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.path().join("containers").join(name)
    }

    /// Every container directory there is.
    pub fn container_dirs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.path().join("containers"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The test's cgroup parent in every hierarchy that has it.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(entries.flatten().map(|e| e.path()));
        }
        roots
            .into_iter()
            .map(|root| root.join(&self.cgroup_parent))
            .filter(|p| p.is_dir())
            .collect()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for name in self.container_dirs() {
            let _ = self.berth(&["destroy", "--force", &name]).output();
        }
        for parent in self.cgroup_parents() {
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                for leaf in ["create", "payload", "monitor"] {
                    let dir = child.path().join(leaf);
                    kill_cgroup(&dir);
                    let _ = std::fs::remove_dir(&dir);
                }
                kill_cgroup(&child.path());
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&parent);
            if parent.exists() {
                eprintln!("test clean-up: cannot remove {}", parent.display());
            }
        }
    }
}

/// SIGKILL every process of a cgroup (by pid) and wait up to 5 s for it to be empty.
pub fn kill_cgroup(dir: &Path) {
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let pids = read_pids(&procs);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of a `cgroup.procs` file; none if it cannot be read.
pub fn read_pids(procs: &Path) -> Vec<i32> {
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
