//! `berth exec` gives the container no handle on the host: not on berth's binary
//! (runc's CVE-2019-5736), not on the caller's file descriptors (as root).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{StateDir, console_until, stderr, stdout, unique};

/// A host-template container (python3 inside, for the probes) running `command`.
fn running(state: &StateDir, name: &str, command: &str) {
    let manifest = state.manifest(name, &format!("  command: {command}\n  stopTimeout: 0s\n"));
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
}

fn needs_python() {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "this test probes with python3: apt-get install python3"
    );
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// A copy of the berth binary that the attack may destroy instead of the real one.
fn copy_of_berth(state: &StateDir) -> PathBuf {
    let copy = state.path().join("berth-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), &copy).unwrap();
    copy
}

/// `COPY --state-dir ... exec NAME -- ARGS`
fn exec_through(copy: &Path, state: &StateDir, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(copy);
    cmd.arg("--state-dir")
        .arg(state.path())
        .arg("--cgroup-parent")
        .arg(&state.cgroup_parent)
        .args(["exec", name, "--"])
        .args(args);
    cmd
}

/// The attacker, as the container's init: every process it sees whose binary is
/// not the container's own, it opens through /proc/PID/exe and keeps; once that
/// binary is no longer running, it reopens the handle for writing and writes.
/// /tmp/evil (`#!/proc/self/exe`) makes an exec'd command run berth's own binary
/// inside the container, as in runc's CVE.
const ATTACKER: &str = r##"
import os, time
with open("/tmp/evil", "w") as f:
    f.write("#!/proc/self/exe\n")
os.chmod("/tmp/evil", 0o755)
me = os.getpid()
held = {}
seen = set()
print("ready", flush=True)
deadline = time.time() + 90
while time.time() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            fd = os.open("/proc/%s/exe" % name, os.O_RDONLY)
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            continue
        st = os.fstat(fd)
        if target.startswith(("/usr/", "/bin/", "/sbin/", "/lib")) or (st.st_dev, st.st_ino) in seen or len(held) > 100:
            os.close(fd)
            continue
        seen.add((st.st_dev, st.st_ino))
        held[fd] = target
        print("opened", name, target, flush=True)
    for fd in list(held):
        try:
            w = os.open("/proc/self/fd/%d" % fd, os.O_WRONLY)
        except OSError:
            continue
        try:
            os.write(w, b"X")
            print("WROTE-INTO", held[fd], flush=True)
        except OSError as e:
            print("write refused", held[fd], e.errno, flush=True)
        os.close(w)
        os.close(fd)
        del held[fd]
"##;

#[test]
fn a_container_cannot_write_the_berth_binary_that_execs_into_it() {
    needs_python();
    let state = StateDir::new();
    let name = unique("exec-cve");
    // A JSON string is a YAML double-quoted string with its newlines kept.
    let script = serde_json::to_string(ATTACKER).unwrap();
    running(&state, &name, &format!("[/usr/bin/python3, -c, {script}]"));
    console_until(&state, &name, "ready");
    let copy = copy_of_berth(&state);
    let before = sha256(&copy);

    // The exec'd command is berth's own binary (through /tmp/evil) or an ordinary
    // one; the copy of berth runs every exec, so only it can be hit.
    for round in 0..20 {
        let command = if round % 2 == 0 { "/tmp/evil" } else { "true" };
        match exec_through(&copy, &state, &name, &[command]).output() {
            Ok(_) => {}
            // The attack destroyed the copy: no need to go on.
            Err(e) => {
                println!("round {round}: the copy of berth no longer runs: {e}");
                break;
            }
        }
    }
    // Time for the attacker to try its handles once no exec runs any more.
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(state.container_dir(&name).join("console.log")).unwrap();
    println!("{log}");
    assert!(
        !log.contains("WROTE-INTO"),
        "the container wrote into berth's binary:\n{log}"
    );
    assert_eq!(sha256(&copy), before, "the copy of berth changed:\n{log}");
}

#[test]
fn exec_passes_only_stdin_stdout_and_stderr_to_the_command() {
    let state = StateDir::new();
    let name = unique("exec-fds");
    running(&state, &name, "[/bin/sleep, infinity]");
    let inherited = std::fs::File::open("/etc/hostname").unwrap();
    let raw = inherited.as_raw_fd();
    let mut cmd = state.berth(&["exec", &name, "--", "sh", "-c", "ls /proc/$$/fd"]);
    // SAFETY: dup2 is async-signal-safe; the copy at fd 5 is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(raw, 5) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&out);
    let fds: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "the command got more than its stdio");
}

/// A pipe whose buffer is full: whoever writes to it blocks until it is read.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL).unwrap(),
    );
    let set = |flags| nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    set(flags | nix::fcntl::OFlag::O_NONBLOCK);
    while nix::unistd::write(&write, &[0u8; 4096]).is_ok() {}
    set(flags);
    (read, write)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The berth process that joined the container (exec's grandchild), once it is
/// blocked writing to stderr.
fn blocked_joiner(exec: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joiner = children(exec).into_iter().flat_map(children).find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.split(' ').next() == Some(&nix::libc::SYS_write.to_string()))
        });
        if let Some(pid) = joiner {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "berth exec's joining process never blocked on stderr"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_berth_process_joining_a_container_is_not_open_to_it() {
    needs_python();
    let state = StateDir::new();
    let name = unique("exec-dump");
    running(&state, &name, "[/bin/sleep, infinity]");
    // The joining process fails to exec (no such program) after taking the
    // container's capabilities and seccomp, and blocks telling so on a full stderr:
    // it stays inside the container as berth for as long as the test wants.
    let (drain, full) = full_pipe();
    let exec = state
        .berth(&["exec", &name, "--", "/no/such/program"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .spawn()
        .unwrap();
    let joiner = blocked_joiner(exec.id());

    // Not backed by the host's binary: a sealed copy.
    let host_binary = std::fs::metadata(env!("CARGO_BIN_EXE_berth")).unwrap();
    let joiner_binary = std::fs::metadata(format!("/proc/{joiner}/exe")).unwrap();
    let backed_by_host =
        (joiner_binary.dev(), joiner_binary.ino()) == (host_binary.dev(), host_binary.ino());

    // Inside, every process but the probe and init: are its exe, environ, memory
    // and fds open to the container?
    let probe = state.run(&[
        "exec",
        &name,
        "--",
        "python3",
        "-c",
        r#"
import os
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) in (1, os.getpid()):
        continue
    for what in ("exe", "environ", "mem", "fd/2"):
        try:
            os.close(os.open("/proc/%s/%s" % (pid, what), os.O_RDONLY))
            print(pid, what, "open")
        except OSError as e:
            print(pid, what, "refused", e.errno)
"#,
    ]);
    // Unblock the joiner and let it finish.
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while nix::unistd::read(&drain, &mut buf).is_ok_and(|n| n > 0) {}
    });
    let out = exec.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(127));

    let text = stdout(&probe);
    assert!(probe.status.success(), "{}", stderr(&probe));
    assert!(
        !backed_by_host,
        "the joining process runs the host's berth binary"
    );
    assert!(
        !text.contains(" open"),
        "the container can open the joining process's files:\n{text}"
    );
    assert!(
        text.contains("exe refused"),
        "the probe saw no joining process:\n{text}"
    );
}

#[test]
fn a_containers_init_is_cloned_from_a_sealed_copy_of_berth() {
    // The init is cloned from the monitor and runs its binary until it execs the
    // command, or after: a command that is `#!/proc/self/exe` runs it as PID 1.
    let state = StateDir::new();
    let name = unique("init-sealed");
    running(&state, &name, "[/bin/sleep, infinity]");
    let out = state.run(&["status", &name]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let monitor = status["monitorPid"].as_i64().expect("a monitor pid");

    let host_binary = std::fs::metadata(env!("CARGO_BIN_EXE_berth")).unwrap();
    let monitor_binary = std::fs::File::open(format!("/proc/{monitor}/exe")).unwrap();
    let meta = monitor_binary.metadata().unwrap();
    assert_ne!(
        (meta.dev(), meta.ino()),
        (host_binary.dev(), host_binary.ino()),
        "the monitor runs the host's berth binary"
    );
    drop(monitor_binary);
    crate::pid1::assert_unwritable(&format!("/proc/{monitor}/exe"));
}
