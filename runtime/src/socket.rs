//! Unix socket paths of any length. `sun_path` holds 108 bytes, and a state dir
//! may be long enough that `containers/NAME/monitor.sock` does not fit; such a
//! path is reached through an `O_PATH` fd of its directory as
//! `/proc/self/fd/N/NAME`, which always fits. Binding and connecting both go
//! through here.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The longest path `sun_path` takes, without its NUL.
const SUN_PATH_MAX: usize = 107;

/// A path to bind or connect a unix socket at; keep it alive until the call is
/// done (it may hold the directory's fd).
#[derive(Debug)]
pub struct SocketPath {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    pub fn new(socket: &Path) -> std::io::Result<SocketPath> {
        if socket.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketPath {
                path: socket.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a socket path", socket.display()),
            ));
        };
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let path = Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
        Ok(SocketPath {
            path,
            _dir: Some(fd),
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

/// Connect to the unix socket at `socket`, whatever its length.
pub fn connect(socket: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(SocketPath::new(socket)?.as_path())
}

/// Listen on the unix socket at `socket`, whatever its length.
pub fn bind(socket: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    std::os::unix::net::UnixListener::bind(SocketPath::new(socket)?.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_longer_than_sun_path_binds_and_connects() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d".repeat(120));
        std::fs::create_dir(&dir).unwrap();
        let socket = dir.join("monitor.sock");
        assert!(socket.as_os_str().len() > 108);
        assert!(std::os::unix::net::UnixListener::bind(&socket).is_err());
        let listener = bind(&socket).unwrap();
        assert!(socket.exists());
        let _client = connect(&socket).unwrap();
        assert!(listener.accept().is_ok());
    }
}
