//! `network.mode: bridge`: a bridge of berth's own (`--bridge`, `--subnet`, and
//! optionally `--subnet6`), one address per container that is its until it is
//! destroyed (`ipam`; its IPv6 one is derived from it), a veth pair per start
//! (`link`), and /etc/hosts and /etc/resolv.conf for it (`files`).
//! Everything shared lives in `<state-dir>/network/`, under one `flock`, so that
//! `berth start` by hand and the daemon agree.

mod files;
mod ipam;
mod link;
pub mod nat;
mod settings;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

pub(crate) use link::Wiring;
pub use settings::{DEFAULT_BRIDGE, DEFAULT_SUBNET, NetworkSettings, Subnet, Subnet6};

/// berth's nftables table for `bridge`: `berth` for the default bridge, else
/// `berth_<bridge>`, so that each bridge (a test's own, say) has a table of its own.
fn table_for(bridge: &str) -> String {
    if bridge == DEFAULT_BRIDGE {
        "berth".to_owned()
    } else {
        format!("berth_{bridge}")
    }
}

/// The firewall of the bridge a start goes to.
fn firewall(wiring: &Wiring) -> Result<nat::Firewall, String> {
    let settings = &wiring.settings;
    let firewall = nat::Firewall::new(
        &table_for(&settings.bridge),
        &settings.bridge,
        settings.subnet.network(),
        settings.subnet.prefix(),
    )
    .map_err(|e| e.to_string())?;
    Ok(match settings.subnet6 {
        Some(subnet6) => firewall.with_subnet6(subnet6),
        None => firewall,
    })
}

/// A failed `publish`: its message, and whether another program holds a port.
#[derive(Debug)]
pub(crate) struct PublishError {
    pub(crate) message: String,
    pub(crate) port_in_use: bool,
}

impl From<String> for PublishError {
    fn from(message: String) -> PublishError {
        PublishError {
            message,
            port_in_use: false,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Before a bridged start's command runs: the bridge, berth's table on it
/// (masquerading the subnets' traffic out of the host), IPv4 forwarding on (the
/// host routes for its containers, as Docker's and Podman's bridges need), IPv6
/// forwarding too when the bridge has IPv6 (only then: it is host-wide and stops
/// router advertisements being accepted where accept_ra is 1), and `ports`
/// published to this start's addresses. Idempotent; a port another program holds
/// fails it.
pub(crate) fn publish(
    wiring: &Wiring,
    container: &str,
    ports: &[berth_manifests::PortMapping],
) -> Result<(), PublishError> {
    let firewall = firewall(wiring)?;
    // The table hangs on the bridge, which the plug would make otherwise.
    wiring.ensure_bridge()?;
    firewall.ensure_table().map_err(|e| e.to_string())?;
    nat::enable_forwarding().map_err(|e| e.to_string())?;
    if wiring.settings.subnet6.is_some() {
        nat::enable_ipv6_forwarding().map_err(|e| e.to_string())?;
    }
    if ports.is_empty() {
        return Ok(());
    }
    let mappings: Vec<nat::PortMapping> = ports
        .iter()
        .map(|p| nat::PortMapping {
            host: p.host,
            container: p.container,
            protocol: match p.protocol {
                berth_manifests::Protocol::Tcp => nat::Protocol::Tcp,
                berth_manifests::Protocol::Udp => nat::Protocol::Udp,
            },
            host_ip: (!p.host_ip.is_unspecified()).then_some(p.host_ip),
        })
        .collect();
    firewall
        .publish(container, wiring.address, &mappings)
        .map_err(|e| PublishError {
            port_in_use: matches!(e, nat::NatError::PortInUse { .. }),
            message: e.to_string(),
        })
}

/// Remove what `publish` made for the container, if anything.
pub(crate) fn unpublish(wiring: &Wiring, container: &str) -> Result<(), String> {
    firewall(wiring)?
        .unpublish(container)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The host side of a container's veth pair: `bth` and 8 hex digits of the
/// sha256 of the state dir (canonical) and its name (11 characters; a link name
/// may have 15), so that another state dir's container of the same name has
/// another.
pub fn host_veth_name(state_dir: &Path, container: &str) -> String {
    format!("bth{}", short_hash(state_dir, container))
}

/// The container side while it is still in the host's namespace (renamed `eth0`
/// once moved).
pub(crate) fn peer_veth_name(state_dir: &Path, container: &str) -> String {
    format!("btp{}", short_hash(state_dir, container))
}

fn short_hash(state_dir: &Path, container: &str) -> String {
    let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let mut hasher = Sha256::new();
    hasher.update(state_dir.as_os_str().as_encoded_bytes());
    hasher.update(b"\0");
    hasher.update(container.as_bytes());
    hasher
        .finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bridged container made ready to start: its wiring, and its /etc/hosts and
/// /etc/resolv.conf for its init to bind.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) wiring: Wiring,
    pub(crate) etc_files: Vec<(PathBuf, PathBuf)>,
}

/// Before a bridged container starts (by its monitor): the state dir's settings,
/// its address (held, pinned or new), every bridged container's hosts file
/// rewritten, its resolv.conf written.
pub(crate) fn join(
    state_dir: &Path,
    container: &crate::layout::ContainerDir,
    pinned: Option<Ipv4Addr>,
) -> Result<Joined, String> {
    let dir = NetworkDir::new(state_dir);
    let settings = NetworkSettings::resolve(&dir, None, None, None)?;
    let address = {
        let lock = dir.lock()?;
        let mut ipam = ipam::Ipam::load(&dir, &lock)?;
        let held = ipam.entries().get(&container.name).copied();
        let address = ipam.allocate(&container.name, pinned, &settings.subnet)?;
        // Written (and synced) only when it changed: most starts change nothing.
        if held != Some(address) {
            ipam.save(&dir, &lock)?;
        }
        files::rewrite_hosts(
            &state_dir.join("containers"),
            ipam.entries(),
            Some(&settings),
        )?;
        address
    };
    let resolv_conf = container.resolv_conf();
    let resolvers = files::resolv_conf();
    if std::fs::read(&resolv_conf).ok().as_deref() != Some(resolvers.as_bytes()) {
        crate::config::write_atomic(&resolv_conf, resolvers.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    Ok(Joined {
        wiring: Wiring::new(state_dir, &container.name, settings, address),
        etc_files: vec![
            (container.hosts(), PathBuf::from("/etc/hosts")),
            (resolv_conf, PathBuf::from("/etc/resolv.conf")),
        ],
    })
}

/// After a container is destroyed: its address is free, the others' hosts files
/// no longer list it, and no veth of it is left (a killed monitor's).
pub(crate) fn leave(state_dir: &Path, container: &str) -> Result<(), String> {
    let dir = NetworkDir::new(state_dir);
    if !dir.exists() {
        return Ok(());
    }
    let lock = dir.lock()?;
    let mut ipam = ipam::Ipam::load(&dir, &lock)?;
    if !ipam.release(container) {
        return Ok(());
    }
    ipam.save(&dir, &lock)?;
    let settings = NetworkSettings::load(&dir)?;
    files::rewrite_hosts(
        &state_dir.join("containers"),
        ipam.entries(),
        settings.as_ref(),
    )?;
    link::delete_links(&[
        &host_veth_name(state_dir, container),
        &peer_veth_name(state_dir, container),
    ])
}

/// A bridged container's network as it stands, for `get -o wide` and `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The bridge; `None` until the state dir's first bridged start records it.
    pub bridge: Option<String>,
    /// The address it holds until it is destroyed; `None` before its first start.
    pub address: Option<Ipv4Addr>,
    /// Its IPv6 address, derived from `address`, where the bridge has `--subnet6`.
    pub address6: Option<std::net::Ipv6Addr>,
    /// The host side of its veth pair, and whether that link exists now.
    pub veth: String,
    pub veth_present: bool,
    /// berth's nftables rules of it (`chain: comment`), when asked for.
    pub rules: Vec<String>,
}

/// What `info` reads: the cheap part (settings and address, from files) always,
/// the link and the rules (netlink, `nft`) only with `live`.
pub(crate) fn info(state_dir: &Path, container: &str, live: bool) -> Result<NetworkInfo, String> {
    let dir = NetworkDir::new(state_dir);
    let veth = host_veth_name(state_dir, container);
    let mut info = NetworkInfo {
        bridge: None,
        address: None,
        address6: None,
        veth: veth.clone(),
        veth_present: false,
        rules: Vec::new(),
    };
    if !dir.exists() {
        return Ok(info);
    }
    let settings = NetworkSettings::load(&dir)?;
    {
        let lock = dir.lock()?;
        info.address = ipam::Ipam::load(&dir, &lock)?
            .entries()
            .get(container)
            .copied();
    }
    info.bridge = settings.as_ref().map(|s| s.bridge.clone());
    info.address6 = settings
        .as_ref()
        .zip(info.address)
        .and_then(|(s, a)| s.address6(a));
    if live {
        info.veth_present = link::link_exists(&veth)?;
        if let (Some(settings), Some(address)) = (settings, info.address) {
            let wiring = Wiring::new(state_dir, container, settings, address);
            info.rules = firewall(&wiring)?
                .rules_of(container)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|r| format!("{}: {}", r.chain, r.description))
                .collect();
        }
    }
    Ok(info)
}

/// Remove the veths of these containers (which do not run): what a monitor
/// killed between making a pair and moving one end into its container leaves on
/// the host. Returns each removed link with its container.
pub(crate) fn remove_links_of(
    state_dir: &Path,
    containers: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut removed = Vec::new();
    for name in containers {
        for link in [
            host_veth_name(state_dir, name),
            peer_veth_name(state_dir, name),
        ] {
            if link::link_exists(&link)? {
                link::delete_links(&[&link])?;
                removed.push((name.clone(), link));
            }
        }
    }
    Ok(removed)
}

/// Every container holding an address on the bridge.
pub(crate) fn holders(state_dir: &Path) -> Result<Vec<String>, String> {
    let dir = NetworkDir::new(state_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let lock = dir.lock()?;
    Ok(ipam::Ipam::load(&dir, &lock)?
        .entries()
        .keys()
        .cloned()
        .collect())
}

/// The settings `berth start` records or checks before a bridged start.
pub(crate) fn settings(
    state_dir: &Path,
    bridge: Option<&str>,
    subnet: Option<&str>,
    subnet6: Option<&str>,
) -> Result<NetworkSettings, String> {
    NetworkSettings::resolve(&NetworkDir::new(state_dir), bridge, subnet, subnet6)
}

/// `<state-dir>/network/`: settings, addresses, and the lock over both.
#[derive(Debug, Clone)]
pub(crate) struct NetworkDir {
    path: PathBuf,
}

/// The lock over everything in `network/`, held while it lives.
#[derive(Debug)]
pub(crate) struct NetworkLock(#[allow(dead_code)] Flock<File>);

impl NetworkDir {
    pub(crate) fn new(state_dir: &Path) -> NetworkDir {
        NetworkDir {
            path: state_dir.join("network"),
        }
    }

    pub(crate) fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub(crate) fn settings(&self) -> PathBuf {
        self.path.join("config.json")
    }

    pub(crate) fn addresses(&self) -> PathBuf {
        self.path.join("addresses.json")
    }

    /// Make the directory (0700) and take its lock.
    pub(crate) fn lock(&self) -> Result<NetworkLock, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| format!("cannot create {}: {e}", self.path.display()))?;
        let path = self.path.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(NetworkLock)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_a_link_name_and_differ_per_container() {
        let state = Path::new("/var/lib/berth");
        let a = host_veth_name(state, &"a".repeat(63));
        assert!(a.len() <= 15 && a.starts_with("bth"), "{a}");
        assert_ne!(host_veth_name(state, "web"), host_veth_name(state, "db"));
        assert_ne!(host_veth_name(state, "web"), peer_veth_name(state, "web"));
        assert_ne!(
            host_veth_name(state, "web"),
            host_veth_name(Path::new("/srv/other"), "web")
        );
        assert_eq!(host_veth_name(state, "web"), host_veth_name(state, "web"));
    }
}
