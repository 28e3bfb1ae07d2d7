//! Start, stop, reboot and status: `berth start` launches a monitor and waits for
//! its report; the others talk to the monitor over `monitor.sock`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Runtime;
use crate::error::{Error, Result};
use crate::monitor::{CGROUP_PARENT_ENV, REPORT_FD_ENV, TITLE};
use crate::status::{Phase, Status};
use crate::sync::{self, Report, Request};
use crate::trace::{self, StartTrace};

/// The fd number the report pipe gets in the monitor.
const REPORT_FD: i32 = 3;

impl Runtime {
    /// Start a created container: launch its monitor and wait until the command
    /// was exec'd (returns init's host pid) or the container's own setup error.
    pub fn start(&self, name: &str) -> Result<i32> {
        self.start_with(name, None)
    }

    /// Start as `start` does, timing each step of the starter, the monitor and
    /// the container's init (`berth start --trace`).
    pub fn start_traced(&self, name: &str) -> Result<(i32, StartTrace)> {
        let dir = self.dir(name)?;
        // Made afresh by the starter, so the monitor (which only appends to an
        // existing file) never writes where it should not, nor to an old trace.
        let path = dir.trace();
        if dir.path.is_dir() {
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(crate::error::io("create", &path))?;
        }
        let mut starter = trace::Starter::default();
        let started = self.start_with(name, Some(&mut starter));
        let file = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        let pid = started?;
        let file = file.map_err(crate::error::io("read", &path))?;
        Ok((pid, starter.finish(&file)))
    }

    fn start_with(&self, name: &str, mut trace: Option<&mut trace::Starter>) -> Result<i32> {
        let dir = self.dir(name)?;
        let mut step = |what: &str, f: &mut dyn FnMut() -> Result<()>| match trace.as_deref_mut() {
            Some(starter) => starter.step(what, f),
            None => f(),
        };
        step("check that it is created and not running", &mut || {
            self.check_startable(name, &dir)
        })?;
        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(crate::error::errno("create a pipe for", dir.path.clone()))?;
        let write_fd = report_write.as_raw_fd();
        // The monitor is this binary re-executed (never a fork of a possibly
        // multi-threaded caller), from a sealed copy: the container's init is
        // cloned from it and must give the container no handle on the host's file.
        let mut binary = None;
        step(
            "seal berth's binary (read-only overlay, else memfd copy)",
            &mut || {
                binary = Some(crate::sealed::SealedBinary::new(&self.state_dir)?);
                Ok(())
            },
        )?;
        let binary = binary.ok_or_else(|| Error::Start("no sealed copy of berth".to_owned()))?;
        let mut command = Command::new(binary.path());
        command
            .arg0(format!("{TITLE}{} {name}", self.state_dir.display()))
            .env_clear()
            .env(REPORT_FD_ENV, REPORT_FD.to_string())
            .env(CGROUP_PARENT_ENV, &self.cgroup_parent)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 is async-signal-safe; it also clears close-on-exec on fd 3.
        unsafe {
            command.pre_exec(move || {
                if nix::libc::dup2(write_fd, REPORT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if trace.is_some() {
            // The monitor's first step, its re-exec, runs from here to its main().
            command.env(trace::ENV, trace::now().to_string());
        }
        let mut first = command
            .spawn()
            .map_err(crate::error::io("run the monitor", binary.path()))?;
        drop(binary);
        drop(report_write);
        // Read to EOF: the monitor holds its end until it has reported and, after a
        // failed start, until it has cleaned up and exited.
        let mut bytes = Vec::new();
        let read = std::io::Read::read_to_end(&mut std::fs::File::from(report_read), &mut bytes);
        let report = read.and_then(|_| sync::receive::<Report>(bytes.as_slice()));
        let _ = match trace {
            Some(starter) => starter.step("reap the first monitor process", || first.wait()),
            None => first.wait(),
        };
        match report {
            Ok(Some(Report::Started { init_pid })) => Ok(init_pid),
            Ok(Some(Report::Failed {
                message,
                reason: Some(sync::FailReason::PortInUse),
            })) => Err(Error::PortInUse(message)),
            Ok(Some(Report::Failed { message, .. })) => Err(Error::Start(message)),
            Ok(None) | Err(_) => Err(Error::Start(format!(
                "cannot start {name}: its monitor exited before reporting"
            ))),
        }
    }

    /// Created, and not running (what a killed monitor left is killed first).
    fn check_startable(&self, name: &str, dir: &crate::layout::ContainerDir) -> Result<()> {
        if !dir.config().is_file() {
            return Err(Error::NotFound(name.to_owned()));
        }
        if self.connect(name)?.is_some() {
            return Err(Error::Running(name.to_owned()));
        }
        // The bridge of this state dir: recorded by the first bridged start, the
        // flags of every later one checked against it; the monitor reads it there.
        if crate::config::SavedConfig::load(&dir.config())?
            .container
            .spec
            .network
            == berth_manifests::NetworkMode::Bridge
        {
            crate::network::settings(
                &self.state_dir,
                self.bridge.as_deref(),
                self.subnet.as_deref(),
                self.subnet6.as_deref(),
            )
            .map_err(|e| Error::Start(format!("cannot start {name}: {e}")))?;
        }
        // Never two inits of one name: what a killed monitor left dies first.
        if let Some(orphan) = self.orphan(name)? {
            self.kill_orphan(name, orphan)?;
        }
        Ok(())
    }

    /// Stop a running container: its stop signal, then SIGKILL after `timeout`
    /// (default: the manifest's `stopTimeout`). Returns once it is gone and its
    /// cgroups are removed, with its final status; `None` if it was not running.
    /// An orphan (its monitor gone) is killed at once: its last exit then says
    /// `OrphanKilled`.
    pub fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<Option<Status>> {
        let Some(stream) = self.connect(name)? else {
            return match self.orphan(name)? {
                Some(orphan) => self.kill_orphan(name, orphan).map(Some),
                None => Ok(None),
            };
        };
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let wait = timeout.unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(30);
        let asked = self.ask(name, &stream, &Request::Stop { timeout_ms }, Some(wait));
        wait_for_exit(&stream);
        match asked {
            Ok(status) => Ok(Some(status)),
            // The container ended by itself as the request went in: its monitor
            // exited without answering. Then it is as if it had not been running
            // (or, had the monitor died, the orphan dies now).
            Err(e) => match self.connect(name)? {
                None => match self.orphan(name)? {
                    Some(orphan) => self.kill_orphan(name, orphan).map(Some),
                    None => Ok(None),
                },
                Some(_) => Err(e),
            },
        }
    }

    /// Restart a running container through its monitor, as a reboot from inside.
    pub fn reboot(&self, name: &str) -> Result<()> {
        let Some(stream) = self.connect(name)? else {
            if self.orphan(name)?.is_some() {
                return Err(Error::Monitor {
                    name: name.to_owned(),
                    message:
                        "it is gone; `berth stop` kills what is left, `berth start` starts it anew"
                            .to_owned(),
                });
            }
            return Err(Error::NotRunning(name.to_owned()));
        };
        self.ask(
            name,
            &stream,
            &Request::Reboot,
            Some(Duration::from_secs(10)),
        )
        .map(drop)
    }

    /// Wait until a running container stops for good (not on reboot).
    pub fn wait(&self, name: &str) -> Result<Option<Status>> {
        let Some(stream) = self.connect(name)? else {
            // Perhaps a monitor still cleaning up: that too ends soon.
            self.wait_for_monitor_exit(name);
            return self.status(name);
        };
        let status = self.ask(name, &stream, &Request::Wait, None)?;
        wait_for_exit(&stream);
        Ok(Some(status))
    }

    /// Is the monitor named in `status` still alive (it may be past closing its
    /// socket, finishing its clean-up)? Its pid must carry its title, so a reused
    /// pid is not taken for it.
    pub(crate) fn monitor_alive(&self, name: &str, status: &Status) -> bool {
        let Some(pid) = status.monitor_pid else {
            return false;
        };
        let title = format!("{TITLE}{} {name}", self.state_dir.display());
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline.strip_suffix(b"\0").unwrap_or(&cmdline) == title.as_bytes()
        })
    }

    fn wait_for_monitor_exit(&self, name: &str) {
        let Ok(dir) = self.dir(name) else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match Status::load(&dir.status()) {
                Ok(Some(status)) if self.monitor_alive(name, &status) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return,
            }
        }
    }

    /// The live status from the monitor, else the last one it wrote; `Orphaned`
    /// if its monitor is gone but its processes still run.
    pub fn status(&self, name: &str) -> Result<Option<Status>> {
        if let Some(stream) = self.connect(name)?
            && let Ok(status) = self.ask(
                name,
                &stream,
                &Request::State,
                Some(Duration::from_secs(10)),
            )
        {
            return Ok(Some(status));
        }
        // No monitor, or one that exited while we asked: its last word is on disk.
        let dir = self.dir(name)?;
        if !dir.path.is_dir() {
            return Err(Error::NotFound(name.to_owned()));
        }
        if let Some(orphan) = self.orphan(name)? {
            return Ok(Some(self.orphan_status(name, &orphan)));
        }
        let mut status = match Status::load(&dir.status()) {
            Ok(status) => status,
            // What a power cut may leave of a status written without fsync: as if
            // none had been written.
            Err(Error::Config { path, message }) => {
                tracing::warn!(container = name, "ignoring {}: {message}", path.display());
                None
            }
            Err(e) => return Err(e),
        };
        // Written by a monitor that is gone without finishing (killed, power cut).
        if let Some(s) = &mut status
            && s.monitor_pid.is_some()
            && !self.monitor_alive(name, s)
        {
            s.phase = Phase::Failed;
            s.monitor_pid = None;
            s.error
                .get_or_insert_with(|| "its monitor is gone".to_owned());
        }
        Ok(status)
    }

    /// A connection to the container's monitor, if one is listening.
    pub(crate) fn connect(&self, name: &str) -> Result<Option<UnixStream>> {
        let socket = self.dir(name)?.monitor_socket();
        match crate::socket::connect(&socket) {
            Ok(stream) => Ok(Some(stream)),
            Err(_) => Ok(None),
        }
    }

    fn ask(
        &self,
        name: &str,
        stream: &UnixStream,
        request: &Request,
        wait: Option<Duration>,
    ) -> Result<Status> {
        let failed = |message: String| Error::Monitor {
            name: name.to_owned(),
            message,
        };
        stream
            .set_read_timeout(wait)
            .map_err(|e| failed(e.to_string()))?;
        sync::send(stream, request).map_err(|e| failed(format!("cannot send: {e}")))?;
        match sync::receive::<Status>(stream) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(failed("closed the connection without answering".to_owned())),
            Err(e) => Err(failed(format!("no answer: {e}"))),
        }
    }
}

/// The monitor closes its end only by exiting: wait for that (bounded).
fn wait_for_exit(stream: &UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut &*stream, &mut rest);
}

impl Runtime {
    /// Do processes of this container run: served by a monitor, or orphaned
    /// (`status` then says `Orphaned`)?
    pub fn is_running(&self, name: &str) -> Result<bool> {
        Ok(self.monitor_serves(name)? || self.orphan(name)?.is_some())
    }

    /// Does a complete container (a config, no create under way) exist?
    pub fn exists(&self, name: &str) -> Result<bool> {
        let dir = self.dir(name)?;
        Ok(dir.config().is_file() && !dir.partial().exists())
    }

    /// Replace the spec of a stopped container whose rootfs source is unchanged, so
    /// that the next start runs the new command, env, limits...
    pub fn reconfigure(&self, container: &berth_manifests::Container) -> Result<()> {
        self.stage_config(container)?.apply(self)
    }

    /// Write a new spec for a container beside its config, synced but not yet in
    /// place, so that what can fail (a full disk) fails before a running container
    /// is stopped for it. [`StagedConfig::apply`] puts it in place once it is stopped.
    pub fn stage_config(&self, container: &berth_manifests::Container) -> Result<StagedConfig> {
        let dir = self.dir(&container.name)?;
        let mut config = crate::config::SavedConfig::load(&dir.config())?;
        if !config
            .container
            .spec
            .rootfs
            .same_source(&container.spec.rootfs)
        {
            return Err(Error::Config {
                path: dir.config(),
                message: "the rootfs source changed: destroy and create it instead".to_owned(),
            });
        }
        config.container = container.clone();
        Ok(StagedConfig {
            name: container.name.clone(),
            file: config.stage(&dir.config())?,
        })
    }
}

/// A new spec written and synced, waiting for its container to stop.
#[derive(Debug)]
pub struct StagedConfig {
    name: String,
    file: crate::config::Staged,
}

impl StagedConfig {
    /// Put the new spec in place: a rename, which a full disk does not fail.
    pub fn apply(self, runtime: &Runtime) -> Result<()> {
        if runtime.is_running(&self.name)? {
            return Err(Error::Running(self.name));
        }
        self.file.commit()
    }
}
