//! End-to-end tests: they run the real `berth` binary as a user would.

mod cli;
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
