//! The daemon's side of `spec.healthcheck`: the checks run in each container's
//! monitor (runtime health.rs), which tells the daemon of every change; an
//! Unhealthy container under `restartPolicy: Always|OnFailure` is restarted, as
//! the kubelet restarts one whose liveness probe fails, with the crash back-off.

use berth_manifests::{Container, RestartPolicy};
use berth_runtime::{HealthState, Status};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reconcile::Context;

/// A container's health as `berth get -o json`, `describe` and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemHealth {
    /// `Starting`, `Healthy` or `Unhealthy`.
    pub state: String,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last check's output, cut to 4 KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_output: String,
    /// Unix seconds of the last check, and of the last change of `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

impl ItemHealth {
    /// The health of a running container's status (`None`: no check, or not running).
    pub fn of(status: &Status) -> Option<ItemHealth> {
        let health = status.health.as_ref()?;
        Some(ItemHealth {
            state: format!("{:?}", health.state),
            failing_streak: health.failing_streak,
            last_output: health.last_output.clone(),
            checked_at: health.checked_at,
            since: health.since,
        })
    }
}

/// The record's conditions, and `Unhealthy` (with the check's output) while a
/// running container's checks say so.
pub fn with_condition(
    mut conditions: Vec<berth_state::Condition>,
    live: Option<&Status>,
) -> Vec<berth_state::Condition> {
    if let Some(health) = live
        .and_then(|s| s.health.as_ref())
        .filter(|h| h.state == HealthState::Unhealthy)
    {
        conditions.push(berth_state::Condition {
            kind: "Unhealthy".to_owned(),
            message: health.last_output.clone(),
            since: health.since.unwrap_or_default(),
        });
    }
    conditions
}

/// The phase as the table shows it: `Running (healthy)`.
pub fn phase_text(phase: &str, health: Option<&ItemHealth>) -> String {
    match health {
        Some(health) if phase == "Running" => {
            format!("{phase} ({})", health.state.to_ascii_lowercase())
        }
        _ => phase.to_owned(),
    }
}

/// Whether a running container is to be restarted for its health.
pub fn restart_for_health(desired: &Container, status: Option<&Status>) -> bool {
    desired.spec.restart_policy != RestartPolicy::Never
        && status.is_some_and(|s| s.phase == berth_runtime::Phase::Running && is_unhealthy(s))
}

/// Its last health verdict was Unhealthy: a run that ended so did not succeed,
/// whatever its exit (the daemon stopped it).
pub fn is_unhealthy(status: &Status) -> bool {
    status
        .health
        .as_ref()
        .is_some_and(|h| h.state == HealthState::Unhealthy)
}

/// How a run ended, saying so when it was stopped for being Unhealthy.
pub fn with_verdict(status: &Status, exit: String) -> String {
    if status.last_exit.is_some() && is_unhealthy(status) {
        return format!("{exit}, stopped as unhealthy");
    }
    exit
}

/// The `Unhealthy` event's message: the streak and the check's output.
pub fn unhealthy_message(status: Option<&Status>) -> String {
    let Some(health) = status.and_then(|s| s.health.as_ref()) else {
        return "its health check failed".to_owned();
    };
    let output = if health.last_output.is_empty() {
        "(no output)"
    } else {
        health.last_output.as_str()
    };
    format!(
        "health check failed {} times in a row: {output}",
        health.failing_streak
    )
}

/// Follow the health of `name`'s monitor, when its spec has a check: each
/// change reconciles it. Ends when the monitor exits (it closes the stream).
pub fn follow(ctx: &Context, name: &str) {
    let checked = crate::reconcile::desired_container(ctx, name)
        .is_some_and(|c| c.spec.healthcheck.is_some());
    if !checked {
        return;
    }
    let ctx = ctx.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        if let Err(e) = watch(&ctx, &name).await {
            tracing::debug!(container = %name, "following its health: {e}");
        }
    });
}

async fn watch(ctx: &Context, name: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let socket = ctx
        .runtime
        .dir(name)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .monitor_socket();
    let socket = berth_runtime::SocketPath::new(&socket)?;
    let mut stream = tokio::net::UnixStream::connect(socket.as_path()).await?;
    stream
        .write_all(berth_runtime::monitor::WATCH_REQUEST.as_bytes())
        .await?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    // The first answer is the state now: one already Unhealthy is acted on too.
    let mut last = None;
    while let Some(line) = lines.next_line().await? {
        let Ok(status) = serde_json::from_str::<Status>(&line) else {
            continue;
        };
        // A verdict reached (a streak alone changes nothing here).
        let state = status.health.map(|h| h.state);
        if state != last && matches!(state, Some(HealthState::Healthy | HealthState::Unhealthy)) {
            ctx.scheduler.schedule(name);
        }
        last = state;
    }
    Ok(())
}

/// `describe`'s lines for it.
pub fn describe(health: &ItemHealth) {
    let ago = |at: Option<u64>| {
        at.map_or("-".to_owned(), |at| {
            format!("{}s ago", crate::reconcile::now().saturating_sub(at))
        })
    };
    println!(
        "Health:    {} (since {}; failing streak {}; last check {})",
        health.state,
        ago(health.since),
        health.failing_streak,
        ago(health.checked_at)
    );
    if !health.last_output.is_empty() {
        println!("  Last output:");
        for line in health.last_output.lines() {
            println!("    {line}");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct HealthLabels {
    container: String,
    state: String,
}

/// `berth_container_health{container, state}`: each state of each checked,
/// running container, 1 for the one it is in (kube-state-metrics' way), so that
/// a series does not come and go with the state.
pub fn metric(
    items: &[crate::api::Item],
) -> prometheus_client::metrics::family::Family<
    HealthLabels,
    prometheus_client::metrics::gauge::Gauge,
> {
    let family = prometheus_client::metrics::family::Family::<
        HealthLabels,
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    for item in items {
        let Some(health) = &item.health else {
            continue;
        };
        for state in ["Starting", "Healthy", "Unhealthy"] {
            family
                .get_or_create(&HealthLabels {
                    container: item.name.clone(),
                    state: state.to_owned(),
                })
                .set(i64::from(health.state == state));
        }
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Created, Observed, Step, decide};
    use berth_runtime::{ExitReason, Health, LastExit, Origin, Phase as Run};
    use berth_state::Record;

    const NOW: u64 = 1_000_000;

    fn checked(policy: &str) -> Container {
        let text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
             command: [/bin/web]\n  restartPolicy: {policy}\n  healthcheck: {{tcp: 80}}\n"
        );
        let parsed = berth_manifests::parse_str("/m/web.yaml".as_ref(), &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.containers.into_iter().next().unwrap()
    }

    fn observed(c: &Container, phase: Run, state: HealthState, stopped: bool) -> Observed {
        Observed {
            created: Some(Created {
                origin: Origin::Manifest,
                container: c.clone(),
                image: None,
            }),
            running: !stopped,
            stopping: false,
            status: Some(Status {
                phase,
                monitor_pid: None,
                init_pid: None,
                init_start_time: None,
                started_at: Some(NOW - 5),
                reboots: 0,
                last_exit: stopped.then_some(LastExit {
                    reason: ExitReason::StopRequested,
                    code: None,
                    signal: Some("SIGTERM".to_owned()),
                    at: NOW - 1,
                }),
                error: None,
                hash: c.hash.clone(),
                cgroups: None,
                health: Some(Health {
                    state,
                    failing_streak: 3,
                    last_output: "connection refused".to_owned(),
                    checked_at: Some(NOW - 1),
                    since: Some(NOW - 1),
                }),
            }),
            stored_image: None,
        }
    }

    fn managed() -> Record {
        let mut record = Record::new("web");
        record.managed = true;
        record
    }

    #[test]
    fn an_unhealthy_container_is_restarted_unless_its_policy_is_never() {
        for policy in ["Always", "OnFailure"] {
            let c = checked(policy);
            let seen = observed(&c, Run::Running, HealthState::Unhealthy, false);
            assert_eq!(
                decide(Some(&c), &seen, &managed(), NOW),
                Step::RestartUnhealthy,
                "{policy}"
            );
            // Stopped for it: not a success, so started again (with the back-off).
            let seen = observed(&c, Run::Stopped, HealthState::Unhealthy, true);
            assert_eq!(
                decide(Some(&c), &seen, &managed(), NOW),
                Step::Start { restart: true },
                "{policy}"
            );
            let mut backing_off = managed();
            backing_off.backoff_until = Some(NOW + 10);
            assert_eq!(
                decide(Some(&c), &seen, &backing_off, NOW),
                Step::BackOff { until: NOW + 10 },
                "{policy}"
            );
        }
        let never = checked("Never");
        let seen = observed(&never, Run::Running, HealthState::Unhealthy, false);
        assert_eq!(decide(Some(&never), &seen, &managed(), NOW), Step::Adopt);
        for state in [HealthState::Starting, HealthState::Healthy] {
            let c = checked("Always");
            let seen = observed(&c, Run::Running, state, false);
            assert_eq!(decide(Some(&c), &seen, &managed(), NOW), Step::Adopt);
        }
    }

    #[test]
    fn the_table_shows_health_beside_a_running_phase_only() {
        let health = ItemHealth {
            state: "Unhealthy".to_owned(),
            failing_streak: 3,
            last_output: String::new(),
            checked_at: None,
            since: None,
        };
        assert_eq!(phase_text("Running", Some(&health)), "Running (unhealthy)");
        assert_eq!(phase_text("Stopping", Some(&health)), "Stopping");
        assert_eq!(phase_text("Running", None), "Running");
    }
}
