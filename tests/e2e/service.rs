//! The daemon under systemd (as root): the notify protocol on a fake
//! NOTIFY_SOCKET, `berth status` about the daemon itself, and `install.sh`'s
//! unit, completions and man page.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, get, manifest, manifests_dir, save};
use crate::{StateDir, stderr, stdout, unique};

/// A unix datagram socket in the test's state dir, standing in for systemd's.
struct FakeSystemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    /// Every datagram received so far.
    messages: Vec<String>,
}

impl FakeSystemd {
    fn new(state: &StateDir, file: &str) -> FakeSystemd {
        let path = state.path().join(file);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        FakeSystemd {
            socket,
            path,
            messages: Vec::new(),
        }
    }

    /// Receives until a datagram has a line `line` (or a line starting with it,
    /// when it ends in '='); returns that datagram.
    fn wait_for(&mut self, line: &str, daemon: Option<&Daemon>) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let matches = |m: &String| {
            m.lines().any(|l| {
                if line.ends_with('=') {
                    l.starts_with(line)
                } else {
                    l == line
                }
            })
        };
        loop {
            if let Some(found) = self.messages.iter().find(|m| matches(m)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} in 30 s; received {:?}\ndaemon log:\n{}",
                self.messages,
                daemon.map(Daemon::log).unwrap_or_default()
            );
            self.receive_for(Duration::ZERO);
        }
    }

    /// Receives for `how_long` (at least one try).
    fn receive_for(&mut self, how_long: Duration) {
        let deadline = Instant::now() + how_long;
        let mut buffer = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                self.messages
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// The datagrams received from `from` on with a line starting with `prefix`.
    fn lines(&self, from: usize, prefix: &str) -> Vec<String> {
        self.messages[from..]
            .iter()
            .flat_map(|m| m.lines())
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }
}

fn sleeper(name: &str) -> String {
    manifest(
        name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    )
}

#[test]
fn systemd_hears_ready_once_the_manifests_run_then_counts_by_phase_then_stopping() {
    let state = StateDir::new();
    let (web, db) = (unique("notify-web"), unique("notify-db"));
    save(&state, &format!("{web}.yaml"), &sleeper(&web));
    save(&state, &format!("{db}.yaml"), &sleeper(&db));
    let mut systemd = FakeSystemd::new(&state, "notify.sock");
    let daemon = Daemon::start_with_env(
        &state,
        &[],
        &[
            ("NOTIFY_SOCKET", Some(systemd.path.as_os_str())),
            ("WATCHDOG_USEC", None),
            ("WATCHDOG_PID", None),
        ],
    );
    let ready = systemd.wait_for("READY=1", Some(&daemon));
    // By READY=1, both were started by the first reconcile.
    for name in [&web, &db] {
        let phase = get(&state, name).map(|item| item["phase"].clone());
        assert_eq!(
            phase,
            Some(serde_json::json!("Running")),
            "{name} at READY=1 ({ready:?})"
        );
    }
    assert!(
        ready.lines().any(|l| l == "STATUS=2 containers: 2 Running"),
        "{ready:?}"
    );

    // The daemon's own status, as text and as JSON.
    let out = state.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let manifests = manifests_dir(&state);
    for line in [
        format!("Version:    {}", env!("CARGO_PKG_VERSION")),
        "Uptime:     ".to_owned(),
        format!("Source:     directory {}", manifests.display()),
        "Last sync:  ".to_owned(),
        "Last error: none".to_owned(),
        "Containers: 2 (2 Running)".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    let out = state.run(&["status", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    assert_eq!(json["version"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["source"]["kind"], "directory");
    assert_eq!(json["source"]["lastSync"]["ok"], true, "{json}");
    assert_eq!(json["phases"]["Running"], 2, "{json}");
    assert_eq!(json["containers"], 2, "{json}");
    assert!(json["uptimeSeconds"].as_u64().is_some(), "{json}");
    // The commit berth was built from, in a git checkout as here.
    let commit = json["version"]["gitCommit"].as_str().unwrap_or_default();
    assert!(
        !commit.is_empty() && stdout(&state.run(&["--version"])).contains(commit),
        "{json}"
    );

    // A removed manifest: its container goes, and systemd hears the new count.
    let before = systemd.messages.len();
    std::fs::remove_file(manifests.join(format!("{db}.yaml"))).unwrap();
    systemd.wait_for("STATUS=1 container: 1 Running", Some(&daemon));
    assert!(get(&state, &db).is_none());
    // Sent when the counts change, never on a timer, and no watchdog unasked.
    systemd.receive_for(Duration::from_secs(1));
    let statuses = systemd.lines(before, "STATUS=");
    assert!(
        statuses.windows(2).all(|pair| pair[0] != pair[1]),
        "{statuses:?}"
    );
    assert!(
        systemd.lines(0, "WATCHDOG").is_empty(),
        "{:?}",
        systemd.messages
    );

    drop(daemon);
    systemd.wait_for("STOPPING=1", None);
    let out = state.run(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}

#[test]
fn with_watchdog_usec_set_the_daemon_pings_the_watchdog_repeatedly() {
    let state = StateDir::new();
    let mut systemd = FakeSystemd::new(&state, "notify.sock");
    let pid = std::process::id().to_string();
    let daemon = Daemon::start_with_env(
        &state,
        &[],
        &[
            ("NOTIFY_SOCKET", Some(systemd.path.as_os_str())),
            ("WATCHDOG_USEC", Some("400000".as_ref())),
            ("WATCHDOG_PID", None),
        ],
    );
    let ready = systemd.wait_for("READY=1", Some(&daemon));
    assert!(
        ready.lines().any(|l| l == "STATUS=0 containers"),
        "{ready:?}"
    );
    let from = systemd.messages.len();
    systemd.receive_for(Duration::from_secs(2));
    // Every 200 ms: about ten in two seconds; a loaded machine may delay a few.
    let pings = systemd.lines(from, "WATCHDOG=1").len();
    assert!(pings >= 4, "{pings} pings in 2 s: {:?}", systemd.messages);
    drop(daemon);

    // WATCHDOG_PID naming another process: the watchdog is not ours to ping.
    let mut systemd = FakeSystemd::new(&state, "notify-2.sock");
    let daemon = Daemon::start_with_env(
        &state,
        &[],
        &[
            ("NOTIFY_SOCKET", Some(systemd.path.as_os_str())),
            ("WATCHDOG_USEC", Some("400000".as_ref())),
            ("WATCHDOG_PID", Some(pid.as_ref())),
        ],
    );
    systemd.wait_for("READY=1", Some(&daemon));
    systemd.receive_for(Duration::from_secs(1));
    assert!(
        systemd.lines(0, "WATCHDOG").is_empty(),
        "{:?}",
        systemd.messages
    );
}

#[test]
fn the_install_script_installs_completions_the_man_page_and_a_unit_systemd_accepts() {
    let root = tempfile::Builder::new()
        .prefix("berth-install-")
        .tempdir()
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg("--no-start")
        .env("DESTDIR", root.path())
        .env("PREFIX", "/usr")
        .env("BERTH_BINARY", env!("CARGO_BIN_EXE_berth"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let read = |path: &str| {
        std::fs::read_to_string(root.path().join(path))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"))
    };
    assert!(read("usr/share/bash-completion/completions/berth").contains("_berth()"));
    assert!(read("usr/share/zsh/site-functions/_berth").starts_with("#compdef berth"));
    assert!(read("usr/share/fish/vendor_completions.d/berth.fish").contains("complete -c berth"));
    let man = read("usr/share/man/man1/berth.1");
    assert!(man.contains(".TH berth 1"), "{man}");
    assert!(root.path().join("usr/bin/berth").is_file());
    let unit = read("etc/systemd/system/berth.service");
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/berth daemon --manifests /etc/berth/manifests --cgroup-delegate\n"
        ),
        "{unit}"
    );
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "Delegate=yes",
        "KillMode=process",
        "Restart=always",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line} in:\n{unit}");
    }

    // systemd's own check, on the unit with ExecStart naming the staged binary
    // and the staged man page on MANPATH (Documentation=man:berth(1)).
    let staged = root.path().join("usr/bin/berth");
    let checked = root.path().join("check");
    std::fs::create_dir(&checked).unwrap();
    std::fs::write(
        checked.join("berth.service"),
        unit.replace(
            "ExecStart=/usr/bin/berth ",
            &format!("ExecStart={} ", staged.display()),
        ),
    )
    .unwrap();
    let have_man = std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(if have_man { "--man=yes" } else { "--man=no" })
        .arg(checked.join("berth.service"))
        .env("MANPATH", root.path().join("usr/share/man"))
        .output();
    let verify = match verify {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("systemd-analyze is missing: apt-get install systemd (.ci/run installs it)")
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    let said = format!("{}{}", stdout(&verify), stderr(&verify));
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    // Unknown keys and bad values are warnings with exit 0: none may name ours.
    assert!(
        !said.contains("berth.service"),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn a_device_whose_repository_cannot_be_reached_on_its_first_start_is_ready_and_says_why() {
    let state = StateDir::new();
    // A repository that does not exist: the first fetch fails, and there is no
    // applied commit to serve. Without READY=1 systemd would kill the daemon
    // at its start timeout, again and again.
    let gone = state.path().join("no-such-repository.git");
    let mut systemd = FakeSystemd::new(&state, "notify-git.sock");
    let daemon = Daemon::start_with_env(
        &state,
        &["--git", gone.to_str().unwrap(), "--git-interval", "1s"],
        &[("NOTIFY_SOCKET", Some(systemd.path.as_os_str()))],
    );
    systemd.wait_for("READY=1", Some(&daemon));
    let out = state.run(&["status", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    assert_eq!(json["source"]["kind"], "git", "{json}");
    assert_eq!(json["source"]["lastSync"]["ok"], false, "{json}");
    let message = json["source"]["lastError"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("cannot fetch")
            && message.contains("nothing is applied until a fetch succeeds"),
        "{json}"
    );
}
