//! The safe defaults, probed from inside real containers (as root).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::libc;

use crate::{StateDir, console_until, stderr, stdout, unique};

fn create_and_start(state: &StateDir, name: &str, spec: &str) {
    let manifest = state.manifest(name, spec);
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
}

fn line<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{log}"))
        .trim()
}

/// A probe script: each line prints `KEY value`.
fn probe_script() -> String {
    let errno_of = |call: String| {
        format!(
            "python3 -c \"import ctypes; c = ctypes.CDLL(None, use_errno=True); r = {call}; print(ctypes.get_errno() if r < 0 else 0)\""
        )
    };
    [
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status".to_owned(),
        format!("echo init_module $({})", errno_of(format!("c.syscall({}, 0, 0, 0)", libc::SYS_init_module))),
        format!("echo keyctl $({})", errno_of(format!("c.syscall({}, 0, 0, 0, 0, 0)", libc::SYS_keyctl))),
        format!("echo mount $({})", errno_of("c.mount(b'none', b'/mnt', b'tmpfs', 0, None)".to_owned())),
        // Outside Docker's allow list: io_uring (a run of kernel escapes), userfaultfd
        // (even in its unprivileged user-mode-only form), set_mempolicy (needs SYS_NICE).
        format!("echo io_uring_setup $({})", errno_of(format!("c.syscall({}, 1, ctypes.create_string_buffer(120))", libc::SYS_io_uring_setup))),
        format!("echo userfaultfd $({})", errno_of(format!("c.syscall({}, 1)", libc::SYS_userfaultfd))),
        format!("echo set_mempolicy $({})", errno_of(format!("c.syscall({}, 0, None, 0)", libc::SYS_set_mempolicy))),
        format!("echo unshare_user $({})", errno_of(format!("c.unshare({})", libc::CLONE_NEWUSER))),
        format!("echo socket_vsock $({})", errno_of(format!("c.socket({}, 1, 0)", libc::AF_VSOCK))),
        // personality: the query and PER_LINUX pass, ADDR_NO_RANDOMIZE does not.
        format!("echo personality_query $({})", errno_of("c.personality(ctypes.c_ulong(0xffffffff))".to_owned())),
        format!("echo personality_norandom $({})", errno_of(format!("c.personality({})", libc::ADDR_NO_RANDOMIZE))),
        "echo keys $(wc -c < /proc/keys)".to_owned(),
        "[ -e /proc/kcore ] && echo kcore $(wc -c < /proc/kcore)".to_owned(),
        "[ -e /proc/sysrq-trigger ] && { echo h > /proc/sysrq-trigger && echo sysrq written || echo sysrq refused; }".to_owned(),
        "echo firmware $(ls /sys/firmware | wc -l)".to_owned(),
        "echo pids $(ls /proc | grep -c '^[0-9]')".to_owned(),
        "echo links $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)".to_owned(),
        "echo mounts $(cut -d' ' -f5 /proc/self/mountinfo | tr '\\n' ,)".to_owned(),
        "echo done".to_owned(),
    ]
    .join("; ")
}

#[test]
fn a_container_gets_the_default_capabilities_no_new_privs_and_seccomp() {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "this test probes with python3: apt-get install python3"
    );
    let state = StateDir::new();
    let name = unique("probed");
    let script = probe_script().replace('\'', "''");
    create_and_start(
        &state,
        &name,
        &format!("  command: [/bin/sh, -c, '{script}; exec sleep infinity']\n  stopTimeout: 0s\n"),
    );
    let log = console_until(&state, &name, "done");

    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    // NET_RAW SYS_CHROOT SYS_BOOT AUDIT_WRITE SETFCAP
    let expected: u64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 22, 29, 31]
        .iter()
        .map(|bit| 1u64 << bit)
        .sum();
    assert_eq!(line(&log, "CapEff:"), format!("{expected:016x}"), "{log}");
    assert_eq!(line(&log, "NoNewPrivs:"), "1");
    assert_eq!(line(&log, "Seccomp:"), "2");
    let eperm = libc::EPERM.to_string();
    assert_eq!(line(&log, "init_module "), eperm, "loading a module");
    assert_eq!(line(&log, "keyctl "), eperm, "keyctl");
    assert_eq!(line(&log, "mount "), eperm, "mounting a tmpfs");
    for call in [
        "io_uring_setup",
        "userfaultfd",
        "set_mempolicy",
        "unshare_user",
        "socket_vsock",
        "personality_norandom",
    ] {
        assert_eq!(line(&log, &format!("{call} ")), eperm, "{call}: {log}");
    }
    assert_eq!(line(&log, "personality_query "), "0", "{log}");
    assert_eq!(line(&log, "keys "), "0", "/proc/keys is masked");
    if Path::new("/proc/kcore").exists() {
        assert_eq!(line(&log, "kcore "), "0", "/proc/kcore is masked");
    } else {
        println!("skipped: this kernel has no /proc/kcore");
    }
    if Path::new("/proc/sysrq-trigger").exists() {
        assert_eq!(line(&log, "sysrq "), "refused");
    } else {
        println!("skipped: this kernel has no /proc/sysrq-trigger");
    }
    assert_eq!(line(&log, "firmware "), "0", "/sys/firmware is masked");
    let pids: usize = line(&log, "pids ").parse().unwrap();
    assert!(pids <= 6, "{pids} processes visible: the host's leak in");
    assert_eq!(line(&log, "links "), "lo,");
    let mounts = line(&log, "mounts ");
    assert!(
        !mounts.contains(&state.path().display().to_string()),
        "host paths visible: {mounts}"
    );
    assert!(mounts.starts_with("/,"), "{mounts}");
}

#[test]
fn a_seccomp_profile_that_kills_leaves_the_container_failed_with_seccomp_violation() {
    // With spec.init the command is PID 1's child; the kill must read the same.
    for init in [false, true] {
        let state = StateDir::new();
        let name = unique(if init { "seccomp-init" } else { "seccomp" });
        let profile = state.path().join("profile.json");
        std::fs::write(
            &profile,
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
        )
        .unwrap();
        create_and_start(
            &state,
            &name,
            &format!(
                "  command: [/bin/mkdir, /tmp/forbidden]\n  restartPolicy: Never\n  init: {init}\n  \
                 security: {{seccomp: {{profile: {}}}}}\n",
                profile.display()
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let out = state.run(&["status", &name]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if status["phase"] == "Failed" {
                break status;
            }
            assert!(Instant::now() < deadline, "{status}");
            std::thread::sleep(Duration::from_millis(25));
        };
        assert_eq!(
            status["lastExit"]["reason"], "SeccompViolation",
            "init {init}"
        );
        assert_eq!(status["lastExit"]["signal"], "SIGSYS", "init {init}");
        assert!(
            !state
                .container_dir(&name)
                .join("rootfs/tmp/forbidden")
                .exists()
        );
    }
}

#[test]
fn a_read_only_root_leaves_tmp_writable() {
    let state = StateDir::new();
    let name = unique("readonly");
    create_and_start(
        &state,
        &name,
        "  command: [/bin/sh, -c, 'touch /etc/x 2>/dev/null && echo etc written || echo etc refused; touch /tmp/x && echo tmp written; exec sleep infinity']\n  \
         security: {readOnlyRootfs: true}\n  stopTimeout: 0s\n",
    );
    let log = console_until(&state, &name, "tmp written");
    assert!(log.contains("etc refused"), "{log}");
    assert!(!state.container_dir(&name).join("rootfs/etc/x").exists());
}

#[test]
fn a_mount_target_that_is_a_symlink_out_of_the_rootfs_lands_inside_it() {
    let state = StateDir::new();
    let name = unique("symlinked");
    let source = tempfile::Builder::new()
        .prefix("berth-src-")
        .tempdir()
        .unwrap();
    std::fs::write(source.path().join("marker"), "from the mount source").unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  command: [/bin/sh, -c, 'cat /etc/marker; echo; ls /etc/hostname >/dev/null 2>&1 || echo masked; echo end; exec sleep infinity']\n  \
             mounts: [{{source: {}, target: /data}}]\n  stopTimeout: 0s\n",
            source.path().display()
        ),
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    // An image could ship this: /data -> /../../etc, meant to reach the host's /etc.
    std::os::unix::fs::symlink("/../../etc", state.container_dir(&name).join("rootfs/data"))
        .unwrap();
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = console_until(&state, &name, "end\n");
    assert!(log.contains("from the mount source"), "{log}");
    // It covered the container's own /etc, not the host's.
    assert!(log.contains("masked"), "{log}");
    assert!(!Path::new("/etc/marker").exists());
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&source.path().display().to_string()),
        "{host_mounts}"
    );
}

#[test]
fn a_mount_target_that_a_symlink_leads_onto_proc_is_refused() {
    let state = StateDir::new();
    let name = unique("ontoproc");
    let source = tempfile::Builder::new()
        .prefix("berth-src-")
        .tempdir()
        .unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  command: [/bin/sleep, infinity]\n  mounts: [{{source: {}, target: /data}}]\n  stopTimeout: 0s\n",
            source.path().display()
        ),
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    // Inside the container, /proc/sys is the kernel's: a mount there would hide
    // its read-only protection.
    std::os::unix::fs::symlink("/proc/sys", state.container_dir(&name).join("rootfs/data"))
        .unwrap();
    let out = state.run(&["start", &name]);
    assert_eq!(out.status.code(), Some(1), "mounted onto /proc/sys");
    assert!(
        stderr(&out).contains("mount over /proc or /sys"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mount_sources_must_exist_and_not_be_berths_own_files() {
    let state = StateDir::new();
    for (name, source) in [
        (unique("nosource"), "/nonexistent/berth-source".to_owned()),
        (unique("ownfiles"), state.path().display().to_string()),
    ] {
        let manifest = state.manifest(
            &name,
            &format!("  command: [/bin/true]\n  mounts: [{{source: {source}, target: /data}}]\n"),
        );
        assert!(
            state
                .run(&["create", "-f", manifest.to_str().unwrap()])
                .status
                .success()
        );
        let out = state.run(&["start", &name]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(&format!("mount source {source}")), "{err}");
    }
}

/// `berth start NAME`, expecting it to fail because of `source`.
fn start_refused(state: &StateDir, name: &str, source: &str, extra: &str, why: &str) {
    let manifest = state.manifest(
        name,
        &format!(
            "  command: [/bin/true]\n  mounts: [{{source: {source}, target: /data}}]\n{extra}"
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", name]);
    assert_eq!(out.status.code(), Some(1), "{source} was mounted");
    let err = stderr(&out);
    assert!(err.contains(&format!("mount source {source}")), "{err}");
    assert!(err.contains(why), "{err}");
    assert!(state.run(&["destroy", name]).status.success());
}

#[test]
fn every_alias_of_the_state_dir_is_refused_as_a_mount_source() {
    let state = StateDir::new();
    let aliases = tempfile::Builder::new()
        .prefix("berth-alias-")
        .tempdir()
        .unwrap();
    let link = aliases.path().join("link");
    std::os::unix::fs::symlink(state.path(), &link).unwrap();
    let parent = state.path().parent().unwrap().display().to_string();
    let base = state.path().file_name().unwrap().to_str().unwrap();
    let name = unique("alias");
    for source in [
        link.display().to_string(),
        format!("{}/containers/{name}/config.json", link.display()),
        format!("/proc/self/root{}", state.path().display()),
        format!("{parent}/./{base}/."),
        parent,
    ] {
        start_refused(
            &state,
            &name,
            &source,
            "",
            "overlaps berth's state directory",
        );
    }
    // One by `..` is refused before any start, by validation.
    let source = format!("{}/containers/../containers", state.path().display());
    let manifest = state.manifest(
        &name,
        &format!("  command: [/bin/true]\n  mounts: [{{source: {source}, target: /data}}]\n"),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(!out.status.success(), "{source} was accepted");
    assert!(stderr(&out).contains("contains '..'"), "{}", stderr(&out));
}

#[test]
fn a_bind_mount_of_the_state_dir_is_refused_as_a_mount_source() {
    let state = StateDir::new();
    let alias = tempfile::Builder::new()
        .prefix("berth-alias-")
        .tempdir()
        .unwrap();
    let name = unique("bindalias");
    let manifest = state.manifest(
        &name,
        &format!(
            "  command: [/bin/true]\n  mounts: [{{source: {}, target: /data}}]\n",
            alias.path().display()
        ),
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    // The alias exists only in a mount namespace of this test's own (private
    // propagation), in which `berth start` and its monitor run. Of the state dir,
    // or of a directory inside it: either way berth's own files are below.
    let berth = state.berth(&["start", &name]);
    for aliased in [state.path().to_owned(), state.path().join("containers")] {
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" \"$1\" && shift && exec \"$@\"")
            .arg(&aliased)
            .arg(alias.path())
            .arg(berth.get_program())
            .args(berth.get_args())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "a bind-mount alias of {} was mounted",
            aliased.display()
        );
        assert!(
            stderr(&out).contains("overlaps berth's state directory"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn the_hosts_proc_sys_and_dev_are_refused_as_mount_sources_unless_allowed() {
    let state = StateDir::new();
    let aliases = tempfile::Builder::new()
        .prefix("berth-alias-")
        .tempdir()
        .unwrap();
    let link = aliases.path().join("kernel");
    std::os::unix::fs::symlink("/proc/sys/kernel", &link).unwrap();
    let name = unique("kernelpaths");
    for (source, why) in [
        ("/proc", "is or contains the host's /proc"),
        ("/sys", "is or contains the host's /sys"),
        ("/dev", "is or contains the host's /dev"),
        ("/proc/sys", "is inside the host's /proc"),
        (link.to_str().unwrap(), "is inside the host's /proc"),
        ("/sys/fs/cgroup", "is inside the host's /sys"),
    ] {
        start_refused(&state, &name, source, "", why);
    }
    // `/` holds the state dir as well; that is said first.
    start_refused(&state, &name, "/", "", "overlaps berth's state directory");
    // Named in allowHostPaths, a kernel path is the operator's choice.
    let manifest = state.manifest(
        &name,
        "  command: [/bin/sh, -c, 'cat /data/ostype; exec sleep infinity']\n  \
         mounts: [{source: /proc/sys/kernel, target: /data, readOnly: true}]\n  \
         security: {allowHostPaths: [/proc/sys/kernel]}\n  stopTimeout: 0s\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = console_until(&state, &name, "Linux");
    assert!(log.contains("Linux"), "{log}");
}

#[test]
fn a_rootfs_path_that_is_the_hosts_root_by_another_name_does_not_start() {
    let state = StateDir::new();
    let aliases = tempfile::Builder::new()
        .prefix("berth-alias-")
        .tempdir()
        .unwrap();
    let link = aliases.path().join("host");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let name = unique("hostroot");
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{path: {}}}\n  command: [/bin/sh, -c, 'touch /berth-escaped; sleep 60']\n  stopTimeout: 0s\n",
            link.display()
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", &name]);
    assert_eq!(out.status.code(), Some(1), "the host's root was used");
    assert!(
        stderr(&out).contains("is the host's root"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_userns_container_is_root_inside_and_an_ordinary_user_outside() {
    use std::os::unix::fs::PermissionsExt;
    let state = StateDir::new();
    // The container's root is an ordinary host user: it must be able to reach its rootfs.
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let secrets = tempfile::Builder::new()
        .prefix("berth-secret-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let name = unique("userns");
    create_and_start(
        &state,
        &name,
        &format!(
            "  command: [/bin/sh, -c, 'echo uid=$(id -u); cat /data/secret || echo unreadable; \
             while [ ! -e /tmp/go ]; do sleep 0.05; done; rm /tmp/go; [ $$ -eq 1 ] && reboot -f; exec sleep 60']\n  \
             mounts: [{{source: {}, target: /data/secret, readOnly: true}}]\n  security: {{userns: auto}}\n  stopTimeout: 0s\n",
            secret.display()
        ),
    );
    let log = console_until(&state, &name, "unreadable");
    assert!(log.starts_with("uid=0\n"), "{log}");
    assert!(log.contains("Permission denied"), "{log}");
    assert!(!log.contains("root only"));
    let status: serde_json::Value =
        serde_json::from_slice(&state.run(&["status", &name]).stdout).unwrap();
    let pid = status["initPid"].as_i64().unwrap();
    let uids = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid: u32 = uids
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(host_uid >= 100_000, "init runs as host uid {host_uid}");
    let out = state.run(&["exec", &name, "--", "id", "-u"]);
    assert_eq!(stdout(&out), "0\n", "{}", stderr(&out));

    // reboot -f still works in a user namespace (CAP_SYS_BOOT of its own).
    let nspid = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(nspid(pid), std::fs::read_link("/proc/self/ns/pid").unwrap());
    std::fs::write(state.container_dir(&name).join("rootfs/tmp/go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status: serde_json::Value =
            serde_json::from_slice(&state.run(&["status", &name]).stdout).unwrap();
        if status["reboots"] == 1 && status["phase"] == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "no reboot: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn only_the_default_devices_can_be_used() {
    let state = StateDir::new();
    let name = unique("devices");
    // /dev/net/tun bound in by the manifest: not one of the default nodes, and root
    // inside (CAP_DAC_OVERRIDE) could open it if nothing else stopped it.
    let manifest = state.manifest(
        &name,
        "  command: [/bin/sh, -c, '[ -c /dev/tun ] && echo tun present; (exec 3</dev/tun) 2>/dev/null && echo tun opened || echo tun refused; \
         head -c 4 /dev/urandom | wc -c; exec sleep infinity']\n  \
         mounts: [{source: /dev/net/tun, target: /dev/tun}]\n  \
         security: {allowHostPaths: [/dev/net/tun]}\n  stopTimeout: 0s\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["start", &name]);
    let v1_devices = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o == "devices"));
    if v1_devices {
        assert!(out.status.success(), "{}", stderr(&out));
        let log = console_until(&state, &name, "4\n");
        assert!(log.contains("tun present\ntun refused"), "{log}");
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("is a device node"),
            "{}",
            stderr(&out)
        );
    }
}
