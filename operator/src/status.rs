//! The daemon's own health: `GET /v1/status` and `berth status` without a name.
//! Version and uptime, the manifest source and its last sync (health.rs, which
//! the source fills), and the containers' counts by phase as `berth get` shows
//! them.

use std::collections::BTreeMap;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Version;
use crate::health::{Source, SourceKind, Sync};
use crate::reconcile::Context;

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub version: Version,
    /// When the daemon started, Unix seconds.
    pub started_at: i64,
    pub uptime_seconds: u64,
    /// Where the manifests come from, the revision applied, the last sync and
    /// the last error (a directory, or a Git repository).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub source: Source,
    /// How many containers are in each phase (`berth get`'s PHASE column).
    pub phases: BTreeMap<String, usize>,
    pub containers: usize,
}

/// How many containers are in each phase, as `berth get` shows them (the
/// daemon's record merged with the monitor's status). Reads every status file:
/// call it off the async threads.
pub fn phase_counts(ctx: &Context) -> Result<BTreeMap<String, usize>, berth_state::Error> {
    let mut counts = BTreeMap::new();
    for item in crate::api::merged_items(ctx)? {
        *counts.entry(item.phase).or_insert(0) += 1;
    }
    Ok(counts)
}

/// The daemon's status now.
pub fn collect(ctx: &Context) -> Result<DaemonStatus, berth_state::Error> {
    let phases = phase_counts(ctx)?;
    let started_at = ctx
        .health
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(DaemonStatus {
        version: crate::api::version_now(),
        started_at,
        uptime_seconds: ctx.health.started.elapsed().map_or(0, |d| d.as_secs()),
        source: ctx.health.source(),
        containers: phases.values().sum(),
        phases,
    })
}

/// `berth status` without a name: the daemon's status, as text or JSON. An
/// error when no daemon answers: this is about the daemon itself.
pub fn print(state_dir: &std::path::Path, output: &str) -> anyhow::Result<()> {
    let client = crate::client::Client::new(state_dir);
    if !client.answers()? {
        bail!(
            "the daemon is not running: nothing answers on {} (start it with `berth daemon` \
             or `systemctl start berth`); `berth get` shows the containers without it",
            state_dir.join("berth.sock").display()
        );
    }
    let status: DaemonStatus = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client.get_json("/v1/status"))?;
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&status)?),
        _ => print!("{}", text(&status, crate::health::unix_now())),
    }
    Ok(())
}

/// The human form, one `Key: value` line each, as `describe` prints.
fn text(status: &DaemonStatus, now: i64) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<12}{value}\n"));
    let version = &status.version;
    line(
        "Version:",
        match &version.git_commit {
            Some(commit) => format!("{} (commit {commit})", version.version),
            None => version.version.clone(),
        },
    );
    line(
        "Uptime:",
        format!(
            "{} (since {})",
            duration(status.uptime_seconds),
            time(status.started_at)
        ),
    );
    let source = &status.source;
    let kind = match source.kind {
        SourceKind::Directory => "directory",
        SourceKind::Git => "git",
    };
    let mut where_ = format!("{kind} {}", source.location);
    if let Some(reference) = &source.reference {
        where_.push_str(&format!(", ref {reference}"));
    }
    if let Some(path) = &source.path {
        where_.push_str(&format!(", path {path}"));
    }
    line("Source:", where_);
    if source.kind == SourceKind::Git || source.revision.is_some() {
        line(
            "Revision:",
            source
                .revision
                .as_ref()
                .map_or("none applied yet".to_owned(), |r| {
                    format!("{} ({})", r.commit, time(r.time))
                }),
        );
    }
    line(
        "Last sync:",
        source
            .last_sync
            .as_ref()
            .map_or("not yet".to_owned(), |s| sync_text(s, now)),
    );
    line(
        "Last error:",
        source
            .last_error
            .as_ref()
            .map_or("none".to_owned(), |s| sync_text(s, now)),
    );
    let phases: Vec<String> = status
        .phases
        .iter()
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect();
    line(
        "Containers:",
        if phases.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", status.containers, phases.join(", "))
        },
    );
    out
}

fn sync_text(sync: &Sync, now: i64) -> String {
    let ago = duration(u64::try_from(now.saturating_sub(sync.at)).unwrap_or(0));
    let result = match (sync.ok, &sync.message) {
        (true, _) => "ok".to_owned(),
        (false, Some(message)) => format!("failed: {message}"),
        (false, None) => "failed".to_owned(),
    };
    format!("{} ({ago} ago), {result}", time(sync.at))
}

fn time(secs: i64) -> String {
    crate::client::rfc3339(u64::try_from(secs).unwrap_or(0))
}

/// `2d3h`, `4h5m`, `6m7s`, `8s`: the two largest units.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_their_two_largest_units() {
        assert_eq!(duration(8), "8s");
        assert_eq!(duration(367), "6m7s");
        assert_eq!(duration(4 * 3600 + 5 * 60 + 9), "4h5m");
        assert_eq!(duration(2 * 86_400 + 3 * 3600 + 1), "2d3h");
    }

    #[test]
    fn the_text_names_the_version_source_sync_and_counts() {
        let status = DaemonStatus {
            version: Version {
                version: "0.1.0".to_owned(),
                git_commit: Some("abc1234".to_owned()),
                api_version: "v1".to_owned(),
            },
            started_at: 1_795_944_600,
            uptime_seconds: 57,
            source: Source {
                kind: SourceKind::Git,
                location: "https://example.org/fleet.git".to_owned(),
                reference: Some("main".to_owned()),
                path: Some("devices".to_owned()),
                revision: None,
                last_sync: Some(Sync {
                    at: 1_795_944_650,
                    ok: false,
                    message: Some("cannot fetch".to_owned()),
                }),
                last_error: None,
            },
            phases: [("Running".to_owned(), 2), ("Failed".to_owned(), 1)].into(),
            containers: 3,
        };
        let text = text(&status, 1_795_944_657);
        for line in [
            "Version:    0.1.0 (commit abc1234)\n",
            "Uptime:     57s (since 2026-11-29T09:30:00Z)\n",
            "Source:     git https://example.org/fleet.git, ref main, path devices\n",
            "Revision:   none applied yet\n",
            "Last sync:  2026-11-29T09:30:50Z (7s ago), failed: cannot fetch\n",
            "Last error: none\n",
            "Containers: 3 (1 Failed, 2 Running)\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
