//! One reconcile: observe what is, decide one step toward what is desired, apply
//! it. Level-triggered and idempotent: it may run any number of times for a name,
//! after a watch event, a resync, a monitor event or a requeue. [`decide`] is pure
//! and tested by table; each step is applied by one small function.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_manifests::{Container, RestartPolicy, RootfsSource, RunState};
use berth_runtime::{ExitReason, Origin, Runtime, Status};
use berth_state::{Condition, Phase, Record, Store};

use crate::desired::DesiredSet;
use crate::scheduler::{Action, Handle};

/// The kubelet's crash-loop back-off: doubling to 5 min, reset after 10 min up.
const BACKOFF_CAP: Duration = Duration::from_secs(300);
const BACKOFF_RESET_AFTER: u64 = 600;
/// How often to look again while a monitor finishes its clean-up.
const MONITOR_EXIT_POLL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Context {
    pub runtime: Runtime,
    pub store: Store,
    pub desired: Arc<Mutex<DesiredSet>>,
    pub scheduler: Handle,
    /// Names with a task waiting on their monitor.
    pub watched: Arc<Mutex<HashSet<String>>>,
    /// Names with a stop under way: a stop waits on the container (up to its
    /// `stopTimeout`) in a task of its own, never in a reconcile worker.
    pub stopping: Arc<Mutex<HashSet<String>>>,
    /// First crash-loop delay (10 s like the kubelet; tests shorten it).
    pub backoff_base: Duration,
    /// The image store, opened once (opening clears what killed pulls left).
    pub images: berth_runtime::image::ImageStore,
    /// Where registries.conf and credentials are: read at each pull, so edits
    /// count without a restart.
    pub registries: crate::images::RegistrySettings,
    /// The auto-update's last problem per container (the registry is down...),
    /// shown as a condition; cleared by its next good check.
    pub image_checks: Arc<Mutex<std::collections::HashMap<String, String>>>,
    /// Told when the desired set changed (the auto-updater looks anew).
    pub desired_changed: Arc<tokio::sync::Notify>,
    /// The daemon's own state and its source's (health.rs).
    pub health: Arc<crate::health::Health>,
    /// The counters `--metrics-addr` serves (metrics.rs).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// systemd's notify protocol (notify.rs): told of the first listing and of
    /// each finished reconcile.
    pub notify: Arc<crate::notify::Notifier>,
    /// Dependents stopped for a dependency's restart (`restartWithDependency`),
    /// by dependency: they stay stopped until it runs again (order.rs).
    pub held: Arc<Mutex<std::collections::HashMap<String, Vec<String>>>>,
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

pub(crate) fn now() -> u64 {
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

/// What is, for one name.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The container as created (its config), if a complete one exists.
    pub created: Option<Created>,
    /// Its init runs (with or without its monitor).
    pub running: bool,
    /// A stop this daemon asked for is under way.
    pub stopping: bool,
    /// What its monitor last said.
    pub status: Option<Status>,
    /// The digest the image store holds now for the desired image reference.
    pub stored_image: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub origin: Origin,
    pub container: Container,
    /// The digest of the image it was created from (an image rootfs).
    pub image: Option<String>,
}

/// Why a running container is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopFor {
    /// Its name is desired no more: destroyed once stopped.
    Prune,
    /// `state: Stopped`.
    StateStopped,
    /// A new rootfs source: created again once stopped.
    NewRootfs,
    /// Its image's tag moved (auto-update): created again on the new digest.
    NewImage,
}

/// One step toward what is desired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until something changes.
    Nothing,
    /// A container of this name was made by hand: not the daemon's to take.
    Refuse,
    /// Create it, then start it.
    Create,
    /// Start it (again, after an exit, when `restart` is set).
    Start {
        restart: bool,
    },
    /// Its monitor is gone while its init lives: kill what is left, start anew.
    ReplaceOrphan,
    /// Running and wanted: follow its monitor.
    Adopt,
    /// Its monitor is cleaning up after an exit: look again shortly.
    WaitMonitor,
    Stop(StopFor),
    /// A new spec, same rootfs, while it runs: write the spec, stop, put it in place.
    Restart,
    /// A new spec, same rootfs, while stopped.
    Reconfigure,
    /// A new rootfs source, stopped: destroy and create again.
    Recreate,
    /// Desired no more and stopped: destroy what the daemon made.
    Prune,
    /// Desired no more and nothing of the daemon's exists: drop the record.
    Forget,
    /// `state: Stopped` and stopped.
    StayStopped,
    /// Ran to an end that its restart policy accepts.
    Completed,
    /// Waiting out its crash-loop back-off.
    BackOff {
        until: u64,
    },
    /// Running, Unhealthy, and its restart policy restarts it: stop it (the
    /// start follows, with the crash back-off).
    RestartUnhealthy,
}

/// The step from what is desired of a name, what is, and what the daemon
/// remembers; `now` in Unix seconds.
pub fn decide(desired: Option<&Container>, observed: &Observed, record: &Record, now: u64) -> Step {
    if observed.stopping {
        // Its stop task looks again when it is done.
        return Step::Nothing;
    }
    let created = observed.created.as_ref();
    let Some(desired) = desired else {
        return match created {
            Some(c) if c.origin == Origin::Manifest && observed.running => {
                Step::Stop(StopFor::Prune)
            }
            Some(c) if c.origin == Origin::Manifest => Step::Prune,
            _ if record.managed => Step::Forget,
            _ => Step::Nothing,
        };
    };
    let Some(created) = created else {
        return Step::Create;
    };
    if created.origin == Origin::Cli {
        return Step::Refuse;
    }
    // Only an auto-updated image follows its tag; others keep the digest they
    // were created from until their spec changes (a `berth pull` restarts nothing).
    let follows_tag = matches!(
        desired.spec.rootfs,
        RootfsSource::Image {
            update_interval_ms: Some(_),
            ..
        }
    );
    let image_moved = follows_tag
        && matches!((&created.image, &observed.stored_image), (Some(ran), Some(now)) if ran != now);
    if image_moved && created.container.hash == desired.hash {
        return if observed.running {
            Step::Stop(StopFor::NewImage)
        } else {
            Step::Recreate
        };
    }
    if created.container.hash != desired.hash {
        let same_rootfs = created
            .container
            .spec
            .rootfs
            .same_source(&desired.spec.rootfs)
            && !image_moved;
        return match (observed.running, same_rootfs) {
            (true, true) => Step::Restart,
            (true, false) => Step::Stop(StopFor::NewRootfs),
            (false, true) => Step::Reconfigure,
            (false, false) => Step::Recreate,
        };
    }
    let status = observed.status.as_ref();
    if desired.state == RunState::Stopped {
        return if observed.running {
            Step::Stop(StopFor::StateStopped)
        } else {
            Step::StayStopped
        };
    }
    if observed.running {
        return match status.map(|s| s.phase) {
            Some(berth_runtime::Phase::Orphaned) => Step::ReplaceOrphan,
            Some(berth_runtime::Phase::Stopped | berth_runtime::Phase::Failed) => Step::WaitMonitor,
            _ if crate::container_health::restart_for_health(desired, status) => {
                Step::RestartUnhealthy
            }
            _ => Step::Adopt,
        };
    }
    if record.completed {
        return Step::Completed;
    }
    // Not running. Did it run to an end that its policy accepts?
    let ran = status.filter(|s| s.hash == desired.hash && s.last_exit.is_some());
    if let Some(status) = ran {
        let succeeded = status.phase == berth_runtime::Phase::Stopped
            && !crate::container_health::is_unhealthy(status);
        let finished = match desired.spec.restart_policy {
            RestartPolicy::Never => true,
            RestartPolicy::OnFailure => succeeded,
            RestartPolicy::Always => false,
        };
        if finished {
            return Step::Completed;
        }
    }
    if let Some(until) = record.backoff_until.filter(|until| *until > now) {
        return Step::BackOff { until };
    }
    Step::Start {
        restart: ran.is_some(),
    }
}

impl Context {
    pub fn event(&self, name: &str, reason: &str, message: &str) {
        tracing::info!(container = name, reason, "{message}");
        if let Err(e) = self.store.record_event(name, reason, message) {
            tracing::warn!(container = name, "cannot record event: {e}");
        }
    }

    fn save(
        &self,
        record: &mut Record,
        phase: Phase,
        message: Option<String>,
    ) -> Result<(), Error> {
        record.phase = phase;
        record.message = message;
        self.store.put(record)?;
        Ok(())
    }

    /// Follow a running container's monitor: its exit becomes an event and a
    /// reconcile.
    fn watch(&self, name: &str) {
        let Ok(mut watched) = self.watched.lock() else {
            return;
        };
        if !watched.insert(name.to_owned()) {
            return;
        }
        crate::container_health::follow(self, name);
        let ctx = self.clone();
        let name = name.to_owned();
        // An async wait, not a blocking thread per container: a device may run
        // more containers than the blocking pool has threads.
        tokio::spawn(async move {
            let socket = ctx.runtime.dir(&name).map(|d| d.monitor_socket());
            let waited = match socket {
                Ok(socket) => wait_for_monitor(&socket).await,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            if let Err(e) = waited {
                // Most often it exited before the wait began (a short job).
                tracing::debug!(container = %name, "waiting on its monitor: {e}");
            }
            ctx.record_exit(&name).await;
            if let Ok(mut set) = ctx.watched.lock() {
                set.remove(&name);
            }
            ctx.scheduler.schedule(&name);
        });
    }

    /// An event saying how a container's init ended, from its monitor's last word
    /// (once the monitor has written it: not while the container still runs).
    async fn record_exit(&self, name: &str) {
        let runtime = self.runtime.clone();
        let n = name.to_owned();
        if let Ok(Some(status)) = blocking(move || runtime.status(&n)).await
            && matches!(
                status.phase,
                berth_runtime::Phase::Stopped | berth_runtime::Phase::Failed
            )
            && status.last_exit.is_some()
        {
            self.event(name, "Exited", &describe_exit(&status));
        }
    }

    /// Stop a container in a task of its own, then run `then` and look again.
    fn stop_in_background(
        &self,
        name: &str,
        then: impl FnOnce(&Runtime) -> Result<(), berth_runtime::Error> + Send + 'static,
    ) {
        let Ok(mut stopping) = self.stopping.lock() else {
            return;
        };
        if !stopping.insert(name.to_owned()) {
            return;
        }
        let ctx = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let runtime = ctx.runtime.clone();
            let n = name.clone();
            let result = blocking(move || {
                runtime.stop(&n, None)?;
                then(&runtime)
            })
            .await;
            if let Err(e) = result {
                ctx.event(&name, "FailedStop", &e.to_string());
            }
            if let Ok(mut set) = ctx.stopping.lock() {
                set.remove(&name);
            }
            ctx.scheduler.schedule(&name);
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
    let (desired, revision) = ctx
        .desired
        .lock()
        .ok()
        .map(|set| (set.get(&name).cloned(), set.revision().cloned()))
        .unwrap_or_default();
    let mut record = ctx.store.get(&name)?.unwrap_or_else(|| Record::new(&name));
    let image = desired
        .as_ref()
        .and_then(|d| match &d.container.spec.rootfs {
            RootfsSource::Image { reference, .. } => Some(reference.clone()),
            _ => None,
        });
    let observed = observe(&ctx, &name, image).await?;
    if let Some(desired) = &desired {
        let image_check = ctx
            .image_checks
            .lock()
            .ok()
            .and_then(|checks| checks.get(&name).cloned());
        remember(&mut record, desired, image_check, revision);
    }
    // The spec to run: the manifest's, or the last good one after a rollback.
    let effective = desired
        .as_ref()
        .map(|d| crate::rollout::effective(&d.container, &mut record));
    let container = effective.as_ref();
    let step = decide(container, &observed, &record, now());
    tracing::debug!(container = %name, ?step, "decided");
    if let Some(action) = crate::rollout::check(&ctx, &name, container, &observed, &mut record)? {
        return Ok(action);
    }
    if let Some(action) =
        crate::order::hold(&ctx, &name, &step, desired.as_ref(), &mut record).await?
    {
        return Ok(action);
    }
    let manifest = desired.as_ref().map(|d| &d.container);
    crate::rollout::begin(&ctx, manifest, container, &step, &observed, &mut record)?;
    if let Some(action) =
        crate::rollout::recreate(&ctx, &name, &step, container, &mut record).await?
    {
        return Ok(action);
    }
    crate::rollout::forget(&ctx, &name, &step).await?;
    let action = apply(&ctx, &name, step, container, &observed, &mut record).await?;
    crate::order::after(&ctx, &name).await;
    crate::rollout::after(&ctx, &name, container, &mut record, action).await
}

/// What is, for `name`; `image`: the desired image reference, whose stored
/// digest is looked up too.
async fn observe(
    ctx: &Context,
    name: &str,
    image: Option<berth_manifests::ImageRef>,
) -> Result<Observed, Error> {
    let runtime = ctx.runtime.clone();
    let images = ctx.images.clone();
    let n = name.to_owned();
    let mut observed = blocking(move || {
        let stored_image = match &image {
            Some(reference) => images.get(reference)?.map(|stored| stored.digest),
            None => None,
        };
        let created = if runtime.exists(&n)? {
            let config = runtime.config(&n)?;
            Some(Created {
                // A config without a header was made by an early berth by hand.
                origin: config.header.map_or(Origin::Cli, |h| h.origin),
                container: config.container,
                image: config.layers.map(|layers| layers.image),
            })
        } else {
            None
        };
        let running = runtime.is_running(&n)?;
        let status = if created.is_some() {
            runtime.status(&n)?
        } else {
            None
        };
        Ok(Observed {
            created,
            running,
            stopping: false,
            status,
            stored_image,
        })
    })
    .await?;
    observed.stopping = ctx.stopping.lock().is_ok_and(|set| set.contains(name));
    Ok(observed)
}

/// What only the daemon knows of a desired container: its last good spec and the
/// problems of its manifest.
/// The revision is that of the commit where the spec last changed: a later
/// commit that leaves it as it was does not move it.
fn remember(
    record: &mut Record,
    desired: &crate::desired::Desired,
    image_check: Option<String>,
    revision: Option<berth_state::Revision>,
) {
    record.managed = true;
    if record.desired.as_ref() != Some(&desired.container) || record.revision.is_none() {
        record.revision = revision;
    }
    record.desired = Some(desired.container.clone());
    let mut before = std::mem::take(&mut record.conditions);
    // What a start found stays until a start finds otherwise.
    record.conditions.extend(
        before
            .extract_if(.., |c| c.kind == PORT_IN_USE)
            .collect::<Vec<_>>(),
    );
    let since = |kind: &str, message: &str| {
        before
            .iter()
            .find(|c| c.kind == kind && c.message == message)
            .map_or(now(), |c| c.since)
    };
    record
        .conditions
        .extend(desired.problems.iter().map(|message| Condition {
            kind: "InvalidManifest".to_owned(),
            message: message.clone(),
            since: since("InvalidManifest", message),
        }));
    if let Some(message) = image_check {
        record.conditions.push(Condition {
            kind: "ImageUpdateFailed".to_owned(),
            since: since("ImageUpdateFailed", &message),
            message,
        });
    }
}

/// The condition and event of a start that found a published host port held by
/// another program.
const PORT_IN_USE: &str = "PortInUse";

/// Set the condition `kind` to `message`, keeping its `since` if it says the same.
fn set_condition(record: &mut Record, kind: &str, message: &str) {
    if let Some(c) = record.conditions.iter_mut().find(|c| c.kind == kind) {
        if c.message != message {
            c.message = message.to_owned();
            c.since = now();
        }
        return;
    }
    record.conditions.push(Condition {
        kind: kind.to_owned(),
        message: message.to_owned(),
        since: now(),
    });
}

async fn apply(
    ctx: &Context,
    name: &str,
    step: Step,
    desired: Option<&Container>,
    observed: &Observed,
    record: &mut Record,
) -> Result<Action, Error> {
    let status = observed.status.as_ref();
    match (step, desired) {
        (Step::Nothing, _) => {
            if record.managed {
                ctx.store.put(record)?;
            }
            Ok(Action::AwaitChange)
        }
        (Step::Refuse, _) => {
            let message = format!(
                "a container {name} created by hand already exists; destroy it to let the manifest manage it"
            );
            ctx.save(record, Phase::Failed, Some(message))?;
            Ok(Action::AwaitChange)
        }
        (Step::Create, Some(desired)) => create(ctx, record, desired).await,
        (Step::Start { restart }, Some(_)) => start(ctx, name, record, restart, status).await,
        (Step::ReplaceOrphan, Some(_)) => {
            ctx.event(
                name,
                "OrphanKilled",
                "its monitor was gone while its init lived: killed, starting it anew",
            );
            start(ctx, name, record, true, None).await
        }
        (Step::Adopt, Some(_)) => {
            adopt(ctx, record, status)?;
            ctx.watch(name);
            Ok(Action::AwaitChange)
        }
        (Step::WaitMonitor, _) => Ok(Action::RequeueAfter(MONITOR_EXIT_POLL)),
        (Step::RestartUnhealthy, Some(_)) => {
            let message = crate::container_health::unhealthy_message(status);
            ctx.event(name, "Unhealthy", &format!("{message}; restarting it"));
            ctx.save(record, Phase::Stopping, Some(message))?;
            // Once stopped, the next reconcile starts it (see `decide`).
            ctx.stop_in_background(name, |_| Ok(()));
            Ok(Action::AwaitChange)
        }
        (Step::Stop(why @ (StopFor::NewRootfs | StopFor::NewImage)), Some(desired))
            if matches!(desired.spec.rootfs, RootfsSource::Image { .. }) =>
        {
            // The new image first: a tag that cannot be pulled must not take down
            // what runs.
            if let Err(message) = bring_image(ctx, desired).await {
                arm_backoff(ctx, record, None);
                let message = format!("keeps running its current rootfs: {message}");
                ctx.save(record, Phase::Running, Some(message))?;
                let wait = record.backoff_delay_secs.unwrap_or(10);
                return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
            }
            let message = match why {
                StopFor::NewImage => "its image moved to a new digest",
                _ => "its rootfs source changed",
            };
            ctx.save(record, Phase::Stopping, Some(message.to_owned()))?;
            ctx.stop_in_background(name, |_| Ok(()));
            Ok(Action::AwaitChange)
        }
        (Step::Stop(why), _) => {
            let message = match why {
                StopFor::Prune => "its manifest no longer defines it",
                StopFor::StateStopped => "state: Stopped",
                StopFor::NewRootfs => "its rootfs source changed",
                StopFor::NewImage => "its image moved to a new digest",
            };
            ctx.save(record, Phase::Stopping, Some(message.to_owned()))?;
            // Once stopped, the next reconcile destroys, recreates or keeps it stopped.
            ctx.stop_in_background(name, |_| Ok(()));
            Ok(Action::AwaitChange)
        }
        (Step::Restart, Some(desired)) => {
            // The new spec is written first: if that fails (a full disk), what runs
            // keeps running.
            let runtime = ctx.runtime.clone();
            let c = desired.clone();
            let staged = blocking(move || runtime.stage_config(&c)).await?;
            ctx.save(record, Phase::Stopping, Some("its spec changed".to_owned()))?;
            ctx.event(name, "Updated", "spec changed: restarting with the new one");
            reset_for_new_spec(record);
            ctx.store.put(record)?;
            ctx.stop_in_background(name, move |runtime| staged.apply(runtime));
            Ok(Action::AwaitChange)
        }
        (Step::Reconfigure, Some(desired)) => {
            let runtime = ctx.runtime.clone();
            let c = desired.clone();
            blocking(move || runtime.reconfigure(&c)).await?;
            ctx.event(
                name,
                "Updated",
                "spec changed: the next start uses the new one",
            );
            reset_for_new_spec(record);
            ctx.store.put(record)?;
            Ok(Action::RequeueAfter(Duration::ZERO))
        }
        (Step::Recreate, Some(_)) => {
            destroy(ctx, name).await?;
            ctx.event(
                name,
                "Recreating",
                "rootfs source changed: destroyed, creating again",
            );
            reset_for_new_spec(record);
            ctx.store.put(record)?;
            Ok(Action::RequeueAfter(Duration::ZERO))
        }
        (Step::Prune, _) => {
            destroy(ctx, name).await?;
            let file = record
                .desired
                .as_ref()
                .map_or("its manifest".to_owned(), |c| {
                    c.source.file.display().to_string()
                });
            ctx.event(
                name,
                "Removed",
                &format!("{file} no longer defines it: stopped and destroyed"),
            );
            ctx.store.remove(name)?;
            Ok(Action::AwaitChange)
        }
        (Step::Forget, _) => {
            ctx.store.remove(name)?;
            Ok(Action::AwaitChange)
        }
        (Step::StayStopped, _) => {
            if record.phase != Phase::Stopped {
                ctx.event(name, "Stopped", "stopped: its manifest says state: Stopped");
            }
            ctx.save(record, Phase::Stopped, Some("state: Stopped".to_owned()))?;
            Ok(Action::AwaitChange)
        }
        (Step::Completed, _) => {
            record.completed = true;
            let (phase, message) = match status.filter(|s| s.last_exit.is_some()) {
                Some(s) if s.phase == berth_runtime::Phase::Failed => {
                    (Phase::Failed, format!("completed: {}", describe_exit(s)))
                }
                Some(s) => (Phase::Stopped, format!("completed: {}", describe_exit(s))),
                None => (record.phase, record.message.clone().unwrap_or_default()),
            };
            ctx.save(record, phase, Some(message))?;
            Ok(Action::AwaitChange)
        }
        (Step::BackOff { until }, _) => {
            // The message is the exit; readers count the back-off down from `until`.
            let message = status.map(describe_exit).unwrap_or_default();
            ctx.save(record, Phase::CrashLoopBackOff, Some(message))?;
            Ok(Action::RequeueAfter(Duration::from_secs(
                until.saturating_sub(now()),
            )))
        }
        // Every step that needs a desired spec is only decided with one.
        (_, None) => Ok(Action::AwaitChange),
    }
}

/// The image `desired` will be created from, in the store as its pull policy
/// says, with a `Pulled` or `FailedPull` event; `Err` is the failure's message.
async fn bring_image(ctx: &Context, desired: &Container) -> Result<(), String> {
    let ensured = match ctx.registries.load() {
        Ok(options) => crate::images::ensure(&ctx.images, &desired.spec.rootfs, &options).await,
        Err(e) => Err(e),
    };
    let name = &desired.name;
    match ensured {
        Ok(Some((image, crate::images::Fetched::Pulled))) => ctx.event(
            name,
            "Pulled",
            &format!("{} ({})", image.reference, image.digest),
        ),
        Ok(Some((image, crate::images::Fetched::Kept(error)))) => ctx.event(
            name,
            "FailedPull",
            &format!(
                "{error}; using the stored {} ({})",
                image.reference, image.digest
            ),
        ),
        Ok(_) => {}
        Err(e) => {
            let message = format!("{e:#}");
            ctx.event(name, "FailedPull", &message);
            return Err(message);
        }
    }
    Ok(())
}

async fn create(ctx: &Context, record: &mut Record, desired: &Container) -> Result<Action, Error> {
    let name = desired.name.clone();
    if let RootfsSource::Image { reference, .. } = &desired.spec.rootfs {
        ctx.save(record, Phase::Creating, Some(format!("image {reference}")))?;
        if let Err(message) = bring_image(ctx, desired).await {
            // Like a failed start: retried with the crash back-off.
            arm_backoff(ctx, record, None);
            ctx.save(record, Phase::Failed, Some(message))?;
            let wait = record.backoff_delay_secs.unwrap_or(10);
            return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
        }
    }
    ctx.save(record, Phase::Creating, None)?;
    let runtime = ctx.runtime.clone();
    let c = desired.clone();
    // A create of this name that died half way is cleaned up by create itself.
    blocking(move || runtime.create(&c, Origin::Manifest)).await?;
    reset_for_new_spec(record);
    ctx.event(&name, "Created", "created from its manifest");
    ctx.save(record, Phase::Created, None)?;
    if desired.state == RunState::Stopped {
        return Ok(Action::RequeueAfter(Duration::ZERO));
    }
    // Go straight on to starting it: queued behind every other create of a burst,
    // the first container of a hundred would run only after the last was created.
    start(ctx, &name, record, false, None).await
}

async fn start(
    ctx: &Context,
    name: &str,
    record: &mut Record,
    restart: bool,
    last_run: Option<&Status>,
) -> Result<Action, Error> {
    ctx.save(record, Phase::Starting, None)?;
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    match blocking(move || runtime.start(&n)).await {
        Ok(pid) => {
            record.conditions.retain(|c| c.kind != PORT_IN_USE);
            if restart {
                record.restarts += 1;
                arm_backoff(ctx, record, last_run.and_then(|s| s.started_at));
            }
            ctx.event(
                name,
                if restart { "Restarted" } else { "Started" },
                &format!("init pid {pid}"),
            );
            ctx.save(record, Phase::Running, None)?;
            ctx.watch(name);
            Ok(Action::AwaitChange)
        }
        Err(Error::Runtime(berth_runtime::Error::PortInUse(message))) => {
            // Another program holds a published port: a condition that stays until
            // a start gets the port, retried with the crash back-off meanwhile.
            ctx.event(name, PORT_IN_USE, &message);
            set_condition(record, PORT_IN_USE, &message);
            arm_backoff(ctx, record, None);
            ctx.save(record, Phase::Failed, Some(message))?;
            let wait = record.backoff_delay_secs.unwrap_or(10);
            Ok(Action::RequeueAfter(Duration::from_secs(wait)))
        }
        Err(Error::Runtime(e)) => {
            // Its own fault (a missing command...): back off like a crash.
            let message = e.to_string();
            ctx.event(name, "FailedStart", &message);
            arm_backoff(ctx, record, None);
            ctx.save(record, Phase::Failed, Some(message))?;
            let wait = record.backoff_delay_secs.unwrap_or(10);
            Ok(Action::RequeueAfter(Duration::from_secs(wait)))
        }
        Err(other) => Err(other),
    }
}

async fn destroy(ctx: &Context, name: &str) -> Result<(), Error> {
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    blocking(move || runtime.destroy(&n).map(drop)).await
}

/// A new spec starts with a clean slate: no restarts, no back-off, not completed.
fn reset_for_new_spec(record: &mut Record) {
    record.completed = false;
    record.restarts = 0;
    record.backoff_delay_secs = None;
    record.backoff_until = None;
}

/// The delay before the next restart: base, doubling, capped; reset after a run
/// of ten minutes (`started_at`: when the run that just ended began).
fn arm_backoff(ctx: &Context, record: &mut Record, started_at: Option<u64>) {
    let base = ctx.backoff_base.as_secs().max(1);
    let ran_long =
        started_at.is_some_and(|since| now().saturating_sub(since) >= BACKOFF_RESET_AFTER);
    let delay = match record.backoff_delay_secs {
        Some(previous) if !ran_long => (previous * 2).min(BACKOFF_CAP.as_secs()),
        _ => base,
    };
    record.backoff_delay_secs = Some(delay);
    record.backoff_until = Some(now() + delay);
}

/// A running container found at start-up or on a resync: take it as it is.
fn adopt(ctx: &Context, record: &mut Record, status: Option<&Status>) -> Result<(), Error> {
    let phase = match status.map(|s| s.phase) {
        Some(berth_runtime::Phase::Stopping) => Phase::Stopping,
        Some(berth_runtime::Phase::Starting) => Phase::Starting,
        _ => Phase::Running,
    };
    let message = record
        .conditions
        .first()
        .map(|c| format!("keeping the last good spec: {}", c.message));
    ctx.save(record, phase, message)
}

pub fn describe_exit(status: &Status) -> String {
    let text = match &status.last_exit {
        Some(exit) => match (exit.reason, exit.code, &exit.signal) {
            (ExitReason::Exited, Some(code), _) => format!("exited with code {code}"),
            (_, _, Some(signal)) => format!("{:?} ({signal})", exit.reason),
            (reason, _, _) => format!("{reason:?}"),
        },
        None => status.error.clone().unwrap_or_default(),
    };
    crate::container_health::with_verdict(status, text)
}

/// Used for status output: what a container's manifest would make of it.
pub fn desired_container(ctx: &Context, name: &str) -> Option<Container> {
    ctx.desired
        .lock()
        .ok()?
        .get(name)
        .map(|d| d.container.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::{LastExit, Phase as Run};

    const NOW: u64 = 1_000_000;

    fn container(command: &str, policy: &str, state: &str, rootfs: &str) -> Container {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
             command: [{command}]\n  restartPolicy: {policy}\n  state: {state}\n  rootfs: {{template: {rootfs}}}\n"
        );
        let parsed = berth_manifests::parse_str("/m/web.yaml".as_ref(), &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.containers.into_iter().next().unwrap()
    }

    fn web() -> Container {
        container("/bin/web", "Always", "Running", "busybox")
    }

    fn status(phase: Run, hash: &str, exit: Option<(ExitReason, i32)>) -> Status {
        Status {
            phase,
            monitor_pid: None,
            init_pid: None,
            init_start_time: None,
            started_at: Some(NOW - 5),
            reboots: 0,
            last_exit: exit.map(|(reason, code)| LastExit {
                reason,
                code: Some(code),
                signal: None,
                at: NOW - 1,
            }),
            error: None,
            hash: hash.to_owned(),
            cgroups: None,
            health: None,
        }
    }

    fn observed(
        created: Option<(Origin, Container)>,
        running: bool,
        status: Option<Status>,
    ) -> Observed {
        Observed {
            created: created.map(|(origin, container)| Created {
                origin,
                container,
                image: None,
            }),
            running,
            stopping: false,
            status,
            stored_image: None,
        }
    }

    /// A container of `image:` with the given rootfs fields.
    fn of_image(rootfs: &str) -> Container {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
             rootfs: {{image: 'registry.test/app:1', {rootfs}}}\n"
        );
        let parsed = berth_manifests::parse_str("/m/web.yaml".as_ref(), &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.containers.into_iter().next().unwrap()
    }

    /// Created from digest `ran`, the store holding `stored` now.
    fn on_image(container: &Container, running: bool, ran: &str, stored: &str) -> Observed {
        let mut observed = observed(
            Some((Origin::Manifest, container.clone())),
            running,
            Some(status(Run::Running, &container.hash, None)),
        );
        if let Some(created) = &mut observed.created {
            created.image = Some(ran.to_owned());
        }
        observed.stored_image = Some(stored.to_owned());
        observed
    }

    #[test]
    fn an_auto_updated_image_whose_tag_moved_is_created_again_and_others_keep_their_digest() {
        let auto = of_image("pullPolicy: Always, updateInterval: 1h");
        let rec = managed();
        assert_eq!(
            decide(
                Some(&auto),
                &on_image(&auto, true, "sha256:a", "sha256:b"),
                &rec,
                NOW
            ),
            Step::Stop(StopFor::NewImage)
        );
        assert_eq!(
            decide(
                Some(&auto),
                &on_image(&auto, false, "sha256:a", "sha256:b"),
                &rec,
                NOW
            ),
            Step::Recreate
        );
        assert_eq!(
            decide(
                Some(&auto),
                &on_image(&auto, true, "sha256:a", "sha256:a"),
                &rec,
                NOW
            ),
            Step::Adopt
        );
        // Without updateInterval a `berth pull` of the tag restarts nothing.
        let plain = of_image("pullPolicy: IfNotPresent");
        assert_eq!(
            decide(
                Some(&plain),
                &on_image(&plain, true, "sha256:a", "sha256:b"),
                &rec,
                NOW
            ),
            Step::Adopt
        );
    }

    #[test]
    fn a_new_pull_policy_or_interval_restarts_in_place_rather_than_recreating() {
        let before = of_image("pullPolicy: IfNotPresent");
        let after = of_image("pullPolicy: Always, updateInterval: 1h");
        let observed = on_image(&before, true, "sha256:a", "sha256:a");
        assert_eq!(
            decide(Some(&after), &observed, &managed(), NOW),
            Step::Restart
        );
        let other = {
            let mut c = of_image("pullPolicy: Always");
            if let RootfsSource::Image { reference, .. } = &mut c.spec.rootfs {
                *reference = "registry.test/other:1".parse().unwrap();
            }
            c.hash = c.spec.hash();
            c
        };
        assert_eq!(
            decide(Some(&other), &observed, &managed(), NOW),
            Step::Stop(StopFor::NewRootfs)
        );
    }

    fn managed() -> Record {
        let mut record = Record::new("web");
        record.managed = true;
        record
    }

    #[test]
    fn what_is_not_desired_is_stopped_then_pruned_if_the_daemon_made_it() {
        let made = Some((Origin::Manifest, web()));
        let by_hand = Some((Origin::Cli, web()));
        let fresh = Record::new("web");
        let cases = [
            (
                observed(made.clone(), true, None),
                &managed(),
                Step::Stop(StopFor::Prune),
            ),
            (observed(made.clone(), false, None), &managed(), Step::Prune),
            (observed(by_hand.clone(), true, None), &fresh, Step::Nothing),
            (observed(by_hand, false, None), &fresh, Step::Nothing),
            (observed(None, false, None), &managed(), Step::Forget),
            (observed(None, false, None), &fresh, Step::Nothing),
        ];
        for (i, (observed, record, step)) in cases.into_iter().enumerate() {
            assert_eq!(decide(None, &observed, record, NOW), step, "case {i}");
        }
    }

    #[test]
    fn a_desired_container_is_created_refused_or_updated_by_what_changed() {
        let want = web();
        let new_command = container("/bin/web2", "Always", "Running", "busybox");
        let new_rootfs = container("/bin/web", "Always", "Running", "host");
        let record = managed();
        let cases = [
            (observed(None, false, None), Step::Create),
            (
                observed(Some((Origin::Cli, web())), true, None),
                Step::Refuse,
            ),
            (
                observed(Some((Origin::Manifest, new_command.clone())), true, None),
                Step::Restart,
            ),
            (
                observed(Some((Origin::Manifest, new_command)), false, None),
                Step::Reconfigure,
            ),
            (
                observed(Some((Origin::Manifest, new_rootfs.clone())), true, None),
                Step::Stop(StopFor::NewRootfs),
            ),
            (
                observed(Some((Origin::Manifest, new_rootfs)), false, None),
                Step::Recreate,
            ),
        ];
        for (i, (observed, step)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(Some(&want), &observed, &record, NOW),
                step,
                "case {i}"
            );
        }
    }

    #[test]
    fn running_containers_are_adopted_waited_for_replaced_or_stopped() {
        let want = web();
        let stopped = container("/bin/web", "Always", "Stopped", "busybox");
        let made = Some((Origin::Manifest, web()));
        let hash = want.hash.clone();
        let record = managed();
        let cases = [
            (
                &want,
                observed(made.clone(), true, Some(status(Run::Running, &hash, None))),
                Step::Adopt,
            ),
            (
                &want,
                observed(made.clone(), true, Some(status(Run::Starting, &hash, None))),
                Step::Adopt,
            ),
            (
                &want,
                observed(made.clone(), true, Some(status(Run::Orphaned, &hash, None))),
                Step::ReplaceOrphan,
            ),
            (
                &want,
                observed(
                    made.clone(),
                    true,
                    Some(status(Run::Failed, &hash, Some((ExitReason::Exited, 1)))),
                ),
                Step::WaitMonitor,
            ),
            (
                &stopped,
                observed(made.clone(), true, None),
                Step::Stop(StopFor::StateStopped),
            ),
            (
                &stopped,
                observed(made.clone(), false, None),
                Step::StayStopped,
            ),
        ];
        for (i, (want, observed, step)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(Some(want), &observed, &record, NOW),
                step,
                "case {i}"
            );
        }
        // A stop under way: nothing, whatever else is true.
        let mut busy = observed(made, true, None);
        busy.stopping = true;
        assert_eq!(decide(None, &busy, &record, NOW), Step::Nothing);
        assert_eq!(decide(Some(&stopped), &busy, &record, NOW), Step::Nothing);
    }

    #[test]
    fn an_exit_is_restarted_or_completed_by_policy_under_back_off() {
        let ok = Some((ExitReason::Exited, 0));
        let failed = Some((ExitReason::Exited, 1));
        let mut backing_off = managed();
        backing_off.backoff_until = Some(NOW + 8);
        let mut backed_off = managed();
        backed_off.backoff_until = Some(NOW - 1);
        let mut completed = managed();
        completed.completed = true;
        let restart = Step::Start { restart: true };
        let cases = [
            // policy, exit phase, exit, record, step
            ("Always", Run::Stopped, ok, managed(), restart.clone()),
            ("Always", Run::Failed, failed, managed(), restart.clone()),
            ("OnFailure", Run::Stopped, ok, managed(), Step::Completed),
            ("OnFailure", Run::Failed, failed, managed(), restart.clone()),
            ("Never", Run::Stopped, ok, managed(), Step::Completed),
            ("Never", Run::Failed, failed, managed(), Step::Completed),
            (
                "Always",
                Run::Failed,
                failed,
                backing_off.clone(),
                Step::BackOff { until: NOW + 8 },
            ),
            (
                "OnFailure",
                Run::Failed,
                failed,
                backing_off.clone(),
                Step::BackOff { until: NOW + 8 },
            ),
            (
                "Never",
                Run::Failed,
                failed,
                backing_off.clone(),
                Step::Completed,
            ),
            ("Always", Run::Failed, failed, backed_off, restart),
            (
                "Always",
                Run::Failed,
                failed,
                completed.clone(),
                Step::Completed,
            ),
        ];
        for (i, (policy, phase, exit, record, step)) in cases.into_iter().enumerate() {
            let want = container("/bin/web", policy, "Running", "busybox");
            let made = Some((Origin::Manifest, want.clone()));
            let seen = observed(made, false, Some(status(phase, &want.hash, exit)));
            assert_eq!(
                decide(Some(&want), &seen, &record, NOW),
                step,
                "case {i}: {policy} {phase:?}"
            );
        }
        // Never started, or an exit of another spec: a first start, also under back-off.
        let want = web();
        let made = Some((Origin::Manifest, want.clone()));
        let other = observed(
            made.clone(),
            false,
            Some(status(Run::Failed, "sha256:old", failed)),
        );
        assert_eq!(
            decide(Some(&want), &other, &managed(), NOW),
            Step::Start { restart: false }
        );
        let never = observed(made, false, None);
        assert_eq!(
            decide(Some(&want), &never, &managed(), NOW),
            Step::Start { restart: false }
        );
        assert_eq!(
            decide(Some(&want), &never, &backing_off, NOW),
            Step::BackOff { until: NOW + 8 }
        );
        assert_eq!(
            decide(Some(&want), &never, &completed, NOW),
            Step::Completed
        );
    }
}
