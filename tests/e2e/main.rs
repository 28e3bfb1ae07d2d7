//! End-to-end tests: they run the real `berth` binary as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod cli;
mod create;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
}

impl StateDir {
    #[allow(clippy::new_without_default)] // creating one has effects; no Default
    pub fn new() -> StateDir {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test creates containers and must run as root (sudo -E cargo test --workspace)"
        );
        StateDir {
            dir: tempfile::Builder::new()
                .prefix("berth-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `berth --state-dir <this> ARGS...`
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = berth();
        cmd.arg("--state-dir").arg(self.path()).args(args);
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
