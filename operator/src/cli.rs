//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// berth: declarative containers for Linux hosts and edge-device fleets.
///
/// Drop container manifests (YAML) into a watched directory; berth creates,
/// starts, restarts and removes containers until the host matches them.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_GIT_COMMIT"), ")"),
    propagate_version = true
)]
pub struct Cli {
    /// Where berth keeps its containers and state.
    #[arg(
        long,
        global = true,
        env = "BERTH_STATE_DIR",
        default_value = "/var/lib/berth"
    )]
    pub state_dir: PathBuf,

    /// The cgroup under which containers get `<name>/monitor` and `<name>/payload`,
    /// in every hierarchy berth uses. Default: the one a `daemon --cgroup-delegate`
    /// recorded in <state-dir>/cgroup-parent, else `berth`.
    #[arg(long, global = true, env = "BERTH_CGROUP_PARENT")]
    pub cgroup_parent: Option<String>,

    /// The bridge of `network.mode: bridge` containers (default: berth0). The
    /// first bridged start records it in <state-dir>/network/config.json; a later
    /// one given another is refused.
    #[arg(long, global = true, env = "BERTH_BRIDGE")]
    pub bridge: Option<String>,

    /// The bridge's IPv4 subnet (default: 10.88.0.0/16); its first host is the
    /// bridge's address. Recorded and checked like --bridge.
    #[arg(long, global = true, env = "BERTH_SUBNET")]
    pub subnet: Option<String>,

    /// IPv6 for the bridge too: a unique local /64 (fd00::/8, e.g.
    /// fd42:6265:7274::/64) whose ::1 is the bridge's; each container's IPv6
    /// address is it plus the host part of its IPv4 one. Default: none. Recorded
    /// and checked like --bridge.
    #[arg(long, global = true, env = "BERTH_SUBNET6")]
    pub subnet6: Option<String>,

    /// registries.conf (v2 TOML) for `pull`: which registries are plain HTTP
    /// (`insecure = true`) or blocked. Default: /etc/containers/registries.conf.
    #[arg(long, global = true, env = "BERTH_REGISTRIES_CONF")]
    pub registries_conf: Option<PathBuf>,

    /// Registry credentials (auth.json or docker config.json), looked at before
    /// /run/containers/0/auth.json and ~/.docker/config.json.
    #[arg(long, global = true, env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// The daemon's many flags make its variant large; the enum is parsed once per
// run, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Print a shell completion script, e.g. `berth completions bash > /etc/bash_completion.d/berth`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print berth's man page (roff), e.g. `berth man | man -l -`.
    Man,
    /// Create the containers of a manifest file or directory (without starting them).
    ///
    /// Containers created by hand are never pruned by the daemon.
    Create {
        /// The manifest file, or a directory of them (*.yaml, *.yml, as `validate`).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Remove containers' directories and rootfs. A container that does not exist is not an error.
    #[command(visible_alias = "rm")]
    Destroy {
        /// The containers' names.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every container in the state dir.
        #[arg(long)]
        all: bool,
        /// Stop a running container first (at once: no stop timeout).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Clean up creates that were interrupted (power loss, kill -9), and free the
    /// image store's blobs and layers that no image uses.
    Gc,
    /// Pull an image from a registry into the image store.
    ///
    /// REF names the registry: `registry.example:5000/team/app:1.4` or
    /// `…/app@sha256:…` (berth has no default registry). Blobs and layers already
    /// in the store are not fetched again.
    Pull { reference: String },
    /// List the images in the store: REFERENCE DIGEST SIZE CONTAINERS.
    Images {
        /// json for a list of objects.
        #[arg(short = 'o', long = "output", default_value = "", value_parser = ["", "json"])]
        output: String,
    },
    /// Remove an image from the store (refused while a container uses it); `gc`
    /// then frees its layers and blobs.
    Rmi {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Start a created container; returns once its command runs, or with its error.
    ///
    /// A monitor process per container (`[berth monitor] STATE-DIR NAME` in ps)
    /// keeps it running, independent of the caller and of the daemon.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        /// Print how long each step of the start took (the starter's, the
        /// monitor's and the container's init's, on one clock), as a table.
        #[arg(long)]
        trace: bool,
    },
    /// Stop running containers: the stop signal, then SIGKILL after the timeout.
    Stop {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every container in the state dir.
        #[arg(long)]
        all: bool,
        /// Default: the manifest's stopTimeout (e.g. 10s, 500ms, or whole seconds: 5).
        #[arg(short = 't', long, value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// Restart a running container the way a reboot inside it does.
    Reboot {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a container's status as JSON (phase, init pid, reboots, last exit);
    /// without NAME, the daemon's: version, uptime, source and revision, last
    /// sync, last error and containers by phase.
    Status {
        name: Option<String>,
        /// Without NAME: json for JSON instead of text.
        #[arg(short = 'o', long = "output", default_value = "", value_parser = ["", "json"])]
        output: String,
    },
    /// Run a command inside a running container (its namespaces, cgroup, capabilities,
    /// seccomp and environment); exits with the command's exit code.
    Exec {
        name: String,
        /// Extra environment, KEY=VALUE (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Working directory inside the container.
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        /// Keep stdin open for the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Allocate a terminal inside the container (raw mode, window size passed on).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments: everything after NAME (berth's own
        /// options go before NAME), or after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run the daemon: watch a manifest directory and converge the host to it.
    Daemon {
        /// The watched directory of manifests.
        #[arg(long, default_value = "/etc/berth/manifests")]
        manifests: PathBuf,
        /// Full rescan interval, besides inotify (e.g. 5m).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        resync: std::time::Duration,
        /// Reconciles at once (default: the number of CPUs).
        #[arg(long)]
        concurrency: Option<usize>,
        /// How long a container whose manifest is gone keeps running before it is
        /// stopped and destroyed; it is kept if the manifest comes back meanwhile.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        prune_grace: std::time::Duration,
        /// First crash-loop back-off delay; doubles to 5m.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        crash_backoff: std::time::Duration,
        /// Log format: text (human-readable) or json (JSON lines).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// A label of this device, KEY=VALUE (repeatable), for manifests'
        /// `metadata.selector`; overrides the labels file and the built-ins
        /// (berth.dev/hostname, berth.dev/arch, berth.dev/os).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// This device's labels: KEY=VALUE lines, # comments; a missing file is no labels.
        #[arg(long, default_value = "/etc/berth/labels")]
        labels_file: PathBuf,
        /// Follow a Git repository instead of a directory: a local path, file://,
        /// https:// or ssh:// URL. Kept as a clone under <state-dir>/git/; each new
        /// commit is validated whole before it is applied. Needs the `git` program.
        #[arg(long, conflicts_with = "manifests")]
        git: Option<String>,
        /// The branch, tag or commit to follow (default: the remote's HEAD).
        #[arg(long, requires = "git")]
        git_ref: Option<String>,
        /// The directory of the repository that holds the manifests (default: its top).
        #[arg(long, requires = "git")]
        git_path: Option<PathBuf>,
        /// How often to fetch (e.g. 30s, 5m); failures retry with back-off.
        #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "git")]
        git_interval: std::time::Duration,
        /// The SSH private key for ssh:// URLs.
        #[arg(long, requires = "git")]
        git_ssh_key: Option<PathBuf>,
        /// Apply only commits signed by these keys: an SSH allowed_signers file, or
        /// an OpenPGP keyring (armored or binary). Unsigned commits are refused.
        #[arg(long, requires = "git")]
        git_verify: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464);
        /// off unless given. Unauthenticated: an address beyond loopback is
        /// warned about (see README, Metrics).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Use the cgroup this daemon was started in (a systemd unit with
        /// Delegate=yes) as the containers' cgroup parent: the daemon moves itself
        /// into its leaf `daemon` and the containers go beside it, so on a cgroup v2
        /// host they belong to the unit. Recorded in <state-dir>/cgroup-parent for
        /// the CLI and for a restarted daemon.
        #[arg(long, conflicts_with = "cgroup_parent")]
        cgroup_delegate: bool,
        /// On SIGTERM or SIGINT, stop every container the daemon manages before
        /// exiting, each before those it depends on (default: they keep running).
        #[arg(long)]
        stop_on_exit: bool,
    },
    /// List containers as the daemon sees them: NAME PHASE PID RESTARTS AGE MESSAGE.
    #[command(visible_aliases = ["ps", "ls"])]
    Get {
        name: Option<String>,
        /// wide, json, yaml, name (`container/NAME` lines), or jsonpath=TEMPLATE
        /// (kubectl's: `-o jsonpath='{.items[*].name}'`, RFC 9535 paths in braces).
        #[arg(short = 'o', long = "output", default_value = "")]
        output: String,
        /// Only containers whose labels match: KEY=VALUE, KEY!=VALUE, KEY, !KEY,
        /// comma-separated (all must hold), e.g. `-l app=web,tier!=db`.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        /// A LABELS column.
        #[arg(long)]
        show_labels: bool,
        /// Also the manifests whose metadata.selector does not select this device
        /// (phase NotSelected).
        #[arg(long)]
        all: bool,
    },
    /// Show a container's spec, conditions, recent events and cgroup usage.
    Describe { name: String },
    /// Print a container's console output.
    Logs {
        name: String,
        /// Keep printing what it writes.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Print the daemon's events (JSON lines).
    Events {
        /// Keep printing new events.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    berth_manifests::parse_duration(text)
}

/// Whole seconds, as `docker stop -t 5` and `podman stop -t 5` take them, or a
/// duration as in manifests (`5s`, `500ms`).
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("{text:?} is too many seconds"));
    }
    parse_duration(text)
}
