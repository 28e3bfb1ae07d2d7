//! berth beside its peers, interleaved: start, create and the full cycle
//! (create + start + stop + destroy) of berth and, where the peer has the
//! operation, LXC (`lxc-execute`, `lxc-start -d`, `lxc-create -t busybox`), `crun`,
//! `runc`, `tar -xf` and the `unshare` floor.
//!
//! `cargo bench -p berth-operator --bench peers` (as root). Every round runs every
//! row once, in an order rotated by one row per round (round r starts at row r), so
//! that load on the machine spreads over all rows alike; 30 rounds by default,
//! `BERTH_BENCH_ROUNDS=N` for another number. Each row gives n, min, median, p90
//! and max. Set-up installs the peers that are missing (`apt-get install -y lxc crun
//! runc busybox-static`); a peer that cannot run is a row saying why, never left
//! out. The table goes to stdout and, with `--bench`, to `tests/bench/RESULTS.md`
//! with the date, the machine, the cgroup layout and every peer's version.
//!
//! What "start" means (the same command, `/bin/true`, everywhere): `berth start`
//! returns once the container's command has been exec'd, so its row is spawn →
//! exit of `berth start` (the container's exit is not waited for). The peers have
//! no "return once exec'd", so theirs is spawn → the container has run `/bin/true`
//! and is gone: `lxc-execute`, `crun run`, `runc run` and `unshare` until they
//! exit; `lxc-start -d` until it and every process it left behind (LXC's monitor)
//! have exited, reaped by the bench as their subreaper. A peer's figure is thus an
//! upper bound of its own created → exec'd.
//!
//! crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"):
//! on such a host every crun command runs as `unshare -m --propagation private sh
//! -c 'umount /sys/fs/cgroup/unified && exec "$0" "$@"' crun ...`, and the same
//! wrapper exec'ing `true` is a row of its own, so crun's net time is
//! median(crun) − median(wrapper) (× 3 for the cycle's three commands).
//!
//! Everything lives in a fresh temp dir: berth's state dir, LXC's lxcpath (`-P`),
//! crun's and runc's state roots and bundles. All cgroups go under
//! `berth-bench-peers-<pid>` (berth's `--cgroup-parent`, LXC's `lxc.cgroup.dir`,
//! crun's and runc's `cgroupsPath`). A guard stops and destroys every container
//! made, rmdirs that cgroup tree in every hierarchy and LXC's lock dir of the temp
//! lxcpath, also on failure, panic or Ctrl-C. LXC runs with `lxc.net.0.type =
//! empty` (no `lxcbr0` is needed, and the bench reports whether one exists).
//!
//! Run without `--bench` (as `cargo test --benches` does), it is a smoke run: one
//! round, a 5 MiB tarball instead of 50 MiB, nothing installed (a missing peer is
//! a skipped row), nothing written; it fails (exit 1) only if a berth row fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;

use common::{INTERRUPTED, Run, check_interrupted, run};

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::libc;

const ROUNDS: usize = 30;
const SMOKE_ROUNDS: usize = 1;
const TARBALL_MIB: usize = 50;
const SMOKE_TARBALL_MIB: usize = 5;

/// The longest any one command may take before it is killed (by pid).
const TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

const UNIFIED: &str = "/sys/fs/cgroup/unified";
/// Unmounts the v2 hierarchy of a hybrid host in a private mount namespace, then
/// execs its arguments.
const HIDE_UNIFIED: &str = "umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"";

/// The rows, in the table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    StartBerthBusybox,
    StartBerthHost,
    StartLxcExecute,
    StartLxcStart,
    StartCrun,
    CrunWrapper,
    StartRunc,
    StartUnshare,
    CreateBerthBusybox,
    CreateBerthHost,
    CreateLxc,
    CreateBerthTarball,
    TarXf,
    CycleBerthBusybox,
    CycleBerthHost,
    CycleCrun,
    CycleRunc,
    CycleLxc,
}

const OPS: [Op; 18] = [
    Op::StartBerthBusybox,
    Op::StartBerthHost,
    Op::StartLxcExecute,
    Op::StartLxcStart,
    Op::StartCrun,
    Op::CrunWrapper,
    Op::StartRunc,
    Op::StartUnshare,
    Op::CreateBerthBusybox,
    Op::CreateBerthHost,
    Op::CreateLxc,
    Op::CreateBerthTarball,
    Op::TarXf,
    Op::CycleBerthBusybox,
    Op::CycleBerthHost,
    Op::CycleCrun,
    Op::CycleRunc,
    Op::CycleLxc,
];

impl Op {
    fn section(self) -> &'static str {
        match self {
            Op::StartBerthBusybox
            | Op::StartBerthHost
            | Op::StartLxcExecute
            | Op::StartLxcStart
            | Op::StartCrun
            | Op::CrunWrapper
            | Op::StartRunc
            | Op::StartUnshare => "start",
            Op::CreateBerthBusybox
            | Op::CreateBerthHost
            | Op::CreateLxc
            | Op::CreateBerthTarball
            | Op::TarXf => "create",
            Op::CycleBerthBusybox
            | Op::CycleBerthHost
            | Op::CycleCrun
            | Op::CycleRunc
            | Op::CycleLxc => "cycle",
        }
    }

    /// What is timed.
    fn label(self) -> &'static str {
        match self {
            Op::StartBerthBusybox => "`berth start`, busybox template (until exec'd)",
            Op::StartBerthHost => "`berth start`, host template (until exec'd)",
            Op::StartLxcExecute => "`lxc-execute` (busybox container, until exited)",
            Op::StartLxcStart => "`lxc-start -d` + wait (busybox, until its monitor exited)",
            Op::StartCrun => "`crun run` (busybox bundle, until exited)",
            Op::CrunWrapper => "the `unshare -m` wrapper crun needs here, exec'ing `true`",
            Op::StartRunc => "`runc run` (busybox bundle, until exited)",
            Op::StartUnshare => "floor: `unshare -pfmuin --mount-proc true`",
            Op::CreateBerthBusybox => "`berth create`, busybox template",
            Op::CreateBerthHost => "`berth create`, host template",
            Op::CreateLxc => "`lxc-create -t busybox`",
            Op::CreateBerthTarball => "`berth create` from the tarball",
            Op::TarXf => "`tar -xf` of the same tarball",
            Op::CycleBerthBusybox => "berth busybox: create, start, stop, destroy",
            Op::CycleBerthHost => "berth host: create, start, stop, destroy",
            Op::CycleCrun => "crun: create, start, delete -f",
            Op::CycleRunc => "runc: create, start, delete -f",
            Op::CycleLxc => "LXC: lxc-create, lxc-start -d, lxc-stop -k, lxc-destroy",
        }
    }

    fn is_berth(self) -> bool {
        matches!(
            self,
            Op::StartBerthBusybox
                | Op::StartBerthHost
                | Op::CreateBerthBusybox
                | Op::CreateBerthHost
                | Op::CreateBerthTarball
                | Op::CycleBerthBusybox
                | Op::CycleBerthHost
        )
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    op: Op,
    /// Why this row cannot run at all, decided in the set-up.
    unavailable: Option<String>,
    times: Vec<Duration>,
    /// The error that stopped this row (its earlier samples are kept).
    failed: Option<String>,
}

/// An executable `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `hybrid` (v1 controllers and a v2 hierarchy at /sys/fs/cgroup/unified), `v2`
/// (unified only) or `v1`, from /proc/self/mountinfo.
fn cgroup_layout() -> &'static str {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = false;
    let mut v2_root = false;
    let mut v2_unified = false;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        match *fstype {
            "cgroup" => v1 = true,
            "cgroup2" if *point == "/sys/fs/cgroup" => v2_root = true,
            "cgroup2" if *point == UNIFIED => v2_unified = true,
            _ => {}
        }
    }
    match (v1, v2_root || v2_unified) {
        (true, true) => "hybrid",
        (false, true) => "v2",
        (true, false) => "v1",
        (false, false) => "none",
    }
}

/// The first line a command prints (stdout, else stderr), or why it could not run.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("(printed nothing)")
            .to_owned(),
        Err(e) => format!("not available ({e})"),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn lxcbr0_exists() -> bool {
    Path::new("/sys/class/net/lxcbr0").exists()
}

/// The bench process as the subreaper of its descendants, so that what `lxc-start
/// -d` leaves behind (LXC's monitor) is reparented to it and can be waited for.
/// On only around LXC's rows: berth's monitors must not become our children.
fn set_subreaper(on: bool) {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, libc::c_ulong::from(on)) };
    assert_eq!(result, 0, "prctl(PR_SET_CHILD_SUBREAPER) failed");
}

/// Reap children until none is left (ECHILD) or `deadline` passes. Polls with
/// WNOHANG every 100 µs, so that it can give up.
fn reap_all(deadline: Instant) -> Result<(), String> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`, which outlives the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ECHILD) => return Ok(()),
                Some(libc::EINTR) => continue,
                _ => return Err(format!("waitpid: {error}")),
            }
        }
        if Instant::now() >= deadline {
            return Err("processes left by LXC still running".to_owned());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A tree of random files (plus a static busybox as /bin/sh, so that it is a
/// rootfs) of about `mib` MiB, 25 files of 40 KiB per directory, as an
/// uncompressed tar.
fn make_tarball(dir: &Path, mib: usize, out: &Path) -> Result<PathBuf, String> {
    let tree = dir.join("tree");
    let bin = tree.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .map_err(|e| format!("copy /bin/busybox: {e}"))?;
    for applet in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .map_err(|e| format!("{}: {e}", bin.display()))?;
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut chunk = vec![0u8; 40 * 1024];
    let files = mib * 1024 / 40;
    for i in 0..files {
        let sub = tree.join(format!("data/d{:03}", i / 25));
        if i % 25 == 0 {
            std::fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        }
        for byte in chunk.chunks_mut(8) {
            // xorshift64: incompressible enough, and fast.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            byte.copy_from_slice(&state.to_le_bytes()[..byte.len()]);
        }
        let file = sub.join(format!("f{i:05}"));
        std::fs::write(&file, &chunk).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let tarball = dir.join("payload.tar");
    let mut tar = Command::new("tar");
    tar.arg("-cf").arg(&tarball).arg("-C").arg(&tree).arg(".");
    run(&mut tar, TIMEOUT, out)?.ok("tar -cf")?;
    std::fs::remove_dir_all(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    Ok(tarball)
}

/// Everything the benchmark made, undone on drop (also on panic and after Ctrl-C).
#[derive(Debug)]
struct Bench {
    berth: PathBuf,
    state_dir: PathBuf,
    cgroup_parent: String,
    out: PathBuf,
    lxcpath: PathBuf,
    /// crun's and runc's `--root`.
    crun_root: PathBuf,
    runc_root: PathBuf,
    /// crun and runc container ids that may exist.
    crun_ids: Vec<String>,
    runc_ids: Vec<String>,
    /// A hybrid host: crun runs inside the unified-hiding wrapper.
    crun_wrapped: bool,
    /// The busybox rootfs of crun's and runc's bundles.
    rootfs: PathBuf,
    tarball: Option<PathBuf>,
    tmp: Option<tempfile::TempDir>,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::Builder::new()
            .prefix("berth-bench-peers-")
            .tempdir()
            .unwrap();
        let dir = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        Bench {
            berth: PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            state_dir: dir("state"),
            cgroup_parent: format!("berth-bench-peers-{}", std::process::id()),
            out: dir("out"),
            lxcpath: dir("lxc"),
            crun_root: dir("crun-state"),
            runc_root: dir("runc-state"),
            crun_ids: Vec::new(),
            runc_ids: Vec::new(),
            crun_wrapped: false,
            rootfs: tmp.path().join("bundle-rootfs"),
            tarball: None,
            tmp: Some(tmp),
        }
    }

    fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().unwrap().path()
    }

    fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.berth);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args);
        command
    }

    fn run_berth(&self, args: &[&str]) -> Result<Run, String> {
        run(&mut self.berth(args), TIMEOUT, &self.out)
    }

    /// Write the manifest `<name>.yaml` (spec lines indented by two) and return its path.
    fn manifest(&self, name: &str, spec: &str) -> Result<String, String> {
        let path = self.tmp_path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec}"
            ),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| "temp path is not UTF-8".to_owned())
    }

    /// `crun ARGS...`, inside the unified-hiding wrapper on a hybrid host.
    fn crun(&self, args: &[&str]) -> Command {
        let mut command = if self.crun_wrapped {
            let mut command = Command::new("unshare");
            command.args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                HIDE_UNIFIED,
                "crun",
            ]);
            command
        } else {
            Command::new("crun")
        };
        command.arg("--root").arg(&self.crun_root).args(args);
        command
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runc");
        command.arg("--root").arg(&self.runc_root).args(args);
        command
    }

    fn lxc(&self, tool: &str, name: &str, args: &[&str]) -> Command {
        let mut command = Command::new(tool);
        command
            .arg("-P")
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(name)
            .args(args);
        command
    }

    /// The config `lxc-create -f` copies into the container: no network (no
    /// lxcbr0 here), unconfined, and its cgroups under ours.
    fn lxc_conf(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.tmp_path().join(format!("{name}.lxc.conf"));
        std::fs::write(
            &path,
            format!(
                "lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\nlxc.cgroup.dir = {}/{name}\n",
                self.cgroup_parent
            ),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn lxc_create(&self, name: &str) -> Result<Duration, String> {
        let conf = self.lxc_conf(name)?;
        let conf = conf.to_str().ok_or("temp path is not UTF-8")?;
        let mut command = self.lxc("lxc-create", name, &["-t", "busybox", "-f", conf]);
        Ok(run(&mut command, TIMEOUT, &self.out)?
            .ok("lxc-create -t busybox")?
            .elapsed)
    }

    fn lxc_destroy(&self, name: &str) -> Result<Duration, String> {
        Ok(
            run(&mut self.lxc("lxc-destroy", name, &[]), TIMEOUT, &self.out)?
                .ok("lxc-destroy")?
                .elapsed,
        )
    }

    /// A bundle under the temp dir running `args` in the shared busybox rootfs,
    /// its cgroup `<parent>/<id>`, from `<runtime> spec`.
    fn bundle(&self, runtime: &str, id: &str, args: &[&str]) -> Result<PathBuf, String> {
        let bundle = self.tmp_path().join(format!("bundle-{id}"));
        std::fs::create_dir(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        let mut spec = Command::new(runtime);
        spec.arg("spec").current_dir(&bundle);
        run(&mut spec, TIMEOUT, &self.out)?.ok(&format!("{runtime} spec"))?;
        let path = bundle.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{runtime} spec: {e}"))?;
        config["process"]["args"] = serde_json::json!(args);
        config["process"]["terminal"] = serde_json::json!(false);
        config["root"]["path"] = serde_json::json!(self.rootfs);
        config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{id}", self.cgroup_parent));
        std::fs::write(&path, config.to_string())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(bundle)
    }

    /// The rootfs of crun's and runc's bundles: the host's static busybox with
    /// the applets the rows run.
    fn make_rootfs(&self) -> Result<(), String> {
        for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            let dir = self.rootfs.join(dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::copy("/bin/busybox", self.rootfs.join("bin/busybox"))
            .map_err(|e| format!("copy /bin/busybox: {e}"))?;
        for applet in ["sh", "true", "sleep"] {
            std::os::unix::fs::symlink("busybox", self.rootfs.join("bin").join(applet))
                .map_err(|e| format!("{}: {e}", self.rootfs.display()))?;
        }
        Ok(())
    }

    /// Stop and destroy every berth container in the state dir; false if a destroy failed.
    fn destroy_berth_containers(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("containers")) else {
            return true;
        };
        let mut clean = true;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let _ = self.run_berth(&["stop", &name, "--timeout", "0s"]);
            match self.run_berth(&["destroy", &name]) {
                Ok(r) if r.status.success() => {}
                Ok(r) => {
                    clean = false;
                    eprintln!(
                        "bench cleanup: berth destroy {name}: {}",
                        r.first_error_line()
                    );
                }
                Err(e) => {
                    clean = false;
                    eprintln!("bench cleanup: {e}");
                }
            }
        }
        clean
    }

    /// Stop and destroy every LXC container in our lxcpath; false if one is left.
    fn destroy_lxc_containers(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(&self.lxcpath) else {
            return true;
        };
        let mut clean = true;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let _ = run(
                &mut self.lxc("lxc-stop", &name, &["-k"]),
                TIMEOUT,
                &self.out,
            );
            if let Err(e) = self.lxc_destroy(&name) {
                clean = false;
                eprintln!("bench cleanup: {e}");
            }
        }
        clean
    }

    /// rmdir, depth first, every directory of the tree `<parent>` in every
    /// hierarchy under /sys/fs/cgroup (and /sys/fs/cgroup/<parent> itself on a pure
    /// v2 host): only rmdir, only below that name. Returns what could not be removed.
    fn remove_cgroups(&self) -> Vec<String> {
        let root = Path::new("/sys/fs/cgroup");
        let mut tops = vec![root.join(&self.cgroup_parent)];
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                tops.push(entry.path().join(&self.cgroup_parent));
            }
        }
        let mut problems = Vec::new();
        for top in tops {
            if top.is_dir() {
                rmdir_tree(&top, &mut problems);
            }
        }
        problems
    }

    /// LXC's lock dir for our lxcpath, `/run/lxc/lock/<lxcpath>`, and its parents
    /// up to /run/lxc/lock while they are empty.
    fn remove_lxc_locks(&self) {
        let lock_root = Path::new("/run/lxc/lock");
        let Ok(relative) = self.lxcpath.strip_prefix("/") else {
            return;
        };
        let dir = lock_root.join(relative);
        if dir.is_dir()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            eprintln!("bench cleanup: {}: {e}", dir.display());
        }
        let mut parent = dir.parent();
        while let Some(p) = parent {
            if p == lock_root || std::fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
    }
}

/// rmdir `dir`'s subdirectories, depth first, then `dir`, retrying while busy.
fn rmdir_tree(dir: &Path, problems: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path(), problems);
            }
        }
    }
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                return;
            }
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        set_subreaper(false);
        let mut clean = self.destroy_berth_containers();
        for id in &self.crun_ids {
            let _ = run(&mut self.crun(&["delete", "-f", id]), TIMEOUT, &self.out);
        }
        for id in &self.runc_ids {
            let _ = run(&mut self.runc(&["delete", "-f", id]), TIMEOUT, &self.out);
        }
        clean &= self.destroy_lxc_containers();
        // What LXC's monitors left while we were their subreaper.
        let _ = reap_all(Instant::now() + Duration::from_secs(10));
        for problem in self.remove_cgroups() {
            eprintln!("bench cleanup: cannot remove cgroup {problem}");
        }
        self.remove_lxc_locks();
        common::keep_if_unsafe_to_delete(&mut self.tmp, clean);
    }
}

// Container names, one per row that keeps or makes one.
const BB_START: &str = "peer-start-busybox";
const HOST_START: &str = "peer-start-host";
const BB_CREATE: &str = "peer-create-busybox";
const HOST_CREATE: &str = "peer-create-host";
const TAR_CREATE: &str = "peer-create-tarball";
const BB_CYCLE: &str = "peer-cycle-busybox";
const HOST_CYCLE: &str = "peer-cycle-host";
const LXC_EXECUTE: &str = "peer-execute";
const LXC_START: &str = "peer-startd";
const LXC_CREATE: &str = "peer-create";
const LXC_CYCLE: &str = "peer-cycle";
const CRUN_RUN: &str = "peer-crun-run";
const CRUN_CYCLE: &str = "peer-crun-cycle";
const RUNC_RUN: &str = "peer-runc-run";
const RUNC_CYCLE: &str = "peer-runc-cycle";

const TRUE_BUSYBOX: &str =
    "  rootfs: {template: busybox}\n  command: [\"/bin/true\"]\n  restartPolicy: Never\n";
const TRUE_HOST: &str = "  command: [\"/bin/true\"]\n  restartPolicy: Never\n";
const SLEEP_BUSYBOX: &str = "  rootfs: {template: busybox}\n  command: [\"/bin/sleep\", \"1000\"]\n  restartPolicy: Never\n  stopTimeout: 0s\n";
const SLEEP_HOST: &str =
    "  command: [\"/bin/sleep\", \"1000\"]\n  restartPolicy: Never\n  stopTimeout: 0s\n";

/// What each row needs, made once before the rounds. Err: why the row cannot run.
fn prepare(bench: &mut Bench, op: Op, tarball_mib: usize) -> Result<(), String> {
    let busybox = || {
        if Path::new("/bin/busybox").is_file() {
            Ok(())
        } else {
            Err("/bin/busybox missing (apt-get install busybox-static)".to_owned())
        }
    };
    let tool = |name: &str, package: &str| {
        on_path(name)
            .map(drop)
            .ok_or_else(|| format!("{name} not installed (apt-get install {package})"))
    };
    match op {
        Op::StartBerthBusybox | Op::StartBerthHost => {
            let (name, spec) = if op == Op::StartBerthBusybox {
                busybox()?;
                (BB_START, TRUE_BUSYBOX)
            } else {
                (HOST_START, TRUE_HOST)
            };
            let manifest = bench.manifest(name, spec)?;
            bench
                .run_berth(&["create", "-f", &manifest])?
                .ok("berth create")?;
            Ok(())
        }
        Op::CreateBerthBusybox => {
            busybox()?;
            // The first busybox create builds the shared skeleton: do it untimed.
            let manifest = bench.manifest(BB_CREATE, TRUE_BUSYBOX)?;
            bench
                .run_berth(&["create", "-f", &manifest])?
                .ok("berth create")?;
            bench
                .run_berth(&["destroy", BB_CREATE])?
                .ok("berth destroy")?;
            Ok(())
        }
        Op::CreateBerthHost => bench.manifest(HOST_CREATE, TRUE_HOST).map(drop),
        Op::CycleBerthBusybox => {
            busybox()?;
            bench.manifest(BB_CYCLE, SLEEP_BUSYBOX).map(drop)
        }
        Op::CycleBerthHost => bench.manifest(HOST_CYCLE, SLEEP_HOST).map(drop),
        Op::CreateBerthTarball | Op::TarXf => {
            tool("tar", "tar")?;
            busybox()?;
            if bench.tarball.is_none() {
                let dir = bench.tmp_path().join("tarball");
                std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                bench.tarball = Some(make_tarball(&dir, tarball_mib, &bench.out)?);
            }
            if op == Op::CreateBerthTarball {
                let tarball = bench.tarball.clone().unwrap();
                let spec = format!(
                    "  rootfs: {{tarball: {}}}\n  command: [\"/bin/true\"]\n  restartPolicy: Never\n",
                    tarball.display()
                );
                bench.manifest(TAR_CREATE, &spec)?;
            }
            Ok(())
        }
        Op::StartLxcExecute | Op::StartLxcStart => {
            tool("lxc-execute", "lxc")?;
            tool("lxc-start", "lxc")?;
            busybox()?;
            let name = if op == Op::StartLxcExecute {
                LXC_EXECUTE
            } else {
                LXC_START
            };
            bench.lxc_create(name).map(drop)
        }
        Op::CreateLxc | Op::CycleLxc => {
            for t in ["lxc-create", "lxc-start", "lxc-stop", "lxc-destroy"] {
                tool(t, "lxc")?;
            }
            busybox()
        }
        Op::StartCrun | Op::CrunWrapper | Op::CycleCrun => {
            tool("crun", "crun")?;
            busybox()?;
            if op == Op::CrunWrapper && !bench.crun_wrapped {
                return Err(format!(
                    "not needed: the cgroup layout here is {}, not hybrid",
                    cgroup_layout()
                ));
            }
            if op == Op::CrunWrapper {
                tool("unshare", "util-linux")?;
            }
            Ok(())
        }
        Op::StartRunc | Op::CycleRunc => {
            tool("runc", "runc")?;
            busybox()
        }
        Op::StartUnshare => tool("unshare", "util-linux"),
    }
}

/// One sample of a row.
fn measure(bench: &mut Bench, op: Op) -> Result<Duration, String> {
    match op {
        Op::StartBerthBusybox | Op::StartBerthHost => {
            let name = if op == Op::StartBerthBusybox {
                BB_START
            } else {
                HOST_START
            };
            let start = bench.run_berth(&["start", name])?.ok("berth start")?;
            if !start.stdout.contains(&format!("started {name}")) {
                return Err(format!("berth start printed {:?}", start.stdout.trim()));
            }
            // Untimed: wait until its monitor has seen /bin/true exit. (Not `berth
            // stop`: right after such a start it can fail with "monitor of NAME: no
            // answer: Connection reset by peer", the monitor going away under it.)
            wait_not_running(bench, name)?;
            Ok(start.elapsed)
        }
        Op::CreateBerthBusybox | Op::CreateBerthHost | Op::CreateBerthTarball => {
            let name = match op {
                Op::CreateBerthBusybox => BB_CREATE,
                Op::CreateBerthHost => HOST_CREATE,
                _ => TAR_CREATE,
            };
            let manifest = bench.tmp_path().join(format!("{name}.yaml"));
            let manifest = manifest
                .to_str()
                .ok_or("temp path is not UTF-8")?
                .to_owned();
            let create = bench
                .run_berth(&["create", "-f", &manifest])?
                .ok("berth create")?;
            bench.run_berth(&["destroy", name])?.ok("berth destroy")?;
            Ok(create.elapsed)
        }
        Op::TarXf => {
            let dir = bench.tmp_path().join("untar");
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut tar = Command::new("tar");
            tar.arg("-xf")
                .arg(bench.tarball.as_ref().unwrap())
                .arg("-C")
                .arg(&dir);
            let result = run(&mut tar, TIMEOUT, &bench.out).and_then(|r| r.ok("tar -xf"));
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(result?.elapsed)
        }
        Op::CycleBerthBusybox | Op::CycleBerthHost => {
            let name = if op == Op::CycleBerthBusybox {
                BB_CYCLE
            } else {
                HOST_CYCLE
            };
            let manifest = bench.tmp_path().join(format!("{name}.yaml"));
            let manifest = manifest
                .to_str()
                .ok_or("temp path is not UTF-8")?
                .to_owned();
            let mut total = Duration::ZERO;
            for (args, what) in [
                (vec!["create", "-f", &manifest], "berth create"),
                (vec!["start", name], "berth start"),
                (vec!["stop", name, "--timeout", "0s"], "berth stop"),
                (vec!["destroy", name], "berth destroy"),
            ] {
                match bench.run_berth(&args).and_then(|r| r.ok(what)) {
                    Ok(r) => total += r.elapsed,
                    Err(e) => {
                        let _ = bench.run_berth(&["stop", name, "--timeout", "0s"]);
                        let _ = bench.run_berth(&["destroy", name]);
                        return Err(e);
                    }
                }
            }
            Ok(total)
        }
        Op::StartUnshare => {
            let mut command = Command::new("unshare");
            command.args(["-pfmuin", "--mount-proc", "true"]);
            Ok(run(&mut command, TIMEOUT, &bench.out)?
                .ok("unshare")?
                .elapsed)
        }
        Op::CrunWrapper => {
            let mut command = Command::new("unshare");
            command.args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                HIDE_UNIFIED,
                "true",
            ]);
            Ok(run(&mut command, TIMEOUT, &bench.out)?
                .ok("unshare -m wrapper")?
                .elapsed)
        }
        Op::StartCrun => {
            let bundle = bench.tmp_path().join(format!("bundle-{CRUN_RUN}"));
            if !bundle.is_dir() {
                bench.bundle("crun", CRUN_RUN, &["/bin/true"])?;
                bench.crun_ids.push(CRUN_RUN.to_owned());
            }
            let bundle = bundle.to_str().ok_or("temp path is not UTF-8")?.to_owned();
            let result = run(
                &mut bench.crun(&["run", "-b", &bundle, CRUN_RUN]),
                TIMEOUT,
                &bench.out,
            );
            let _ = run(
                &mut bench.crun(&["delete", "-f", CRUN_RUN]),
                TIMEOUT,
                &bench.out,
            );
            Ok(result?.ok("crun run")?.elapsed)
        }
        Op::StartRunc => {
            let bundle = bench.tmp_path().join(format!("bundle-{RUNC_RUN}"));
            if !bundle.is_dir() {
                bench.bundle("runc", RUNC_RUN, &["/bin/true"])?;
                bench.runc_ids.push(RUNC_RUN.to_owned());
            }
            let bundle = bundle.to_str().ok_or("temp path is not UTF-8")?.to_owned();
            let result = run(
                &mut bench.runc(&["run", "-b", &bundle, RUNC_RUN]),
                TIMEOUT,
                &bench.out,
            );
            let _ = run(
                &mut bench.runc(&["delete", "-f", RUNC_RUN]),
                TIMEOUT,
                &bench.out,
            );
            Ok(result?.ok("runc run")?.elapsed)
        }
        Op::CycleCrun | Op::CycleRunc => {
            let (runtime, id) = if op == Op::CycleCrun {
                ("crun", CRUN_CYCLE)
            } else {
                ("runc", RUNC_CYCLE)
            };
            let bundle = bench.tmp_path().join(format!("bundle-{id}"));
            if !bundle.is_dir() {
                bench.bundle(runtime, id, &["/bin/sleep", "1000"])?;
                if op == Op::CycleCrun {
                    bench.crun_ids.push(id.to_owned());
                } else {
                    bench.runc_ids.push(id.to_owned());
                }
            }
            let bundle = bundle.to_str().ok_or("temp path is not UTF-8")?.to_owned();
            let command = |args: &[&str]| {
                if op == Op::CycleCrun {
                    bench.crun(args)
                } else {
                    bench.runc(args)
                }
            };
            let mut total = Duration::ZERO;
            for (args, what) in [
                (vec!["create", "-b", &bundle, id], "create"),
                (vec!["start", id], "start"),
                (vec!["delete", "-f", id], "delete -f"),
            ] {
                match run(&mut command(&args), TIMEOUT, &bench.out)
                    .and_then(|r| r.ok(&format!("{runtime} {what}")))
                {
                    Ok(r) => total += r.elapsed,
                    Err(e) => {
                        let _ = run(&mut command(&["delete", "-f", id]), TIMEOUT, &bench.out);
                        return Err(e);
                    }
                }
            }
            Ok(total)
        }
        Op::StartLxcExecute => {
            let mut command = bench.lxc("lxc-execute", LXC_EXECUTE, &["--", "/bin/true"]);
            Ok(run(&mut command, TIMEOUT, &bench.out)?
                .ok("lxc-execute")?
                .elapsed)
        }
        Op::StartLxcStart => {
            set_subreaper(true);
            let started = Instant::now();
            let result = run(
                &mut bench.lxc("lxc-start", LXC_START, &["-d", "--", "/bin/true"]),
                TIMEOUT,
                &bench.out,
            )
            .and_then(|r| r.ok("lxc-start -d"))
            .and_then(|_| reap_all(Instant::now() + TIMEOUT));
            let elapsed = started.elapsed();
            if result.is_err() {
                let _ = run(
                    &mut bench.lxc("lxc-stop", LXC_START, &["-k"]),
                    TIMEOUT,
                    &bench.out,
                );
                let _ = reap_all(Instant::now() + TIMEOUT);
            }
            set_subreaper(false);
            result.map(|()| elapsed)
        }
        Op::CreateLxc => {
            let created = bench.lxc_create(LXC_CREATE);
            let destroyed = bench.lxc_destroy(LXC_CREATE);
            let created = created?;
            destroyed?;
            Ok(created)
        }
        Op::CycleLxc => {
            set_subreaper(true);
            let mut total = Duration::ZERO;
            let result = (|| {
                total += bench.lxc_create(LXC_CYCLE)?;
                for (tool, args) in [
                    ("lxc-start", vec!["-d", "--", "/bin/sleep", "1000"]),
                    ("lxc-stop", vec!["-k"]),
                ] {
                    total += run(&mut bench.lxc(tool, LXC_CYCLE, &args), TIMEOUT, &bench.out)?
                        .ok(tool)?
                        .elapsed;
                }
                total += bench.lxc_destroy(LXC_CYCLE)?;
                // LXC's monitor, reparented to us, must be gone too.
                let reaped = Instant::now();
                reap_all(reaped + TIMEOUT)?;
                total += reaped.elapsed();
                Ok::<(), String>(())
            })();
            if result.is_err() {
                let _ = run(
                    &mut bench.lxc("lxc-stop", LXC_CYCLE, &["-k"]),
                    TIMEOUT,
                    &bench.out,
                );
                let _ = bench.lxc_destroy(LXC_CYCLE);
                let _ = reap_all(Instant::now() + TIMEOUT);
            }
            set_subreaper(false);
            result.map(|()| total)
        }
    }
}

/// Poll `berth status NAME` until its phase is no longer Running.
fn wait_not_running(bench: &Bench, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = bench.run_berth(&["status", name])?.ok("berth status")?;
        let json: serde_json::Value = serde_json::from_str(&status.stdout)
            .map_err(|e| format!("berth status {name} printed no JSON: {e}"))?;
        match json["phase"].as_str() {
            Some("Running") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Some("Running") => {
                return Err(format!(
                    "{name} still Running {}s after /bin/true",
                    TIMEOUT.as_secs()
                ));
            }
            Some(_) => return Ok(()),
            None => {
                return Err(format!(
                    "berth status {name}: no phase: {}",
                    status.stdout.trim()
                ));
            }
        }
    }
}

/// Install the peers that are missing, from the distribution (full runs only).
fn install_peers(out: &Path) -> String {
    let mut packages = Vec::new();
    for (tool, package) in [("lxc-execute", "lxc"), ("crun", "crun"), ("runc", "runc")] {
        if on_path(tool).is_none() {
            packages.push(package);
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        packages.push("busybox-static");
    }
    if packages.is_empty() {
        return "all peers were installed already".to_owned();
    }
    println!("installing {}...", packages.join(" "));
    let mut apt = Command::new("apt-get");
    apt.args(["install", "-y"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    match run(&mut apt, INSTALL_TIMEOUT, out).and_then(|r| r.ok("apt-get install")) {
        Ok(_) => format!("installed {}", packages.join(" ")),
        Err(e) => format!("apt-get install {} failed: {e}", packages.join(" ")),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row_median(rows: &[Row], op: Op) -> Option<Duration> {
    let row = rows.iter().find(|r| r.op == op)?;
    if row.times.is_empty() {
        return None;
    }
    let mut sorted = row.times.clone();
    sorted.sort();
    Some(median(&sorted))
}

/// The Markdown table, with crun's net times derived from the wrapper's median.
fn table(rows: &[Row]) -> String {
    let mut text = String::new();
    text.push_str("| section | what is timed | n | min ms | median ms | p90 ms | max ms |\n");
    text.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for row in rows {
        let mut sorted = row.times.clone();
        sorted.sort();
        let (section, label) = (row.op.section(), row.op.label());
        if let Some(why) = &row.unavailable {
            let _ = writeln!(
                text,
                "| {section} | {label} | 0 | | | | cannot run: {why} |"
            );
            continue;
        }
        if sorted.is_empty() {
            let why = row.failed.as_deref().unwrap_or("not measured");
            let _ = writeln!(
                text,
                "| {section} | {label} | 0 | | | | failed: {} |",
                why.replace('|', "/")
            );
            continue;
        }
        let _ = writeln!(
            text,
            "| {section} | {label}{} | {} | {} | {} | {} | {} |",
            row.failed.as_deref().map_or_else(String::new, |e| format!(
                " (then failed: {})",
                e.replace('|', "/")
            )),
            sorted.len(),
            ms(sorted[0]),
            ms(median(&sorted)),
            ms(percentile(&sorted, 90.0)),
            ms(sorted[sorted.len() - 1]),
        );
    }
    if let Some(wrapper) = row_median(rows, Op::CrunWrapper) {
        for (op, times, what) in [
            (Op::StartCrun, 1, "`crun run`, net of the wrapper"),
            (Op::CycleCrun, 3, "crun cycle, net of 3 wrappers"),
        ] {
            if let Some(m) = row_median(rows, op) {
                let net = m.as_secs_f64() - wrapper.as_secs_f64() * f64::from(times);
                let _ = writeln!(
                    text,
                    "| {} | {what} (median − {times} × wrapper median) | | | {:.2} | | |",
                    op.section(),
                    net * 1000.0
                );
            }
        }
    }
    text
}

const MEANING: &str = "\
start: the container's command is `/bin/true` everywhere. berth's row is spawn → exit of \
`berth start`, which returns once the command has been exec'd (the container's exit is \
not waited for; the bench then polls `berth status`, untimed, until it is no longer Running). The peers cannot return at exec, so \
theirs run until the container is gone: `lxc-execute`, `crun run`, `runc run` and \
`unshare` until they exit; `lxc-start -d` until it and LXC's monitor it leaves behind \
have exited (the bench reaps them as their subreaper). A peer's start is thus an upper \
bound of its created → exec'd. create: spawn → exit of the create command (berth busybox \
after the shared skeleton exists; the destroy is untimed); `tar -xf` into an empty \
directory. cycle: the commands' spawn → exit times added, the container running \
`sleep 1000` (stop kills it); LXC's also waits for its monitor to exit. crun runs inside \
the `unshare -m` wrapper on a hybrid cgroup host (crun 1.8 refuses hybrid); the wrapper \
alone is a row, and the net rows subtract its median.";

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench peers: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a quick smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = if full {
        match std::env::var("BERTH_BENCH_ROUNDS") {
            Ok(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("bench peers: BERTH_BENCH_ROUNDS={n}: expected a number above 0");
                    std::process::exit(2);
                }
            },
            Err(_) => ROUNDS,
        }
    } else {
        SMOKE_ROUNDS
    };
    let tarball_mib = if full { TARBALL_MIB } else { SMOKE_TARBALL_MIB };

    common::catch_interrupts();
    let mut bench = Bench::new();
    let install = if full {
        install_peers(&bench.out)
    } else {
        "smoke run: nothing installed; missing peers are skipped".to_owned()
    };
    bench.crun_wrapped = cgroup_layout() == "hybrid" && Path::new(UNIFIED).is_dir();
    if let Err(e) = bench.make_rootfs() {
        eprintln!("bench peers: the bundles' rootfs: {e}");
    }
    let load_before = load_average();
    println!(
        "berth peers benchmark: {rounds} interleaved rounds; {install}; cgroups {}; lxcbr0 {}; \
         state {}, cgroup parent {}, lxcpath {}",
        cgroup_layout(),
        if lxcbr0_exists() { "exists" } else { "absent" },
        bench.state_dir.display(),
        bench.cgroup_parent,
        bench.lxcpath.display()
    );

    let mut rows: Vec<Row> = OPS
        .iter()
        .map(|&op| Row {
            op,
            unavailable: None,
            times: Vec::new(),
            failed: None,
        })
        .collect();
    for row in &mut rows {
        if check_interrupted().is_err() {
            break;
        }
        if let Err(why) = prepare(&mut bench, row.op, tarball_mib) {
            println!("  {}: cannot run: {why}", row.op.label());
            row.unavailable = Some(why);
        }
    }

    let started = Instant::now();
    'rounds: for round in 0..rounds {
        let n = rows.len();
        for k in 0..n {
            if check_interrupted().is_err() {
                break 'rounds;
            }
            let row = &mut rows[(k + round) % n];
            if row.unavailable.is_some() || row.failed.is_some() {
                continue;
            }
            // Untimed: no row pays for the writes an earlier one left dirty (the
            // tarball rows write 50 MiB a round, which a create's fsync would
            // otherwise wait for while a peer that never syncs would not).
            nix::unistd::sync();
            match measure(&mut bench, row.op) {
                Ok(elapsed) => row.times.push(elapsed),
                Err(e) => {
                    println!("  {}: failed: {e}", row.op.label());
                    row.failed = Some(e);
                }
            }
        }
        if full {
            print!(
                "  round {}/{rounds} done, {:.0} s\r",
                round + 1,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }
    drop(bench);
    let load_after = load_average();

    let table = table(&rows);
    println!("\n\n{MEANING}\n\n{table}");
    println!("load average before {load_before}, after {load_after}");

    if full && !INTERRUPTED.load(Ordering::SeqCst) {
        let results = write_results(rounds, &install, &load_before, &load_after, &table);
        match results {
            Ok(path) => println!("written to {}", path.display()),
            Err(e) => eprintln!("bench peers: {e}"),
        }
    }

    if INTERRUPTED.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    let berth_failed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.op.is_berth() && r.failed.is_some())
        .collect();
    if !berth_failed.is_empty() {
        for row in berth_failed {
            eprintln!(
                "bench peers: FAILED: {}: {}",
                row.op.label(),
                row.failed.as_deref().unwrap_or("")
            );
        }
        std::process::exit(1);
    }
}

/// `tests/bench/RESULTS.md`: the date, the machine, the peers' versions and the table.
fn write_results(
    rounds: usize,
    install: &str,
    load_before: &str,
    load_after: &str,
    table: &str,
) -> Result<PathBuf, String> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = manifest_dir
        .parent()
        .unwrap_or(manifest_dir)
        .join("tests/bench/RESULTS.md");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|e| format!("unknown ({e})"), |k| k.trim().to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let berth = first_line(berth.to_str().unwrap_or("berth"), &["--version"]);
    let mut text = String::new();
    let _ = writeln!(text, "# berth beside its peers\n");
    let _ = writeln!(
        text,
        "Written by `cargo bench -p berth-operator --bench peers` ([`peers.rs`](peers.rs)); \
         do not edit by hand.\n"
    );
    let _ = writeln!(
        text,
        "- date: {}",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        text,
        "- machine: {cores} cores ({cpu}), kernel {kernel}, cgroups {}",
        cgroup_layout()
    );
    let _ = writeln!(
        text,
        "- load average: {load_before} before, {load_after} after"
    );
    let _ = writeln!(
        text,
        "- rounds: {rounds}, interleaved (every row once per round, the order rotated by one row each round, an untimed sync before each)"
    );
    let _ = writeln!(
        text,
        "- set-up: {install}; lxcbr0 {}",
        if lxcbr0_exists() {
            "exists"
        } else {
            "does not exist (LXC runs with lxc.net.0.type = empty)"
        }
    );
    let _ = writeln!(text, "- berth: {berth}");
    let _ = writeln!(text, "- LXC: {}", first_line("lxc-start", &["--version"]));
    let _ = writeln!(text, "- crun: {}", first_line("crun", &["--version"]));
    let _ = writeln!(text, "- runc: {}", first_line("runc", &["--version"]));
    let _ = writeln!(
        text,
        "- busybox: {}",
        first_line("/bin/busybox", &["--help"])
    );
    let _ = writeln!(
        text,
        "- util-linux: {}",
        first_line("unshare", &["--version"])
    );
    let _ = writeln!(text, "\n{MEANING}\n\n{table}");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
