//! Where a container's files live: `<state-dir>/containers/<name>/`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const ROOTFS: &str = "rootfs";
/// An image container's overlay: its writable layer and overlayfs's scratch dir.
pub const UPPER: &str = "upper";
pub const WORK: &str = "work";
pub const PARTIAL: &str = "partial";
pub const TEMPLATE_LOG: &str = "template.log";
pub const STATUS: &str = "status";
pub const MONITOR_SOCKET: &str = "monitor.sock";
pub const CONSOLE_LOG: &str = "console.log";
/// A bridged container's /etc/hosts and /etc/resolv.conf, bound by its init.
pub const HOSTS: &str = "hosts";
pub const RESOLV_CONF: &str = "resolv.conf";
/// `spec.healthcheck.notify`: the directory of the container's notify socket,
/// bound read-only into the container (see health.rs).
pub const NOTIFY_DIR: &str = "notify";
/// The steps of a traced start (`berth start --trace`), while it runs.
pub const TRACE: &str = "trace";

#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub name: String,
    pub path: PathBuf,
}

impl ContainerDir {
    /// The directory of `name`, refusing names that could resolve anywhere but
    /// directly inside `containers/`.
    pub fn new(containers: &Path, name: &str) -> Result<ContainerDir> {
        berth_manifests::check_name(name).map_err(|why| Error::BadName(name.to_owned(), why))?;
        Ok(ContainerDir {
            name: name.to_owned(),
            path: containers.join(name),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path.join(ROOTFS)
    }

    pub fn upper(&self) -> PathBuf {
        self.path.join(UPPER)
    }

    pub fn work(&self) -> PathBuf {
        self.path.join(WORK)
    }

    pub fn partial(&self) -> PathBuf {
        self.path.join(PARTIAL)
    }

    pub fn template_log(&self) -> PathBuf {
        self.path.join(TEMPLATE_LOG)
    }

    pub fn status(&self) -> PathBuf {
        self.path.join(STATUS)
    }

    pub fn monitor_socket(&self) -> PathBuf {
        self.path.join(MONITOR_SOCKET)
    }

    pub fn console_log(&self) -> PathBuf {
        self.path.join(CONSOLE_LOG)
    }

    pub fn hosts(&self) -> PathBuf {
        self.path.join(HOSTS)
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.path.join(RESOLV_CONF)
    }

    /// The compiled seccomp filters of the last start (a cache, see seccomp.rs).
    pub fn seccomp_cache(&self) -> PathBuf {
        self.path.join("seccomp.bpf")
    }

    pub fn trace(&self) -> PathBuf {
        self.path.join(TRACE)
    }

    pub fn notify_dir(&self) -> PathBuf {
        self.path.join(NOTIFY_DIR)
    }
}
