//! `berth daemon` on a watched directory, driven as a user would (as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::{StateDir, process_gone, stderr, stdout, unique};

/// A running `berth daemon`, ended (SIGTERM, then SIGKILL) when dropped. Declare it
/// after its StateDir, so that it ends first.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(state: &StateDir) -> Daemon {
        Daemon::start_with(state, &[])
    }

    fn start_with(state: &StateDir, extra: &[&str]) -> Daemon {
        let manifests = manifests_dir(state);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log = state.path().join(format!("daemon-{stamp}.log"));
        let socket = state.path().join("berth.sock");
        let _ = std::fs::remove_file(&socket);
        let child = state
            .berth(&["daemon", "--manifests"])
            .arg(&manifests)
            .args(["--resync", "3s", "--crash-backoff", "1s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon { child, log };
        wait_for("the daemon's socket", || {
            std::os::unix::net::UnixStream::connect(&socket)
                .is_ok()
                .then_some(())
        });
        daemon
    }

    fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

fn manifests_dir(state: &StateDir) -> PathBuf {
    let dir = state.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Writes like an editor's atomic save: a temp file, then rename over.
fn save(state: &StateDir, file: &str, text: &str) {
    let dir = manifests_dir(state);
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(state: &StateDir, name: &str) -> Option<serde_json::Value> {
    let out = state.run(&["get", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn wait_phase(state: &StateDir, daemon: &Daemon, name: &str, phase: &str) -> serde_json::Value {
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
fn events(state: &StateDir) -> Vec<serde_json::Value> {
    let out = state.run(&["events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_events(state: &StateDir, name: &str, reason: &str) -> u64 {
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

    // Back-off: 1 s, 2 s, 4 s...: the wait shown grows.
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while waits.len() < 2 || waits.windows(2).all(|w| w[1] <= w[0]) {
        assert!(
            Instant::now() < deadline,
            "no growing back-off seen: {waits:?}\n{}",
            daemon.log()
        );
        if let Some(item) = get(&state, &crasher).filter(|i| i["phase"] == "CrashLoopBackOff") {
            let message = item["message"].as_str().unwrap().to_owned();
            assert!(message.contains("exited with code 1"), "{message}");
            let wait: u64 = message
                .strip_prefix("back-off ")
                .and_then(|m| m.split('s').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{message}"));
            if waits.last() != Some(&wait) {
                waits.push(wait);
            }
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
    // More stalled clients than the daemon serves at once: half a header each,
    // and one that sends nothing at all.
    let mut stalled: Vec<std::os::unix::net::UnixStream> = (0..70)
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
