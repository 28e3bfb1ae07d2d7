//! `spec.init` (berth's minimal PID 1) and `spec.user`, against real containers (as root).

use crate::start::{console, create, start, status, wait_for};
use crate::{StateDir, stderr, stdout, unique};

/// Children of the container's PID 1 that are zombies (a zombie has left its
/// cgroup, but not its parent's list of children).
fn zombie_children(state: &StateDir, name: &str) -> Vec<i32> {
    let init = status(state, name)["initPid"].as_i64().unwrap();
    std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
        .unwrap()
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

#[test]
fn with_init_orphans_are_reaped_and_sigterm_reaches_a_command_that_is_not_pid_1() {
    for init in [false, true] {
        let state = StateDir::new();
        let name = unique(if init { "init-on" } else { "init-off" });
        // The subshell leaves a sleep behind that is reparented to PID 1; `sleep`
        // as PID 1 never reaps it, and ignores SIGTERM (PID 1 has no default action).
        create(
            &state,
            &name,
            &format!(
                "  rootfs: {{template: busybox}}\n  init: {init}\n  stopTimeout: 2s\n  \
                 command: [/bin/sh, -c, '(sleep 0.2 &); echo forked; exec sleep 1000']\n"
            ),
        );
        start(&state, &name);
        wait_for("the output", || {
            console(&state, &name).contains("forked").then_some(())
        });
        std::thread::sleep(std::time::Duration::from_millis(600));
        let zombies = zombie_children(&state, &name);
        let out = state.run(&["stop", &name]);
        assert!(out.status.success(), "{}", stderr(&out));
        let stopped = status(&state, &name);
        if init {
            assert!(zombies.is_empty(), "init left zombies: {zombies:?}");
            assert_eq!(
                stdout(&out).trim(),
                format!("stopped {name} (StopRequested, exit code 143)"),
                "SIGTERM was not forwarded to the command"
            );
            assert_eq!(stopped["lastExit"]["code"], 143);
        } else {
            // What init is for: without it the same command shows both problems.
            assert_eq!(zombies.len(), 1, "{zombies:?}");
            assert_eq!(stopped["lastExit"]["signal"], "SIGKILL");
        }
    }
}

#[test]
fn init_exits_with_the_commands_status() {
    let state = StateDir::new();
    for (suffix, command, code) in [("7", "exit 7", 7), ("kill", "kill -USR1 $$", 138)] {
        let name = unique(&format!("init-exit-{suffix}"));
        create(
            &state,
            &name,
            &format!(
                "  rootfs: {{template: busybox}}\n  init: true\n  restartPolicy: Never\n  \
                 command: [/bin/sh, -c, '{command}']\n"
            ),
        );
        let out = state.run(&["start", &name]);
        assert!(out.status.success(), "{}", stderr(&out));
        let last = wait_for("the exit", || {
            let s = status(&state, &name);
            (s["phase"] != "Running").then(|| s["lastExit"].clone())
        });
        assert_eq!(last["reason"], "Exited", "{last}");
        assert_eq!(last["code"], code, "{last}");
    }
}

#[test]
fn pid_1_is_a_sealed_copy_of_berth_that_the_container_can_neither_write_nor_read() {
    let state = StateDir::new();
    let name = unique("init-sealed");
    create(
        &state,
        &name,
        "  rootfs: {template: busybox}\n  init: true\n  command: [/bin/sleep, '1000']\n",
    );
    let init = start(&state, &name);
    // From the host: init's binary cannot be written, even by root (CVE-2019-5736).
    assert_unwritable(&format!("/proc/{init}/exe"));
    // From inside: its title and arguments name nothing of the host, and its
    // binary and memory are out of reach.
    let out = state.run(&[
        "exec",
        &name,
        "sh",
        "-c",
        "ps -o pid,args | grep -v ps; echo x > /proc/1/exe && echo WROTE-EXE; \
         cat /proc/1/environ && echo READ-ENVIRON; cat /proc/1/maps >/dev/null && echo READ-MAPS; true",
    ]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("    1 init"), "{text}");
    assert!(text.contains("    2 /bin/sleep 1000"), "{text}");
    assert!(
        !text.contains(&state.path().display().to_string()),
        "{text}"
    );
    for marker in ["WROTE-EXE", "READ-ENVIRON", "READ-MAPS"] {
        assert!(!text.contains(marker), "{marker}: {text}");
    }
    assert!(state.run(&["stop", &name]).status.success());
}

#[test]
fn the_command_runs_as_spec_user_with_its_groups_and_no_capabilities_and_so_does_exec() {
    let state = StateDir::new();
    let report = "id; echo HOME=$HOME; grep CapEff /proc/self/status; touch /etc/x 2>&1; true";
    for (user, expect_id, home) in [
        // The kernel keeps the groups sorted.
        ("1000:1000", "uid=1000 gid=1000 groups=5,7,1000", "HOME=/"),
        (
            "nobody",
            "uid=65534(nobody) gid=65534(nogroup) groups=5,7,65534(nogroup)",
            "HOME=/nonexistent",
        ),
    ] {
        let name = unique(&format!("user-{}", user.replace(':', "-")));
        create(
            &state,
            &name,
            &format!(
                "  rootfs: {{template: busybox}}\n  user: '{user}'\n  supplementalGroups: [5, 7]\n  \
                 command: [/bin/sh, -c, '{report}; echo DONE; exec sleep 1000']\n"
            ),
        );
        start(&state, &name);
        let log = wait_for("the output", || {
            let log = console(&state, &name);
            log.contains("DONE").then_some(log)
        });
        assert!(log.contains(expect_id), "{user}: {log}");
        assert!(log.contains(home), "{user}: {log}");
        assert!(log.contains("CapEff:\t0000000000000000"), "{user}: {log}");
        assert!(log.contains("Permission denied"), "{user}: {log}");
        // `berth exec` joins as the same user, as podman exec does.
        let out = state.run(&["exec", &name, "id"]);
        assert!(stdout(&out).contains(expect_id), "{user}: {}", stdout(&out));
        assert!(state.run(&["stop", &name]).status.success());
    }
}

#[test]
fn a_user_missing_from_the_containers_passwd_fails_the_start_naming_it() {
    let state = StateDir::new();
    let name = unique("user-ghost");
    create(
        &state,
        &name,
        "  rootfs: {template: busybox}\n  user: ghost\n  command: [/bin/true]\n",
    );
    let out = state.run(&["start", &name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("user \"ghost\" (spec.user) is not in the container's /etc/passwd"),
        "{}",
        stderr(&out)
    );
}

/// `exe` (a /proc/PID/exe) is not the host's berth, and even root cannot write
/// it: a memfd sealed against writes, or a file on a read-only overlay that is
/// mounted nowhere. The host's binary is unchanged.
pub(crate) fn assert_unwritable(exe: &str) {
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata(env!("CARGO_BIN_EXE_berth")).unwrap();
    let meta = std::fs::metadata(exe).unwrap();
    assert_ne!(
        (meta.dev(), meta.ino()),
        (host.dev(), host.ino()),
        "{exe} is the host's berth binary"
    );
    let before = std::fs::read(env!("CARGO_BIN_EXE_berth")).unwrap();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(exe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\x7fELF-overwritten"));
    assert!(written.is_err(), "{exe} could be written");
    assert!(
        std::fs::read(env!("CARGO_BIN_EXE_berth")).unwrap() == before,
        "the host's binary changed"
    );
}
