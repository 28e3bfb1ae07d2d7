//! The bridge and subnets of a state dir: given by `--bridge`/`--subnet` (and
//! optionally `--subnet6`), recorded in `network/config.json` by the first start
//! of a bridged container, and the same for every later one (by hand or by the
//! daemon).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NetworkDir;

pub const DEFAULT_BRIDGE: &str = "berth0";
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// IFNAMSIZ less its NUL.
const MAX_LINK_NAME: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    pub bridge: String,
    pub subnet: Subnet,
    /// IPv6 besides IPv4: absent in files written before it existed, and when
    /// the first bridged start had no `--subnet6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Subnet6>,
}

impl NetworkSettings {
    /// The IPv6 address that goes with a container's IPv4 one, when the bridge
    /// has IPv6.
    pub fn address6(&self, address: Ipv4Addr) -> Option<Ipv6Addr> {
        self.subnet6
            .map(|s| s.address_of(self.subnet.network(), self.subnet.prefix(), address))
    }
}

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Its network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The bridge's own address: the first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    /// The addresses a container may have: every host but the gateway.
    pub fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 2..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }

    /// Why a container may not have `address`, if it may not.
    pub fn refuses(&self, address: Ipv4Addr) -> Option<String> {
        if !self.contains(address) {
            Some(format!("{address} is outside the bridge's subnet {self}"))
        } else if address == self.network {
            Some(format!("{address} is the network address of {self}"))
        } else if address == self.gateway() {
            Some(format!(
                "{address} is the bridge's own address (the gateway)"
            ))
        } else if address == self.broadcast() {
            Some(format!("{address} is the broadcast address of {self}"))
        } else {
            None
        }
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet, String> {
        let bad = || format!("{text:?} is not an IPv4 subnet such as {DEFAULT_SUBNET}");
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "{text:?}: the prefix must be 8 to 30 (a gateway and at least one container)"
            ));
        }
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            let masked = Ipv4Addr::from(u32::from(network) & subnet.mask());
            return Err(format!(
                "{text:?} has host bits set; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(subnet)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(text: String) -> Result<Subnet, String> {
        text.parse()
    }
}

impl From<Subnet> for String {
    fn from(subnet: Subnet) -> String {
        subnet.to_string()
    }
}

/// A unique local IPv6 /64 (fd00::/8, RFC 4193): the bridge's IPv6 network.
/// Only ULAs: a global prefix would be masqueraded behind the host, which is
/// never what its owner routed it for; only /64s: SLAAC-sized, and room for
/// every IPv4 host part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet6 {
    network: Ipv6Addr,
}

impl Subnet6 {
    pub const PREFIX: u8 = 64;

    pub fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// The bridge's own address: `::1`, as the IPv4 gateway is the first host.
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) | 1)
    }

    /// A container's IPv6 address: this /64 with the host part of its IPv4
    /// address (in `network/prefix`) as the interface identifier, so that
    /// 10.88.0.2 in 10.88.0.0/16 is `PREFIX::2` and 10.88.1.5 is `PREFIX::105`
    /// (0x105 = 261). Derived, not allocated: it follows the IPv4 address across
    /// restarts with no file of its own, and never meets the gateway's `::1`
    /// (the IPv4 gateway's host part) nor another container's.
    pub fn address_of(&self, network: Ipv4Addr, prefix: u8, address: Ipv4Addr) -> Ipv6Addr {
        let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let host = u32::from(address) & !u32::from(network) & host_mask;
        Ipv6Addr::from(u128::from(self.network) | u128::from(host))
    }
}

impl FromStr for Subnet6 {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet6, String> {
        let bad =
            || format!("{text:?} is not an IPv6 subnet such as fd42:6265:7274::/64 (a ULA /64)");
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let network: Ipv6Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if network.octets()[0] != 0xfd {
            return Err(format!(
                "{text:?} is not a unique local address: give a /64 of fd00::/8, e.g. fd42:6265:7274::/64"
            ));
        }
        if prefix != Self::PREFIX {
            return Err(format!(
                "{text:?}: the prefix must be /64 (one address per IPv4 host part)"
            ));
        }
        if u128::from(network) & u128::from(u64::MAX) != 0 {
            let masked = Ipv6Addr::from(u128::from(network) & !u128::from(u64::MAX));
            return Err(format!(
                "{text:?} has host bits set; did you mean {masked}/64?"
            ));
        }
        Ok(Subnet6 { network })
    }
}

impl std::fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, Self::PREFIX)
    }
}

impl TryFrom<String> for Subnet6 {
    type Error = String;
    fn try_from(text: String) -> Result<Subnet6, String> {
        text.parse()
    }
}

impl From<Subnet6> for String {
    fn from(subnet: Subnet6) -> String {
        subnet.to_string()
    }
}

fn check_bridge_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LINK_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a bridge name: 1 to {MAX_LINK_NAME} letters, digits, '-', '_' or '.'"
        ))
    }
}

impl NetworkSettings {
    /// The settings of the state dir: those recorded, which flags given now must
    /// agree with; else the flags (or defaults), recorded now.
    pub(crate) fn resolve(
        dir: &NetworkDir,
        bridge: Option<&str>,
        subnet: Option<&str>,
        subnet6: Option<&str>,
    ) -> Result<NetworkSettings, String> {
        // A bad value is refused as such, whatever is recorded.
        let given6 = subnet6
            .map(|s| s.parse::<Subnet6>().map_err(|e| format!("--subnet6: {e}")))
            .transpose()?;
        let _lock = dir.lock()?;
        let path = dir.settings();
        if let Some(recorded) = Self::load(dir)? {
            let disagrees = |flag: &str, given: &str, recorded: &str| {
                format!(
                    "{flag} {given} disagrees with the {recorded} recorded in {} by the first bridged start; give the same, or leave it out",
                    path.display()
                )
            };
            if let Some(bridge) = bridge.filter(|b| *b != recorded.bridge) {
                return Err(disagrees("--bridge", bridge, &recorded.bridge));
            }
            if let Some(subnet) = subnet {
                let given: Subnet = subnet.parse().map_err(|e| format!("--subnet: {e}"))?;
                if given != recorded.subnet {
                    return Err(disagrees("--subnet", subnet, &recorded.subnet.to_string()));
                }
            }
            match (given6, recorded.subnet6) {
                (Some(given), Some(had)) if given != had => {
                    return Err(disagrees("--subnet6", &given.to_string(), &had.to_string()));
                }
                (Some(given), None) => {
                    return Err(format!(
                        "--subnet6 {given}: the first bridged start recorded no IPv6 subnet in {}; leave it out, or destroy every bridged container and remove that file to record new settings",
                        path.display()
                    ));
                }
                _ => {}
            }
            return Ok(recorded);
        }
        let bridge = bridge.unwrap_or(DEFAULT_BRIDGE);
        check_bridge_name(bridge).map_err(|e| format!("--bridge: {e}"))?;
        let settings = NetworkSettings {
            bridge: bridge.to_owned(),
            subnet: subnet
                .unwrap_or(DEFAULT_SUBNET)
                .parse()
                .map_err(|e| format!("--subnet: {e}"))?,
            subnet6: given6,
        };
        let json = serde_json::to_vec_pretty(&settings).map_err(|e| e.to_string())?;
        crate::config::write_atomic(&path, &json).map_err(|e| e.to_string())?;
        Ok(settings)
    }

    /// What `network/config.json` says, if it exists.
    pub(crate) fn load(dir: &NetworkDir) -> Result<Option<NetworkSettings>, String> {
        let path = dir.settings();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_knows_its_gateway_broadcast_and_container_addresses() {
        let s: Subnet = "10.213.7.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 7, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 213, 7, 255));
        let all: Vec<_> = s.container_addresses().collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 213, 7, 2)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 213, 7, 254)));
        assert!(s.refuses(Ipv4Addr::new(10, 213, 7, 1)).is_some());
        assert!(s.refuses(Ipv4Addr::new(10, 213, 8, 3)).is_some());
        assert!(s.refuses(Ipv4Addr::new(10, 213, 7, 3)).is_none());
    }

    #[test]
    fn bad_subnets_say_why() {
        let err = |t: &str| t.parse::<Subnet>().err().unwrap_or_default();
        assert!(err("10.88.0.1/16").contains("did you mean 10.88.0.0/16"));
        assert!(err("10.88.0.0/31").contains("8 to 30"));
        assert!(err("10.88.0.0").contains("not an IPv4 subnet"));
    }

    #[test]
    fn later_flags_must_agree_with_the_recorded_ones() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = NetworkDir::new(tmp.path());
        let first = NetworkSettings::resolve(&dir, Some("bt1"), Some("10.213.9.0/24"), None);
        assert_eq!(first.as_ref().map(|s| s.bridge.as_str()), Ok("bt1"));
        // Left out: the recorded ones.
        assert_eq!(NetworkSettings::resolve(&dir, None, None, None), first);
        let other = NetworkSettings::resolve(&dir, Some("bt2"), None, None).unwrap_err();
        assert!(
            other.contains("--bridge bt2 disagrees with the bt1"),
            "{other}"
        );
        let other = NetworkSettings::resolve(&dir, None, Some("10.213.10.0/24"), None).unwrap_err();
        assert!(
            other.contains("--subnet 10.213.10.0/24 disagrees"),
            "{other}"
        );
        // Recorded without IPv6: a --subnet6 now would leave running containers
        // without it.
        let other = NetworkSettings::resolve(&dir, None, None, Some("fd42::/64")).unwrap_err();
        assert!(
            other.contains("--subnet6 fd42::/64: the first bridged start recorded no IPv6"),
            "{other}"
        );
    }

    #[test]
    fn subnet6_is_recorded_and_later_ones_must_agree() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = NetworkDir::new(tmp.path());
        let first = NetworkSettings::resolve(&dir, None, None, Some("fd42:1:2:3::/64"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first.subnet6.map(|s| s.to_string()).as_deref(),
            Some("fd42:1:2:3::/64")
        );
        assert_eq!(
            NetworkSettings::resolve(&dir, None, None, None),
            Ok(first.clone())
        );
        // The same network written another way agrees.
        assert_eq!(
            NetworkSettings::resolve(&dir, None, None, Some("fd42:1:2:3:0::/64")),
            Ok(first)
        );
        let other =
            NetworkSettings::resolve(&dir, None, None, Some("fd42:1:2:4::/64")).unwrap_err();
        assert!(
            other.contains("--subnet6 fd42:1:2:4::/64 disagrees with the fd42:1:2:3::/64"),
            "{other}"
        );
        // A bad one is refused as such, naming the flag, not as a disagreement.
        let other = NetworkSettings::resolve(&dir, None, None, Some("2001:db8::/64")).unwrap_err();
        assert!(
            other.starts_with("--subnet6: ") && other.contains("not a unique local"),
            "{other}"
        );
    }

    #[test]
    fn a_config_json_without_subnet6_still_loads_and_is_written_without_it() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = NetworkDir::new(tmp.path());
        std::fs::create_dir(tmp.path().join("network")).unwrap_or_else(|e| panic!("{e}"));
        let old = r#"{"bridge": "berth0", "subnet": "10.88.0.0/16"}"#;
        std::fs::write(dir.settings(), old).unwrap_or_else(|e| panic!("{e}"));
        let loaded = NetworkSettings::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.as_ref().and_then(|s| s.subnet6), None);
        let json = serde_json::to_string(&loaded).unwrap_or_else(|e| panic!("{e}"));
        assert!(!json.contains("subnet6"), "{json}");
        assert_eq!(
            loaded.and_then(|s| s.address6(Ipv4Addr::new(10, 88, 0, 2))),
            None
        );
    }

    #[test]
    fn only_a_ula_slash_64_without_host_bits_is_a_subnet6() {
        let err = |t: &str| t.parse::<Subnet6>().err().unwrap_or_default();
        assert!(err("2001:db8::/64").contains("not a unique local address"));
        assert!(err("fe80::/64").contains("not a unique local address"));
        assert!(err("fc00::/64").contains("not a unique local address"));
        assert!(err("fd42::/48").contains("must be /64"));
        assert!(err("fd42::1/64").contains("did you mean fd42::/64"));
        assert!(err("fd42::").contains("not an IPv6 subnet"));
        assert!(err("10.88.0.0/16").contains("not an IPv6 subnet"));
        let s: Subnet6 = "fd42:6265:7274::/64"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.gateway(),
            "fd42:6265:7274::1"
                .parse::<Ipv6Addr>()
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn a_containers_ipv6_address_is_the_subnet6_with_its_ipv4_host_part() {
        let settings = NetworkSettings {
            bridge: "berth0".to_owned(),
            subnet: "10.88.0.0/16"
                .parse()
                .unwrap_or_else(|e: String| panic!("{e}")),
            subnet6: Some(
                "fd42:6265:7274::/64"
                    .parse()
                    .unwrap_or_else(|e: String| panic!("{e}")),
            ),
        };
        let v6 = |a, b, c, d| {
            settings
                .address6(Ipv4Addr::new(a, b, c, d))
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        assert_eq!(v6(10, 88, 0, 2), "fd42:6265:7274::2");
        assert_eq!(v6(10, 88, 1, 5), "fd42:6265:7274::105");
        assert_eq!(v6(10, 88, 255, 254), "fd42:6265:7274::fffe");
        // Another IPv4 host part, another IPv6 address; the same one, the same.
        assert_ne!(v6(10, 88, 0, 3), v6(10, 88, 0, 2));
        assert_eq!(v6(10, 88, 0, 2), v6(10, 88, 0, 2));
        // The gateway's host part is the IPv6 gateway too.
        let subnet6 = settings.subnet6.unwrap_or_else(|| panic!("no subnet6"));
        assert_eq!(
            settings.address6(settings.subnet.gateway()),
            Some(subnet6.gateway())
        );
        let narrow = Subnet6::address_of(
            &subnet6,
            Ipv4Addr::new(10, 213, 7, 0),
            24,
            Ipv4Addr::new(10, 213, 7, 9),
        );
        assert_eq!(narrow.to_string(), "fd42:6265:7274::9");
    }
}
