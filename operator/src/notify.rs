//! systemd's notify protocol (sd_notify(3)), for `Type=notify` in
//! deploy/berth.service: `READY=1` once start-up adoption and the first
//! reconcile of every container are done, `STATUS=` with the containers' counts
//! by phase whenever they change, `WATCHDOG=1` at half of `WATCHDOG_USEC` when
//! systemd set it (the one timer here), `STOPPING=1` at shutdown. Without
//! `NOTIFY_SOCKET` nothing is sent and nothing is counted.
//!
//! The monitors never see `NOTIFY_SOCKET`: they start with a cleared environment.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{Notify, watch};

use crate::reconcile::Context;

/// What the daemon tells its service manager, and when.
#[derive(Debug)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set when the daemon started.
    enabled: bool,
    /// The names the first full listing scheduled that have not finished a
    /// reconcile yet; `None` before that listing and once `READY=1` is sent.
    starting: Mutex<Option<HashSet<String>>>,
    /// Set when the start-up reconciles are all done, to send `READY=1`.
    ready: Notify,
    /// A reconcile finished: the counts may have changed.
    recount: Notify,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` from the environment.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
            starting: Mutex::new(None),
            ready: Notify::new(),
            recount: Notify::new(),
        }
    }

    /// The first full listing scheduled `names`: `READY=1` waits for a reconcile
    /// of each (adopting, starting or pruning it, or failing to).
    pub fn first_listing(&self, names: &HashSet<String>) {
        if !self.enabled {
            return;
        }
        if let Ok(mut starting) = self.starting.lock() {
            *starting = Some(names.clone());
        }
        self.check_ready();
    }

    /// A reconcile of `name` finished.
    pub fn reconciled(&self, name: &str) {
        if !self.enabled {
            return;
        }
        if let Ok(mut starting) = self.starting.lock()
            && let Some(names) = starting.as_mut()
        {
            names.remove(name);
        }
        self.check_ready();
        self.recount.notify_one();
    }

    /// The source has nothing to apply yet (a Git repository that cannot be
    /// fetched, or whose first commit is refused, on a device's first start):
    /// the daemon is up and says why in `berth status`, so `READY=1` now rather
    /// than a start timeout and a restart loop. A later first listing changes
    /// nothing.
    pub fn up_without_source(&self) {
        if !self.enabled {
            return;
        }
        if let Ok(mut starting) = self.starting.lock() {
            *starting = Some(HashSet::new());
        }
        self.check_ready();
    }

    fn check_ready(&self) {
        let Ok(mut starting) = self.starting.lock() else {
            return;
        };
        if starting.as_ref().is_some_and(HashSet::is_empty) {
            *starting = None;
            self.ready.notify_one();
        }
    }
}

/// Sends the service manager what it is told, until `stop` turns true; then
/// `STOPPING=1`. Returns at once without `NOTIFY_SOCKET`.
pub async fn run(ctx: Context, mut stop: watch::Receiver<bool>) {
    if !ctx.notify.enabled {
        return;
    }
    // Half the interval systemd allows, as sd_watchdog_enabled(3) advises.
    let mut watchdog = sd_notify::watchdog_enabled().map(|usec| {
        let mut timer = tokio::time::interval((usec / 2).max(Duration::from_millis(1)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    let mut ready = false;
    let mut last_status = String::new();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            () = ctx.notify.ready.notified(), if !ready => {
                ready = true;
                let status = status_line(&ctx).await;
                send(vec!["READY=1".to_owned(), format!("STATUS={status}")]).await;
                last_status = status;
            }
            () = ctx.notify.recount.notified(), if ready => {
                let status = status_line(&ctx).await;
                if status != last_status {
                    send(vec![format!("STATUS={status}")]).await;
                    last_status = status;
                }
            }
            _ = tick(&mut watchdog) => send(vec!["WATCHDOG=1".to_owned()]).await,
        }
    }
    send(vec![
        "STOPPING=1".to_owned(),
        "STATUS=stopping; the containers keep running".to_owned(),
    ])
    .await;
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `3 containers: 2 Running, 1 CrashLoopBackOff`, from what `berth get` shows.
async fn status_line(ctx: &Context) -> String {
    let ctx = ctx.clone();
    match tokio::task::spawn_blocking(move || crate::status::phase_counts(&ctx)).await {
        Ok(Ok(counts)) => counts_text(&counts),
        Ok(Err(e)) => format!("cannot count the containers: {e}"),
        Err(e) => format!("cannot count the containers: {e}"),
    }
}

pub fn counts_text(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    let noun = if total == 1 {
        "container"
    } else {
        "containers"
    };
    if total == 0 {
        return format!("0 {noun}");
    }
    let phases: Vec<String> = counts
        .iter()
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect();
    format!("{total} {noun}: {}", phases.join(", "))
}

/// One datagram to `NOTIFY_SOCKET`, off the async threads (a send may block
/// while the manager's queue is full).
async fn send(lines: Vec<String>) {
    let sent = tokio::task::spawn_blocking(move || {
        let states: Vec<NotifyState<'_>> = lines
            .iter()
            .map(|l| NotifyState::Custom(l.as_str()))
            .collect();
        sd_notify::notify(&states)
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}"),
        Err(e) => tracing::warn!("cannot notify the service manager: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_sentence() {
        let mut counts = BTreeMap::new();
        assert_eq!(counts_text(&counts), "0 containers");
        counts.insert("Running".to_owned(), 1);
        assert_eq!(counts_text(&counts), "1 container: 1 Running");
        counts.insert("CrashLoopBackOff".to_owned(), 2);
        assert_eq!(
            counts_text(&counts),
            "3 containers: 2 CrashLoopBackOff, 1 Running"
        );
    }

    #[test]
    fn ready_waits_for_every_name_of_the_first_listing() {
        let notifier = Notifier {
            enabled: true,
            starting: Mutex::new(None),
            ready: Notify::new(),
            recount: Notify::new(),
        };
        // A reconcile before the listing (none happen: the scheduler's gate) opens nothing.
        notifier.reconciled("a");
        assert!(notifier.starting.lock().unwrap().is_none());
        notifier.first_listing(&["a".to_owned(), "b".to_owned()].into());
        notifier.reconciled("a");
        notifier.reconciled("a");
        assert_eq!(
            notifier.starting.lock().unwrap().as_ref().map(HashSet::len),
            Some(1)
        );
        notifier.reconciled("b");
        assert!(notifier.starting.lock().unwrap().is_none());
        // notify_one stored a permit: the task would see it now.
        let permit = notifier.ready.notified();
        futures::pin_mut!(permit);
        assert!(futures::FutureExt::now_or_never(permit).is_some());
    }
}
