//! berth's nftables table against the real kernel (as root): each test makes its
//! own bridge on a 10.214.X.0/24 no host interface uses, a network namespace
//! with a veth into it standing in for a container, and its own table; Drop
//! guards remove them all, also when a test fails. Traffic stays between the
//! host, that bridge and a namespace standing in for an outside host; the one
//! test that needs ip_forward restores its exact previous value on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::network::nat::{Firewall, NatError, PortMapping, Protocol};

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// A name of this test's own, ≤ 15 characters (an interface name's limit).
fn unique(prefix: &str, n: usize) -> String {
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the nat tests change nftables and links and must run as root"
    );
    for (tool, package) in [
        ("nft", "nftables"),
        ("ip", "iproute2"),
        ("busybox", "busybox-static"),
    ] {
        let found = Command::new(tool)
            .arg(if tool == "busybox" { "true" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "{tool} is missing: apt-get install {package}");
    }
}

/// `ip link del` on drop.
struct Link(String);
impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// `ip netns del` on drop (which takes the container side of the veth with it).
struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The server in the namespace, killed by pid on drop.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test's table, removed on drop by nft itself, not by the code under test.
struct Table(Firewall);
impl Drop for Table {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", self.0.table()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A bridge of the test's own, and optionally a "container" on it running
/// busybox httpd on port 80. Fields drop in this order: table, server, netns,
/// veth, bridge.
struct Net {
    table: Table,
    server: Option<Server>,
    netns: Option<Netns>,
    _veth: Option<Link>,
    _bridge: Link,
    _www: Option<tempfile::TempDir>,
    bridge: String,
    octet: u8,
    n: usize,
}

impl Net {
    fn new() -> Net {
        require_root_and_tools();
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let bridge = unique("bnt", n);
        let octet = free_octet(n);
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let bridge_guard = Link(bridge.clone());
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.214.{octet}.1/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        let fw = Firewall::new(
            &format!("berth_t{}_{n}", std::process::id()),
            &bridge,
            Ipv4Addr::new(10, 214, octet, 0),
            24,
        )
        .expect("firewall");
        Net {
            table: Table(fw),
            server: None,
            netns: None,
            _veth: None,
            _bridge: bridge_guard,
            _www: None,
            bridge,
            octet,
            n,
        }
    }

    /// Add the stand-in container at 10.214.X.2 with httpd answering `marker`.
    fn with_container(mut self, marker: &str) -> Net {
        let ns = unique("nsnt", self.n);
        let veth = unique("vnt", self.n);
        run(&["ip", "netns", "add", &ns]);
        self.netns = Some(Netns(ns.clone()));
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        self._veth = Some(Link(veth.clone()));
        run(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        let addr = format!("{}/24", self.container());
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let gateway = self.gateway().to_string();
        run(&["ip", "-n", &ns, "route", "add", "default", "via", &gateway]);
        let www = tempfile::tempdir().expect("tempdir");
        std::fs::write(www.path().join("index.html"), marker).expect("index.html");
        let www_dir = www.path().to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "80", "-h", &www_dir,
            ])
            .spawn()
            .expect("busybox httpd");
        self.server = Some(Server(child));
        self._www = Some(www);
        // Up when it answers directly on the bridge.
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(SocketAddr::from((self.container(), 80))).is_none() {
            assert!(Instant::now() < deadline, "httpd in {ns} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    fn fw(&self) -> &Firewall {
        &self.table.0
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.octet, 1)
    }

    fn container(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.octet, 2)
    }

    /// `nft -a list table`: every rule with its handle.
    fn listing(&self) -> String {
        run(&["nft", "-a", "list", "table", "inet", self.fw().table()])
    }
}

/// A host outside: a namespace at 10.214.Y.2 behind a veth whose host side is
/// 10.214.Y.1, where `/cgi-bin/peer` answers the address a request came from.
/// Fields drop in order: server, netns, veth, files.
struct Outside {
    _server: Server,
    netns: Netns,
    _veth: Link,
    _www: tempfile::TempDir,
    octet: u8,
}

impl Outside {
    fn new() -> Outside {
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let octet = free_octet(n);
        let ns = unique("nsnt", n);
        let veth = unique("vnt", n);
        run(&["ip", "netns", "add", &ns]);
        let netns = Netns(ns.clone());
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        let veth = Link(veth);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.214.{octet}.1/24"),
            "dev",
            &veth.0,
        ]);
        run(&["ip", "link", "set", &veth.0, "up"]);
        let addr = format!("10.214.{octet}.2/24");
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let www = tempfile::tempdir().unwrap();
        let cgi = www.path().join("cgi-bin");
        std::fs::create_dir(&cgi).unwrap();
        let script =
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"$REMOTE_ADDR\"\n";
        std::fs::write(cgi.join("peer"), script).unwrap();
        std::fs::set_permissions(
            cgi.join("peer"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let www_dir = www.path().to_string_lossy().into_owned();
        let server = Server(
            Command::new("ip")
                .args([
                    "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "80", "-h", &www_dir,
                ])
                .spawn()
                .unwrap(),
        );
        let outside = Outside {
            _server: server,
            netns,
            _veth: veth,
            _www: www,
            octet,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(SocketAddr::from((outside.host(), 80))).is_none() {
            assert!(Instant::now() < deadline, "httpd in {ns} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        outside
    }

    fn host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.octet, 2)
    }

    /// The host's own address on the link to it.
    fn link_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.octet, 1)
    }
}

/// [`get_path`] from inside a namespace: a thread of ours joins it (busybox wget
/// run by `ip netns exec` crashes on this host).
fn get_in(ns: &str, addr: SocketAddr, path: &str) -> Option<String> {
    let ns_path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns = std::fs::File::open(&ns_path).unwrap();
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                get_path(addr, path)
            })
            .join()
            .unwrap()
    })
}

/// Whether a TCP connection from inside a namespace to `addr` opens.
fn connects_in(ns: &str, addr: SocketAddr) -> bool {
    let ns_path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns = std::fs::File::open(&ns_path).unwrap();
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
            .join()
            .unwrap()
    })
}

/// ip_forward on for one test, its exact previous value back on drop.
struct Forwarding(String);
impl Forwarding {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";

    fn enable() -> Forwarding {
        let was = std::fs::read_to_string(Self::PATH).unwrap();
        let guard = Forwarding(was.clone());
        let already = berth_runtime::network::nat::enable_forwarding().unwrap();
        assert_eq!(already, was.trim() == "1");
        assert_eq!(std::fs::read_to_string(Self::PATH).unwrap().trim(), "1");
        guard
    }
}
impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PATH, self.0.trim()) {
            eprintln!("restoring {}: {e}", Self::PATH);
        }
    }
}

/// An X of 10.214.X.0/24 that no host interface uses.
fn free_octet(n: usize) -> u8 {
    let used = run(&["ip", "-br", "addr"]);
    (0..200)
        .map(|i| ((std::process::id() as usize * 7 + n * 13 + i) % 200 + 20) as u8)
        .find(|x| !used.contains(&format!("10.214.{x}.")))
        .expect("a free 10.214.X.0/24")
}

/// A port nothing listens on now: bound and released.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The body of `GET /`, or `None` when nothing answers.
fn get(addr: SocketAddr) -> Option<String> {
    get_path(addr, "/")
}

fn get_path(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

fn tcp(host: u16, container: u16) -> PortMapping {
    PortMapping {
        host,
        container,
        protocol: Protocol::Tcp,
        host_ip: None,
    }
}

#[test]
fn a_published_port_answers_on_host_loopback_and_gateway_until_unpublished() {
    let net = Net::new().with_container("hello from the container");
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    let port = free_port();
    assert_eq!(get(SocketAddr::from(([127, 0, 0, 1], port))), None);

    fw.publish("web", net.container(), &[tcp(port, 80)])
        .expect("publish");
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let gateway = SocketAddr::from((net.gateway(), port));
    assert_eq!(get(loopback).as_deref(), Some("hello from the container"));
    assert_eq!(get(gateway).as_deref(), Some("hello from the container"));

    let rules = fw.rules_of("web").expect("rules_of");
    let chains: Vec<&str> = rules.iter().map(|r| r.chain.as_str()).collect();
    assert_eq!(chains, ["prerouting", "output"], "{rules:?}");
    let expected = format!("container web tcp 0.0.0.0:{port} -> {}:80", net.container());
    assert!(rules.iter().all(|r| r.description == expected), "{rules:?}");

    // Publishing the same again is a no-op; another container's rules stay
    // when this one's go.
    fw.publish("web", net.container(), &[tcp(port, 80)])
        .expect("publish again");
    assert_eq!(fw.rules_of("web").expect("rules_of"), rules);
    let other_port = free_port();
    let other = Ipv4Addr::new(10, 214, net.octet, 3);
    fw.publish("web-2", other, &[tcp(other_port, 8080)])
        .expect("publish web-2");

    assert_eq!(fw.unpublish("web").expect("unpublish"), 2);
    assert_eq!(fw.rules_of("web").expect("rules_of"), []);
    assert_eq!(get(loopback), None, "still answers after unpublish");
    assert_eq!(get(gateway), None, "still answers after unpublish");
    assert_eq!(fw.rules_of("web-2").expect("rules_of").len(), 2);
    assert_eq!(fw.unpublish("web").expect("unpublish again"), 0);

    // With a hostIP, only traffic to that address is forwarded.
    let port = free_port();
    let only_loopback = PortMapping {
        host_ip: Some(Ipv4Addr::LOCALHOST),
        ..tcp(port, 80)
    };
    fw.publish("web", net.container(), &[only_loopback])
        .expect("publish on 127.0.0.1");
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(loopback).as_deref(), Some("hello from the container"));
    assert_eq!(get(SocketAddr::from((net.gateway(), port))), None);
}

#[test]
fn a_host_port_bound_by_another_program_is_refused_with_port_in_use() {
    let net = Net::new();
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let udp = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    let udp_port = udp.local_addr().expect("local addr").port();
    let addr = net.container();

    let err = fw
        .publish("web", addr, &[tcp(port, 80)])
        .expect_err("port is bound");
    assert!(
        matches!(&err, NatError::PortInUse { container, mapping, .. }
            if container == "web" && mapping.host == port),
        "{err}"
    );
    let udp_mapping = PortMapping {
        host: udp_port,
        container: 53,
        protocol: Protocol::Udp,
        host_ip: None,
    };
    let err = fw
        .publish("web", addr, &[udp_mapping])
        .expect_err("udp port is bound");
    assert!(matches!(err, NatError::PortInUse { .. }), "{err}");
    assert_eq!(fw.rules_of("web").expect("rules_of"), []);

    // A port another container publishes is a different error.
    drop(listener);
    fw.publish("web", addr, &[tcp(port, 80)])
        .expect("publish once freed");
    let other = Ipv4Addr::new(10, 214, net.octet, 3);
    let err = fw
        .publish("db", other, &[tcp(port, 5432)])
        .expect_err("taken");
    assert!(
        matches!(&err, NatError::PortTaken { other, .. } if other == "web"),
        "{err}"
    );
}

#[test]
fn ensure_table_again_changes_no_rule_and_a_rebuild_keeps_published_ports() {
    let net = Net::new();
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    let port = free_port();
    fw.publish("web", net.container(), &[tcp(port, 80)])
        .expect("publish");
    let before = net.listing();

    fw.ensure_table().expect("ensure_table again");
    assert_eq!(net.listing(), before, "adopting the table changed it");

    // Another subnet: the table's own rules follow it, the published ports stay.
    let published = fw.rules_of("web").expect("rules_of");
    let moved = Firewall::new(
        fw.table(),
        &net.bridge,
        Ipv4Addr::new(10, 214, net.octet, 128),
        25,
    )
    .expect("firewall");
    moved.ensure_table().expect("rebuild");
    let after = net.listing();
    assert!(
        after.contains(&format!("10.214.{}.128/25", net.octet)),
        "{after}"
    );
    let descriptions = |rules: Vec<berth_runtime::network::nat::NatRule>| {
        rules
            .into_iter()
            .map(|r| (r.chain, r.description))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        descriptions(moved.rules_of("web").expect("rules_of")),
        descriptions(published)
    );
}

#[test]
fn remove_table_removes_only_berths_table() {
    let net = Net::new();
    let fw = net.fw();
    let bystander = format!("berth_by{}_{}", std::process::id(), net.n);
    run(&["nft", "add", "table", "inet", &bystander]);
    struct Bystander(String);
    impl Drop for Bystander {
        fn drop(&mut self) {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &self.0])
                .status();
        }
    }
    let _bystander = Bystander(bystander.clone());

    fw.ensure_table().expect("ensure_table");
    let tables = run(&["nft", "list", "tables"]);
    assert!(
        tables
            .lines()
            .any(|l| l == format!("table inet {}", fw.table())),
        "{tables}"
    );

    assert!(fw.remove_table().expect("remove_table"));
    let tables = run(&["nft", "list", "tables"]);
    assert!(!tables.contains(fw.table()), "{tables}");
    assert!(
        tables
            .lines()
            .any(|l| l == format!("table inet {bystander}")),
        "{tables}"
    );
    assert!(!fw.remove_table().expect("remove_table again"));
}

#[test]
fn with_forwarding_containers_leave_masqueraded_and_outside_hosts_reach_published_ports() {
    let net = Net::new().with_container("hello from the container");
    let outside = Outside::new();
    let _forwarding = Forwarding::enable();
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    let container_ns = &net.netns.as_ref().expect("container netns").0;

    // Outbound: the outside host sees the host's address, not the container's.
    let peer = get_in(
        container_ns,
        SocketAddr::from((outside.host(), 80)),
        "/cgi-bin/peer",
    );
    let peer = peer.expect("the container reaches the outside host");
    let peer = peer.trim_start_matches("[::ffff:").trim_end_matches(']');
    assert_eq!(peer, outside.link_address().to_string());

    // Inbound: the outside host reaches the published port on the host's address.
    let port = free_port();
    fw.publish("web", net.container(), &[tcp(port, 80)])
        .expect("publish");
    let published = SocketAddr::from((outside.link_address(), port));
    assert_eq!(
        get_in(&outside.netns.0, published, "/").as_deref(),
        Some("hello from the container")
    );
}

#[test]
fn containers_cannot_reach_the_hosts_loopback_services_through_route_localnet() {
    let net = Net::new().with_container("unused");
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    // A service of the host's on loopback only.
    let service = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let target = service.local_addr().expect("local addr");
    // A hostile container sends to 127.0.0.2 through its eth0, to the host.
    let ns = &net.netns.as_ref().expect("container netns").0;
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.eth0.route_localnet=1",
    ]);
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "del",
        "local",
        "127.0.0.0/8",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    let gateway = net.gateway().to_string();
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "add",
        "127.0.0.2/32",
        "via",
        &gateway,
        "dev",
        "eth0",
    ]);

    assert!(
        !connects_in(ns, target),
        "a container reached the host's 127.0.0.2"
    );

    // Control: without the guard chain's rule the same packet gets through.
    run(&["nft", "flush", "chain", "inet", fw.table(), "guard"]);
    assert!(
        connects_in(ns, target),
        "the test's hostile route does not work"
    );
}

#[test]
fn a_broken_table_is_repaired_and_errors_say_what_failed() {
    let net = Net::new();
    let fw = net.fw();
    let nowhere = Firewall::new(fw.table(), "bntnowhere", Ipv4Addr::new(10, 214, 0, 0), 24)
        .expect("firewall");
    let err = nowhere
        .ensure_table()
        .expect_err("no such bridge")
        .to_string();
    assert!(err.contains("bridge bntnowhere does not exist"), "{err}");

    fw.ensure_table().expect("ensure_table");
    fw.publish("web", net.container(), &[tcp(free_port(), 80)])
        .expect("publish");
    let published = fw.rules_of("web").expect("rules_of");
    // Someone deletes a chain of no rule of berth's own: publishing fails with nft's own words...
    run(&["nft", "flush", "chain", "inet", fw.table(), "output"]);
    run(&["nft", "delete", "chain", "inet", fw.table(), "output"]);
    let err = fw
        .publish("web", net.container(), &[tcp(free_port(), 80)])
        .expect_err("no output chain");
    assert!(matches!(err, NatError::Nft { .. }), "{err}");
    assert!(err.to_string().contains("Could not process rule"), "{err}");
    // ...and ensure_table puts the chains back, keeping what was published.
    fw.ensure_table().expect("repair");
    let listing = net.listing();
    assert!(
        listing.contains("chain output") && listing.contains("chain forward"),
        "{listing}"
    );
    let prerouting = |rules: Vec<berth_runtime::network::nat::NatRule>| {
        rules
            .into_iter()
            .filter(|r| r.chain == "prerouting")
            .map(|r| r.description)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        prerouting(fw.rules_of("web").expect("rules_of")),
        prerouting(published)
    );
}

#[test]
fn a_published_udp_port_answers_on_host_loopback() {
    let net = Net::new().with_container("unused");
    let fw = net.fw();
    fw.ensure_table().expect("ensure_table");
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free udp port")
        .port();
    fw.publish(
        "dns",
        net.container(),
        &[PortMapping {
            host: port,
            container: 53,
            protocol: Protocol::Udp,
            host_ip: None,
        }],
    )
    .expect("publish");

    // An echo on the container's 53, in a thread of ours inside its namespace.
    let ns_path = format!("/run/netns/{}", net.netns.as_ref().expect("netns").0);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let container = net.container();
    let echo = std::thread::spawn(move || {
        let netns = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind((container, 53)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..len], from);
        }
    });
    ready_rx.recv().expect("echo ready");

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    client.send_to(b"ping", ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 64];
    let answer = client
        .recv_from(&mut buf)
        .map(|(len, _)| buf[..len].to_vec());
    echo.join().expect("echo thread");
    assert_eq!(
        answer.expect("an answer through the published udp port"),
        b"ping"
    );
}
