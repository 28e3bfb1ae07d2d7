//! From a `Manifest` as written to a `Container` as run: every problem found is
//! reported with its field path and position, and every default is filled in.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::Diagnostic;
use crate::image_ref::ImageRef;
use crate::locate::{DocumentIndex, Position};
use crate::schema::{self, Manifest, NetworkMode, Protocol, PullPolicy, RestartPolicy, RunState};
use crate::spec::{
    Container, ContainerSpec, Healthcheck, IdMap, Mount, PortMapping, Probe, Resources,
    RootfsSource, SeccompPolicy, Security, Source, UpdateStrategy, UsernsSpec,
};
use crate::units;

pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;
const MAX_NAME: usize = 63;
const MAX_HOSTNAME: usize = 64;

struct Checker<'a> {
    file: &'a Path,
    index: &'a DocumentIndex,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, pos: Position, path: &str, message: impl std::fmt::Display) {
        self.problems.push(Diagnostic::new(
            self.file,
            pos,
            format!("{path}: {message}"),
        ));
    }

    /// A problem with the value at `path`.
    fn value(&mut self, path: &str, message: impl std::fmt::Display) {
        let pos = self.index.value(path);
        self.at(pos, path, message);
    }

    /// A problem with the field as a whole (e.g. it is missing).
    fn key(&mut self, path: &str, message: impl std::fmt::Display) {
        let pos = self.index.key(path);
        self.at(pos, path, message);
    }

    /// Runs a parser and reports its error at `path`.
    fn parse<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.value(path, message)).ok()
    }

    fn absolute(&mut self, path: &str, value: &str, what: &str) -> PathBuf {
        if value.contains('\0') {
            self.value(path, format!("{what} contains a NUL byte"));
        } else if !value.starts_with('/') {
            self.value(
                path,
                format!("{value:?} is not absolute; {what} must start with /"),
            );
        }
        PathBuf::from(value)
    }

    /// An absolute path inside the container that cannot climb out of its root.
    fn inside(&mut self, path: &str, value: &str, what: &str) -> PathBuf {
        let target = self.absolute(path, value, what);
        if target.components().any(|c| c == Component::ParentDir) {
            self.value(
                path,
                format!("{value:?} contains '..'; {what} must stay inside the container"),
            );
        }
        target
    }

    fn no_nul(&mut self, path: &str, value: &str) {
        if value.contains('\0') {
            self.value(path, "contains a NUL byte");
        }
    }
}

/// Check one document. `source` says where it came from.
pub fn container(
    manifest: Manifest,
    index: &DocumentIndex,
    source: Source,
) -> Result<Container, Vec<Diagnostic>> {
    let mut c = Checker {
        file: &source.file,
        index,
        problems: Vec::new(),
    };
    let name = manifest.metadata.name;
    if let Err(message) = check_name(&name) {
        c.value("metadata.name", message);
    }
    for (key, value) in &manifest.metadata.labels {
        if key.is_empty() || key.len() > 253 || key.chars().any(char::is_control) {
            c.key(
                &format!("metadata.labels.{key}"),
                "label keys must be 1 to 253 printable characters",
            );
        }
        c.no_nul(&format!("metadata.labels.{key}"), value);
    }
    if let Some(selector) = &manifest.metadata.selector {
        for (path, at, message) in crate::selector::problems(selector) {
            match at {
                crate::selector::At::Value => c.value(&path, message),
                crate::selector::At::Key => c.key(&path, message),
            }
        }
    }
    let spec = manifest.spec;
    let state = spec.state.unwrap_or(RunState::Running);
    // Asked before the rootfs is checked: a malformed image reference is one
    // problem, not also a missing command.
    let image_supplies_one = spec
        .rootfs
        .as_ref()
        .is_some_and(|r| r.oci.is_some() || r.image.is_some());
    let rootfs = rootfs(&mut c, spec.rootfs.unwrap_or_default());
    let command = command(&mut c, spec.command, image_supplies_one);
    for (key, value) in &spec.env {
        let path = format!("spec.env.{key}");
        if key.is_empty() || key.contains(['=', '\0']) {
            c.key(
                &path,
                format!("{key:?} is not a variable name; it may not be empty or contain '='"),
            );
        }
        c.no_nul(&path, value);
    }
    let working_dir = spec.working_dir.unwrap_or_else(|| "/".to_owned());
    c.inside("spec.workingDir", &working_dir, "workingDir");
    // The default, the name, is checked as a name already.
    let hostname = spec.hostname.unwrap_or_else(|| name.clone());
    if let Err(message) = check_hostname(&hostname)
        && hostname != name
    {
        c.value("spec.hostname", message);
    }
    let stop_signal = match spec.stop_signal {
        Some(text) => c.parse("spec.stopSignal", units::parse_signal(&text)),
        None => Some("SIGTERM".to_owned()),
    };
    let stop_timeout_ms = match spec.stop_timeout {
        None => Some(DEFAULT_STOP_TIMEOUT_MS),
        Some(schema::Seconds::Whole(secs)) => Some(secs.saturating_mul(1000)),
        Some(schema::Seconds::Text(text)) => c
            .parse("spec.stopTimeout", units::parse_duration(&text))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let resources = resources(&mut c, spec.resources.unwrap_or_default());
    let security = security(&mut c, spec.security.unwrap_or_default());
    let mounts = mounts(&mut c, spec.mounts, &security);
    let (network, address, ports) = network(&mut c, spec.network.unwrap_or_default());
    if security.userns.is_some() && network == NetworkMode::Host {
        c.value(
            "spec.security.userns",
            "a user namespace needs a network namespace of its own; use network mode none or bridge",
        );
    }

    if let Some(user) = &spec.user {
        c.parse("spec.user", user.parse::<crate::User>());
    }
    for (i, group) in spec.supplemental_groups.iter().enumerate() {
        if *group == u32::MAX {
            c.value(
                &format!("spec.supplementalGroups[{i}]"),
                "group id 4294967295 is out of range (0 to 4294967294)",
            );
        }
    }

    let healthcheck = spec.healthcheck.map(|h| healthcheck(&mut c, h));
    let depends_on = depends_on(&mut c, &name, spec.depends_on);
    let update_strategy = spec.update_strategy.map(|u| update_strategy(&mut c, u));
    let restart_with_dependency = spec.restart_with_dependency.unwrap_or(false);

    let (Some(stop_signal), Some(stop_timeout_ms), true) =
        (stop_signal, stop_timeout_ms, c.problems.is_empty())
    else {
        return Err(c.problems);
    };
    let spec = ContainerSpec {
        rootfs,
        command,
        env: spec.env,
        working_dir,
        hostname,
        restart_policy: spec.restart_policy.unwrap_or(RestartPolicy::Always),
        stop_signal,
        stop_timeout_ms,
        resources,
        network,
        mounts,
        security,
        init: spec.init.unwrap_or(false),
        user: spec.user,
        supplemental_groups: spec.supplemental_groups,
        address,
        ports,
        healthcheck,
    };
    Ok(Container {
        name,
        labels: manifest.metadata.labels,
        selector: manifest.metadata.selector,
        state,
        depends_on,
        restart_with_dependency,
        update_strategy,
        hash: spec.hash(),
        spec,
        source,
    })
}

pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
pub const DEFAULT_HEALTHY_FOR_MS: u64 = 60_000;

/// A duration field in milliseconds; `None` (reported) when it does not parse.
fn millis(
    c: &mut Checker,
    path: &str,
    value: Option<schema::Seconds>,
    default: u64,
) -> Option<u64> {
    match value {
        None => Some(default),
        Some(schema::Seconds::Whole(secs)) => Some(secs.saturating_mul(1000)),
        Some(schema::Seconds::Text(text)) => c
            .parse(path, units::parse_duration(&text))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A duration that must not be zero (an interval, a timeout).
fn nonzero_millis(
    c: &mut Checker,
    path: &str,
    value: Option<schema::Seconds>,
    default: u64,
) -> u64 {
    match millis(c, path, value, default) {
        Some(0) => {
            c.value(path, "must be longer than 0");
            default
        }
        Some(ms) => ms,
        None => default,
    }
}

fn healthcheck(c: &mut Checker, h: schema::Healthcheck) -> Healthcheck {
    let given = [h.exec.is_some(), h.tcp.is_some(), h.http.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        c.key(
            "spec.healthcheck",
            "set one of exec, tcp or http, not several",
        );
    }
    let notify = h.notify.unwrap_or(false);
    let probe = if let Some(command) = h.exec {
        if command.is_empty() || command[0].is_empty() {
            c.value(
                "spec.healthcheck.exec",
                "needs a command: [PROGRAM, ARGS...]",
            );
        }
        for (i, arg) in command.iter().enumerate() {
            c.no_nul(&format!("spec.healthcheck.exec[{i}]"), arg);
        }
        Some(Probe::Exec(command))
    } else if let Some(port) = h.tcp {
        if port == 0 {
            c.value(
                "spec.healthcheck.tcp",
                "port 0 cannot be connected to; use 1 to 65535",
            );
        }
        Some(Probe::Tcp(port))
    } else if let Some(http) = h.http {
        if http.port == 0 {
            c.value(
                "spec.healthcheck.http.port",
                "port 0 cannot be connected to; use 1 to 65535",
            );
        }
        if let Some(scheme) = &http.scheme
            && !scheme.eq_ignore_ascii_case("http")
        {
            c.value(
                "spec.healthcheck.http.scheme",
                format!("{scheme:?} is not supported; use HTTP (or a tcp check for a TLS port)"),
            );
        }
        let path = http.path.unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || path.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            c.value(
                "spec.healthcheck.http.path",
                format!("{path:?} must start with / and have no spaces or control characters"),
            );
        }
        Some(Probe::Http {
            port: http.port,
            path,
        })
    } else {
        if !notify {
            c.key(
                "spec.healthcheck",
                "set one of exec, tcp or http, or notify: true",
            );
        }
        None
    };
    Healthcheck {
        probe,
        interval_ms: nonzero_millis(
            c,
            "spec.healthcheck.interval",
            h.interval,
            DEFAULT_HEALTH_INTERVAL_MS,
        ),
        timeout_ms: nonzero_millis(
            c,
            "spec.healthcheck.timeout",
            h.timeout,
            DEFAULT_HEALTH_TIMEOUT_MS,
        ),
        retries: match h.retries {
            Some(0) => {
                c.value("spec.healthcheck.retries", "must be at least 1");
                DEFAULT_HEALTH_RETRIES
            }
            Some(n) => n,
            None => DEFAULT_HEALTH_RETRIES,
        },
        start_period_ms: millis(c, "spec.healthcheck.startPeriod", h.start_period, 0).unwrap_or(0),
        notify,
    }
}

/// `spec.dependsOn`: names, not this container's own, each once. Whether they
/// exist, and cycles, are checked across files (`check_dependencies`).
fn depends_on(c: &mut Checker, name: &str, names: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    for (i, dep) in names.iter().enumerate() {
        let path = format!("spec.dependsOn[{i}]");
        if let Err(message) = check_name(dep) {
            c.value(&path, message);
        } else if dep == name {
            c.value(
                &path,
                format!("{dep:?} is this container; a container cannot depend on itself"),
            );
        } else if !seen.insert(dep.as_str()) {
            c.value(&path, format!("{dep:?} is listed twice"));
        }
    }
    names
}

fn update_strategy(c: &mut Checker, u: schema::UpdateStrategy) -> UpdateStrategy {
    UpdateStrategy {
        rollback: u.rollback.unwrap_or(false),
        healthy_for_ms: nonzero_millis(
            c,
            "spec.updateStrategy.healthyFor",
            u.healthy_for,
            DEFAULT_HEALTHY_FOR_MS,
        ),
    }
}

/// The mode, a pinned address and published ports, which need `bridge`. Whether
/// the address lies in the bridge's subnet is known only where the subnet is: at start.
fn network(
    c: &mut Checker,
    network: schema::Network,
) -> (NetworkMode, Option<Ipv4Addr>, Vec<PortMapping>) {
    let mode = network.mode.unwrap_or(NetworkMode::None);
    let bridge_only = |c: &mut Checker, path: &str| {
        if mode != NetworkMode::Bridge {
            c.value(path, "needs spec.network.mode: bridge");
        }
    };
    let address = network.address.and_then(|text| {
        bridge_only(c, "spec.network.address");
        c.parse("spec.network.address", parse_ipv4(&text))
    });
    if !network.ports.is_empty() {
        bridge_only(c, "spec.network.ports");
    }
    let mut ports = Vec::new();
    for (i, port) in network.ports.into_iter().enumerate() {
        let at = format!("spec.network.ports[{i}]");
        let number = |c: &mut Checker, field: &str, value: u64| {
            c.parse(
                &format!("{at}.{field}"),
                u16::try_from(value)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{value} is not a port; use 1 to 65535")),
            )
        };
        let host = number(c, "host", port.host);
        let container = number(c, "container", port.container);
        let host_ip = match port.host_ip {
            Some(text) => c.parse(&format!("{at}.hostIP"), parse_ipv4(&text)),
            None => Some(Ipv4Addr::UNSPECIFIED),
        };
        let (Some(host), Some(container), Some(host_ip)) = (host, container, host_ip) else {
            continue;
        };
        let port = PortMapping {
            host,
            container,
            protocol: port.protocol.unwrap_or(Protocol::Tcp),
            host_ip,
        };
        if let Some(first) = ports.iter().position(|p: &PortMapping| p.clashes(&port)) {
            c.value(
                &format!("{at}.host"),
                format!("host port {port} is published already by spec.network.ports[{first}]"),
            );
            continue;
        }
        ports.push(port);
    }
    (mode, address, ports)
}

pub(crate) fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    text.parse::<Ipv4Addr>()
        .map_err(|_| format!("{text:?} is not an IPv4 address such as 10.88.0.5"))
}

/// A DNS-1123 label, with a reason for each way a name can be wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    let rule =
        "a name is lower-case letters, digits and '-', starting and ending with a letter or digit";
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{name:?} is {} characters long; the limit is {MAX_NAME}",
            name.len()
        ));
    }
    if name.contains(['/', '.']) {
        return Err(format!("{name:?} contains '/' or '.'; {rule}"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("{name:?} has upper-case letters; {rule}"));
    }
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !name.chars().all(valid_char) || name.starts_with('-') || name.ends_with('-') {
        return Err(format!("{name:?} is not a valid name; {rule}"));
    }
    Ok(())
}

fn check_hostname(hostname: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= MAX_NAME
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if hostname.len() > MAX_HOSTNAME || !hostname.split('.').all(label_ok) {
        return Err(format!(
            "{hostname:?} is not a hostname; use letters, digits, '-' and '.', at most {MAX_HOSTNAME} characters"
        ));
    }
    Ok(())
}

fn rootfs(c: &mut Checker, rootfs: schema::Rootfs) -> RootfsSource {
    let set = [
        rootfs.template.is_some(),
        rootfs.path.is_some(),
        rootfs.tarball.is_some(),
        rootfs.oci.is_some(),
        rootfs.image.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        c.key(
            "spec.rootfs",
            "set only one of template, path, tarball, oci and image",
        );
    }
    let pull_policy = rootfs.pull_policy;
    let update_interval_ms = rootfs.update_interval.and_then(|interval| {
        let ms = match interval {
            schema::Seconds::Whole(secs) => Some(secs.saturating_mul(1000)),
            schema::Seconds::Text(text) => c
                .parse("spec.rootfs.updateInterval", units::parse_duration(&text))
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        if ms == Some(0) {
            c.value(
                "spec.rootfs.updateInterval",
                "must be more than 0; leave it out to never check for updates",
            );
        }
        ms
    });
    if rootfs.image.is_none() {
        for (set, field) in [
            (pull_policy.is_some(), "spec.rootfs.pullPolicy"),
            (update_interval_ms.is_some(), "spec.rootfs.updateInterval"),
        ] {
            if set {
                c.key(field, "goes only with spec.rootfs.image");
            }
        }
    } else if update_interval_ms.is_some() && pull_policy != Some(PullPolicy::Always) {
        c.key(
            "spec.rootfs.updateInterval",
            "needs pullPolicy: Always (an update is a pull of the tag's new digest)",
        );
    } else if update_interval_ms.is_some()
        && rootfs.image.as_deref().is_some_and(|i| i.contains('@'))
    {
        c.key(
            "spec.rootfs.updateInterval",
            "the image is pinned by digest, which never changes; name a tag to follow",
        );
    }
    if let Some(image) = rootfs.image {
        let reference = c.parse("spec.rootfs.image", image.parse::<ImageRef>());
        return match reference {
            Some(reference) => RootfsSource::Image {
                reference,
                pull_policy: pull_policy.unwrap_or(PullPolicy::IfNotPresent),
                update_interval_ms,
            },
            // Reported already; the container is not built.
            None => RootfsSource::Host,
        };
    }
    if let Some(path) = rootfs.path {
        let dir = c.absolute("spec.rootfs.path", &path, "rootfs.path");
        let climbs_to_root = dir.components().all(|part| {
            matches!(
                part,
                Component::RootDir | Component::CurDir | Component::ParentDir
            )
        });
        if path.starts_with('/') && climbs_to_root {
            c.value(
                "spec.rootfs.path",
                format!("{path:?} is the host's root; a container needs a root of its own"),
            );
        }
        return RootfsSource::Path(dir);
    }
    if let Some(tarball) = rootfs.tarball {
        let file = c.absolute("spec.rootfs.tarball", &tarball, "rootfs.tarball");
        let known = [".tar", ".tar.gz", ".tgz", ".tar.zst"];
        if !known.iter().any(|ext| tarball.ends_with(ext)) {
            c.value(
                "spec.rootfs.tarball",
                format!("{tarball:?} is not a .tar, .tar.gz, .tgz or .tar.zst archive"),
            );
        }
        return RootfsSource::Tarball(file);
    }
    if let Some(oci) = rootfs.oci {
        let layout = c.absolute("spec.rootfs.oci.layout", &oci.layout, "oci.layout");
        if let Some(reference) = &oci.reference
            && (reference.is_empty() || reference.contains(['\0', '/']))
        {
            c.value(
                "spec.rootfs.oci.ref",
                format!("{reference:?} is not an image tag"),
            );
        }
        return RootfsSource::Oci {
            layout,
            reference: oci.reference,
        };
    }
    match rootfs.template {
        None => RootfsSource::Host,
        Some(schema::Template::Builtin(name)) => match name.as_str() {
            "host" => RootfsSource::Host,
            "busybox" => RootfsSource::Busybox,
            _ => {
                c.value(
                    "spec.rootfs.template",
                    format!("unknown template {name:?}; use host, busybox or {{script: PATH}}"),
                );
                RootfsSource::Host
            }
        },
        Some(schema::Template::Script(script)) => {
            let path = c.absolute(
                "spec.rootfs.template.script",
                &script.script,
                "a template script",
            );
            for (i, arg) in script.args.iter().enumerate() {
                c.no_nul(&format!("spec.rootfs.template.args[{i}]"), arg);
            }
            RootfsSource::Script {
                script: path,
                args: script.args,
            }
        }
    }
}

fn command(c: &mut Checker, command: Option<Vec<String>>, image_supplies_one: bool) -> Vec<String> {
    match command {
        None if image_supplies_one => Vec::new(),
        None => {
            c.key(
                "spec.command",
                "is required (the program to run, e.g. [\"/bin/sh\", \"-c\", \"...\"])",
            );
            Vec::new()
        }
        Some(command) => {
            match command.first() {
                None => c.value("spec.command", "is empty; name the program to run"),
                Some(program) if program.is_empty() => {
                    c.value("spec.command[0]", "the program name is empty")
                }
                Some(_) => {}
            }
            for (i, arg) in command.iter().enumerate() {
                c.no_nul(&format!("spec.command[{i}]"), arg);
            }
            command
        }
    }
}

fn resources(c: &mut Checker, resources: schema::Resources) -> Resources {
    let memory_bytes = resources.memory.and_then(|memory| {
        let bytes = match memory {
            schema::NumberOrText::Number(n) => Ok(n),
            schema::NumberOrText::Text(text) => units::parse_bytes(&text),
        };
        match c.parse("spec.resources.memory", bytes)? {
            0 => {
                c.value("spec.resources.memory", "must be more than 0");
                None
            }
            bytes => Some(bytes),
        }
    });
    let millicpus = resources.cpus.and_then(|cpus| {
        let text = match cpus {
            schema::Cpus::Number(n) => n.to_string(),
            schema::Cpus::Text(text) => text,
        };
        c.parse("spec.resources.cpus", units::parse_millicpus(&text))
    });
    Resources {
        memory_bytes,
        pids: resources.pids,
        millicpus,
    }
}

fn mounts(c: &mut Checker, mounts: Vec<schema::Mount>, security: &Security) -> Vec<Mount> {
    let mut targets = BTreeSet::new();
    let mut resolved = Vec::with_capacity(mounts.len());
    for (i, mount) in mounts.into_iter().enumerate() {
        let source = c.absolute(
            &format!("spec.mounts[{i}].source"),
            &mount.source,
            "a mount source",
        );
        // The runtime refuses a source on the kernel's filesystems by device and
        // inode at start; `..` would hide one from the checks here by name.
        if source.components().any(|part| part == Component::ParentDir) {
            c.value(
                &format!("spec.mounts[{i}].source"),
                format!(
                    "{:?} contains '..'; name the host path without it",
                    mount.source
                ),
            );
        }
        let path = format!("spec.mounts[{i}].target");
        let target = c.inside(&path, &mount.target, "a mount target");
        if target.components().all(|part| part == Component::RootDir) {
            c.value(&path, "cannot mount over the container's root");
        }
        if let Some(message) = kernel_target(&target, &source, security) {
            c.value(&path, message);
        }
        let normal: PathBuf = target.components().collect();
        if !targets.insert(normal) {
            c.value(&path, format!("{:?} is mounted twice", mount.target));
        }
        resolved.push(Mount {
            source,
            target,
            read_only: mount.read_only,
        });
    }
    resolved
}

/// Why a mount at `target` is refused: over /proc or /sys it would hide what
/// berth masks there, over /dev the container's own device nodes. A device node
/// below /dev is allowed when its source is named in `allowHostPaths`.
fn kernel_target(target: &Path, source: &Path, security: &Security) -> Option<String> {
    let mut parts = target
        .components()
        .filter(|c| matches!(c, Component::Normal(_)));
    let top = parts.next()?;
    let below = parts.next().is_some();
    match top.as_os_str().to_str() {
        Some(dir @ ("proc" | "sys")) => Some(format!(
            "{target:?} is on or under /{dir}, where berth masks the kernel's files; mount elsewhere",
        )),
        Some("dev") if !below => Some(
            "cannot mount over /dev; berth makes the container's /dev (name a single device node, e.g. target /dev/ttyUSB0)".to_owned(),
        ),
        Some("dev") if !allowed_host_path(source, security) => Some(format!(
            "{target:?} is under /dev; only a device node whose source is named in spec.security.allowHostPaths may be mounted there",
        )),
        _ => None,
    }
}

/// Is `source` equal to or below one of `allowHostPaths` (by path here; the
/// runtime compares device and inode at start)?
fn allowed_host_path(source: &Path, security: &Security) -> bool {
    security
        .allow_host_paths
        .iter()
        .flatten()
        .any(|allowed| source.starts_with(allowed))
}

fn security(c: &mut Checker, security: schema::Security) -> Security {
    let caps = security.capabilities.unwrap_or_default();
    let cap_add = capabilities(c, "spec.security.capabilities.add", caps.add);
    let cap_drop = capabilities(c, "spec.security.capabilities.drop", caps.drop);
    let seccomp = match security.seccomp {
        None => SeccompPolicy::Default,
        Some(schema::Seccomp::Named(name)) => match name.as_str() {
            "default" => SeccompPolicy::Default,
            "unconfined" => SeccompPolicy::Unconfined,
            _ => {
                c.value(
                    "spec.security.seccomp",
                    format!("{name:?} is not a seccomp policy; use default, unconfined or {{profile: FILE}}"),
                );
                SeccompPolicy::Default
            }
        },
        Some(schema::Seccomp::Profile(p)) => SeccompPolicy::Profile(c.absolute(
            "spec.security.seccomp.profile",
            &p.profile,
            "a seccomp profile",
        )),
    };
    let userns = security.userns.and_then(|userns| match userns {
        schema::Userns::Auto(word) if word == "auto" => Some(UsernsSpec::Auto),
        schema::Userns::Auto(word) => {
            c.value(
                "spec.security.userns",
                format!("{word:?} is not a user namespace setting; use auto or {{uidMap: [...], gidMap: [...]}}"),
            );
            None
        }
        schema::Userns::Maps(maps) => {
            let uid = id_maps(c, "spec.security.userns.uidMap", &maps.uid_map);
            let gid = match &maps.gid_map {
                Some(gid) => id_maps(c, "spec.security.userns.gidMap", gid),
                None => uid.clone(),
            };
            Some(UsernsSpec::Maps { uid, gid })
        }
    });
    let allow_host_paths = security.allow_host_paths.map(|paths| {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                c.absolute(
                    &format!("spec.security.allowHostPaths[{i}]"),
                    p,
                    "an allowed host path",
                )
            })
            .collect()
    });
    Security {
        read_only_rootfs: security.read_only_rootfs,
        cap_add,
        cap_drop,
        seccomp,
        userns,
        allow_host_paths,
    }
}

/// Id ranges: non-empty, within 32 bits, not overlapping, root inside mapped,
/// and not mapping host root (that would be no isolation at all).
fn id_maps(c: &mut Checker, path: &str, entries: &[schema::IdMapEntry]) -> Vec<IdMap> {
    if entries.is_empty() || entries.len() > 340 {
        c.value(path, "needs 1 to 340 ranges");
    }
    let mut maps: Vec<IdMap> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let end = |start: u32| u64::from(start) + u64::from(e.size);
        if e.size == 0 {
            c.value(&at, "size must be at least 1");
        } else if end(e.container) > 1 << 32 || end(e.host) > 1 << 32 {
            c.value(&at, "the range goes past the largest id (4294967295)");
        } else if e.host == 0 {
            c.value(
                &at,
                "maps to host root (id 0), which defeats the user namespace",
            );
        } else {
            let overlaps = |a: u32, b: u32| u64::from(a) < end(b) && u64::from(b) < end(a);
            if maps
                .iter()
                .any(|m| overlaps(m.container, e.container) || overlaps(m.host, e.host))
            {
                c.value(&at, "overlaps another range");
            }
        }
        maps.push(IdMap {
            container: e.container,
            host: e.host,
            size: e.size,
        });
    }
    if !entries.is_empty() && !maps.iter().any(|m| m.container == 0) {
        c.value(path, "must map id 0 (root inside the container)");
    }
    maps
}

/// `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` all become `CAP_NET_ADMIN`.
fn capabilities(c: &mut Checker, path: &str, names: Vec<String>) -> Vec<String> {
    let mut canonical = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let upper = name.to_ascii_uppercase();
        if upper == "ALL" {
            canonical.push(upper);
            continue;
        }
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        match caps::Capability::from_str(&full) {
            Ok(cap) => canonical.push(cap.to_string()),
            Err(_) => c.value(
                &format!("{path}[{i}]"),
                format!("{name:?} is not a capability; use a name such as NET_ADMIN, or ALL"),
            ),
        }
    }
    canonical
}
