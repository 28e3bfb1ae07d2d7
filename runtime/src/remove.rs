//! Deleting a directory tree the safe way: by directory file descriptors, never
//! following a symlink, and refusing to cross a mount point, so that a bind of the
//! host's /usr left inside a rootfs never costs the host its /usr.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};

use crate::error::{Error, Result};

const MAX_DEPTH: usize = 512;

/// The filesystem and mount a removal must stay on.
#[derive(Debug, Clone, Copy)]
struct Fence {
    dev: (u32, u32),
    /// `None` where the kernel has no STATX_MNT_ID (before 5.8): st_dev alone then.
    mnt_id: Option<u64>,
}

fn to_io(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

fn refused(path: PathBuf, reason: &str) -> Error {
    Error::Refused {
        action: "delete",
        path,
        reason: reason.to_owned(),
    }
}

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |e| Error::Io {
        op,
        path: path.to_owned(),
        source: to_io(e),
    }
}

/// Where `fd`/`name` lives, without following a final symlink.
fn fence_of(dirfd: impl AsFd, name: &CStr, path: &Path) -> Result<(Fence, FileType)> {
    let st = rustix::fs::statx(
        dirfd,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )
    .map_err(io_at("stat", path))?;
    let has_mnt_id = StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID);
    Ok((
        Fence {
            dev: (st.stx_dev_major, st.stx_dev_minor),
            mnt_id: has_mnt_id.then_some(st.stx_mnt_id),
        },
        FileType::from_raw_mode(u32::from(st.stx_mode)),
    ))
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(&canonical))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape_mountinfo(field: &str) -> std::ffi::OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsStr::from_bytes(&out).to_owned()
}

/// Remove the directory `path` and everything in it. A missing `path` is fine;
/// a symlink at `path`, or a mount point anywhere inside, is refused.
pub fn remove_tree(path: &Path) -> Result<()> {
    let dir = match rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(refused(
                path.to_owned(),
                "it is not a directory (a symlink?)",
            ));
        }
        Err(e) => return Err(io_at("open", path)(e)),
    };
    if let Some(mount) = mounts_below(path).first() {
        return Err(refused(
            mount.clone(),
            "it is a mount point inside the directory being deleted; unmount it first",
        ));
    }
    let (fence, _) = fence_of(&dir, c"", path)?;
    remove_contents(&dir, path, fence, 0)?;
    drop(dir);
    std::fs::remove_dir(path).map_err(crate::error::io("remove", path))
}

/// Remove everything inside the open directory `dir` (shown to users as `path`).
pub fn remove_contents_of(dir: &OwnedFd, path: &Path) -> Result<()> {
    let (fence, _) = fence_of(dir, c"", path)?;
    remove_contents(dir, path, fence, 0)
}

/// Remove the entry `name` of the open directory `parent`, whatever it is.
/// `name` is one entry: `..` would be the parent's parent, whose contents would go.
pub fn remove_entry(parent: &OwnedFd, parent_path: &Path, name: &OsStr) -> Result<()> {
    if matches!(name.as_bytes(), b"" | b"." | b"..") || name.as_bytes().contains(&b'/') {
        return Err(refused(
            parent_path.join(name),
            "it is not the name of an entry of the directory",
        ));
    }
    let (fence, _) = fence_of(parent, c"", parent_path)?;
    remove_one(parent, parent_path, name, fence, 0)
}

fn remove_contents(dir: &OwnedFd, path: &Path, fence: Fence, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(refused(
            path.to_owned(),
            "the tree is deeper than 512 levels",
        ));
    }
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(dir).map_err(io_at("read", path))?;
    for entry in entries {
        let entry = entry.map_err(io_at("read", path))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    for name in names {
        remove_one(dir, path, &name, fence, depth)?;
    }
    Ok(())
}

fn remove_one(dir: &OwnedFd, path: &Path, name: &OsStr, fence: Fence, depth: usize) -> Result<()> {
    let child_path = path.join(name);
    let cname =
        CString::new(name.as_bytes()).map_err(|_| refused(child_path.clone(), "NUL in name"))?;
    let (here, kind) = match fence_of(dir, &cname, &child_path) {
        Ok(found) => found,
        // Gone already (whiteouts may name what a layer never had).
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if here.dev != fence.dev || (here.mnt_id.is_some() && here.mnt_id != fence.mnt_id) {
        return Err(refused(
            child_path,
            "it is a mount point inside the directory being deleted; unmount it first",
        ));
    }
    if kind == FileType::Directory {
        let child = rustix::fs::openat(
            dir,
            &cname,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(io_at("open", &child_path))?;
        // Swapped for something else between the stat and the open?
        let (opened, _) = fence_of(&child, c"", &child_path)?;
        if opened.dev != fence.dev || (opened.mnt_id.is_some() && opened.mnt_id != fence.mnt_id) {
            return Err(refused(child_path, "it changed while being deleted"));
        }
        remove_contents(&child, &child_path, fence, depth + 1)?;
        rustix::fs::unlinkat(dir, &cname, AtFlags::REMOVEDIR).map_err(io_at("remove", &child_path))
    } else {
        rustix::fs::unlinkat(dir, &cname, AtFlags::empty()).map_err(io_at("remove", &child_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_tree_but_not_what_its_symlinks_point_to() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/c/file"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("a/out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("precious"), tree.join("a/b/file-link"))
            .unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn refuses_a_symlink_as_the_tree_itself() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("tree");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let err = remove_tree(&link).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn a_missing_tree_is_already_removed() {
        remove_tree(Path::new("/nonexistent/berth/tree")).unwrap();
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo("/a\\040b\\134c"),
            std::ffi::OsString::from("/a b\\c")
        );
        assert_eq!(
            unescape_mountinfo("/plain\\04"),
            std::ffi::OsString::from("/plain\\04")
        );
    }
}
