//! Which cgroup hierarchies are mounted where, from `/proc/self/mountinfo`
//! (proc(5)): `id parent major:minor root mount-point options [optional...] -
//! fstype source super-options`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The controllers cgroup v1 can attach to a hierarchy. Other super options
/// (`rw`, `name=systemd`, `xattr`, `release_agent=...`) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    pub mount_point: PathBuf,
    /// The hierarchy's directory shown at the mount point: `/` unless the mount
    /// is a bind mount of a sub-cgroup.
    pub root: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// A v1 hierarchy and its controllers (empty for a named one like `name=systemd`).
    V1 { controllers: Vec<String> },
    /// The v2 hierarchy; its controllers are in `cgroup.controllers`, not here.
    V2,
}

/// Every cgroup mount in a mountinfo text, in order. Lines that are not cgroup
/// mounts or are malformed are skipped.
pub(super) fn cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CgroupMount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The optional fields end at a lone "-", never before the sixth field.
    let separator = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    let fstype = *fields.get(separator + 1)?;
    let super_options = *fields.get(separator + 3)?;
    let kind = match fstype {
        "cgroup2" => Kind::V2,
        "cgroup" => Kind::V1 {
            controllers: super_options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(str::to_owned)
                .collect(),
        },
        _ => return None,
    };
    Some(CgroupMount {
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        root: String::from_utf8_lossy(&unescape(fields[3])).into_owned(),
        kind,
    })
}

/// Undo the kernel's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3');
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_super_options_give_the_controllers() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,xattr,cpu,cpuacct\n\
                    33 31 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                    40 23 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
                    41 23 0:39 / /tmp rw - tmpfs tmpfs rw\n";
        let mounts = cgroup_mounts(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            mounts[0].kind,
            Kind::V1 {
                controllers: vec!["cpu".into(), "cpuacct".into()]
            }
        );
        assert_eq!(
            mounts[1].kind,
            Kind::V1 {
                controllers: vec![]
            }
        );
        assert_eq!(mounts[2].kind, Kind::V2);
        assert_eq!(mounts[2].root, "/");
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let text = r"50 23 0:40 /a\040b /mnt/my\040cgroups\134x rw - cgroup2 none rw";
        let mounts = cgroup_mounts(text);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/my cgroups\\x"));
        assert_eq!(mounts[0].root, "/a b");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(cgroup_mounts("garbage\n1 2 3 4 5 6 - cgroup2\n\n").is_empty());
    }
}
