//! `spec.updateStrategy: {rollback: true, healthyFor}`: a changed spec is on
//! trial until it has stayed Running (and Ready) for `healthyFor`. If it exits,
//! fails to be created or started, or turns Unhealthy before that, the spec that
//! ran before is put back, with a `RolledBack` condition and event naming the
//! spec hash (and commit) that failed; that hash is not tried again until the
//! manifest changes.
//!
//! Every decision is written to the container's record (flushed) before it is
//! acted on: the spec to go back to and the trial (`Record::rollout`), then the
//! verdict (`Record::rolled_back`, `Record::last_good`). A daemon killed at any
//! point finds them and finishes the rollback or the update.

use std::time::Duration;

use berth_manifests::Container;
use berth_state::{Condition, Phase, Record, RolledBack, Rollout};

use crate::reconcile::{Context, Error, Observed, Step, StopFor, describe_exit};
use crate::scheduler::Action;

/// The condition (and event) of a rolled-back update.
pub const ROLLED_BACK: &str = "RolledBack";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rollback_on(container: &Container) -> bool {
    container.update_strategy.is_some_and(|u| u.rollback)
}

fn healthy_for(container: &Container) -> Duration {
    // The manifest fills in 60 s when `healthyFor` is not given.
    Duration::from_millis(
        container
            .update_strategy
            .map_or(60_000, |u| u.healthy_for_ms),
    )
}

/// `sha256:0123456789ab`: enough to tell specs apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..19).unwrap_or(hash)
}

/// The spec to run for `manifest`: the manifest's own, unless that very spec
/// was rolled back; then the last good one (with the manifest's state and
/// start order), until the manifest changes. Keeps the `RolledBack` condition
/// while it applies, and clears it once the manifest moved on.
pub fn effective(manifest: &Container, record: &mut Record) -> Container {
    let Some(failed) = record.rolled_back.clone() else {
        return manifest.clone();
    };
    let good = record
        .last_good
        .clone()
        .filter(|good| good.hash == failed.restored);
    let Some(mut good) = good.filter(|_| failed.hash == manifest.hash) else {
        // A new manifest: it applies normally.
        record.rolled_back = None;
        record.conditions.retain(|c| c.kind != ROLLED_BACK);
        return manifest.clone();
    };
    record.conditions.retain(|c| c.kind != ROLLED_BACK);
    record.conditions.push(Condition {
        kind: ROLLED_BACK.to_owned(),
        message: message(&failed),
        since: failed.at,
    });
    good.state = manifest.state;
    good.depends_on.clone_from(&manifest.depends_on);
    good.restart_with_dependency = manifest.restart_with_dependency;
    good.update_strategy = manifest.update_strategy;
    good
}

fn message(failed: &RolledBack) -> String {
    let commit = failed
        .revision
        .as_ref()
        .map(|r| format!(" (commit {})", r.commit))
        .unwrap_or_default();
    format!(
        "spec {}{commit} failed: {}; rolled back to {}, kept until the manifest changes",
        failed.hash, failed.reason, failed.restored
    )
}

/// Why the spec on trial failed, if it did: an exit of it, an Unhealthy check,
/// or a failed create or start.
fn failure(trial: &Rollout, observed: &Observed, record: &Record) -> Option<String> {
    if let Some(status) = observed.status.as_ref().filter(|s| s.hash == trial.hash) {
        if let Some(exit) = &status.last_exit
            && exit.reason != berth_runtime::ExitReason::Reboot
            && exit.at.saturating_add(1).saturating_mul(1000) >= trial.since_ms
        {
            return Some(format!(
                "it did not stay Running: {}",
                describe_exit(status)
            ));
        }
        if let Some(health) = &status.health
            && health.state == berth_runtime::HealthState::Unhealthy
        {
            let output = health.last_output.trim();
            return Some(format!("its health check failed: {output}"));
        }
    }
    if record.phase == Phase::Failed && !observed.running {
        let why = record.message.clone().unwrap_or_default();
        return Some(format!("it could not be started: {why}"));
    }
    None
}

/// Before a step: a spec on trial that failed is rolled back (the answer is
/// the reconcile's).
pub fn check(
    ctx: &Context,
    name: &str,
    effective: Option<&Container>,
    observed: &Observed,
    record: &mut Record,
) -> Result<Option<Action>, Error> {
    let Some(trial) = record.rollout.clone() else {
        return Ok(None);
    };
    if effective.is_none_or(|e| e.hash != trial.hash) {
        return Ok(None);
    }
    match failure(&trial, observed, record) {
        Some(reason) => roll_back(ctx, name, record, trial, reason).map(Some),
        None => Ok(None),
    }
}

/// Before a step that applies a changed spec under `rollback: true`: the spec
/// that ran is kept to go back to, and the new one is on trial from now.
pub fn begin(
    ctx: &Context,
    manifest: Option<&Container>,
    effective: Option<&Container>,
    step: &Step,
    observed: &Observed,
    record: &mut Record,
) -> Result<(), Error> {
    let (Some(manifest), Some(effective), Some(created)) =
        (manifest, effective, observed.created.as_ref())
    else {
        return Ok(());
    };
    let applies = matches!(
        step,
        Step::Restart | Step::Reconfigure | Step::Recreate | Step::Stop(StopFor::NewRootfs)
    );
    if !applies
        || created.container.hash == effective.hash
        || effective.hash != manifest.hash
        || !rollback_on(manifest)
    {
        return Ok(());
    }
    if record
        .rollout
        .as_ref()
        .is_some_and(|r| r.hash == effective.hash)
    {
        return Ok(());
    }
    // A trial superseded before it proved itself goes back to what ran before it.
    let previous = match record.rollout.take() {
        Some(trial) => trial.previous,
        None => created.container.clone(),
    };
    if previous.hash == effective.hash {
        // Back to the spec that ran before the trial: nothing to prove.
        ctx.store.put(record)?;
        return Ok(());
    }
    record.rollout = Some(Rollout {
        previous: previous.clone(),
        hash: effective.hash.clone(),
        revision: record.revision.clone(),
        since_ms: now_ms(),
    });
    record.last_good = Some(previous);
    // What the last spec's run left (a failed start) is no verdict on this one.
    record.phase = Phase::Pending;
    record.message = Some(format!(
        "updating: the new spec must stay Running for {:?}",
        healthy_for(effective)
    ));
    ctx.store.put(record)?;
    Ok(())
}

/// Before a Recreate (a new rootfs source): under a trial, the container that
/// ran is set aside rather than destroyed; back to the spec that is aside (a
/// rollback), it is taken back rather than made again.
pub async fn recreate(
    ctx: &Context,
    name: &str,
    step: &Step,
    effective: Option<&Container>,
    record: &mut Record,
) -> Result<Option<Action>, Error> {
    let (Step::Recreate, Some(effective)) = (step, effective) else {
        return Ok(None);
    };
    let previous = record
        .rollout
        .as_ref()
        .filter(|trial| trial.hash == effective.hash)
        .map(|trial| trial.previous.hash.clone());
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    let want = effective.hash.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<_, berth_runtime::Error> {
        if runtime
            .aside_config(&n)?
            .is_some_and(|aside| aside.container.hash == want)
        {
            runtime.destroy(&n)?;
            runtime.take_back(&n)?;
            return Ok(Some(
                "rootfs source changed back: the container kept aside is in place again",
            ));
        }
        let ran = runtime.config(&n)?.container.hash;
        if previous.is_some_and(|previous| previous == ran) {
            runtime.set_aside(&n)?;
            return Ok(Some(
                "rootfs source changed: the old container is kept aside until the new one \
                 has proved itself",
            ));
        }
        Ok(None)
    })
    .await??;
    let Some(message) = done else {
        return Ok(None);
    };
    ctx.event(name, "Recreating", message);
    record.completed = false;
    record.restarts = 0;
    record.backoff_delay_secs = None;
    record.backoff_until = None;
    ctx.store.put(record)?;
    Ok(Some(Action::RequeueAfter(Duration::ZERO)))
}

/// Before a container is pruned: what was kept aside for it goes too.
pub async fn forget(ctx: &Context, name: &str, step: &Step) -> Result<(), Error> {
    if !matches!(step, Step::Prune | Step::Forget) {
        return Ok(());
    }
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    tokio::task::spawn_blocking(move || runtime.drop_aside(&n)).await??;
    Ok(())
}

fn roll_back(
    ctx: &Context,
    name: &str,
    record: &mut Record,
    trial: Rollout,
    reason: String,
) -> Result<Action, Error> {
    let failed = RolledBack {
        hash: trial.hash,
        revision: trial.revision,
        reason,
        restored: trial.previous.hash.clone(),
        at: crate::reconcile::now(),
    };
    let text = message(&failed);
    record.conditions.retain(|c| c.kind != ROLLED_BACK);
    record.conditions.push(Condition {
        kind: ROLLED_BACK.to_owned(),
        message: text.clone(),
        since: failed.at,
    });
    record.last_good = Some(trial.previous);
    record.rollout = None;
    record.rolled_back = Some(failed);
    // The spec put back starts at once, not after the failed one's back-off.
    record.backoff_until = None;
    record.backoff_delay_secs = None;
    record.phase = Phase::Pending;
    record.message = Some(format!("rolling back: {text}"));
    ctx.store.put(record)?;
    ctx.event(name, ROLLED_BACK, &text);
    Ok(Action::RequeueAfter(Duration::ZERO))
}

/// After a step: a failed start of the spec on trial rolls back at once; one
/// that has stayed Running (and Ready) for `healthyFor` is kept; otherwise the
/// container is looked at again when its `healthyFor` ends.
pub async fn after(
    ctx: &Context,
    name: &str,
    effective: Option<&Container>,
    record: &mut Record,
    action: Action,
) -> Result<Action, Error> {
    let Some(trial) = record.rollout.clone() else {
        return Ok(action);
    };
    let Some(effective) = effective.filter(|e| e.hash == trial.hash) else {
        return Ok(action);
    };
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    let (status, running) = tokio::task::spawn_blocking(move || {
        (
            runtime.status(&n).ok().flatten(),
            runtime.is_running(&n).unwrap_or(false),
        )
    })
    .await?;
    let observed = Observed {
        status: status.clone(),
        running,
        ..Observed::default()
    };
    if let Some(reason) = failure(&trial, &observed, record) {
        return roll_back(ctx, name, record, trial, reason);
    }
    let Some(status) = status
        .filter(|s| s.hash == trial.hash && s.phase == berth_runtime::Phase::Running && running)
    else {
        // Not running it yet: its start, or its exit, reconciles again.
        return Ok(action);
    };
    let window = healthy_for(effective);
    let since = trial
        .since_ms
        .max(status.started_at.unwrap_or(0).saturating_mul(1000));
    let elapsed = Duration::from_millis(now_ms().saturating_sub(since));
    if elapsed < window {
        let left = window - elapsed + Duration::from_millis(50);
        return Ok(match action {
            Action::RequeueAfter(d) if d <= left => action,
            _ => Action::RequeueAfter(left),
        });
    }
    if !crate::order::is_ready(effective, &status) {
        let health = status
            .health
            .as_ref()
            .map_or("no verdict".to_owned(), |h| format!("{:?}", h.state));
        let reason = format!("it was not Healthy after healthyFor {window:?} ({health})");
        return roll_back(ctx, name, record, trial, reason);
    }
    record.last_good = Some(effective.clone());
    record.rollout = None;
    ctx.store.put(record)?;
    // What was kept aside for a rollback is not needed any more.
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    if let Err(e) = tokio::task::spawn_blocking(move || runtime.drop_aside(&n)).await? {
        tracing::warn!(
            container = name,
            "cannot remove the container kept aside: {e}"
        );
    }
    ctx.event(
        name,
        "UpdateKept",
        &format!(
            "spec {} stayed Running for {window:?}: it is the last good spec now",
            short(&trial.hash)
        ),
    );
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: &str, strategy: &str) -> Container {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
             command: [{command}]\n{strategy}"
        );
        let parsed = berth_manifests::parse_str("/m/web.yaml".as_ref(), &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.containers.into_iter().next().unwrap()
    }

    #[test]
    fn a_rolled_back_spec_runs_the_last_good_one_until_the_manifest_changes() {
        let strategy = "  updateStrategy: {rollback: true, healthyFor: 3s}\n";
        let good = container("/bin/good", strategy);
        let bad = container("/bin/bad", strategy);
        let mut record = Record::new("web");
        record.last_good = Some(good.clone());
        record.rolled_back = Some(RolledBack {
            hash: bad.hash.clone(),
            revision: Some(berth_state::Revision {
                commit: "abc123".to_owned(),
                time: 0,
            }),
            reason: "it did not stay Running: exited with code 1".to_owned(),
            restored: good.hash.clone(),
            at: 7,
        });
        let mut stopped = bad.clone();
        stopped.state = berth_manifests::RunState::Stopped;
        let run = effective(&stopped, &mut record);
        assert_eq!(run.hash, good.hash);
        assert_eq!(run.spec.command, ["/bin/good"]);
        assert_eq!(run.state, berth_manifests::RunState::Stopped);
        let condition = &record.conditions[0];
        assert_eq!(condition.kind, ROLLED_BACK);
        assert!(
            condition.message.contains(&bad.hash)
                && condition.message.contains("commit abc123")
                && condition.message.contains("exited with code 1"),
            "{condition:?}"
        );
        // Again: one condition, not two.
        effective(&bad, &mut record);
        assert_eq!(record.conditions.len(), 1);

        let fixed = container("/bin/fixed", strategy);
        assert_eq!(effective(&fixed, &mut record).hash, fixed.hash);
        assert!(record.rolled_back.is_none());
        assert!(record.conditions.is_empty());
    }

    #[test]
    fn an_exit_of_the_spec_on_trial_is_a_failure_and_one_of_the_old_spec_is_not() {
        let trial = Rollout {
            previous: container("/bin/good", ""),
            hash: "sha256:new".to_owned(),
            revision: None,
            since_ms: 1_000_000,
        };
        let exited = |hash: &str, at: u64| Observed {
            status: Some(berth_runtime::Status {
                phase: berth_runtime::Phase::Failed,
                monitor_pid: None,
                init_pid: None,
                init_start_time: None,
                started_at: Some(at),
                reboots: 0,
                last_exit: Some(berth_runtime::LastExit {
                    reason: berth_runtime::ExitReason::Exited,
                    code: Some(1),
                    signal: None,
                    at,
                }),
                error: None,
                hash: hash.to_owned(),
                cgroups: None,
                health: None,
            }),
            ..Observed::default()
        };
        let record = Record::new("web");
        let failed = failure(&trial, &exited("sha256:new", 1_001), &record);
        assert_eq!(
            failed.as_deref(),
            Some("it did not stay Running: exited with code 1")
        );
        assert_eq!(failure(&trial, &exited("sha256:old", 1_001), &record), None);
        // An exit of an earlier run of this spec, before the trial began.
        assert_eq!(failure(&trial, &exited("sha256:new", 900), &record), None);
        // A failing health check of the spec on trial, while it runs.
        let mut unhealthy = exited("sha256:new", 1_001);
        if let Some(status) = &mut unhealthy.status {
            status.phase = berth_runtime::Phase::Running;
            status.last_exit = None;
            status.health = Some(berth_runtime::Health {
                state: berth_runtime::HealthState::Unhealthy,
                failing_streak: 3,
                last_output: "connection refused\n".to_owned(),
                checked_at: None,
                since: None,
            });
        }
        unhealthy.running = true;
        assert_eq!(
            failure(&trial, &unhealthy, &record).as_deref(),
            Some("its health check failed: connection refused")
        );
        let mut failed_start = Record::new("web");
        failed_start.phase = Phase::Failed;
        failed_start.message = Some("cannot start: no /bin/bad".to_owned());
        assert!(
            failure(&trial, &Observed::default(), &failed_start)
                .is_some_and(|m| m.contains("no /bin/bad"))
        );
    }
}
