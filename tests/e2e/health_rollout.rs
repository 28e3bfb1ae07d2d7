//! Health checks meeting start order and rollback: a dependent waits for its
//! dependency to be Healthy, not only Running, and an update whose check turns
//! Unhealthy within `healthyFor` is rolled back.

use std::time::Duration;

use crate::daemon::{Daemon, events, get, manifest, save, wait_for, wait_phase};
use crate::{StateDir, unique};

/// Healthy once /tmp/ok exists (busybox's cat), checked every second; failures
/// in the first 8 s do not count.
const CHECK: &str = "  healthcheck:\n    exec: [/bin/cat, /tmp/ok]\n    interval: 1s\n    timeout: 2s\n    retries: 2\n    startPeriod: 8s\n";

fn busybox(script: &str) -> String {
    format!(
        "  rootfs: {{template: busybox}}\n  command: [/bin/sh, -c, '{script}']\n  stopTimeout: 0s\n{CHECK}"
    )
}

#[test]
fn a_dependent_waits_until_its_dependency_is_healthy_not_only_running() {
    let state = StateDir::new();
    let [db, app] = ["hdep-db", "hdep-app"].map(unique);
    // db runs at once but is Healthy only after 4 s.
    save(
        &state,
        "db.yaml",
        &manifest(&db, &busybox("sleep 4; echo ok > /tmp/ok; exec sleep 1000")),
    );
    save(
        &state,
        "app.yaml",
        &manifest(
            &app,
            &format!("  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n  dependsOn: [{db}]\n"),
        ),
    );
    let daemon = Daemon::start_with(&state, &[]);
    let running = wait_phase(&state, &daemon, &db, "Running");
    assert_ne!(running["health"]["state"], "Healthy", "{running}");
    let waiting = get(&state, &app).unwrap();
    assert_eq!(waiting["phase"], "Pending", "{waiting}\n{}", daemon.log());
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("waiting for {db}"))),
        "{waiting}"
    );
    wait_phase(&state, &daemon, &app, "Running");
    // By then db's check had passed: the verdict was in before app's start.
    let db_item = get(&state, &db).unwrap();
    assert_eq!(db_item["health"]["state"], "Healthy", "{db_item}");
    let started = |name: &str| {
        events(&state)
            .iter()
            .filter(|e| e["name"] == name && e["reason"] == "Started")
            .map(|e| e["seq"].as_u64().unwrap())
            .min()
            .unwrap()
    };
    assert!(started(&db) < started(&app));
}

#[test]
fn an_update_whose_health_check_turns_unhealthy_is_rolled_back() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let name = unique("hroll");
    let file = format!("{name}.yaml");
    let rollout = "  updateStrategy: {rollback: true, healthyFor: 30s}\n";
    save(
        &state,
        &file,
        &manifest(
            &name,
            &format!("{}{rollout}", busybox("echo ok > /tmp/ok; exec sleep 1000")),
        ),
    );
    let v1 = wait_for("v1 to be Healthy", || {
        get(&state, &name).filter(|i| i["phase"] == "Running" && i["health"]["state"] == "Healthy")
    });
    let good = v1["specHash"].as_str().unwrap().to_owned();
    // v2 runs, but removes the file its check reads (the rootfs, /tmp too, is
    // kept across a spec change).
    save(
        &state,
        &file,
        &manifest(
            &name,
            &format!("{}{rollout}", busybox("rm -f /tmp/ok; exec sleep 1001")),
        ),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let back = loop {
        let item = get(&state, &name);
        if let Some(item) = item.as_ref().filter(|i| {
            i["phase"] == "Running"
                && i["specHash"] == good.as_str()
                && i["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["kind"] == "RolledBack"))
        }) {
            break item.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled back to v1; last: {item:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let condition = back["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "RolledBack")
        .unwrap()
        .clone();
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("health")
            || message.contains("Healthy")
            || message.contains("did not stay Running"),
        "{condition}"
    );
    // Rolled back well before healthyFor ran out, and v1 is Healthy again and stays.
    wait_for("v1 Healthy again", || {
        get(&state, &name).filter(|i| i["health"]["state"] == "Healthy")
    });
    let restarts = get(&state, &name).unwrap()["restarts"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let later = get(&state, &name).unwrap();
    assert_eq!(later["specHash"], good.as_str(), "{later}");
    assert_eq!(
        later["restarts"], restarts,
        "a restart loop after the rollback: {later}"
    );
}
