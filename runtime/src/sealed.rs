//! runc's CVE-2019-5736: a process that joins a container is visible inside it,
//! and its /proc/PID/exe is a handle on berth's own binary that the container
//! can reopen for writing once no berth runs it any more, replacing the host's
//! berth. A command that is `#!/proc/self/exe` even runs that binary inside. So
//! `berth exec` and the monitors (which the containers' inits are cloned from)
//! run from a sealed in-memory copy of the binary, as runc and crun do: all a
//! container can reach is that copy, which nobody can write.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};

const SELF_EXE: &str = "/proc/self/exe";

/// No write, no resize, and no way to lift the seals.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// Whether this process runs from a sealed copy of its binary.
pub(crate) fn running_from_sealed_copy() -> bool {
    File::open(SELF_EXE)
        .ok()
        .and_then(|exe| rustix::fs::fcntl_get_seals(&exe).ok())
        .is_some_and(|seals| seals.contains(SEALS))
}

/// Re-execute this process, with the same arguments and environment, from a
/// sealed copy of its binary, unless it already runs from one (then `Ok`). Call
/// it first thing in a command that will join a container. Costs one copy of
/// the binary in memory, for as long as the process runs.
pub fn reexec_from_sealed_copy() -> Result<()> {
    if running_from_sealed_copy() {
        return Ok(());
    }
    let copy = sealed_copy()?;
    let args = to_cstrings(std::env::args_os().map(OsStringExt::into_vec))?;
    let env = to_cstrings(std::env::vars_os().map(|(key, value)| {
        let mut pair = key.into_vec();
        pair.push(b'=');
        pair.extend(value.into_vec());
        pair
    }))?;
    let error = match nix::unistd::fexecve(&copy, &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(crate::error::errno("run a sealed copy of", SELF_EXE)(error))
}

/// A sealed copy of this process's binary for a child to run: this process's
/// own when it already runs from one (the daemon: one copy for all the monitors
/// it starts), else a new one, which the child keeps alive while it runs.
#[derive(Debug)]
pub(crate) struct SealedBinary {
    copy: Option<OwnedFd>,
}

impl SealedBinary {
    pub(crate) fn new() -> Result<SealedBinary> {
        if running_from_sealed_copy() {
            return Ok(SealedBinary { copy: None });
        }
        let copy = sealed_copy()?;
        // Above the low fds a child may be handed with dup2 (the monitor's report
        // pipe goes to 3), which would replace the copy before its exec.
        let copy = rustix::io::fcntl_dupfd_cloexec(&copy, 10)
            .map_err(|e| crate::error::io("keep the copy of", Path::new(SELF_EXE))(e.into()))?;
        Ok(SealedBinary { copy: Some(copy) })
    }

    /// What to exec: valid in this process and in a child forked from it, until
    /// the child's exec (the fd is close-on-exec).
    pub(crate) fn path(&self) -> PathBuf {
        match &self.copy {
            None => PathBuf::from(SELF_EXE),
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        }
    }
}

/// A memfd holding this process's binary, sealed.
fn sealed_copy() -> Result<OwnedFd> {
    let failed = |op| crate::error::io(op, Path::new(SELF_EXE));
    let mut exe = File::open(SELF_EXE).map_err(failed("open"))?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Since Linux 6.3 a memfd meant to be executed says so (vm.memfd_noexec).
    let memfd = rustix::fs::memfd_create("berth", flags | MemfdFlags::EXEC)
        .or_else(|e| match e {
            rustix::io::Errno::INVAL => rustix::fs::memfd_create("berth", flags),
            e => Err(e),
        })
        .map_err(|e| failed("make an in-memory copy of")(e.into()))?;
    let mut copy = File::from(memfd);
    // std's copy uses copy_file_range or sendfile: no pass through user space.
    std::io::copy(&mut exe, &mut copy).map_err(failed("copy"))?;
    rustix::fs::fcntl_add_seals(&copy, SEALS).map_err(|e| failed("seal the copy of")(e.into()))?;
    Ok(copy.into())
}

fn to_cstrings(items: impl Iterator<Item = Vec<u8>>) -> Result<Vec<CString>> {
    items
        .map(|bytes| {
            CString::new(bytes).map_err(|_| {
                Error::Start("an argument or environment variable holds a NUL byte".to_owned())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_against_writes_and_resizing() {
        let copy = File::from(sealed_copy().unwrap());
        let seals = rustix::fs::fcntl_get_seals(&copy).unwrap();
        assert!(seals.contains(SEALS));
        assert!(std::io::Write::write_all(&mut &copy, b"X").is_err());
        assert!(copy.set_len(0).is_err());
        let size = std::fs::metadata(SELF_EXE).unwrap().len();
        assert_eq!(copy.metadata().unwrap().len(), size);
    }
}
