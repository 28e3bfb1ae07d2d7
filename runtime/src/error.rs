//! The runtime's one error type. Each variant carries what the user needs to act:
//! the container, the path, the step.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0} is being created")]
    Busy(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} is running; stop it first")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    /// `exec` from the host's binary would hand the container a handle on it.
    #[error("berth exec must run from a sealed copy of its binary (see reexec_from_sealed_copy)")]
    NotSealed,
    /// The start failed; the message is the container's own setup error.
    #[error("{0}")]
    Start(String),
    /// The start failed because a published host port is held by another
    /// program: not the container's fault, and it may pass once that program goes.
    #[error("{0}")]
    PortInUse(String),
    #[error("monitor of {name}: {message}")]
    Monitor { name: String, message: String },
    #[error("{0:?} is not a valid container name: {1}")]
    BadName(String, String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Destroy or unpack met something it must not touch.
    #[error("refusing to {action} {}: {reason}", path.display())]
    Refused {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
    #[error("{}: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("OCI layout {}: {message}", layout.display())]
    Oci { layout: PathBuf, message: String },
    #[error("image {reference}: {message}")]
    Image { reference: String, message: String },
    /// A blob of the image store: its digest, and what is wrong with it.
    #[error("blob {digest}: {message}")]
    Blob { digest: String, message: String },
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A cgroup the host cannot provide, or a cgroup file that refused a value.
    #[error("cgroups: {0}")]
    Cgroup(String),
    /// The bridge, an address, a veth: what `network.mode: bridge` needs.
    #[error("network: {0}")]
    Network(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, `a: b: c`: some crates' messages (tar's, reqwest's)
/// leave out the errno or the cause that says what happened.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `io_err("create", path)` for `map_err`.
pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

/// The same for nix's and rustix's errno types.
pub(crate) fn errno(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(nix::errno::Errno) -> Error {
    let path = path.into();
    move |e| Error::Io {
        op,
        path,
        source: std::io::Error::from(e),
    }
}
