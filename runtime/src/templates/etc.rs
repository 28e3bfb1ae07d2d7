//! The small writable /etc and the empty top-level directories a template makes.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::{Result, io};

/// Make `rootfs/<dir>` for each, with explicit modes (the umask of a daemon is not
/// ours to change: it is process-wide).
pub fn dirs(rootfs: &Path, dirs: &[(&str, u32)]) -> Result<()> {
    for (dir, mode) in dirs {
        let path = rootfs.join(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(*mode)
            .create(&path)
            .map_err(io("create", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &path))?;
    }
    Ok(())
}

pub fn write(rootfs: &Path, file: &str, contents: &str, mode: u32) -> Result<()> {
    let path = rootfs.join(file);
    std::fs::write(&path, contents).map_err(io("write", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &path))
}

/// What every built rootfs gets: the top-level directories (mount points for
/// /proc, /sys, /dev among them) and a minimal /etc: passwd, group, hosts,
/// hostname, resolv.conf, nsswitch.conf.
pub fn minimal(rootfs: &Path, hostname: &str, shell: &str) -> Result<()> {
    dirs(
        rootfs,
        &[
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("var/log", 0o755),
            ("run", 0o755),
            ("root", 0o700),
            ("home", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("mnt", 0o755),
        ],
    )?;
    write(
        rootfs,
        "etc/passwd",
        &format!(
            "root:x:0:0:root:/root:{shell}\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        0o644,
    )?;
    write(rootfs, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    write(
        rootfs,
        "etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
        0o644,
    )?;
    write(rootfs, "etc/hostname", &format!("{hostname}\n"), 0o644)?;
    // The host's resolvers, where it has a plain file; networking decides at start.
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write(rootfs, "etc/resolv.conf", &resolv, 0o644)?;
    write(
        rootfs,
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
        0o644,
    )
}
