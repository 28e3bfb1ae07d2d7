//! `berth daemon` on a watched directory, driven as a user would (as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{StateDir, process_gone, process_gone_now, processes_in, stderr, stdout, unique};

/// A running `berth daemon`, ended (SIGTERM, then SIGKILL) when dropped. Declare it
/// after its StateDir, so that it ends first.
pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(state: &StateDir) -> Daemon {
        Daemon::start_with(state, &[])
    }

    /// A daemon with short crash-loop and prune delays, plus `extra` flags.
    pub(crate) fn start_with(state: &StateDir, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(state, extra, &[])
    }

    /// Same, with environment variables set (`None`: removed) for the daemon.
    pub(crate) fn start_with_env(
        state: &StateDir,
        extra: &[&str],
        env: &[(&str, Option<&std::ffi::OsStr>)],
    ) -> Daemon {
        // Defaults a test's own `extra` may replace (clap takes each flag once).
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in [("--prune-grace", "1s"), ("--resync", "3s")] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        let manifests = manifests_dir(state);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log = state.path().join(format!("daemon-{stamp}.log"));
        // Never the host's /etc/berth/labels: a file of the test's own (absent
        // unless it writes one), unless it names another.
        let labels = state.path().join("labels");
        let labels_file: Vec<&std::ffi::OsStr> = if extra.contains(&"--labels-file") {
            Vec::new()
        } else {
            vec!["--labels-file".as_ref(), labels.as_os_str()]
        };
        let mut command = state.berth(&["daemon"]);
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        // A Git source replaces the directory (tests/e2e/git.rs).
        if !extra.contains(&"--git") {
            command.arg("--manifests").arg(&manifests);
        }
        command
            .args(["--crash-backoff", "1s"])
            .args(args)
            .args(labels_file)
            .args(extra);
        Daemon::adopt(state, command, log)
    }

    /// A daemon the test spawned itself (`command`, its stderr to `log`), once it
    /// serves its socket.
    pub(crate) fn adopt(state: &StateDir, mut command: Command, log: PathBuf) -> Daemon {
        let socket = state.path().join("berth.sock");
        let _ = std::fs::remove_file(&socket);
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let exited = daemon.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the daemon never served its socket ({exited:?}):\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub(crate) fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid, for reading its /proc files.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_hard();
    }
}

pub(crate) fn manifests_dir(state: &StateDir) -> PathBuf {
    let dir = state.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub(crate) fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Writes like an editor's atomic save: a temp file, then rename over.
pub(crate) fn save(state: &StateDir, file: &str, text: &str) {
    let dir = manifests_dir(state);
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn get(state: &StateDir, name: &str) -> Option<serde_json::Value> {
    let out = state.run(&["get", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub(crate) fn wait_phase(
    state: &StateDir,
    daemon: &Daemon,
    name: &str,
    phase: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let item = get(state, name);
        if let Some(item) = item.as_ref().filter(|i| i["phase"] == phase) {
            return item.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {phase}; last: {item:?}\ndaemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_of(item: &serde_json::Value) -> i32 {
    item["pid"].as_i64().expect("a pid") as i32
}

/// Events of the daemon, as `berth events` prints them.
pub(crate) fn events(state: &StateDir) -> Vec<serde_json::Value> {
    let out = state.run(&["events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn count_events(state: &StateDir, name: &str, reason: &str) -> u64 {
    events(state)
        .iter()
        .filter(|e| e["name"] == name && e["reason"] == reason)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_dropped_manifest_runs_edits_restart_it_stopped_stops_it_and_deleting_removes_it() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let name = unique("web");
    let file = format!("{name}.yaml");
    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let first = wait_phase(&state, &daemon, &name, "Running");
    let first_pid = pid_of(&first);
    let socket = std::fs::metadata(state.path().join("berth.sock")).unwrap();
    assert_eq!(
        socket.permissions().mode() & 0o777,
        0o660,
        "the API socket is open to others"
    );
    assert_eq!(
        first["source"],
        format!("{}#0", manifests_dir(&state).join(&file).display())
    );

    // The table a person reads.
    let out = state.run(&["get"]);
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PID", "RESTARTS", "AGE", "MESSAGE"]
    );
    assert!(
        table.lines().any(|l| l.starts_with(&name)
            && l.contains("Running")
            && l.contains(&first_pid.to_string())),
        "{table}"
    );

    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
        ),
    );
    let edited = wait_for("the restart with the new command", || {
        get(&state, &name).filter(|i| {
            i["phase"] == "Running" && i["pid"] != first_pid && i["specHash"] != first["specHash"]
        })
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid_of(&edited))).unwrap();
    assert_eq!(cmdline, b"/bin/sleep\x001000\x00");
    assert!(process_gone(first_pid));

    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n  state: Stopped\n",
        ),
    );
    let stopped = wait_phase(&state, &daemon, &name, "Stopped");
    assert!(stopped["pid"].is_null());
    assert!(process_gone(pid_of(&edited)));

    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
        ),
    );
    let running = wait_phase(&state, &daemon, &name, "Running");
    let status: serde_json::Value =
        serde_json::from_slice(&state.run(&["status", &name]).stdout).unwrap();
    let cgroups: Vec<PathBuf> = status["cgroups"]["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| PathBuf::from(h["dir"].as_str().unwrap()))
        .collect();

    std::fs::remove_file(manifests_dir(&state).join(&file)).unwrap();
    wait_for("the container to be removed", || {
        get(&state, &name).is_none().then_some(())
    });
    assert!(process_gone(pid_of(&running)));
    assert!(
        !state.container_dir(&name).exists(),
        "its directory is left"
    );
    for dir in cgroups {
        assert!(!dir.exists(), "cgroup {} is left", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&state.path().display().to_string()));
}

#[test]
fn invalid_yaml_keeps_the_container_running_and_says_where_the_error_is() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let name = unique("typo");
    let file = format!("{name}.yaml");
    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let pid = pid_of(&wait_phase(&state, &daemon, &name, "Running"));

    save(
        &state,
        &file,
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity\n  restartPolcy: Always\n",
        ),
    );
    let item = wait_for("the error to show", || {
        get(&state, &name).filter(|i| i["message"].as_str().is_some_and(|m| m.contains(&file)))
    });
    assert_eq!(item["phase"], "Running");
    assert_eq!(pid_of(&item), pid, "the container was restarted");
    let message = item["message"].as_str().unwrap();
    let at = format!("{}:7:", manifests_dir(&state).join(&file).display());
    assert!(message.contains(&at), "{message}");
    assert_eq!(item["conditions"][0]["kind"], "InvalidManifest");

    let out = state.run(&["describe", &name]);
    assert!(
        stdout(&out).contains(&format!("InvalidManifest: {at}")),
        "{}",
        stdout(&out)
    );
    let out = state.run(&["get"]);
    assert!(stdout(&out).contains(&at), "{}", stdout(&out));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pid_of(&get(&state, &name).unwrap()), pid);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_new_daemon_after_kill_9_adopts_every_container_without_restarting_it() {
    let state = StateDir::new();
    let mut daemon = Daemon::start(&state);
    let names = [unique("adopt-a"), unique("adopt-b")];
    for name in &names {
        save(
            &state,
            &format!("{name}.yaml"),
            &manifest(
                name,
                "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
            ),
        );
    }
    let pids: Vec<i32> = names
        .iter()
        .map(|n| pid_of(&wait_phase(&state, &daemon, n, "Running")))
        .collect();
    daemon.kill_hard();
    drop(daemon);
    for pid in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "a container died with the daemon"
        );
    }
    let daemon = Daemon::start(&state);
    // Give the new daemon time to reconcile everything, then compare.
    wait_for("the new daemon to list both", || {
        names
            .iter()
            .all(|n| get(&state, n).is_some_and(|i| i["phase"] == "Running"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    for (name, pid) in names.iter().zip(&pids) {
        let item = get(&state, name).unwrap();
        assert_eq!(
            pid_of(&item),
            *pid,
            "{name} was restarted:\n{}",
            daemon.log()
        );
        assert_eq!(item["restarts"], 0);
        assert_eq!(
            count_events(&state, name, "Started"),
            1,
            "{name} started twice"
        );
    }
}

#[test]
fn crash_loops_back_off_and_a_successful_job_stays_stopped() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let crasher = unique("crasher");
    save(
        &state,
        &format!("{crasher}.yaml"),
        &manifest(&crasher, "  command: [/bin/sh, -c, 'exit 1']\n"),
    );
    let job = unique("job");
    save(
        &state,
        &format!("{job}.yaml"),
        &manifest(
            &job,
            "  command: [/bin/sh, -c, 'echo done']\n  restartPolicy: OnFailure\n",
        ),
    );

    // Back-off: 1 s, 2 s, 4 s...: the wait shown grows, and counts down.
    let mut waits = Vec::new();
    let mut countdown = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let counted_down = |countdown: &[(u64, u64)]| {
        countdown
            .windows(2)
            .any(|w| w[0].0 == w[1].0 && w[1].1 < w[0].1)
    };
    while waits.len() < 2 || waits.windows(2).all(|w| w[1] <= w[0]) || !counted_down(&countdown) {
        assert!(
            Instant::now() < deadline,
            "no growing back-off counting down seen: {waits:?} {countdown:?}\n{}",
            daemon.log()
        );
        if let Some(item) = get(&state, &crasher).filter(|i| i["phase"] == "CrashLoopBackOff") {
            let message = item["message"].as_str().unwrap().to_owned();
            assert!(message.contains("exited with code 1"), "{message}");
            // "back-off 4s, restarting in 3s: exited with code 1"
            let number = |after: &str| -> u64 {
                message
                    .split_once(after)
                    .and_then(|(_, m)| m.split('s').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{message}"))
            };
            let (wait, left) = (number("back-off "), number("restarting in "));
            assert!(left <= wait, "{message}");
            if waits.last() != Some(&wait) {
                waits.push(wait);
            }
            countdown.push((wait, left));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(get(&state, &crasher).unwrap()["restarts"].as_u64().unwrap() >= 2);

    let done = wait_phase(&state, &daemon, &job, "Stopped");
    assert_eq!(done["restarts"], 0);
    assert!(
        done["message"].as_str().unwrap().contains("completed"),
        "{done}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let later = get(&state, &job).unwrap();
    assert_eq!(later["phase"], "Stopped");
    assert_eq!(
        count_events(&state, &job, "Started"),
        1,
        "the job ran again"
    );
    // Every exit is an event saying how it ended.
    let exits = |name: &str| -> Vec<String> {
        events(&state)
            .into_iter()
            .filter(|e| e["name"] == name && e["reason"] == "Exited")
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(exits(&job), ["exited with code 0"]);
    assert!(
        exits(&crasher).iter().all(|m| m == "exited with code 1") && !exits(&crasher).is_empty(),
        "{:?}",
        exits(&crasher)
    );
}

#[test]
fn a_partial_left_by_a_killed_create_is_cleaned_and_the_container_created() {
    let state = StateDir::new();
    let name = unique("partial");
    // A create killed half way, by hand: a script template that hangs, then kill -9.
    let script = state.path().join("hang.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hand = state.path().join("hand.yaml");
    std::fs::write(
        &hand,
        manifest(
            &name,
            &format!(
                "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
                script.display()
            ),
        ),
    )
    .unwrap();
    let mut create = state
        .berth(&["create", "-f", hand.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for("the partial create", || {
        state
            .container_dir(&name)
            .join("rootfs")
            .exists()
            .then_some(())
    });
    create.kill().unwrap();
    create.wait().unwrap();
    assert!(state.container_dir(&name).join("partial").exists());

    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let daemon = Daemon::start(&state);
    wait_phase(&state, &daemon, &name, "Running");
    assert!(!state.container_dir(&name).join("partial").exists());
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.container_dir(&name).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["header"]["template"], "host");
    assert_eq!(config["header"]["origin"], "manifest");
}

#[test]
fn editor_and_git_bursts_converge_with_one_create_per_container() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let dir = manifests_dir(&state);
    let names: Vec<String> = (0..4).map(|i| unique(&format!("burst{i}"))).collect();
    let spec = |n: u32| format!("  command: [/bin/sleep, '{n}00']\n  stopTimeout: 0s\n");

    // vim: a swap file, a backup, its write test file, then the real file written
    // twice (truncate, then write).
    let vim = &names[0];
    std::fs::write(dir.join(format!(".{vim}.yaml.swp")), "garbage: [").unwrap();
    std::fs::write(dir.join(format!("{vim}.yaml~")), "garbage: [").unwrap();
    std::fs::write(dir.join("4913"), "").unwrap();
    std::fs::remove_file(dir.join("4913")).unwrap();
    std::fs::write(dir.join(format!("{vim}.yaml")), "").unwrap();
    std::fs::write(dir.join(format!("{vim}.yaml")), manifest(vim, &spec(1))).unwrap();
    std::fs::remove_file(dir.join(format!(".{vim}.yaml.swp"))).unwrap();

    // git checkout: several files replaced at once, each twice in quick succession.
    for round in 1..=2 {
        for name in &names[1..] {
            save(
                &state,
                &format!("{name}.yaml"),
                &manifest(name, &spec(round)),
            );
        }
    }
    for name in &names {
        wait_phase(&state, &daemon, name, "Running");
    }
    std::thread::sleep(Duration::from_secs(1));
    for name in &names {
        assert_eq!(
            count_events(&state, name, "Created"),
            1,
            "{name} was created more than once"
        );
        let item = get(&state, name).unwrap();
        assert_eq!(item["restarts"], 0);
    }
    // The final content won: the git files run round 2's command.
    let last = get(&state, &names[3]).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid_of(&last))).unwrap();
    assert_eq!(cmdline, b"/bin/sleep\x00200\x00");
}

#[test]
fn a_manifest_directory_that_is_a_swapped_symlink_is_followed() {
    let state = StateDir::new();
    // git-sync / ConfigMap style: `manifests` is a symlink swapped atomically.
    let root = state.path().join("sync");
    let (v1, v2) = (root.join("v1"), root.join("v2"));
    for dir in [&root, &v1, &v2] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (a, b) = (unique("swap-a"), unique("swap-b"));
    let spec = "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n";
    std::fs::write(v1.join("a.yaml"), manifest(&a, spec)).unwrap();
    std::fs::write(v2.join("b.yaml"), manifest(&b, spec)).unwrap();
    let link = state.path().join("manifests");
    std::os::unix::fs::symlink(&v1, &link).unwrap();
    let daemon = Daemon::start(&state);
    wait_phase(&state, &daemon, &a, "Running");

    let tmp = state.path().join("manifests.new");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    wait_phase(&state, &daemon, &b, "Running");
    wait_for("the old container to go", || {
        get(&state, &a).is_none().then_some(())
    });
    assert!(!state.container_dir(&a).exists());
}

#[test]
fn the_install_script_stages_the_binary_the_directories_and_the_unit() {
    let root = tempfile::Builder::new()
        .prefix("berth-install-")
        .tempdir()
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg("--no-start")
        .env("DESTDIR", root.path())
        .env("BERTH_BINARY", env!("CARGO_BIN_EXE_berth"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/bin/berth"), 0o755);
    assert_eq!(mode("etc/berth/manifests"), 0o755);
    assert_eq!(mode("var/lib/berth"), 0o700);
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/berth.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/berth daemon --manifests /etc/berth/manifests")
    );
    assert!(unit.contains("KillMode=process"));
    let version = std::process::Command::new(root.path().join("usr/local/bin/berth"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&version).starts_with("berth "));
}

#[test]
fn json_logs_name_the_container_of_every_reconcile() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &["--log-format", "json"]);
    let name = unique("logged");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    wait_phase(&state, &daemon, &name, "Running");
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["fields"]["reason"] == "Started")
        .unwrap_or_else(|| panic!("no Started event in:\n{log}"));
    assert_eq!(started["span"]["name"], "reconcile");
    assert_eq!(started["span"]["container"], name.as_str());
}

#[test]
fn sigterm_stops_the_daemon_promptly_and_leaves_containers_running() {
    let state = StateDir::new();
    let mut daemon = Daemon::start(&state);
    let name = unique("survivor");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let pid = pid_of(&wait_phase(&state, &daemon, &name, "Running"));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the daemon did not exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("shutting down: containers keep running")
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the daemon"
    );
    assert!(!state.path().join("berth.sock").exists());
}

/// Waits until `name` shows a problem that mentions `text`, and returns it.
fn wait_problem(state: &StateDir, name: &str, text: &str) -> serde_json::Value {
    wait_for(&format!("{name} to show {text:?}"), || {
        get(state, name).filter(|i| {
            i["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["message"].as_str().is_some_and(|m| m.contains(text)))
            })
        })
    })
}

#[test]
fn a_restarted_daemon_keeps_every_container_whose_manifest_cannot_be_used() {
    let state = StateDir::new();
    let mut daemon = Daemon::start(&state);
    let spec = "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n";
    let [syntax, empty, shared, big, pair1, pair2, typo] = [
        "syntax", "empty", "shared", "big", "pair-one", "pair-two", "typo",
    ]
    .map(unique);
    for name in [&syntax, &empty, &shared, &big, &typo] {
        save(&state, &format!("{name}.yaml"), &manifest(name, spec));
    }
    save(
        &state,
        "pair.yaml",
        &format!("{}---\n{}", manifest(&pair1, spec), manifest(&pair2, spec)),
    );
    let names = [&syntax, &empty, &shared, &big, &pair1, &pair2, &typo];
    let pids: Vec<i32> = names
        .iter()
        .map(|n| pid_of(&wait_phase(&state, &daemon, n, "Running")))
        .collect();
    daemon.kill_hard();
    drop(daemon);

    // While no daemon runs, every file breaks in its own way.
    let dir = manifests_dir(&state);
    std::fs::write(
        dir.join(format!("{syntax}.yaml")),
        manifest(&syntax, "  command: [/bin/sleep\n"),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{empty}.yaml")), "").unwrap();
    let open = dir.join(format!("{shared}.yaml"));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut huge = manifest(&big, spec);
    huge.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(dir.join(format!("{big}.yaml")), huge).unwrap();
    std::fs::write(
        dir.join(format!("{typo}.yaml")),
        manifest(
            &typo,
            "  command: [/bin/sleep, infinity]\n  restartPolcy: Always\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pair.yaml"),
        format!(
            "{}---\n{}",
            manifest(&pair1, spec),
            manifest(
                &pair2,
                "  command: [/bin/sleep, infinity]\n  stopTimout: 0s\n"
            )
        ),
    )
    .unwrap();

    let daemon = Daemon::start(&state);
    wait_problem(&state, &syntax, &format!("{syntax}.yaml:7:"));
    wait_problem(&state, &empty, "describes no container");
    wait_problem(&state, &shared, "writable by group or others");
    wait_problem(&state, &big, "larger than");
    wait_problem(&state, &typo, "did you mean `restartPolicy`");
    wait_problem(&state, &pair2, "stopTimout");
    // Longer than the prune grace: nothing is pruned later either.
    std::thread::sleep(Duration::from_millis(1500));
    for (name, pid) in names.iter().zip(&pids) {
        let item = get(&state, name).unwrap_or_else(|| panic!("{name} is gone:\n{}", daemon.log()));
        assert_eq!(item["phase"], "Running", "{item}");
        assert_eq!(
            pid_of(&item),
            *pid,
            "{name} was restarted:\n{}",
            daemon.log()
        );
        assert!(state.container_dir(name).join("rootfs").exists());
        assert_eq!(count_events(&state, name, "Removed"), 0);
    }
    let first = get(&state, &pair1).unwrap();
    assert!(
        first["conditions"].as_array().unwrap().is_empty(),
        "document 1 shows document 2's problem: {first}"
    );
}

#[test]
fn a_manifest_briefly_empty_or_moved_away_costs_nothing_and_a_removal_waits_the_grace() {
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &["--prune-grace", "3s"]);
    let name = unique("brief");
    let file = format!("{name}.yaml");
    let text = manifest(
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    save(&state, &file, &text);
    let pid = pid_of(&wait_phase(&state, &daemon, &name, "Running"));
    let path = manifests_dir(&state).join(&file);

    // What `scp` and `ssh host 'cat > f'` do: truncate, then write a moment later.
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(&path, &text).unwrap();
    // `mv` away and back.
    let away = state.path().join("away.yaml");
    std::fs::rename(&path, &away).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::rename(&away, &path).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let item = get(&state, &name).unwrap();
    assert_eq!(pid_of(&item), pid, "restarted:\n{}", daemon.log());
    assert_eq!(count_events(&state, &name, "Created"), 1, "created again");

    // Removed for good: it runs through the grace, then goes, and the event says which file.
    let removed = Instant::now();
    std::fs::remove_file(&path).unwrap();
    wait_problem(&state, &name, "no longer defines");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    wait_for("the container to be removed", || {
        get(&state, &name).is_none().then_some(())
    });
    assert!(
        removed.elapsed() >= Duration::from_secs(3),
        "pruned before the grace"
    );
    assert!(process_gone(pid));
    let event = events(&state)
        .into_iter()
        .find(|e| e["name"] == name.as_str() && e["reason"] == "Removed")
        .expect("a Removed event");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains(&path.display().to_string()),
        "{event}"
    );
}

#[test]
fn an_idle_daemon_does_not_keep_reading_its_manifests() {
    use notify::Watcher as _;
    let state = StateDir::new();
    let dir = manifests_dir(&state);
    let names: Vec<String> = (0..16).map(|i| unique(&format!("idle{i}"))).collect();
    for name in &names {
        save(
            &state,
            &format!("{name}.yaml"),
            &manifest(
                name,
                "  command: [/bin/sleep, infinity]\n  state: Stopped\n",
            ),
        );
    }
    // A resync far away: what is left is what the watcher itself causes.
    let daemon = Daemon::start_with(&state, &["--resync", "1h"]);
    for name in &names {
        wait_phase(&state, &daemon, name, "Stopped");
    }
    std::thread::sleep(Duration::from_millis(500));
    let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = opens.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                notify::EventKind::Access(notify::event::AccessKind::Open(_))
            )
        {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let opens = opens.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        opens, 0,
        "the idle daemon opened its manifests {opens} times in 2 s"
    );
}

#[test]
fn a_killed_monitor_leaves_exactly_one_init_once_the_daemon_converges() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let name = unique("monitor-killed");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
        ),
    );
    let old_init = pid_of(&wait_phase(&state, &daemon, &name, "Running"));
    let status_file = state.container_dir(&name).join("status");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status_file).unwrap()).unwrap();
    let monitor = status["monitorPid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(process_gone(monitor));

    // Converged: a monitor serves it again, with one init, and it stays so.
    let rootfs = state.container_dir(&name).join("rootfs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = state.run(&["status", &name]);
        let now: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let inits = processes_in(&rootfs);
        assert!(
            inits.len() <= 1,
            "two inits of {name}: {inits:?}\n{}",
            daemon.log()
        );
        if now["phase"] == "Running" && now.get("monitorPid").is_some() && inits.len() == 1 {
            assert_eq!(
                Some(&inits[0]),
                now["initPid"].as_i64().map(|p| p as i32).as_ref()
            );
            assert_ne!(inits[0], old_init, "the orphan was kept without a monitor");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never converged; status {now}, inits {inits:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(processes_in(&rootfs).len(), 1, "{}", daemon.log());
}

#[test]
fn stops_wait_side_by_side_and_never_hold_up_other_work() {
    let state = StateDir::new();
    // One worker: before, each stop held it for the whole stopTimeout in turn.
    let daemon = Daemon::start_with(&state, &["--concurrency", "1"]);
    // A shell as PID 1 ignores SIGTERM: each stop waits its full stopTimeout.
    let spec = "  command: [/bin/sh, -c, 'while :; do sleep 1; done']\n  stopTimeout: 4s\n";
    let names: Vec<String> = (0..5).map(|i| unique(&format!("slow{i}"))).collect();
    for name in &names {
        save(&state, &format!("{name}.yaml"), &manifest(name, spec));
    }
    for name in &names {
        wait_phase(&state, &daemon, name, "Running");
    }
    let removed = Instant::now();
    for name in &names {
        std::fs::remove_file(manifests_dir(&state).join(format!("{name}.yaml"))).unwrap();
    }
    // While they stop, a new container still starts at once.
    let newcomer = unique("newcomer");
    std::thread::sleep(Duration::from_millis(1500));
    save(
        &state,
        &format!("{newcomer}.yaml"),
        &manifest(
            &newcomer,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let saved = Instant::now();
    wait_phase(&state, &daemon, &newcomer, "Running");
    let newcomer_running = saved.elapsed();
    for name in &names {
        wait_for(&format!("{name} to be removed"), || {
            get(&state, name).is_none().then_some(())
        });
    }
    let all_gone = removed.elapsed();
    // 1 s of prune grace plus one stopTimeout of 4 s, not five of them (20 s);
    // bounds loose enough for a loaded machine, still far from the old figures.
    assert!(
        all_gone < Duration::from_secs(14),
        "five stops took {all_gone:?}:\n{}",
        daemon.log()
    );
    assert!(
        newcomer_running < Duration::from_secs(8),
        "a create waited behind the stops: {newcomer_running:?}"
    );
}

/// Every process in the test's own cgroup parent is killed when this is dropped:
/// for containers whose state dir only their own mount namespace can see.
struct KillCgroupParent<'a>(&'a StateDir);

impl Drop for KillCgroupParent<'_> {
    fn drop(&mut self) {
        let roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for _ in 0..50 {
            let mut pids = Vec::new();
            for root in roots.iter().chain([&PathBuf::from("/sys/fs/cgroup")]) {
                let parent = root.join(&self.0.cgroup_parent);
                for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                    for part in ["payload", "monitor", ""] {
                        let procs = child.path().join(part).join("cgroup.procs");
                        let text = std::fs::read_to_string(procs).unwrap_or_default();
                        pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
                    }
                }
            }
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A daemon whose state dir is a small tmpfs that only its own mount namespace
/// sees: a disk to fill or to make read-only without touching the host's.
/// Declare it after its StateDir and KillCgroupParent guard.
struct SmallDiskDaemon {
    child: Child,
    small: String,
    log: PathBuf,
}

impl SmallDiskDaemon {
    fn start(state: &StateDir) -> SmallDiskDaemon {
        let small = state.path().join("small");
        std::fs::create_dir(&small).unwrap();
        let log = state.path().join("daemon.log");
        let script = format!(
            "mount -t tmpfs -o size=8m,mode=0700 berth-test-tmpfs {small} && exec {berth} \
             --state-dir {small} --cgroup-parent {parent} daemon --manifests {manifests} \
             --prune-grace 1s --crash-backoff 1s --labels-file {small}/labels",
            small = small.display(),
            berth = env!("CARGO_BIN_EXE_berth"),
            parent = state.cgroup_parent,
            manifests = manifests_dir(state).display(),
        );
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare(1) from util-linux (apt-get install util-linux)");
        SmallDiskDaemon {
            child,
            small: small.display().to_string(),
            log,
        }
    }

    /// Runs `args` in the daemon's mount namespace.
    fn inside(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m", "--"])
            .args(args)
            .output()
            .unwrap()
    }

    fn berth(&self, args: &[&str]) -> Output {
        let mut all = vec![env!("CARGO_BIN_EXE_berth"), "--state-dir", &self.small];
        all.extend(args);
        self.inside(&all)
    }

    fn get(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.berth(&["get", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SmallDiskDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_full_disk_changes_nothing_that_runs_and_the_daemon_converges_once_space_is_back() {
    let state = StateDir::new();
    let _kill = KillCgroupParent(&state);
    let name = unique("full");
    let spec = "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n";
    save(&state, &format!("{name}.yaml"), &manifest(&name, spec));
    let mut daemon = SmallDiskDaemon::start(&state);
    let running = wait_for("the container on the small disk", || {
        daemon.get(&name).filter(|i| i["phase"] == "Running")
    });
    let first = pid_of(&running);

    // Fill the disk, then change the spec and add a container.
    let fill = format!("{}/fill", daemon.small);
    let out = daemon.inside(&["dd", "if=/dev/zero", &format!("of={fill}"), "bs=64k"]);
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let edited_spec = "  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n";
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(&name, edited_spec),
    );
    let second = unique("full-new");
    save(&state, &format!("{second}.yaml"), &manifest(&second, spec));
    wait_for("the daemon to meet the full disk", || {
        daemon
            .log()
            .contains("No space left on device")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Path::new(&format!("/proc/{first}")).exists(),
        "the running container was stopped for a spec it could not write:\n{}",
        daemon.log()
    );

    // Space is back: both converge without a restart of the daemon.
    let out = daemon.inside(&["rm", &fill]);
    assert!(out.status.success(), "{}", stderr(&out));
    let edited = wait_for("the new spec to run", || {
        daemon
            .get(&name)
            .filter(|i| i["phase"] == "Running" && i["pid"] != first)
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid_of(&edited))).unwrap();
    assert_eq!(cmdline, b"/bin/sleep\x001000\x00");
    wait_for("the new container to run", || {
        daemon.get(&second).filter(|i| i["phase"] == "Running")
    });
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "{}",
        daemon.log()
    );
    for n in [&name, &second] {
        daemon.berth(&["--cgroup-parent", &state.cgroup_parent, "stop", n]);
    }
}

#[test]
fn a_daemon_whose_state_database_keeps_failing_exits_non_zero_and_leaves_containers_running() {
    let state = StateDir::new();
    let _kill = KillCgroupParent(&state);
    let name = unique("rofs");
    let spec = "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n";
    save(&state, &format!("{name}.yaml"), &manifest(&name, spec));
    let mut daemon = SmallDiskDaemon::start(&state);
    let pid = pid_of(&wait_for("the container", || {
        daemon.get(&name).filter(|i| i["phase"] == "Running")
    }));
    // The disk under the database fills for good, and a container that crashes
    // every second keeps the daemon writing records and events.
    let fill = format!("{}/fill", daemon.small);
    let out = daemon.inside(&["dd", "if=/dev/zero", &format!("of={fill}"), "bs=4k"]);
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let crasher = unique("rofs-crash");
    let crash = "  command: [/bin/sh, -c, 'exit 1']\n";
    save(
        &state,
        &format!("{crasher}.yaml"),
        &manifest(&crasher, crash),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let exit = loop {
        if let Some(exit) = daemon.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon kept running on a failing database:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!exit.success(), "{exit:?}\n{}", daemon.log());
    assert!(
        daemon.log().contains("the state database failed for"),
        "{}",
        daemon.log()
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the daemon"
    );
}

/// Sends `request` as is on a new connection to the API and returns the answer.
fn raw_http(state: &StateDir, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(state.path().join("berth.sock")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `METHOD path` with no body and returns the status code and the body.
fn request(state: &StateDir, method: &str, path: &str) -> (u16, String) {
    let answer = raw_http(
        state,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

#[test]
fn every_api_error_is_json_with_a_code_and_a_message() {
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    let absent = unique("absent");
    for (method, path, status, code, says) in [
        (
            "GET",
            "/v1/nothing",
            404,
            "NotFound",
            "no route /v1/nothing",
        ),
        (
            "GET",
            "/v1/events?follow=maybe",
            400,
            "BadRequest",
            "follow",
        ),
        (
            "GET",
            "/v1/containers/x/logs?tail=-1",
            400,
            "BadRequest",
            "tail",
        ),
        (
            "DELETE",
            "/v1/containers",
            405,
            "MethodNotAllowed",
            "DELETE",
        ),
        (
            "GET",
            "/v1/containers/Not_A_Name",
            400,
            "BadRequest",
            "not a valid container name",
        ),
        (
            "GET",
            &format!("/v1/containers/{absent}"),
            404,
            "NotFound",
            "no container",
        ),
    ] {
        let (got, body) = request(&state, method, path);
        assert_eq!(got, status, "{method} {path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        assert_eq!(json["error"]["code"], code, "{method} {path}: {body}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method} {path}: {body}");
    }
    // The CLI still shows the daemon's message.
    let out = state.run(&["describe", "Not_A_Name"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a valid container name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_api_answers_its_version_and_health() {
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    let (status, body) = request(&state, "GET", "/v1/version");
    assert_eq!(status, 200, "{body}");
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cli = stdout(&state.run(&["--version"]));
    let number = version["version"].as_str().unwrap();
    assert!(
        !number.is_empty() && cli.contains(number),
        "{body} vs {cli}"
    );
    assert_eq!(version["apiVersion"], "v1", "{body}");
    let (status, body) = request(&state, "GET", "/v1/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health, serde_json::json!({ "status": "ok" }));
}

#[test]
fn logs_are_plain_text_and_events_ndjson_also_when_followed() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let name = unique("said");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sh, -c, 'echo hello; exec sleep infinity']\n  stopTimeout: 0s\n",
        ),
    );
    wait_phase(&state, &daemon, &name, "Running");
    let header = |answer: &str| {
        answer
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    let get = |path: &str| {
        raw_http(
            &state,
            &format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n"),
        )
    };
    let logs = get(&format!("/v1/containers/{name}/logs"));
    assert!(
        logs.starts_with("HTTP/1.1 200") && logs.contains("hello"),
        "{logs}"
    );
    assert_eq!(header(&logs), "text/plain; charset=utf-8", "{logs}");
    let events = get("/v1/events");
    assert_eq!(header(&events), "application/x-ndjson", "{events}");
    // A followed stream never ends: read its headers only.
    for (path, expected) in [
        (
            format!("/v1/containers/{name}/logs?follow=true"),
            "text/plain; charset=utf-8",
        ),
        ("/v1/events?follow=true".to_owned(), "application/x-ndjson"),
    ] {
        use std::io::{Read, Write};
        let mut stream =
            std::os::unix::net::UnixStream::connect(state.path().join("berth.sock")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "{path}: closed early");
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(header(&answer), expected, "{path}: {answer}");
    }
}

/// The JSON body of an API answer that must have `status`.
fn answer_json(state: &StateDir, method: &str, path: &str, status: u16) -> serde_json::Value {
    let (got, body) = request(state, method, path);
    assert_eq!(got, status, "{method} {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"))
}

#[test]
fn api_start_stop_and_restart_act_on_the_container_but_never_against_its_manifest() {
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let action = |name: &str, verb: &str| format!("/v1/containers/{name}/{verb}");

    // Its manifest says Running: a stop is refused and changes nothing.
    let up = unique("up");
    let up_file = manifests_dir(&state).join(format!("{up}.yaml"));
    save(
        &state,
        &format!("{up}.yaml"),
        &manifest(
            &up,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let pid = pid_of(&wait_phase(&state, &daemon, &up, "Running"));
    let refused = answer_json(&state, "POST", &action(&up, "stop"), 409);
    assert_eq!(
        refused["error"]["message"],
        format!(
            "container {up}: its manifest says state: Running; set state: Stopped in {}",
            up_file.display()
        )
    );
    assert!(!process_gone_now(pid) && pid_of(&get(&state, &up).unwrap()) == pid);
    // A restart restarts it in place.
    answer_json(&state, "POST", &action(&up, "restart"), 200);
    wait_for("the restart", || {
        let item = get(&state, &up)?;
        (item["reboots"] == 1 && item["phase"] == "Running").then_some(())
    });

    // Its manifest says Stopped: a start or restart is refused, it stays stopped.
    let down = unique("down");
    save(
        &state,
        &format!("{down}.yaml"),
        &manifest(
            &down,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n  state: Stopped\n",
        ),
    );
    wait_phase(&state, &daemon, &down, "Stopped");
    for verb in ["start", "restart"] {
        let refused = answer_json(&state, "POST", &action(&down, verb), 409);
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("its manifest says state: Stopped; set state: Running in"),
            "{verb}: {message}"
        );
    }
    assert_eq!(get(&state, &down).unwrap()["pid"], serde_json::Value::Null);

    // Made by hand: started, restarted and stopped freely.
    let hand = unique("hand");
    let file = state.manifest(
        &hand,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    let out = state.run(&["create", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let started = answer_json(&state, "POST", &action(&hand, "start"), 200);
    let first = i32::try_from(started["pid"].as_i64().unwrap()).unwrap();
    assert!(!process_gone_now(first));
    let again = answer_json(&state, "POST", &action(&hand, "start"), 409);
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already running")
    );
    answer_json(&state, "POST", &action(&hand, "stop"), 200);
    assert!(process_gone(first), "the stopped container's init lives on");
    let restarted = answer_json(&state, "POST", &action(&hand, "restart"), 200);
    let second = i32::try_from(restarted["pid"].as_i64().unwrap()).unwrap();
    assert!(!process_gone_now(second));
    answer_json(&state, "POST", &action(&hand, "stop"), 200);
    assert!(process_gone(second));
    let counts = ["Started", "Stopped", "Restarted"].map(|r| count_events(&state, &hand, r));
    assert_eq!(counts, [1, 2, 1], "events of {hand}: {:?}", events(&state));

    // Absent and invalid names.
    answer_json(&state, "POST", &action(&unique("absent"), "start"), 404);
    answer_json(&state, "POST", &action("Not_A_Name", "stop"), 400);
}

#[test]
fn every_route_the_openapi_document_names_answers() {
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    // A container made by hand, stopped: every route has something to act on.
    let name = unique("doc");
    let file = state.manifest(
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    let out = state.run(&["create", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = answer_json(&state, "GET", "/v1/openapi.json", 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 12, "{:?}", paths.keys());
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(operation["responses"]["200"].is_object(), "{method} {path}");
        }
    }
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path.replace("{name}", &name);
            let (status, body) = request(&state, &method.to_uppercase(), &concrete);
            assert!(
                status != 404 && status != 405,
                "{method} {concrete}: {status} {body}"
            );
        }
    }
    // Every schema it refers to is in it.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let schema = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is missing"
        );
    }
    let _ = state.run(&["stop", &name, "--timeout", "0s"]);
}

#[test]
fn the_container_list_honours_a_label_selector() {
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    let (web, db) = (unique("sel-web"), unique("sel-db"));
    for (name, app) in [(&web, "web"), (&db, "db")] {
        let file = state.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\n  \
                 labels: {{app: {app}}}\nspec:\n  command: [/bin/true]\n"
            ),
        )
        .unwrap();
        let out = state.run(&["create", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let names = |query: &str| -> Vec<String> {
        let list = answer_json(&state, "GET", &format!("/v1/containers?{query}"), 200);
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("labelSelector=app%3Dweb"), vec![web.clone()]);
    assert_eq!(names("labelSelector=app!%3Dweb"), vec![db.clone()]);
    assert_eq!(names("labelSelector=app"), [db.clone(), web.clone()]);
    assert!(names("labelSelector=!app").is_empty());
    let (status, body) = request(&state, "GET", "/v1/containers?labelSelector=%3Dweb");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad label selector term"), "{body}");
    // A misspelt parameter is an error, not every container.
    let (status, body) = request(&state, "GET", "/v1/containers?labelselector=app%3Dweb");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_reboot_of_an_invalid_name_is_a_bad_request() {
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    let post = |name: &str| {
        raw_http(
            &state,
            &format!(
                "POST /v1/containers/{name}/reboot HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let answer = post("Not_A_Name");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("is not a valid container name"), "{answer}");
    let answer = post(&unique("absent"));
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
}

#[test]
fn a_connection_whose_headers_never_finish_is_closed_and_others_are_served() {
    use std::io::{Read, Write};
    let state = StateDir::new();
    let _daemon = Daemon::start(&state);
    let socket = state.path().join("berth.sock");
    // More stalled clients than the daemon serves at once (256): half a header
    // each, and one that sends nothing at all.
    let mut stalled: Vec<std::os::unix::net::UnixStream> = (0..262)
        .map(|_| {
            let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            stream
                .write_all(b"GET /v1/containers HTTP/1.1\r\nHost: ber")
                .unwrap();
            stream
        })
        .collect();
    stalled.push(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    let started = Instant::now();
    let out = state.run(&["get"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        assert!(
            stream.read_to_end(&mut rest).is_ok(),
            "a stalled connection is still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_daemon_runs_and_follows_a_63_character_name_under_a_long_state_dir() {
    // <state>/containers/NAME/monitor.sock is past the 108 bytes of a socket address.
    let state = StateDir::with_path_length(90);
    let daemon = Daemon::start(&state);
    let mut name = unique("long");
    name.push_str(&"b".repeat(63 - name.len()));
    save(
        &state,
        "long.yaml",
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    let first = pid_of(&wait_phase(&state, &daemon, &name, "Running"));
    // Following the monitor is a wait on its socket, not reconciles in a loop.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.child.id())).unwrap();
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu() - before;
    assert!(
        ticks < 50,
        "the daemon used {ticks} ticks of CPU in 2 s while idle"
    );
    // The daemon learns of the exit through monitor.sock, and restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = wait_for("a restart", || {
        get(&state, &name)
            .filter(|i| i["phase"] == "Running" && i["restarts"] == 1)
            .map(|i| pid_of(&i))
    });
    assert_ne!(first, second);
}

#[test]
fn without_the_daemon_get_logs_and_describe_read_the_state_dir() {
    let state = StateDir::new();
    let mut daemon = Daemon::start(&state);
    let name = unique("offline");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sh, -c, 'echo hello-from-console; exec sleep infinity']\n  stopTimeout: 0s\n",
        ),
    );
    let pid = pid_of(&wait_phase(&state, &daemon, &name, "Running"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the daemon to exit", || daemon.child.try_wait().unwrap());
    let notice = "the daemon is not running";

    let out = state.run(&["get"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(notice), "{}", stderr(&out));
    let row: Vec<String> = stdout(&out)
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} is not listed:\n{}", stdout(&out)))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(row[1..3], ["Running".to_owned(), pid.to_string()]);
    let item = get(&state, &name).expect("get NAME -o json works");
    assert_eq!(
        (item["phase"].as_str(), pid_of(&item)),
        (Some("Running"), pid)
    );

    let out = wait_for("the console output", || {
        let out = state.run(&["logs", &name]);
        stdout(&out).contains("hello-from-console").then_some(out)
    });
    assert!(stderr(&out).contains(notice), "{}", stderr(&out));

    let out = state.run(&["describe", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Phase:     Running"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("/bin/sh"), "{}", stdout(&out));
}

#[test]
fn without_the_daemon_events_are_read_from_the_database_unless_it_is_locked() {
    let state = StateDir::new();
    let mut daemon = Daemon::start(&state);
    let name = unique("evoffline");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    wait_phase(&state, &daemon, &name, "Running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the daemon to exit", || daemon.child.try_wait().unwrap());

    // Lines berth says (the store's own warnings, about a test state dir's mode, aside).
    let said = |out: &std::process::Output| {
        stderr(out)
            .lines()
            .filter(|l| l.starts_with("berth: "))
            .count()
    };
    let out = state.run(&["events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(said(&out), 1, "{}", stderr(&out));
    let mine = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["name"] == name)
        .count();
    assert!(mine > 0, "no event of {name}:\n{}", stdout(&out));

    // Whoever holds sled's lock (a daemon starting, say) keeps it from us: one line says so.
    let file = std::fs::File::open(state.path().join("state.db/db")).unwrap();
    let _held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let out = state.run(&["events"]);
    assert!(!out.status.success());
    assert_eq!(said(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be read"), "{}", stderr(&out));
}

#[test]
fn the_daemons_text_log_in_a_file_has_no_escape_codes_and_a_refused_user_is_told_why() {
    use std::os::unix::process::CommandExt;
    let state = StateDir::new();
    let daemon = Daemon::start(&state);
    let name = unique("plain");
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    );
    wait_phase(&state, &daemon, &name, "Running");
    let log = daemon.log();
    assert!(log.contains("berth daemon started"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a file:\n{log:?}");

    // As user nobody, whom the 0700 state dir keeps out of the socket.
    let out = state
        .berth(&["get"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let berth_sock = state.path().join("berth.sock");
    assert!(
        stderr(&out).contains(&format!(
            "permission denied on {}: run as root or in group berth",
            berth_sock.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_auto_updated_image_follows_its_tag_and_a_registry_that_is_down_changes_nothing() {
    let registry = crate::registry::Registry::start();
    let first = registry.push_busybox("test/auto", "stable", 0);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.path());
    let daemon = Daemon::start_with(
        &state,
        &[
            "--registries-conf",
            conf.to_str().unwrap(),
            "--resync",
            "1s",
        ],
    );
    let name = unique("auto");
    // The second image has /srv/random; the first has not.
    save(
        &state,
        &format!("{name}.yaml"),
        &manifest(
            &name,
            &format!(
                "  rootfs: {{image: '{}', pullPolicy: Always, updateInterval: 1s}}\n  \
                 command: [/bin/busybox, sh, -c, '[ -e /srv/random ] && echo NEW-IMAGE || echo OLD-IMAGE; \
                 exec /bin/busybox sleep 1000']\n  stopTimeout: 1s\n",
                first.reference
            ),
        ),
    );
    let running = wait_phase(&state, &daemon, &name, "Running");
    let log = |state: &StateDir| {
        std::fs::read_to_string(state.container_dir(&name).join("console.log")).unwrap_or_default()
    };
    wait_for("the first image's output", || {
        log(&state).contains("OLD-IMAGE").then_some(())
    });
    let config = |state: &StateDir| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(state.container_dir(&name).join("config.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(config(&state)["layers"]["image"], first.digest.as_str());

    // The tag moves: within a few intervals the container runs the new digest.
    let second = registry.push_busybox("test/auto", "stable", 1);
    assert_ne!(first.digest, second.digest);
    wait_for("the new image's output", || {
        log(&state).contains("NEW-IMAGE").then_some(())
    });
    assert_eq!(config(&state)["layers"]["image"], second.digest.as_str());
    // `get -o wide` and `describe` show the digest it runs.
    let wide = stdout(&state.run(&["get", &name, "-o", "wide"]));
    assert!(wide.contains(&second.digest[..19]), "{wide}");
    let described = stdout(&state.run(&["describe", &name]));
    assert!(
        described.contains(&format!("Image layers:   overlay of {}", second.digest)),
        "{described}"
    );
    let updated: Vec<serde_json::Value> = events(&state)
        .into_iter()
        .filter(|e| e["name"] == name.as_str() && e["reason"] == "ImageUpdated")
        .collect();
    assert_eq!(updated.len(), 1, "{updated:?}");
    let message = updated[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&first.digest) && message.contains(&second.digest),
        "{message}"
    );
    let item = wait_phase(&state, &daemon, &name, "Running");
    assert_ne!(pid_of(&item), pid_of(&running));

    // The registry goes away: what runs keeps running, and says why it cannot update.
    let pid = pid_of(&item);
    drop(registry);
    let failed = wait_for("the ImageUpdateFailed condition", || {
        get(&state, &name).filter(|item| {
            item["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["kind"] == "ImageUpdateFailed"))
        })
    });
    let condition = failed["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "ImageUpdateFailed")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(condition.contains("cannot check"), "{condition}");
    std::thread::sleep(Duration::from_secs(3));
    let item = wait_phase(&state, &daemon, &name, "Running");
    assert_eq!(
        pid_of(&item),
        pid,
        "the container was restarted while the registry was down"
    );
    assert_eq!(count_events(&state, &name, "ImageUpdateFailed"), 1);
}
