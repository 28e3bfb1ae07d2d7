//! Addresses on the bridge: `network/addresses.json`, name → address, on disk so
//! that a container keeps its address across restarts, reboots and host reboots
//! until it is destroyed. Read and written only under the network lock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{NetworkDir, NetworkLock, Subnet};

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ipam {
    /// Container name → its address.
    containers: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    pub(crate) fn load(dir: &NetworkDir, _lock: &NetworkLock) -> Result<Ipam, String> {
        let path = dir.addresses();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ipam::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub(crate) fn save(&self, dir: &NetworkDir, _lock: &NetworkLock) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::config::write_atomic(&dir.addresses(), &json).map_err(|e| e.to_string())
    }

    pub(crate) fn entries(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.containers
    }

    /// The address of `name`: the one it holds, the one it pins, or the lowest
    /// free one. A pinned address held by another container is refused, naming it.
    pub(crate) fn allocate(
        &mut self,
        name: &str,
        pinned: Option<Ipv4Addr>,
        subnet: &Subnet,
    ) -> Result<Ipv4Addr, String> {
        let holder = |address: Ipv4Addr| {
            self.containers
                .iter()
                .find(|(other, a)| **a == address && other.as_str() != name)
                .map(|(other, _)| other.clone())
        };
        let address = match pinned {
            Some(address) => {
                if let Some(why) = subnet.refuses(address) {
                    return Err(format!("spec.network.address of {name}: {why}"));
                }
                if let Some(other) = holder(address) {
                    return Err(format!(
                        "spec.network.address of {name}: {address} is taken by container {other}"
                    ));
                }
                address
            }
            None => match self.containers.get(name) {
                Some(held) if subnet.refuses(*held).is_none() => *held,
                _ => subnet
                    .container_addresses()
                    .find(|a| holder(*a).is_none())
                    .ok_or_else(|| format!("no address left in {subnet} for {name}"))?,
            },
        };
        self.containers.insert(name.to_owned(), address);
        Ok(address)
    }

    /// Forget `name`'s address; returns whether it had one.
    pub(crate) fn release(&mut self, name: &str) -> bool {
        self.containers.remove(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        "10.213.3.0/29"
            .parse()
            .unwrap_or_else(|e: String| panic!("{e}"))
    }

    #[test]
    fn addresses_are_stable_pinned_ones_honoured_and_conflicts_named() {
        let s = subnet();
        let mut ipam = Ipam::default();
        let a = ipam.allocate("a", None, &s);
        assert_eq!(a, Ok(Ipv4Addr::new(10, 213, 3, 2)));
        assert_eq!(ipam.allocate("a", None, &s), a);
        let pinned = Ipv4Addr::new(10, 213, 3, 5);
        assert_eq!(ipam.allocate("b", Some(pinned), &s), Ok(pinned));
        let refused = ipam.allocate("c", Some(pinned), &s).unwrap_err();
        assert!(
            refused.contains("of c: 10.213.3.5 is taken by container b"),
            "{refused}"
        );
        assert_eq!(
            ipam.allocate("c", None, &s),
            Ok(Ipv4Addr::new(10, 213, 3, 3))
        );
        assert!(ipam.allocate("d", Some(s.gateway()), &s).is_err());
        assert!(ipam.allocate("d", Some(s.broadcast()), &s).is_err());
        // .4 and .6 are left; then none.
        assert!(ipam.allocate("d", None, &s).is_ok());
        assert!(ipam.allocate("e", None, &s).is_ok());
        assert!(
            ipam.allocate("f", None, &s)
                .unwrap_err()
                .contains("no address left")
        );
        assert!(ipam.release("a"));
        assert_eq!(ipam.allocate("f", None, &s), a);
    }
}
