//! The daemon's stops, restarts and the watcher's fast path, each timed against a
//! running `berth daemon --concurrency 2` (with `--prune-grace 0s` when the binary
//! has that flag, so that a removal is timed without the grace):
//!
//! 1. removal: N manifests of containers whose PID 1 (`sh -c 'while :; do sleep 1;
//!    done'`) ignores SIGTERM, `stopTimeout: 2s`, removed at once; timed until
//!    `berth get` (polled every 50 ms) lists none;
//! 2. edit burst: N such containers (`stopTimeout: 1s`) running, all N manifests
//!    replaced at once (renamed over) by ones with another command; each
//!    container's downtime runs from its old init's death (its `/proc/PID/stat`
//!    polled every 5 ms by a thread) to its new init's start (`initStartTime` of
//!    `berth status`, in clock ticks); median and max;
//! 3. fast path: one manifest (`sleep infinity`) written to a staging directory on
//!    the same filesystem and renamed into the watched one, timed until `berth get`
//!    (polled every 10 ms) shows it `Running` with a pid, then removed and waited
//!    for; beside `berth create -f FILE` + `berth start NAME` by hand (both
//!    commands' spawn-to-exit times added; stop and destroy untimed), run before
//!    the daemon starts. p50, p90 and p99 (the drop → Running figure of issue 13)
//!    over 50 rounds each, after 2 warm-ups.
//!
//! `cargo bench -p berth-operator --bench reconcile` (as root); N = 20.
//! `BERTH_BENCH_BIN=/path/to/berth` measures another binary (an older build) with
//! the same code. Nothing is asserted; the run fails (exit 1) only if containers do
//! not get where they are waited for within the timeouts. The load average is
//! printed before and after: other work on the machine shows in every figure.
//!
//! Everything lives in a fresh temp dir and under the cgroup parent
//! `berth-bench-reconcile-<pid>`; the guard of `harness.rs` removes the manifests
//! and waits for the daemon to stop and destroy the containers, SIGTERMs the
//! daemon, stops and destroys whatever is left and rmdirs the cgroups, also on
//! failure, panic or Ctrl-C. Run without `--bench` (as `cargo test --benches`
//! does), it is a smoke run: N = 3, 2 rounds, no warm-ups.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;
#[path = "harness.rs"]
mod harness;

use common::{INTERRUPTED, check_interrupted};
use harness::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CONTAINERS: usize = 20;
const SMOKE_CONTAINERS: usize = 3;
const ROUNDS: usize = 50;
const SMOKE_ROUNDS: usize = 2;
const WARMUPS: usize = 2;
const CONCURRENCY: usize = 2;

const REMOVAL_POLL: Duration = Duration::from_millis(50);
const EDIT_POLL: Duration = Duration::from_millis(50);
const FAST_POLL: Duration = Duration::from_millis(10);
const DEATH_POLL: Duration = Duration::from_millis(5);
/// The edited containers must all run their new init within this.
const EDIT_TIMEOUT: Duration = Duration::from_secs(180);
/// One fast-path round (to Running, or to gone) must finish within this.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

const FAST_NAME: &str = "bench-fast";

/// A container whose PID 1 is a shell that ignores SIGTERM (no handler, and PID 1
/// of its namespace), so a stop waits the whole `stop_timeout`.
fn stubborn(name: &str, stop_timeout: &str, sleep: u32) -> String {
    format!(
        "apiVersion: berth.dev/v1\n\
         kind: Container\n\
         metadata:\n  name: {name}\n\
         spec:\n  \
           command: [\"/bin/sh\", \"-c\", \"while :; do sleep {sleep}; done\"]\n  \
           stopTimeout: {stop_timeout}\n  \
           resources: {{pids: 16}}\n"
    )
}

fn fast(name: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\n\
         kind: Container\n\
         metadata:\n  name: {name}\n\
         spec:\n  \
           command: [\"/bin/sleep\", \"infinity\"]\n  \
           stopTimeout: 0s\n  \
           resources: {{pids: 16}}\n"
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot), or None
/// for a process that is gone or a zombie (its init has died).
fn live_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A container's init as `berth status NAME` shows it: pid and start (ticks).
fn init_of(bench: &Bench, name: &str) -> Result<(i32, u64), String> {
    let status = bench
        .run_berth(&["status", name], COMMAND_TIMEOUT)?
        .ok("berth status")?;
    let json: serde_json::Value = serde_json::from_str(&status.stdout)
        .map_err(|e| format!("berth status {name} printed no JSON: {e}"))?;
    let pid = json["initPid"].as_i64().and_then(|p| i32::try_from(p).ok());
    let start = json["initStartTime"].as_u64();
    match (pid, start) {
        (Some(pid), Some(start)) => Ok((pid, start)),
        _ => Err(format!(
            "berth status {name}: no initPid/initStartTime: {}",
            status.stdout
        )),
    }
}

/// Does this binary's daemon take `--prune-grace`? (Older ones prune at once.)
fn has_prune_grace(bench: &Bench) -> Result<bool, String> {
    let help = bench
        .run_berth(&["daemon", "--help"], COMMAND_TIMEOUT)?
        .ok("berth daemon --help")?;
    Ok(help.stdout.contains("--prune-grace"))
}

/// 1. Remove N manifests of SIGTERM-ignoring containers at once: seconds until
///    none is listed.
fn removal(bench: &mut Bench, count: usize) -> Result<f64, String> {
    let names: Vec<String> = (0..count).map(|i| format!("bench-rm{i:03}")).collect();
    bench.stage(&names, |name| stubborn(name, "2s", 1))?;
    bench.drop_and_wait(&names)?;
    let took = bench.remove_all(REMOVE_TIMEOUT, REMOVAL_POLL)?;
    Ok(took.as_secs_f64())
}

/// How the edit burst went: each container's downtime, and when the last new
/// init started after the renames.
struct EditBurst {
    downtimes: Vec<f64>,
    last_start: f64,
}

/// Watch the old inits (pid, start time) every `DEATH_POLL`; returns each one's
/// first moment seen dead (CLOCK_BOOTTIME seconds), or None if it outlived
/// `EDIT_TIMEOUT` or the run was cut short.
fn watch_deaths(
    inits: Vec<(i32, u64)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<f64>>> {
    std::thread::spawn(move || {
        let mut deaths: Vec<Option<f64>> = vec![None; inits.len()];
        let deadline = Instant::now() + EDIT_TIMEOUT;
        while deaths.iter().any(Option::is_none)
            && Instant::now() < deadline
            && !stop.load(Ordering::SeqCst)
            && !INTERRUPTED.load(Ordering::SeqCst)
        {
            let now = boottime();
            for ((pid, start), death) in inits.iter().zip(deaths.iter_mut()) {
                if death.is_none() && live_start_time(*pid) != Some(*start) {
                    *death = Some(now);
                }
            }
            std::thread::sleep(DEATH_POLL);
        }
        deaths
    })
}

/// 2. N SIGTERM-ignoring containers (`stopTimeout: 1s`) running; all N manifests
///    replaced at once with another command.
fn edit_burst(bench: &mut Bench, count: usize) -> Result<EditBurst, String> {
    let names: Vec<String> = (0..count).map(|i| format!("bench-ed{i:03}")).collect();
    bench.stage(&names, |name| stubborn(name, "1s", 1))?;
    bench.drop_and_wait(&names)?;
    let mut old = Vec::new();
    for name in &names {
        check_interrupted()?;
        old.push(init_of(bench, name)?);
    }

    bench.stage(&names, |name| stubborn(name, "1s", 2))?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_deaths(old.clone(), Arc::clone(&stop));
    let t0_boot = boottime();
    let t0 = Instant::now();
    for name in &names {
        let file = format!("{name}.yaml");
        let to = bench.manifests.join(&file);
        std::fs::rename(bench.staging.join(&file), &to)
            .map_err(|e| format!("rename to {}: {e}", to.display()))?;
    }

    // Until every container runs a new init.
    let old_pids: BTreeMap<&str, i64> = names
        .iter()
        .zip(&old)
        .map(|(name, (pid, _))| (name.as_str(), i64::from(*pid)))
        .collect();
    let waited = loop {
        if let Err(e) = check_interrupted() {
            break Err(e);
        }
        let poll = Instant::now();
        if let Ok(items) = bench.items() {
            let restarted = items
                .iter()
                .filter(|item| {
                    let name = item["name"].as_str().unwrap_or_default();
                    item["phase"] == "Running"
                        && item["pid"]
                            .as_i64()
                            .is_some_and(|pid| old_pids.get(name).is_some_and(|&old| old != pid))
                })
                .count();
            if restarted == names.len() {
                break Ok(());
            }
            if poll >= t0 + EDIT_TIMEOUT {
                break Err(format!(
                    "{restarted} of {} restarted after {}s; daemon log (tail):\n{}",
                    names.len(),
                    EDIT_TIMEOUT.as_secs(),
                    bench.log_tail(15)
                ));
            }
        }
        if !bench.daemon_alive() {
            break Err("the daemon exited during the edit burst".to_owned());
        }
        std::thread::sleep(EDIT_POLL.saturating_sub(poll.elapsed()));
    };
    if waited.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let deaths = watcher.join().map_err(|_| "the death watcher panicked")?;
    waited?;

    let ticks = clock_ticks_per_second();
    let mut downtimes = Vec::new();
    let mut last_start = f64::NEG_INFINITY;
    for (name, death) in names.iter().zip(deaths) {
        let death = death.ok_or_else(|| format!("{name}: its old init was never seen dead"))?;
        let (_, start) = init_of(bench, name)?;
        let start = start as f64 / ticks;
        downtimes.push(start - death);
        last_start = last_start.max(start - t0_boot);
    }
    bench.remove_all(REMOVE_TIMEOUT, REMOVAL_POLL)?;
    Ok(EditBurst {
        downtimes,
        last_start,
    })
}

/// `berth create -f FILE` + `berth start NAME`, spawn to exit, in seconds; then
/// stop and destroy, untimed.
fn by_hand_round(bench: &Bench, file: &str) -> Result<f64, String> {
    let create = bench
        .run_berth(&["create", "-f", file], CREATE_TIMEOUT)?
        .ok("berth create")?;
    let start = bench
        .run_berth(&["start", FAST_NAME], CREATE_TIMEOUT)?
        .ok("berth start")?;
    bench
        .run_berth(&["stop", FAST_NAME, "--timeout", "0s"], STOP_TIMEOUT)?
        .ok("berth stop")?;
    bench
        .run_berth(&["destroy", FAST_NAME], STOP_TIMEOUT)?
        .ok("berth destroy")?;
    Ok((create.elapsed + start.elapsed).as_secs_f64())
}

fn by_hand(bench: &Bench, rounds: usize, warmups: usize) -> Result<Vec<f64>, String> {
    let file: PathBuf = bench.tmp_path().join("by-hand.yaml");
    std::fs::write(&file, fast(FAST_NAME)).map_err(|e| format!("{}: {e}", file.display()))?;
    let file = file.to_str().ok_or("temp path is not UTF-8")?.to_owned();
    let mut times = Vec::new();
    for round in 0..warmups + rounds {
        check_interrupted()?;
        let took = by_hand_round(bench, &file)?;
        if round >= warmups {
            times.push(took);
        }
    }
    Ok(times)
}

/// Seconds since `t0` at which the fast container was first listed (in any
/// phase), and at which `done` held for it.
struct Polled {
    listed: Option<f64>,
    done: f64,
}

/// Poll `berth get` every `FAST_POLL` until `done` holds for the fast container
/// (None when it is not listed).
fn poll_fast(
    bench: &mut Bench,
    t0: Instant,
    what: &str,
    done: impl Fn(Option<&serde_json::Value>) -> bool,
) -> Result<Polled, String> {
    let mut listed = None;
    loop {
        check_interrupted()?;
        let poll = Instant::now();
        if let Ok(items) = bench.items() {
            let item = items.iter().find(|item| item["name"] == FAST_NAME);
            if item.is_some() && listed.is_none() {
                listed = Some(t0.elapsed().as_secs_f64());
            }
            if done(item) {
                return Ok(Polled {
                    listed,
                    done: t0.elapsed().as_secs_f64(),
                });
            }
        }
        if !bench.daemon_alive() {
            return Err(format!("the daemon exited waiting for {FAST_NAME} {what}"));
        }
        if poll >= t0 + ROUND_TIMEOUT {
            return Err(format!(
                "{FAST_NAME} not {what} after {}s; daemon log (tail):\n{}",
                ROUND_TIMEOUT.as_secs(),
                bench.log_tail(15)
            ));
        }
        std::thread::sleep(FAST_POLL.saturating_sub(poll.elapsed()));
    }
}

/// Rename one manifest into the watched directory: seconds until `berth get`
/// lists it and until it shows it Running with a pid; then remove it and wait
/// until it is gone.
fn rename_round(bench: &mut Bench) -> Result<(f64, f64), String> {
    let file = format!("{FAST_NAME}.yaml");
    let (from, to) = (bench.staging.join(&file), bench.manifests.join(&file));
    bench.stage(&[FAST_NAME.to_owned()], fast)?;
    let t0 = Instant::now();
    std::fs::rename(&from, &to).map_err(|e| format!("rename to {}: {e}", to.display()))?;
    let polled = poll_fast(bench, t0, "Running", |item| {
        item.is_some_and(|item| item["phase"] == "Running" && item["pid"].as_i64().is_some())
    })?;
    std::fs::remove_file(&to).map_err(|e| format!("{}: {e}", to.display()))?;
    poll_fast(bench, Instant::now(), "gone", |item| item.is_none())?;
    Ok((polled.listed.unwrap_or(polled.done), polled.done))
}

/// Per round: (rename → listed, rename → Running with a pid).
fn renamed(
    bench: &mut Bench,
    rounds: usize,
    warmups: usize,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (mut listed, mut running) = (Vec::new(), Vec::new());
    for round in 0..warmups + rounds {
        let (seen, took) = rename_round(bench)?;
        if round >= warmups {
            listed.push(seen);
            running.push(took);
        }
    }
    Ok((listed, running))
}

fn ms(seconds: f64) -> String {
    format!("{:.1}", seconds * 1000.0)
}

fn benchmark(bench: &mut Bench, count: usize, rounds: usize, warmups: usize) -> Result<(), String> {
    let prune_grace = has_prune_grace(bench)?;
    let mut daemon_args = vec!["--concurrency".to_owned(), CONCURRENCY.to_string()];
    if prune_grace {
        daemon_args.extend(["--prune-grace".to_owned(), "0s".to_owned()]);
    }
    println!(
        "berth reconcile benchmark: {} (N = {count}, {rounds} rounds after {warmups} warm-ups); \
         daemon {}; state {}, cgroup parent {}",
        bench.berth.display(),
        daemon_args.join(" "),
        bench.state_dir.display(),
        bench.cgroup_parent
    );
    if !prune_grace {
        println!("  (this binary has no --prune-grace: it prunes a removed manifest at once)");
    }
    let load_before = load_average();
    println!(
        "  load average before: {load_before} (2 CPUs here; other work shows in every figure)"
    );

    let hand = sorted(by_hand(bench, rounds, warmups)?);
    bench.start_daemon(&daemon_args)?;
    let listed = bench.phases()?;
    if !listed.is_empty() {
        return Err(format!(
            "a fresh daemon lists containers: {:?}",
            listed.keys()
        ));
    }
    let (listed, rename) = renamed(bench, rounds, warmups)?;
    let (listed, rename) = (sorted(listed), sorted(rename));
    let removed = removal(bench, count)?;
    let edit = edit_burst(bench, count)?;
    let downtimes = sorted(edit.downtimes);
    let load_after = load_average();

    let row = |label: &str, text: String| println!("{label:<34} {text}");
    println!();
    row(
        &format!("removal of {count} (stopTimeout 2s)"),
        format!(
            "{removed:.2} s from the removes until none listed (polled every {} ms)",
            REMOVAL_POLL.as_millis()
        ),
    );
    row(
        &format!("edit burst of {count} (stopTimeout 1s)"),
        format!(
            "downtime median {:.2} s, max {:.2} s; last new init +{:.2} s after the renames",
            percentile(&downtimes, 50.0),
            downtimes[downtimes.len() - 1],
            edit.last_start
        ),
    );
    row(
        "rename → Running with a pid",
        format!(
            "p50 {} ms, p90 {} ms, p99 {} ms over {} rounds (polled every {} ms)",
            ms(percentile(&rename, 50.0)),
            ms(percentile(&rename, 90.0)),
            ms(percentile(&rename, 99.0)),
            rename.len(),
            FAST_POLL.as_millis()
        ),
    );
    row(
        "  of which rename → listed",
        format!(
            "p50 {} ms, p90 {} ms (first poll listing it, any phase)",
            ms(percentile(&listed, 50.0)),
            ms(percentile(&listed, 90.0))
        ),
    );
    row(
        "by hand: create -f + start",
        format!(
            "p50 {} ms, p90 {} ms",
            ms(percentile(&hand, 50.0)),
            ms(percentile(&hand, 90.0))
        ),
    );
    row(
        "rename p50 / by-hand p50",
        format!(
            "{:.2} (target within 1.5)",
            percentile(&rename, 50.0) / percentile(&hand, 50.0)
        ),
    );
    println!("load average before {load_before}, after {load_after}");

    println!();
    println!("bench: removal_s={removed:.2} n={count}");
    println!(
        "bench: edit_downtime_median_s={:.2} edit_downtime_max_s={:.2} n={count}",
        percentile(&downtimes, 50.0),
        downtimes[downtimes.len() - 1]
    );
    println!(
        "bench: rename_running_p50_ms={} rename_running_p90_ms={} rename_running_p99_ms={} n={}",
        ms(percentile(&rename, 50.0)),
        ms(percentile(&rename, 90.0)),
        ms(percentile(&rename, 99.0)),
        rename.len()
    );
    println!(
        "bench: rename_listed_p50_ms={} rename_listed_p90_ms={}",
        ms(percentile(&listed, 50.0)),
        ms(percentile(&listed, 90.0))
    );
    println!(
        "bench: by_hand_p50_ms={} by_hand_p90_ms={}",
        ms(percentile(&hand, 50.0)),
        ms(percentile(&hand, 90.0))
    );
    Ok(())
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench reconcile: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (count, rounds, warmups) = if full {
        (CONTAINERS, ROUNDS, WARMUPS)
    } else {
        (SMOKE_CONTAINERS, SMOKE_ROUNDS, 0)
    };

    common::catch_interrupts();

    let mut bench = Bench::new("berth-bench-reconcile");
    let result = benchmark(&mut bench, count, rounds, warmups);
    drop(bench);
    if let Err(e) = result {
        eprintln!("bench reconcile: FAILED: {e}");
        std::process::exit(if INTERRUPTED.load(Ordering::SeqCst) {
            130
        } else {
            1
        });
    }
}
