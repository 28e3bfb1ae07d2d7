//! berth's engine, modelled on LXC: create (`lxcapi_create`) and destroy now;
//! start, monitor, reboot and stop (`lxcapi_start`, `__lxc_start`, `lxc_spawn`)
//! next. Everything of a container lives in `<state-dir>/containers/<name>/`.

mod aside;
pub mod cgroup;
mod config;
mod create;
mod error;
mod exec;
/// Entry points for the fuzz targets (`fuzz/`) and their stable twins; not an API.
#[doc(hidden)]
pub mod fuzz;
mod health;
pub mod image;
mod init;
mod layers;
mod layout;
mod lifecycle;
pub mod monitor;
pub mod network;
mod orphan;
mod partial;
mod pid1;
mod pty;
mod remove;
mod sealed;
mod seccomp;
mod security;
mod socket;
mod sources;
mod spawn;
mod status;
mod sync;
mod templates;
mod trace;
mod user;
mod userns;

use std::path::{Path, PathBuf};

pub use config::{Header, ImageDefaults, Origin, SavedConfig};
pub use error::{Error, Result, with_causes};
pub use exec::ExecOptions;
pub use layers::{ImageLayers, LayeredRootfs, RootfsMode};
pub use layout::ContainerDir;
pub use lifecycle::StagedConfig;
pub use sealed::reexec_from_sealed_copy;
pub use socket::SocketPath;
pub use status::{ExitReason, Health, HealthState, LastExit, Phase, Status};
pub use trace::{StartTrace, TracedStep};

use partial::{PartialLock, Probe};

/// The engine, rooted at a state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    state_dir: PathBuf,
    /// Cgroups go to `<parent>/<name>/{monitor,payload}` in each hierarchy used.
    cgroup_parent: String,
    /// Copy images' layers into each rootfs even where overlayfs would serve.
    copy_layers: bool,
    /// `--bridge`, `--subnet` and `--subnet6` as given (`None`: the recorded
    /// ones, else the defaults, which have no IPv6); checked against
    /// `network/config.json` at a bridged start.
    bridge: Option<String>,
    subnet: Option<String>,
    subnet6: Option<String>,
}

impl Runtime {
    pub fn new(state_dir: impl Into<PathBuf>) -> Runtime {
        Runtime {
            state_dir: state_dir.into(),
            cgroup_parent: "berth".to_owned(),
            copy_layers: false,
            bridge: None,
            subnet: None,
            subnet6: None,
        }
    }

    /// Make containers from images with a copy of their layers, not an overlay:
    /// for tests of that fallback, and hosts whose overlayfs misbehaves.
    pub fn with_layers_copied(mut self, copy: bool) -> Runtime {
        self.copy_layers = copy;
        self
    }

    pub fn with_cgroup_parent(mut self, parent: impl Into<String>) -> Runtime {
        self.cgroup_parent = parent.into();
        self
    }

    /// The bridge and subnets of `network.mode: bridge`, as the user gave them;
    /// `None` leaves the state dir's recorded one (else the default: for
    /// `subnet6`, no IPv6).
    pub fn with_network(
        mut self,
        bridge: Option<String>,
        subnet: Option<String>,
        subnet6: Option<String>,
    ) -> Runtime {
        self.bridge = bridge;
        self.subnet = subnet;
        self.subnet6 = subnet6;
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    pub fn dir(&self, name: &str) -> Result<ContainerDir> {
        ContainerDir::new(&self.containers_dir(), name)
    }

    /// The saved config of a container.
    pub fn config(&self, name: &str) -> Result<SavedConfig> {
        let dir = self.dir(name)?;
        if !dir.path.is_dir() {
            return Err(Error::NotFound(name.to_owned()));
        }
        SavedConfig::load(&dir.config())
    }

    /// Names of every container directory, sorted; entries that are not valid
    /// names are skipped (berth never made them).
    pub fn list(&self) -> Result<Vec<String>> {
        let containers = self.containers_dir();
        let entries = match std::fs::read_dir(&containers) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(error::io("read", &containers)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| berth_manifests::check_name(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Remove a container's directory and rootfs. A `path:` rootfs, outside the
    /// directory, is never touched. Destroying what does not exist is not an error:
    /// returns whether there was anything.
    pub fn destroy(&self, name: &str) -> Result<bool> {
        let dir = self.dir(name)?;
        if std::fs::symlink_metadata(&dir.path).is_err() {
            return Ok(false);
        }
        // Never pull a rootfs from under a live process, monitored or orphaned.
        if self.connect(name)?.is_some() || self.orphan(name)?.is_some() {
            return Err(Error::Running(name.to_owned()));
        }
        // Nor from under a running create.
        let _lock: Option<PartialLock> = match PartialLock::probe(&dir.partial())? {
            Probe::Held => return Err(Error::Busy(name.to_owned())),
            Probe::Stale(lock) => {
                self.kill_template_leftovers(name)?;
                Some(lock)
            }
            Probe::Absent => None,
        };
        remove::remove_tree(&dir.path)?;
        network::leave(&self.state_dir, name).map_err(Error::Network)?;
        tracing::info!(container = name, "destroyed");
        Ok(true)
    }

    /// The network of the container `config` describes (`None` unless bridged):
    /// its bridge and address; with `live` also whether its veth exists and its nftables rules
    /// (a netlink query and an `nft` run).
    pub fn network(
        &self,
        config: &SavedConfig,
        live: bool,
    ) -> Result<Option<network::NetworkInfo>> {
        if config.container.spec.network != berth_manifests::NetworkMode::Bridge {
            return Ok(None);
        }
        network::info(&self.state_dir, &config.container.name, live)
            .map(Some)
            .map_err(Error::Network)
    }

    /// Remove the veths that monitors killed half way through a start left on the
    /// host, of containers that do not run now (a running one's, even an
    /// orphan's, is kept). Returns each removed link with its container.
    pub fn remove_stale_links(&self) -> Result<Vec<(String, String)>> {
        let mut names = self.list()?;
        names.extend(network::holders(&self.state_dir).map_err(Error::Network)?);
        names.sort();
        names.dedup();
        // When in doubt, it runs.
        names.retain(|name| matches!(self.is_running(name), Ok(false)));
        network::remove_links_of(&self.state_dir, &names).map_err(Error::Network)
    }

    /// Find creates that died half way (a `partial` nobody holds the lock on) and
    /// destroy what they left. Creates still running are left alone. Returns the
    /// names cleaned up.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut recovered = Vec::new();
        for name in self.list()? {
            let dir = self.dir(&name)?;
            match PartialLock::probe(&dir.partial())? {
                Probe::Absent => {}
                Probe::Held => tracing::info!(container = %name, "create in progress; left alone"),
                Probe::Stale(_lock) => {
                    self.kill_template_leftovers(&name)?;
                    remove::remove_tree(&dir.path)?;
                    tracing::warn!(container = %name, "removed the remains of an interrupted create");
                    recovered.push(name);
                }
            }
        }
        Ok(recovered)
    }
}
