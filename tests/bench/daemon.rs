//! The daemon under a burst, at rest and after a crash:
//!
//! - converge: 10, then 100, then 500 manifests renamed at once into the watched
//!   directory of a running `berth daemon`, each timed until `berth get` shows
//!   them all `Running`, and removed (waited for) before the next;
//! - memory, with the 100 running: the daemon's VmRSS, VmHWM (its peak) and Pss,
//!   and that of the containers' monitors (Pss: a process's share of the pages it
//!   shares), beside the monitor's target (under 2 MiB);
//! - idle wake-ups: the context switches (voluntary + nonvoluntary, from
//!   `/proc/PID/task/*/status`) of the daemon per second over 30 s with 0 and with
//!   100 containers running, by thread name (sled's I/O threads `sled-io-N` show as
//!   such), and of one monitor over the same window; threads are tracked by tid, so
//!   one that exits in the window counts up to its last sample (every 0.5 s);
//! - restore: with the 100 running, the daemon is SIGKILLed (by pid) and a new one
//!   started on the same state dir; timed from its spawn until `berth get` shows
//!   all 100 `Running`, and how many got a new init (restarts the restore caused:
//!   must be 0, or the run fails).
//!
//! `cargo bench -p berth-operator --bench daemon` (as root). The manifests are
//! written to a staging directory first and renamed into the watched one in a tight
//! loop; the clock starts at the first rename, and `berth get -o json` is polled
//! every 100 ms, so the converge and restore times are at that resolution. Nothing
//! runs in the idle windows but reads of /proc (which do not wake the daemon).
//! The run fails (exit 1) if the containers are not all `Running` within 5
//! minutes. `BERTH_BENCH_CONCURRENCY=N` passes `--concurrency N` to the daemon
//! (default: the daemon's own, the number of CPUs); `BERTH_BENCH_BIN=/path/to/berth`
//! measures that binary instead of the one cargo built. Drop → Running p50/p99 of
//! single manifests is in `reconcile.rs` (its fast path, 50 rounds).
//!
//! Everything lives in a fresh temp dir and under the cgroup parent
//! `berth-bench-daemon-<pid>`. A guard removes the manifests and waits for the
//! daemon to stop and destroy the containers, SIGTERMs the daemon, stops and
//! destroys whatever container is left, and rmdirs those cgroups, also on failure,
//! panic or Ctrl-C. Run without `--bench` (as `cargo test --benches` does), it is a
//! smoke run: 10 manifests, idle windows of 2 s, the restore of those 10.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;
#[path = "harness.rs"]
mod harness;

use common::{INTERRUPTED, check_interrupted};
use harness::*;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

const CONTAINERS: usize = 100;
/// Converge is timed for each of these, in turn, each removed before the next.
const SIZES: [usize; 3] = [10, CONTAINERS, 500];
const SMOKE_CONTAINERS: usize = 10;
/// The idle windows, over which context switches are counted.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const SMOKE_IDLE_WINDOW: Duration = Duration::from_secs(2);

/// What one container monitor should stay under, resident.
const MONITOR_TARGET_KIB: u64 = 2048;

fn manifest(name: &str) -> String {
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

/// Context switches (voluntary + nonvoluntary) of each thread of `pid`, by tid:
/// (thread name, switches), from `/proc/PID/task/*/status`. A thread that exits
/// while being read is left out.
fn task_switches(pid: u32) -> Result<BTreeMap<u32, (String, u64)>, String> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut threads = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut name = String::new();
        let mut switches = 0;
        for line in status.lines() {
            if let Some(value) = line.strip_prefix("Name:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += value.trim().parse::<u64>().unwrap_or(0);
            }
        }
        threads.insert(tid, (name, switches));
    }
    Ok(threads)
}

/// What each watched process did in one window: switches per thread name
/// (threads of one name added), and how many threads had that name.
#[derive(Debug, Default)]
struct Wakeups {
    by_name: BTreeMap<String, (usize, u64)>,
    total: u64,
}

/// Watch the context switches of `pids` for `window`, reading their threads every
/// `SAMPLE` (reading /proc does not wake them; the bench runs nothing else
/// meanwhile). Tracked by tid: a thread born in the window counts from 0, one that
/// exits counts up to its last sample, so none makes a total negative.
fn watch_wakeups(pids: &[u32], window: Duration) -> Result<Vec<Wakeups>, String> {
    const SAMPLE: Duration = Duration::from_millis(500);
    let mut first: Vec<BTreeMap<u32, (String, u64)>> = pids
        .iter()
        .map(|&pid| task_switches(pid))
        .collect::<Result<_, _>>()?;
    let mut last = first.clone();
    let started = std::time::Instant::now();
    while started.elapsed() < window {
        check_interrupted()?;
        std::thread::sleep(SAMPLE.min(window.saturating_sub(started.elapsed())));
        for (i, &pid) in pids.iter().enumerate() {
            for (tid, (name, switches)) in task_switches(pid)? {
                first[i].entry(tid).or_insert_with(|| (name.clone(), 0));
                last[i].insert(tid, (name, switches));
            }
        }
    }
    Ok(first
        .iter()
        .zip(&last)
        .map(|(first, last)| {
            let mut wakeups = Wakeups::default();
            for (tid, (name, end)) in last {
                let begin = first.get(tid).map_or(0, |(_, s)| *s);
                let delta = end.saturating_sub(begin);
                let entry = wakeups.by_name.entry(name.clone()).or_default();
                entry.0 += 1;
                entry.1 += delta;
                wakeups.total += delta;
            }
            wakeups
        })
        .collect())
}

fn per_second(count: u64, window: Duration) -> f64 {
    count as f64 / window.as_secs_f64()
}

/// `12.3/s in total: tokio-runtime-worker ×2 4.0/s, sled-io-0 1.0/s, ...`
fn wakeup_text(wakeups: &Wakeups, window: Duration) -> String {
    let mut names: Vec<(&String, &(usize, u64))> = wakeups.by_name.iter().collect();
    names.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
    format!(
        "{:.1}/s in total: {}",
        per_second(wakeups.total, window),
        names
            .iter()
            .map(|(name, (threads, count))| {
                let times = if *threads > 1 {
                    format!(" ×{threads}")
                } else {
                    String::new()
                };
                format!("{name}{times} {:.1}/s", per_second(*count, window))
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The containers' init pids as the daemon lists them, by name.
fn init_pids(bench: &Bench) -> Result<BTreeMap<String, i64>, String> {
    Ok(bench
        .items()?
        .iter()
        .filter_map(|item| Some((item["name"].as_str()?.to_owned(), item["pid"].as_i64()?)))
        .collect())
}

/// SIGKILL the daemon (by pid) with `names` running, start a new one on the same
/// state dir and time until it lists them all Running; and how many of them got
/// a new init (a restart the restore caused; must be 0).
fn restore(
    bench: &mut Bench,
    names: &[String],
    args: &[String],
) -> Result<(Duration, usize), String> {
    let before = init_pids(bench)?;
    let Some(mut daemon) = bench.daemon.take() else {
        return Err("no daemon to kill".to_owned());
    };
    kill(pid_of(&daemon), Signal::SIGKILL).map_err(|e| format!("SIGKILL the daemon: {e}"))?;
    daemon
        .wait()
        .map_err(|e| format!("wait for the killed daemon: {e}"))?;
    let t0 = Instant::now();
    bench.start_daemon(args)?;
    let deadline = t0 + RUNNING_TIMEOUT;
    loop {
        check_interrupted()?;
        let phases = bench.phases()?;
        if names
            .iter()
            .all(|name| phases.get(name).is_some_and(|(p, _)| p == "Running"))
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not all {} Running {}s after the daemon's restart ({})",
                names.len(),
                RUNNING_TIMEOUT.as_secs(),
                histogram(names, &phases)
            ));
        }
        std::thread::sleep(POLL);
    }
    let took = t0.elapsed();
    let after = init_pids(bench)?;
    let restarted = names
        .iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .count();
    Ok((took, restarted))
}

fn benchmark(
    bench: &mut Bench,
    sizes: &[usize],
    main_size: usize,
    window: Duration,
) -> Result<(), String> {
    let concurrency = std::env::var("BERTH_BENCH_CONCURRENCY")
        .ok()
        .map(|n| {
            n.parse::<usize>()
                .map_err(|e| format!("BERTH_BENCH_CONCURRENCY={n}: {e}"))
        })
        .transpose()?;
    println!(
        "berth daemon benchmark: converge of {sizes:?} manifests dropped at once (host template, sleep infinity, pids 16); \
         idle windows of {} s; restore of {main_size} after a SIGKILL; concurrency {}; state {}, cgroup parent {}",
        window.as_secs(),
        concurrency.map_or_else(|| "default (CPUs)".to_owned(), |n| n.to_string()),
        bench.state_dir.display(),
        bench.cgroup_parent
    );
    let daemon_args: Vec<String> = concurrency
        .map(|n| vec!["--concurrency".to_owned(), n.to_string()])
        .unwrap_or_default();
    bench.start_daemon(&daemon_args)?;
    let listed = bench.phases()?;
    if !listed.is_empty() {
        return Err(format!(
            "a fresh daemon lists containers: {:?}",
            listed.keys()
        ));
    }
    let idle = proc_memory(bench.daemon_pid().unwrap())?;
    // Let the start-up settle before the idle window.
    std::thread::sleep(Duration::from_secs(1));
    println!("  idle window, 0 containers ({} s)...", window.as_secs());
    let idle_wakeups = watch_wakeups(&[bench.daemon_pid().unwrap()], window)?;

    let row = |label: &str, text: String| println!("{label:<22} {text}");
    let mut converged = Vec::new();
    let mut main_report = None;
    for &count in sizes {
        let names: Vec<String> = (0..count)
            .map(|i| format!("bench-n{count}-c{i:03}"))
            .collect();
        bench.stage(&names, manifest)?;
        let burst = bench.drop_and_wait(&names)?;
        converged.push((count, burst.all_running));
        if count == main_size {
            let daemon_pid = bench.daemon_pid().unwrap();
            let daemon = proc_memory(daemon_pid)?;
            let monitors = bench.monitors(&names)?;
            std::thread::sleep(Duration::from_secs(1));
            println!(
                "  idle window, {count} containers ({} s)...",
                window.as_secs()
            );
            let wakeups = watch_wakeups(&[daemon_pid, monitors[0].pid], window)?;
            println!("  restore: SIGKILL the daemon, start another...");
            let restored = restore(bench, &names, &daemon_args)?;
            main_report = Some((burst, daemon_pid, daemon, monitors, wakeups, restored));
        }
        let removed = bench.remove_all(REMOVE_TIMEOUT, POLL)?;
        println!(
            "  {count}: all Running {} s after the drop; removed in {} s",
            seconds(burst_all(&converged)),
            seconds(removed)
        );
    }
    let Some((burst, daemon_pid, daemon, monitors, wakeups, (restore_took, restarted))) =
        main_report
    else {
        return Err(format!("{main_size} is not one of the sizes {sizes:?}"));
    };
    let count = main_size;

    let started: Vec<f64> = monitors.iter().filter_map(|m| m.init_started).collect();
    let first_init = started.iter().copied().fold(f64::INFINITY, f64::min) - burst.t0_boot;
    let last_init = started.iter().copied().fold(f64::NEG_INFINITY, f64::max) - burst.t0_boot;
    let mut rss: Vec<u64> = monitors.iter().map(|m| field(&m.memory, "VmRSS")).collect();
    rss.sort_unstable();
    let one = &monitors[0];
    let one_rss = field(&one.memory, "VmRSS");

    println!();
    row(
        "renames",
        format!(
            "{count} files in {:.2} ms",
            burst.renames.as_secs_f64() * 1000.0
        ),
    );
    row(
        "first Running",
        format!(
            "{} s after the first rename (polled every {} ms)",
            seconds(burst.first_running),
            POLL.as_millis()
        ),
    );
    for (n, took) in &converged {
        row(
            &format!("converge of {n}"),
            format!(
                "all {n} Running {} s after the first rename (polled every {} ms)",
                seconds(*took),
                POLL.as_millis()
            ),
        );
    }
    if started.len() == monitors.len() {
        row(
            "inits started",
            format!("first +{first_init:.2} s, last +{last_init:.2} s (/proc start times)"),
        );
    }
    row(
        &format!("restore of {count}"),
        format!(
            "all Running {} s after a new daemon was started in place of the SIGKILLed one; \
             {restarted} of {count} got a new init (must be 0)",
            seconds(restore_took)
        ),
    );
    row(
        "daemon",
        format!(
            "pid {daemon_pid}: VmRSS {} KiB, VmHWM {} KiB, Pss {} KiB with {count} running \
             (idle, before the drop: VmRSS {} KiB, Pss {} KiB)",
            field(&daemon, "VmRSS"),
            field(&daemon, "VmHWM"),
            field(&daemon, "Pss"),
            field(&idle, "VmRSS"),
            field(&idle, "Pss"),
        ),
    );
    row(
        "monitor",
        format!(
            "{} pid {}: VmRSS {one_rss} KiB (RssAnon {}, RssFile {}, RssShmem {}; Pss {}); target < {MONITOR_TARGET_KIB} KiB: {}",
            one.name,
            one.pid,
            field(&one.memory, "RssAnon"),
            field(&one.memory, "RssFile"),
            field(&one.memory, "RssShmem"),
            field(&one.memory, "Pss"),
            if one_rss < MONITOR_TARGET_KIB {
                "within"
            } else {
                "OVER"
            }
        ),
    );
    row(
        &format!("all {count} monitors"),
        format!(
            "VmRSS min {} / median {} / max {} KiB, {} of {count} under {MONITOR_TARGET_KIB} KiB; Pss total {} KiB",
            rss[0],
            median(&rss),
            rss[rss.len() - 1],
            rss.iter().filter(|&&kib| kib < MONITOR_TARGET_KIB).count(),
            monitors
                .iter()
                .map(|m| field(&m.memory, "Pss"))
                .sum::<u64>()
        ),
    );
    row(
        "idle daemon, 0",
        format!(
            "context switches over {} s: {}",
            window.as_secs(),
            wakeup_text(&idle_wakeups[0], window)
        ),
    );
    row(
        &format!("idle daemon, {count}"),
        format!(
            "context switches over {} s: {}",
            window.as_secs(),
            wakeup_text(&wakeups[0], window)
        ),
    );
    row(
        &format!("idle monitor, {count}"),
        format!(
            "{}: context switches over the same {} s: {}",
            one.name,
            window.as_secs(),
            wakeup_text(&wakeups[1], window)
        ),
    );

    println!();
    println!(
        "bench: daemon_first_running_s={}",
        seconds(burst.first_running)
    );
    for (n, took) in &converged {
        println!("bench: daemon_all_running_s={} n={n}", seconds(*took));
    }
    println!(
        "bench: restore_all_running_s={} restarts={restarted} n={count}",
        seconds(restore_took)
    );
    println!("bench: daemon_vmrss_kib={}", field(&daemon, "VmRSS"));
    println!("bench: daemon_vmhwm_kib={}", field(&daemon, "VmHWM"));
    println!(
        "bench: monitor_vmrss_kib={one_rss} monitor_pss_kib={} target_kib={MONITOR_TARGET_KIB}",
        field(&one.memory, "Pss")
    );
    println!(
        "bench: idle_daemon_switches_per_s={:.1} n=0",
        per_second(idle_wakeups[0].total, window)
    );
    println!(
        "bench: idle_daemon_switches_per_s={:.1} n={count}",
        per_second(wakeups[0].total, window)
    );
    println!(
        "bench: idle_monitor_switches_per_s={:.1}",
        per_second(wakeups[1].total, window)
    );
    if restarted > 0 {
        return Err(format!(
            "the restore after a SIGKILL restarted {restarted} of {count} containers"
        ));
    }
    Ok(())
}

fn burst_all(converged: &[(usize, Duration)]) -> Duration {
    converged.last().map_or(Duration::ZERO, |(_, took)| *took)
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench daemon: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a smaller smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (sizes, main_size, window): (&[usize], usize, Duration) = if full {
        (&SIZES, CONTAINERS, IDLE_WINDOW)
    } else {
        (&[SMOKE_CONTAINERS], SMOKE_CONTAINERS, SMOKE_IDLE_WINDOW)
    };

    common::catch_interrupts();

    let mut bench = Bench::new("berth-bench-daemon");
    let result = benchmark(&mut bench, sizes, main_size, window);
    drop(bench);
    if let Err(e) = result {
        eprintln!("bench daemon: FAILED: {e}");
        std::process::exit(if INTERRUPTED.load(Ordering::SeqCst) {
            130
        } else {
            1
        });
    }
}
