//! The fallback where overlayfs cannot serve: the layers copied into the rootfs,
//! bottom first, doing what overlayfs would. A 0:0 character device is a whiteout
//! (it removes what lower layers put there); a directory marked
//! `trusted.overlay.opaque=y` hides what lower layers had in it. Files are
//! reflinked where the filesystem can (FICLONE), else copied. Every step works
//! on directory fds and never follows a symlink, in the layers or in the rootfs.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Statx, StatxFlags, Timespec, Timestamps};

use crate::error::{Error, Result};
use crate::remove;

const OPAQUE: &str = "trusted.overlay.opaque";
/// overlayfs's own bookkeeping, which means nothing outside an overlay.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
const MAX_DEPTH: usize = 512;
const MAX_LINKS_HELD: usize = 256;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |e| Error::Io {
        op,
        path: path.to_owned(),
        source: std::io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

fn open_dir(at: &OwnedFd, name: &CStr, path: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(io("open", path))
}

/// Apply `lowers` (bottom first) to the empty directory `rootfs`.
pub fn apply(lowers: &[std::path::PathBuf], rootfs: &Path) -> Result<()> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(io("open", rootfs))?;
    for lower in lowers {
        let layer = rustix::fs::open(
            lower,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(io("open", lower))?;
        let mut copy = Copy {
            links: HashMap::new(),
        };
        copy.dir(&layer, lower, &root, rootfs, 0)?;
        let st = stat(&layer, c"", lower)?;
        set_owner_and_mode(&root, c"", rootfs, &st)?;
    }
    Ok(())
}

/// One layer's pass: hard links within it are made again as links.
struct Copy {
    /// (device, inode) of a multiply linked file already copied → the copy.
    links: HashMap<(u32, u32, u64), OwnedFd>,
}

fn stat(dir: &OwnedFd, name: &CStr, path: &Path) -> Result<Statx> {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS,
    )
    .map_err(io("stat", path))
}

/// What is at `name` in the rootfs, if anything.
fn existing(dir: &OwnedFd, name: &CStr, path: &Path) -> Result<Option<FileType>> {
    match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(u32::from(st.stx_mode)))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(io("stat", path)(e)),
    }
}

impl Copy {
    fn dir(
        &mut self,
        src: &OwnedFd,
        src_path: &Path,
        dst: &OwnedFd,
        dst_path: &Path,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::Refused {
                action: "copy",
                path: src_path.to_owned(),
                reason: "the layer is deeper than 512 levels".to_owned(),
            });
        }
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(src).map_err(io("read", src_path))? {
            let entry = entry.map_err(io("read", src_path))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort();
        for name in names {
            self.entry(src, src_path, dst, dst_path, &name, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        src: &OwnedFd,
        src_path: &Path,
        dst: &OwnedFd,
        dst_path: &Path,
        name: &CString,
        depth: usize,
    ) -> Result<()> {
        let os_name = OsStr::from_bytes(name.as_bytes());
        let (src_child, dst_child) = (src_path.join(os_name), dst_path.join(os_name));
        let st = stat(src, name, &src_child)?;
        let kind = FileType::from_raw_mode(u32::from(st.stx_mode));
        let here = existing(dst, name, &dst_child)?;
        if kind == FileType::CharacterDevice && st.stx_rdev_major == 0 && st.stx_rdev_minor == 0 {
            // A whiteout: what lower layers had here is gone.
            return remove::remove_entry(dst, dst_path, os_name);
        }
        if kind == FileType::Directory {
            let from = open_dir(src, name, &src_child)?;
            match here {
                Some(FileType::Directory) => {}
                Some(_) => {
                    remove::remove_entry(dst, dst_path, os_name)?;
                    mkdir(dst, name, &dst_child)?;
                }
                None => mkdir(dst, name, &dst_child)?,
            }
            let to = open_dir(dst, name, &dst_child)?;
            if here == Some(FileType::Directory) && is_opaque(&from) {
                remove::remove_contents_of(&to, &dst_child)?;
            }
            self.dir(&from, &src_child, &to, &dst_child, depth + 1)?;
            copy_xattrs(&from, &to, &dst_child)?;
            set_owner_and_mode(&to, c"", &dst_child, &st)?;
            return set_times(dst, name, &dst_child, &st);
        }
        if here.is_some() {
            remove::remove_entry(dst, dst_path, os_name)?;
        }
        let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
        if st.stx_nlink > 1
            && let Some(first) = self.links.get(&key)
        {
            return rustix::fs::linkat(first, c"", dst, name, AtFlags::EMPTY_PATH)
                .map_err(io("link", &dst_child));
        }
        match kind {
            FileType::RegularFile => {
                let copied = copy_file(src, name, &src_child, dst, &dst_child, &st)?;
                // An fd per linked file: bounded, past which links become copies.
                if st.stx_nlink > 1 && self.links.len() < MAX_LINKS_HELD {
                    self.links.insert(key, copied);
                }
                return set_times(dst, name, &dst_child, &st);
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name, Vec::new())
                    .map_err(io("read", &src_child))?;
                rustix::fs::symlinkat(target.as_c_str(), dst, name)
                    .map_err(io("create", &dst_child))?;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                rustix::fs::mknodat(
                    dst,
                    name,
                    kind,
                    Mode::from_raw_mode(u32::from(st.stx_mode) & 0o777),
                    rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
                )
                .map_err(io("create", &dst_child))?;
            }
            // A socket in a layer is a leftover of whoever built it: nothing to copy.
            _ => return Ok(()),
        }
        rustix::fs::chownat(
            dst,
            name,
            Some(rustix::fs::Uid::from_raw(st.stx_uid)),
            Some(rustix::fs::Gid::from_raw(st.stx_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io("chown", &dst_child))?;
        set_times(dst, name, &dst_child, &st)
    }
}

fn mkdir(dst: &OwnedFd, name: &CStr, path: &Path) -> Result<()> {
    rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700)).map_err(io("create", path))
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut value = [0u8; 2];
    matches!(rustix::fs::fgetxattr(dir, OPAQUE, &mut value[..]), Ok(1) if value[0] == b'y')
}

/// Reflink `src/name` into a new `dst/name`, or copy it; returns the new file.
fn copy_file(
    src: &OwnedFd,
    name: &CStr,
    src_path: &Path,
    dst: &OwnedFd,
    dst_path: &Path,
    st: &Statx,
) -> Result<OwnedFd> {
    let from = rustix::fs::openat(
        src,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open", src_path))?;
    let to = rustix::fs::openat(
        dst,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io("create", dst_path))?;
    let to = if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        to
    } else {
        // Another filesystem, or one without reflinks: the bytes themselves
        // (std uses copy_file_range, in the kernel, where it can).
        let mut reader = std::fs::File::from(from.try_clone().map_err(|e| Error::Io {
            op: "open",
            path: src_path.to_owned(),
            source: e,
        })?);
        let mut writer = std::fs::File::from(to);
        std::io::copy(&mut reader, &mut writer).map_err(|e| Error::Io {
            op: "copy",
            path: dst_path.to_owned(),
            source: e,
        })?;
        OwnedFd::from(writer)
    };
    copy_xattrs(&from, &to, dst_path)?;
    set_owner_and_mode(&to, c"", dst_path, st)?;
    Ok(to)
}

/// Owner first, then mode: chown clears set-uid and set-gid bits.
fn set_owner_and_mode(fd: &OwnedFd, name: &CStr, path: &Path, st: &Statx) -> Result<()> {
    rustix::fs::chownat(
        fd,
        name,
        Some(rustix::fs::Uid::from_raw(st.stx_uid)),
        Some(rustix::fs::Gid::from_raw(st.stx_gid)),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io("chown", path))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(u32::from(st.stx_mode) & 0o7777))
        .map_err(io("chmod", path))
}

fn set_times(dir: &OwnedFd, name: &CStr, path: &Path, st: &Statx) -> Result<()> {
    let time = |t: rustix::fs::StatxTimestamp| Timespec {
        tv_sec: t.tv_sec,
        tv_nsec: i64::from(t.tv_nsec),
    };
    let times = Timestamps {
        last_access: time(st.stx_atime),
        last_modification: time(st.stx_mtime),
    };
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io("set the times of", path))
}

/// Every extended attribute (file capabilities, ACLs, SELinux labels) but
/// overlayfs's own.
fn copy_xattrs(from: &OwnedFd, to: &OwnedFd, path: &Path) -> Result<()> {
    let mut list = vec![0u8; 1 << 16];
    let n = match rustix::fs::flistxattr(from, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(io("list the attributes of", path)(e)),
    };
    let mut value = vec![0u8; 1 << 16];
    for key in list[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        if key.starts_with(OVERLAY_XATTRS) {
            continue;
        }
        let key = OsStr::from_bytes(key);
        let len = match rustix::fs::fgetxattr(from, key, &mut value[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(io("read an attribute of", path)(e)),
        };
        rustix::fs::fsetxattr(to, key, &value[..len], rustix::fs::XattrFlags::empty())
            .map_err(io("set an attribute of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_symlink_in_a_lower_layer_never_leads_an_upper_one_out_of_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (bottom, top, rootfs) = (
            dir.path().join("bottom"),
            dir.path().join("top"),
            dir.path().join("rootfs"),
        );
        for d in [&bottom, &top, &rootfs] {
            std::fs::create_dir(d).unwrap();
        }
        // The bottom layer points `escape` and `precious` out of the rootfs; the
        // top one puts a directory at `escape` and removes `precious` (an opaque
        // directory and a whiteout need root; a replacing file does not).
        std::os::unix::fs::symlink(outside.path(), bottom.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("precious"), bottom.join("precious"))
            .unwrap();
        std::fs::create_dir(top.join("escape")).unwrap();
        std::fs::write(top.join("escape/planted"), "x").unwrap();
        std::fs::write(top.join("precious"), "replaced").unwrap();
        // Hard links within a layer stay links.
        std::fs::write(top.join("one"), "linked").unwrap();
        std::fs::hard_link(top.join("one"), top.join("two")).unwrap();

        apply(&[bottom, top], &rootfs).unwrap();

        assert!(rootfs.join("escape").symlink_metadata().unwrap().is_dir());
        assert!(rootfs.join("escape/planted").is_file());
        assert!(!outside.path().join("planted").exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("precious")).unwrap(),
            "replaced"
        );
        let (one, two) = (
            std::fs::metadata(rootfs.join("one")).unwrap(),
            std::fs::metadata(rootfs.join("two")).unwrap(),
        );
        assert_eq!((one.dev(), one.ino()), (two.dev(), two.ino()));
    }

    #[test]
    fn a_whiteout_of_a_symlink_removes_the_link_not_its_target() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: a whiteout (a 0:0 character device) needs root to make");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("dir")).unwrap();
        std::fs::write(outside.path().join("dir/precious"), "keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (bottom, top, rootfs) = (
            dir.path().join("bottom"),
            dir.path().join("top"),
            dir.path().join("rootfs"),
        );
        for d in [&bottom, &top, &rootfs] {
            std::fs::create_dir(d).unwrap();
        }
        std::os::unix::fs::symlink(outside.path().join("dir"), bottom.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("link").as_path(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        apply(&[bottom, top], &rootfs).unwrap();
        assert!(rootfs.join("link").symlink_metadata().is_err());
        assert!(outside.path().join("dir/precious").exists());
    }
}
