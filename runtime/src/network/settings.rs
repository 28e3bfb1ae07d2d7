//! The bridge and subnet of a state dir: given by `--bridge`/`--subnet`, recorded
//! in `network/config.json` by the first start of a bridged container, and the
//! same for every later one (by hand or by the daemon).

use std::net::Ipv4Addr;
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
    ) -> Result<NetworkSettings, String> {
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
        let first = NetworkSettings::resolve(&dir, Some("bt1"), Some("10.213.9.0/24"));
        assert_eq!(first.as_ref().map(|s| s.bridge.as_str()), Ok("bt1"));
        // Left out: the recorded ones.
        assert_eq!(NetworkSettings::resolve(&dir, None, None), first);
        let other = NetworkSettings::resolve(&dir, Some("bt2"), None).unwrap_err();
        assert!(
            other.contains("--bridge bt2 disagrees with the bt1"),
            "{other}"
        );
        let other = NetworkSettings::resolve(&dir, None, Some("10.213.10.0/24")).unwrap_err();
        assert!(
            other.contains("--subnet 10.213.10.0/24 disagrees"),
            "{other}"
        );
    }
}
