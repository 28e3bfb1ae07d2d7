//! Start order (`spec.dependsOn`): a container starts once every dependency is
//! Running and Ready; when several go at once, dependents stop before what they
//! depend on; `restartWithDependency` restarts dependents after their dependency.
//!
//! Nothing here polls an idle daemon: a waiting container is woken by its
//! dependency's reconcile (the one that started it), and only a dependency that
//! runs but is not yet Healthy is looked at again, at its check's interval.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use berth_manifests::{Container, ParsedFile};
use berth_runtime::{HealthState, Status};
use berth_state::{Phase, Record};

use crate::reconcile::{Context, Error, Step, StopFor};
use crate::scheduler::Action;

/// How often a stop that waits for its dependents to stop first looks again
/// (only while such a stop is under way).
const STOP_ORDER_POLL: Duration = Duration::from_millis(200);
/// The longest wait before looking again at a dependency that runs but is not
/// yet Healthy (its check's interval when shorter).
const HEALTH_POLL_MAX: Duration = Duration::from_secs(10);

/// Is `container` (the spec `status` runs) ready for what depends on it: Running
/// and, when it has a health check, Healthy.
pub fn is_ready(container: &Container, status: &Status) -> bool {
    status.phase == berth_runtime::Phase::Running
        && (container.spec.healthcheck.is_none()
            || status
                .health
                .as_ref()
                .is_some_and(|h| h.state == HealthState::Healthy))
}

/// The dependency problems of a set of definitions (every valid one, selected
/// here or not): unknown names and cycles, as `berth validate` reports them
/// (`FILE:LINE:COLUMN: spec.dependsOn: dependency cycle a -> b -> a`), by name.
pub fn dependency_problems<'a>(
    containers: impl IntoIterator<Item = &'a Container>,
) -> BTreeMap<String, String> {
    let containers: Vec<Container> = containers.into_iter().cloned().collect();
    if containers.iter().all(|c| c.depends_on.is_empty()) {
        return BTreeMap::new();
    }
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let mut files = [ParsedFile {
        path: "-".into(),
        containers,
        diagnostics: Vec::new(),
    }];
    berth_manifests::check_dependencies(&mut files);
    let [file] = files;
    let kept: HashSet<&str> = file.containers.iter().map(|c| c.name.as_str()).collect();
    // The dropped containers, in their order, each with its diagnostic.
    names
        .iter()
        .filter(|n| !kept.contains(n.as_str()))
        .cloned()
        .zip(file.diagnostics.iter().map(ToString::to_string))
        .collect()
}

/// The desired containers that depend on `name`.
fn dependents_of(ctx: &Context, name: &str) -> Vec<Container> {
    ctx.desired
        .lock()
        .map(|set| {
            set.names()
                .iter()
                .filter_map(|n| set.get(n))
                .filter(|d| d.container.depends_on.iter().any(|dep| dep == name))
                .map(|d| d.container.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// What `name`'s dependency looks like now: `None` when ready, else why not, and
/// whether to look again after a while (it runs, not yet Healthy).
fn not_ready(ctx: &Context, dep: &str) -> Option<(String, Option<Duration>)> {
    let desired = ctx
        .desired
        .lock()
        .ok()
        .map(|set| set.get(dep).is_some())
        .unwrap_or(false);
    let config = ctx.runtime.config(dep).ok();
    let status = ctx.runtime.status(dep).ok().flatten();
    match (config, status) {
        (Some(config), Some(status))
            if status.hash == config.container.hash && is_ready(&config.container, &status) =>
        {
            None
        }
        (Some(config), Some(status)) if status.phase == berth_runtime::Phase::Running => {
            let interval = config
                .container
                .spec
                .healthcheck
                .as_ref()
                .map_or(HEALTH_POLL_MAX, |h| Duration::from_millis(h.interval_ms))
                .clamp(Duration::from_millis(200), HEALTH_POLL_MAX);
            let health = status
                .health
                .as_ref()
                .map_or("no verdict yet".to_owned(), |h| format!("{:?}", h.state));
            Some((format!("{dep} (Running, {health})"), Some(interval)))
        }
        (_, status) => {
            let phase = ctx
                .store
                .get(dep)
                .ok()
                .flatten()
                .map(|r| r.phase.to_string())
                .or_else(|| status.map(|s| format!("{:?}", s.phase)))
                .unwrap_or_else(|| "not created".to_owned());
            let note = if desired {
                String::new()
            } else {
                ", not desired on this device".to_owned()
            };
            Some((format!("{dep} ({phase}{note})"), None))
        }
    }
}

/// Runs a blocking look at the runtime off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Before a step is applied: hold it when the start order says so. `Some` is the
/// reconcile's answer (the container waits, with its reason in its record);
/// `None`: go on with the step.
pub async fn hold(
    ctx: &Context,
    name: &str,
    step: &Step,
    desired: Option<&crate::desired::Desired>,
    record: &mut Record,
) -> Result<Option<Action>, Error> {
    let held_for = ctx.held.lock().ok().and_then(|held| {
        held.iter()
            .find(|(_, dependents)| dependents.iter().any(|d| d == name))
            .map(|(dependency, _)| dependency.clone())
    });
    if let Some(dependency) = held_for {
        let message = format!("waiting for {dependency} to restart (restartWithDependency)");
        save(ctx, record, Phase::Pending, message)?;
        return Ok(Some(Action::AwaitChange));
    }
    if let Step::Stop(StopFor::Prune | StopFor::StateStopped) = step {
        return hold_stop(ctx, name, record).await;
    }
    let Some(desired) = desired else {
        return Ok(None);
    };
    let starts = matches!(step, Step::Create | Step::Start { .. });
    let replaces = matches!(
        step,
        Step::Restart | Step::Stop(StopFor::NewRootfs | StopFor::NewImage)
    );
    if let Some(problem) = &desired.blocked {
        // Never started with a broken order; what runs keeps running.
        if starts {
            let message = format!("not started: {problem}");
            save(ctx, record, Phase::Pending, message)?;
            return Ok(Some(Action::AwaitChange));
        }
        if replaces {
            let message = format!("keeps running its current spec: {problem}");
            save(ctx, record, Phase::Running, message)?;
            return Ok(Some(Action::AwaitChange));
        }
        return Ok(None);
    }
    let runs = desired.container.state == berth_manifests::RunState::Running;
    if starts && runs && !desired.container.depends_on.is_empty() {
        let c = ctx.clone();
        let deps = desired.container.depends_on.clone();
        let waiting: Vec<(String, Option<Duration>)> =
            blocking(move || deps.iter().filter_map(|d| not_ready(&c, d)).collect()).await?;
        if !waiting.is_empty() {
            let list: Vec<&str> = waiting.iter().map(|(w, _)| w.as_str()).collect();
            let message = format!("waiting for {}", list.join(", "));
            save(ctx, record, Phase::Pending, message)?;
            let again = waiting.iter().filter_map(|(_, d)| *d).min();
            return Ok(Some(
                again.map_or(Action::AwaitChange, Action::RequeueAfter),
            ));
        }
    }
    let restarts = matches!(step, Step::Start { restart: true } | Step::Restart);
    if restarts {
        return hold_for_dependents(ctx, name, record).await;
    }
    Ok(None)
}

/// Saves the record only when what it says changed: a waiting container's
/// reconciles write nothing new.
fn save(ctx: &Context, record: &mut Record, phase: Phase, message: String) -> Result<(), Error> {
    if record.phase == phase && record.message.as_deref() == Some(message.as_str()) {
        return Ok(());
    }
    if record.phase != phase || phase == Phase::Pending {
        ctx.event(&record.name, "Waiting", &message);
    }
    record.phase = phase;
    record.message = Some(message);
    ctx.store.put(record)?;
    Ok(())
}

/// A stop of a container that others going at the same time depend on waits for
/// them to stop first (removal of a set in one change, `state: Stopped` of both).
async fn hold_stop(
    ctx: &Context,
    name: &str,
    record: &mut Record,
) -> Result<Option<Action>, Error> {
    let c = ctx.clone();
    let n = name.to_owned();
    let first: Vec<String> = blocking(move || going_dependents(&c, &n)).await?;
    if first.is_empty() {
        return Ok(None);
    }
    let message = format!("stopping after its dependents: {}", first.join(", "));
    if record.managed {
        save(ctx, record, Phase::Stopping, message)?;
    }
    Ok(Some(Action::RequeueAfter(STOP_ORDER_POLL)))
}

/// Running containers that depend on `name` and are going too: not desired any
/// more, or desired stopped.
fn going_dependents(ctx: &Context, name: &str) -> Vec<String> {
    let mut going = Vec::new();
    for other in ctx.runtime.list().unwrap_or_default() {
        let Ok(config) = ctx.runtime.config(&other) else {
            continue;
        };
        if !config.container.depends_on.iter().any(|d| d == name) {
            continue;
        }
        if !ctx.runtime.is_running(&other).unwrap_or(false) {
            continue;
        }
        let stays = ctx
            .desired
            .lock()
            .ok()
            .and_then(|set| set.get(&other).map(|d| d.container.state))
            .is_some_and(|state| state == berth_manifests::RunState::Running);
        if !stays {
            going.push(other);
        }
    }
    going.sort();
    going
}

/// Before `name` restarts: its running dependents with `restartWithDependency`
/// (and theirs, dependents first) stop, and stay stopped until it runs again.
async fn hold_for_dependents(
    ctx: &Context,
    name: &str,
    record: &mut Record,
) -> Result<Option<Action>, Error> {
    let c = ctx.clone();
    let n = name.to_owned();
    let order: Vec<String> = blocking(move || restart_set(&c, &n)).await?;
    if order.is_empty() {
        return Ok(None);
    }
    let message = format!("stopping its dependents first: {}", order.join(", "));
    let phase = record.phase;
    save(ctx, record, phase, message)?;
    let Ok(mut stopping) = ctx.stopping.lock() else {
        return Ok(Some(Action::AwaitChange));
    };
    let order: Vec<String> = order
        .into_iter()
        .filter(|d| stopping.insert(d.clone()))
        .collect();
    drop(stopping);
    if let Ok(mut held) = ctx.held.lock() {
        held.entry(name.to_owned())
            .or_default()
            .extend(order.iter().cloned());
    }
    let ctx = ctx.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        for dependent in &order {
            let runtime = ctx.runtime.clone();
            let d = dependent.clone();
            if let Err(e) = blocking(move || runtime.stop(&d, None)).await {
                ctx.event(dependent, "FailedStop", &e.to_string());
            } else {
                let message =
                    format!("{name} restarts (restartWithDependency): started again after it");
                ctx.event(dependent, "Stopped", &message);
            }
            // Its own reconcile (its monitor's exit) says it waits: see `hold`.
            ctx.scheduler.schedule(dependent);
        }
        // The dependents stay marked as stopping (their reconciles do nothing)
        // until `name` runs again: see `after`.
        ctx.scheduler.schedule(&name);
    });
    Ok(Some(Action::AwaitChange))
}

/// The running dependents that restart with `name`, dependents of dependents
/// first (the order they stop in).
fn restart_set(ctx: &Context, name: &str) -> Vec<String> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    visit(ctx, name, &mut order, &mut seen);
    order
}

fn visit(ctx: &Context, name: &str, order: &mut Vec<String>, seen: &mut BTreeSet<String>) {
    for dependent in dependents_of(ctx, name) {
        if !dependent.restart_with_dependency || !seen.insert(dependent.name.clone()) {
            continue;
        }
        if !ctx.runtime.is_running(&dependent.name).unwrap_or(false) {
            continue;
        }
        visit(ctx, &dependent.name, order, seen);
        order.push(dependent.name);
    }
}

/// After a step: once `name` runs, the dependents held for its restart are let
/// go, and those waiting for it are woken if it is ready.
pub async fn after(ctx: &Context, name: &str) {
    let dependents = dependents_of(ctx, name);
    let held = ctx
        .held
        .lock()
        .ok()
        .and_then(|held| held.get(name).cloned())
        .unwrap_or_default();
    if dependents.is_empty() && held.is_empty() {
        return;
    }
    let c = ctx.clone();
    let n = name.to_owned();
    let ready = blocking(move || {
        let config = c.runtime.config(&n).ok()?;
        let status = c.runtime.status(&n).ok().flatten()?;
        Some((
            status.phase == berth_runtime::Phase::Running,
            status.hash == config.container.hash && is_ready(&config.container, &status),
        ))
    })
    .await
    .ok()
    .flatten();
    let (running, ready) = ready.unwrap_or((false, false));
    if running && !held.is_empty() {
        if let Ok(mut all) = ctx.held.lock() {
            all.remove(name);
        }
        if let Ok(mut stopping) = ctx.stopping.lock() {
            for d in &held {
                stopping.remove(d);
            }
        }
        for d in &held {
            ctx.scheduler.schedule(d);
        }
    }
    if ready {
        for d in dependents {
            let waiting = ctx
                .store
                .get(&d.name)
                .ok()
                .flatten()
                .is_none_or(|r| r.phase != Phase::Running);
            if waiting {
                ctx.scheduler.schedule(&d.name);
            }
        }
    }
}

/// The order to stop `names` in at a daemon-driven shutdown: every container
/// before those it depends on.
pub fn stop_order(containers: &[Container]) -> Vec<Vec<String>> {
    let names: BTreeSet<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let mut left: BTreeMap<&str, &Container> =
        containers.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut waves = Vec::new();
    while !left.is_empty() {
        // Those nothing left depends on go now.
        let depended: BTreeSet<&str> = left
            .values()
            .flat_map(|c| c.depends_on.iter().map(String::as_str))
            .filter(|d| names.contains(d))
            .collect();
        let mut wave: Vec<String> = left
            .keys()
            .filter(|n| !depended.contains(*n))
            .map(|n| (*n).to_owned())
            .collect();
        if wave.is_empty() {
            // A cycle (refused elsewhere): the rest at once.
            wave = left.keys().map(|n| (*n).to_owned()).collect();
        }
        for n in &wave {
            left.remove(n.as_str());
        }
        waves.push(wave);
    }
    waves
}

/// `--stop-on-exit`: every running container the daemon manages is stopped,
/// in waves, each container before those it depends on.
pub async fn stop_all(ctx: &Context) {
    let c = ctx.clone();
    let running: Vec<Container> = blocking(move || {
        c.store
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.managed && c.runtime.is_running(&r.name).unwrap_or(false))
            .filter_map(|r| c.runtime.config(&r.name).ok().map(|s| s.container))
            .collect()
    })
    .await
    .unwrap_or_default();
    for wave in stop_order(&running) {
        tracing::info!("--stop-on-exit: stopping {}", wave.join(", "));
        let stops: Vec<_> = wave
            .into_iter()
            .map(|name| {
                let runtime = ctx.runtime.clone();
                let ctx = ctx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = runtime.stop(&name, None);
                    match result {
                        Ok(_) => ctx.event(&name, "Stopped", "the daemon stops (--stop-on-exit)"),
                        Err(e) => ctx.event(&name, "FailedStop", &e.to_string()),
                    }
                })
            })
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::Health;

    fn container(name: &str, extra: &str) -> Container {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  \
             command: [/bin/sleep, infinity]\n{extra}"
        );
        let parsed = berth_manifests::parse_str(format!("/m/{name}.yaml").as_ref(), &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.containers.into_iter().next().unwrap()
    }

    fn status(phase: berth_runtime::Phase, health: Option<HealthState>) -> Status {
        Status {
            phase,
            monitor_pid: None,
            init_pid: None,
            init_start_time: None,
            started_at: None,
            reboots: 0,
            last_exit: None,
            error: None,
            hash: String::new(),
            cgroups: None,
            health: health.map(|state| Health {
                state,
                failing_streak: 0,
                last_output: String::new(),
                checked_at: None,
                since: None,
            }),
        }
    }

    #[test]
    fn ready_is_running_and_healthy_when_checked() {
        use berth_runtime::Phase::{Running, Starting};
        let plain = container("a", "");
        let checked = container("b", "  healthcheck: {exec: [/bin/true]}\n");
        assert!(is_ready(&plain, &status(Running, None)));
        assert!(!is_ready(&plain, &status(Starting, None)));
        assert!(!is_ready(&checked, &status(Running, None)));
        assert!(!is_ready(
            &checked,
            &status(Running, Some(HealthState::Starting))
        ));
        assert!(!is_ready(
            &checked,
            &status(Running, Some(HealthState::Unhealthy))
        ));
        assert!(is_ready(
            &checked,
            &status(Running, Some(HealthState::Healthy))
        ));
    }

    #[test]
    fn unknown_names_and_cycles_are_problems_of_their_members_only() {
        let set = [
            container("a", "  dependsOn: [b]\n"),
            container("b", "  dependsOn: [c]\n"),
            container("c", "  dependsOn: [a]\n"),
            container("d", "  dependsOn: [a]\n"),
            container("e", "  dependsOn: [nowhere]\n"),
            container("f", ""),
        ];
        let problems = dependency_problems(&set);
        assert_eq!(
            problems.keys().collect::<Vec<_>>(),
            ["a", "b", "c", "e"],
            "{problems:?}"
        );
        assert!(
            problems["b"].ends_with("spec.dependsOn: dependency cycle a -> b -> c -> a"),
            "{problems:?}"
        );
        assert!(problems["b"].starts_with("/m/b.yaml:4:9: "), "{problems:?}");
        assert!(problems["e"].contains("\"nowhere\""), "{problems:?}");
    }

    #[test]
    fn dependents_stop_before_what_they_depend_on() {
        let set = [
            container("a", "  dependsOn: [b]\n"),
            container("b", "  dependsOn: [c]\n"),
            container("c", ""),
            container("x", "  dependsOn: [c, gone]\n"),
        ];
        assert_eq!(
            stop_order(&set),
            [
                vec!["a".to_owned(), "x".to_owned()],
                vec!["b".to_owned()],
                vec!["c".to_owned()]
            ]
        );
    }
}
