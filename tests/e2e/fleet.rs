//! Device targeting: one manifest tree (deploy/fleet/example) followed by two
//! daemons whose devices have different labels.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::daemon::{Daemon, events, manifests_dir, wait_for};
use crate::{StateDir, stderr, stdout};

fn fleet_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fleet/example")
}

/// A copy of `from` in `to`, directories 0755 and files 0644 (the daemon refuses
/// manifests others could write).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Replaces a manifest as an editor does: a temp file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(".replace.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Name → phase, as `berth get -o json` (with `--all`: `get --all`) lists them.
fn phases(state: &StateDir, all: bool) -> BTreeMap<String, String> {
    let mut args = vec!["get", "-o", "json"];
    if all {
        args.push("--all");
    }
    let out = state.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["name"].as_str().unwrap().to_owned(),
                item["phase"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
        .collect()
}

fn wait_phases(state: &StateDir, daemon: &Daemon, all: bool, want: &BTreeMap<String, String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let now = phases(state, all);
        if &now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wanted {want:?}, have {now:?}\ndaemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn two_devices_with_different_labels_run_different_parts_of_one_fleet_tree() {
    let camera = StateDir::new();
    let gate = StateDir::new();
    copy_tree(&fleet_example(), &manifests_dir(&camera));
    copy_tree(&fleet_example(), &manifests_dir(&gate));
    // The camera's group from its labels file, its fleet name from a flag; the
    // gate's both from flags.
    let camera_labels = camera.path().join("device-labels");
    std::fs::write(
        &camera_labels,
        "# provisioned\n\nfleet.example/group=cameras\n",
    )
    .unwrap();
    let camera_daemon = Daemon::start_with(
        &camera,
        &[
            "--labels-file",
            camera_labels.to_str().unwrap(),
            "--label",
            "berth.dev/hostname=cam-01",
        ],
    );
    let gate_daemon = Daemon::start_with(
        &gate,
        &[
            "--label",
            "fleet.example/group=gates",
            "--label",
            "berth.dev/hostname=gate-07",
        ],
    );

    let camera_runs = expect(&[
        ("cam-01-calibration", "Running"),
        ("heartbeat", "Running"),
        ("recorder", "Running"),
    ]);
    wait_phases(&camera, &camera_daemon, false, &camera_runs);
    let gate_runs = expect(&[("barrier", "Running"), ("heartbeat", "Running")]);
    wait_phases(&gate, &gate_daemon, false, &gate_runs);

    // What selects other devices is listed by `get --all` only.
    assert_eq!(
        phases(&gate, true),
        expect(&[
            ("barrier", "Running"),
            ("cam-01-calibration", "NotSelected"),
            ("heartbeat", "Running"),
            ("recorder", "NotSelected"),
        ])
    );
    assert_eq!(
        phases(&camera, true),
        expect(&[
            ("barrier", "NotSelected"),
            ("cam-01-calibration", "Running"),
            ("heartbeat", "Running"),
            ("recorder", "Running"),
        ])
    );
    let out = gate.run(&["get", "--all"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("recorder") && l.contains("NotSelected")),
        "{}",
        stdout(&out)
    );
    // Its manifest's labels select and show it too.
    let out = gate.run(&[
        "get",
        "--all",
        "-l",
        "fleet.example/layer=group",
        "--show-labels",
    ]);
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("recorder")
            && l.contains("NotSelected")
            && l.contains("fleet.example/layer=group")),
        "{text}"
    );
    assert!(!text.contains("heartbeat"), "{text}");
    // Asked for by name, it is not a typo.
    let out = gate.run(&["get", "recorder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::stderr(&out).contains("recorder is not selected on this device"),
        "{}",
        crate::stderr(&out)
    );

    // The recorder moves to the gates: the camera removes its container.
    let recorder = manifests_dir(&camera).join("groups/cameras/recorder.yaml");
    let text = std::fs::read_to_string(&recorder).unwrap();
    replace(
        &recorder,
        &text.replace(
            "{fleet.example/group: cameras}",
            "{fleet.example/group: gates}",
        ),
    );
    let mut without_recorder = camera_runs.clone();
    without_recorder.remove("recorder");
    wait_phases(&camera, &camera_daemon, false, &without_recorder);
    wait_for("the recorder's container to be destroyed", || {
        (!camera.container_dir("recorder").exists()).then_some(())
    });
    assert_eq!(phases(&camera, true)["recorder"], "NotSelected");

    // A manifest for other devices is still validated: its error is reported
    // where it is, and nothing of it runs.
    let broken = manifests_dir(&gate).join("groups/cameras/broken.yaml");
    replace(
        &broken,
        "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: broken\n  selector:\n    matchLabels: {fleet.example/group: cameras}\n    matchExpressions:\n      - {key: fleet.example/site, operator: In}\nspec:\n  command: [/bin/true]\n",
    );
    let expected = format!(
        "{}:8:9: metadata.selector.matchExpressions[0].values: In needs at least one value",
        broken.display()
    );
    let event = wait_for("the selector error as an event", || {
        events(&gate)
            .into_iter()
            .find(|e| e["reason"] == "InvalidManifest" && e["message"] == expected.as_str())
    });
    assert_eq!(event["name"], "-", "{event}");
    let out = gate.run(&["validate", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(!phases(&gate, true).contains_key("broken"));
    assert_eq!(phases(&gate, false), gate_runs);
}

#[test]
fn a_bad_labels_file_stops_the_daemon_at_start_naming_its_line() {
    let state = StateDir::new();
    let labels = state.path().join("labels");
    std::fs::write(
        &labels,
        "# ok\nfleet.example/group=cameras\ngroup cameras\n",
    )
    .unwrap();
    let out = state
        .berth(&["daemon", "--manifests"])
        .arg(manifests_dir(&state))
        .arg("--labels-file")
        .arg(&labels)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let expected = format!("{}:3: \"group cameras\" is not KEY=VALUE", labels.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(!state.path().join("berth.sock").exists());
}

/// git in `dir` with no user or system configuration.
fn git(dir: &Path, args: &[&str]) {
    crate::git::git_in(dir, args, None);
}

#[test]
fn two_devices_following_one_repository_run_what_selects_them_and_a_commit_moves_a_container() {
    let camera = StateDir::new();
    let gate = StateDir::new();
    // The fleet repository: the example tree under fleet/, one commit.
    let repo = camera.dir.path().join("fleet-repo");
    copy_tree(&fleet_example(), &repo.join("fleet"));
    git(&repo, &["init", "--quiet", "-b", "main"]);
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "fleet"]);
    let url = format!("file://{}", repo.display());
    let source = ["--git", &url, "--git-path", "fleet", "--git-interval", "1s"];
    let camera_flags = [
        "--label",
        "fleet.example/group=cameras",
        "--label",
        "berth.dev/hostname=cam-01",
    ];
    let gate_flags = ["--label", "fleet.example/group=gates"];
    let camera_daemon = Daemon::start_with(&camera, &[&source[..], &camera_flags[..]].concat());
    let gate_daemon = Daemon::start_with(&gate, &[&source[..], &gate_flags[..]].concat());
    wait_phases(
        &camera,
        &camera_daemon,
        false,
        &expect(&[
            ("cam-01-calibration", "Running"),
            ("heartbeat", "Running"),
            ("recorder", "Running"),
        ]),
    );
    wait_phases(
        &gate,
        &gate_daemon,
        false,
        &expect(&[("barrier", "Running"), ("heartbeat", "Running")]),
    );

    // One commit gives the recorder to the gates: it leaves the camera and
    // starts on the gate.
    let recorder = repo.join("fleet/groups/cameras/recorder.yaml");
    let text = std::fs::read_to_string(&recorder).unwrap();
    std::fs::write(
        &recorder,
        text.replace(
            "{fleet.example/group: cameras}",
            "{fleet.example/group: gates}",
        ),
    )
    .unwrap();
    git(
        &repo,
        &["commit", "--quiet", "--all", "-m", "the recorder moves"],
    );
    wait_phases(
        &gate,
        &gate_daemon,
        true,
        &expect(&[
            ("barrier", "Running"),
            ("cam-01-calibration", "NotSelected"),
            ("heartbeat", "Running"),
            ("recorder", "Running"),
        ]),
    );
    wait_phases(
        &camera,
        &camera_daemon,
        true,
        &expect(&[
            ("barrier", "NotSelected"),
            ("cam-01-calibration", "Running"),
            ("heartbeat", "Running"),
            ("recorder", "NotSelected"),
        ]),
    );
}
