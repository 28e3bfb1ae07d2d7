//! Start order (`spec.dependsOn`): dependencies start first, cycles and unknown
//! names start nothing, and a set removed at once stops dependents first.

use std::time::Duration;

use crate::daemon::{Daemon, events, get, manifest, save, wait_for, wait_phase};
use crate::{StateDir, berth, stderr, stdout, unique};

const SLEEP: &str = "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n";

fn depends(on: &[&str]) -> String {
    format!("{SLEEP}  dependsOn: [{}]\n", on.join(", "))
}

/// The sequence number of `name`'s first event of `reason`.
fn first_seq(state: &StateDir, name: &str, reason: &str) -> u64 {
    events(state)
        .iter()
        .filter(|e| e["name"] == name && e["reason"] == reason)
        .map(|e| e["seq"].as_u64().unwrap())
        .min()
        .unwrap_or_else(|| panic!("no {reason} event of {name}: {:#?}", events(state)))
}

#[test]
fn a_chain_written_in_any_file_order_starts_from_its_end() {
    let state = StateDir::new();
    // Names sort opposite to the order they must start in; files in a third order.
    let [a, b, c] = ["ord-a", "ord-b", "ord-c"].map(unique);
    save(&state, "1.yaml", &manifest(&b, &depends(&[&c])));
    save(&state, "2.yaml", &manifest(&a, &depends(&[&b])));
    save(&state, "3.yaml", &manifest(&c, SLEEP));
    let daemon = Daemon::start_with(&state, &[]);
    for name in [&a, &b, &c] {
        wait_phase(&state, &daemon, name, "Running");
    }
    let started: Vec<u64> = [&c, &b, &a]
        .iter()
        .map(|n| first_seq(&state, n, "Started"))
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] < w[1]),
        "not started c, b, a: {started:?}\n{}",
        daemon.log()
    );
}

#[test]
fn a_container_waits_visibly_for_a_stopped_dependency_and_starts_once_it_runs() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let [app, db] = ["wait-app", "wait-db"].map(unique);
    save(
        &state,
        "db.yaml",
        &manifest(&db, &format!("{SLEEP}  state: Stopped\n")),
    );
    save(&state, "app.yaml", &manifest(&app, &depends(&[&db])));
    let item = wait_for("app to wait for db", || {
        get(&state, &app).filter(|i| {
            i["phase"] == "Pending"
                && i["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("waiting for {db}")))
        })
    });
    assert!(item["pid"].is_null(), "{item}");
    let out = state.run(&["get"]);
    assert!(
        stdout(&out).contains(&format!("waiting for {db}")),
        "{}",
        stdout(&out)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get(&state, &app).unwrap()["phase"], "Pending");
    // db runs: app is started by db's start, not by a resync (3 s in tests).
    save(&state, "db.yaml", &manifest(&db, SLEEP));
    wait_phase(&state, &daemon, &db, "Running");
    let t0 = std::time::Instant::now();
    wait_phase(&state, &daemon, &app, "Running");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "app started {:?} after db",
        t0.elapsed()
    );
    assert!(first_seq(&state, &db, "Started") < first_seq(&state, &app, "Started"));
}

#[test]
fn a_cycle_fails_validation_naming_it_and_the_daemon_starts_none_of_it() {
    let state = StateDir::new();
    let [p, q, r, free] = ["cyc-p", "cyc-q", "cyc-r", "cyc-free"].map(unique);
    save(&state, "p.yaml", &manifest(&p, &depends(&[&q])));
    save(&state, "q.yaml", &manifest(&q, &depends(&[&r])));
    save(&state, "r.yaml", &manifest(&r, &depends(&[&p])));
    save(&state, "free.yaml", &manifest(&free, SLEEP));
    let dir = crate::daemon::manifests_dir(&state);
    let out = berth().arg("validate").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let cycle = format!("dependency cycle {p} -> {q} -> {r} -> {p}");
    assert!(
        stderr(&out).contains(&cycle) || stdout(&out).contains(&cycle),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let daemon = Daemon::start_with(&state, &[]);
    wait_phase(&state, &daemon, &free, "Running");
    for name in [&p, &q, &r] {
        let item = wait_for(&format!("{name} to say why it is not started"), || {
            get(&state, name).filter(|i| {
                i["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not started") && m.contains(&cycle))
            })
        });
        assert_eq!(item["phase"], "Pending", "{item}");
        assert!(item["pid"].is_null(), "{item}");
        assert!(
            item["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["message"].as_str().unwrap().contains(&cycle)),
            "{item}"
        );
        assert!(!state.container_dir(name).exists(), "{name} was created");
    }
}

#[test]
fn a_set_removed_at_once_stops_dependents_before_their_dependencies() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let [a, b, c] = ["rm-a", "rm-b", "rm-c"].map(unique);
    // b's stop takes a moment (it ignores SIGTERM for a 1 s stopTimeout), so a
    // dependency stopped alongside would be gone first.
    let slow =
        "  command: [/bin/sh, -c, 'trap \"\" TERM; sleep infinity & wait']\n  stopTimeout: 1s\n";
    save(
        &state,
        "set.yaml",
        &format!(
            "{}---\n{}---\n{}",
            manifest(&a, &depends(&[&b])),
            manifest(&b, &format!("{slow}  dependsOn: [{c}]\n")),
            manifest(&c, SLEEP)
        ),
    );
    for name in [&a, &b, &c] {
        wait_phase(&state, &daemon, name, "Running");
    }
    std::fs::remove_file(crate::daemon::manifests_dir(&state).join("set.yaml")).unwrap();
    wait_for("the set to be removed", || {
        [&a, &b, &c]
            .iter()
            .all(|n| get(&state, n).is_none())
            .then_some(())
    });
    let removed: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|n| first_seq(&state, n, "Removed"))
        .collect();
    assert!(
        removed.windows(2).all(|w| w[0] < w[1]),
        "not stopped a, b, c: {removed:?}\n{}",
        daemon.log()
    );
}

#[test]
fn stop_on_exit_stops_dependents_before_their_dependencies() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &["--stop-on-exit"]);
    let [a, b, c] = ["exit-a", "exit-b", "exit-c"].map(unique);
    let slow =
        "  command: [/bin/sh, -c, 'trap \"\" TERM; sleep infinity & wait']\n  stopTimeout: 1s\n";
    save(&state, "a.yaml", &manifest(&a, &depends(&[&b])));
    save(
        &state,
        "b.yaml",
        &manifest(&b, &format!("{slow}  dependsOn: [{c}]\n")),
    );
    save(&state, "c.yaml", &manifest(&c, SLEEP));
    let pids: Vec<i32> = [&a, &b, &c]
        .iter()
        .map(|n| {
            wait_phase(&state, &daemon, n, "Running")["pid"]
                .as_i64()
                .unwrap() as i32
        })
        .collect();
    // SIGTERM, and wait for the daemon to exit.
    drop(daemon);
    for pid in pids {
        assert!(crate::process_gone(pid), "{pid} still runs");
    }
    let stopped: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|n| first_seq(&state, n, "Stopped"))
        .collect();
    assert!(
        stopped.windows(2).all(|w| w[0] < w[1]),
        "not stopped a, b, c: {stopped:?}"
    );
}

#[test]
fn restart_with_dependency_stops_the_dependent_first_and_starts_it_after() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let [dep, app] = ["rwd-dep", "rwd-app"].map(unique);
    // dep runs 2 s, then crashes (and is restarted under restartPolicy Always).
    save(
        &state,
        "dep.yaml",
        &manifest(
            &dep,
            "  command: [/bin/sh, -c, 'sleep 2; exit 1']\n  stopTimeout: 0s\n",
        ),
    );
    save(
        &state,
        "app.yaml",
        &manifest(
            &app,
            &format!("{SLEEP}  dependsOn: [{dep}]\n  restartWithDependency: true\n"),
        ),
    );
    wait_phase(&state, &daemon, &app, "Running");
    wait_for("app to be restarted after dep", || {
        let seen = events(&state);
        let has = |name: &str, reason: &str| {
            seen.iter()
                .any(|e| e["name"] == name && e["reason"] == reason)
        };
        (has(&dep, "Restarted") && has(&app, "Restarted")).then_some(())
    });
    let (stopped, dep_again, app_again) = (
        first_seq(&state, &app, "Stopped"),
        first_seq(&state, &dep, "Restarted"),
        first_seq(&state, &app, "Restarted"),
    );
    assert!(
        stopped < dep_again && dep_again < app_again,
        "app stopped {stopped}, dep restarted {dep_again}, app restarted {app_again}\n{}",
        daemon.log()
    );
}

#[test]
fn a_running_container_whose_dependency_goes_away_keeps_running_and_says_why() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let [app, db] = ["keep-app", "keep-db"].map(unique);
    save(&state, "db.yaml", &manifest(&db, SLEEP));
    save(&state, "app.yaml", &manifest(&app, &depends(&[&db])));
    let pid = wait_phase(&state, &daemon, &app, "Running")["pid"].clone();
    std::fs::remove_file(crate::daemon::manifests_dir(&state).join("db.yaml")).unwrap();
    wait_for("db to be removed", || {
        get(&state, &db).is_none().then_some(())
    });
    let item = wait_for("app to show the unknown dependency", || {
        get(&state, &app).filter(|i| {
            i["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("which no manifest defines"))
                })
            })
        })
    });
    assert_eq!(item["phase"], "Running", "{item}");
    assert_eq!(item["pid"], pid, "{item}");
}

#[test]
fn restart_with_dependency_follows_a_changed_spec_of_the_dependency() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let [dep, app] = ["rwd2-dep", "rwd2-app"].map(unique);
    let dep_spec = |word: &str| {
        format!("  command: [/bin/sh, -c, 'echo {word}; exec sleep infinity']\n  stopTimeout: 0s\n")
    };
    save(&state, "dep.yaml", &manifest(&dep, &dep_spec("one")));
    save(
        &state,
        "app.yaml",
        &manifest(
            &app,
            &format!("{SLEEP}  dependsOn: [{dep}]\n  restartWithDependency: true\n"),
        ),
    );
    let before = wait_phase(&state, &daemon, &app, "Running")["pid"].clone();
    save(&state, "dep.yaml", &manifest(&dep, &dep_spec("two")));
    let after = wait_for("app to run again after dep's update", || {
        get(&state, &app)
            .filter(|i| i["phase"] == "Running" && i["pid"].is_i64() && i["pid"] != before)
    });
    assert!(after["pid"].is_i64(), "{after}");
    let (stopped, updated, again) = (
        first_seq(&state, &app, "Stopped"),
        first_seq(&state, &dep, "Updated"),
        first_seq(&state, &app, "Restarted"),
    );
    assert!(
        stopped < updated && updated < again,
        "app stopped {stopped}, dep updated {updated}, app restarted {again}\n{}",
        daemon.log()
    );
}
