//! What the benchmarks share: Ctrl-C handling and running one command with a
//! watchdog and a clock. Included by each bench with `#[path]`.

#![allow(dead_code)] // each bench uses its own part

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::Pid;

/// Set by SIGINT/SIGTERM; the loops stop at the next command and the guard cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".to_owned())
    } else {
        Ok(())
    }
}

/// SIGINT and SIGTERM set `INTERRUPTED` instead of ending the bench, so that its
/// guard can clean up.
pub fn catch_interrupts() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.unwrap();
    }
}

/// One finished command.
#[derive(Debug)]
pub struct Run {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self, what: &str) -> Result<Run, String> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(format!("{what}: {}", self.first_error_line()))
        }
    }

    pub fn first_error_line(&self) -> String {
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map_or_else(|| format!("exited with {}", self.status), str::to_owned)
    }
}

/// Block until `pid` (a child of ours) has exited, without reaping it, so its pid
/// cannot be reused while the watchdog may still look at it.
fn wait_exited(pid: u32) -> std::io::Result<()> {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, which outlives the call.
        let result =
            unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Run a command (in its own process group, so that a Ctrl-C meant for the bench
/// does not cut its cleanup short) with stdin from /dev/null and its output in
/// files under `out`, timed from just before the spawn to its exit; SIGKILLed (by
/// pid) after `timeout`.
pub fn run(command: &mut Command, timeout: Duration, out: &Path) -> Result<Run, String> {
    let what = format!("{command:?}");
    let stdout_path = out.join("stdout");
    let stderr_path = out.join("stderr");
    let stdout = File::create(&stdout_path).map_err(|e| format!("{}: {e}", out.display()))?;
    let stderr = File::create(&stderr_path).map_err(|e| format!("{}: {e}", out.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);

    // The watchdog exists before the clock starts; it gets the pid through a channel.
    let exited = Arc::new(Mutex::new(false));
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let exited = Arc::clone(&exited);
        std::thread::spawn(move || {
            let Ok(pid) = pid_rx.recv() else {
                return false;
            };
            if done_rx.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                return false;
            }
            // Not yet reaped (the main thread reaps only after setting `exited`),
            // so `pid` is still our child.
            let exited = exited.lock().unwrap();
            if *exited {
                return false;
            }
            let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
            true
        })
    };

    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            drop(pid_tx);
            let _ = watchdog.join();
            return Err(format!("cannot run {what}: {e}"));
        }
    };
    pid_tx.send(child.id()).unwrap();
    let waited = wait_exited(child.id());
    let elapsed = started.elapsed();
    *exited.lock().unwrap() = true;
    let _ = done_tx.send(());
    let status = child.wait().map_err(|e| format!("wait for {what}: {e}"))?;
    waited.map_err(|e| format!("wait for {what}: {e}"))?;
    let killed = watchdog.join().unwrap_or(false);

    let read = |path: &Path| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    };
    let run = Run {
        elapsed,
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
    };
    if killed {
        return Err(format!(
            "{what}: killed after {}s: {}",
            timeout.as_secs(),
            run.first_error_line()
        ));
    }
    Ok(run)
}

/// Never delete through a mount point left inside a temp dir, nor what a failed
/// destroy left: keep the dir (taking it out of `tmp`) and say where it is.
pub fn keep_if_unsafe_to_delete(tmp: &mut Option<tempfile::TempDir>, clean: bool) {
    let Some(path) = tmp.as_ref().map(|t| t.path().to_owned()) else {
        return;
    };
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| std::path::Path::new(point).starts_with(&path));
    if (!clean || mounted)
        && let Some(tmp) = tmp.take()
    {
        let kept = tmp.keep();
        eprintln!(
            "bench cleanup: left {} in place (a destroy failed or a mount is inside)",
            kept.display()
        );
    }
}
