//! `berth daemon --metrics-addr`: Prometheus metrics at `/metrics`, in the
//! OpenMetrics text format when the scraper asks for it (Prometheus does) and in
//! Prometheus' own text format (0.0.4) otherwise.
//!
//! Counters the daemon keeps itself (reconciles, rescans) are atomics bumped where
//! the work happens; everything else (phases, restarts, reboots, cgroup usage, the
//! source) is read at scrape time, on a blocking thread, so that the daemon does
//! nothing at all for its metrics while nobody scrapes: no timer, no wake-up.
//! Labels are bounded: a container's name, a phase, a rescan's cause; the
//! revision is in one info metric only, never a label of a per-container series.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::api::ApiError;
use crate::reconcile::Context;

/// What made the watcher read the manifests again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus spells them
pub enum Cause {
    /// The daemon's first read.
    start,
    /// A change in the directory (inotify), or a Git source's swap to a new commit.
    event,
    /// The periodic full rescan (`--resync`).
    resync,
    /// A retry after a failed read, a file still being written or a removal's grace.
    retry,
}

impl Cause {
    /// A wait of `next` ended: the resync's own, or a shorter retry's.
    pub fn after(next: Duration, resync: Duration) -> Cause {
        if next < resync {
            Cause::retry
        } else {
            Cause::resync
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabel {
    cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerLabel {
    container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    kind: String,
    location: String,
    reference: String,
    path: String,
    revision: String,
}

/// The counters the daemon bumps as it works; shared by its tasks.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Counter,
    reconcile_errors: Counter,
    reconcile_duration: Histogram,
    rescans: Family<CauseLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            // 1 ms to 16 s by fours: an adoption to a create from a template.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 4.0, 8)),
            rescans: Family::default(),
        }
    }
}

impl Metrics {
    /// One reconcile finished after `took`.
    pub fn reconciled(&self, took: Duration, ok: bool) {
        self.reconciles.inc();
        if !ok {
            self.reconcile_errors.inc();
        }
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// The watcher reads the manifests again, for `cause`.
    pub fn rescan(&self, cause: Cause) {
        self.rescans.get_or_create(&CauseLabel { cause }).inc();
    }
}

/// Every phase `berth get` may show, each exported even at 0 so that a
/// dashboard's series do not come and go.
const PHASES: [&str; 10] = [
    "Pending",
    "Creating",
    "Created",
    "Starting",
    "Running",
    "Stopping",
    "Stopped",
    "CrashLoopBackOff",
    "Failed",
    "Orphaned",
];

/// The whole exposition, read now. Blocking (the state database, the monitors'
/// status files, cgroup files): run it on a blocking thread.
fn render(ctx: &Context, openmetrics: bool) -> Result<String, ApiError> {
    let items = crate::api::all_items(ctx)?;
    let mut registry = Registry::with_prefix("berth");

    let phases = Family::<PhaseLabel, Gauge>::default();
    for phase in PHASES {
        // Created at 0.
        let _ = phases.get_or_create(&PhaseLabel {
            phase: phase.to_owned(),
        });
    }
    let restarts = Family::<ContainerLabel, Counter>::default();
    let reboots = Family::<ContainerLabel, Counter>::default();
    let cpu = Family::<ContainerLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let memory = Family::<ContainerLabel, Gauge>::default();
    let pids = Family::<ContainerLabel, Gauge>::default();
    for item in &items {
        phases
            .get_or_create(&PhaseLabel {
                phase: item.phase.clone(),
            })
            .inc();
        let label = ContainerLabel {
            container: item.name.clone(),
        };
        restarts
            .get_or_create(&label)
            .inc_by(u64::from(item.restarts));
        reboots
            .get_or_create(&label)
            .inc_by(u64::from(item.reboots));
        if item.pid.is_none() {
            continue; // not running: no cgroup to read
        }
        let usage = ctx
            .runtime
            .status(&item.name)
            .ok()
            .flatten()
            .and_then(|s| s.cgroups)
            .map(|c| c.usage())
            .unwrap_or_default();
        if let Some(seconds) = usage.cpu_seconds {
            cpu.get_or_create(&label).inc_by(seconds);
        }
        if let Some(bytes) = usage.memory_bytes {
            memory
                .get_or_create(&label)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(n) = usage.pids {
            pids.get_or_create(&label)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "containers",
        "Containers by phase, as berth get shows them",
        phases,
    );
    registry.register(
        "container_restarts",
        "Restarts of a container by the daemon under its restart policy",
        restarts,
    );
    registry.register(
        "container_reboots",
        "Reboots of a container's init in place (a reboot inside it, or berth reboot)",
        reboots,
    );
    registry.register_with_unit(
        "container_cpu",
        "CPU time of a running container's processes, from its cgroup",
        Unit::Seconds,
        cpu,
    );
    registry.register_with_unit(
        "container_memory",
        "Memory a running container's cgroup uses (only with the memory controller: a memory limit)",
        Unit::Bytes,
        memory,
    );
    registry.register(
        "container_pids",
        "Processes and threads in a running container's cgroup",
        pids,
    );

    registry.register(
        "container_health",
        "Health of a running container with spec.healthcheck: 1 for its state (Starting, Healthy or Unhealthy), 0 for the others",
        crate::container_health::metric(&items),
    );

    let metrics = &ctx.metrics;
    registry.register("reconciles", "Reconciles run", metrics.reconciles.clone());
    registry.register(
        "reconcile_errors",
        "Reconciles that failed (retried with back-off)",
        metrics.reconcile_errors.clone(),
    );
    registry.register_with_unit(
        "reconcile_duration",
        "How long reconciles took",
        Unit::Seconds,
        metrics.reconcile_duration.clone(),
    );
    registry.register(
        "watcher_rescans",
        "Reads of the whole manifest source, by cause",
        metrics.rescans.clone(),
    );

    let source = ctx.health.source();
    let kind = match source.kind {
        crate::health::SourceKind::Directory => "directory",
        crate::health::SourceKind::Git => "git",
    };
    registry.register(
        "source",
        "Where the manifests come from and the revision applied",
        Info::new(SourceLabels {
            kind: kind.to_owned(),
            location: source.location.clone(),
            reference: source.reference.clone().unwrap_or_default(),
            path: source.path.clone().unwrap_or_default(),
            revision: source
                .revision
                .as_ref()
                .map(|r| r.commit.clone())
                .unwrap_or_default(),
        }),
    );
    if let Some(sync) = &source.last_sync {
        let age = Gauge::<i64>::default();
        age.set((crate::health::unix_now() - sync.at).max(0));
        registry.register_with_unit(
            "source_sync_age",
            "Time since the source was last read (a directory scan, a Git fetch)",
            Unit::Seconds,
            age,
        );
        let ok = Gauge::<i64>::default();
        ok.set(i64::from(sync.ok));
        registry.register(
            "source_sync_ok",
            "Whether the last read of the source succeeded (1) or failed (0)",
            ok,
        );
    }
    if let Some(revision) = &source.revision {
        let time = Gauge::<i64>::default();
        time.set(revision.time);
        registry.register_with_unit(
            "source_revision_time",
            "Commit time of the revision applied, Unix time",
            Unit::Seconds,
            time,
        );
    }
    let started = Gauge::<i64>::default();
    started.set(
        ctx.health
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    registry.register_with_unit(
        "start_time",
        "When this daemon started, Unix time",
        Unit::Seconds,
        started,
    );

    let mut text = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
    };
    encoded.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics".to_owned(),
        )
    })?;
    Ok(text)
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(State(ctx): State<Context>, headers: HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics first; curl and older parsers get 0.0.4.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match tokio::task::spawn_blocking(move || render(&ctx, openmetrics)).await {
        Ok(Ok(text)) => {
            let content_type = if openmetrics {
                OPENMETRICS
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "berth serves /metrics only here\n")
}

/// Listen on `addr` (and nothing else). A non-loopback address is allowed, since
/// a fleet's Prometheus scrapes from elsewhere, but warned about: the metrics
/// name every container and the source's location, without authentication.
pub fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the metrics are served beyond this host, unauthenticated: they name every \
             container and the manifest source; restrict who reaches {addr} with a firewall"
        );
    }
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics-addr {addr}: cannot listen there"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("--metrics-addr {addr}"))?;
    tokio::net::TcpListener::from_std(listener).with_context(|| format!("--metrics-addr {addr}"))
}

/// Serve `/metrics` on `listener` until `stop` turns true, with the API's limits
/// on connections and slow clients.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Context,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .with_state(ctx);
    crate::api::serve(listener, router, stop).await;
}
