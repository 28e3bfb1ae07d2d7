//! `spec.healthcheck`: checks run by each container's monitor (exec, tcp, the
//! sd_notify socket), what `berth get` shows of them, and the daemon restarting
//! an Unhealthy container (as root).

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, count_events, events, get, manifest, save, wait_for};
use crate::{StateDir, stderr, stdout, unique};

/// `health.state` of `berth get -o json` (from the daemon, or the state dir).
fn health(state: &StateDir, name: &str) -> Option<String> {
    get(state, name)?["health"]["state"]
        .as_str()
        .map(str::to_owned)
}

fn wait_health(state: &StateDir, name: &str, want: &str) -> serde_json::Value {
    wait_for(&format!("{name} to be {want}"), || {
        get(state, name).filter(|i| i["phase"] == "Running" && i["health"]["state"] == want)
    })
}

/// `berth create -f` and `berth start`, no daemon.
fn run_by_hand(state: &StateDir, name: &str, spec: &str) {
    let file = state.manifest(name, spec);
    let out = state.run(&["create", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The `berth get` table's row of `name`.
fn table_row(state: &StateDir, name: &str) -> String {
    let out = state.run(&["get"]);
    stdout(&out)
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_owned()
}

const FILE_CHECK: &str = "  healthcheck:\n    exec: [/bin/cat, /tmp/ok]\n    interval: 1s\n    timeout: 2s\n    retries: 2\n";

#[test]
fn an_exec_check_that_starts_failing_restarts_the_container_and_shows_unhealthy_then_healthy() {
    let state = StateDir::new();
    let port = crate::metrics::free_port();
    let daemon = Daemon::start_with(&state, &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    // Its command makes the file the check reads, at every start.
    let spec = format!(
        "  rootfs: {{template: busybox}}\n  command: [/bin/sh, -c, 'echo fine > /tmp/ok; exec sleep 1000']\n  stopTimeout: 0s\n{FILE_CHECK}"
    );
    let restarted = unique("restarted");
    save(
        &state,
        &format!("{restarted}.yaml"),
        &manifest(&restarted, &spec),
    );
    // The same under `Never`: it stays Unhealthy until the check passes again.
    let kept = unique("kept");
    save(
        &state,
        &format!("{kept}.yaml"),
        &manifest(&kept, &format!("{spec}  restartPolicy: Never\n")),
    );
    let first = wait_health(&state, &restarted, "Healthy");
    assert_eq!(first["health"]["lastOutput"], "fine");
    wait_health(&state, &kept, "Healthy");
    let row = table_row(&state, &restarted);
    assert!(row.contains("Running (healthy)"), "{row}");

    for name in [&restarted, &kept] {
        let out = state.run(&["exec", name, "--", "rm", "/tmp/ok"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Never: Unhealthy, shown beside the phase, as a condition, by describe.
    let unhealthy = wait_health(&state, &kept, "Unhealthy");
    assert!(
        unhealthy["health"]["lastOutput"]
            .as_str()
            .unwrap()
            .contains("/tmp/ok"),
        "{unhealthy}"
    );
    assert_eq!(unhealthy["health"]["failingStreak"], 2);
    assert!(
        unhealthy["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "Unhealthy"),
        "{unhealthy}"
    );
    let row = table_row(&state, &kept);
    assert!(row.contains("Running (unhealthy)"), "{row}");
    // The metric says so too, parsed by Prometheus' own Python parser.
    let families = crate::metrics::scrape(port);
    let metric = |state: &str| {
        crate::metrics::value(
            &families,
            "berth_container_health",
            &[("container", &kept), ("state", state)],
        )
    };
    assert_eq!(
        (metric("Unhealthy"), metric("Healthy"), metric("Starting")),
        (Some(1.0), Some(0.0), Some(0.0))
    );
    let out = state.run(&["describe", &kept]);
    let text = stdout(&out);
    assert!(text.contains("Health:    Unhealthy"), "{text}");
    assert!(text.contains("/tmp/ok"), "{text}");
    // Not restarted; healthy again once the check passes.
    let out = state.run(&["exec", &kept, "--", "sh", "-c", "echo back > /tmp/ok"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = wait_health(&state, &kept, "Healthy");
    assert_eq!(back["health"]["lastOutput"], "back");
    assert_eq!(back["restarts"], 0);
    assert_eq!(back["pid"], unhealthy["pid"]);

    // Always: restarted, with an Unhealthy event carrying the check's output,
    // and healthy again in its new run.
    let again = wait_for("the unhealthy container's restart", || {
        get(&state, &restarted).filter(|i| {
            i["restarts"] == 1 && i["pid"] != first["pid"] && i["health"]["state"] == "Healthy"
        })
    });
    assert_eq!(again["phase"], "Running");
    let event = events(&state)
        .into_iter()
        .find(|e| e["name"] == restarted.as_str() && e["reason"] == "Unhealthy")
        .unwrap_or_else(|| panic!("no Unhealthy event:\n{}", daemon.log()));
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("2 times in a row"), "{message}");
    assert!(message.contains("/tmp/ok"), "{message}");
    assert_eq!(count_events(&state, &kept, "Unhealthy"), 0);
}

#[test]
fn a_tcp_check_connects_inside_the_containers_network_namespace() {
    let state = StateDir::new();
    // Network mode none: loopback only, reachable from the container's namespace alone.
    let listening = unique("listening");
    run_by_hand(
        &state,
        &listening,
        "  rootfs: {template: busybox}\n  command: [nc, -ll, -p, '8080', -e, /bin/true]\n  stopTimeout: 0s\n  healthcheck: {tcp: 8080, interval: 1s, retries: 1}\n",
    );
    let silent = unique("silent");
    run_by_hand(
        &state,
        &silent,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n  healthcheck: {tcp: 8080, interval: 1s, retries: 1}\n",
    );
    // busybox httpd: a 200 for a file there, a 404 for one that is not.
    let http_spec = |path: &str| {
        format!(
            "  rootfs: {{template: busybox}}\n  command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo hi > /tmp/www/ok && exec httpd -f -p 8081 -h /tmp/www']\n  stopTimeout: 0s\n  healthcheck: {{http: {{port: 8081, path: {path}}}, interval: 1s, retries: 1}}\n"
        )
    };
    let served = unique("served");
    run_by_hand(&state, &served, &http_spec("/ok"));
    let missing = unique("missing");
    run_by_hand(&state, &missing, &http_spec("/missing"));
    // A check that outlives its timeout is killed, with what it started.
    let slow = unique("slow");
    run_by_hand(
        &state,
        &slow,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n  healthcheck: {exec: [/bin/sh, -c, 'sleep 77; true'], timeout: 1s, interval: 1s, retries: 1}\n",
    );

    let healthy = wait_health(&state, &listening, "Healthy");
    assert_eq!(healthy["health"]["lastOutput"], "connected to port 8080");
    let unhealthy = wait_health(&state, &silent, "Unhealthy");
    assert!(
        unhealthy["health"]["lastOutput"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{unhealthy}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&state.run(&["status", &listening]).stdout).unwrap();
    assert_eq!(status["health"]["state"], "Healthy");

    let ok = wait_health(&state, &served, "Healthy");
    assert!(
        ok["health"]["lastOutput"]
            .as_str()
            .unwrap()
            .contains(" 200"),
        "{ok}"
    );
    let not_found = wait_health(&state, &missing, "Unhealthy");
    assert!(
        not_found["health"]["lastOutput"]
            .as_str()
            .unwrap()
            .contains(" 404"),
        "{not_found}"
    );

    let late = wait_health(&state, &slow, "Unhealthy");
    assert!(
        late["health"]["lastOutput"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{late}"
    );
    // Time for a few more checks: were they not killed, their sleeps would pile up.
    std::thread::sleep(Duration::from_secs(5));
    let out = state.run(&["exec", &slow, "--", "ps"]);
    let processes = stdout(&out);
    // Nor zombies (busybox ps shows one as `[sleep]`): the container's init, a
    // plain `sleep`, never reaps.
    assert!(
        !processes.contains("[sleep]"),
        "timed-out checks left zombies:\n{processes}"
    );
    // Between two checks there may be one under way; never several.
    assert!(
        processes
            .lines()
            .filter(|l| l.trim_end().ends_with("sleep 77"))
            .count()
            <= 1,
        "checks that timed out left their processes:\n{processes}"
    );
}

#[test]
fn checks_go_on_while_the_daemon_is_stopped_and_it_restarts_what_turned_unhealthy() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let name = unique("alone");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            &format!(
                "  rootfs: {{template: busybox}}\n  command: [/bin/sh, -c, 'echo fine > /tmp/ok; exec sleep 1000']\n  stopTimeout: 0s\n{FILE_CHECK}"
            ),
        ),
    );
    let first = wait_health(&state, &name, "Healthy");
    // Stopped by its pid (SIGTERM): the containers run on.
    drop(daemon);
    let out = state.run(&["exec", &name, "--", "rm", "/tmp/ok"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `berth get` reads the state dir, asking the monitor: its checks went on.
    let unhealthy = wait_health(&state, &name, "Unhealthy");
    assert_eq!(unhealthy["pid"], first["pid"]);
    let saved = std::fs::read_to_string(state.container_dir(&name).join("status")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["health"]["state"], "Unhealthy", "{saved}");

    // A daemon again: it finds it Unhealthy and restarts it.
    let daemon = Daemon::start_with(&state, &[]);
    let again = wait_for("the restart by the new daemon", || {
        get(&state, &name).filter(|i| i["pid"] != first["pid"] && i["health"]["state"] == "Healthy")
    });
    assert_eq!(again["restarts"], 1, "{}", daemon.log());
    assert_eq!(count_events(&state, &name, "Unhealthy"), 1);
}

#[test]
fn notify_ready_makes_it_healthy_and_one_that_never_says_so_stays_starting() {
    let state = StateDir::new();
    // The host template has python3 (the host's /usr); the root is read-only,
    // so the socket's directory goes onto its tmpfs /run.
    let ready = unique("ready");
    run_by_hand(
        &state,
        &ready,
        "  command: [/usr/bin/python3, -c, \"import os, socket, time\\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\\ns.sendto(b'STATUS=warming up', os.environ['NOTIFY_SOCKET'])\\ntime.sleep(1)\\ns.sendto(b'READY=1\\\\nSTATUS=serving', os.environ['NOTIFY_SOCKET'])\\nprint('sent', flush=True)\\ntime.sleep(1000)\"]\n  stopTimeout: 0s\n  security: {readOnlyRootfs: true}\n  healthcheck: {notify: true}\n",
    );
    let silent = unique("never-ready");
    run_by_hand(
        &state,
        &silent,
        "  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n  healthcheck: {notify: true}\n",
    );
    let started = Instant::now();
    let healthy = wait_health(&state, &ready, "Healthy");
    assert_eq!(healthy["health"]["lastOutput"], "serving");
    // The socket is the container's own: in its directory, not the host's /run.
    let socket = state.container_dir(&ready).join("notify/notify.sock");
    assert!(socket.exists(), "no {}", socket.display());
    // Read-only inside: the container cannot put anything beside it.
    let out = state.run(&["exec", &ready, "--", "touch", "/run/notify/x"]);
    assert!(
        !out.status.success(),
        "the notify directory is writable inside"
    );
    // Given as long again as the other took, it still has not said so.
    std::thread::sleep(started.elapsed());
    assert_eq!(health(&state, &silent).as_deref(), Some("Starting"));
    // The command's environment names it.
    let out = state.run(&["exec", &silent, "--", "cat", "/proc/1/environ"]);
    assert!(
        stdout(&out)
            .split('\0')
            .any(|v| v == "NOTIFY_SOCKET=/run/notify/notify.sock"),
        "{}",
        stdout(&out)
    );

    // A reboot starts again from Starting: the verdict is the new run's own.
    let out = state.run(&["reboot", &ready]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rebooted = wait_for("the reboot's READY=1", || {
        get(&state, &ready).filter(|i| {
            i["reboots"] == 1
                && i["health"]["state"] == "Healthy"
                && i["health"]["since"].as_u64() > healthy["health"]["since"].as_u64()
        })
    });
    assert_ne!(rebooted["pid"], healthy["pid"]);

    // Gone with the monitor.
    let out = state.run(&["stop", &ready]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!socket.exists(), "{} is left", socket.display());
}

#[test]
fn an_exec_checks_keeper_holds_no_capability_but_kill_while_the_container_can_see_it() {
    let state = StateDir::new();
    let name = unique("keeper");
    // The check's parent is its keeper, in the container's PID namespace.
    run_by_hand(
        &state,
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n  \
         healthcheck:\n    exec: [/bin/sh, -c, 'sleep 0.3; grep -E \"^Cap(Eff|Prm|Bnd)\" /proc/$PPID/status']\n    \
         interval: 1s\n",
    );
    let item = wait_for("the keeper's capabilities in the check's output", || {
        get(&state, &name).filter(|i| {
            i["health"]["lastOutput"]
                .as_str()
                .is_some_and(|o| o.contains("CapBnd"))
        })
    });
    let output = item["health"]["lastOutput"].as_str().unwrap();
    // CAP_KILL is bit 5.
    for line in [
        "CapPrm:\t0000000000000020",
        "CapEff:\t0000000000000020",
        "CapBnd:\t0000000000000020",
    ] {
        assert!(output.contains(line), "{line:?} not in:\n{output}");
    }
}
