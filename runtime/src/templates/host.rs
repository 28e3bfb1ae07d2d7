//! `template: host`: the host's own /usr, /bin, /lib*, /sbin, bound read-only at
//! start (in the spirit of systemd-nspawn and LXC's sshd template), plus a small
//! writable /etc, /tmp, /var, /run of the container's own. Nothing is copied but
//! a few small /etc files, so it takes milliseconds.

use std::path::{Path, PathBuf};

use super::{Built, Context, etc};
use crate::error::{Result, io};

/// Host directories shared read-only. Where the host has a symlink instead
/// (merged /usr: /bin -> usr/bin), the rootfs gets the same symlink.
const SHARED: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

pub fn build(ctx: &Context) -> Result<Built> {
    build_from(Path::new("/"), ctx)
}

fn build_from(host: &Path, ctx: &Context) -> Result<Built> {
    let rootfs = ctx.rootfs;
    let mut host_binds = Vec::new();
    for dir in SHARED {
        let on_host = host.join(dir);
        let inside = rootfs.join(dir);
        match std::fs::symlink_metadata(&on_host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&on_host).map_err(io("read link", &on_host))?;
                std::os::unix::fs::symlink(&target, &inside)
                    .map_err(io("create symlink", &inside))?;
            }
            Ok(meta) if meta.is_dir() => {
                etc::dirs(rootfs, &[(dir, 0o755)])?;
                host_binds.push(PathBuf::from("/").join(dir));
            }
            _ => {}
        }
    }
    etc::minimal(rootfs, ctx.hostname, "/bin/sh")?;
    etc::dirs(rootfs, &[("var/tmp", 0o1777), ("srv", 0o755)])?;
    let os = std::fs::read_to_string(host.join("etc/os-release")).unwrap_or_default();
    etc::write(
        rootfs,
        "etc/os-release",
        &format!("{os}VARIANT=\"berth host template\"\nVARIANT_ID=berth-host\n"),
        0o644,
    )?;
    copy_host_links(host, rootfs)?;
    // Debian's alternatives (/usr/bin/awk -> /etc/alternatives/awk): hundreds of
    // symlinks, most of a create's time if copied; bound read-only at start like
    // /usr, whose choices they are.
    if std::fs::symlink_metadata(host.join("etc/alternatives")).is_ok_and(|m| m.is_dir()) {
        etc::dirs(rootfs, &[("etc/alternatives", 0o755)])?;
        host_binds.push(PathBuf::from("/etc/alternatives"));
    }
    Ok(Built {
        host_binds,
        ..Built::default()
    })
}

/// The small parts of the host's /etc that its /usr depends on: the dynamic
/// linker's cache and the time zone. Symlinks are copied as symlinks; nothing else
/// is followed.
fn copy_host_links(host: &Path, rootfs: &Path) -> Result<()> {
    let etc_host = host.join("etc");
    for file in ["ld.so.cache", "ld.so.conf"] {
        let from = etc_host.join(file);
        if std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            let to = rootfs.join("etc").join(file);
            std::fs::copy(&from, &to).map_err(io("copy", &to))?;
        }
    }
    let localtime = etc_host.join("localtime");
    if let Ok(target) = std::fs::read_link(&localtime) {
        let to = rootfs.join("etc/localtime");
        std::os::unix::fs::symlink(target, &to).map_err(io("create symlink", &to))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_merged_usr_links_and_marks_bind_points() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("usr/bin")).unwrap();
        std::fs::create_dir_all(host.path().join("lib64")).unwrap();
        std::fs::create_dir_all(host.path().join("etc/alternatives")).unwrap();
        std::os::unix::fs::symlink("usr/bin", host.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/mawk", host.path().join("etc/alternatives/awk"))
            .unwrap();
        std::fs::write(host.path().join("etc/os-release"), "ID=debian\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let ctx = Context {
            name: "web",
            hostname: "web",
            dir: dir.path(),
            rootfs: &rootfs,
            log: &dir.path().join("log"),
            cgroup_parent: "berth",
            id_maps: None,
            copy_layers: false,
            templates: &dir.path().join("templates"),
        };
        let built = build_from(host.path(), &ctx).unwrap();
        assert_eq!(
            built.host_binds,
            [
                PathBuf::from("/usr"),
                PathBuf::from("/lib64"),
                PathBuf::from("/etc/alternatives")
            ]
        );
        assert_eq!(
            std::fs::read_link(rootfs.join("bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert!(rootfs.join("usr").is_dir() && rootfs.join("lib64").is_dir());
        assert!(!rootfs.join("sbin").exists());
        // A mount point for the host's, nothing copied into it.
        assert_eq!(
            std::fs::read_dir(rootfs.join("etc/alternatives"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
            "web\n"
        );
        assert!(
            std::fs::read_to_string(rootfs.join("etc/os-release"))
                .unwrap()
                .starts_with("ID=debian\n")
        );
        let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&tmp.permissions()) & 0o7777,
            0o1777
        );
    }
}
