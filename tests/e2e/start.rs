//! `berth start`, `stop`, `reboot` and the monitor, against real containers (as root).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{StateDir, cgroup_dirs, process_gone, stderr, stdout, unique};

pub(crate) fn create(state: &StateDir, name: &str, spec: &str) {
    let manifest = state.manifest(name, spec);
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
}

pub(crate) fn start(state: &StateDir, name: &str) -> i32 {
    let out = state.run(&["start", name]);
    assert!(
        out.status.success(),
        "start: {}{}",
        stdout(&out),
        stderr(&out)
    );
    status(state, name)["initPid"].as_i64().unwrap() as i32
}

pub(crate) fn status(state: &StateDir, name: &str) -> serde_json::Value {
    let out = state.run(&["status", name]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `check` for up to 15 s.
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn console(state: &StateDir, name: &str) -> String {
    std::fs::read_to_string(state.container_dir(name).join("console.log")).unwrap_or_default()
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// Proves that `pid` is not in the host's PID namespace, before anything in it
/// may call reboot(2) or poweroff: its namespace differs from init's (where
/// /proc/1/ns is readable; on some VMs PID 1 is not dumpable) and from ours, and
/// it lies deeper than ours (more levels in NSpid).
fn assert_own_pid_namespace(pid: i32) {
    let theirs = ns(&pid.to_string(), "pid");
    if let Ok(host) = std::fs::read_link("/proc/1/ns/pid") {
        assert_ne!(theirs, host, "pid {pid} is in the host's PID namespace");
    }
    assert_ne!(
        theirs,
        ns("self", "pid"),
        "pid {pid} is in the test's PID namespace"
    );
    let levels = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|ids| ids.split_whitespace().count())
            .unwrap()
    };
    assert!(
        levels(&pid.to_string()) > levels("self"),
        "pid {pid} is not in a nested PID namespace"
    );
}

/// The monitor processes of this state dir, from every process's argv.
fn monitors(state: &StateDir, name: &str) -> Vec<i32> {
    let title = format!("[berth monitor] {} {name}", state.path().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).trim_end_matches('\0') == title)
        })
        .collect()
}

#[test]
fn a_container_runs_in_its_own_namespaces_as_pid_1_with_a_clean_environment() {
    let state = StateDir::new();
    let name = unique("isolated");
    create(
        &state,
        &name,
        "  command: [/bin/sh, -c, 'echo \"pid=$$ host=$(hostname) cgroup=$(cut -d: -f3 /proc/self/cgroup | sort -u)\"; exec sleep infinity']\n  \
         hostname: boxed\n  env: {GREETING: hello}\n  stopTimeout: 0s\n",
    );
    let out = state
        .berth(&["start", &name])
        .env("LEAKED_SECRET", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = status(&state, &name)["initPid"]
        .as_i64()
        .unwrap()
        .to_string();
    for kind in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        assert_ne!(
            ns(&pid, kind),
            ns("self", kind),
            "{kind} namespace is shared with the host"
        );
    }
    let line = wait_for("the command's output", || {
        let log = console(&state, &name);
        log.contains('\n').then_some(log)
    });
    assert_eq!(line, "pid=1 host=boxed cgroup=/\n");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut env: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        // The shell itself exports PWD before exec'ing sleep.
        .filter(|v| !v.starts_with("PWD="))
        .collect();
    env.sort();
    assert_eq!(
        env,
        [
            "GREETING=hello",
            "HOME=/root",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=xterm",
            "container=berth",
        ]
    );
    // Only loopback, and it is up.
    let links = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let names: Vec<&str> = links
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"]);
}

#[test]
fn starting_a_missing_command_fails_naming_it_and_leaves_no_monitor() {
    let state = StateDir::new();
    let name = unique("nocmd");
    create(
        &state,
        &name,
        "  command: [/nonexistent/server, --port, '80']\n",
    );
    let out = state.run(&["start", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot start {name}: exec /nonexistent/server: No such file or directory"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        monitors(&state, &name).is_empty(),
        "a monitor was left behind"
    );
    let failed = status(&state, &name);
    assert_eq!(failed["phase"], "Failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/server")
    );
    assert!(!state.container_dir(&name).join("monitor.sock").exists());

    // A missing workingDir is named too.
    let other = unique("nodir");
    create(
        &state,
        &other,
        "  command: [/bin/true]\n  workingDir: /no/such/dir\n",
    );
    let out = state.run(&["start", &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("enter workingDir /no/such/dir: No such file or directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reboot_inside_brings_it_back_with_a_new_init_and_poweroff_stops_it() {
    let state = StateDir::new();
    // Each boot waits for the test's go-ahead, so the test can prove the namespace
    // first; the command itself also refuses to reboot unless it is PID 1.
    let wait_then = |action: &str| {
        format!(
            "  command: [/bin/sh, -c, 'while [ ! -e /tmp/go ]; do sleep 0.05; done; rm /tmp/go; [ $$ -eq 1 ] && {action}; sleep 60']\n  stopTimeout: 0s\n"
        )
    };
    let name = unique("reboots");
    create(&state, &name, &wait_then("reboot -f"));
    let first = start(&state, &name);
    assert_own_pid_namespace(first);
    std::fs::write(state.container_dir(&name).join("rootfs/tmp/go"), "").unwrap();
    let rebooted = wait_for("the reboot", || {
        let s = status(&state, &name);
        (s["reboots"] == 1 && s["phase"] == "Running").then_some(s)
    });
    let second = rebooted["initPid"].as_i64().unwrap() as i32;
    assert_ne!(second, first, "init was not replaced");
    assert_own_pid_namespace(second);
    assert_eq!(rebooted["lastExit"]["reason"], "Reboot");
    assert_eq!(monitors(&state, &name).len(), 1);

    // poweroff, in a busybox container: stopped for good, and said so.
    let name = unique("halts");
    create(
        &state,
        &name,
        &format!(
            "  rootfs: {{template: busybox}}\n{}",
            wait_then("poweroff -f")
        ),
    );
    let pid = start(&state, &name);
    assert_own_pid_namespace(pid);
    std::fs::write(state.container_dir(&name).join("rootfs/tmp/go"), "").unwrap();
    let halted = wait_for("the poweroff", || {
        let s = status(&state, &name);
        (s["phase"] == "Stopped").then_some(s)
    });
    assert_eq!(halted["lastExit"]["reason"], "Halt");
    assert_eq!(halted["reboots"], 0);
    wait_for("the monitor to exit", || {
        monitors(&state, &name).is_empty().then_some(())
    });
}

#[test]
fn berth_reboot_restarts_it_through_the_monitor() {
    let state = StateDir::new();
    let name = unique("reboot-cmd");
    create(
        &state,
        &name,
        "  command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.1; done']\n",
    );
    let first = start(&state, &name);
    let out = state.run(&["reboot", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restarted = wait_for("the restart", || {
        let s = status(&state, &name);
        (s["reboots"] == 1 && s["phase"] == "Running").then_some(s)
    });
    assert_ne!(restarted["initPid"].as_i64().unwrap() as i32, first);
}

#[test]
fn limits_are_applied_and_a_fork_bomb_stops_at_the_pids_limit() {
    let state = StateDir::new();
    let name = unique("limited");
    create(
        &state,
        &name,
        // The bomb runs in a child shell, which dies when a fork fails; init lives on.
        "  command: [/bin/sh, -c, 'sh -c \"i=0; while [ \\$i -lt 60 ]; do sleep 30 & i=\\$((i+1)); done\"; echo spawned; exec sleep infinity']\n  \
         resources: {memory: 48Mi, pids: 16}\n  stopTimeout: 0s\n",
    );
    start(&state, &name);
    wait_for("the bomb to go off", || {
        console(&state, &name).contains("spawned").then_some(())
    });
    let dirs = cgroup_dirs(&status(&state, &name));
    let payload = |file: &str| {
        dirs.iter()
            .map(|d| d.join("payload").join(file))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no payload cgroup has {file}: {dirs:?}"))
    };
    let memory = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|f| {
            dirs.iter()
                .map(|d| d.join("payload").join(f))
                .find(|p| p.exists())
        })
        .expect("no memory limit file in the payload cgroup");
    assert_eq!(
        std::fs::read_to_string(memory).unwrap().trim(),
        (48u64 << 20).to_string()
    );
    assert_eq!(
        std::fs::read_to_string(payload("pids.max")).unwrap().trim(),
        "16"
    );
    let current: u64 = std::fs::read_to_string(payload("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 16, "{current} processes despite pids: 16");
    let events = std::fs::read_to_string(payload("pids.events")).unwrap();
    let refused: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(refused > 0, "the kernel never refused a fork: {events}");
    assert!(
        console(&state, &name).contains("fork"),
        "the shell said nothing of failed forks"
    );
}

#[test]
fn without_a_pids_limit_a_container_gets_4096_and_pids_zero_means_none() {
    let state = StateDir::new();
    for (prefix, pids, expected) in [
        ("pidsdefault", "", "4096"),
        ("pidsunlimited", "  resources: {pids: 0}\n", "max"),
    ] {
        let name = unique(prefix);
        create(
            &state,
            &name,
            &format!("  command: [/bin/sleep, infinity]\n{pids}  stopTimeout: 0s\n"),
        );
        start(&state, &name);
        let max = cgroup_dirs(&status(&state, &name))
            .iter()
            .map(|d| d.join("payload/pids.max"))
            .find(|p| p.exists())
            .expect("no payload cgroup has pids.max");
        assert_eq!(
            std::fs::read_to_string(max).unwrap().trim(),
            expected,
            "{pids:?}"
        );
    }
}

#[test]
fn the_monitor_is_titled_in_ps_and_outlives_the_process_that_started_it() {
    let state = StateDir::new();
    let name = unique("detached");
    create(
        &state,
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    // A shell runs `berth start`, then lingers; the test kills it.
    let script = format!(
        "{} --state-dir {} --cgroup-parent {} start {name} && exec sleep 60",
        env!("CARGO_BIN_EXE_berth"),
        state.path().display(),
        state.cgroup_parent
    );
    let mut starter = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the start", || {
        (status(&state, &name)["phase"] == "Running").then_some(())
    });
    starter.kill().unwrap();
    starter.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&state, &name)["phase"], "Running");
    let monitor = monitors(&state, &name);
    assert_eq!(monitor.len(), 1);
    let ps = std::process::Command::new("ps")
        .args(["-o", "args=", "-p", &monitor[0].to_string()])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&ps).trim(),
        format!("[berth monitor] {} {name}", state.path().display())
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", monitor[0])).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_ne!(
        fields[1],
        starter.id().to_string(),
        "the monitor is still the starter's child"
    );
    assert_eq!(fields[3], fields[2], "the monitor leads its own session");
    // It holds nothing of its caller's: stdio is /dev/null.
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/fd/1", monitor[0])).unwrap(),
        Path::new("/dev/null")
    );
}

#[test]
fn after_stop_no_process_mount_or_cgroup_of_the_container_remains() {
    let state = StateDir::new();
    let name = unique("stopped");
    let data = tempfile::Builder::new()
        .prefix("berth-data-")
        .tempdir()
        .unwrap();
    std::fs::write(data.path().join("hello"), "from the host").unwrap();
    create(
        &state,
        &name,
        &format!(
            "  command: [/bin/sh, -c, 'cat /data/hello; sleep 1000 & sleep 1000 & exec sleep infinity']\n  \
             mounts: [{{source: {}, target: /data, readOnly: true}}]\n  stopTimeout: 1s\n",
            data.path().display()
        ),
    );
    let init = start(&state, &name);
    wait_for("the output", || {
        console(&state, &name)
            .contains("from the host")
            .then_some(())
    });
    let running = status(&state, &name);
    let dirs = cgroup_dirs(&running);
    let monitor = running["monitorPid"].as_i64().unwrap() as i32;
    let payload: Vec<i32> = std::fs::read_to_string(dirs[0].join("payload/cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(payload.len() >= 3, "{payload:?}");

    let started = Instant::now();
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("stopped {name} (StopRequested, SIGKILL)")
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not wait for the stop timeout"
    );
    for pid in payload.iter().chain([&init, &monitor]) {
        assert!(process_gone(*pid), "process {pid} survived the stop");
    }
    for dir in &dirs {
        assert!(!dir.exists(), "cgroup {} survived the stop", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&state.path().display().to_string()),
        "a mount leaked to the host"
    );
    let stopped = status(&state, &name);
    assert_eq!(stopped["phase"], "Stopped");
    assert_eq!(stopped["lastExit"]["reason"], "StopRequested");
    assert!(stopped.get("monitorPid").is_none());
    // Stopping again is not an error; destroy now goes through.
    let out = state.run(&["stop", &name]);
    assert_eq!(stdout(&out).trim(), format!("{name} is not running"));
    assert!(state.run(&["destroy", &name]).status.success());
    assert_eq!(
        std::fs::read_to_string(data.path().join("hello")).unwrap(),
        "from the host"
    );
}

#[test]
fn a_63_character_name_starts_and_stops_under_a_long_state_dir() {
    // state dir + containers/NAME/monitor.sock is 90 + 12 + 63 + 13 bytes, past
    // the 108 a unix socket address holds.
    let state = StateDir::with_path_length(90);
    let mut name = unique("long");
    name.push_str(&"a".repeat(63 - name.len()));
    assert_eq!(name.len(), 63);
    let manifest = state.dir.path().join("long.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  \
             command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n"
        ),
    )
    .unwrap();
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let pid = start(&state, &name);
    assert_eq!(status(&state, &name)["phase"], "Running");
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert_eq!(status(&state, &name)["phase"], "Stopped");
    assert!(process_gone(pid));
}

#[test]
fn destroy_refuses_a_running_container() {
    let state = StateDir::new();
    let name = unique("busy");
    create(
        &state,
        &name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    );
    start(&state, &name);
    let out = state.run(&["destroy", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("container {name} is running; stop it first")),
        "{}",
        stderr(&out)
    );
    assert!(state.container_dir(&name).join("rootfs/etc").exists());
    let out = state.run(&["start", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("container {name} is running")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stopping_a_container_that_ends_by_itself_meanwhile_is_not_an_error() {
    let state = StateDir::new();
    let name = unique("ends");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/true]\n  restartPolicy: Never\n",
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The stop races the container's own end: whichever wins, it succeeds.
    for round in 0..25 {
        let out = state.run(&["start", &name]);
        assert!(out.status.success(), "start {round}: {}", stderr(&out));
        let out = state.run(&["stop", &name]);
        assert!(
            out.status.success(),
            "stop {round} of a container that ended by itself: {}",
            stderr(&out)
        );
    }
    assert_eq!(status(&state, &name)["phase"], "Stopped");
}

/// `berth start --trace`'s rows: (offset ms, took ms, process, step), and its total.
fn trace_rows(out: &str) -> (Vec<(f64, f64, String, String)>, f64) {
    let mut rows = Vec::new();
    let mut total = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("total ") {
            total = rest.split(" ms").next().and_then(|t| t.parse().ok());
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(Ok(offset)), Some(Ok(took))) = (
            fields.next().map(str::parse::<f64>),
            fields.next().map(str::parse::<f64>),
        ) else {
            continue;
        };
        let rest = fields.collect::<Vec<_>>().join(" ");
        let (process, step) = ["berth start", "monitor", "init"]
            .iter()
            .find_map(|p| Some((*p, rest.strip_prefix(p)?.trim())))
            .unwrap_or_else(|| panic!("a row of no known process: {line}"));
        rows.push((offset, took, process.to_owned(), step.to_owned()));
    }
    (
        rows,
        total.unwrap_or_else(|| panic!("no total line in:\n{out}")),
    )
}

/// The fds a process holds, and where they lead.
fn open_fds(pid: i32) -> Vec<(i32, PathBuf)> {
    let mut fds: Vec<(i32, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_str().unwrap().parse().unwrap();
            (fd, std::fs::read_link(e.path()).unwrap_or_default())
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn start_trace_prints_each_step_of_the_start_and_the_command_sees_only_stdio() {
    let state = StateDir::new();
    let name = unique("traced");
    create(
        &state,
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
    );
    let began = Instant::now();
    let out = state.run(&["start", "--trace", &name]);
    let wall = began.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    let (rows, total) = trace_rows(&printed);
    let has = |process: &str, step: &str| {
        rows.iter()
            .any(|(_, _, p, s)| p == process && s.starts_with(step))
    };
    for (process, step) in [
        (
            "berth start",
            "seal berth's binary (read-only overlay, else memfd copy)",
        ),
        ("monitor", "re-exec the monitor"),
        ("monitor", "daemonize"),
        ("monitor", "compile the seccomp filter"),
        ("monitor", "cgroups: mkdir in /sys/fs/cgroup"),
        ("monitor", "cgroups: monitor into /sys/fs/cgroup"),
        ("monitor", "clone3 of init"),
        ("init", "cgroups: init into /sys/fs/cgroup"),
        ("init", "mount: /proc and /sys"),
        ("init", "pivot_root"),
        ("init", "drop capabilities"),
        ("init", "load the seccomp filter"),
        ("init", "exec"),
        ("berth start", "reap the first monitor process"),
    ] {
        assert!(
            has(process, step),
            "no {process:?} step {step:?} in:\n{printed}"
        );
    }
    // One timeline: in order, and the steps never overlap, so they add up to at
    // most the time it all took (rows are rounded to 1 µs).
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "not in order:\n{printed}"
    );
    let sum: f64 = rows.iter().map(|r| r.1).sum();
    let rounding = 0.001 * rows.len() as f64;
    assert!(
        sum <= total + rounding,
        "the steps ({sum} ms) overlap: more than their total {total} ms:\n{printed}"
    );
    assert!(
        total <= wall,
        "a total of {total} ms, more than the {wall} ms berth start ran:\n{printed}"
    );
    // init's execve is its last step.
    let last_init = rows.iter().rposition(|r| r.2 == "init").unwrap();
    assert_eq!(rows[last_init].3, "exec", "{printed}");
    assert!(
        !state.container_dir(&name).join("trace").exists(),
        "the trace file was left in the container's directory"
    );
    // The command holds stdin, stdout and stderr, and nothing of the host's.
    let pid = status(&state, &name)["initPid"].as_i64().unwrap() as i32;
    let fds = open_fds(pid);
    assert_eq!(
        fds.iter().map(|f| f.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "the traced container's command holds {fds:?}"
    );
}

#[test]
fn a_traced_start_with_spec_init_leaves_pid_1_and_the_command_only_stdio() {
    let state = StateDir::new();
    let name = unique("traced-init");
    create(
        &state,
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  init: true\n  stopTimeout: 0s\n",
    );
    let out = state.run(&["start", "--trace", &name]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let (rows, _) = trace_rows(&stdout(&out));
    assert!(
        rows.iter()
            .any(|r| r.2 == "init" && r.3 == "fork the command from PID 1"),
        "{}",
        stdout(&out)
    );
    let pid1 = status(&state, &name)["initPid"].as_i64().unwrap() as i32;
    let command = wait_for("the command forked by PID 1", || {
        std::fs::read_to_string(format!("/proc/{pid1}/task/{pid1}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<i32>()
            .ok()
    });
    // PID 1 closes what it inherited once the command is forked.
    let fds = wait_for("PID 1 to close its inherited fds", || {
        let fds = open_fds(pid1);
        (fds.len() == 3).then_some(fds)
    });
    assert_eq!(fds.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2]);
    let fds = open_fds(command);
    assert_eq!(
        fds.iter().map(|f| f.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "the command holds {fds:?}"
    );
}

#[test]
fn an_empty_status_file_left_by_a_power_cut_reads_as_no_status_and_the_container_starts() {
    let state = StateDir::new();
    let name = unique("torn");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/true]\n  restartPolicy: Never\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    // Status is written without fsync: a power cut may leave it empty.
    std::fs::write(state.container_dir(&name).join("status.json"), "").unwrap();
    let out = state.run(&["status", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["get", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the job to complete", || {
        (status(&state, &name)["phase"] == "Stopped").then_some(())
    });
}
