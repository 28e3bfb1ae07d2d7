//! `berth daemon --metrics-addr`: the endpoint parses with Prometheus' own Python
//! parsers, and what it counts is what `berth get` shows (as root).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, manifest, save, wait_phase};
use crate::{StateDir, stderr, stdout, unique};

/// A port nobody listens on now (the kernel's choice, let go at once).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
fn http_get(port: u16, path: &str, accept: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to the metrics port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family as the parser read it.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    kind: String,
    samples: Vec<Sample>,
}

const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families as prometheus
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
except ImportError as e:
    print(f"{e}: install it for this python3: python3 -m pip install prometheus_client (.ci/run does)", file=sys.stderr)
    sys.exit(3)
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
print(json.dumps({f.name: {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
                  for f in parse(sys.stdin.read())}))
"#;

/// Parse `text` with the Python client's parser for `format` ("openmetrics", or
/// "prometheus" for the text format 0.0.4); a parse error fails the test.
fn parse(text: &str, format: &str) -> BTreeMap<String, Family> {
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 (apt-get install python3): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the metrics: {}\n{text}",
        stderr(&out)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, family)| {
            let samples = family["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s[0].as_str().unwrap().to_owned(),
                    labels: serde_json::from_value(s[1].clone()).unwrap(),
                    value: s[2].as_f64().unwrap(),
                })
                .collect();
            let kind = family["type"].as_str().unwrap().to_owned();
            (name.clone(), Family { kind, samples })
        })
        .collect()
}

/// Scrape as Prometheus does (OpenMetrics) and parse.
pub(crate) fn scrape(port: u16) -> BTreeMap<String, Family> {
    let (status, body) = http_get(
        port,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(status, 200, "{body}");
    parse(&body, "openmetrics")
}

/// The value of the sample `name` whose labels include `labels`.
pub(crate) fn value(
    families: &BTreeMap<String, Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn kind<'a>(families: &'a BTreeMap<String, Family>, name: &str) -> &'a str {
    families
        .get(name)
        .map_or_else(|| panic!("no family {name} in {families:?}"), |f| &f.kind)
}

/// Every container as `berth get -o json` lists it.
fn get_all(state: &StateDir) -> Vec<serde_json::Value> {
    let out = state.run(&["get", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Containers by phase and restarts per container: as `berth get` shows them,
/// and as the metrics count them.
type Counts = (BTreeMap<String, u64>, BTreeMap<String, u64>);

fn counts_of_get(items: &[serde_json::Value]) -> Counts {
    let mut phases = BTreeMap::new();
    let mut restarts = BTreeMap::new();
    for item in items {
        *phases
            .entry(item["phase"].as_str().unwrap().to_owned())
            .or_default() += 1;
        restarts.insert(
            item["name"].as_str().unwrap().to_owned(),
            item["restarts"].as_u64().unwrap(),
        );
    }
    (phases, restarts)
}

fn counts_of_metrics(families: &BTreeMap<String, Family>) -> Counts {
    let mut phases = BTreeMap::new();
    let mut restarts = BTreeMap::new();
    for sample in families.values().flat_map(|f| &f.samples) {
        if sample.name == "berth_containers" && sample.value > 0.0 {
            phases.insert(sample.labels["phase"].clone(), sample.value as u64);
        }
        if sample.name == "berth_container_restarts_total" {
            restarts.insert(sample.labels["container"].clone(), sample.value as u64);
        }
    }
    (phases, restarts)
}

/// Scrape and `berth get` until both agree (a crash-looping container changes
/// phase between the two); the agreed counts and the scrape.
fn agreed(state: &StateDir, port: u16, daemon: &Daemon) -> (Counts, BTreeMap<String, Family>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = counts_of_get(&get_all(state));
        let families = scrape(port);
        let after = counts_of_get(&get_all(state));
        let metrics = counts_of_metrics(&families);
        if metrics == before && metrics == after {
            return (metrics, families);
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never agreed with berth get: metrics {metrics:?}, get {before:?} then \
             {after:?}\ndaemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_parse_and_count_what_berth_get_shows() {
    let state = StateDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with(&state, &["--metrics-addr", &addr]);
    let sleeper = unique("metrics-sleeper");
    save(
        &state,
        &format!("{sleeper}.yaml"),
        &manifest(
            &sleeper,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n  \
             resources: {memory: 32Mi, pids: 64}\n",
        ),
    );
    let crasher = unique("metrics-crasher");
    save(
        &state,
        &format!("{crasher}.yaml"),
        &manifest(
            &crasher,
            "  command: [/bin/sh, -c, 'exit 1']\n  restartPolicy: Always\n",
        ),
    );
    wait_phase(&state, &daemon, &sleeper, "Running");
    crate::daemon::wait_for("a first restart of the crasher", || {
        crate::daemon::get(&state, &crasher).filter(|i| i["restarts"].as_u64() >= Some(1))
    });

    let ((phases, restarts), families) = agreed(&state, port, &daemon);
    assert_eq!(phases.values().sum::<u64>(), 2, "{phases:?}");
    assert!(
        phases.get("Running") >= Some(&1),
        "the sleeper runs: {phases:?}"
    );
    let first = restarts[&crasher];
    assert!(first >= 1, "{restarts:?}");
    assert_eq!(restarts[&sleeper], 0);

    // The types a scraper relies on.
    assert_eq!(kind(&families, "berth_containers"), "gauge");
    assert_eq!(kind(&families, "berth_container_restarts"), "counter");
    assert_eq!(kind(&families, "berth_container_reboots"), "counter");
    assert_eq!(kind(&families, "berth_reconciles"), "counter");
    assert_eq!(
        kind(&families, "berth_reconcile_duration_seconds"),
        "histogram"
    );
    assert_eq!(kind(&families, "berth_source"), "info");
    // The sleeper's cgroup, read at the scrape.
    let memory = value(
        &families,
        "berth_container_memory_bytes",
        &[("container", &sleeper)],
    );
    assert!(memory.is_some_and(|m| m > 0.0), "memory: {memory:?}");
    let pids = value(
        &families,
        "berth_container_pids",
        &[("container", &sleeper)],
    );
    assert_eq!(pids, Some(1.0), "sleep alone runs in it");
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroup v2: every cgroup keeps its CPU time.
        let cpu = value(
            &families,
            "berth_container_cpu_seconds_total",
            &[("container", &sleeper)],
        );
        assert!(cpu.is_some_and(|c| c >= 0.0), "cpu: {cpu:?}");
    }
    // The daemon's own work.
    let reconciles = value(&families, "berth_reconciles_total", &[]).unwrap();
    assert!(reconciles >= 3.0, "{reconciles}");
    let timed = value(&families, "berth_reconcile_duration_seconds_count", &[]).unwrap();
    assert!(timed >= 3.0, "{timed}");
    assert_eq!(
        value(
            &families,
            "berth_watcher_rescans_total",
            &[("cause", "start")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &families,
            "berth_watcher_rescans_total",
            &[("cause", "event")]
        ) >= Some(1.0),
        "the manifests saved after the start were rescans: {:?}",
        families.get("berth_watcher_rescans")
    );
    let manifests = crate::daemon::manifests_dir(&state);
    assert_eq!(
        value(
            &families,
            "berth_source_info",
            &[
                ("kind", "directory"),
                ("location", &manifests.display().to_string())
            ]
        ),
        Some(1.0),
        "{:?}",
        families.get("berth_source")
    );
    assert_eq!(value(&families, "berth_source_sync_ok", &[]), Some(1.0));
    assert!(value(&families, "berth_source_sync_age_seconds", &[]).is_some());

    // The crasher restarts again: its counter follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ((_, restarts), _) = agreed(&state, port, &daemon);
        if restarts[&crasher] > first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restart counter stayed at {first}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // curl and other plain clients get Prometheus' text format 0.0.4, which
    // the older parser reads with its types.
    let (status, text) = http_get(port, "/metrics", "*/*");
    assert_eq!(status, 200, "{text}");
    let plain = parse(&text, "prometheus");
    let family_of = |sample: &str| {
        plain
            .values()
            .find(|f| f.samples.iter().any(|s| s.name == sample))
            .map(|f| f.kind.clone())
    };
    assert_eq!(
        family_of("berth_container_restarts_total").as_deref(),
        Some("counter")
    );
    assert_eq!(family_of("berth_containers").as_deref(), Some("gauge"));
    assert!(
        value(
            &plain,
            "berth_container_restarts_total",
            &[("container", &crasher)]
        ) > Some(0.0)
    );

    let (status, _) = http_get(port, "/v1/containers", "*/*");
    assert_eq!(status, 404, "only /metrics is served on the metrics port");
}

#[test]
fn a_metrics_address_in_use_stops_the_daemon_saying_which_flag() {
    let state = StateDir::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let manifests = crate::daemon::manifests_dir(&state);
    let mut child = state
        .berth(&["daemon", "--manifests"])
        .arg(&manifests)
        .args(["--metrics-addr", &addr])
        .arg("--labels-file")
        .arg(state.path().join("labels"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon kept running with its metrics port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("--metrics-addr {addr}")),
        "{}",
        stderr(&out)
    );
    assert!(
        !state.path().join("berth.sock").exists(),
        "the API socket was left behind"
    );
}
