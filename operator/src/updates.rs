//! Auto-update (`pullPolicy: Always` with `updateInterval`), like Quadlet's
//! `AutoUpdate=registry`: at each interval the registry is asked for the tag's
//! digest (a manifest HEAD, no layer); when it moved, the image is pulled and
//! every container of that reference is reconciled, which creates it again on
//! the new digest (`reconcile::decide`: `StopFor::NewImage`). A registry that
//! cannot be asked changes nothing that runs: the failure becomes an event and
//! an `ImageUpdateFailed` condition, and is retried with back-off.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_manifests::{ImageRef, RootfsSource};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::reconcile::Context;

/// The first retry after a failed check; doubled up to the interval.
const RETRY_FIRST: Duration = Duration::from_secs(10);
/// How often the set of auto-updated containers is looked at anew when none is
/// due (it is also looked at whenever the desired set changes).
const IDLE: Duration = Duration::from_secs(300);

/// One reference's checks.
#[derive(Debug)]
struct Tracked {
    interval: Duration,
    next: Instant,
    failures: u32,
}

/// Checks every auto-updated reference when it is due, until `stop`.
pub async fn run(ctx: Context, mut stop: watch::Receiver<bool>) {
    let mut tracked: HashMap<ImageRef, Tracked> = HashMap::new();
    loop {
        let wanted = auto_updated(&ctx);
        tracked.retain(|reference, _| wanted.contains_key(reference));
        for (reference, (interval, _)) in &wanted {
            let entry = tracked.entry(reference.clone()).or_insert(Tracked {
                interval: *interval,
                // The create pulled it just now; the first check is an interval on.
                next: Instant::now() + *interval,
                failures: 0,
            });
            if entry.interval != *interval {
                entry.interval = *interval;
                entry.next = entry.next.min(Instant::now() + *interval);
            }
        }
        let now = Instant::now();
        let due: Vec<ImageRef> = tracked
            .iter()
            .filter(|(_, t)| t.next <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for reference in due {
            let names = wanted
                .get(&reference)
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            let ok = check(&ctx, &reference, &names).await;
            if let Some(t) = tracked.get_mut(&reference) {
                if ok {
                    t.failures = 0;
                    t.next = Instant::now() + t.interval;
                } else {
                    t.failures = t.failures.saturating_add(1);
                    let backoff = crate::scheduler::Backoff {
                        base: RETRY_FIRST,
                        cap: t.interval,
                    };
                    t.next = Instant::now() + backoff.delay(t.failures);
                }
            }
        }
        let wake = tracked
            .values()
            .map(|t| t.next)
            .min()
            .unwrap_or(Instant::now() + IDLE)
            .min(Instant::now() + IDLE);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = ctx.desired_changed.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Desired containers that follow their tag: reference → (the shortest interval
/// asked for it, the names).
fn auto_updated(ctx: &Context) -> BTreeMap<ImageRef, (Duration, Vec<String>)> {
    let mut wanted: BTreeMap<ImageRef, (Duration, Vec<String>)> = BTreeMap::new();
    let Ok(set) = ctx.desired.lock() else {
        return wanted;
    };
    for name in set.names() {
        let Some(desired) = set.get(&name) else {
            continue;
        };
        if let RootfsSource::Image {
            reference,
            update_interval_ms: Some(ms),
            ..
        } = &desired.container.spec.rootfs
        {
            let interval = Duration::from_millis((*ms).max(1000));
            let entry = wanted
                .entry(reference.clone())
                .or_insert((interval, Vec::new()));
            entry.0 = entry.0.min(interval);
            entry.1.push(name);
        }
    }
    wanted
}

/// Ask the registry once; pull and reconcile `names` if the tag moved. Returns
/// whether the registry answered (and a pull, if one was needed, succeeded).
async fn check(ctx: &Context, reference: &ImageRef, names: &[String]) -> bool {
    let outcome = update(ctx, reference).await;
    let problem = match &outcome {
        Ok(Some((old, new))) => {
            for name in names {
                ctx.event(
                    name,
                    "ImageUpdated",
                    &format!("{reference} moved from {old} to {new}: creating it again"),
                );
            }
            None
        }
        Ok(None) => None,
        Err(e) => Some(format!("cannot check {reference} for a new digest: {e:#}")),
    };
    for name in names {
        let changed = match ctx.image_checks.lock() {
            Ok(mut checks) => match &problem {
                Some(message) => {
                    checks.insert(name.clone(), message.clone()).as_ref() != Some(message)
                }
                None => checks.remove(name).is_some(),
            },
            Err(_) => false,
        };
        if let (true, Some(message)) = (changed, &problem) {
            ctx.event(name, "ImageUpdateFailed", message);
        }
        if changed || matches!(outcome, Ok(Some(_))) {
            ctx.scheduler.schedule(name);
        }
    }
    problem.is_none()
}

/// `Some((old, new))` manifest digests when the tag moved and the new image is
/// in the store now.
async fn update(ctx: &Context, reference: &ImageRef) -> anyhow::Result<Option<(String, String)>> {
    let options = ctx.registries.load()?;
    let store = &ctx.images;
    let stored = {
        let (store, reference) = (store.clone(), reference.clone());
        tokio::task::spawn_blocking(move || store.get(&reference)).await??
    };
    let remote = berth_registry::resolve_digest(reference, &options).await?;
    if stored
        .as_ref()
        .is_some_and(|s| s.registry_digest() == remote)
    {
        return Ok(None);
    }
    let old = stored.map_or_else(|| "nothing".to_owned(), |s| s.digest);
    let new = berth_registry::pull(reference, &options, store).await?;
    tracing::info!(%reference, %old, new = %new.digest, "image updated");
    Ok(Some((old, new.digest)))
}
