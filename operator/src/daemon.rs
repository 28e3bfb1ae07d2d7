//! `berth daemon`: watch the manifest directory and converge the host to it,
//! forever. Start-up recovers interrupted creates, adopts every live monitor
//! (no restart), then reconciles everything; shutdown lets running reconciles
//! finish and leaves the containers running.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use berth_runtime::Runtime;
use berth_state::Store;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::desired::DesiredSet;
use crate::reconcile::{self, Context};
use crate::scheduler::{Backoff, Scheduler};
use crate::watcher::{self, Rescan};

#[derive(Debug, Clone)]
pub struct Options {
    pub manifests: PathBuf,
    pub resync: Duration,
    pub concurrency: usize,
    pub backoff_base: Duration,
    pub prune_grace: Duration,
    pub registries: crate::images::RegistrySettings,
    /// This device's labels (device.rs), for manifests' `metadata.selector`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--git`: the manifests come from a Git repository (`manifests` is then
    /// the served directory of its checkout).
    pub git: Option<crate::git::Options>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--cgroup-delegate`: the daemon's own (delegated) cgroup is the parent.
    pub cgroup_delegate: bool,
    /// `--stop-on-exit`: stop the managed containers at shutdown, in reverse
    /// start order.
    pub stop_on_exit: bool,
}

/// How long after the last event of a burst the directory is read.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst that never ends is read at least this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(2);
/// Running reconciles get this long to finish at shutdown.
const GRACE: Duration = Duration::from_secs(30);

pub fn run(runtime: Runtime, mut options: Options) -> anyhow::Result<()> {
    // Absolute, so sources read well in `berth get`; symlinks are kept, since a
    // swapped symlink must be followed anew.
    options.manifests = std::path::absolute(&options.manifests)
        .with_context(|| format!("manifest directory {}", options.manifests.display()))?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.concurrency.clamp(1, 4))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(serve(runtime, options))
}

async fn serve(runtime: Runtime, options: Options) -> anyhow::Result<()> {
    // 0700, as Store::open and install.sh make it: only root may look in.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(runtime.state_dir())
        .with_context(|| {
            format!(
                "cannot create the state directory {}",
                runtime.state_dir().display()
            )
        })?;
    let store = Store::open(runtime.state_dir()).context("cannot open the state database")?;
    // After the store's lock: one daemon per state dir decides the parent.
    let runtime = if options.cgroup_delegate {
        let parent = berth_runtime::cgroup::delegate_self(runtime.state_dir())
            .context("cannot take over the delegated cgroup")?;
        tracing::info!(cgroup_parent = %parent, "moved into {parent}/daemon; containers go beside it");
        runtime.with_cgroup_parent(parent)
    } else {
        berth_runtime::cgroup::forget_delegation(runtime.state_dir())?;
        runtime
    };
    let recovered = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.recover()).await??
    };
    for name in &recovered {
        tracing::warn!(container = %name, "removed the remains of an interrupted create; it will be created again");
    }

    // Veths a monitor killed half way through a start left on the host.
    let stale_links = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.remove_stale_links()).await?
    };
    let stale_links = stale_links.unwrap_or_else(|e| {
        tracing::warn!("cannot look for stale veths: {e}");
        Vec::new()
    });

    let (scheduler, handle) = Scheduler::new(
        options.concurrency.max(1),
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        },
    );
    let mut desired = DesiredSet::new(&options.manifests, options.prune_grace);
    desired.seed(last_applied(&runtime, &store)?);
    desired.select_for(options.labels.clone());
    let ctx = Context {
        runtime: runtime.clone(),
        store: store.clone(),
        desired: Arc::new(Mutex::new(desired)),
        scheduler: handle.clone(),
        watched: Arc::new(Mutex::new(HashSet::new())),
        stopping: Arc::new(Mutex::new(HashSet::new())),
        backoff_base: options.backoff_base,
        images: {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || {
                berth_runtime::image::ImageStore::open(runtime.state_dir())
            })
            .await?
            .context("cannot open the image store")?
        },
        registries: options.registries.clone(),
        image_checks: Arc::default(),
        desired_changed: Arc::default(),
        health: Arc::new(crate::health::Health::new(match &options.git {
            Some(git) => git.source(),
            None => crate::health::Source {
                kind: crate::health::SourceKind::Directory,
                location: options.manifests.display().to_string(),
                reference: None,
                path: None,
                revision: None,
                last_sync: None,
                last_error: None,
            },
        })),
        metrics: Arc::default(),
        notify: Arc::new(crate::notify::Notifier::from_env()),
        held: Arc::default(),
    };
    for (name, link) in &stale_links {
        ctx.event(
            name,
            "StaleVethRemoved",
            &format!("removed veth {link}, left by a monitor killed during a start"),
        );
    }

    let metrics_listener = options.metrics_addr.map(crate::metrics::bind).transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let socket = runtime.state_dir().join("berth.sock");
    let listener = crate::api::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let router = crate::api::router(ctx.clone());
    let api = tokio::spawn(crate::api::serve(listener, router, stop_rx.clone()));
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(crate::metrics::serve(
            listener,
            ctx.clone(),
            stop_rx.clone(),
        ))
    });
    // A Git source tells the watch loop of each swap; the first scan waits for
    // its first good commit when there is no checkout yet.
    let rescan = Arc::new(tokio::sync::Notify::new());
    let first_fetch = match options.git.clone() {
        Some(git) => crate::git::start(&ctx, git, rescan.clone(), stop_rx.clone()).await?,
        None => None,
    };
    let watch_task = tokio::spawn({
        let (ctx, options, stop_rx) = (ctx.clone(), options.clone(), stop_rx.clone());
        async move {
            if let Some(first) = first_fetch {
                let _ = first.await;
            }
            watch_loop(ctx, options, stop_rx, rescan).await
        }
    });
    let update_task = tokio::spawn(crate::updates::run(ctx.clone(), stop_rx.clone()));
    let notify_task = tokio::spawn(crate::notify::run(ctx.clone(), stop_rx.clone()));
    let health = StoreHealth::default();
    let store_gave_up = {
        let (health, store) = (health.clone(), store.clone());
        async move { health.give_up(&store).await }
    };
    let gave_up = tokio::spawn(async move {
        let gave_up = tokio::select! {
            _ = shutdown_signal() => false,
            _ = store_gave_up => true,
        };
        tracing::info!("shutting down: containers keep running");
        let _ = stop_tx.send(true);
        gave_up
    });
    tracing::info!(manifests = %options.manifests.display(), socket = %socket.display(), "berth daemon started");
    tracing::info!(labels = ?options.labels, "device labels");

    let reconcile_ctx = ctx.clone();
    let mut stop = stop_rx.clone();
    let finished = scheduler
        .run(
            move |name: String| {
                let (ctx, health) = (reconcile_ctx.clone(), health.clone());
                async move {
                    let started = std::time::Instant::now();
                    let metrics = ctx.metrics.clone();
                    let result = reconcile::reconcile(ctx.clone(), name.clone()).await;
                    metrics.reconciled(started.elapsed(), result.is_ok());
                    health.note(&result);
                    ctx.notify.reconciled(&name);
                    result
                }
                .boxed()
            },
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
            GRACE,
        )
        .await;
    if !finished {
        tracing::warn!("some reconciles did not finish within {GRACE:?}");
    }
    let _ = watch_task.await;
    let _ = update_task.await;
    let _ = notify_task.await;
    let _ = api.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if options.stop_on_exit {
        crate::order::stop_all(&ctx).await;
    }
    let _ = std::fs::remove_file(&socket);
    if gave_up.await.unwrap_or(false) {
        anyhow::bail!(
            "the state database failed for {STORE_GIVE_UP:?}; exiting so that the supervisor \
             starts berth again (the containers keep running)"
        );
    }
    store.flush().context("cannot flush the state database")?;
    Ok(())
}

/// How long the state database may keep failing (a full disk, an I/O error)
/// before the daemon exits non-zero, for its supervisor to start it anew with
/// the database opened afresh.
const STORE_GIVE_UP: Duration = Duration::from_secs(30);

/// Since when every reconcile has failed on the state database, if they do.
#[derive(Debug, Clone)]
struct StoreHealth(Arc<watch::Sender<Option<std::time::Instant>>>);

impl Default for StoreHealth {
    fn default() -> StoreHealth {
        StoreHealth(Arc::new(watch::channel(None).0))
    }
}

impl StoreHealth {
    fn note<T>(&self, result: &Result<T, reconcile::Error>) {
        self.0.send_if_modified(|since| match result {
            Err(reconcile::Error::State(_)) if since.is_none() => {
                *since = Some(std::time::Instant::now());
                true
            }
            Ok(_) if since.is_some() => {
                *since = None;
                true
            }
            _ => false,
        });
    }

    /// Returns once the database has failed for longer than [`STORE_GIVE_UP`] and
    /// a flush of it fails too. Sleeps while the database is well.
    async fn give_up(&self, store: &Store) {
        let mut failing = self.0.subscribe();
        loop {
            let Ok(since) = failing.wait_for(Option::is_some).await.map(|s| *s) else {
                return futures::future::pending().await;
            };
            let Some(since) = since else { continue };
            tokio::time::sleep_until((since + STORE_GIVE_UP).into()).await;
            if *failing.borrow() != Some(since) {
                continue;
            }
            match store.flush() {
                Ok(()) => self.0.send_replace(None),
                Err(e) => {
                    tracing::error!("the state database keeps failing: {e}");
                    return;
                }
            };
        }
    }
}

/// The last good spec of every container the daemon manages, from the store; for
/// one the store has none of (made by an older berth), from its `config.json`.
fn last_applied(
    runtime: &Runtime,
    store: &Store,
) -> anyhow::Result<Vec<berth_manifests::Container>> {
    let mut specs: Vec<_> = store
        .list()
        .context("cannot read the state database")?
        .into_iter()
        .filter(|r| r.managed)
        .filter_map(|r| r.desired)
        .collect();
    for name in runtime.list().unwrap_or_default() {
        if specs.iter().any(|c| c.name == name) {
            continue;
        }
        if let Ok(config) = runtime.config(&name)
            && config
                .header
                .as_ref()
                .is_some_and(|h| h.origin == berth_runtime::Origin::Manifest)
        {
            specs.push(config.container);
        }
    }
    Ok(specs)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => futures::future::pending::<()>().await,
    }
}

/// Rescan on every burst of events, every `resync`, and after errors. Nothing is
/// reconciled before the first full listing.
async fn watch_loop(
    ctx: Context,
    options: Options,
    mut stop: watch::Receiver<bool>,
    rescan: Arc<tokio::sync::Notify>,
) {
    // A Git source reports its own syncs (fetches, refused commits).
    let directory = options.git.is_none();
    let (tx, mut rx) = mpsc::unbounded_channel::<Rescan>();
    let mut watcher: Option<watcher::Watcher> = None;
    let mut listed_once = false;
    let mut last_problems: Vec<String> = Vec::new();
    let mut resync = tokio::time::interval(options.resync);
    resync.tick().await;
    let mut cause = crate::metrics::Cause::start;
    loop {
        ctx.metrics.rescan(cause);
        if watcher
            .as_ref()
            .is_none_or(|w| !watcher::still_current(w, &options.manifests))
        {
            // New, or the directory (a symlink) now points elsewhere: watch again.
            watcher = match watcher::watch(&options.manifests, tx.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("{e}; retrying");
                    None
                }
            };
        }
        // The lock is held for the scan alone, never across an await.
        let scan = ctx
            .desired
            .lock()
            .map(|mut set| set.rescan())
            .map_err(|_| ());
        let mut next = options.resync;
        match scan {
            Ok(Ok((changed, again))) => {
                ctx.health.update_source(|source| {
                    if !directory {
                        return;
                    }
                    source.last_sync = Some(crate::health::Sync {
                        at: crate::health::unix_now(),
                        ok: true,
                        message: None,
                    });
                });
                for name in &changed {
                    ctx.scheduler.schedule(name);
                }
                if !changed.is_empty() {
                    ctx.desired_changed.notify_one();
                }
                if !listed_once {
                    listed_once = true;
                    schedule_everything(&ctx);
                    ctx.scheduler.ready();
                }
                if again {
                    next = Duration::from_millis(500);
                }
                if let Some(prune) = ctx.desired.lock().ok().and_then(|s| s.next_prune()) {
                    next = next.min(prune.saturating_duration_since(std::time::Instant::now()));
                }
                let problems = ctx
                    .desired
                    .lock()
                    .map(|s| s.orphan_problems().to_vec())
                    .unwrap_or_default();
                if problems != last_problems {
                    for problem in &problems {
                        tracing::warn!("{problem}");
                        ctx.event("-", "InvalidManifest", problem);
                    }
                    last_problems = problems;
                }
            }
            Ok(Err(e)) => {
                // Missing, unreadable or unsafe: report and retry; never prune on it.
                tracing::error!("{}", e.0);
                ctx.health.update_source(|source| {
                    if !directory {
                        return;
                    }
                    let failed = crate::health::Sync {
                        at: crate::health::unix_now(),
                        ok: false,
                        message: Some(e.0.clone()),
                    };
                    source.last_sync = Some(failed.clone());
                    source.last_error = Some(failed);
                });
                next = RETRY;
            }
            Err(_) => return,
        }
        let wait_for_events = async {
            if rx.recv().await != Some(Rescan::Soon) {
                return;
            }
            // Debounce: read once the burst has been quiet for DEBOUNCE, or at
            // once when a file is complete.
            let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
            while let Ok(Some(Rescan::Soon)) = tokio::time::timeout_at(
                (tokio::time::Instant::now() + DEBOUNCE).min(deadline),
                rx.recv(),
            )
            .await
            {}
        };
        cause = tokio::select! {
            _ = wait_for_events => crate::metrics::Cause::event,
            _ = tokio::time::sleep(next) => crate::metrics::Cause::after(next, options.resync),
            _ = resync.tick() => crate::metrics::Cause::resync,
            _ = rescan.notified() => crate::metrics::Cause::event,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        // The rescan about to run reads whatever these announce: a hundred files
        // renamed in at once are one rescan, not a hundred.
        while rx.try_recv().is_ok() {}
    }
}

/// At start-up: every name the daemon knows of, desired or not, so that running
/// containers are adopted and containers whose manifest went away are pruned.
fn schedule_everything(ctx: &Context) {
    let mut names: HashSet<String> = ctx
        .desired
        .lock()
        .map(|s| s.names().into_iter().collect())
        .unwrap_or_default();
    names.extend(ctx.runtime.list().unwrap_or_default());
    names.extend(
        ctx.store
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name),
    );
    ctx.notify.first_listing(&names);
    for name in names {
        ctx.scheduler.schedule(&name);
    }
}
