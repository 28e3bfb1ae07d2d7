//! The command line itself: version, help, the global --state-dir, the schema.

use crate::{berth, stderr, stdout};

#[test]
fn version_and_help_are_there() {
    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
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
}
