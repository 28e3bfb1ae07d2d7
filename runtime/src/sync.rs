//! The messages between processes, one JSON object a line (LXC's `sync.h`
//! barriers, youki's `message.rs`): monitor ↔ container init over a socketpair,
//! monitor → `berth start` over a pipe, clients ↔ monitor over `monitor.sock`.

use std::io::{BufRead, BufReader, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A line longer than this is not one of ours.
const MAX_LINE: u64 = 1 << 20;

/// From the monitor to the container's init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// The child is in its cgroups: it may configure itself.
    Configure,
}

/// From the container's init to the monitor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// A setup step failed; this becomes the error `berth start` prints.
    Failed(SetupError),
    /// All set; execve comes next. EOF after this (the socket is close-on-exec)
    /// means the command is running.
    Exec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupError {
    pub step: String,
    pub errno: i32,
    pub path: Option<String>,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.step)?;
        if let Some(path) = &self.path {
            write!(f, " {path}")?;
        }
        if self.errno != 0 {
            write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))?;
        }
        Ok(())
    }
}

/// From the monitor to the `berth start` that launched it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    Started {
        init_pid: i32,
    },
    Failed {
        message: String,
        /// What the daemon tells apart from other failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<FailReason>,
    },
}

/// A failed start that is not the container's own fault: something else on the
/// host holds what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// A published host port is held by another program.
    PortInUse,
}

/// Requests on `monitor.sock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// The current status.
    State,
    /// Stop: stop signal, then SIGKILL after `timeout_ms`. Answered once the
    /// container is gone and its cgroups removed.
    Stop { timeout_ms: Option<u64> },
    /// Restart through the same path as a reboot from inside. Answered at once.
    Reboot,
    /// Answered when the container has stopped for good (not on reboot).
    Wait,
    /// Answered with the status at once and again at each change of its health
    /// (state or failing streak), until the container stops for good.
    Watch,
}

pub fn send<T: Serialize>(mut to: impl Write, message: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    to.write_all(&line)?;
    to.flush()
}

/// One message, or `None` at end of stream.
pub fn receive<T: DeserializeOwned>(from: impl Read) -> std::io::Result<Option<T>> {
    let mut line = Vec::new();
    BufReader::new(from.take(MAX_LINE)).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
