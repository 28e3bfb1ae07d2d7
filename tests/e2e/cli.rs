//! The command line itself: version, help, the global --state-dir, the schema.

use crate::{StateDir, berth, stderr, stdout, unique};

#[test]
fn version_and_help_are_there() {
    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    // The commit it was built from, as git names it here ("unknown" without git).
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| stdout(&o).trim().to_owned());
    assert_eq!(
        stdout(&out).trim(),
        format!("berth {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
    let out = berth().arg("help").output().unwrap();
    assert!(out.status.success());
    for command in ["validate", "schema"] {
        assert!(stdout(&out).contains(command), "{}", stdout(&out));
    }
}

#[test]
fn state_dir_is_accepted_before_or_after_the_subcommand() {
    for args in [
        vec!["--state-dir", "/tmp/x", "schema"],
        vec!["schema", "--state-dir", "/tmp/x"],
    ] {
        let out = berth()
            .args(&args)
            .env_remove("BERTH_STATE_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = berth().args(["--bogus", "schema"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_prints_a_json_schema_of_the_manifest() {
    let out = berth().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "berth Container manifest");
    assert_eq!(schema["additionalProperties"], false);
    let required = schema["required"].as_array().unwrap();
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(required.contains(&serde_json::json!(field)), "{field}");
    }
}

/// `berth status NAME` and `berth get NAME -o json`, as JSON.
fn status_and_get(state: &crate::StateDir, name: &str) -> (serde_json::Value, serde_json::Value) {
    let read = |args: &[&str]| {
        let out = state.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    (read(&["status", name]), read(&["get", name, "-o", "json"]))
}

#[test]
fn status_and_get_agree_on_the_phase_of_a_container_made_by_hand() {
    let state = crate::StateDir::new();
    let name = crate::unique("agree");
    let manifest = state.manifest(
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (step, phase) in [
        (None, "Created"),
        (Some("start"), "Running"),
        (Some("stop"), "Stopped"),
    ] {
        if let Some(step) = step {
            let out = state.run(&[step, &name]);
            assert!(out.status.success(), "{step}: {}", stderr(&out));
        }
        let (status, item) = status_and_get(&state, &name);
        assert_eq!(
            (status["phase"].as_str(), item["phase"].as_str()),
            (Some(phase), Some(phase)),
            "after {step:?}:\nstatus: {status}\nget: {item}"
        );
    }
}

#[test]
fn a_container_made_by_hand_shows_its_real_age() {
    let state = crate::StateDir::new();
    let name = crate::unique("aged");
    let manifest = state.manifest(&name, "  command: [/bin/sleep, infinity]\n");
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = state.run(&["get", &name, "-o", "json"]);
    let item: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let created = item["createdAt"].as_u64().unwrap();
    assert!(now.abs_diff(created) < 60, "createdAt {created}, now {now}");
    assert_eq!(
        item["createdTime"].as_str().map(str::len),
        Some("2026-11-29T09:30:57Z".len()),
        "{item}"
    );
    let out = state.run(&["get", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "ContainerList");
    assert_eq!(list["items"][0]["name"], name.as_str());
    assert_eq!(list["items"][0]["createdTime"], item["createdTime"]);
    let out = state.run(&["get"]);
    let row: Vec<String> = stdout(&out)
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(
        row[4].ends_with('s'),
        "AGE is {:?}: {}",
        row[4],
        stdout(&out)
    );
}

#[test]
fn get_selects_by_labels_shows_them_and_prints_names() {
    let state = crate::StateDir::new();
    let web = crate::unique("lweb");
    let db = crate::unique("ldb");
    for (name, labels) in [
        (&web, "app: web\n    tier: front"),
        (&db, "app: web\n    tier: db"),
    ] {
        let path = state.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\n  labels:\n    {labels}\nspec:\n  command: [/bin/sleep, infinity]\n"
            ),
        )
        .unwrap();
        let out = state.run(&["create", "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = state.run(&["get", "-l", "app=web,tier!=db", "-o", "name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("container/{web}\n"));
    let out = state.run(&["get", "-l", "app=web", "-o", "name"]);
    assert_eq!(stdout(&out), format!("container/{db}\ncontainer/{web}\n"));
    let out = state.run(&["get", "-l", "app in (web)"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let out = state.run(&["get", "--show-labels"]);
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[5], "LABELS", "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&db))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[5], "app=web,tier=db", "{table}");

    // kubectl's jsonpath templates pick fields.
    let out = state.run(&["get", "-l", "app=web", "-o", "jsonpath={.items[*].name}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{db} {web}\n"));
    let out = state.run(&["get", &web, "-o", "jsonpath=phase={.phase}"]);
    assert_eq!(stdout(&out), "phase=Created\n", "{}", stderr(&out));
    let out = state.run(&["get", "-o", "jsonpath={.items[}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("jsonpath"), "{}", stderr(&out));
    let out = state.run(&["get", "-o", "table"]);
    assert!(
        stderr(&out).contains("use wide, json, yaml, name or jsonpath=TEMPLATE"),
        "{}",
        stderr(&out)
    );
}

/// Creates `names` (sleepers that stop at once), each from its own manifest.
fn create_sleepers(state: &StateDir, names: &[&str]) {
    for name in names {
        let manifest = state.manifest(
            name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        );
        let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
        assert!(out.status.success(), "create {name}: {}", stderr(&out));
    }
}

fn phase(state: &StateDir, name: &str) -> String {
    let out = state.run(&["status", name]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["phase"].as_str().unwrap().to_owned()
}

#[test]
fn start_stop_reboot_and_destroy_take_several_names_and_go_on_past_a_failure() {
    let state = StateDir::new();
    let a = unique("multi-a");
    let b = unique("multi-b");
    let missing = unique("multi-missing");
    create_sleepers(&state, &[&a, &b]);

    let out = state.run(&["start", &a, &missing, &b]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let errors: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&missing), "{errors:?}");
    assert_eq!(phase(&state, &a), "Running");
    assert_eq!(phase(&state, &b), "Running");

    let out = state.run(&["reboot", &a, &b]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A running container cannot be destroyed; the stopped one still is.
    let out = state.run(&["stop", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["destroy", &b, &a]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains(&b), "{}", stderr(&out));
    assert_eq!(state.leftovers(), vec![b.clone()]);

    let out = state.run(&["stop", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("stopped {b}")),
        "{}",
        stdout(&out)
    );
    let out = state.run(&["destroy", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(state.leftovers().is_empty(), "{:?}", state.leftovers());

    // Neither names nor --all: a usage error.
    assert_eq!(state.run(&["stop"]).status.code(), Some(2));
    assert_eq!(state.run(&["destroy", &a, "--all"]).status.code(), Some(2));
}

#[test]
fn a_stop_during_a_reboot_stops_the_container_instead_of_waiting_for_ever() {
    let state = StateDir::new();
    let name = unique("reboot-stop");
    // PID 1 of its own namespace ignores SIGTERM: the reboot waits out its
    // stopTimeout before its SIGKILL, and the stop comes in meanwhile.
    let manifest = state.manifest(
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 20s\n",
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["reboot", &name]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut stop = state
        .berth(&["stop", "--timeout", "0s", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Not a speed check: before the fix the reboot swallowed the stop, the
    // container started again and `berth stop` waited for ever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = stop.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = stop.kill();
            let _ = stop.wait();
            panic!(
                "`berth stop` during a reboot had not returned after 60 s; phase {}",
                phase(&state, &name)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "berth stop failed");
    assert_eq!(phase(&state, &name), "Stopped");
    let out = state.run(&["destroy", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn destroy_force_stops_a_running_container_first_without_waiting_for_its_timeout() {
    let state = StateDir::new();
    let name = unique("force");
    // PID 1 of its own namespace ignores SIGTERM: only SIGKILL ends it.
    let manifest = state.manifest(
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 1m\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value =
        serde_json::from_slice(&state.run(&["status", &name]).stdout).unwrap();
    let pid = status["initPid"].as_i64().unwrap() as i32;

    let out = state.run(&["destroy", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));

    let began = std::time::Instant::now();
    let out = state.run(&["destroy", "-f", &name]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(began.elapsed() < std::time::Duration::from_secs(20));
    assert!(crate::process_gone(pid), "init {pid} still runs");
    assert!(state.leftovers().is_empty(), "{:?}", state.leftovers());
    // A missing container is still no error, forced or not.
    assert!(state.run(&["destroy", "--force", &name]).status.success());
}

#[test]
fn stop_takes_its_timeout_in_whole_seconds_or_as_a_duration() {
    let state = StateDir::new();
    let a = unique("timeout-a");
    let b = unique("timeout-b");
    // PID 1 ignores SIGTERM: each stop lasts exactly its timeout, then SIGKILL.
    for name in [&a, &b] {
        let manifest = state.manifest(
            name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 1m\n",
        );
        assert!(
            state
                .run(&["create", "-f", manifest.to_str().unwrap()])
                .status
                .success()
        );
    }
    let out = state.run(&["start", &a, &b]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (name, args) in [(&a, ["-t", "1"]), (&b, ["--timeout", "500ms"])] {
        let began = std::time::Instant::now();
        let out = state.berth(&["stop", name]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            began.elapsed() < std::time::Duration::from_secs(15),
            "{args:?} took {:?}",
            began.elapsed()
        );
    }
    let out = state.run(&["stop", &a, "-t", "5x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
}

#[test]
fn create_takes_a_directory_of_manifests_as_validate_reads_it() {
    let state = StateDir::new();
    let dir = state.dir.path().join("manifests");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let a = unique("dir-a");
    let b = unique("dir-b");
    let doc = |name: &str| {
        format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/true]\n"
        )
    };
    std::fs::write(dir.join("a.yaml"), doc(&a)).unwrap();
    std::fs::write(dir.join("nested/b.yml"), doc(&b)).unwrap();
    // Editor leftovers are not manifests.
    std::fs::write(dir.join("a.yaml~"), doc(&unique("dir-backup"))).unwrap();

    let out = state.run(&["create", "-f", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut left = state.leftovers();
    left.sort();
    assert_eq!(left, vec![a.clone(), b.clone()]);

    // One invalid manifest: nothing is created, the problem is named.
    let broken = state.dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("c.yaml"), doc(&unique("dir-c"))).unwrap();
    std::fs::write(
        broken.join("d.yaml"),
        "apiVersion: berth.dev/v1\nkind: Nope\n",
    )
    .unwrap();
    let out = state.run(&["create", "-f", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("d.yaml:"), "{}", stderr(&out));
    assert_eq!(state.leftovers().len(), 2, "{:?}", state.leftovers());
}

#[test]
fn ps_and_ls_are_get_and_rm_is_destroy() {
    let get = berth().args(["get", "--help"]).output().unwrap();
    for alias in ["ps", "ls"] {
        let out = berth().args([alias, "--help"]).output().unwrap();
        assert!(out.status.success(), "{alias}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&get), "{alias}");
    }
    let help = stdout(&berth().arg("help").output().unwrap());
    assert!(help.contains("[aliases: ps, ls]"), "{help}");
    assert!(help.contains("[alias: rm]"), "{help}");

    let state = StateDir::new();
    let name = unique("rm");
    create_sleepers(&state, &[&name]);
    let out = state.run(&["rm", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(state.leftovers().is_empty(), "{:?}", state.leftovers());
}

#[test]
fn output_to_a_closed_pipe_ends_quietly_without_a_panic() {
    let state = StateDir::new();
    let name = unique("pipe");
    create_sleepers(&state, &[&name]);
    for args in [vec!["status", name.as_str()], vec!["schema"]] {
        // A pipe whose reader is gone before berth writes, as `| head -c0` leaves it.
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = state
            .berth(&args)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .unwrap();
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_and_a_man_page_are_printed() {
    let out = berth().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("complete -F _berth"), "{script}");
    for command in ["destroy", "exec", "completions"] {
        assert!(script.contains(command), "{command}");
    }
    // The script is valid bash.
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));

    let zsh = stdout(&berth().args(["completions", "zsh"]).output().unwrap());
    assert!(zsh.starts_with("#compdef berth"), "{zsh}");
    let fish = stdout(&berth().args(["completions", "fish"]).output().unwrap());
    assert!(fish.contains("complete -c berth"), "{fish}");
    assert_eq!(
        berth()
            .args(["completions", "tcsh"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );

    let out = berth().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH berth 1"), "{page}");
    assert!(page.contains("declarative containers"), "{page}");
}

#[test]
fn a_relative_state_dir_works_from_create_to_destroy() {
    let state = StateDir::new();
    let name = unique("relative");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
    );
    // `--state-dir s`, run from the test's temp dir.
    let run = |args: &[&str]| {
        let out = crate::berth()
            .current_dir(state.path())
            .args(["--state-dir", "s", "--cgroup-parent", &state.cgroup_parent])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(run(&["start", &name]).starts_with(&format!("started {name}")));
    run(&["stop", &name]);
    run(&["destroy", &name]);
}
