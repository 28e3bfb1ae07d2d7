//! User namespaces: choosing host id ranges, shifting a rootfs's ownership to
//! them at create, writing the maps at start.

use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_manifests::{IdMap, UsernsSpec};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `userns: auto` ranges: 65536 ids each, from 100000 up (like /etc/subuid).
const AUTO_BASE: u32 = 100_000;
const AUTO_SIZE: u32 = 65_536;

/// The maps a container runs with, resolved at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMaps {
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
}

impl IdMaps {
    /// The host id of root inside.
    pub fn root_uid(&self) -> Option<u32> {
        map_id(&self.uid, 0)
    }

    /// `/proc/PID/uid_map` text.
    pub fn proc_text(maps: &[IdMap]) -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
            .collect()
    }
}

fn map_id(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container && u64::from(id) < u64::from(m.container) + u64::from(m.size))
        .map(|m| m.host + (id - m.container))
}

/// Resolve a manifest's setting; `used` are the uid maps of every other container.
pub fn resolve(spec: &UsernsSpec, used: &[IdMaps]) -> Result<IdMaps> {
    match spec {
        UsernsSpec::Maps { uid, gid } => Ok(IdMaps {
            uid: uid.clone(),
            gid: gid.clone(),
        }),
        UsernsSpec::Auto => {
            let overlaps = |start: u32| {
                let end = u64::from(start) + u64::from(AUTO_SIZE);
                used.iter()
                    .flat_map(|m| m.uid.iter().chain(&m.gid))
                    .any(|m| {
                        u64::from(m.host) < end
                            && u64::from(start) < u64::from(m.host) + u64::from(m.size)
                    })
            };
            let start = (0..u32::MAX / AUTO_SIZE)
                .filter_map(|k| AUTO_BASE.checked_add(k.checked_mul(AUTO_SIZE)?))
                .find(|start| !overlaps(*start))
                .ok_or_else(|| Error::Config {
                    path: "userns".into(),
                    message: "no free range of 65536 ids is left for userns: auto".to_owned(),
                })?;
            let map = vec![IdMap {
                container: 0,
                host: start,
                size: AUTO_SIZE,
            }];
            Ok(IdMaps {
                uid: map.clone(),
                gid: map,
            })
        }
    }
}

/// Give every file of `rootfs` to the mapped ids (uid u inside becomes its host id),
/// by directory fds, never following a symlink or crossing a mount.
pub fn shift_tree(rootfs: &Path, maps: &IdMaps) -> Result<()> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| io("open", rootfs, e))?;
    let dev = device(&root, c"", rootfs)?;
    shift_one(&root, c"", rootfs, maps)?;
    shift_dir(&root, rootfs, maps, dev, 0)
}

fn io(op: &'static str, path: &Path, e: rustix::io::Errno) -> Error {
    Error::Io {
        op,
        path: path.to_owned(),
        source: std::io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

fn device(dir: &OwnedFd, name: &std::ffi::CStr, path: &Path) -> Result<(u32, u32, Option<u64>)> {
    let st = rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        StatxFlags::MNT_ID,
    )
    .map_err(|e| io("stat", path, e))?;
    let mnt = StatxFlags::from_bits_retain(st.stx_mask)
        .contains(StatxFlags::MNT_ID)
        .then_some(st.stx_mnt_id);
    Ok((st.stx_dev_major, st.stx_dev_minor, mnt))
}

fn shift_one(dir: &OwnedFd, name: &std::ffi::CStr, path: &Path, maps: &IdMaps) -> Result<()> {
    let st = rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS,
    )
    .map_err(|e| io("stat", path, e))?;
    let (Some(uid), Some(gid)) = (map_id(&maps.uid, st.stx_uid), map_id(&maps.gid, st.stx_gid))
    else {
        return Ok(()); // an id the maps do not cover stays as it is
    };
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
    )
    .map_err(|e| io("chown", path, e))?;
    // chown clears set-uid and set-gid bits: put the mode back (not on symlinks).
    let mode = u32::from(st.stx_mode);
    if mode & 0o6000 != 0
        && rustix::fs::FileType::from_raw_mode(mode) != rustix::fs::FileType::Symlink
    {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open", path, e))?;
        rustix::fs::chmodat(
            rustix::fs::CWD,
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| io("chmod", path, e))?;
    }
    Ok(())
}

fn shift_dir(
    dir: &OwnedFd,
    path: &Path,
    maps: &IdMaps,
    fence: (u32, u32, Option<u64>),
    depth: usize,
) -> Result<()> {
    if depth > 512 {
        return Err(Error::Refused {
            action: "shift ownership of",
            path: path.to_owned(),
            reason: "the tree is deeper than 512 levels".to_owned(),
        });
    }
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| io("read", path, e))? {
        let entry = entry.map_err(|e| io("read", path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((OsStr::from_bytes(name).to_owned(), entry.file_type()));
        }
    }
    for (name, kind) in names {
        let child_path = path.join(&name);
        let cname = CString::new(name.as_bytes()).map_err(|_| Error::Refused {
            action: "shift ownership of",
            path: child_path.clone(),
            reason: "NUL in name".to_owned(),
        })?;
        shift_one(dir, &cname, &child_path, maps)?;
        if kind == rustix::fs::FileType::Directory {
            if device(dir, &cname, &child_path)? != fence {
                continue; // a mount point: not ours to change
            }
            let child = rustix::fs::openat(
                dir,
                &cname,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
                Mode::empty(),
            )
            .map_err(|e| io("open", &child_path, e))?;
            shift_dir(&child, &child_path, maps, fence, depth + 1)?;
        }
    }
    Ok(())
}

/// Write the maps of a child just cloned into a new user namespace.
pub fn write_maps(pid: i32, maps: &IdMaps) -> std::result::Result<(), String> {
    for (file, text) in [
        ("uid_map", IdMaps::proc_text(&maps.uid)),
        ("gid_map", IdMaps::proc_text(&maps.gid)),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| format!("write {path}: {e}"))?;
    }
    Ok(())
}

/// In the child, once its maps are written: become root of the namespace.
pub fn become_root() -> std::result::Result<(), nix::errno::Errno> {
    let zero_gid = nix::unistd::Gid::from_raw(0);
    let zero_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(zero_gid, zero_gid, zero_gid)?;
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresuid(zero_uid, zero_uid, zero_uid)
}

/// The host uid of the container's root must reach the rootfs: every directory
/// above it must be searchable by others (or owned by that uid).
pub fn check_reachable(rootfs: &Path, host_uid: u32) -> std::result::Result<(), String> {
    let mut dir = rootfs.parent();
    while let Some(d) = dir {
        if let Ok(meta) = std::fs::metadata(d) {
            use std::os::unix::fs::MetadataExt;
            if meta.mode() & 0o001 == 0 && meta.uid() != host_uid {
                return Err(format!(
                    "the container's root (host uid {host_uid}) cannot reach its rootfs: {} is not searchable by others; chmod o+x {0}",
                    d.display()
                ));
            }
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_ranges_do_not_overlap_what_is_used() {
        let first = resolve(&UsernsSpec::Auto, &[]).unwrap();
        assert_eq!(first.uid[0].host, 100_000);
        let second = resolve(&UsernsSpec::Auto, std::slice::from_ref(&first)).unwrap();
        assert_eq!(second.uid[0].host, 165_536);
        assert_eq!(IdMaps::proc_text(&second.uid), "0 165536 65536\n");
        assert_eq!(map_id(&second.uid, 1000), Some(166_536));
        assert_eq!(map_id(&second.uid, 70_000), None);
    }
}
