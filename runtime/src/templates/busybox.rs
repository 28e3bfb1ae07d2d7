//! `template: busybox`: the host's static busybox and its applet links, like LXC's
//! busybox template.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Context, etc};
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

pub fn build(ctx: &Context, binary: &Path) -> Result<()> {
    let rootfs = ctx.rootfs;
    etc::minimal(rootfs, ctx.hostname, "/bin/sh")?;
    etc::dirs(
        rootfs,
        &[
            ("bin", 0o755),
            ("sbin", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
        ],
    )?;
    let installed = rootfs.join("bin/busybox");
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
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        match std::os::unix::fs::symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create symlink", &link)(e)),
        }
    }
    etc::write(
        rootfs,
        "etc/os-release",
        "NAME=\"busybox\"\nID=busybox\nVARIANT_ID=berth-busybox\n",
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
