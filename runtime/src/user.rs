//! Who the command runs as: `spec.user` resolved against the container's own
//! /etc/passwd and /etc/group, read after pivot_root (so a symlink in them
//! resolves inside the container) as a bounded regular file: the container's
//! files are its author's, not berth's.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use berth_manifests::{Id, User};
use nix::errno::Errno;

use crate::sync::SetupError;

/// Larger than any real passwd or group file; a bigger one is refused.
const MAX_DB_BYTES: u64 = 4 << 20;

/// The ids the command gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary one, the user's from /etc/group, then
    /// `supplementalGroups`.
    pub groups: Vec<u32>,
    /// The home directory from /etc/passwd, for `HOME` when the spec sets none.
    pub home: Option<String>,
}

impl Ids {
    pub(crate) fn root() -> Ids {
        Ids {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: None,
        }
    }
}

fn fail(message: String, errno: Errno) -> SetupError {
    SetupError {
        step: message,
        errno: errno as i32,
        path: None,
    }
}

/// Reads one of the container's databases; absent is empty. Never blocks on a
/// FIFO and never reads a device: only a regular file is read.
fn database(path: &str) -> Result<String, SetupError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            return Err(fail(format!("read the container's {path}"), errno));
        }
    };
    let errno_of = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("read the container's {path}"), errno_of(e)))?;
    if !meta.is_file() || meta.len() > MAX_DB_BYTES {
        return Err(fail(
            format!("the container's {path} is not a regular file of at most 4 MiB"),
            Errno::EINVAL,
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("read the container's {path}"), errno_of(e)))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `name:password:id:...` lines, as /etc/passwd and /etc/group have them.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 3 && fields[2].parse::<u32>().is_ok())
}

/// Resolve `user` (root when `None`) in the current root's /etc/passwd and
/// /etc/group, as runc's and Podman's user lookup do.
pub(crate) fn resolve(user: Option<&User>, supplemental: &[u32]) -> Result<Ids, SetupError> {
    let Some(user) = user else {
        let mut ids = Ids::root();
        ids.groups.extend_from_slice(supplemental);
        return Ok(ids);
    };
    let passwd = database("/etc/passwd")?;
    let found = entries(&passwd).find(|f| match &user.user {
        Id::Number(n) => f[2].parse::<u32>().is_ok_and(|uid| uid == *n),
        Id::Name(name) => f[0] == name,
    });
    let (uid, mut gid, name, home) = match (&user.user, found) {
        (_, Some(f)) => (
            f[2].parse::<u32>().unwrap_or(0),
            f.get(3).and_then(|g| g.parse::<u32>().ok()).unwrap_or(0),
            Some(f[0].to_owned()),
            f.get(5)
                .filter(|h| h.starts_with('/'))
                .map(|h| (*h).to_owned()),
        ),
        // A uid without an entry runs with gid 0 and no name, as with Docker.
        (Id::Number(n), None) => (*n, 0, None, None),
        (Id::Name(name), None) => {
            return Err(fail(
                format!("user {name:?} (spec.user) is not in the container's /etc/passwd"),
                Errno::UnknownErrno,
            ));
        }
    };
    let group_db = match (&user.group, &name) {
        (Some(Id::Number(_)), None) => String::new(),
        _ => database("/etc/group")?,
    };
    if let Some(group) = &user.group {
        gid = match group {
            Id::Number(n) => *n,
            Id::Name(wanted) => entries(&group_db)
                .find(|f| f[0] == wanted)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| {
                    fail(
                        format!(
                            "group {wanted:?} (spec.user) is not in the container's /etc/group"
                        ),
                        Errno::UnknownErrno,
                    )
                })?,
        };
    }
    // The primary group first, as Docker and the kubelet list it.
    let mut groups: Vec<u32> = vec![gid];
    if let Some(name) = &name {
        for f in entries(&group_db) {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    for g in supplemental {
        if !groups.contains(g) {
            groups.push(*g);
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

/// setgroups, setgid, setuid, in that order (each needs the one before it to
/// still be allowed). From root to another uid this clears every capability set
/// but the bounding one, which is what a non-root command gets.
pub(crate) fn become_user(ids: &Ids) -> Result<(), SetupError> {
    let gids: Vec<nix::unistd::Gid> = ids
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| fail("set supplementary groups".to_owned(), e))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(ids.gid))
        .map_err(|e| fail(format!("set gid {}", ids.gid), e))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(ids.uid))
        .map_err(|e| fail(format!("set uid {}", ids.uid), e))?;
    Ok(())
}
