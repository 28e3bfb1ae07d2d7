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
use crate::watcher;

#[derive(Debug, Clone)]
pub struct Options {
    pub manifests: PathBuf,
    pub resync: Duration,
    pub concurrency: usize,
    pub backoff_base: Duration,
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
    let recovered = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.recover()).await??
    };
    for name in &recovered {
        tracing::warn!(container = %name, "removed the remains of an interrupted create; it will be created again");
    }

    let (scheduler, handle) = Scheduler::new(
        options.concurrency.max(1),
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        },
    );
    let ctx = Context {
        runtime: runtime.clone(),
        store: store.clone(),
        desired: Arc::new(Mutex::new(DesiredSet::new(&options.manifests))),
        scheduler: handle.clone(),
        watched: Arc::new(Mutex::new(HashSet::new())),
        backoff_base: options.backoff_base,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let socket = runtime.state_dir().join("berth.sock");
    let listener = crate::api::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let router = crate::api::router(ctx.clone());
    let api = tokio::spawn(crate::api::serve(listener, router, stop_rx.clone()));
    let watch_task = tokio::spawn(watch_loop(ctx.clone(), options.clone(), stop_rx.clone()));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: containers keep running");
        let _ = stop_tx.send(true);
    });
    tracing::info!(manifests = %options.manifests.display(), socket = %socket.display(), "berth daemon started");

    let reconcile_ctx = ctx.clone();
    let mut stop = stop_rx.clone();
    let finished = scheduler
        .run(
            move |name: String| reconcile::reconcile(reconcile_ctx.clone(), name).boxed(),
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
    let _ = api.await;
    store.flush().context("cannot flush the state database")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
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
async fn watch_loop(ctx: Context, options: Options, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher: Option<watcher::Watcher> = None;
    let mut listed_once = false;
    let mut last_problems: Vec<String> = Vec::new();
    let mut resync = tokio::time::interval(options.resync);
    resync.tick().await;
    loop {
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
                for name in &changed {
                    ctx.scheduler.schedule(name);
                }
                if !listed_once {
                    listed_once = true;
                    schedule_everything(&ctx);
                    ctx.scheduler.ready();
                }
                if again {
                    next = Duration::from_millis(500);
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
                next = RETRY;
            }
            Err(_) => return,
        }
        let wait_for_events = async {
            if rx.recv().await.is_none() {
                return;
            }
            // Debounce: read once the burst has been quiet for DEBOUNCE.
            let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
            while let Ok(Some(())) = tokio::time::timeout_at(
                (tokio::time::Instant::now() + DEBOUNCE).min(deadline),
                rx.recv(),
            )
            .await
            {}
        };
        tokio::select! {
            _ = wait_for_events => {}
            _ = tokio::time::sleep(next) => {}
            _ = resync.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
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
    for name in names {
        ctx.scheduler.schedule(&name);
    }
}
