//! `berth daemon --cgroup-delegate`, as deploy/berth.service runs it: the daemon
//! started in a cgroup of its own (what systemd's Delegate=yes hands a unit)
//! moves itself into its leaf `daemon`, puts the containers beside it, records
//! the parent for the CLI, and finds its way back there after a restart from
//! elsewhere (systemd < 254 puts a restarted unit's process in an ancestor).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::{Daemon, manifest, manifests_dir, save, wait_for, wait_phase};
use crate::{StateDir, berth, unique};

/// Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a pure v2 host,
/// /sys/fs/cgroup/unified on a hybrid one.
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(sep + 1) == Some(&"cgroup2") && fields[3] == "/")
                .then(|| PathBuf::from(fields[4]))
        })
        .expect("this test needs the cgroup2 hierarchy mounted (pure v2 or hybrid)")
}

/// The cgroup2 path of a process (the `0::` line of /proc/PID/cgroup).
fn cgroup2_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap()
}

/// `berth --state-dir S daemon --cgroup-delegate ...`, no --cgroup-parent: the
/// parent is the daemon's to find. With `unit`, the daemon starts inside that
/// cgroup, as systemd starts a unit's main process.
fn delegated_daemon(state: &StateDir, unit: Option<&Path>) -> Daemon {
    let mut command = match unit {
        Some(unit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                .arg(unit)
                .arg(env!("CARGO_BIN_EXE_berth"));
            c
        }
        None => berth(),
    };
    command
        .arg("--state-dir")
        .arg(state.path())
        .args([
            "daemon",
            "--cgroup-delegate",
            "--crash-backoff",
            "1s",
            "--prune-grace",
            "1s",
        ])
        .arg("--manifests")
        .arg(manifests_dir(state))
        .arg("--labels-file")
        .arg(state.path().join("labels"));
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Daemon::adopt(
        state,
        command,
        state.path().join(format!("daemon-{stamp}.log")),
    )
}

#[test]
fn a_delegated_daemon_moves_into_its_leaf_and_keeps_its_containers_beside_it_across_a_restart() {
    // The StateDir's cgroup parent doubles as the "unit" cgroup: its clean-up
    // removes it, and what berth made below it, in every hierarchy.
    let state = StateDir::new();
    let unit_rel = state.cgroup_parent.clone();
    let unit = cgroup2_mount().join(&unit_rel);
    std::fs::create_dir_all(&unit).unwrap();
    let name = unique("deleg");
    save(
        &state,
        "c.yaml",
        &manifest(
            &name,
            "  rootfs: {template: busybox}\n  command: [sleep, '1000']\n  resources: {pids: 64}\n",
        ),
    );

    let mut daemon = delegated_daemon(&state, Some(&unit));
    let item = wait_phase(&state, &daemon, &name, "Running");
    assert_eq!(
        cgroup2_of(daemon.pid()),
        format!("/{unit_rel}/daemon"),
        "the daemon is not in its leaf:\n{}",
        daemon.log()
    );
    let recorded = std::fs::read_to_string(state.path().join("cgroup-parent")).unwrap();
    assert_eq!(recorded.trim(), unit_rel);

    // Every cgroup of the container is under the unit's, in every hierarchy
    // berth chose (v1 ones on a hybrid host; the cgroup2 one on a pure v2 host).
    let status: serde_json::Value = serde_json::from_slice(
        &berth()
            .arg("--state-dir")
            .arg(state.path())
            .args(["status", &name])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dirs = crate::cgroup_dirs(&status);
    assert!(!dirs.is_empty());
    for dir in &dirs {
        assert!(
            dir.ends_with(Path::new(&unit_rel).join(&name)),
            "{} is not under the unit's cgroup {unit_rel}",
            dir.display()
        );
        assert!(dir.join("payload").is_dir(), "{}", dir.display());
    }
    let pid = item["pid"].as_i64().unwrap() as i32;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        own.lines()
            .any(|l| l.ends_with(&format!("/{unit_rel}/{name}/payload"))),
        "the container's init is not in the unit's payload cgroup:\n{own}"
    );

    // The CLI, given no --cgroup-parent, takes the recorded one: it finds the
    // container's cgroups and reads its usage from them.
    let out = berth()
        .arg("--state-dir")
        .arg(state.path())
        .args(["get", &name, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart that lands elsewhere (here: the test's own cgroup) goes back to
    // the recorded leaf, and adopts the container without restarting it.
    daemon.kill_hard();
    let daemon = delegated_daemon(&state, None);
    let again = wait_phase(&state, &daemon, &name, "Running");
    assert_eq!(
        cgroup2_of(daemon.pid()),
        format!("/{unit_rel}/daemon"),
        "{}",
        daemon.log()
    );
    assert_eq!(again["pid"], item["pid"], "the container was restarted");
    assert_eq!(again["restarts"], 0);

    // A container made by hand from a shell goes beside the daemon's too.
    let by_hand = unique("deleg-hand");
    let file = state.path().join("hand.yaml");
    std::fs::write(
        &file,
        manifest(
            &by_hand,
            "  rootfs: {template: busybox}\n  command: [sleep, '1000']\n",
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = berth()
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    cli(&["create", "-f", file.to_str().unwrap()]);
    cli(&["start", &by_hand]);
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&["status", &by_hand]).stdout).unwrap();
    for dir in crate::cgroup_dirs(&status) {
        assert!(
            dir.ends_with(Path::new(&unit_rel).join(&by_hand)),
            "{}",
            dir.display()
        );
    }
    cli(&["stop", &by_hand, "--timeout", "0s"]);
    cli(&["destroy", &by_hand]);

    // Removal still finds and removes the container's cgroups under the unit.
    std::fs::remove_file(manifests_dir(&state).join("c.yaml")).unwrap();
    wait_for("the container's removal", || {
        (!dirs.iter().any(|d| d.exists())).then_some(())
    });
    drop(daemon);
}
