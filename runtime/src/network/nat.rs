//! nftables for bridged containers: masquerade for the subnet (and the IPv6 one),
//! published ports (DNAT, for IPv4 and IPv6), and a forward chain, all in one
//! `inet` table of berth's own.
//!
//! Mechanism: the `nftables` crate, which drives `nft -j` with typed JSON; it is
//! the one netavark (Podman) uses, is kept up with nft's JSON schema, and leaves
//! the kernel ABI to nft itself, where the netlink crates (`rustables`, `nftnl`)
//! are less kept and make us track nf_tables' netlink attributes by hand.
//!
//! Loopback hairpin (`curl 127.0.0.1:HOSTPORT` on the host): `route_localnet=1`
//! on the bridge and a masquerade of 127.0.0.0/8 leaving through it, not a
//! userspace proxy, because containers outlive the daemon: kernel rules keep
//! answering while no berth process runs, a proxy would die with it. The
//! `guard` chain drops packets from the bridge addressed to 127.0.0.0/8, which
//! `route_localnet` would otherwise let containers send to the host's loopback
//! services (kube-proxy's fix for CVE-2020-8558). IPv6 has no such hairpin:
//! Linux never routes `::1` off the host, so the IPv6 DNAT leaves `::1` alone
//! (a connection there is refused at once, not lost in the bridge).
//!
//! Rules are told apart by their comment: `berth: ...` for the table's own,
//! `container NAME ...` for a container's published ports. Nothing outside the
//! table is ever touched, and no chain has a drop policy.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::expr::{Payload, PayloadField, Prefix};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::Subnet6;

/// A container's published port: host port → container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
    /// Only traffic to this host address; `None` (or 0.0.0.0) is every address.
    pub host_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl PortMapping {
    fn host_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// `tcp 0.0.0.0:8080`, as errors and rule comments show it.
    fn host_side(&self) -> String {
        let ip = self.host_ip().unwrap_or(Ipv4Addr::UNSPECIFIED);
        format!("{} {ip}:{}", self.protocol, self.host)
    }

    /// Whether both would catch the same packets.
    fn overlaps(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host == other.host
            && match (self.host_ip(), other.host_ip()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// One rule of berth's table, for `berth describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    pub chain: String,
    pub handle: u32,
    /// The rule's comment: `container web tcp 0.0.0.0:8080 -> 10.88.0.2:80`.
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// Another program holds the host port: the daemon reports it as an event
    /// and a condition, the container runs unpublished.
    #[error("host port {} of container {container} is already bound by another program: {source}", .mapping.host_side())]
    PortInUse {
        container: String,
        mapping: PortMapping,
        #[source]
        source: io::Error,
    },
    /// Another container already publishes the host port.
    #[error("host port {} of container {container} is already published by container {other}", .mapping.host_side())]
    PortTaken {
        container: String,
        mapping: PortMapping,
        other: String,
    },
    #[error("publishing ports of container {container}: {message}")]
    Invalid { container: String, message: String },
    #[error("nftables table inet {table}: {message}")]
    Nft { table: String, message: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = NatError> = std::result::Result<T, E>;

/// What `ensure_table` does.
#[derive(Debug, PartialEq, Eq)]
enum TableStep {
    /// The table is right: touch nothing.
    Keep,
    Create,
    /// Replace the table in one transaction, putting back the containers' rules.
    Rebuild {
        published: Vec<Rule<'static>>,
    },
}

/// Chains of the table: (name, type, hook, priority).
const CHAINS: [(&str, NfChainType, NfHook, i32); 5] = [
    ("guard", NfChainType::Filter, NfHook::Prerouting, -300),
    ("prerouting", NfChainType::NAT, NfHook::Prerouting, -100),
    ("output", NfChainType::NAT, NfHook::Output, -100),
    ("postrouting", NfChainType::NAT, NfHook::Postrouting, 100),
    ("forward", NfChainType::Filter, NfHook::Forward, 0),
];

const BASE_PREFIX: &str = "berth: ";
const CONTAINER_PREFIX: &str = "container ";

/// berth's nftables table for one bridge and its subnet(s).
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    bridge: String,
    subnet: Ipv4Addr,
    prefix: u8,
    subnet6: Option<Subnet6>,
}

impl Firewall {
    /// The table `inet TABLE` (berth's is `berth`) for the bridge and its subnet.
    pub fn new(table: &str, bridge: &str, subnet: Ipv4Addr, prefix: u8) -> Result<Firewall> {
        let invalid = |message: String| NatError::Nft {
            table: table.to_owned(),
            message,
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !name_ok(table) {
            return Err(invalid(format!("{table:?} is not a valid table name")));
        }
        if !name_ok(bridge) || bridge.len() > 15 || bridge == "." || bridge == ".." {
            return Err(invalid(format!("{bridge:?} is not a valid bridge name")));
        }
        if !(8..=30).contains(&prefix) {
            return Err(invalid(format!(
                "subnet {subnet}/{prefix}: the prefix must be 8 to 30"
            )));
        }
        let subnet = Ipv4Addr::from(u32::from(subnet) & mask(prefix));
        Ok(Firewall {
            table: table.to_owned(),
            bridge: bridge.to_owned(),
            subnet,
            prefix,
            subnet6: None,
        })
    }

    /// The bridge has IPv6 too: its /64 is masqueraded as well, and each port
    /// published to every host address is published on the host's IPv6 ones to
    /// the container's IPv6 address (derived from its IPv4 one, see
    /// [`Subnet6::address_of`]).
    pub fn with_subnet6(self, subnet6: Subnet6) -> Firewall {
        Firewall {
            subnet6: Some(subnet6),
            ..self
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the table, its chains and rules, and set `route_localnet` on the
    /// bridge (which must exist). A table that is already right is left as it
    /// is, handles and counters included; one that is not is rebuilt in one
    /// transaction, keeping the containers' published ports.
    pub fn ensure_table(&self) -> Result<()> {
        self.set_route_localnet()?;
        let current = self.list()?;
        let mut batch = Batch::new();
        let published = match self.table_step(current.as_deref()) {
            TableStep::Keep => return Ok(()),
            TableStep::Create => Vec::new(),
            TableStep::Rebuild { published } => {
                tracing::info!(table = %self.table, "rebuilding berth's nftables table");
                batch.delete(NfListObject::Table(self.table_object()));
                published
            }
        };
        for object in self.skeleton() {
            batch.add(object);
        }
        for rule in published {
            batch.add(NfListObject::Rule(rule));
        }
        self.apply(batch)
    }

    /// What [`Firewall::ensure_table`] does to the table there is.
    fn table_step(&self, current: Option<&[NfObject<'static>]>) -> TableStep {
        match current {
            None => TableStep::Create,
            Some(objects) if self.is_right(objects) => TableStep::Keep,
            Some(objects) => TableStep::Rebuild {
                published: rules(objects)
                    .filter(|r| container_of(r).is_some())
                    .map(|r| Rule {
                        handle: None,
                        ..r.clone()
                    })
                    .collect(),
            },
        }
    }

    /// Delete the table and everything in it. Returns whether it was there.
    pub fn remove_table(&self) -> Result<bool> {
        if self.list()?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(self.table_object()));
        self.apply(batch)?;
        Ok(true)
    }

    /// Publish `ports` of container `name` at `addr` (and its IPv6 twin when the
    /// bridge has IPv6): after this its rules are
    /// exactly these ports. Publishing the same ports again changes nothing. A
    /// host port another program holds is [`NatError::PortInUse`], one another
    /// container publishes [`NatError::PortTaken`]; then nothing changes.
    pub fn publish(&self, name: &str, addr: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
        let invalid = |message: String| NatError::Invalid {
            container: name.to_owned(),
            message,
        };
        berth_manifests::check_name(name).map_err(invalid)?;
        if !self.contains(addr) {
            return Err(invalid(format!(
                "{addr} is not in the subnet {}/{}",
                self.subnet, self.prefix
            )));
        }
        for (i, port) in ports.iter().enumerate() {
            if port.host == 0 || port.container == 0 {
                return Err(invalid(format!(
                    "{}: port 0 cannot be published",
                    port.host_side()
                )));
            }
            if ports[..i].iter().any(|p| p.overlaps(port)) {
                return Err(invalid(format!(
                    "host port {} is listed twice",
                    port.host_side()
                )));
            }
        }
        let Some(objects) = self.list()? else {
            return Err(self.nft_error("the table does not exist (ensure_table first)".into()));
        };
        let wanted: Vec<Rule> = ports
            .iter()
            .flat_map(|port| self.dnat_rules(name, addr, port))
            .collect();
        let existing: Vec<&Rule> = rules(&objects)
            .filter(|r| container_of(r) == Some(name))
            .collect();
        let key = |r: &Rule| (r.chain.to_string(), r.comment.as_deref().map(str::to_owned));
        if existing.iter().map(|r| key(r)).collect::<BTreeSet<_>>()
            == wanted.iter().map(key).collect::<BTreeSet<_>>()
            && existing.len() == wanted.len()
        {
            return Ok(());
        }
        for port in ports {
            self.check_not_published(name, port, &objects)?;
            check_port_free(name, port, port.host_ip().map(IpAddr::V4))?;
            if self.subnet6.is_some() && port.host_ip().is_none() {
                // An IPv6-only listener, which the IPv4 bind does not meet.
                check_port_free(name, port, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))?;
            }
        }
        let mut batch = Batch::new();
        for rule in existing {
            batch.delete(NfListObject::Rule(rule.clone()));
        }
        for rule in wanted {
            batch.add(NfListObject::Rule(rule));
        }
        self.apply(batch)
    }

    /// Remove container `name`'s rules, and only them. Returns how many there were.
    pub fn unpublish(&self, name: &str) -> Result<usize> {
        let Some(objects) = self.list()? else {
            return Ok(0);
        };
        let mut batch = Batch::new();
        let mut count = 0;
        for rule in rules(&objects).filter(|r| container_of(r) == Some(name)) {
            batch.delete(NfListObject::Rule(rule.clone()));
            count += 1;
        }
        if count > 0 {
            self.apply(batch)?;
        }
        Ok(count)
    }

    /// Container `name`'s rules, for `berth describe`.
    pub fn rules_of(&self, name: &str) -> Result<Vec<NatRule>> {
        let Some(objects) = self.list()? else {
            return Ok(Vec::new());
        };
        Ok(rules(&objects)
            .filter(|r| container_of(r) == Some(name))
            .map(|r| NatRule {
                chain: r.chain.to_string(),
                handle: r.handle.unwrap_or_default(),
                description: r.comment.as_deref().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// The IPv6 address of the container at `addr`, when the bridge has IPv6.
    fn address6(&self, addr: Ipv4Addr) -> Option<Ipv6Addr> {
        self.subnet6
            .map(|s| s.address_of(self.subnet, self.prefix, addr))
    }

    fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.subnet)
    }

    fn table_object(&self) -> Table<'static> {
        Table {
            family: NfFamily::INet,
            name: self.table.clone().into(),
            handle: None,
        }
    }

    fn chain(&self, (name, kind, hook, prio): (&str, NfChainType, NfHook, i32)) -> Chain<'static> {
        Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: name.to_owned().into(),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }
    }

    fn rule(&self, chain: &str, comment: String, expr: Vec<Statement<'static>>) -> Rule<'static> {
        Rule {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            chain: chain.to_owned().into(),
            expr: expr.into(),
            handle: None,
            index: None,
            comment: Some(comment.into()),
        }
    }

    /// The table's own rules; their comments say everything they depend on, so
    /// equal comments mean equal rules when adopting.
    fn base_rules(&self) -> Vec<Rule<'static>> {
        let bridge = &self.bridge;
        let subnet = || prefix(self.subnet, self.prefix);
        let loopback = || prefix(Ipv4Addr::new(127, 0, 0, 0), 8);
        let masquerade = || Statement::Masquerade(None);
        let mut rules = vec![
            self.rule(
                "guard",
                format!("{BASE_PREFIX}drop packets from {bridge} to 127.0.0.0/8"),
                vec![
                    eq(meta(MetaKey::Iifname), text(bridge)),
                    eq(payload("ip", "daddr"), loopback()),
                    Statement::Drop(None),
                ],
            ),
            self.rule(
                "postrouting",
                format!(
                    "{BASE_PREFIX}masquerade {}/{} leaving through anything but {bridge}",
                    self.subnet, self.prefix
                ),
                vec![
                    eq(payload("ip", "saddr"), subnet()),
                    matches(meta(MetaKey::Oifname), Operator::NEQ, text(bridge)),
                    masquerade(),
                ],
            ),
            self.rule(
                "postrouting",
                format!("{BASE_PREFIX}masquerade 127.0.0.0/8 into {bridge} (loopback hairpin)"),
                vec![
                    eq(meta(MetaKey::Oifname), text(bridge)),
                    eq(payload("ip", "saddr"), loopback()),
                    masquerade(),
                ],
            ),
            self.rule(
                "forward",
                format!("{BASE_PREFIX}accept from {bridge}"),
                vec![
                    eq(meta(MetaKey::Iifname), text(bridge)),
                    Statement::Accept(None),
                ],
            ),
            self.rule(
                "forward",
                format!("{BASE_PREFIX}accept to {bridge}"),
                vec![
                    eq(meta(MetaKey::Oifname), text(bridge)),
                    Statement::Accept(None),
                ],
            ),
        ];
        if let Some(subnet6) = self.subnet6 {
            rules.push(self.rule(
                "postrouting",
                format!("{BASE_PREFIX}masquerade {subnet6} leaving through anything but {bridge}"),
                vec![
                    eq(
                        payload("ip6", "saddr"),
                        prefix(subnet6.network(), Subnet6::PREFIX),
                    ),
                    matches(meta(MetaKey::Oifname), Operator::NEQ, text(bridge)),
                    masquerade(),
                ],
            ));
        }
        rules
    }

    /// The DNAT of one published port, in prerouting (from outside) and output
    /// (from the host itself); with IPv6, a twin pair for traffic to the host's
    /// IPv6 addresses when the port is published on every host address (a
    /// `hostIP` is an IPv4 address, which IPv6 traffic never has).
    fn dnat_rules(&self, name: &str, addr: Ipv4Addr, port: &PortMapping) -> Vec<Rule<'static>> {
        let comment = format!(
            "{CONTAINER_PREFIX}{name} {} -> {addr}:{}",
            port.host_side(),
            port.container
        );
        let local = || {
            eq(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: [FibFlag::Daddr].into(),
                })),
                text("local"),
            )
        };
        let dport = || {
            eq(
                payload(&port.protocol.to_string(), "dport"),
                Expression::Number(port.host.into()),
            )
        };
        let expr = vec![
            match port.host_ip() {
                Some(ip) => eq(payload("ip", "daddr"), text(&ip.to_string())),
                None => local(),
            },
            dport(),
            Statement::DNAT(Some(NAT {
                addr: Some(text(&addr.to_string())),
                family: Some(NATFamily::IP),
                port: Some(Expression::Number(port.container.into())),
                flags: None,
            })),
        ];
        let mut rules = vec![
            self.rule("prerouting", comment.clone(), expr.clone()),
            self.rule("output", comment, expr),
        ];
        if let Some(addr6) = self.address6(addr).filter(|_| port.host_ip().is_none()) {
            let comment = format!(
                "{CONTAINER_PREFIX}{name} {} [::]:{} -> [{addr6}]:{}",
                port.protocol, port.host, port.container
            );
            let expr = vec![
                // Also what keeps IPv4 packets out of it.
                matches(
                    payload("ip6", "daddr"),
                    Operator::NEQ,
                    text(&Ipv6Addr::LOCALHOST.to_string()),
                ),
                local(),
                dport(),
                Statement::DNAT(Some(NAT {
                    addr: Some(text(&addr6.to_string())),
                    family: Some(NATFamily::IP6),
                    port: Some(Expression::Number(port.container.into())),
                    flags: None,
                })),
            ];
            rules.push(self.rule("prerouting", comment.clone(), expr.clone()));
            rules.push(self.rule("output", comment, expr));
        }
        rules
    }

    /// The table, its chains and its own rules.
    fn skeleton(&self) -> Vec<NfListObject<'static>> {
        let mut objects = vec![NfListObject::Table(self.table_object())];
        objects.extend(CHAINS.map(|chain| NfListObject::Chain(self.chain(chain))));
        objects.extend(self.base_rules().into_iter().map(NfListObject::Rule));
        objects
    }

    /// Every chain as berth makes it, and exactly berth's own rules in each.
    fn is_right(&self, objects: &[NfObject<'_>]) -> bool {
        let chains_right = CHAINS.iter().all(|&wanted| {
            let wanted = self.chain(wanted);
            objects.iter().any(|o| match o {
                NfObject::ListObject(NfListObject::Chain(c)) => {
                    c.name == wanted.name
                        && c._type == wanted._type
                        && c.hook == wanted.hook
                        && c.prio == wanted.prio
                        && c.policy == wanted.policy
                }
                _ => false,
            })
        });
        let comments = |rules: &mut dyn Iterator<Item = &Rule<'_>>| {
            rules
                .filter(|r| {
                    r.comment
                        .as_deref()
                        .is_some_and(|c| c.starts_with(BASE_PREFIX))
                })
                .map(|r| (r.chain.to_string(), r.comment.as_deref().map(str::to_owned)))
                .collect::<Vec<_>>()
        };
        let mut have = comments(&mut rules(objects));
        let mut want = comments(&mut self.base_rules().iter());
        have.sort();
        want.sort();
        chains_right && have == want
    }

    /// Another container's rule for the same host port.
    fn check_not_published(
        &self,
        name: &str,
        port: &PortMapping,
        objects: &[NfObject<'_>],
    ) -> Result<()> {
        for rule in rules(objects) {
            let Some(other) = container_of(rule).filter(|other| *other != name) else {
                continue;
            };
            let theirs = rule.comment.as_deref().and_then(parse_comment);
            if theirs.is_some_and(|theirs| theirs.overlaps(port)) {
                return Err(NatError::PortTaken {
                    container: name.to_owned(),
                    mapping: *port,
                    other: other.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn set_route_localnet(&self) -> Result<()> {
        let path = PathBuf::from(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            self.bridge
        ));
        if !path.exists() {
            return Err(self.nft_error(format!(
                "bridge {} does not exist (create it before the table)",
                self.bridge
            )));
        }
        write_sysctl(&path, "1")
    }

    /// The table's objects, or `None` when there is no such table.
    fn list(&self) -> Result<Option<Vec<NfObject<'static>>>> {
        let tables =
            helper::get_current_ruleset_with_args(Some(nft_program()), ["list", "tables", "inet"])
                .map_err(|e| self.nft_error(describe(&e)))?;
        let exists = tables.objects.iter().any(
            |o| matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.name == self.table),
        );
        if !exists {
            return Ok(None);
        }
        let table = helper::get_current_ruleset_with_args(
            Some(nft_program()),
            ["list", "table", "inet", self.table.as_str()],
        )
        .map_err(|e| self.nft_error(describe(&e)))?;
        Ok(Some(table.objects.into_owned()))
    }

    /// `nft -j -f -` with the batch, one transaction. Not the crate's runner:
    /// it leaves nft's stderr, the only place saying what failed, to ours.
    fn apply(&self, batch: Batch<'static>) -> Result<()> {
        let ruleset: Nftables<'static> = batch.to_nftables();
        let payload = serde_json::to_vec(&ruleset)
            .map_err(|e| self.nft_error(format!("encoding the batch: {e}")))?;
        let mut nft = Command::new(nft_program())
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.nft_error(nft_missing(&e)))?;
        // nft reads all of its input before it writes a word.
        let written = match nft.stdin.take() {
            Some(mut stdin) => stdin.write_all(&payload),
            None => Ok(()),
        };
        let output = nft
            .wait_with_output()
            .map_err(|e| self.nft_error(format!("waiting for nft: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.nft_error(format!("nft -j -f - failed: {}", stderr.trim())));
        }
        written.map_err(|e| self.nft_error(format!("writing to nft: {e}")))
    }

    fn nft_error(&self, message: String) -> NatError {
        NatError::Nft {
            table: self.table.clone(),
            message,
        }
    }
}

/// Turn on IPv4 forwarding (`net.ipv4.ip_forward=1`), which traffic between
/// containers and other hosts needs. A host-wide switch: the daemon decides
/// when to make it. Returns whether it was already on.
pub fn enable_forwarding() -> Result<bool> {
    turn_on(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
}

/// Turn on IPv6 forwarding (`net.ipv6.conf.all.forwarding=1`), for a bridge
/// with IPv6. Host-wide, and more than a switch: every interface becomes a
/// router, and one with `accept_ra=1` stops accepting router advertisements
/// (`accept_ra=2` keeps them). Returns whether it was already on.
pub fn enable_ipv6_forwarding() -> Result<bool> {
    turn_on(PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding"))
}

/// Write 1 to a sysctl unless it is 1 already; returns whether it was.
fn turn_on(path: PathBuf) -> Result<bool> {
    let was = std::fs::read_to_string(&path).map_err(|source| NatError::Io {
        op: "read",
        path: path.clone(),
        source,
    })?;
    if was.trim() == "1" {
        return Ok(true);
    }
    write_sysctl(&path, "1")?;
    Ok(false)
}

fn write_sysctl(path: &PathBuf, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| NatError::Io {
        op: "write",
        path: path.clone(),
        source,
    })
}

/// Bind the host port on `ip` (every IPv4 address: `None`) briefly: a DNAT rule
/// would hide a program listening there.
fn check_port_free(name: &str, port: &PortMapping, ip: Option<IpAddr>) -> Result<()> {
    let addr = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port.host);
    let bound = match port.protocol {
        Protocol::Tcp => TcpListener::bind(addr).map(drop),
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
    };
    match bound {
        Ok(()) => Ok(()),
        Err(source) if source.kind() == io::ErrorKind::AddrInUse => Err(NatError::PortInUse {
            container: name.to_owned(),
            mapping: *port,
            source,
        }),
        Err(e) => Err(NatError::Invalid {
            container: name.to_owned(),
            message: format!("host port {}: {e}", port.host_side()),
        }),
    }
}

fn rules<'a, 'b>(objects: &'a [NfObject<'b>]) -> impl Iterator<Item = &'a Rule<'b>> {
    objects.iter().filter_map(|o| match o {
        NfObject::ListObject(NfListObject::Rule(r)) => Some(r),
        _ => None,
    })
}

/// The container a rule belongs to, from its comment.
fn container_of<'a>(rule: &'a Rule<'_>) -> Option<&'a str> {
    rule.comment
        .as_deref()?
        .strip_prefix(CONTAINER_PREFIX)?
        .split(' ')
        .next()
}

/// The host side of a container rule's comment: `container NAME tcp IP:PORT -> ...`.
fn parse_comment(comment: &str) -> Option<PortMapping> {
    let mut words = comment.strip_prefix(CONTAINER_PREFIX)?.split(' ').skip(1);
    let protocol = match words.next()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let host = words.next()?;
    // An IPv6 twin (`[::]:PORT`): the IPv4 rule of the same mapping stands for it.
    if host.starts_with('[') {
        return None;
    }
    let (ip, port) = host.split_once(':')?;
    Some(PortMapping {
        host: port.parse().ok()?,
        container: 0,
        protocol,
        host_ip: Some(ip.parse().ok()?),
    })
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// nft's own message is in the error's stderr, not its Display.
fn describe(err: &NftablesError) -> String {
    match err {
        NftablesError::NftFailed { hint, stderr, .. } if !stderr.trim().is_empty() => {
            format!("nft failed while {hint}: {}", stderr.trim())
        }
        NftablesError::NftExecution { inner, .. } => nft_missing(inner),
        other => crate::with_causes(other),
    }
}

fn nft_missing(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::NotFound {
        "nft is not installed (apt-get install nftables)".to_owned()
    } else {
        format!("running nft: {err}")
    }
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.to_owned().into(),
            field: field.to_owned().into(),
        },
    )))
}

fn prefix(addr: impl Into<IpAddr>, len: u8) -> Expression<'static> {
    let addr: IpAddr = addr.into();
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(&addr.to_string())),
        len: len.into(),
    }))
}

fn text(s: &str) -> Expression<'static> {
    Expression::String(s.to_owned().into())
}

/// The `nft` program: found where distributions put it, not on PATH, since a
/// monitor runs with a clean environment (no PATH); `nft` on PATH otherwise.
fn nft_program() -> &'static std::ffi::OsStr {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())
        .map_or(std::ffi::OsStr::new("nft"), std::ffi::OsStr::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(host: u16, protocol: Protocol, host_ip: Option<Ipv4Addr>) -> PortMapping {
        PortMapping {
            host,
            container: 80,
            protocol,
            host_ip,
        }
    }

    #[test]
    fn a_wildcard_host_ip_overlaps_every_address_of_the_same_port_and_protocol() {
        let any = port(8080, Protocol::Tcp, None);
        let zero = port(8080, Protocol::Tcp, Some(Ipv4Addr::UNSPECIFIED));
        let one = port(8080, Protocol::Tcp, Some(Ipv4Addr::new(192, 0, 2, 1)));
        let two = port(8080, Protocol::Tcp, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(any.overlaps(&one) && zero.overlaps(&one) && one.overlaps(&any));
        assert!(!one.overlaps(&two));
        assert!(!any.overlaps(&port(8080, Protocol::Udp, None)));
        assert!(!any.overlaps(&port(8081, Protocol::Tcp, None)));
    }

    #[test]
    fn a_rule_comment_names_its_container_and_host_port() {
        let fw = Firewall::new("berth", "berth0", Ipv4Addr::new(10, 88, 0, 0), 16).unwrap();
        let p = port(8080, Protocol::Udp, Some(Ipv4Addr::new(127, 0, 0, 1)));
        let rules = fw.dnat_rules("web-1", Ipv4Addr::new(10, 88, 0, 2), &p);
        let [pre, out] = <[Rule; 2]>::try_from(rules).unwrap();
        assert_eq!(
            pre.comment.as_deref(),
            Some("container web-1 udp 127.0.0.1:8080 -> 10.88.0.2:80")
        );
        assert_eq!((&*pre.chain, &*out.chain), ("prerouting", "output"));
        assert_eq!(container_of(&pre), Some("web-1"));
        let parsed = parse_comment(pre.comment.as_deref().unwrap()).unwrap();
        assert!(parsed.overlaps(&p));
        // A container named like the start of another is not it.
        assert_ne!(container_of(&pre), Some("web"));
    }

    /// The table as nft lists it after `ensure_table` and a publish: handles set.
    fn listed(fw: &Firewall, published: &[Rule<'static>]) -> Vec<NfObject<'static>> {
        let mut objects = fw.skeleton();
        objects.extend(published.iter().cloned().map(NfListObject::Rule));
        objects
            .into_iter()
            .enumerate()
            .map(|(handle, object)| {
                let handle = Some(handle as u32 + 1);
                NfObject::ListObject(match object {
                    NfListObject::Chain(c) => NfListObject::Chain(Chain { handle, ..c }),
                    NfListObject::Rule(r) => NfListObject::Rule(Rule { handle, ..r }),
                    other => other,
                })
            })
            .collect()
    }

    #[test]
    fn ensure_table_keeps_a_right_table_and_rebuilds_a_wrong_one_keeping_published_ports() {
        let fw = Firewall::new("berth", "berth0", Ipv4Addr::new(10, 88, 0, 0), 16).unwrap();
        let web = fw.dnat_rules(
            "web",
            Ipv4Addr::new(10, 88, 0, 2),
            &port(8080, Protocol::Tcp, None),
        );
        assert_eq!(fw.table_step(None), TableStep::Create);
        let right = listed(&fw, &web);
        assert_eq!(fw.table_step(Some(&right)), TableStep::Keep);

        // A chain gone, a chain with another priority, a base rule of another
        // subnet: each is rebuilt, with web's rules (handles cleared).
        let without_output: Vec<_> = right
            .iter()
            .filter(|o| !matches!(o, NfObject::ListObject(NfListObject::Chain(c)) if c.name == "output"))
            .cloned()
            .collect();
        let other_prio: Vec<_> = right
            .iter()
            .cloned()
            .map(|o| match o {
                NfObject::ListObject(NfListObject::Chain(c)) if c.name == "forward" => {
                    NfObject::ListObject(NfListObject::Chain(Chain {
                        prio: Some(10),
                        ..c
                    }))
                }
                other => other,
            })
            .collect();
        let moved = Firewall::new("berth", "berth0", Ipv4Addr::new(10, 89, 0, 0), 16).unwrap();
        for wrong in [without_output, other_prio, listed(&moved, &web)] {
            assert_eq!(
                fw.table_step(Some(&wrong)),
                TableStep::Rebuild {
                    published: web.to_vec()
                }
            );
        }
    }

    #[test]
    fn with_ipv6_a_port_on_every_address_gets_an_ipv6_twin_and_the_subnet6_is_masqueraded() {
        let subnet6: Subnet6 = "fd42:6265:7274::/64".parse().unwrap();
        let v4 = Firewall::new("berth", "berth0", Ipv4Addr::new(10, 88, 0, 0), 16).unwrap();
        let fw = v4.clone().with_subnet6(subnet6);
        let addr = Ipv4Addr::new(10, 88, 1, 5);
        let comments = |rules: Vec<Rule<'static>>| -> Vec<String> {
            rules
                .iter()
                .map(|r| format!("{}: {}", r.chain, r.comment.as_deref().unwrap_or_default()))
                .collect()
        };
        let every = port(8080, Protocol::Tcp, None);
        assert_eq!(
            comments(fw.dnat_rules("web", addr, &every)),
            [
                "prerouting: container web tcp 0.0.0.0:8080 -> 10.88.1.5:80",
                "output: container web tcp 0.0.0.0:8080 -> 10.88.1.5:80",
                "prerouting: container web tcp [::]:8080 -> [fd42:6265:7274::105]:80",
                "output: container web tcp [::]:8080 -> [fd42:6265:7274::105]:80",
            ]
        );
        // An IPv4 host address has no IPv6 twin; without IPv6 nothing has.
        let one = port(8080, Protocol::Tcp, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(fw.dnat_rules("web", addr, &one).len(), 2);
        assert_eq!(v4.dnat_rules("web", addr, &every).len(), 2);
        // The twin leaves ::1 alone (no IPv6 hairpin) and names its container,
        // but stands for no mapping of its own when ports are compared.
        let twin = &fw.dnat_rules("web", addr, &every)[2];
        let json = serde_json::to_string(&twin.expr).unwrap();
        assert!(
            json.contains(r#""op":"!=""#) && json.contains(r#""right":"::1""#),
            "{json}"
        );
        assert!(json.contains(r#""family":"ip6""#), "{json}");
        assert_eq!(container_of(twin), Some("web"));
        assert_eq!(parse_comment(twin.comment.as_deref().unwrap()), None);

        let masquerades = |fw: &Firewall| {
            fw.base_rules()
                .iter()
                .filter_map(|r| r.comment.as_deref().map(str::to_owned))
                .filter(|c| c.contains("masquerade fd42"))
                .count()
        };
        assert_eq!((masquerades(&v4), masquerades(&fw)), (0, 1));
        // A table made without IPv6 is rebuilt with it, keeping published ports.
        let published = v4.dnat_rules("web", addr, &every);
        assert_eq!(
            fw.table_step(Some(&listed(&v4, &published))),
            TableStep::Rebuild { published }
        );
    }

    #[test]
    fn the_subnet_is_masked_and_bad_names_are_refused() {
        let fw = Firewall::new("berth", "berth0", Ipv4Addr::new(10, 88, 3, 7), 16).unwrap();
        assert_eq!(fw.subnet, Ipv4Addr::new(10, 88, 0, 0));
        assert!(fw.contains(Ipv4Addr::new(10, 88, 255, 1)));
        assert!(!fw.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!(Firewall::new("a b", "berth0", Ipv4Addr::new(10, 0, 0, 0), 8).is_err());
        assert!(
            Firewall::new("berth", "a-very-long-bridge", Ipv4Addr::new(10, 0, 0, 0), 8).is_err()
        );
        assert!(Firewall::new("berth", "..", Ipv4Addr::new(10, 0, 0, 0), 8).is_err());
        assert!(Firewall::new("berth", "berth0", Ipv4Addr::new(10, 0, 0, 0), 31).is_err());
    }
}
