//! `berth exec` into running containers (as root).

use crate::{StateDir, stderr, stdout, unique};

fn running(state: &StateDir, name: &str) {
    let manifest = state.manifest(
        name,
        "  command: [/bin/sleep, infinity]\n  env: {GREETING: hello}\n  hostname: inside\n  stopTimeout: 0s\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn exec_runs_in_the_container_and_returns_the_exit_code() {
    let state = StateDir::new();
    let name = unique("exec");
    running(&state, &name);
    let out = state.run(&["exec", &name, "--", "cat", "/proc/1/comm"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "sleep\n");

    let out = state
        .berth(&["exec", &name, "-e", "EXTRA=1", "-w", "/tmp", "--", "sh", "-c"])
        .arg("echo $$ $GREETING $EXTRA $container $(pwd) $(hostname); grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; exit 3")
        .env("LEAKED_SECRET", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let pid: u32 = first[0].parse().unwrap();
    assert!(pid < 10, "pid {pid}: not in the container's PID namespace");
    assert_eq!(&first[1..], ["hello", "1", "berth", "/tmp", "inside"]);
    // The same confinement as the container's own processes.
    assert_eq!(lines.next(), Some("CapEff:\t00000000a04425fb"));
    assert_eq!(lines.next(), Some("NoNewPrivs:\t1"));
    assert_eq!(lines.next(), Some("Seccomp:\t2"));

    let out = state.run(&["exec", &name, "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("/no/such/program: No such file or directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_into_a_stopped_container_is_a_clear_error() {
    let state = StateDir::new();
    let name = unique("exec-stopped");
    let manifest = state.manifest(&name, "  command: [/bin/sleep, infinity]\n");
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["exec", &name, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("berth: container {name} is not running")
    );
    let out = state.run(&["exec", "no-such-container", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("container no-such-container does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_with_a_terminal_gets_a_pty_inside_with_the_window_size() {
    let state = StateDir::new();
    let name = unique("exec-tty");
    running(&state, &name);
    // `script` (util-linux) gives berth a terminal of 45 rows and 123 columns.
    let berth = format!(
        "{} --state-dir {} --cgroup-parent {} exec -it {name} -- sh -c 'tty; stty size; exit 7'",
        env!("CARGO_BIN_EXE_berth"),
        state.path().display(),
        state.cgroup_parent
    );
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 45 cols 123; {berth}"),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) is needed for this test: apt-get install bsdutils");
    let text = stdout(&out).replace('\r', "");
    assert!(
        text.contains("/dev/pts/0\n"),
        "not a terminal inside: {text:?}"
    );
    assert!(
        text.contains("45 123\n"),
        "window size not passed on: {text:?}"
    );
    assert_eq!(out.status.code(), Some(7), "{text:?}");

    // Without -i the command's stdin is empty; with it, berth's.
    let mut child = state
        .berth(&["exec", "-i", &name, "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"through stdin\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "through stdin\n");
}

#[test]
fn exec_takes_the_command_without_a_double_dash_options_and_all() {
    let state = StateDir::new();
    let name = unique("exec-nodash");
    running(&state, &name);
    // Everything after NAME is the command's, also what looks like berth's options.
    let out = state.run(&[
        "exec", &name, "printf", "%s,", "-e", "-t", "-w", "-i", "--help",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "-e,-t,-w,-i,--help,");
    let out = state.run(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        &name,
        "sh",
        "-c",
        "echo $X $(pwd); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 /tmp\n");
    // `--` still works.
    let out = state.run(&["exec", &name, "--", "cat", "/proc/1/comm"]);
    assert_eq!(stdout(&out), "sleep\n", "{}", stderr(&out));
}
