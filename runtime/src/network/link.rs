//! Links, addresses and routes by netlink (`rtnetlink`), from the monitor. The
//! monitor is single-threaded and synchronous: each call runs on a current-thread
//! tokio runtime made for it and dropped after (no worker threads, ~1 ms), so the
//! monitor is single-threaded again before it next clones an init. The container's
//! side is configured from a short-lived thread that enters the container's network
//! namespace (a netlink socket belongs to the namespace it was opened in).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use nix::libc;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetworkSettings, Subnet6, host_veth_name, peer_veth_name};

/// Where one start of a bridged container goes: what the NAT of published ports
/// hooks onto (`address` and its IPv6 twin, `host_veth`, `settings.bridge`).
#[derive(Debug, Clone)]
pub(crate) struct Wiring {
    pub(crate) settings: NetworkSettings,
    pub(crate) address: Ipv4Addr,
    pub(crate) host_veth: String,
    peer: String,
}

impl Wiring {
    pub(crate) fn new(
        state_dir: &Path,
        container: &str,
        settings: NetworkSettings,
        address: Ipv4Addr,
    ) -> Wiring {
        Wiring {
            settings,
            address,
            host_veth: host_veth_name(state_dir, container),
            peer: peer_veth_name(state_dir, container),
        }
    }

    /// The container's IPv6 address, when the bridge has IPv6.
    pub(crate) fn address6(&self) -> Option<Ipv6Addr> {
        self.settings.address6(self.address)
    }

    /// The bridge of this start, made if missing (with its gateway address, up).
    pub(crate) fn ensure_bridge(&self) -> Result<(), String> {
        run(|h| async move { ensure_bridge(&h, &self.settings).await.map(drop) })
    }

    /// After the container stopped: no veth of it is left (the kernel removes the
    /// pair with the namespace, but not always at once).
    pub(crate) fn unplug(&self) -> Result<(), String> {
        delete_links(&[&self.host_veth, &self.peer])
    }

    /// Plug the init `pid`, still waiting for its go-ahead in its new network
    /// namespace, into the bridge: the bridge made if missing, a veth pair with the
    /// host side on the bridge and the other side moved in as `eth0`, addressed,
    /// up, with a default route via the bridge (IPv6 too when the bridge has
    /// it). Undone on failure.
    pub(crate) fn plug(&self, pid: i32) -> Result<(), String> {
        let plugged = run(|h| self.host_side(h, pid)).and_then(|mtu| self.container_side(pid, mtu));
        if plugged.is_err() {
            let _ = delete_links(&[&self.host_veth, &self.peer]);
        }
        plugged
    }

    /// Returns the bridge's MTU, which the container's side takes.
    async fn host_side(&self, h: Handle, pid: i32) -> Result<u32, String> {
        let (bridge, mtu) = ensure_bridge(&h, &self.settings).await?;
        // What a killed monitor or a namespace still being torn down left.
        for attempt in 0.. {
            delete(&h, &self.host_veth).await?;
            delete(&h, &self.peer).await?;
            let veth = LinkVeth::new(&self.host_veth, &self.peer)
                .mtu(mtu)
                .controller(bridge)
                .up()
                .build();
            match h.link().add(veth).execute().await {
                Ok(()) => break,
                Err(e) if errno(&e) == libc::EEXIST && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("create veth {}: {e}", self.host_veth)),
            }
        }
        let peer = link_index(&h, &self.peer).await?;
        let moved = LinkUnspec::new_with_index(peer)
            .setns_by_pid(pid as u32)
            .build();
        h.link()
            .set(moved)
            .execute()
            .await
            .map_err(|e| format!("move {} into the container: {e}", self.peer))?;
        Ok(mtu)
    }

    fn container_side(&self, pid: i32, mtu: u32) -> Result<(), String> {
        let netns_path = format!("/proc/{pid}/ns/net");
        let netns =
            std::fs::File::open(&netns_path).map_err(|e| format!("open {netns_path}: {e}"))?;
        let wiring = self.clone();
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("enter the container's network namespace: {e}"))?;
            run(|h| wiring.configure_inside(h, mtu))
        })
        .join()
        .unwrap_or_else(|_| Err("the thread configuring eth0 panicked".to_owned()))
    }

    async fn configure_inside(&self, h: Handle, mtu: u32) -> Result<(), String> {
        let subnet = self.settings.subnet;
        let eth0 = link_index(&h, &self.peer).await?;
        let step = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
        h.link()
            .set(
                LinkUnspec::new_with_index(eth0)
                    .name("eth0")
                    .mtu(mtu)
                    .address(mac_of(self.address).to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(step("rename the veth to eth0"))?;
        h.address()
            .add(eth0, IpAddr::V4(self.address), subnet.prefix())
            .execute()
            .await
            .map_err(step("address eth0"))?;
        if let Some(address6) = self.address6() {
            add_address_now(&h, eth0, IpAddr::V6(address6), Subnet6::PREFIX)
                .await
                .map_err(|e| format!("give eth0 the address {address6}/64: {e}"))?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(eth0).up().build())
            .execute()
            .await
            .map_err(step("bring up eth0"))?;
        let lo = link_index(&h, "lo").await?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(step("bring up lo"))?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(subnet.gateway())
            .output_interface(eth0)
            .build();
        h.route()
            .add(default)
            .execute()
            .await
            .map_err(step("add the default route"))?;
        if let Some(subnet6) = self.settings.subnet6 {
            let default6 = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(subnet6.gateway())
                .output_interface(eth0)
                .build();
            h.route()
                .add(default6)
                .execute()
                .await
                .map_err(step("add the default IPv6 route"))?;
        }
        Ok(())
    }
}

/// eth0's MAC address: `02:62` (locally administered) and the IPv4 address, so
/// that a container keeps it across restarts with its addresses. Its neighbours'
/// caches then stay right; with a new MAC each start, the others on the bridge
/// (and the host) would send to the old one until neighbour unreachability
/// detection gave up on it, some 5 to 10 s, and for IPv6 no overheard packet
/// corrects it sooner, as ARP broadcasts do for IPv4. Unique on the bridge, as
/// the IPv4 address is.
fn mac_of(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x62, a, b, c, d]
}

/// Delete each of these links that exists.
pub(crate) fn delete_links(names: &[&str]) -> Result<(), String> {
    run(|h| async move {
        for name in names {
            delete(&h, name).await?;
        }
        Ok(())
    })
}

/// Does the link `name` exist (in this network namespace)?
pub(crate) fn link_exists(name: &str) -> Result<bool, String> {
    run(|h| async move { get_link(&h, name).await.map(|link| link.is_some()) })
}

/// The bridge, made if missing, with the gateway address (and the IPv6 one), up.
/// Returns its index and MTU. Touches no other link.
async fn ensure_bridge(h: &Handle, settings: &NetworkSettings) -> Result<(u32, u32), String> {
    let name = &settings.bridge;
    let link = match get_link(h, name).await? {
        Some(link) => link,
        None => {
            match h.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => {}
                // Another monitor made it meanwhile.
                Err(e) if errno(&e) == libc::EEXIST => {}
                Err(e) => return Err(format!("create bridge {name}: {e}")),
            }
            get_link(h, name)
                .await?
                .ok_or_else(|| format!("bridge {name} vanished after it was made"))?
        }
    };
    if !is_bridge(&link) {
        return Err(format!(
            "link {name} exists and is not a bridge; choose another name with --bridge"
        ));
    }
    let index = link.header.index;
    let gateway = IpAddr::V4(settings.subnet.gateway());
    ensure_address(h, name, index, gateway, settings.subnet.prefix(), false).await?;
    if let Some(subnet6) = settings.subnet6 {
        let gateway6 = IpAddr::V6(subnet6.gateway());
        ensure_address(h, name, index, gateway6, Subnet6::PREFIX, true).await?;
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| format!("bring up {name}: {e}"))?;
    }
    let mtu = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500);
    Ok((index, mtu))
}

/// Give the link `name` the address unless it has it; `now` adds an IPv6 one
/// without duplicate address detection (see `add_address_now`).
async fn ensure_address(
    h: &Handle,
    name: &str,
    index: u32,
    address: IpAddr,
    prefix: u8,
    now: bool,
) -> Result<(), String> {
    let mut addresses = h.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addresses
        .try_next()
        .await
        .map_err(|e| format!("list the addresses of {name}: {e}"))?
    {
        let has = a.header.prefix_len == prefix
            && a.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == address)
            });
        if has {
            return Ok(());
        }
    }
    let added = if now {
        add_address_now(h, index, address, prefix).await
    } else {
        h.address().add(index, address, prefix).execute().await
    };
    match added {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == libc::EEXIST => Ok(()),
        Err(e) => Err(format!("give {name} the address {address}/{prefix}: {e}")),
    }
}

/// Add an IPv6 address with IFA_F_NODAD: usable at once, where duplicate
/// address detection would keep it tentative (no source, no answers) for a
/// second or more after the link comes up, while the command already runs. The
/// address is unique by construction (derived from the IPv4 one, allocated
/// under the network lock), so DAD has nothing to find.
async fn add_address_now(
    h: &Handle,
    index: u32,
    address: IpAddr,
    prefix: u8,
) -> Result<(), rtnetlink::Error> {
    let mut request = h.address().add(index, address, prefix);
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    request.execute().await
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(e) => Err(format!("look up link {name}: {e}")),
    }
}

async fn link_index(h: &Handle, name: &str) -> Result<u32, String> {
    get_link(h, name)
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| format!("link {name} is missing"))
}

/// Delete the link `name` if it exists.
async fn delete(h: &Handle, name: &str) -> Result<(), String> {
    let Some(link) = get_link(h, name).await? else {
        return Ok(());
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        // Gone meanwhile, e.g. with its namespace.
        Err(e) if errno(&e) == libc::ENODEV => Ok(()),
        Err(e) => Err(format!("delete link {name}: {e}")),
    }
}

fn errno(error: &rtnetlink::Error) -> i32 {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.raw_code().abs(),
        _ => 0,
    }
}

/// Run netlink requests to completion on a current-thread runtime of their own.
fn run<'a, T, F>(requests: impl FnOnce(Handle) -> F) -> Result<T, String>
where
    F: Future<Output = Result<T, String>> + 'a,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("netlink: cannot make a runtime: {e}"))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        let connection = tokio::spawn(connection);
        let result = requests(handle).await;
        connection.abort();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_mac_is_local_unicast_and_follows_its_ipv4_address() {
        let mac = mac_of(Ipv4Addr::new(10, 88, 1, 5));
        assert_eq!(mac, [0x02, 0x62, 10, 88, 1, 5]);
        // Locally administered (bit 1), unicast (bit 0 clear).
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_ne!(mac_of(Ipv4Addr::new(10, 88, 1, 6)), mac);
    }
}
