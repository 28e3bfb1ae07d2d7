//! Unpacking rootfs archives: tar, tar.gz and tar.zst (told apart by their magic
//! bytes, not their names), refusing any entry that would land outside the rootfs,
//! and with OCI whiteouts either applied (a layer merged onto the ones below it)
//! or kept as overlayfs marks (a layer unpacked alone, to be an overlay lower).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::tar_guard::TarGuard;
use crate::error::{Error, Result};
use crate::remove;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn archive_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Archive {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// What `.wh.*` entries mean for an unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whiteouts {
    /// A plain archive: they are ordinary files.
    Keep,
    /// A layer unpacked onto the layers below it: they remove what those made.
    Apply,
    /// A layer unpacked alone into an empty directory, to be an overlayfs lower:
    /// `.wh.NAME` becomes the character device 0:0 `NAME`, `.wh..wh..opq` the
    /// xattr `trusted.overlay.opaque=y` on its directory, as overlayfs reads them.
    Overlay,
}

/// `tarball:` sources.
pub fn tarball(archive: &Path, rootfs: &Path) -> Result<()> {
    let progress = Progress::new(archive)?;
    unpack_layer(archive, rootfs, Whiteouts::Keep, &progress)?;
    progress.finish();
    Ok(())
}

/// One OCI layer, with whiteouts. `progress` spans all layers.
pub fn layer(blob: &Path, rootfs: &Path, progress: &Progress) -> Result<()> {
    unpack_layer(blob, rootfs, Whiteouts::Apply, progress)
}

/// One OCI layer alone into the empty directory `dir`, in overlayfs's lower format.
pub(crate) fn overlay_layer(blob: &Path, dir: &Path) -> Result<()> {
    unpack_layer(blob, dir, Whiteouts::Overlay, &Progress::hidden())
}

/// Opens `path`, undoing gzip or zstd compression found by magic bytes.
fn open_decompressed(path: &Path, progress: &Progress) -> Result<Box<dyn Read>> {
    let mut file =
        File::open(path).map_err(|e| archive_error(path, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic)
        .map_err(|e| archive_error(path, format!("cannot read: {e}")))?;
    let file = File::open(path).map_err(|e| archive_error(path, format!("cannot open: {e}")))?;
    let counted = BufReader::new(progress.wrap(file));
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(TarGuard::new(flate2::read::MultiGzDecoder::new(counted))),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(TarGuard::new(
            zstd::stream::read::Decoder::with_buffer(counted)
                .map_err(|e| archive_error(path, format!("not a zstd stream: {e}")))?,
        )),
        _ => Box::new(TarGuard::new(counted)),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            read => n += read,
        }
    }
    Ok(n)
}

/// A relative path of plain components, or why not.
fn checked_path(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    Ok(clean)
}

fn unpack_layer(
    archive: &Path,
    rootfs: &Path,
    whiteouts: Whiteouts,
    progress: &Progress,
) -> Result<()> {
    if whiteouts == Whiteouts::Apply {
        // Whiteouts hide what lower layers made; apply them before this layer's own
        // files, which an opaque directory keeps. So: one pass for them first.
        apply_whiteouts(archive, rootfs)?;
    }
    let mut tar = tar::Archive::new(open_decompressed(archive, progress)?);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(true);
    tar.set_overwrite(true);
    let entries = tar
        .entries()
        .map_err(|e| archive_error(archive, format!("not a tar archive: {e}")))?;
    // Overlay marks are made once every entry is out, so an entry's directory exists.
    let mut marks = Vec::new();
    for entry in entries {
        let mut entry =
            entry.map_err(|e| archive_error(archive, format!("corrupt archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| archive_error(archive, format!("bad entry name: {e}")))?
            .into_owned();
        let path = checked_path(&raw).map_err(|why| {
            archive_error(
                archive,
                format!(
                    "entry {} would be unpacked outside the rootfs: {why}",
                    raw.display()
                ),
            )
        })?;
        if path.as_os_str().is_empty() {
            continue;
        }
        if whiteouts != Whiteouts::Keep
            && path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|name| name.starts_with(WHITEOUT))
        {
            if whiteouts == Whiteouts::Overlay {
                marks.push(path);
            }
            continue;
        }
        if whiteouts == Whiteouts::Overlay {
            refuse_overlay_xattrs(archive, &raw, &mut entry)?;
        }
        // unpack_in refuses (returns false) when a symlink in the way would take the
        // entry outside `rootfs`.
        let inside = entry.unpack_in(rootfs).map_err(|e| {
            archive_error(
                archive,
                format!(
                    "cannot unpack {}: {}",
                    raw.display(),
                    crate::error::with_causes(&e)
                ),
            )
        })?;
        if !inside {
            return Err(archive_error(
                archive,
                format!(
                    "entry {} would be unpacked outside the rootfs through a symlink",
                    raw.display()
                ),
            ));
        }
    }
    for mark in marks {
        overlay_mark(archive, rootfs, &mark)?;
    }
    Ok(())
}

/// overlayfs reads `trusted.overlay.*` xattrs of its lowers (opaque, redirect,
/// metacopy...): only berth may write them, never an image.
fn refuse_overlay_xattrs<R: Read>(
    archive: &Path,
    raw: &Path,
    entry: &mut tar::Entry<R>,
) -> Result<()> {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Ok(());
    };
    for extension in extensions.flatten() {
        let key = extension.key_bytes();
        if key.starts_with(b"SCHILY.xattr.trusted.overlay.") {
            return Err(archive_error(
                archive,
                format!(
                    "entry {} carries an overlayfs xattr ({}); an image may not set those",
                    raw.display(),
                    String::from_utf8_lossy(key)
                ),
            ));
        }
    }
    Ok(())
}

/// The overlayfs form of one whiteout entry `path` (already checked: relative,
/// no `..`), made inside `rootfs` without following any symlink out of it.
fn overlay_mark(archive: &Path, rootfs: &Path, path: &Path) -> Result<()> {
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new(""));
    let dir = make_dirs_in_root(rootfs, parent)?;
    let shown = rootfs.join(path);
    let failed = |what: &str, e: rustix::io::Errno| {
        archive_error(archive, format!("cannot {what} {}: {e}", shown.display()))
    };
    if name == OPAQUE {
        return rustix::fs::fsetxattr(
            &dir,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| failed("mark opaque", e));
    }
    let hidden = &name[WHITEOUT.len()..];
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        return Err(archive_error(
            archive,
            format!("whiteout {} names no entry", path.display()),
        ));
    }
    rustix::fs::mknodat(
        &dir,
        hidden,
        rustix::fs::FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .map_err(|e| failed("make the whiteout", e))
}

/// Opens `rootfs/relative` as a directory, making what is missing (0755), every
/// step resolved inside `rootfs` (RESOLVE_IN_ROOT).
fn make_dirs_in_root(rootfs: &Path, relative: &Path) -> Result<OwnedFd> {
    let mut walked = PathBuf::new();
    let mut dir = open_in_root(rootfs, &walked)?
        .ok_or_else(|| archive_error(rootfs, "the directory is gone"))?;
    for part in relative.components() {
        let Component::Normal(part) = part else {
            continue;
        };
        walked.push(part);
        if let Some(next) = open_in_root(rootfs, &walked)? {
            dir = next;
            continue;
        }
        match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(archive_error(
                    &rootfs.join(&walked),
                    format!("cannot make the directory: {e}"),
                ));
            }
        }
        dir = open_in_root(rootfs, &walked)?.ok_or_else(|| {
            archive_error(
                &rootfs.join(&walked),
                "is not a directory (a whiteout's parent)",
            )
        })?;
    }
    Ok(dir)
}

fn apply_whiteouts(archive: &Path, rootfs: &Path) -> Result<()> {
    // This pass reads the layer a second time; only the unpacking pass counts.
    let silent = Progress::hidden();
    let mut tar = tar::Archive::new(open_decompressed(archive, &silent)?);
    let entries = tar
        .entries()
        .map_err(|e| archive_error(archive, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| archive_error(archive, format!("corrupt archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| archive_error(archive, format!("bad entry name: {e}")))?
            .into_owned();
        let Some(name) = raw.file_name().and_then(OsStr::to_str) else {
            continue;
        };
        if !name.starts_with(WHITEOUT) {
            continue;
        }
        let path = checked_path(&raw).map_err(|why| {
            archive_error(
                archive,
                format!("whiteout {} escapes the rootfs: {why}", raw.display()),
            )
        })?;
        let hidden = &name[WHITEOUT.len()..];
        if name != OPAQUE && matches!(hidden, "" | "." | "..") {
            // `.wh...` would remove the rootfs's parent's contents: the container's
            // own directory, outside its root.
            return Err(archive_error(
                archive,
                format!("whiteout {} names no entry", raw.display()),
            ));
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        let Some(dir) = open_in_root(rootfs, parent)? else {
            continue; // nothing below to hide
        };
        let shown = rootfs.join(parent);
        if name == OPAQUE {
            remove::remove_contents_of(&dir, &shown)?;
        } else {
            remove::remove_entry(&dir, &shown, OsStr::new(hidden))?;
        }
    }
    Ok(())
}

/// Opens `rootfs/relative` as a directory, resolving every symlink as if `rootfs`
/// were `/` (openat2 RESOLVE_IN_ROOT), so an image's `a -> /` can never reach the host.
fn open_in_root(rootfs: &Path, relative: &Path) -> Result<Option<OwnedFd>> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| archive_error(rootfs, format!("cannot open: {e}")))?;
    let target = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    match rustix::fs::openat2(
        &root,
        target,
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(archive_error(
            &rootfs.join(relative),
            format!("cannot open: {e}"),
        )),
    }
}

/// A progress bar that appears only on a terminal, and only once unpacking has
/// taken more than a moment.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

const SHOW_AFTER: Duration = Duration::from_millis(700);

impl Progress {
    pub fn new(first: &Path) -> Result<Progress> {
        let total = std::fs::metadata(first).map(|m| m.len()).unwrap_or(0);
        Ok(Self::with_total(total))
    }

    pub fn with_total(total: u64) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("unpacking {bar:30} {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    fn hidden() -> Progress {
        Self::with_total(0)
    }

    fn wrap<R: Read>(&self, reader: R) -> Counted<R> {
        Counted {
            inner: reader,
            progress: self.clone(),
        }
    }

    fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
        if self.bar.is_hidden()
            && self.started.elapsed() > SHOW_AFTER
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
            && self.bar.length().unwrap_or(0) > 0
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

struct Counted<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_stay_relative_and_downward() {
        assert_eq!(
            checked_path(Path::new("./usr/bin/sh")),
            Ok(PathBuf::from("usr/bin/sh"))
        );
        assert_eq!(
            checked_path(Path::new("../etc/passwd")),
            Err("it contains '..'")
        );
        assert_eq!(
            checked_path(Path::new("a/../../b")),
            Err("it contains '..'")
        );
        assert_eq!(
            checked_path(Path::new("/etc/passwd")),
            Err("it is an absolute path")
        );
    }

    /// Found by the unpack fuzz target: `.wh...` in a layer applied onto a rootfs
    /// emptied the rootfs's parent (a container's directory: its config, its status).
    #[test]
    fn a_whiteout_of_dot_dot_is_refused_and_the_rootfs_parent_survives() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let container = dir.path().join("container");
        let rootfs = container.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(container.join("config.json"), b"{}").unwrap_or_else(|e| panic!("{e}"));
        for whiteout in [".wh...", ".wh..", "etc/.wh...", ".wh."] {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            header.as_old_mut().name[..whiteout.len()].copy_from_slice(whiteout.as_bytes());
            header.set_cksum();
            builder
                .append(&header, &[][..])
                .unwrap_or_else(|e| panic!("{e}"));
            let archive = dir.path().join("layer.tar");
            let bytes = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&archive, bytes).unwrap_or_else(|e| panic!("{e}"));
            let err = match layer(&archive, &rootfs, &Progress::hidden()) {
                Ok(()) => panic!("{whiteout} was applied"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("names no entry"), "{whiteout}: {err}");
            assert!(container.join("config.json").exists(), "{whiteout}");
            assert!(rootfs.join("etc").exists(), "{whiteout}");
        }
    }

    /// Found by the fuzz seeds (runtime/tests/fuzz.rs, "huge headers"): the tar
    /// crate read a declared long name whole, 256 MiB for a 1.2 MB layer.
    #[test]
    fn a_layer_declaring_a_huge_long_name_is_refused_unread() {
        use std::io::Write;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(64 << 20);
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(header.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..64 {
            gz.write_all(&[b'a'; 1 << 20])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let layer = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let archive = dir.path().join("layer.tar.gz");
        std::fs::write(&archive, layer).unwrap_or_else(|e| panic!("{e}"));
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap_or_else(|e| panic!("{e}"));
        let err = match tarball(&archive, &rootfs) {
            Ok(()) => panic!("a 64 MiB long name was unpacked"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("a GNU long name of 67108864 bytes; berth reads at most 1048576"),
            "{err}"
        );
    }
}
