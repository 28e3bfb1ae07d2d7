//! /etc/hosts and /etc/resolv.conf of bridged containers: files in each
//! container's directory that its init binds read-only over the rootfs's.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::NetworkSettings;
use crate::layout::ContainerDir;

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved keeps the upstream servers its 127.0.0.53 stub uses.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// Write the hosts file of every container that holds an address and has a
/// directory: loopback, then each of them by name, by its IPv6 address too when
/// the bridge has IPv6 (`settings`). Rewritten in place (truncate and write),
/// never renamed, so that running containers, which bind the file's inode, see
/// the new list.
pub(crate) fn rewrite_hosts(
    containers: &Path,
    addresses: &BTreeMap<String, Ipv4Addr>,
    settings: Option<&NetworkSettings>,
) -> Result<(), String> {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in addresses {
        text.push_str(&format!("{address}\t{name}\n"));
        if let Some(address6) = settings.and_then(|s| s.address6(*address)) {
            text.push_str(&format!("{address6}\t{name}\n"));
        }
    }
    for name in addresses.keys() {
        let Ok(dir) = ContainerDir::new(containers, name) else {
            continue;
        };
        if !dir.path.is_dir() {
            continue;
        }
        let path = dir.hosts();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The host's resolv.conf without the nameservers a container cannot reach
/// (loopback: 127.0.0.0/8, ::1); systemd-resolved's upstream list when the host
/// names only its local stub.
pub(crate) fn resolv_conf() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let host = reachable(&read(HOST_RESOLV_CONF));
    if host.lines().any(|l| l.starts_with("nameserver")) {
        return host;
    }
    let upstream = reachable(&read(RESOLVED_UPSTREAM));
    if upstream.lines().any(|l| l.starts_with("nameserver")) {
        upstream
    } else {
        host
    }
}

fn reachable(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let keep = match (words.next(), words.next()) {
            (Some("nameserver"), Some(server)) => server
                .split('%')
                .next()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| !ip.is_loopback()),
            (Some("search" | "domain" | "options"), Some(_)) => true,
            _ => false,
        };
        if keep {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_left_out() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch lan\noptions edns0\n";
        assert_eq!(
            reachable(host),
            "nameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch lan\noptions edns0\n"
        );
    }

    #[test]
    fn every_container_with_an_address_and_a_directory_gets_the_list_in_place() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(tmp.path().join("a")).unwrap_or_else(|e| panic!("{e}"));
        let hosts = tmp.path().join("a/hosts");
        std::fs::write(&hosts, "old").unwrap_or_else(|e| panic!("{e}"));
        let inode = |p: &Path| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(p).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let before = inode(&hosts);
        let addresses = BTreeMap::from([
            ("a".to_owned(), Ipv4Addr::new(10, 213, 1, 2)),
            ("gone".to_owned(), Ipv4Addr::new(10, 213, 1, 3)),
        ]);
        rewrite_hosts(tmp.path(), &addresses, None).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&hosts).unwrap_or_default();
        assert!(
            text.contains("10.213.1.2\ta\n") && text.contains("10.213.1.3\tgone\n"),
            "{text}"
        );
        assert!(!text.contains("fd"), "{text}");
        // With IPv6, each name by both of its addresses.
        let settings = NetworkSettings {
            bridge: "bt0".to_owned(),
            subnet: "10.213.1.0/24"
                .parse()
                .unwrap_or_else(|e: String| panic!("{e}")),
            subnet6: Some(
                "fd42:1::/64"
                    .parse()
                    .unwrap_or_else(|e: String| panic!("{e}")),
            ),
        };
        rewrite_hosts(tmp.path(), &addresses, Some(&settings)).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&hosts).unwrap_or_default();
        assert!(
            text.contains("10.213.1.2\ta\nfd42:1::2\ta\n") && text.contains("fd42:1::3\tgone\n"),
            "{text}"
        );
        assert_eq!(inode(&hosts), before);
        assert!(!tmp.path().join("gone").exists());
    }
}
