//! Links, addresses and routes by netlink (`rtnetlink`), from the monitor. The
//! monitor is single-threaded and synchronous: each call runs on a current-thread
//! tokio runtime made for it and dropped after (no worker threads, ~1 ms), so the
//! monitor is single-threaded again before it next clones an init. The container's
//! side is configured from a short-lived thread that enters the container's network
//! namespace (a netlink socket belongs to the namespace it was opened in).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use nix::libc;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetworkSettings, host_veth_name, peer_veth_name};

/// Where one start of a bridged container goes: what the NAT of published ports
/// hooks onto (`address`, `host_veth`, `settings.bridge`).
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
    /// up, with a default route via the bridge. Undone on failure.
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
            .map_err(step("add the default route"))
    }
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

/// The bridge, made if missing, with the gateway address, up. Returns its index
/// and MTU. Touches no other link.
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
    let gateway = settings.subnet.gateway();
    let prefix = settings.subnet.prefix();
    let mut addresses = h.address().get().set_link_index_filter(index).execute();
    let mut addressed = false;
    while let Some(a) = addresses
        .try_next()
        .await
        .map_err(|e| format!("list the addresses of {name}: {e}"))?
    {
        addressed |= a.header.prefix_len == prefix
            && a.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == gateway)
            });
    }
    if !addressed {
        match h
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(format!("give {name} the address {gateway}/{prefix}: {e}")),
        }
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
