//! `template: busybox`: the host's static busybox and its applet links, like LXC's
//! busybox template.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Built, Context, SharedBind, etc};
use crate::error::{Error, Result, io};

const INSTALL: &str = "install a static busybox (Debian/Ubuntu: apt-get install busybox-static)";

fn error(message: String) -> Error {
    Error::Template {
        template: "busybox".to_owned(),
        message,
    }
}

/// The first busybox on PATH, then in /bin and /usr/bin; it must be static, since
/// nothing else will be in the rootfs.
pub fn find() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("busybox"));
    for candidate in candidates {
        if candidate.is_file() {
            return match is_dynamic(&candidate) {
                Ok(false) => Ok(candidate),
                Ok(true) => Err(error(format!(
                    "{} is dynamically linked and would not run alone in a rootfs; {INSTALL}",
                    candidate.display()
                ))),
                Err(e) => Err(error(format!("cannot read {}: {e}", candidate.display()))),
            };
        }
    }
    Err(error(format!(
        "no busybox found on PATH, in /bin or in /usr/bin; {INSTALL}"
    )))
}

/// Does the ELF file at `path` ask for a program interpreter (PT_INTERP)?
fn is_dynamic(path: &Path) -> std::io::Result<bool> {
    let mut header = [0u8; 64];
    let mut file = std::fs::File::open(path)?;
    file.read_exact(&mut header)?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a little-endian ELF file",
        )
    };
    if &header[..4] != b"\x7fELF" || header[5] != 1 {
        return Err(bad());
    }
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([header[at], header[at + 1]]));
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes([
            header[at],
            header[at + 1],
            header[at + 2],
            header[at + 3],
        ]))
    };
    let (phoff, phentsize, phnum) = match header[4] {
        1 => (u32_at(28), u16_at(42), u16_at(44)),
        2 => (u32_at(32) | (u32_at(36) << 32), u16_at(54), u16_at(56)),
        _ => return Err(bad()),
    };
    if !(4..=256).contains(&phentsize) || phnum > 4096 {
        return Err(bad());
    }
    let mut table = vec![0u8; usize::try_from(phentsize * phnum).map_err(|_| bad())?];
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(phoff))?;
    file.read_exact(&mut table)?;
    const PT_INTERP: u32 = 3;
    Ok(table
        .chunks_exact(usize::try_from(phentsize).map_err(|_| bad())?)
        .any(|entry| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) == PT_INTERP))
}

/// Where a busybox's applets go: `/bin`, `/sbin` and `/usr`, one shared read-only
/// skeleton per busybox binary, bound at start (as the host template binds the
/// host's /usr), so that a create makes a dozen inodes, not ~270 applet links.
const SHARED: &[&str] = &["bin", "sbin", "usr"];

pub fn build(ctx: &Context, binary: &Path) -> Result<Built> {
    let rootfs = ctx.rootfs;
    etc::minimal(rootfs, ctx.hostname, "/bin/sh")?;
    etc::write(
        rootfs,
        "etc/os-release",
        "NAME=\"busybox\"\nID=busybox\nVARIANT_ID=berth-busybox\n",
        0o644,
    )?;
    // In a user namespace the rootfs is shifted to the container's ids; a shared
    // skeleton would show up owned by nobody. Such a container gets its own copy.
    if ctx.id_maps.is_some() {
        fill(rootfs, binary)?;
        return Ok(Built::default());
    }
    let skeleton = skeleton(ctx.templates, binary)?;
    etc::dirs(
        rootfs,
        &SHARED.iter().map(|d| (*d, 0o755)).collect::<Vec<_>>(),
    )?;
    Ok(Built {
        shared_binds: SHARED
            .iter()
            .map(|d| SharedBind {
                source: skeleton.join(d),
                target: PathBuf::from("/").join(d),
            })
            .collect(),
        ..Built::default()
    })
}

/// The skeleton of `binary` under `templates`: `busybox-<key>/`, the key a hash of
/// the binary's path, device, inode, size and change time, so an upgraded busybox
/// gets a new one. Made once, in a temporary directory renamed into place, so a
/// create never sees half of one; never changed after.
fn skeleton(templates: &Path, binary: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(binary).map_err(io("stat", binary))?;
    let key = crate::image::sha256_of(
        format!(
            "{}\0{}\0{}\0{}\0{}.{}",
            binary.display(),
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.ctime(),
            meta.ctime_nsec()
        )
        .as_bytes(),
    );
    let key = key.trim_start_matches("sha256:");
    let path = templates.join(format!("busybox-{}", &key[..16]));
    if path.is_dir() {
        return Ok(path);
    }
    etc::dirs(templates, &[("", 0o711)])?;
    let made = crate::image::blob::temp_name(templates, ".busybox");
    std::fs::create_dir(&made).map_err(io("create", &made))?;
    let filled =
        std::fs::set_permissions(&made, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io("chmod", &made))
            .and_then(|()| fill(&made, binary));
    if let Err(e) = filled {
        let _ = crate::remove::remove_tree(&made);
        return Err(e);
    }
    match std::fs::rename(&made, &path) {
        Ok(()) => {
            prune(templates, &path);
            Ok(path)
        }
        // Another create made it meanwhile: use theirs.
        Err(_) if path.is_dir() => {
            let _ = crate::remove::remove_tree(&made);
            Ok(path)
        }
        Err(e) => {
            let _ = crate::remove::remove_tree(&made);
            Err(io("rename into place", &path)(e))
        }
    }
}

/// Remove the skeletons of older busyboxes that no container binds (by device
/// and inode of what each container's config names).
fn prune(templates: &Path, current: &Path) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let containers = templates.with_file_name("containers");
    let used: std::collections::HashSet<(u64, u64)> = std::fs::read_dir(&containers)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| crate::config::SavedConfig::load(&e.path().join("config.json")).ok())
        .flat_map(|c| c.shared_binds)
        .filter_map(|b| b.source.parent().and_then(id))
        .collect();
    let Ok(entries) = std::fs::read_dir(templates) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry.file_name().to_string_lossy().starts_with("busybox-")
            && path != current
            && id(&path).is_some_and(|i| !used.contains(&i));
        if old && let Err(e) = crate::remove::remove_tree(&path) {
            tracing::warn!(
                "cannot remove the old busybox skeleton {}: {e}",
                path.display()
            );
        }
    }
}

/// `dir/bin/busybox` and its applet links, as `busybox --list-full` names them.
fn fill(dir: &Path, binary: &Path) -> Result<()> {
    etc::dirs(
        dir,
        &[
            ("bin", 0o755),
            ("sbin", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
        ],
    )?;
    let installed = dir.join("bin/busybox");
    std::fs::copy(binary, &installed).map_err(io("copy", &installed))?;
    std::fs::set_permissions(
        &installed,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(io("chmod", &installed))?;
    let output = Command::new(binary)
        .arg("--list-full")
        .env_clear()
        .output()
        .map_err(io("run", binary))?;
    if !output.status.success() {
        return Err(error(format!(
            "{} --list-full failed: {}",
            binary.display(),
            output.status
        )));
    }
    for applet in String::from_utf8_lossy(&output.stdout).lines() {
        // Lines are relative paths such as "bin/sh" or "usr/bin/awk".
        let applet = Path::new(applet.trim());
        if applet.as_os_str().is_empty()
            || applet.is_absolute()
            || applet
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || applet == Path::new("bin/busybox")
        {
            continue;
        }
        let link = dir.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        match std::os::unix::fs::symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create symlink", &link)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_skeleton_per_binary_and_old_ones_go_unless_a_container_binds_them() {
        let Ok(binary) = find() else {
            eprintln!("skipped: no static busybox (apt-get install busybox-static)");
            return;
        };
        let state = tempfile::tempdir().unwrap();
        let templates = state.path().join("templates");
        let first = skeleton(&templates, &binary).unwrap();
        assert_eq!(skeleton(&templates, &binary).unwrap(), first);
        assert!(first.join("bin/busybox").is_file() && first.join("bin/sh").is_symlink());
        // Two older skeletons, one still bound by a container.
        let (kept, gone) = (
            templates.join("busybox-kept"),
            templates.join("busybox-gone"),
        );
        for old in [&kept, &gone] {
            std::fs::create_dir_all(old.join("bin")).unwrap();
        }
        let container = state.path().join("containers/web");
        std::fs::create_dir_all(&container).unwrap();
        let config = serde_json::json!({
            "container": serde_json::to_value(berth_manifests::parse_str(
                Path::new("web.yaml"),
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata: {name: web}\nspec: {command: [/bin/sh]}\n",
            ).containers[0].clone()).unwrap(),
            "rootfs": container.join("rootfs"),
            "sharedBinds": [{"source": kept.join("bin"), "target": "/bin"}],
        });
        std::fs::write(container.join("config.json"), config.to_string()).unwrap();
        std::fs::remove_dir_all(&first).unwrap();
        let again = skeleton(&templates, &binary).unwrap();
        assert_eq!(again, first);
        assert!(kept.is_dir(), "a skeleton a container binds was removed");
        assert!(!gone.exists(), "an unused old skeleton was kept");
    }

    #[test]
    fn tells_dynamic_from_static_binaries() {
        // /bin/sh is dynamic on every glibc host; a file that is not ELF is an error.
        assert!(is_dynamic(Path::new("/bin/sh")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, vec![b'x'; 100]).unwrap();
        assert!(is_dynamic(&text).is_err());
    }
}
