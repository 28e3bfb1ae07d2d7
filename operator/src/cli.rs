//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// berth: declarative containers for Linux hosts and edge-device fleets.
///
/// Drop container manifests (YAML) into a watched directory; berth creates,
/// starts, restarts and removes containers until the host matches them.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    /// Where berth keeps its containers and state.
    #[arg(
        long,
        global = true,
        env = "BERTH_STATE_DIR",
        default_value = "/var/lib/berth"
    )]
    pub state_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifest files or directories; print every problem as FILE:LINE:COLUMN.
    ///
    /// Needs neither root nor a daemon: meant for a GitOps repository's CI.
    /// Exits 0 when everything is valid, 1 when anything is not.
    Validate {
        /// Files, or directories to search for *.yaml and *.yml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of a manifest, for editors and the YAML language server.
    Schema,
    /// Create the containers of a manifest file (without starting them).
    ///
    /// Containers created by hand are never pruned by the daemon.
    Create {
        /// The manifest file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Remove a container's directory and rootfs. A container that does not exist is not an error.
    Destroy {
        /// The container's name.
        name: String,
    },
    /// Clean up creates that were interrupted (power loss, kill -9).
    Gc,
}
