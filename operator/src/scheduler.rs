//! The reconcile scheduler: which container to reconcile, and when.
//!
//! After kube-runtime's `scheduler.rs` and `controller/runner.rs`. The queue holds
//! container names, not objects: the reconciler reads desired and actual state
//! itself. A name scheduled twice keeps the earlier time; a name that comes due
//! while its reconcile runs is held and runs once afterwards; at most
//! `concurrency` reconciles run at once and nothing waiting is lost. Unlike
//! kube-runtime, a failure is retried with a per-name exponential backoff that a
//! success resets. Nothing runs before [`Handle::ready`] (the first full listing),
//! and shutdown lets running reconciles finish within a grace period.

#![allow(dead_code)] // used by the daemon

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long even if nothing is reported (a resync).
    RequeueAfter(Duration),
    /// Wait until the watcher, a monitor or the API schedules the container.
    AwaitChange,
}

/// The wait before retrying a failed reconcile: `base`, doubled with each failure
/// in a row, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        2u32.checked_pow(failures.saturating_sub(1))
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |delay| delay.min(self.cap))
    }
}

/// The number of reconciles to run at once when the user does not say: one per CPU.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Debug)]
enum Request {
    Schedule { key: String, at: Instant },
    Ready,
}

/// Asks the scheduler for reconciles; cheap to clone, one per watcher, monitor
/// event task and API handler. Requests made after the scheduler has stopped are
/// dropped: the daemon is shutting down and nothing would act on them.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Request>,
}

impl Handle {
    /// Reconciles `key` as soon as possible.
    pub fn schedule(&self, key: &str) {
        self.schedule_at(key, Instant::now());
    }

    /// Reconciles `key` after `delay`, or sooner if scheduled sooner.
    pub fn schedule_after(&self, key: &str, delay: Duration) {
        self.schedule_at(key, later(delay));
    }

    /// Reconciles `key` at `at`, or sooner if scheduled sooner.
    pub fn schedule_at(&self, key: &str, at: Instant) {
        let _ = self.tx.send(Request::Schedule {
            key: key.to_owned(),
            at,
        });
    }

    /// Opens the gate after the first full listing; until then requests accumulate.
    pub fn ready(&self) {
        let _ = self.tx.send(Request::Ready);
    }
}

/// The reconcile loop's clock and bookkeeping; [`Scheduler::run`] drives it.
#[derive(Debug)]
pub struct Scheduler {
    rx: mpsc::UnboundedReceiver<Request>,
    concurrency: usize,
    backoff: Backoff,
}

impl Scheduler {
    /// A scheduler running at most `concurrency` reconciles at once (at least one),
    /// and the handle to feed it.
    pub fn new(concurrency: usize, backoff: Backoff) -> (Scheduler, Handle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            rx,
            concurrency: concurrency.max(1),
            backoff,
        };
        (scheduler, Handle { tx })
    }

    /// Runs reconciles as they come due until `shutdown` completes, then starts
    /// nothing new and waits up to `grace` for the running ones. Returns whether
    /// they all finished; those that did not are aborted (and logged).
    pub async fn run<F, E>(
        self,
        reconcile: F,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> bool
    where
        F: Fn(String) -> BoxFuture<'static, Result<Action, E>> + Send + Sync + 'static,
        E: Display + Send + 'static,
    {
        let Scheduler {
            mut rx,
            concurrency,
            backoff,
        } = self;
        let mut queue = Queue::new(backoff);
        let mut running = Running::default();
        let mut open = false;
        let mut listening = true;
        tokio::pin!(shutdown);
        loop {
            if open {
                let now = Instant::now();
                while running.len() < concurrency
                    && let Some(key) = queue.pop_due(now)
                {
                    running.start(&reconcile, key);
                }
            }
            // Due keys wait while the cap is reached: no timer then, a completion wakes us.
            let wake = (open && running.len() < concurrency)
                .then(|| queue.next_due())
                .flatten();
            tokio::select! {
                () = &mut shutdown => break,
                request = rx.recv(), if listening => match request {
                    Some(Request::Schedule { key, at }) => queue.schedule(key, at),
                    Some(Request::Ready) => open = true,
                    None => listening = false,
                },
                Some((key, outcome)) = running.next(), if !running.is_empty() => {
                    queue.finish(key, outcome);
                }
                () = sleep_until(wake) => {}
            }
        }
        drop(rx);
        queue.stopping = true;
        let drain = async {
            while let Some((key, outcome)) = running.next().await {
                queue.finish(key, outcome);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_ok() {
            return true;
        }
        let mut left: Vec<&str> = running.keys.values().map(String::as_str).collect();
        left.sort_unstable();
        tracing::warn!(
            "reconciles still running after {grace:?}, abandoned: {}",
            left.join(", ")
        );
        false
    }
}

/// Which keys are due when, which are running, and how often each has failed.
#[derive(Debug)]
struct Queue {
    /// Scheduled keys in due order; `scheduled` holds each key's one entry.
    due: BTreeSet<(Instant, String)>,
    scheduled: HashMap<String, Instant>,
    running: HashSet<String>,
    /// Keys that came due while running: each runs once more when it finishes.
    held: HashSet<String>,
    failures: HashMap<String, u32>,
    backoff: Backoff,
    /// Shutting down: outcomes are logged, nothing is rescheduled.
    stopping: bool,
}

impl Queue {
    fn new(backoff: Backoff) -> Self {
        Queue {
            due: BTreeSet::new(),
            scheduled: HashMap::new(),
            running: HashSet::new(),
            held: HashSet::new(),
            failures: HashMap::new(),
            backoff,
            stopping: false,
        }
    }

    /// Schedules `key` at `at` unless it is already scheduled sooner.
    fn schedule(&mut self, key: String, at: Instant) {
        if let Some(&current) = self.scheduled.get(&key) {
            if current <= at {
                return;
            }
            self.due.remove(&(current, key.clone()));
        }
        self.scheduled.insert(key.clone(), at);
        self.due.insert((at, key));
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The earliest key due by `now` that is not running, now marked running.
    /// Due keys that are running are held for after their reconcile.
    fn pop_due(&mut self, now: Instant) -> Option<String> {
        while self.next_due().is_some_and(|at| at <= now) {
            let (_, key) = self.due.pop_first()?;
            self.scheduled.remove(&key);
            if self.running.contains(&key) {
                self.held.insert(key);
            } else {
                self.running.insert(key.clone());
                return Some(key);
            }
        }
        None
    }

    /// Records the end of `key`'s reconcile and schedules what comes next.
    fn finish(&mut self, key: String, outcome: Result<Action, String>) {
        self.running.remove(&key);
        let held = self.held.remove(&key);
        let next = match outcome {
            Ok(action) => {
                self.failures.remove(&key);
                match action {
                    Action::RequeueAfter(delay) => Some(later(delay)),
                    Action::AwaitChange => None,
                }
            }
            Err(err) if self.stopping => {
                tracing::warn!(container = %key, "reconcile failed: {err}");
                None
            }
            Err(err) => {
                let failures = self.failures.entry(key.clone()).or_insert(0);
                *failures = failures.saturating_add(1);
                let delay = self.backoff.delay(*failures);
                tracing::warn!(container = %key, "reconcile failed: {err}; retrying in {delay:?}");
                Some(later(delay))
            }
        };
        if self.stopping {
            return;
        }
        if held {
            self.schedule(key.clone(), Instant::now());
        }
        if let Some(at) = next {
            self.schedule(key, at);
        }
    }
}

/// The running reconciles, each a task, by key.
#[derive(Debug, Default)]
struct Running {
    tasks: JoinSet<Result<Action, String>>,
    keys: HashMap<Id, String>,
}

impl Running {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn start<F, E>(&mut self, reconcile: &F, key: String)
    where
        F: Fn(String) -> BoxFuture<'static, Result<Action, E>>,
        E: Display + Send + 'static,
    {
        let span = tracing::info_span!("reconcile", container = %key);
        let future = span.in_scope(|| reconcile(key.clone()));
        let task = self
            .tasks
            .spawn(async move { future.await.map_err(|err| err.to_string()) }.instrument(span));
        self.keys.insert(task.id(), key);
    }

    /// The next reconcile to finish, with its outcome; a panic counts as a failure.
    async fn next(&mut self) -> Option<(String, Result<Action, String>)> {
        loop {
            let (id, outcome) = match self.tasks.join_next_with_id().await? {
                Ok((id, outcome)) => (id, outcome),
                Err(err) => (err.id(), Err(panic_message(err))),
            };
            if let Some(key) = self.keys.remove(&id) {
                return Some((key, outcome));
            }
        }
    }
}

fn panic_message(err: JoinError) -> String {
    if !err.is_panic() {
        return "reconcile was cancelled".to_owned();
    }
    let payload = err.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("reconcile panicked: {message}")
}

/// `delay` from now; an absurd delay means about never (as in `tokio::time::sleep`).
fn later(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::FutureExt;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::sleep;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// When each reconcile started, in milliseconds since the test began.
    #[derive(Clone)]
    struct Calls {
        t0: Instant,
        log: Arc<Mutex<Vec<(String, u128)>>>,
    }

    impl Calls {
        fn new() -> Self {
            Calls {
                t0: Instant::now(),
                log: Arc::default(),
            }
        }

        fn record(&self, key: &str) {
            let at = self.t0.elapsed().as_millis();
            self.log.lock().unwrap().push((key.to_owned(), at));
        }

        fn of(&self, key: &str) -> Vec<u128> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, at)| *at)
                .collect()
        }

        fn count(&self) -> usize {
            self.log.lock().unwrap().len()
        }
    }

    /// Counts reconciles in flight and the most at once.
    #[derive(Clone, Default)]
    struct Gauge {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
    }

    impl Gauge {
        fn enter(&self) {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
        }

        fn leave(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }

        fn max(&self) -> usize {
            self.max.load(Ordering::SeqCst)
        }
    }

    struct Started {
        handle: Handle,
        stop: oneshot::Sender<()>,
        task: JoinHandle<bool>,
    }

    impl Started {
        async fn shutdown(self) -> bool {
            self.stop.send(()).unwrap();
            self.task.await.unwrap()
        }
    }

    fn start<F, E>(concurrency: usize, backoff: Backoff, grace: Duration, reconcile: F) -> Started
    where
        F: Fn(String) -> BoxFuture<'static, Result<Action, E>> + Send + Sync + 'static,
        E: Display + Send + 'static,
    {
        let (scheduler, handle) = Scheduler::new(concurrency, backoff);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(scheduler.run(reconcile, shutdown, grace));
        Started { handle, stop, task }
    }

    /// A reconcile that records its start, takes `duration` and asks for nothing more.
    fn recording(
        calls: &Calls,
        duration: Duration,
    ) -> impl Fn(String) -> BoxFuture<'static, Result<Action, String>> + use<> {
        let calls = calls.clone();
        move |key| {
            calls.record(&key);
            async move {
                sleep(duration).await;
                Ok(Action::AwaitChange)
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scheduling_a_key_five_times_before_ready_runs_it_once() {
        let calls = Calls::new();
        let s = start(4, Backoff::default(), S, recording(&calls, S));
        for _ in 0..5 {
            s.handle.schedule("web");
        }
        s.handle.ready();
        sleep(60 * S).await;
        assert_eq!(calls.of("web"), [0]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_of_several_times_wins() {
        let calls = Calls::new();
        let s = start(4, Backoff::default(), S, recording(&calls, S));
        let t0 = Instant::now();
        s.handle.schedule_at("web", t0 + 10 * S);
        s.handle.schedule_at("web", t0 + 3 * S);
        s.handle.schedule_at("web", t0 + 7 * S);
        s.handle.ready();
        sleep(60 * S).await;
        assert_eq!(calls.of("web"), [3000]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_due_while_running_runs_once_more_after_it() {
        let calls = Calls::new();
        let gauge = Gauge::default();
        let reconcile = {
            let (calls, gauge) = (calls.clone(), gauge.clone());
            move |key: String| {
                calls.record(&key);
                let gauge = gauge.clone();
                gauge.enter();
                async move {
                    sleep(5 * S).await;
                    gauge.leave();
                    Ok::<_, String>(Action::AwaitChange)
                }
                .boxed()
            }
        };
        let s = start(4, Backoff::default(), S, reconcile);
        s.handle.ready();
        s.handle.schedule("web");
        sleep(S).await;
        for _ in 0..3 {
            s.handle.schedule("web");
        }
        s.handle.schedule_after("web", S);
        sleep(60 * S).await;
        assert_eq!(calls.of("web"), [0, 5000]);
        assert_eq!(gauge.max(), 1);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_holds_and_every_key_runs() {
        let calls = Calls::new();
        let gauge = Gauge::default();
        let reconcile = {
            let (calls, gauge) = (calls.clone(), gauge.clone());
            move |key: String| {
                calls.record(&key);
                let gauge = gauge.clone();
                gauge.enter();
                async move {
                    sleep(S).await;
                    gauge.leave();
                    Ok::<_, String>(Action::AwaitChange)
                }
                .boxed()
            }
        };
        let s = start(3, Backoff::default(), S, reconcile);
        let keys: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        for key in &keys {
            s.handle.schedule(key);
        }
        s.handle.ready();
        sleep(60 * S).await;
        assert_eq!(gauge.max(), 3);
        for key in &keys {
            assert_eq!(calls.of(key).len(), 1, "{key}");
        }
        // Four rounds of one second: nobody waited longer than needed.
        assert_eq!(calls.of("c9"), [3000]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_a_success_resets_the_backoff() {
        let calls = Calls::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let reconcile = {
            let (calls, attempts) = (calls.clone(), attempts.clone());
            move |key: String| {
                calls.record(&key);
                let outcome = match attempts.fetch_add(1, Ordering::SeqCst) {
                    0..=2 | 4 => Err("engine busy"),
                    3 => Ok(Action::RequeueAfter(10 * S)),
                    _ => Ok(Action::AwaitChange),
                };
                async move { outcome }.boxed()
            }
        };
        let s = start(4, Backoff::default(), S, reconcile);
        s.handle.schedule("web");
        s.handle.ready();
        sleep(120 * S).await;
        // Failures at 0, 1, 3 s; success at 7 s asks for 17 s; that failure waits 1 s again.
        assert_eq!(calls.of("web"), [0, 1000, 3000, 7000, 17000, 18000]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_no_longer_than_the_cap() {
        let calls = Calls::new();
        let reconcile = {
            let calls = calls.clone();
            move |key: String| {
                calls.record(&key);
                async { Err::<Action, _>("no") }.boxed()
            }
        };
        let backoff = Backoff {
            base: S,
            cap: 3 * S,
        };
        let s = start(4, backoff, S, reconcile);
        s.handle.schedule("web");
        s.handle.ready();
        sleep(13 * S).await;
        assert_eq!(calls.of("web"), [0, 1000, 3000, 6000, 9000, 12000]);
        assert!(s.shutdown().await);
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..=11).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.delay(u32::MAX), backoff.cap);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried_with_backoff() {
        let calls = Calls::new();
        let reconcile = {
            let calls = calls.clone();
            move |key: String| {
                calls.record(&key);
                let first = calls.count() == 1;
                async move {
                    assert!(!first, "deliberate panic in a test reconcile");
                    Ok::<_, String>(Action::AwaitChange)
                }
                .boxed()
            }
        };
        let s = start(4, Backoff::default(), S, reconcile);
        s.handle.schedule("web");
        s.handle.ready();
        sleep(60 * S).await;
        assert_eq!(calls.of("web"), [0, 1000]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_reschedules_and_await_change_does_not() {
        let calls = Calls::new();
        let reconcile = {
            let calls = calls.clone();
            move |key: String| {
                calls.record(&key);
                let action = if key == "resync" {
                    Action::RequeueAfter(5 * S)
                } else {
                    Action::AwaitChange
                };
                async move { Ok::<_, String>(action) }.boxed()
            }
        };
        let s = start(4, Backoff::default(), S, reconcile);
        s.handle.schedule("resync");
        s.handle.schedule("idle");
        s.handle.ready();
        sleep(12 * S).await;
        assert_eq!(calls.of("resync"), [0, 5000, 10000]);
        assert_eq!(calls.of("idle"), [0]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_runs_before_ready() {
        let calls = Calls::new();
        let s = start(4, Backoff::default(), S, recording(&calls, S));
        s.handle.schedule("web");
        s.handle.schedule_after("db", 5 * S);
        sleep(3600 * S).await;
        assert_eq!(calls.count(), 0);
        s.handle.ready();
        sleep(S).await;
        assert_eq!(calls.of("web"), [3_600_000]);
        assert_eq!(calls.of("db"), [3_600_000]);
        assert!(s.shutdown().await);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_a_running_reconcile_and_starts_nothing_new() {
        let calls = Calls::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let reconcile = {
            let (calls, finished) = (calls.clone(), finished.clone());
            move |key: String| {
                calls.record(&key);
                let finished = finished.clone();
                async move {
                    sleep(3 * S).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(Action::RequeueAfter(S))
                }
                .boxed()
            }
        };
        let s = start(4, Backoff::default(), 10 * S, reconcile);
        s.handle.schedule("web");
        s.handle.schedule_after("db", 2 * S);
        s.handle.ready();
        sleep(S).await;
        let t0 = Instant::now();
        assert!(s.shutdown().await);
        assert_eq!(t0.elapsed(), 2 * S);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        sleep(60 * S).await;
        assert_eq!(calls.of("web"), [0]);
        assert_eq!(calls.of("db"), []);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_grace_period() {
        let finished = Arc::new(AtomicUsize::new(0));
        let reconcile = {
            let finished = finished.clone();
            move |_key: String| {
                let finished = finished.clone();
                async move {
                    sleep(60 * S).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(Action::AwaitChange)
                }
                .boxed()
            }
        };
        let s = start(4, Backoff::default(), 5 * S, reconcile);
        s.handle.schedule("web");
        s.handle.ready();
        sleep(S).await;
        let t0 = Instant::now();
        assert!(!s.shutdown().await);
        assert_eq!(t0.elapsed(), 5 * S);
        // The abandoned reconcile was aborted, not left running.
        sleep(120 * S).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    /// Captures formatted log lines.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_reconcile_runs_in_a_span_naming_its_container_and_failures_are_logged_once() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let attempts = Arc::new(AtomicUsize::new(0));
        let reconcile = {
            let attempts = attempts.clone();
            move |_key: String| {
                let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
                tracing::info!("called");
                async move {
                    sleep(S).await;
                    tracing::info!("after a wait");
                    if first {
                        Err("engine busy")
                    } else {
                        Ok(Action::AwaitChange)
                    }
                }
                .boxed()
            }
        };
        let s = start(4, Backoff::default(), S, reconcile);
        s.handle.schedule("web");
        s.handle.ready();
        sleep(60 * S).await;
        assert!(s.shutdown().await);
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.matches("reconcile{container=web}: ").count(),
            4,
            "{text}"
        );
        assert_eq!(text.matches("reconcile failed").count(), 1, "{text}");
        let failure = text.lines().find(|line| line.contains("reconcile failed"));
        let failure = failure.unwrap_or_default();
        assert!(failure.contains(" WARN "), "{text}");
        assert!(failure.contains("engine busy; retrying in 1s"), "{text}");
        assert!(failure.contains("container=web"), "{text}");
    }
}
