//! The daemon under a burst: 100 manifests renamed at once into the watched
//! directory of a running `berth daemon`, timed until `berth get` shows all 100
//! `Running`; then the daemon's resident memory (VmRSS, and VmHWM, its peak) and
//! that of the containers' monitors, beside the monitor's target (under 2 MiB).
//!
//! `cargo bench -p berth-operator --bench daemon` (as root). The manifests are
//! written to a staging directory first and renamed into the watched one in a tight
//! loop; the clock starts at the first rename, and `berth get -o json` is polled
//! every 100 ms, so both times are at that resolution. Nothing is asserted, but the
//! run fails (exit 1) if the containers are not all `Running` within 5 minutes.
//! `BERTH_BENCH_CONCURRENCY=N` passes `--concurrency N` to the daemon (default:
//! the daemon's own, the number of CPUs); `BERTH_BENCH_BIN=/path/to/berth` measures
//! that binary instead of the one cargo built.
//!
//! Everything lives in a fresh temp dir and under the cgroup parent
//! `berth-bench-daemon-<pid>`. A guard removes the manifests and waits for the
//! daemon to stop and destroy the containers, SIGTERMs the daemon, stops and
//! destroys whatever container is left, and rmdirs those cgroups, also on failure,
//! panic or Ctrl-C. Run without `--bench` (as `cargo test --benches` does), it
//! drops 10 manifests instead of 100, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;
#[path = "harness.rs"]
mod harness;

use common::INTERRUPTED;
use harness::*;

use std::sync::atomic::Ordering;

const CONTAINERS: usize = 100;
const SMOKE_CONTAINERS: usize = 10;

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

fn benchmark(bench: &mut Bench, count: usize) -> Result<(), String> {
    let concurrency = std::env::var("BERTH_BENCH_CONCURRENCY")
        .ok()
        .map(|n| {
            n.parse::<usize>()
                .map_err(|e| format!("BERTH_BENCH_CONCURRENCY={n}: {e}"))
        })
        .transpose()?;
    println!(
        "berth daemon benchmark: {count} manifests dropped at once (host template, sleep infinity, pids 16); \
         concurrency {}; state {}, cgroup parent {}",
        concurrency.map_or_else(|| "default (CPUs)".to_owned(), |n| n.to_string()),
        bench.state_dir.display(),
        bench.cgroup_parent
    );
    let daemon_args: Vec<String> = concurrency
        .map(|n| vec!["--concurrency".to_owned(), n.to_string()])
        .unwrap_or_default();
    bench.start_daemon(&daemon_args)?;
    let daemon_pid = bench.daemon_pid().unwrap();
    let listed = bench.phases()?;
    if !listed.is_empty() {
        return Err(format!(
            "a fresh daemon lists containers: {:?}",
            listed.keys()
        ));
    }
    let idle = proc_memory(daemon_pid)?;

    let names: Vec<String> = (0..count).map(|i| format!("bench-c{i:03}")).collect();
    bench.stage(&names, manifest)?;
    let burst = bench.drop_and_wait(&names)?;
    let daemon = proc_memory(daemon_pid)?;
    let monitors = bench.monitors(&names)?;

    let started: Vec<f64> = monitors.iter().filter_map(|m| m.init_started).collect();
    let first_init = started.iter().copied().fold(f64::INFINITY, f64::min) - burst.t0_boot;
    let last_init = started.iter().copied().fold(f64::NEG_INFINITY, f64::max) - burst.t0_boot;
    let mut rss: Vec<u64> = monitors.iter().map(|m| field(&m.memory, "VmRSS")).collect();
    rss.sort_unstable();
    let one = &monitors[0];
    let one_rss = field(&one.memory, "VmRSS");

    let row = |label: &str, text: String| println!("{label:<18} {text}");
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
    row(
        &format!("all {count} Running"),
        format!(
            "{} s after the first rename (polled every {} ms)",
            seconds(burst.all_running),
            POLL.as_millis()
        ),
    );
    if started.len() == monitors.len() {
        row(
            "inits started",
            format!("first +{first_init:.2} s, last +{last_init:.2} s (/proc start times)"),
        );
    }
    row(
        "daemon",
        format!(
            "pid {daemon_pid}: VmRSS {} KiB, VmHWM {} KiB (idle, before the drop: VmRSS {} KiB)",
            field(&daemon, "VmRSS"),
            field(&daemon, "VmHWM"),
            field(&idle, "VmRSS"),
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

    let removed = bench.remove_all(REMOVE_TIMEOUT, POLL);
    row(
        "manifests removed",
        match &removed {
            Ok(took) => format!(
                "all {count} stopped and destroyed by the daemon in {} s",
                seconds(*took)
            ),
            Err(e) => format!("failed: {e}"),
        },
    );

    println!();
    println!(
        "bench: daemon_first_running_s={}",
        seconds(burst.first_running)
    );
    println!(
        "bench: daemon_all_running_s={} n={count}",
        seconds(burst.all_running)
    );
    println!("bench: daemon_vmrss_kib={}", field(&daemon, "VmRSS"));
    println!("bench: daemon_vmhwm_kib={}", field(&daemon, "VmHWM"));
    println!("bench: monitor_vmrss_kib={one_rss} target_kib={MONITOR_TARGET_KIB}");
    removed.map(drop)
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench daemon: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    // `cargo bench` passes --bench; otherwise (cargo test --benches) a smaller smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let count = if full { CONTAINERS } else { SMOKE_CONTAINERS };

    common::catch_interrupts();

    let mut bench = Bench::new("berth-bench-daemon");
    let result = benchmark(&mut bench, count);
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
