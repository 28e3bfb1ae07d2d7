//! `network.mode: bridge` (as root): addresses, names, the host's reach, and
//! nothing left behind. Each test has a bridge and a /24 of 10.213.0.0/16 of its
//! own, passed with --bridge and --subnet (and for IPv6 a /64 of fd42:b3e7::/32
//! with --subnet6); traffic goes only between the host and the test's containers
//! on that bridge. `ip` only looks and cleans up.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::Duration;

use berth_runtime::network::host_veth_name;

use crate::start::{status, wait_for};
use crate::{StateDir, stderr, stdout, unique};

/// PID 1 that ends on SIGTERM, so that stop and reboot do not wait for SIGKILL.
const SERVE: &str =
    r#"  command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]"#;

/// A test's state dir, bridge and subnet; removes the bridge and every veth of
/// its containers when dropped, also on failure.
struct Net {
    state: StateDir,
    bridge: String,
    /// `10.213.N`: the subnet is `10.213.N.0/24`.
    prefix: String,
    /// `fd42:b3e7:0:N::` when the test has IPv6: the subnet6 is it `/64`.
    prefix6: Option<String>,
    names: std::cell::RefCell<Vec<String>>,
}

impl Net {
    fn new() -> Net {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let third = (pid.wrapping_mul(7).wrapping_add(n * 31)) % 200 + 20;
        let prefix = format!("10.213.{third}");
        let used = ip(&["-o", "-4", "addr", "show"]);
        assert!(
            !used.contains(&format!("{prefix}.")),
            "{prefix}.0/24 is in use on this host:\n{used}"
        );
        // Read before this Net's first start turns them on.
        original_ip_forward();
        original_ipv6_forwarding();
        let bridge = format!("bt{}x{n}", pid % 10_000_000);
        assert!(bridge.len() <= 15);
        Net {
            state: StateDir::new(),
            bridge,
            prefix,
            prefix6: None,
            names: Default::default(),
        }
    }

    /// A Net whose bridge has IPv6 too, on a /64 no host interface uses.
    fn with_ipv6() -> Net {
        let mut net = Net::new();
        let third: u8 = net.prefix.rsplit('.').next().unwrap().parse().unwrap();
        let prefix6 = format!("fd42:b3e7:0:{third:x}::");
        let used = ip(&["-o", "-6", "addr", "show"]);
        assert!(
            !used.contains(&prefix6),
            "{prefix6}/64 is in use on this host:\n{used}"
        );
        net.prefix6 = Some(prefix6);
        net
    }

    fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    fn subnet6(&self) -> Option<String> {
        self.prefix6.as_ref().map(|p| format!("{p}/64"))
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = self
            .state
            .berth(&["--bridge", &self.bridge, "--subnet", &self.subnet()]);
        if let Some(subnet6) = self.subnet6() {
            command.args(["--subnet6", &subnet6]);
        }
        command.args(args).output().unwrap()
    }

    /// A unique name, remembered for clean-up.
    fn name(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.names.borrow_mut().push(name.clone());
        name
    }

    fn create(&self, name: &str, network: &str) {
        let manifest = self.state.manifest(
            name,
            &format!("  rootfs: {{template: busybox}}\n{SERVE}\n  network: {network}\n"),
        );
        let out = self.run(&["create", "-f", manifest.to_str().unwrap()]);
        assert!(out.status.success(), "create: {}", stderr(&out));
    }

    fn start(&self, name: &str) -> Output {
        self.run(&["start", name])
    }

    fn exec(&self, name: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", name, "--"];
        args.extend_from_slice(command);
        self.run(&args)
    }

    /// The address berth allocated, from its allocator's file.
    fn address(&self, name: &str) -> Option<Ipv4Addr> {
        let file = self.state.path().join("network/addresses.json");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        json["containers"][name].as_str()?.parse().ok()
    }

    /// A busybox httpd answering `hello-from-NAME` on its port 80, published as
    /// the host's `port`, created and started.
    fn start_httpd(&self, name: &str, port: u16) {
        let manifest = self.state.manifest(
            name,
            &format!(
                "  rootfs: {{template: busybox}}\n  \
                 command: [/bin/sh, -c, 'mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 80 -h /www']\n  \
                 stopTimeout: 1s\n  network: {{mode: bridge, ports: [{{host: {port}, container: 80}}]}}\n"
            ),
        );
        let out = self.run(&["create", "-f", manifest.to_str().unwrap()]);
        assert!(out.status.success(), "create: {}", stderr(&out));
        let out = self.start(name);
        assert!(out.status.success(), "start: {}", stderr(&out));
    }

    /// eth0's IPv4 address as the container sees it.
    fn eth0(&self, name: &str) -> String {
        let out = self.exec(name, &["ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(out.status.success(), "exec ip: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.run(&["stop", "--all", "--timeout", "0s"]);
        for name in self.names.borrow().iter() {
            let _ = Command::new("ip")
                .args(["link", "del", &host_veth_name(self.state.path(), name)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // The nftables table berth keeps for this bridge.
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("berth_{}", self.bridge)])
            .output();
        // A bridged start turns IPv4 forwarding on: the host's own value goes back.
        let _ = std::fs::write(IP_FORWARD, original_ip_forward());
        // And IPv6 forwarding, which only a bridge with IPv6 turns on.
        if self.prefix6.is_some() {
            let _ = std::fs::write(IPV6_FORWARDING, original_ipv6_forwarding());
        }
    }
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// net.ipv6.conf.all.forwarding as it was before this test process started
/// any container.
fn original_ipv6_forwarding() -> &'static str {
    static ORIGINAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGINAL.get_or_init(|| {
        std::fs::read_to_string(IPV6_FORWARDING)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "0".to_owned())
    })
}

/// ip_forward as it was before this test process started any container.
fn original_ip_forward() -> &'static str {
    static ORIGINAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGINAL.get_or_init(|| {
        std::fs::read_to_string(IP_FORWARD)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "0".to_owned())
    })
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` is missing: apt-get install iproute2");
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ping(net: &Net, from: &str, to: &str) -> Output {
    net.exec(from, &["ping", "-c1", "-W2", to])
}

#[test]
fn two_bridged_containers_reach_each_other_by_address_and_by_name_and_the_host_reaches_them() {
    let net = Net::new();
    let (a, b) = (net.name("net-a"), net.name("net-b"));
    net.create(&a, "{mode: bridge}");
    net.create(&b, "{mode: bridge}");
    for name in [&a, &b] {
        let out = net.start(name);
        assert!(out.status.success(), "start {name}: {}", stderr(&out));
    }
    let (addr_a, addr_b) = (net.address(&a).unwrap(), net.address(&b).unwrap());
    assert!(net.eth0(&a).contains(&format!("inet {addr_a}/24")));
    // The bridge's table masquerades the subnet's traffic out of the host.
    let table = Command::new("nft")
        .args(["list", "table", "inet", &format!("berth_{}", net.bridge)])
        .output()
        .unwrap();
    let rules = stdout(&table);
    assert!(
        rules.contains(&format!("ip saddr {}", net.subnet())) && rules.contains("masquerade"),
        "{rules}"
    );
    assert!(addr_a.to_string().starts_with(&net.prefix));

    // By name: each one's /etc/hosts lists both.
    let hosts = stdout(&net.exec(&a, &["cat", "/etc/hosts"]));
    assert!(hosts.contains(&format!("{addr_b}\t{b}")), "{hosts}");
    assert!(hosts.contains(&format!("{addr_a}\t{a}")), "{hosts}");
    let out = ping(&net, &a, &b);
    assert!(
        out.status.success(),
        "{a} → {b}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = ping(&net, &b, &addr_a.to_string());
    assert!(
        out.status.success(),
        "{b} → {addr_a}: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // The host, over the test's bridge.
    let out = Command::new("busybox")
        .args(["ping", "-c1", "-W2", "-I", &net.bridge, &addr_b.to_string()])
        .output()
        .expect("busybox is missing: apt-get install busybox-static");
    assert!(
        out.status.success(),
        "host → {addr_b}: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // No resolver the container cannot reach.
    let resolv = stdout(&net.exec(&a, &["cat", "/etc/resolv.conf"]));
    for line in resolv.lines().filter(|l| l.starts_with("nameserver")) {
        assert!(
            !line.contains(" 127.") && !line.contains(" ::1"),
            "{resolv}"
        );
    }

    // A container destroyed is no longer listed by the others.
    assert!(net.run(&["destroy", "-f", &b]).status.success());
    let hosts = stdout(&net.exec(&a, &["cat", "/etc/hosts"]));
    assert!(!hosts.contains(&b), "{hosts}");
}

#[test]
fn a_container_with_network_none_has_only_loopback() {
    let net = Net::new();
    let (none, bridged) = (net.name("net-none"), net.name("net-eth"));
    net.create(&none, "{mode: none}");
    net.create(&bridged, "{mode: bridge}");
    for name in [&none, &bridged] {
        assert!(net.start(name).status.success());
    }
    let interfaces = |name: &str| -> Vec<String> {
        let dev = stdout(&net.exec(name, &["cat", "/proc/net/dev"]));
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|i| i.trim().to_owned())
            .collect()
    };
    assert_eq!(interfaces(&none), ["lo"]);
    let mut bridged_ones = interfaces(&bridged);
    bridged_ones.sort();
    assert_eq!(bridged_ones, ["eth0", "lo"]);
    assert!(net.address(&none).is_none());
}

#[test]
fn the_address_stays_through_reboot_and_stop_and_start_and_is_freed_on_destroy() {
    let net = Net::new();
    let a = net.name("net-keep");
    net.create(&a, "{mode: bridge}");
    assert!(net.start(&a).status.success());
    let address = net.address(&a).unwrap();
    let veth = host_veth_name(net.state.path(), &a);
    assert!(link_exists(&veth), "no {veth} while {a} runs");

    let init = status(&net.state, &a)["initPid"].as_i64().unwrap();
    assert!(net.run(&["reboot", &a]).status.success());
    wait_for("the reboot", || {
        let s = status(&net.state, &a);
        (s["phase"] == "Running" && s["initPid"].as_i64().is_some_and(|p| p != init)).then_some(())
    });
    assert!(net.eth0(&a).contains(&format!("inet {address}/24")));

    assert!(net.run(&["stop", &a]).status.success());
    assert!(!link_exists(&veth), "{veth} is left after stop");
    assert!(net.start(&a).status.success());
    assert_eq!(net.address(&a), Some(address));
    assert!(net.eth0(&a).contains(&format!("inet {address}/24")));

    assert!(net.run(&["destroy", "-f", &a]).status.success());
    assert!(!link_exists(&veth), "{veth} is left after destroy");
    assert_eq!(net.address(&a), None);
    // Free again: the next container takes it.
    let b = net.name("net-next");
    net.create(&b, "{mode: bridge}");
    assert!(net.start(&b).status.success());
    assert_eq!(net.address(&b), Some(address));
}

#[test]
fn a_pinned_address_is_honoured_and_a_second_pin_of_it_is_refused_naming_the_first() {
    let net = Net::new();
    let (a, b, c) = (
        net.name("net-pin"),
        net.name("net-twin"),
        net.name("net-out"),
    );
    let pinned = format!("{}.77", net.prefix);
    net.create(&a, &format!("{{mode: bridge, address: {pinned}}}"));
    net.create(&b, &format!("{{mode: bridge, address: {pinned}}}"));
    net.create(&c, "{mode: bridge, address: 10.212.0.9}");
    assert!(net.start(&a).status.success());
    assert!(net.eth0(&a).contains(&format!("inet {pinned}/24")));

    let out = net.start(&b);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("of {b}: {pinned} is taken by container {a}")),
        "{err}"
    );
    assert!(!link_exists(&host_veth_name(net.state.path(), &b)));

    let out = net.start(&c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("outside the bridge's subnet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_bridge_is_recorded_by_the_first_start_and_other_flags_are_refused() {
    let net = Net::new();
    let a = net.name("net-flags");
    net.create(&a, "{mode: bridge}");
    assert!(net.start(&a).status.success());
    let addresses = ip(&["-o", "-4", "addr", "show", "dev", &net.bridge]);
    assert!(
        addresses.contains(&format!("{}.1/24", net.prefix)),
        "{addresses}"
    );
    assert!(net.run(&["stop", &a]).status.success());

    let out = net
        .state
        .berth(&["--subnet", "10.213.250.0/24", "start", &a])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--subnet 10.213.250.0/24 disagrees"), "{err}");
    // Without flags, the recorded ones.
    let out = net.state.run(&["start", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(10));
    let veth = ip(&["-o", "link", "show", &host_veth_name(net.state.path(), &a)]);
    assert!(veth.contains(&format!("master {}", net.bridge)), "{veth}");
}

#[test]
fn a_dangling_etc_hosts_symlink_in_the_image_never_makes_a_file_on_the_host() {
    let net = Net::new();
    let a = net.name("net-link");
    net.create(&a, "{mode: bridge}");
    let outside = net.state.dir.path().join("made-by-the-container");
    let hosts = net.state.container_dir(&a).join("rootfs/etc/hosts");
    let _ = std::fs::remove_file(&hosts);
    std::fs::create_dir_all(hosts.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &hosts).unwrap();
    let out = net.start(&a);
    assert!(!outside.exists(), "the start made {}", outside.display());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/etc/hosts"), "{}", stderr(&out));
}

/// Asks `127.0.0.1:port` (or `host:port`) for `/` over plain HTTP/1.0.
fn http_get(host: &str, port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn a_published_port_answers_on_the_hosts_loopback_and_gateway_until_the_container_stops() {
    let net = Net::new();
    let name = net.name("httpd");
    // A free host port: bound and let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    net.start_httpd(&name, port);
    let gateway = format!("{}.1", net.prefix);
    for host in ["127.0.0.1", gateway.as_str()] {
        let answer = wait_for(&format!("an answer on {host}:{port}"), || {
            http_get(host, port).ok().filter(|a| a.contains("200"))
        });
        assert!(answer.contains(&format!("hello-from-{name}")), "{answer}");
    }
    let rules = Command::new("nft")
        .args(["list", "table", "inet", &format!("berth_{}", net.bridge)])
        .output()
        .unwrap();
    assert!(
        stdout(&rules).contains(&format!("container {name} tcp 0.0.0.0:{port}")),
        "{}",
        stdout(&rules)
    );
    // What berth says of it: the address and port in `get -o wide`, the veth,
    // address and rule in `describe`.
    let address = net.address(&name).unwrap();
    let wide = stdout(&net.run(&["get", &name, "-o", "wide"]));
    assert!(
        wide.contains(&address.to_string()) && wide.contains(&format!("{port}->80/tcp")),
        "{wide}"
    );
    let described = stdout(&net.run(&["describe", &name]));
    let veth = host_veth_name(net.state.path(), &name);
    for line in [
        format!("Bridge:         {}", net.bridge),
        format!("Address:        {address}"),
        format!("Veth:           {veth}\n"),
        format!("Rule:           prerouting: container {name} tcp 0.0.0.0:{port} -> {address}:80"),
    ] {
        assert!(described.contains(&line), "no {line:?} in:\n{described}");
    }
    assert!(net.run(&["stop", &name]).status.success());
    let described = stdout(&net.run(&["describe", &name]));
    assert!(
        described.contains(&format!("Veth:           {veth} (absent)"))
            && !described.contains("Rule:"),
        "{described}"
    );
    // Its rule went with it: the port is no longer forwarded anywhere.
    let rules = Command::new("nft")
        .args(["list", "table", "inet", &format!("berth_{}", net.bridge)])
        .output()
        .unwrap();
    assert!(
        !stdout(&rules).contains(&format!("container {name} ")),
        "{}",
        stdout(&rules)
    );
    assert!(http_get("127.0.0.1", port).is_err());
}

#[test]
fn a_host_port_another_program_holds_fails_the_start_saying_so() {
    let net = Net::new();
    let name = net.name("busy");
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let manifest = net.state.manifest(
        &name,
        &format!(
            "  rootfs: {{template: busybox}}\n{SERVE}\n  \
             network: {{mode: bridge, ports: [{{host: {port}, container: 80}}]}}\n"
        ),
    );
    let out = net.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = net.start(&name);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("spec.network.ports") && error.contains(&port.to_string()),
        "{error}"
    );
    drop(holder);
}

/// The daemon's `berth get` item of `name`, as JSON.
fn item(net: &Net, name: &str) -> Option<serde_json::Value> {
    let out = net.run(&["get", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn wait_item(
    net: &Net,
    what: &str,
    name: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(what, || item(net, name).filter(|i| check(i)))
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft")
        .args(args)
        .output()
        .expect("`nft` is missing: apt-get install nftables");
    assert!(out.status.success(), "nft {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn ifindex(link: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{link}/ifindex"))
        .ok()
        .map(|i| i.trim().to_owned())
}

#[test]
fn a_daemon_started_after_kill_9_keeps_addresses_and_veths_and_removes_only_a_stale_veth() {
    use crate::daemon::{Daemon, manifest, save};
    let net = Net::new();
    let flags = ["--bridge", net.bridge.as_str(), "--subnet", &net.subnet()];
    let mut daemon = Daemon::start_with(&net.state, &flags);
    let (kept, orphaned, stale) = (
        net.name("kill-kept"),
        net.name("kill-orph"),
        net.name("kill-stale"),
    );
    let serve = format!(
        "  rootfs: {{template: busybox}}\n{SERVE}\n  stopTimeout: 1s\n  network: {{mode: bridge}}\n"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let published = format!(
        "  rootfs: {{template: busybox}}\n{SERVE}\n  stopTimeout: 1s\n  \
         network: {{mode: bridge, ports: [{{host: {port}, container: 80}}]}}\n"
    );
    save(&net.state, "kept.yaml", &manifest(&kept, &published));
    save(&net.state, "orphaned.yaml", &manifest(&orphaned, &serve));
    // A job that ran and completed: it holds its address but runs no more.
    let job = "  rootfs: {template: busybox}\n  command: [/bin/true]\n  restartPolicy: Never\n  \
               network: {mode: bridge}\n";
    save(&net.state, "stale.yaml", &manifest(&stale, job));
    let running = |i: &serde_json::Value| i["phase"] == "Running" && i["address"].is_string();
    let mut before: Vec<serde_json::Value> = [&kept, &orphaned]
        .iter()
        .map(|n| wait_item(&net, &format!("{n} running with an address"), n, running))
        .collect();
    before.push(wait_item(&net, "the job completed", &stale, |i| {
        i["phase"] == "Stopped" && i["address"].is_string()
    }));
    let address = |i: &serde_json::Value| i["address"].as_str().unwrap_or_default().to_owned();
    let kept_veth = host_veth_name(net.state.path(), &kept);
    let kept_index = ifindex(&kept_veth).expect("the running container's veth");
    // Its rules with their handles: a rule put back anew would have another.
    let table = format!("berth_{}", net.bridge);
    let kept_rules = || -> Vec<String> {
        nft(&["-a", "list", "table", "inet", &table])
            .lines()
            .filter(|l| l.contains(&format!("container {kept} ")))
            .map(str::to_owned)
            .collect()
    };
    let rules_before = kept_rules();
    assert_eq!(rules_before.len(), 2, "{rules_before:?}");

    // The daemon and one container's monitor die; a start of the completed job
    // dies between making its veth pair and moving one end into the container.
    daemon.kill_hard();
    drop(daemon);
    let monitor = status(&net.state, &orphaned)["monitorPid"]
        .as_i64()
        .expect("a monitor pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill {monitor}: {e}"));
    let stale_veth = host_veth_name(net.state.path(), &stale);
    assert!(!link_exists(&stale_veth));
    let stale_peer = stale_veth.replacen("bth", "btp", 1);
    ip(&[
        "link",
        "add",
        &stale_veth,
        "type",
        "veth",
        "peer",
        "name",
        &stale_peer,
    ]);

    let daemon = Daemon::start_with(&net.state, &flags);
    let after = wait_item(&net, "the orphan started anew", &orphaned, |i| {
        running(i) && i["pid"] != before[1]["pid"]
    });
    assert_eq!(address(&after), address(&before[1]), "{}", daemon.log());
    let kept_now = wait_item(&net, "the kept container", &kept, running);
    assert_eq!(kept_now["pid"], before[0]["pid"], "{}", daemon.log());
    assert_eq!(address(&kept_now), address(&before[0]));
    assert_eq!(
        ifindex(&kept_veth).as_deref(),
        Some(kept_index.as_str()),
        "the running container's veth was touched"
    );
    assert_eq!(kept_rules(), rules_before, "a working rule was touched");
    assert!(
        !link_exists(&stale_veth) && !link_exists(&stale_peer),
        "the stale veth is left: {:?}\n{}",
        item(&net, &stale),
        daemon.log()
    );
    let events = crate::daemon::events(&net.state);
    assert!(
        events
            .iter()
            .any(|e| e["name"] == stale.as_str() && e["reason"] == "StaleVethRemoved"),
        "{events:?}\n{}",
        daemon.log()
    );
    let stale_now = item(&net, &stale).unwrap();
    assert_eq!(stale_now["phase"], "Stopped", "{stale_now}");
    // Not running, but not destroyed: its address is still its own.
    assert_eq!(address(&stale_now), address(&before[2]));
}

#[test]
fn a_port_another_program_holds_is_an_event_and_a_condition_until_it_is_free() {
    use crate::daemon::{Daemon, manifest, save};
    let net = Net::new();
    let daemon = Daemon::start_with(
        &net.state,
        &["--bridge", &net.bridge, "--subnet", &net.subnet()],
    );
    let name = net.name("held-port");
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    save(
        &net.state,
        "held.yaml",
        &manifest(
            &name,
            &format!(
                "  rootfs: {{template: busybox}}\n{SERVE}\n  stopTimeout: 1s\n  \
                 network: {{mode: bridge, ports: [{{host: {port}, container: 80}}]}}\n"
            ),
        ),
    );
    let held = wait_item(&net, "a PortInUse condition", &name, |i| {
        i["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "PortInUse"))
    });
    let message = held.to_string();
    assert!(message.contains(&port.to_string()), "{message}");
    assert!(
        crate::daemon::count_events(&net.state, &name, "PortInUse") >= 1,
        "{}",
        daemon.log()
    );
    // The daemon is fine and serves.
    assert!(net.run(&["get"]).status.success());
    drop(holder);
    let running = wait_item(&net, "a start once the port is free", &name, |i| {
        i["phase"] == "Running"
    });
    assert!(
        running["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["kind"] != "PortInUse")),
        "{running}"
    );
}

impl Net {
    /// The IPv6 address a container of IPv4 address `v4` has: the /64 with the
    /// IPv4 host part (the last octet in a /24) as the interface identifier.
    fn address6(&self, v4: Ipv4Addr) -> String {
        format!("{}{:x}", self.prefix6.as_ref().unwrap(), v4.octets()[3])
    }

    /// eth0's IPv6 addresses and the IPv6 routes as the container sees them.
    fn eth0_ipv6(&self, name: &str) -> String {
        let out = self.exec(name, &["ip", "-6", "-o", "addr", "show", "eth0"]);
        assert!(out.status.success(), "exec ip: {}", stderr(&out));
        let routes = self.exec(name, &["ip", "-6", "route", "show"]);
        stdout(&out) + &stdout(&routes)
    }
}

#[test]
fn with_subnet6_containers_reach_each_other_by_ipv6_address_and_name_and_keep_it_across_a_restart()
{
    let net = Net::with_ipv6();
    let prefix6 = net.prefix6.clone().unwrap();
    let (a, b) = (net.name("net6-a"), net.name("net6-b"));
    net.create(&a, "{mode: bridge}");
    net.create(&b, "{mode: bridge}");
    for name in [&a, &b] {
        let out = net.start(name);
        assert!(out.status.success(), "start {name}: {}", stderr(&out));
    }
    let (addr_a, addr_b) = (
        net.address6(net.address(&a).unwrap()),
        net.address6(net.address(&b).unwrap()),
    );
    // Usable at once (no DAD: never "tentative"), with a default route via ::1.
    let seen = net.eth0_ipv6(&a);
    assert!(
        seen.contains(&format!("inet6 {addr_a}/64 scope global")),
        "{seen}"
    );
    let global = seen
        .lines()
        .find(|l| l.contains(&addr_a))
        .unwrap_or_default();
    assert!(!global.contains("tentative"), "{seen}");
    assert!(
        seen.contains(&format!("default via {prefix6}1 dev eth0")),
        "{seen}"
    );
    let bridge = ip(&["-o", "-6", "addr", "show", "dev", &net.bridge]);
    assert!(bridge.contains(&format!("inet6 {prefix6}1/64")), "{bridge}");
    assert_eq!(
        std::fs::read_to_string(IPV6_FORWARDING).unwrap().trim(),
        "1",
        "IPv6 forwarding is off while a bridge with IPv6 is in use"
    );
    let table = Command::new("nft")
        .args(["list", "table", "inet", &format!("berth_{}", net.bridge)])
        .output()
        .unwrap();
    let rules = stdout(&table);
    assert!(
        rules.contains(&format!("ip6 saddr {prefix6}/64")) && rules.contains("masquerade"),
        "{rules}"
    );

    // By address, and by name: /etc/hosts lists both addresses of each.
    let hosts = stdout(&net.exec(&a, &["cat", "/etc/hosts"]));
    assert!(hosts.contains(&format!("{addr_b}\t{b}")), "{hosts}");
    assert!(hosts.contains(&format!("{addr_a}\t{a}")), "{hosts}");
    for (from, to) in [(&a, &addr_b), (&a, &b), (&b, &addr_a)] {
        let out = net.exec(from, &["ping", "-6", "-c1", "-W2", to]);
        assert!(
            out.status.success(),
            "{from} → {to}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(prefix6.as_str()), "{}", stdout(&out));
    }

    // The host, over the test's bridge.
    let out = Command::new("busybox")
        .args(["ping", "-6", "-c1", "-W2", &addr_b])
        .output()
        .expect("busybox is missing: apt-get install busybox-static");
    assert!(
        out.status.success(),
        "host → {addr_b}: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // The same address after a stop and a start.
    assert!(net.run(&["stop", &a]).status.success());
    let out = net.start(&a);
    assert!(out.status.success(), "start {a} again: {}", stderr(&out));
    let seen = net.eth0_ipv6(&a);
    assert!(
        seen.contains(&format!("inet6 {addr_a}/64 scope global")),
        "{seen}"
    );
    let out = net.exec(&b, &["ping", "-6", "-c1", "-W2", &a]);
    assert!(
        out.status.success(),
        "{b} → {a} after the restart: {}",
        stdout(&out)
    );
}

#[test]
fn a_published_port_answers_on_the_bridges_ipv6_address() {
    let net = Net::with_ipv6();
    let name = net.name("httpd6");
    let port = std::net::TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    net.start_httpd(&name, port);
    // An address of the host's own, as a client elsewhere would use one of the
    // host's IPv6 addresses.
    let gateway = format!("{}1", net.prefix6.as_ref().unwrap());
    let answer = wait_for(&format!("an answer on [{gateway}]:{port}"), || {
        http_get(&gateway, port).ok().filter(|a| a.contains("200"))
    });
    assert!(answer.contains(&format!("hello-from-{name}")), "{answer}");
    // From outside too (prerouting), never from ::1, which cannot leave the host.
    let rules = Command::new("nft")
        .args([
            "list",
            "chain",
            "inet",
            &format!("berth_{}", net.bridge),
            "prerouting",
        ])
        .output()
        .unwrap();
    let address6 = net.address6(net.address(&name).unwrap());
    assert!(
        stdout(&rules).contains(&format!(
            "ip6 daddr != ::1 fib daddr type local tcp dport {port} dnat ip6 to [{address6}]:80"
        )),
        "{}",
        stdout(&rules)
    );
    let described = stdout(&net.run(&["describe", &name]));
    assert!(
        described.contains(&format!("IPv6 address:   {address6}\n")),
        "{described}"
    );
    // No IPv6 loopback hairpin: [::1] is the host's own, refused at once.
    let refused = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        Duration::from_secs(5),
    );
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(net.run(&["stop", &name]).status.success());
    assert!(http_get(&gateway, port).is_err());
}

#[test]
fn a_subnet6_that_is_not_a_unique_local_slash_64_is_refused_naming_the_flag() {
    let net = Net::new();
    let a = net.name("net6-bad");
    net.create(&a, "{mode: bridge}");
    for bad in ["2001:db8::/64", "fd42:b3e7::/48"] {
        let out = net
            .state
            .berth(&[
                "--bridge",
                &net.bridge,
                "--subnet",
                &net.subnet(),
                "--subnet6",
                bad,
            ])
            .args(["start", &a])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(&format!("--subnet6: \"{bad}\"")), "{err}");
    }
    // Nothing was made or recorded.
    assert!(!link_exists(&net.bridge));
    assert!(!net.state.path().join("network/config.json").exists());
}
