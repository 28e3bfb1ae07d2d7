//! Containers from a registry image: `berth create` of a manifest naming
//! `spec.rootfs.image`, into an empty store (pull, verify, unpack, create) beside a
//! further container of the image already pulled (a mkdir and an overlay probe).
//!
//! `cargo bench -p berth-operator --bench image` (as root). A `docker-registry` of
//! its own on 127.0.0.1 serves an image built by umoci from the static busybox plus
//! a layer of 4 MiB of random bytes (`BERTH_BENCH_IMAGE_MB=N` for N; the tests' harness,
//! tests/e2e/registry.rs). Each round times `berth create -f` from spawn to exit;
//! between first creates the untimed `destroy`, `rmi` and `gc` empty the store
//! again. Everything lives in a fresh temp state dir and under the cgroup parent
//! `berth-bench-image-<pid>`; a guard destroys the containers and rmdirs the
//! cgroups, also on failure or Ctrl-C. Run without `--bench` (as `cargo test
//! --benches` does), each row is measured once, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "common.rs"]
mod common;
#[path = "harness.rs"]
mod harness;
#[allow(dead_code)] // the bench uses a part of the tests' registry harness
#[path = "../e2e/registry.rs"]
mod registry;

use common::{INTERRUPTED, check_interrupted};
use harness::{Bench, STOP_TIMEOUT};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

const ITERATIONS: usize = 10;
const WARMUPS: usize = 1;
/// Random, so incompressible: the layer the registry sends is this size.
/// `BERTH_BENCH_IMAGE_MB` changes it.
const RANDOM_MB: usize = 4;
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);
/// The issue asks a further create to be at least this many times faster.
const WANTED_RATIO: f64 = 5.0;

struct ImageBench {
    bench: Bench,
    conf: PathBuf,
    reference: String,
    registry: registry::Registry,
}

impl ImageBench {
    fn manifest(&self, name: &str) -> Result<String, String> {
        let path = self.bench.tmp_path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  rootfs:\n    image: {}\n  stopTimeout: 0s\n",
                self.reference
            ),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| "temp path is not UTF-8".to_owned())
    }

    /// Time `berth create -f` of `name`; its output must say whether it pulled.
    fn create(&self, name: &str, pulls: bool) -> Result<Duration, String> {
        check_interrupted()?;
        let manifest = self.manifest(name)?;
        let conf = self.conf.to_str().ok_or("temp path is not UTF-8")?;
        let run = self
            .bench
            .run_berth(
                &["--registries-conf", conf, "create", "-f", &manifest],
                CREATE_TIMEOUT,
            )?
            .ok("berth create")?;
        if run.stdout.contains("pulled ") != pulls {
            return Err(format!(
                "berth create of {name} printed {:?}; expected {} pull",
                run.stdout.trim(),
                if pulls { "a" } else { "no" }
            ));
        }
        Ok(run.elapsed)
    }

    fn berth_ok(&self, args: &[&str]) -> Result<String, String> {
        self.bench
            .run_berth(args, STOP_TIMEOUT)?
            .ok(&format!("berth {}", args.join(" ")))
            .map(|run| run.stdout)
    }

    /// The store back to empty: the container, the image record, then its
    /// blobs and layers.
    fn empty_store(&self, name: &str) -> Result<(), String> {
        self.berth_ok(&["destroy", name])?;
        self.berth_ok(&["rmi", &self.reference])?;
        self.berth_ok(&["gc"])?;
        let images = self.bench.state_dir.join("images");
        for dir in ["layers", "blobs/sha256"] {
            if entries(&images.join(dir)) != 0 {
                return Err(format!("gc left {dir} behind"));
            }
        }
        Ok(())
    }

    fn first_creates(&self, iterations: usize, warmups: usize) -> Result<Vec<Duration>, String> {
        let mut times = Vec::new();
        for i in 0..warmups + iterations {
            let name = format!("bench-first-{i}");
            let elapsed = self.create(&name, true)?;
            self.empty_store(&name)?;
            if i >= warmups {
                times.push(elapsed);
            }
        }
        Ok(times)
    }

    fn further_creates(&self, iterations: usize, warmups: usize) -> Result<Vec<Duration>, String> {
        // The image in the store, kept there by a container that uses it.
        self.create("bench-keeper", true)?;
        let fetched = self.registry.blob_gets().len();
        let layers = entries(&self.bench.state_dir.join("images/layers"));
        let mut times = Vec::new();
        for i in 0..warmups + iterations {
            let name = format!("bench-more-{i}");
            let elapsed = self.create(&name, false)?;
            self.berth_ok(&["destroy", &name])?;
            if i >= warmups {
                times.push(elapsed);
            }
        }
        self.berth_ok(&["destroy", "bench-keeper"])?;
        if self.registry.blob_gets().len() != fetched {
            return Err("a further create fetched a blob".to_owned());
        }
        if entries(&self.bench.state_dir.join("images/layers")) != layers {
            return Err("a further create unpacked a layer".to_owned());
        }
        Ok(times)
    }
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bench image: must run as root: it creates containers and cgroups");
        std::process::exit(1);
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let (iterations, warmups) = if full { (ITERATIONS, WARMUPS) } else { (1, 0) };
    common::catch_interrupts();

    let random_mb = match std::env::var("BERTH_BENCH_IMAGE_MB") {
        Ok(mb) => mb.parse().unwrap_or_else(|_| {
            eprintln!("bench image: BERTH_BENCH_IMAGE_MB={mb:?} is not a whole number of MiB");
            std::process::exit(2)
        }),
        Err(_) => RANDOM_MB,
    };
    let registry = registry::Registry::start();
    let image = registry.push_busybox("bench/app", "1", random_mb);
    let bench = Bench::new("berth-bench-image");
    let conf = registry.registries_conf(bench.tmp_path());
    let bench = ImageBench {
        bench,
        conf,
        reference: image.reference.clone(),
        registry,
    };
    println!(
        "berth image benchmark: {iterations} iterations after {warmups} warm-up(s); image {} ({} layers, {random_mb} MiB random in the top one); state {}, cgroup parent {}",
        image.reference,
        image.layers.len(),
        bench.bench.state_dir.display(),
        bench.bench.cgroup_parent
    );

    let rows = [
        (
            "create_first_empty_store",
            bench.first_creates(iterations, warmups),
        ),
        (
            "create_further_same_image",
            bench.further_creates(iterations, warmups),
        ),
    ];
    drop(bench);

    println!();
    println!(
        "{:<26}  {:>3}  {:>8}  {:>9}  {:>8}",
        "benchmark", "n", "min_ms", "median_ms", "max_ms"
    );
    let mut medians = Vec::new();
    let mut failed = false;
    for (name, outcome) in &rows {
        match outcome {
            Ok(times) if !times.is_empty() => {
                let mut sorted = times.clone();
                sorted.sort();
                let med = median(&sorted);
                println!(
                    "{name:<26}  {:>3}  {:>8.2}  {:>9.2}  {:>8.2}",
                    sorted.len(),
                    ms(sorted[0]),
                    ms(med),
                    ms(sorted[sorted.len() - 1])
                );
                medians.push(med);
            }
            Ok(_) => println!("{name:<26}  no iterations"),
            Err(why) => {
                failed = true;
                println!("{name:<26}  failed: {why}");
            }
        }
    }
    println!();
    if let [first, further] = medians[..] {
        let ratio = first.as_secs_f64() / further.as_secs_f64();
        // Said, not failed on: on a loaded machine the further create's floor (a
        // config.json fsynced, an overlay probe torn down) moves with the load.
        println!(
            "bench: create_first_empty_store median_ms={:.2} create_further_same_image median_ms={:.2} ratio={ratio:.1}x ({} the issue's >= {WANTED_RATIO}x)",
            ms(first),
            ms(further),
            if ratio >= WANTED_RATIO {
                "meets"
            } else {
                "BELOW"
            }
        );
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    if failed {
        std::process::exit(1);
    }
}
