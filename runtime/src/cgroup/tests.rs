use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::*;

fn limits(memory: bool, pids: bool, cpu: bool) -> Resources {
    Resources {
        memory_bytes: memory.then_some(64 << 20),
        pids: pids.then_some(32),
        millicpus: cpu.then_some(500),
    }
}

fn dirs(cgroups: &Cgroups) -> Vec<PathBuf> {
    cgroups.hierarchies.iter().map(|h| h.dir.clone()).collect()
}

/// The cgroup lines of this project's test VM, a hybrid host without systemd,
/// verbatim except that the cgroup2 mount (holding only hugetlb) points at a
/// fake so the test reads no host file.
fn hybrid(unified: &Path) -> String {
    format!(
        "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {} rw,relatime - cgroup2 cgroup2 rw
",
        unified.display()
    )
}

/// A fake cgroup2 root offering `controllers`, and its mountinfo line.
fn fake_v2(controllers: &str) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("cgroup.controllers"),
        format!("{controllers}\n"),
    )
    .unwrap();
    let line = format!(
        "25 19 0:22 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        root.path().display()
    );
    (root, line)
}

/// A Debian 10 style v1 host: cpu and cpuacct co-mounted, net_cls and net_prio too.
fn v1_comounted(root: &Path) -> String {
    let r = root.display();
    format!(
        "\
24 18 0:21 / {r} ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
26 24 0:23 / {r}/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
29 24 0:26 / {r}/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 24 0:27 / {r}/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
31 24 0:28 / {r}/pids rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,pids
32 24 0:29 / {r}/freezer rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,freezer
33 24 0:30 / {r}/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,net_cls,net_prio
34 24 0:31 / {r}/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
"
    )
}

fn message(result: Result<Cgroups>) -> String {
    match result {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hybrid_host_uses_v1_pids_for_tracking_and_ignores_the_hugetlb_cgroup2() {
    let (unified, _) = fake_v2("hugetlb");
    let text = hybrid(unified.path());
    let all = Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, true, true)).unwrap();
    assert_eq!(all.version(), CgroupVersion::V1);
    assert_eq!(
        dirs(&all),
        [
            PathBuf::from("/sys/fs/cgroup/pids/berth/web"),
            PathBuf::from("/sys/fs/cgroup/memory/berth/web"),
            PathBuf::from("/sys/fs/cgroup/cpu/berth/web"),
            PathBuf::from("/sys/fs/cgroup/devices/berth/web"),
        ]
    );
    assert_eq!(
        all.payload_dir("memory"),
        Some(PathBuf::from("/sys/fs/cgroup/memory/berth/web/payload"))
    );
    assert_eq!(all.payload_dir("cpuacct"), None);
    assert_eq!(
        all.parent_dirs(),
        [
            PathBuf::from("/sys/fs/cgroup/pids/berth"),
            PathBuf::from("/sys/fs/cgroup/memory/berth"),
            PathBuf::from("/sys/fs/cgroup/cpu/berth"),
            PathBuf::from("/sys/fs/cgroup/devices/berth"),
        ]
    );

    let none =
        Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(none.version(), CgroupVersion::V1);
    assert_eq!(
        dirs(&none),
        [
            PathBuf::from("/sys/fs/cgroup/pids/berth/web"),
            PathBuf::from("/sys/fs/cgroup/devices/berth/web"),
        ]
    );

    let memory =
        Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, false, false)).unwrap();
    assert_eq!(
        dirs(&memory),
        [
            PathBuf::from("/sys/fs/cgroup/pids/berth/web"),
            PathBuf::from("/sys/fs/cgroup/memory/berth/web"),
            PathBuf::from("/sys/fs/cgroup/devices/berth/web"),
        ]
    );
}

#[test]
fn pure_v2_host_uses_one_hierarchy_and_enables_only_what_the_limits_need() {
    let (root, text) = fake_v2("cpuset cpu io memory hugetlb pids rdma misc");
    let all = Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, true, true)).unwrap();
    assert_eq!(all.version(), CgroupVersion::V2);
    assert_eq!(dirs(&all), [root.path().join("berth/web")]);
    assert_eq!(all.hierarchies[0].controllers, ["pids", "memory", "cpu"]);
    for c in ["memory", "pids", "cpu"] {
        assert_eq!(
            all.payload_dir(c),
            Some(root.path().join("berth/web/payload"))
        );
    }
    assert_eq!(all.parent_dirs(), [root.path().join("berth")]);

    let none =
        Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(none.hierarchies[0].controllers, ["pids"]);
    assert_eq!(none.payload_dir("memory"), None);
    assert_eq!(
        none.payload_dir("pids"),
        Some(root.path().join("berth/web/payload"))
    );
}

#[test]
fn v2_levels_run_from_the_root_through_a_nested_parent_to_the_container() {
    let (root, text) = fake_v2("memory pids");
    let c = Cgroups::from_mountinfo(&text, "a/b/", "web", &limits(false, false, false)).unwrap();
    let p = root.path();
    assert_eq!(
        c.hierarchies[0].levels(),
        [p.to_owned(), p.join("a"), p.join("a/b"), p.join("a/b/web")]
    );
    assert_eq!(c.parent_dirs(), [p.join("a/b")]);
}

#[test]
fn v2_limits_are_written_to_the_payload() {
    let (root, text) = fake_v2("cpu memory pids");
    let resources = limits(true, true, true);
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &resources).unwrap();
    let payload = root.path().join("berth/web/payload");
    std::fs::create_dir_all(&payload).unwrap();
    for file in ["memory.max", "pids.max", "cpu.max"] {
        std::fs::write(payload.join(file), "").unwrap();
    }
    c.apply_limits(&resources).unwrap();
    let read = |f: &str| std::fs::read_to_string(payload.join(f)).unwrap();
    assert_eq!(read("memory.max"), "67108864");
    assert_eq!(read("pids.max"), "32");
    assert_eq!(read("cpu.max"), "50000 100000");
}

#[test]
fn without_a_pids_limit_the_default_is_written_and_zero_writes_max() {
    let (root, text) = fake_v2("memory pids");
    let payload = root.path().join("berth/web/payload");
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(payload.join("pids.max"), "").unwrap();
    let read = || std::fs::read_to_string(payload.join("pids.max")).unwrap();
    let none = limits(false, false, false);
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &none).unwrap();
    c.apply_limits(&none).unwrap();
    assert_eq!(read(), DEFAULT_PIDS_LIMIT.to_string());

    let unlimited = Resources {
        pids: Some(0),
        ..none.clone()
    };
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &unlimited).unwrap();
    std::fs::write(payload.join("pids.max"), "").unwrap(); // a plain file is not truncated
    c.apply_limits(&unlimited).unwrap();
    assert_eq!(read(), "max");
}

#[test]
fn without_a_pids_controller_the_default_and_zero_need_none() {
    let (root, text) = fake_v2("memory");
    let payload = root.path().join("berth/web/payload");
    std::fs::create_dir_all(&payload).unwrap();
    for pids in [None, Some(0)] {
        let resources = Resources {
            pids,
            ..limits(false, false, false)
        };
        let c = Cgroups::from_mountinfo(&text, "berth", "web", &resources).unwrap();
        c.apply_limits(&resources).unwrap();
        assert!(!payload.join("pids.max").exists());
    }
}

#[test]
fn v1_comounted_cpu_and_cpuacct_is_one_hierarchy() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let text = v1_comounted(r);
    let resources = limits(true, true, true);
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &resources).unwrap();
    assert_eq!(c.version(), CgroupVersion::V1);
    assert_eq!(
        dirs(&c),
        [
            r.join("pids/berth/web"),
            r.join("memory/berth/web"),
            r.join("cpu,cpuacct/berth/web")
        ]
    );
    assert_eq!(
        c.payload_dir("cpu"),
        Some(r.join("cpu,cpuacct/berth/web/payload"))
    );
    assert_eq!(c.payload_dir("cpuacct"), c.payload_dir("cpu"));

    // The values, into fake files.
    let files = [
        ("memory", "memory.limit_in_bytes"),
        ("pids", "pids.max"),
        ("cpu,cpuacct", "cpu.cfs_period_us"),
        ("cpu,cpuacct", "cpu.cfs_quota_us"),
    ];
    for (dir, file) in files {
        let payload = r.join(dir).join("berth/web/payload");
        std::fs::create_dir_all(&payload).unwrap();
        std::fs::write(payload.join(file), "").unwrap();
    }
    c.apply_limits(&resources).unwrap();
    let read = |dir: &str, f: &str| {
        std::fs::read_to_string(r.join(dir).join("berth/web/payload").join(f)).unwrap()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "32");
    assert_eq!(read("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
}

#[test]
fn v1_tracking_falls_back_from_pids_to_memory_to_freezer_but_not_cpuset() {
    let text = |lines: &[&str]| {
        lines
            .iter()
            .enumerate()
            .map(|(i, opts)| format!("{i} 1 0:{i} / /cg/{i} rw - cgroup cgroup rw,{opts}\n"))
            .collect::<String>()
    };
    let none = limits(false, false, false);
    let pick = |lines: &[&str]| {
        let c = Cgroups::from_mountinfo(&text(lines), "berth", "web", &none).unwrap();
        dirs(&c)
    };
    assert_eq!(
        pick(&["freezer", "memory", "pids"]),
        [PathBuf::from("/cg/2/berth/web")]
    );
    assert_eq!(
        pick(&["freezer", "memory"]),
        [PathBuf::from("/cg/1/berth/web")]
    );
    // The devices hierarchy comes along wherever there is one, for device rules.
    assert_eq!(
        pick(&["cpuset", "devices", "freezer"]),
        [
            PathBuf::from("/cg/2/berth/web"),
            PathBuf::from("/cg/1/berth/web")
        ]
    );
    assert_eq!(
        pick(&["cpuset", "cpu,cpuacct"]),
        [PathBuf::from("/cg/1/berth/web")]
    );
    assert_eq!(pick(&["cpuset"]), [PathBuf::from("/cg/0/berth/web")]);
}

#[test]
fn a_memory_limit_without_a_memory_controller_is_an_error() {
    // v1 without memory; the hybrid cgroup2 holds only hugetlb.
    let (_unified, v2_line) = fake_v2("hugetlb");
    let text = format!("1 0 0:1 / /cg/pids rw - cgroup cgroup rw,pids\n{v2_line}");
    let e = message(Cgroups::from_mountinfo(
        &text,
        "berth",
        "web",
        &limits(true, false, false),
    ));
    assert!(e.contains("memory limit of 67108864 bytes"), "{e}");
    assert!(e.contains("memory controller"), "{e}");

    // Pure v2 without memory.
    let (_root, text) = fake_v2("cpu pids");
    let e = message(Cgroups::from_mountinfo(
        &text,
        "berth",
        "web",
        &limits(true, true, true),
    ));
    assert!(
        e.contains("memory limit") && e.contains("memory controller"),
        "{e}"
    );

    // A CPU limit on the hybrid host works (v1 cpu); a pids limit without pids does not.
    let e = message(Cgroups::from_mountinfo(
        "1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n",
        "berth",
        "web",
        &limits(false, true, false),
    ));
    assert!(
        e.contains("pids limit of 32") && e.contains("pids controller"),
        "{e}"
    );
}

#[test]
fn limits_split_across_v1_and_v2_are_refused() {
    let (_root, v2_line) = fake_v2("cpu pids");
    let text = format!("1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n{v2_line}");
    let e = message(Cgroups::from_mountinfo(
        &text,
        "berth",
        "web",
        &limits(true, false, true),
    ));
    assert!(e.contains("memory (v1)") && e.contains("cpu (v2)"), "{e}");
}

#[test]
fn v2_with_pids_wins_over_a_stray_v1_hierarchy() {
    let (root, v2_line) = fake_v2("cpu memory pids");
    let text = format!("{v2_line}1 0 0:1 / /cg/net_cls rw - cgroup cgroup rw,net_cls\n");
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(c.version(), CgroupVersion::V2);
    assert_eq!(dirs(&c), [root.path().join("berth/web")]);
}

#[test]
fn no_cgroups_at_all_is_an_error() {
    let e = message(Cgroups::from_mountinfo(
        "1 0 0:1 / / rw - ext4 /dev/sda1 rw\n",
        "berth",
        "web",
        &limits(false, false, false),
    ));
    assert!(e.contains("no cgroup hierarchy"), "{e}");
}

#[test]
fn a_bind_mount_of_a_sub_cgroup_loses_to_the_root_mount() {
    let text = "1 0 0:1 /lxc/x /inner rw - cgroup cgroup rw,pids\n\
                2 0 0:1 / /outer rw - cgroup cgroup rw,pids\n";
    let c = Cgroups::from_mountinfo(text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(dirs(&c), [PathBuf::from("/outer/berth/web")]);
}

#[test]
fn parents_and_names_that_could_escape_are_refused() {
    let text = "1 0 0:1 / /cg rw - cgroup cgroup rw,pids\n";
    let none = limits(false, false, false);
    for parent in ["", "/berth", "../x", "a/../b", "./a"] {
        let e = message(Cgroups::from_mountinfo(text, parent, "web", &none));
        assert!(e.contains("cgroup parent"), "{parent:?}: {e}");
    }
    for name in ["", "..", "a/b", "Web"] {
        assert!(
            matches!(
                Cgroups::from_mountinfo(text, "berth", name, &none),
                Err(Error::BadName(..))
            ),
            "{name:?}"
        );
    }
}

#[test]
fn cgroups_survive_a_json_round_trip() {
    let (unified, _) = fake_v2("hugetlb");
    let c = Cgroups::from_mountinfo(
        &hybrid(unified.path()),
        "berth",
        "web",
        &limits(true, true, true),
    )
    .unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Cgroups>(&json).unwrap(), c);
}

#[test]
fn removing_cgroups_that_do_not_exist_is_fine() {
    let root = tempfile::tempdir().unwrap();
    let text = format!(
        "1 0 0:1 / {} rw - cgroup cgroup rw,pids\n",
        root.path().display()
    );
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    c.remove().unwrap();
    c.kill_payload().unwrap();
}

/// Kills what the test spawned and removes what it made, even when it fails.
struct Cleanup {
    cgroups: Cgroups,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.cgroups.kill_payload();
        let _ = self.cgroups.remove();
        for dir in self.cgroups.parent_dirs() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn spawn_sleep() -> Child {
    Command::new("sleep").arg("30").spawn().unwrap()
}

fn child_pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap()
}

#[test]
fn real_cgroups_limit_track_kill_and_remove_a_process() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: creating real cgroups needs root");
        return;
    }
    let parent = format!("berth-cgtest-{}", std::process::id());
    let resources = Resources {
        memory_bytes: Some(64 << 20),
        pids: Some(32),
        millicpus: Some(500),
    };
    let cgroups = Cgroups::new(&parent, "web", &resources).unwrap();
    let mut cleanup = Cleanup {
        cgroups: cgroups.clone(),
        children: Vec::new(),
    };
    cgroups.create().unwrap();
    cgroups.create().unwrap(); // idempotent
    cgroups.apply_limits(&resources).unwrap();

    let read = |controller: &str, file: &str| {
        let dir = cgroups.payload_dir(controller).unwrap();
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    match cgroups.version() {
        CgroupVersion::V1 => {
            assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
            assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read("memory", "memory.max"), "67108864");
            assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(read("pids", "pids.max"), "32");

    // A stand-in monitor moves itself into monitor everywhere (as `enter_monitor`
    // does, by writing 0: here between fork and exec, with async-signal-safe calls
    // only, this test process having threads), then is gone.
    let files: Vec<std::ffi::CString> = cgroups
        .hierarchies
        .iter()
        .map(|h| {
            let path = h.monitor().join(cgroups.self_attach_file());
            std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).unwrap()
        })
        .collect();
    let mut command = std::process::Command::new("sleep");
    command.arg("1000");
    // SAFETY: open, write and close are async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            for file in &files {
                let fd = nix::libc::open(file.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
                if fd < 0 || nix::libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(fd);
            }
            Ok(())
        });
    }
    cleanup.children.push(command.spawn().unwrap());
    let monitor_pid = child_pid(&cleanup.children[0]);
    for h in &cgroups.hierarchies {
        assert!(
            read_pids(&h.monitor().join("cgroup.procs"))
                .unwrap()
                .contains(&monitor_pid)
        );
    }
    cleanup.children[0].kill().unwrap();
    cleanup.children[0].wait().unwrap();

    // The payload: tracked, then killed.
    cleanup.children.push(spawn_sleep());
    let payload_pid = child_pid(&cleanup.children[1]);
    cgroups.enter_payload(payload_pid).unwrap();
    assert_eq!(cgroups.payload_pids().unwrap(), [payload_pid]);
    cgroups.kill_payload().unwrap();
    let status = cleanup.children[1].wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(cgroups.payload_pids().unwrap().is_empty());

    cgroups.remove().unwrap();
    cgroups.remove().unwrap(); // idempotent
    for parent_dir in cgroups.parent_dirs() {
        assert!(parent_dir.is_dir(), "{}", parent_dir.display());
        assert!(!parent_dir.join("web").exists(), "{}", parent_dir.display());
    }
    drop(cleanup);
    for parent_dir in cgroups.parent_dirs() {
        assert!(!parent_dir.exists(), "{}", parent_dir.display());
    }
}

/// A `sleep` listed in a fake `cgroup.procs` (a regular file in a temp dir), and
/// a thread that plays the kernel: once the sleep is dead, the cgroup is empty
/// (the file goes). With `kill_file`, the thread kills the sleep itself when
/// "1" is written there, as the kernel does on cgroup v2; it returns whether
/// that happened.
fn listed_sleep(leaf: &Path, kill_file: bool) -> (i32, std::thread::JoinHandle<(i32, bool)>) {
    std::fs::create_dir_all(leaf).unwrap();
    let mut child = spawn_sleep();
    let pid = child_pid(&child);
    let procs = leaf.join("cgroup.procs");
    std::fs::write(&procs, format!("{pid}\n")).unwrap();
    let kill_path = leaf.join("cgroup.kill");
    if kill_file {
        std::fs::write(&kill_path, "").unwrap();
    }
    let thread = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut killed_by_file = false;
        let status = loop {
            if kill_file && std::fs::read_to_string(&kill_path).unwrap() == "1" && !killed_by_file {
                killed_by_file = true;
                child.kill().unwrap();
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        std::fs::remove_file(&procs).unwrap();
        let _ = std::fs::remove_file(&kill_path);
        (status.signal().unwrap_or(0), killed_by_file)
    });
    (pid, thread)
}

#[test]
fn v1_payload_is_read_from_the_tracking_hierarchy_and_emptied_with_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let c = Cgroups::from_mountinfo(
        &v1_comounted(root.path()),
        "berth",
        "web",
        &limits(true, false, false),
    )
    .unwrap();
    assert!(
        c.payload_pids().unwrap().is_empty(),
        "no payload cgroup is empty"
    );
    let payload = root.path().join("pids/berth/web/payload");
    let (pid, thread) = listed_sleep(&payload, false);
    assert_eq!(c.payload_pids().unwrap(), [pid]);
    c.kill_payload().unwrap();
    assert_eq!(thread.join().unwrap(), (9, false));
    assert!(c.payload_pids().unwrap().is_empty());
}

#[test]
fn hybrid_payload_is_the_v1_pids_one_not_the_cgroup2() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (unified, _) = fake_v2("hugetlb");
    let text = format!(
        "\
32 31 0:29 / {r}/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / {r}/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / {r}/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / {r}/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {u} rw,relatime - cgroup2 cgroup2 rw
",
        r = r.display(),
        u = unified.path().display()
    );
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, true, false)).unwrap();
    assert_eq!(c.version(), CgroupVersion::V1);
    // A stray pid in another hierarchy's payload is not what tracking reads.
    std::fs::create_dir_all(r.join("memory/berth/web/payload")).unwrap();
    std::fs::write(r.join("memory/berth/web/payload/cgroup.procs"), "1\n").unwrap();
    let (pid, thread) = listed_sleep(&r.join("pids/berth/web/payload"), false);
    assert_eq!(c.payload_pids().unwrap(), [pid]);
    c.kill_payload().unwrap();
    assert_eq!(thread.join().unwrap(), (9, false));
    assert!(!unified.path().join("berth").exists());
}

#[test]
fn v2_payload_is_emptied_through_cgroup_kill_where_the_kernel_has_it() {
    let (root, text) = fake_v2("memory pids");
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    let payload = root.path().join("berth/web/payload");
    let (pid, thread) = listed_sleep(&payload, true);
    assert_eq!(c.payload_pids().unwrap(), [pid]);
    c.kill_payload().unwrap();
    assert_eq!(
        thread.join().unwrap(),
        (9, true),
        "cgroup.kill was not used"
    );

    // An older kernel without cgroup.kill: each pid gets SIGKILL.
    let (_, thread) = listed_sleep(&payload, false);
    c.kill_payload().unwrap();
    assert_eq!(thread.join().unwrap(), (9, false));
}

#[test]
fn a_template_cgroup_is_made_in_the_tracking_hierarchy_and_killed_and_removed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let c =
        Cgroups::from_mountinfo(&v1_comounted(r), "berth", "web", &Resources::default()).unwrap();
    std::fs::create_dir(r.join("pids")).unwrap(); // the mount point
    let procs = c.make_create().unwrap();
    assert_eq!(procs, r.join("pids/berth/web/create/cgroup.procs"));
    assert!(
        !r.join("memory/berth").exists(),
        "only the tracking hierarchy"
    );
    let (_, thread) = listed_sleep(procs.parent().unwrap(), false);
    c.kill_create().unwrap();
    assert_eq!(thread.join().unwrap(), (9, false));
    assert!(!r.join("pids/berth/web").exists());
    assert!(r.join("pids/berth").is_dir(), "the parent stays");

    // A container's own cgroups keep NAME in place.
    c.make_create().unwrap();
    std::fs::create_dir(r.join("pids/berth/web/payload")).unwrap();
    c.kill_create().unwrap();
    assert!(!r.join("pids/berth/web/create").exists());
    assert!(r.join("pids/berth/web/payload").is_dir());
}

#[test]
fn real_template_cgroup_catches_what_a_script_forks() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: creating real cgroups needs root");
        return;
    }
    let parent = format!("berth-cgtest-create-{}", std::process::id());
    let cgroups = Cgroups::new(&parent, "web", &Resources::default()).unwrap();
    let mut cleanup = Cleanup {
        cgroups: cgroups.clone(),
        children: Vec::new(),
    };
    let procs = cgroups.make_create().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .unwrap();
    let fd = file.as_raw_fd();
    let mut script = Command::new("sh");
    script.args(["-c", "sleep 30 & exec sleep 30"]);
    // SAFETY: write(2) only, between fork and exec.
    unsafe {
        script.pre_exec(move || {
            if nix::libc::write(fd, c"0".as_ptr().cast(), 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cleanup.children.push(script.spawn().unwrap());
    let script_pid = child_pid(&cleanup.children[0]);
    let both = loop {
        let pids = read_pids(&procs).unwrap();
        if pids.len() == 2 {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let forked = *both.iter().find(|p| **p != script_pid).unwrap();
    // The script ends; what it forked lives on until the create cgroup is killed.
    cleanup.children[0].kill().unwrap();
    cleanup.children[0].wait().unwrap();
    assert_eq!(read_pids(&procs).unwrap(), [forked]);
    cgroups.kill_create().unwrap();
    assert!(!procs.exists());
    assert!(
        std::fs::read_to_string(format!("/proc/{forked}/stat")).map_or(true, |s| s
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z')),
        "the script's child outlived kill_create"
    );
}

#[test]
fn usage_is_read_from_v2_cpu_stat_and_the_memory_and_pids_files() {
    let (root, text) = fake_v2("cpu memory pids");
    let payload = root.path().join("berth/web/payload");
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(
        payload.join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    )
    .unwrap();
    std::fs::write(payload.join("memory.current"), "4096\n").unwrap();
    std::fs::write(payload.join("pids.current"), "3\n").unwrap();
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, false, false)).unwrap();
    assert_eq!(
        c.usage(),
        Usage {
            cpu_seconds: Some(2.5),
            memory_bytes: Some(4096),
            pids: Some(3)
        }
    );
    // Without a memory limit the memory controller is not enabled: no figure,
    // rather than a stale file's.
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(c.usage().memory_bytes, None);
    assert_eq!(c.usage().cpu_seconds, Some(2.5));
}

#[test]
fn usage_on_v1_reads_cpuacct_where_it_shares_a_hierarchy_used() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let text = v1_comounted(r);
    for (dir, file, value) in [
        ("cpu,cpuacct", "cpuacct.usage", "1500000000\n"),
        ("memory", "memory.usage_in_bytes", "8192\n"),
        ("pids", "pids.current", "2\n"),
    ] {
        let payload = r.join(dir).join("berth/web/payload");
        std::fs::create_dir_all(&payload).unwrap();
        std::fs::write(payload.join(file), value).unwrap();
    }
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(true, true, true)).unwrap();
    assert_eq!(
        c.usage(),
        Usage {
            cpu_seconds: Some(1.5),
            memory_bytes: Some(8192),
            pids: Some(2)
        }
    );
    // No CPU limit: the cpu,cpuacct hierarchy is not used, so no CPU time.
    let c = Cgroups::from_mountinfo(&text, "berth", "web", &limits(false, false, false)).unwrap();
    assert_eq!(c.usage().cpu_seconds, None);
    assert_eq!(c.usage().pids, Some(2));
}
