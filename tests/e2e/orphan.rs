//! A container whose monitor was killed (kill -9, OOM killer): its processes are
//! orphans in the payload cgroup. berth must see them as running, kill them
//! cleanly on `stop` or before a new `start`, and never delete the rootfs under them.

use std::path::PathBuf;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{
    StateDir, cgroup_dirs, process_gone, process_gone_now, processes_in, stderr, stdout, unique,
};

fn status(state: &StateDir, name: &str) -> serde_json::Value {
    let out = state.run(&["status", name]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A busybox container running `sleep 1000` whose monitor was killed with
/// SIGKILL: returns its init pid and cgroup dirs.
fn orphaned(state: &StateDir, name: &str) -> (i32, Vec<PathBuf>) {
    let manifest = state.manifest(
        name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    let running = status(state, name);
    let init = running["initPid"].as_i64().unwrap() as i32;
    let monitor = running["monitorPid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(monitor), Signal::SIGKILL).unwrap();
    assert!(process_gone(monitor), "the monitor survived SIGKILL");
    assert!(!process_gone_now(init), "the init died with its monitor");
    (init, cgroup_dirs(&running))
}

#[test]
fn an_orphan_is_reported_running_without_its_monitor_not_failed() {
    let state = StateDir::new();
    let name = unique("orphan-status");
    let (init, _) = orphaned(&state, &name);
    let orphan = status(&state, &name);
    assert_eq!(orphan["phase"], "Orphaned", "{orphan}");
    assert_eq!(orphan["initPid"], init);
    assert!(orphan.get("monitorPid").is_none(), "{orphan}");
    let out = state.run(&["reboot", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("monitor of {name}: it is gone")),
        "{}",
        stderr(&out)
    );
    assert_eq!(status(&state, &name)["initPid"], init, "reboot touched it");
}

#[test]
fn starting_an_orphan_again_kills_it_first_and_leaves_one_init() {
    let state = StateDir::new();
    let name = unique("orphan-start");
    let (old_init, dirs) = orphaned(&state, &name);
    let rootfs = state.container_dir(&name).join("rootfs");
    assert_eq!(processes_in(&rootfs), [old_init]);

    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    assert!(
        stderr(&out).contains("killed the processes of a container whose monitor was gone"),
        "{}",
        stderr(&out)
    );
    assert!(
        process_gone(old_init),
        "the orphaned init survived the start"
    );
    let running = status(&state, &name);
    let new_init = running["initPid"].as_i64().unwrap() as i32;
    assert_ne!(new_init, old_init);
    assert_eq!(processes_in(&rootfs), [new_init], "two inits of one name");
    let payload = std::fs::read_to_string(dirs[0].join("payload/cgroup.procs")).unwrap();
    assert_eq!(payload.trim(), new_init.to_string());
}

#[test]
fn stopping_an_orphan_kills_every_process_and_removes_its_cgroups() {
    let state = StateDir::new();
    let name = unique("orphan-stop");
    let (init, dirs) = orphaned(&state, &name);
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("killed {name}: its monitor was gone (OrphanKilled, SIGKILL)")
    );
    assert!(process_gone(init), "the orphaned init survived the stop");
    assert!(processes_in(&state.container_dir(&name).join("rootfs")).is_empty());
    for dir in &dirs {
        assert!(!dir.exists(), "cgroup {} survived the stop", dir.display());
    }
    let stopped = status(&state, &name);
    assert_eq!(stopped["phase"], "Stopped", "{stopped}");
    assert_eq!(stopped["lastExit"]["reason"], "OrphanKilled");
    let out = state.run(&["stop", &name]);
    assert_eq!(stdout(&out).trim(), format!("{name} is not running"));
}

#[test]
fn destroy_refuses_an_orphan_and_keeps_its_rootfs_until_it_is_stopped() {
    let state = StateDir::new();
    let name = unique("orphan-destroy");
    let (init, _) = orphaned(&state, &name);
    let rootfs = state.container_dir(&name).join("rootfs");
    let out = state.run(&["destroy", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("container {name} is running; stop it first")),
        "{}",
        stderr(&out)
    );
    assert!(
        rootfs.join("etc/hostname").exists(),
        "the rootfs was deleted"
    );
    assert!(!process_gone_now(init));

    assert!(state.run(&["stop", &name]).status.success());
    let out = state.run(&["destroy", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!rootfs.exists());
}

/// A `sleep` of this test's own, frozen in a v1 freezer cgroup of its own so
/// that SIGKILL cannot end it until it is thawed; thawed, killed and its freezer
/// cgroup removed when dropped.
struct Frozen {
    child: std::process::Child,
    freezer: PathBuf,
}

impl Frozen {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.freezer.join("freezer.state"), "THAWED");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.freezer);
    }
}

#[test]
fn a_process_of_the_last_run_that_outlives_its_kill_keeps_a_second_init_from_starting() {
    let freezers = std::path::Path::new("/sys/fs/cgroup/freezer");
    if !freezers.join("cgroup.procs").is_file() {
        eprintln!(
            "skipped: needs a cgroup v1 freezer hierarchy at {}",
            freezers.display()
        );
        return;
    }
    let state = StateDir::new();
    let name = unique("orphan-stuck");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sleep, '1000']\n  stopTimeout: 0s\n",
    );
    assert!(
        state
            .run(&["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    let dirs = cgroup_dirs(&status(&state, &name));

    // A process in the container's payload cgroups that SIGKILL cannot end for
    // now (as one stuck on a dead NFS server would be).
    let freezer = freezers.join(&name);
    std::fs::create_dir(&freezer).unwrap();
    let stray = Frozen {
        child: std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap(),
        freezer,
    };
    let pid = stray.pid().to_string();
    for dir in &dirs {
        std::fs::write(dir.join("payload/cgroup.procs"), &pid).unwrap();
    }
    std::fs::write(stray.freezer.join("cgroup.procs"), &pid).unwrap();
    std::fs::write(stray.freezer.join("freezer.state"), "FROZEN").unwrap();

    // The stop ends init; the monitor's clean-up cannot empty the payload.
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert!(!process_gone_now(stray.pid()), "the frozen stray died");
    // What is left of the last run is seen, and no second init joins it.
    let left = status(&state, &name);
    assert_eq!(left["phase"], "Orphaned", "{left}");
    let out = state.run(&["start", &name]);
    assert!(
        !out.status.success(),
        "a second init started beside a process of the last run:\n{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!("processes [{pid}]")),
        "{}",
        stderr(&out)
    );

    // Thawed, it dies; then the container stops and starts as usual.
    drop(stray);
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(state.run(&["stop", &name]).status.success());
}
