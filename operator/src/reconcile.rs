//! One reconcile: read what is desired and what is, take one step toward the
//! former, record it. Level-triggered and idempotent: it may run any number of
//! times for a name, after a watch event, a resync, a monitor event or a requeue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_manifests::{Container, RestartPolicy, RunState};
use berth_runtime::{ExitReason, Origin, Phase, Runtime, Status};
use berth_state::{Condition, Record, Store};

use crate::desired::DesiredSet;
use crate::scheduler::{Action, Handle};

/// The kubelet's crash-loop back-off: doubling to 5 min, reset after 10 min up.
const BACKOFF_CAP: Duration = Duration::from_secs(300);
const BACKOFF_RESET_AFTER: u64 = 600;

#[derive(Clone)]
pub struct Context {
    pub runtime: Runtime,
    pub store: Store,
    pub desired: Arc<Mutex<DesiredSet>>,
    pub scheduler: Handle,
    /// Names with a task waiting on their monitor.
    pub watched: Arc<Mutex<HashSet<String>>>,
    /// First crash-loop delay (10 s like the kubelet; tests shorten it).
    pub backoff_base: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] berth_runtime::Error),
    #[error("state: {0}")]
    State(#[from] berth_state::Error),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a blocking runtime call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, berth_runtime::Error> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Context {
    pub fn event(&self, name: &str, reason: &str, message: &str) {
        tracing::info!(container = name, reason, "{message}");
        if let Err(e) = self.store.record_event(name, reason, message) {
            tracing::warn!(container = name, "cannot record event: {e}");
        }
    }

    fn save(&self, record: &mut Record, phase: &str, message: Option<String>) -> Result<(), Error> {
        record.phase = phase.to_owned();
        record.message = message;
        self.store.put(record)?;
        Ok(())
    }

    /// Follow a running container's monitor: its exit becomes a reconcile.
    fn watch(&self, name: &str) {
        let Ok(mut watched) = self.watched.lock() else {
            return;
        };
        if !watched.insert(name.to_owned()) {
            return;
        }
        let Ok(socket) = self.runtime.dir(name).map(|d| d.monitor_socket()) else {
            return;
        };
        let (scheduler, set, name) = (
            self.scheduler.clone(),
            self.watched.clone(),
            name.to_owned(),
        );
        // An async wait, not a blocking thread per container: a device may run
        // more containers than the blocking pool has threads.
        tokio::spawn(async move {
            let _ = wait_for_monitor(&socket).await;
            if let Ok(mut set) = set.lock() {
                set.remove(&name);
            }
            scheduler.schedule(&name);
        });
    }
}

/// Ask the monitor to answer when the container stops for good, and wait for the
/// connection to close: the monitor closes it by exiting.
async fn wait_for_monitor(socket: &std::path::Path) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = berth_runtime::SocketPath::new(socket)?;
    let mut stream = tokio::net::UnixStream::connect(socket.as_path()).await?;
    stream.write_all(b"{\"op\":\"wait\"}\n").await?;
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).await?;
    Ok(())
}

pub async fn reconcile(ctx: Context, name: String) -> Result<Action, Error> {
    let desired = ctx
        .desired
        .lock()
        .ok()
        .and_then(|set| set.get(&name).cloned());
    let mut record = ctx.store.get(&name)?.unwrap_or_else(|| Record::new(&name));
    let runtime = ctx.runtime.clone();
    let n = name.clone();
    let (exists, running, mut config, status) = blocking(move || {
        let exists = runtime.exists(&n)?;
        let running = runtime.is_running(&n)?;
        let config = if exists {
            Some(runtime.config(&n)?)
        } else {
            None
        };
        let status = if exists { runtime.status(&n)? } else { None };
        Ok((exists, running, config, status))
    })
    .await?;

    let Some(desired) = desired else {
        // Not desired: prune what the daemon made from a manifest, nothing else.
        let managed = config
            .as_ref()
            .and_then(|c| c.header.as_ref())
            .is_some_and(|h| h.origin == Origin::Manifest);
        if exists && managed {
            if running {
                ctx.save(
                    &mut record,
                    "Stopping",
                    Some("its manifest was removed".to_owned()),
                )?;
                stop(&ctx, &name).await?;
            }
            let runtime = ctx.runtime.clone();
            let n = name.clone();
            blocking(move || runtime.destroy(&n)).await?;
            ctx.event(&name, "Removed", "manifest removed: stopped and destroyed");
        }
        if record.managed || managed {
            ctx.store.remove(&name)?;
        }
        return Ok(Action::AwaitChange);
    };
    let container = desired.container;
    record.managed = true;
    record.source = Some(berth_state::SourceRef {
        file: container.source.file.clone(),
        document: container.source.document,
    });
    record.conditions = desired
        .problems
        .iter()
        .map(|message| Condition {
            kind: "InvalidManifest".to_owned(),
            message: message.clone(),
            since: record
                .conditions
                .iter()
                .find(|c| &c.message == message)
                .map_or(now(), |c| c.since),
        })
        .collect();

    // A container made by hand is not the daemon's to take over.
    if let Some(header) = config.as_ref().and_then(|c| c.header.as_ref())
        && header.origin == Origin::Cli
    {
        let message = format!(
            "a container {name} created by hand already exists; destroy it to let the manifest manage it"
        );
        ctx.save(&mut record, "Failed", Some(message))?;
        return Ok(Action::AwaitChange);
    }

    if !exists {
        ctx.save(&mut record, "Creating", None)?;
        let runtime = ctx.runtime.clone();
        let c = container.clone();
        // A create of this name that died half way is cleaned up by create itself.
        let created = blocking(move || runtime.create(&c, Origin::Manifest)).await?;
        record.spec_hash = Some(container.hash.clone());
        record.completed = false;
        record.restarts = 0;
        ctx.event(&name, "Created", "created from its manifest");
        ctx.save(&mut record, "Created", None)?;
        // Go straight on to starting it: queued behind every other create of a
        // burst, the first container of a hundred would run only after the last
        // was created.
        config = Some(created);
    }

    // The spec changed: run-time fields restart it; a new rootfs source recreates it.
    if let Some(config) = &config
        && config.container.hash != container.hash
    {
        if running {
            ctx.save(&mut record, "Stopping", Some("its spec changed".to_owned()))?;
            stop(&ctx, &name).await?;
        }
        let runtime = ctx.runtime.clone();
        let c = container.clone();
        if config.container.spec.rootfs == container.spec.rootfs {
            blocking(move || runtime.reconfigure(&c)).await?;
            ctx.event(
                &name,
                "Updated",
                "spec changed: restarting with the new one",
            );
        } else {
            blocking(move || runtime.destroy(&c.name).map(drop)).await?;
            ctx.event(
                &name,
                "Recreating",
                "rootfs source changed: destroyed, creating again",
            );
        }
        record.spec_hash = Some(container.hash.clone());
        record.completed = false;
        record.restarts = 0;
        record.backoff_delay_secs = None;
        record.backoff_until = None;
        ctx.store.put(&record)?;
        return Ok(Action::RequeueAfter(Duration::ZERO));
    }
    record.spec_hash = Some(container.hash.clone());

    if container.state == RunState::Stopped {
        if running {
            ctx.save(&mut record, "Stopping", Some("state: Stopped".to_owned()))?;
            stop(&ctx, &name).await?;
            ctx.event(
                &name,
                "Stopped",
                "stopped: its manifest says state: Stopped",
            );
        }
        record.init_pid = None;
        ctx.save(&mut record, "Stopped", Some("state: Stopped".to_owned()))?;
        return Ok(Action::AwaitChange);
    }

    if running {
        if status
            .as_ref()
            .is_some_and(|s| matches!(s.phase, Phase::Stopped | Phase::Failed))
        {
            // Its monitor is cleaning up after the exit: decide once it is gone.
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
        adopt(&ctx, &mut record, status.as_ref())?;
        ctx.watch(&name);
        return Ok(Action::AwaitChange);
    }
    record.init_pid = None;
    record.init_start_time = None;
    if let Some(status) = &status {
        record.last_exit = status
            .last_exit
            .as_ref()
            .and_then(|e| serde_json::to_value(e).ok());
    }

    // It is not running. Did it run to an end that its policy accepts?
    let ran = status
        .as_ref()
        .filter(|s| s.hash == container.hash && s.last_exit.is_some());
    if let Some(status) = ran {
        let succeeded = status.phase == Phase::Stopped;
        let finished = match container.spec.restart_policy {
            RestartPolicy::Never => true,
            RestartPolicy::OnFailure => succeeded,
            RestartPolicy::Always => false,
        };
        if finished || record.completed {
            record.completed = true;
            let phase = if succeeded { "Stopped" } else { "Failed" };
            let message = describe_exit(status);
            ctx.save(&mut record, phase, Some(format!("completed: {message}")))?;
            return Ok(Action::AwaitChange);
        }
        // A restart, under crash-loop back-off.
        if let Some(until) = record.backoff_until
            && until > now()
        {
            let left = until - now();
            let message = format!("back-off {left}s restarting: {}", describe_exit(status));
            ctx.save(&mut record, "CrashLoopBackOff", Some(message))?;
            return Ok(Action::RequeueAfter(Duration::from_secs(left)));
        }
    } else if record.completed {
        let message = record.message.clone();
        ctx.save(&mut record, "Stopped", message)?;
        return Ok(Action::AwaitChange);
    }

    let restarting = ran.is_some();
    ctx.save(&mut record, "Starting", None)?;
    let runtime = ctx.runtime.clone();
    let n = name.clone();
    match blocking(move || runtime.start(&n)).await {
        Ok(pid) => {
            if restarting {
                record.restarts += 1;
                arm_backoff(&ctx, &mut record);
            }
            record.init_pid = Some(pid);
            record.running_since = Some(now());
            ctx.event(
                &name,
                if restarting { "Restarted" } else { "Started" },
                &format!("init pid {pid}"),
            );
            ctx.save(&mut record, "Running", None)?;
            ctx.watch(&name);
            Ok(Action::AwaitChange)
        }
        Err(Error::Runtime(e)) => {
            // Its own fault (a missing command...): back off like a crash.
            let message = e.to_string();
            ctx.event(&name, "FailedStart", &message);
            arm_backoff(&ctx, &mut record);
            ctx.save(&mut record, "Failed", Some(message))?;
            let wait = record.backoff_delay_secs.unwrap_or(10);
            Ok(Action::RequeueAfter(Duration::from_secs(wait)))
        }
        Err(other) => Err(other),
    }
}

/// The delay before the next restart: base, doubling, capped; reset after a long run.
fn arm_backoff(ctx: &Context, record: &mut Record) {
    let base = ctx.backoff_base.as_secs().max(1);
    let ran_long = record
        .running_since
        .is_some_and(|since| now().saturating_sub(since) >= BACKOFF_RESET_AFTER);
    let delay = match record.backoff_delay_secs {
        Some(previous) if !ran_long => (previous * 2).min(BACKOFF_CAP.as_secs()),
        _ => base,
    };
    record.backoff_delay_secs = Some(delay);
    record.backoff_until = Some(now() + delay);
}

/// A running container found at start-up or on a resync: take it as it is.
fn adopt(ctx: &Context, record: &mut Record, status: Option<&Status>) -> Result<(), Error> {
    if let Some(status) = status {
        if record.init_pid != status.init_pid {
            record.running_since = status.started_at;
        }
        record.init_pid = status.init_pid;
        record.init_start_time = status.init_start_time;
        record.reboots = status.reboots;
        let phase = match status.phase {
            Phase::Stopping => "Stopping",
            Phase::Starting => "Starting",
            _ => "Running",
        };
        let message = record
            .conditions
            .first()
            .map(|c| format!("keeping the last good spec: {}", c.message));
        ctx.save(record, phase, message)?;
    }
    Ok(())
}

async fn stop(ctx: &Context, name: &str) -> Result<(), Error> {
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    blocking(move || runtime.stop(&n, None).map(drop)).await
}

fn describe_exit(status: &Status) -> String {
    match &status.last_exit {
        Some(exit) => match (exit.reason, exit.code, &exit.signal) {
            (ExitReason::Exited, Some(code), _) => format!("exited with code {code}"),
            (_, _, Some(signal)) => format!("{:?} ({signal})", exit.reason),
            (reason, _, _) => format!("{reason:?}"),
        },
        None => status.error.clone().unwrap_or_default(),
    }
}

/// Used for status output: what a container's manifest would make of it.
pub fn desired_container(ctx: &Context, name: &str) -> Option<Container> {
    ctx.desired
        .lock()
        .ok()?
        .get(name)
        .map(|d| d.container.clone())
}
