//! An orphan: a container whose monitor is gone (kill -9, the OOM killer) while
//! its processes live on in its payload cgroup. The payload cgroup, and the init
//! pid with its start time in `status`, are the truth of "running", not the
//! monitor's socket.
//!
//! berth does not adopt an orphan: its console pipe died with the monitor, and
//! its exit status can never be read (the init is nobody's child of ours). It is
//! reported as `Orphaned` until `stop` kills it, or `start` kills it and starts
//! the container anew, so that a name never has two inits.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

use crate::Runtime;
use crate::cgroup::Cgroups;
use crate::error::{Error, Result};
use crate::status::{ExitReason, LastExit, Phase, Status, now, process_start_time};

/// The processes of a container that no monitor looks after.
#[derive(Debug)]
pub(crate) struct Orphan {
    /// The last status its monitor wrote, if it wrote one.
    status: Option<Status>,
    /// Where its processes are; none on a host without cgroups.
    cgroups: Option<Cgroups>,
    /// The live processes: the payload cgroup's, and the recorded init.
    pids: Vec<i32>,
    /// The recorded init, if that very process (same start time) lives.
    init: Option<i32>,
}

impl Runtime {
    /// Does a monitor serve this container (or finish its clean-up)?
    pub(crate) fn monitor_serves(&self, name: &str) -> Result<bool> {
        if self.connect(name)?.is_some() {
            return Ok(true);
        }
        let status = Status::load(&self.dir(name)?.status()).ok().flatten();
        Ok(status.is_some_and(|s| self.monitor_alive(name, &s)))
    }

    /// The container's orphan: processes in its payload cgroup, or its recorded
    /// init, alive while no monitor serves it.
    pub(crate) fn orphan(&self, name: &str) -> Result<Option<Orphan>> {
        if self.monitor_serves(name)? {
            return Ok(None);
        }
        let status = Status::load(&self.dir(name)?.status()).ok().flatten();
        // A monitor's last write once it has killed the payload and removed its
        // cgroups: nothing of it can be left, so no cgroup need be looked for
        // (a third of a start's checks). A monitor killed earlier left its pid.
        if status.as_ref().is_some_and(|s| {
            matches!(s.phase, Phase::Stopped | Phase::Failed)
                && s.monitor_pid.is_none()
                && s.cgroups.is_none()
                && s.init_pid.is_none()
        }) {
            return Ok(None);
        }
        let cgroups = self.cgroups_of(name, status.as_ref());
        let mut pids = match &cgroups {
            Some(cgroups) => cgroups.payload_pids()?,
            None => Vec::new(),
        };
        let init = status.as_ref().and_then(recorded_init);
        if let Some(init) = init
            && !pids.contains(&init)
        {
            pids.push(init);
        }
        // A monitor that came up meanwhile owns what it put there.
        if pids.is_empty() || self.monitor_serves(name)? {
            return Ok(None);
        }
        Ok(Some(Orphan {
            status,
            cgroups,
            pids,
            init,
        }))
    }

    /// The status of an orphan: `Orphaned`, with its init if that still lives.
    pub(crate) fn orphan_status(&self, name: &str, orphan: &Orphan) -> Status {
        let mut status = self.last_status(name, orphan);
        status.phase = Phase::Orphaned;
        status.monitor_pid = None;
        if orphan.init.is_none() {
            status.init_pid = None;
            status.init_start_time = None;
        }
        status.cgroups.clone_from(&orphan.cgroups);
        status.error = Some(format!(
            "its monitor is gone; {} of its processes still run (berth stop kills them)",
            orphan.pids.len()
        ));
        status
    }

    /// SIGKILL every process of an orphan (its init first: its PID namespace goes
    /// with it), wait until its payload cgroup is empty, remove its cgroups, and
    /// record the end as `OrphanKilled`. Returns that final status.
    pub(crate) fn kill_orphan(&self, name: &str, orphan: Orphan) -> Result<Status> {
        let killed = |message: String| Error::Monitor {
            name: name.to_owned(),
            message: format!(
                "its monitor is gone, and its processes could not be killed: {message}"
            ),
        };
        if let Some(init) = orphan.init {
            kill_init(init, orphan.status.as_ref().and_then(|s| s.init_start_time))
                .map_err(|e| killed(format!("init {init}: {e}")))?;
        }
        if let Some(cgroups) = &orphan.cgroups {
            cgroups.kill_payload()?;
            cgroups.remove()?;
        }
        tracing::warn!(
            container = name,
            pids = ?orphan.pids,
            "killed the processes of a container whose monitor was gone"
        );
        let dir = self.dir(name)?;
        let _ = std::fs::remove_file(dir.monitor_socket());
        let mut status = self.last_status(name, &orphan);
        status.phase = Phase::Stopped;
        status.monitor_pid = None;
        status.init_pid = None;
        status.init_start_time = None;
        status.cgroups = None;
        status.error = None;
        status.last_exit = Some(LastExit {
            reason: ExitReason::OrphanKilled,
            code: None,
            signal: Some(Signal::SIGKILL.as_str().to_owned()),
            at: now(),
        });
        status.save(&dir.status())?;
        Ok(status)
    }

    /// Where the container's cgroups are: as its monitor recorded them, else
    /// where a monitor of this runtime would put them (a monitor killed before
    /// it wrote `status`).
    fn cgroups_of(&self, name: &str, status: Option<&Status>) -> Option<Cgroups> {
        if let Some(cgroups) = status.and_then(|s| s.cgroups.clone()) {
            return Some(cgroups);
        }
        let resources = self
            .config(name)
            .map(|c| c.container.spec.resources)
            .unwrap_or_default();
        Cgroups::new(&self.cgroup_parent, name, &resources).ok()
    }

    /// The orphan's last recorded status, or a fresh one from its config.
    fn last_status(&self, name: &str, orphan: &Orphan) -> Status {
        orphan.status.clone().unwrap_or_else(|| Status {
            phase: Phase::Orphaned,
            monitor_pid: None,
            init_pid: None,
            init_start_time: None,
            started_at: None,
            reboots: 0,
            last_exit: None,
            error: None,
            hash: self
                .config(name)
                .map(|c| c.container.hash)
                .unwrap_or_default(),
            cgroups: None,
            health: None,
        })
    }
}

/// The init pid recorded in `status`, if that very process still runs: same pid
/// and same start time, so a reused pid is never taken for it.
fn recorded_init(status: &Status) -> Option<i32> {
    let (pid, start) = (status.init_pid?, status.init_start_time?);
    (process_start_time(pid) == Some(start)).then_some(pid)
}

/// SIGKILL the init through a pidfd, checked against its start time after the
/// pidfd is open (from then on the pid cannot be reused under us).
fn kill_init(pid: i32, start_time: Option<u64>) -> std::io::Result<()> {
    // SAFETY: pidfd_open with a pid and no flags returns a new fd or -1.
    let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        // Gone already: nothing to kill.
        return if e.raw_os_error() == Some(nix::libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        };
    }
    // SAFETY: the syscall just returned this fd, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    if start_time.is_none() || process_start_time(pid) != start_time {
        return Ok(()); // another process now has the pid
    }
    match crate::monitor::pidfd_signal(&pidfd, Signal::SIGKILL) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
        other => other,
    }
}
