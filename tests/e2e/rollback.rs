//! `spec.updateStrategy: {rollback: true, healthyFor}`: an update that does not
//! stay Running is rolled back, once, also across a daemon killed meanwhile.

use std::time::Duration;

use crate::daemon::{Daemon, count_events, get, manifest, save, wait_for, wait_phase};
use crate::{StateDir, console_until, stdout, unique};

fn spec(script: &str, healthy_for: &str) -> String {
    format!(
        "  command: [/bin/sh, -c, '{script}']\n  stopTimeout: 0s\n  \
         updateStrategy: {{rollback: true, healthyFor: {healthy_for}}}\n"
    )
}

fn rolled_back(item: &serde_json::Value) -> Option<String> {
    item["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["kind"] == "RolledBack")
        .map(|c| c["message"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `name` runs spec `hash` again, rolled back; returns the item.
fn wait_rolled_back(
    state: &StateDir,
    daemon: &Daemon,
    name: &str,
    hash: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let item = get(state, name);
        if let Some(item) = item.as_ref().filter(|i| {
            i["phase"] == "Running" && i["specHash"] == hash && rolled_back(i).is_some()
        }) {
            return item.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never ran {hash} again, rolled back; last: {item:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_update_that_exits_at_once_is_rolled_back_once_and_a_fixed_one_applies() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let name = unique("rollback");
    let file = format!("{name}.yaml");
    save(
        &state,
        &file,
        &manifest(&name, &spec("echo good-v1; exec sleep infinity", "3s")),
    );
    let v1 = wait_phase(&state, &daemon, &name, "Running");
    let good = v1["specHash"].as_str().unwrap().to_owned();

    save(
        &state,
        &file,
        &manifest(&name, &spec("echo bad-v2; exit 3", "3s")),
    );
    let item = wait_rolled_back(&state, &daemon, &name, &good);
    let message = rolled_back(&item).unwrap();
    assert!(
        message.contains("exited with code 3") && message.contains("sha256:"),
        "{message}"
    );
    assert!(
        message.contains(&format!("rolled back to {good}")),
        "{message}"
    );
    assert_eq!(count_events(&state, &name, "RolledBack"), 1);
    let pid = item["pid"].as_i64().unwrap();
    // The old command runs again, and stays: no restart loop, no second try.
    std::thread::sleep(Duration::from_secs(4));
    let later = get(&state, &name).unwrap();
    assert_eq!(later["phase"], "Running", "{later}");
    assert_eq!(later["pid"].as_i64(), Some(pid), "{later}");
    assert_eq!(later["restarts"], item["restarts"], "{later}");
    assert_eq!(later["specHash"], good.as_str());
    assert_eq!(count_events(&state, &name, "RolledBack"), 1);
    let out = state.run(&["describe", &name]);
    assert!(
        stdout(&out).contains("RolledBack: spec sha256:"),
        "{}",
        stdout(&out)
    );

    // A fixed manifest applies as any update, and proves itself.
    save(
        &state,
        &file,
        &manifest(&name, &spec("echo fixed-v3; exec sleep infinity", "1s")),
    );
    let fixed = wait_for("the fixed spec to run", || {
        get(&state, &name).filter(|i| {
            i["phase"] == "Running" && i["specHash"] != good.as_str() && rolled_back(i).is_none()
        })
    });
    console_until(&state, &name, "fixed-v3");
    wait_for("the fixed spec to be kept", || {
        (count_events(&state, &name, "UpdateKept") >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let kept = get(&state, &name).unwrap();
    assert_eq!(kept["pid"], fixed["pid"], "{kept}");
    assert_eq!(count_events(&state, &name, "RolledBack"), 1);
}

#[test]
fn a_daemon_killed_during_healthy_for_still_ends_rolled_back() {
    let state = StateDir::new();
    let mut daemon = Daemon::start_with(&state, &[]);
    let name = unique("rollback-kill");
    let file = format!("{name}.yaml");
    save(
        &state,
        &file,
        &manifest(&name, &spec("echo good-v1; exec sleep infinity", "20s")),
    );
    let good = wait_phase(&state, &daemon, &name, "Running")["specHash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Runs a little, then fails: while no daemon is there to see it.
    save(
        &state,
        &file,
        &manifest(&name, &spec("echo bad-v2; sleep 2; exit 4", "20s")),
    );
    wait_for("the new spec to run", || {
        get(&state, &name).filter(|i| i["phase"] == "Running" && i["specHash"] != good.as_str())
    });
    daemon.kill_hard();
    drop(daemon);
    std::thread::sleep(Duration::from_secs(3));
    let daemon = Daemon::start_with(&state, &[]);
    let item = wait_rolled_back(&state, &daemon, &name, &good);
    let message = rolled_back(&item).unwrap();
    assert!(message.contains("exited with code 4"), "{message}");
    std::thread::sleep(Duration::from_secs(3));
    let later = get(&state, &name).unwrap();
    assert_eq!(later["pid"], item["pid"], "{later}");
    assert_eq!(later["specHash"], good.as_str());
    assert_eq!(count_events(&state, &name, "RolledBack"), 1);
}

#[test]
fn a_rollback_across_a_new_rootfs_source_takes_back_the_old_container_whole() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let name = unique("rollback-rootfs");
    let file = format!("{name}.yaml");
    let with_rootfs = |template: &str, script: &str, healthy_for: &str| {
        format!(
            "{}  rootfs: {{template: {template}}}\n",
            spec(script, healthy_for)
        )
    };
    save(
        &state,
        &file,
        &manifest(
            &name,
            &with_rootfs("busybox", "echo v1; exec sleep infinity", "2s"),
        ),
    );
    let good = wait_phase(&state, &daemon, &name, "Running")["specHash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Something only this rootfs has: a container made again would not.
    let marker = state.container_dir(&name).join("rootfs/etc/berth-marker");
    std::fs::write(&marker, "v1").unwrap();
    let aside = state.path().join("aside").join(&name);

    save(
        &state,
        &file,
        &manifest(&name, &with_rootfs("host", "exit 5", "2s")),
    );
    let item = wait_rolled_back(&state, &daemon, &name, &good);
    assert!(
        rolled_back(&item).unwrap().contains("exited with code 5"),
        "{item}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).ok().as_deref(),
        Some("v1"),
        "the old rootfs was not taken back\n{}",
        daemon.log()
    );
    assert!(!aside.exists());

    // An update that proves itself lets go of what was kept aside.
    save(
        &state,
        &file,
        &manifest(
            &name,
            &with_rootfs("host", "echo v3; exec sleep infinity", "2s"),
        ),
    );
    wait_for("the new rootfs to run", || {
        get(&state, &name).filter(|i| i["phase"] == "Running" && i["specHash"] != good.as_str())
    });
    assert!(aside.join("rootfs/etc/berth-marker").exists());
    wait_for("the update to be kept", || {
        (count_events(&state, &name, "UpdateKept") >= 1).then_some(())
    });
    wait_for("the old container to be let go", || {
        (!aside.exists()).then_some(())
    });
}

#[test]
fn with_a_git_source_the_rolled_back_condition_names_the_commit_that_failed() {
    use crate::git::git_in;
    let state = StateDir::new();
    let top = state.dir.path().join("repos");
    std::fs::create_dir_all(&top).unwrap();
    git_in(
        &top,
        &["init", "--quiet", "--bare", "-b", "main", "origin.git"],
        None,
    );
    git_in(&top, &["init", "--quiet", "-b", "main", "work"], None);
    let (origin, work) = (top.join("origin.git"), top.join("work"));
    git_in(
        &work,
        &["remote", "add", "origin", &origin.display().to_string()],
        None,
    );
    let name = unique("rollback-git");
    let commit = |text: &str| {
        std::fs::write(work.join(format!("{name}.yaml")), text).unwrap();
        git_in(&work, &["add", "--all"], None);
        git_in(&work, &["commit", "--quiet", "-m", "update"], None);
        git_in(&work, &["push", "--quiet", "origin", "main"], None);
        git_in(&work, &["rev-parse", "HEAD"], None)
            .trim()
            .to_owned()
    };
    commit(&manifest(&name, &spec("exec sleep infinity", "2s")));
    let url = format!("file://{}", origin.display());
    let daemon = Daemon::start_with(&state, &["--git", &url, "--git-interval", "1s"]);
    let good = wait_phase(&state, &daemon, &name, "Running")["specHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = commit(&manifest(&name, &spec("exit 6", "2s")));
    let item = wait_rolled_back(&state, &daemon, &name, &good);
    let message = rolled_back(&item).unwrap();
    assert!(
        message.contains(&format!("(commit {bad})")) && message.contains("exited with code 6"),
        "{message}"
    );
}

#[test]
fn an_update_that_cannot_even_start_is_rolled_back() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let name = unique("rollback-start");
    let file = format!("{name}.yaml");
    save(
        &state,
        &file,
        &manifest(&name, &spec("exec sleep infinity", "3s")),
    );
    let good = wait_phase(&state, &daemon, &name, "Running")["specHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken = "  command: [/no/such/program]\n  stopTimeout: 0s\n  \
                  updateStrategy: {rollback: true, healthyFor: 3s}\n";
    save(&state, &file, &manifest(&name, broken));
    let item = wait_rolled_back(&state, &daemon, &name, &good);
    let message = rolled_back(&item).unwrap();
    assert!(message.contains("could not be started"), "{message}");
    assert_eq!(count_events(&state, &name, "FailedStart"), 1);
}
