//! berth-soak: the real `berth daemon` under constant change for a long time.
//!
//! Ten manifest files are added, edited, broken (invalid YAML, half written,
//! garbage, a misspelt field, a bad value, empty), fixed and removed at random
//! (seeded; the seed is printed), each file changed at most every
//! `SLOT_GAP`, some file every second or so. Three more files never change: a
//! container that reboots itself every few seconds (`reboot -f`, guarded by
//! `[ $$ -eq 1 ]` so that it can only ever run as the init of a pid namespace,
//! and checked to be in one of its own), one that crashes and one that exits.
//! The changing ones run, crash, exit, reboot themselves or are stopped.
//!
//! At the end it waits for convergence and checks it against the final files:
//! every usable manifest's container is in its desired state (running the
//! command of its latest spec, crash-looping or finished as that spec says, or
//! stopped), removed ones are gone (no item, no directory), and a file that
//! exists but cannot be used keeps what it last described. Every `SAMPLE_EVERY`
//! it reads the daemon's VmRSS, open fds and threads and the state store's size;
//! each must stay under its bound (`LIMITS`), and after the first minute none may
//! rise above its first-minute peak by more than its noise tolerance.
//!
//! As root: `cargo test -p berth-operator --test berth-soak -- --duration 10m
//! [--seed N]` (or BERTH_SOAK_DURATION, BERTH_SOAK_SEED). Without a duration it
//! does nothing (`cargo test --workspace` runs it so); .ci/run gives it 2m.
//! Everything it made (containers, cgroups, the daemon, its temp dir) is removed
//! at the end, also when it fails or is interrupted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../bench/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

type Result<T> = std::result::Result<T, String>;

/// Files changed at random.
const SLOTS: usize = 10;
/// A file is changed at most this often, so that the daemon (which reads a
/// changed file within a second, and every `--resync` anyway) has seen each of
/// its contents: what a broken file keeps is then its last usable content.
const SLOT_GAP: Duration = Duration::from_secs(8);
/// The first minute: a warm-up whose peaks set the level later samples are held to.
const WARMUP: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long the containers may take to converge once the changes stop.
const CONVERGE: Duration = Duration::from_secs(120);

/// One reading of the daemon and its store.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    store_kib: u64,
}

/// A measure, its bound, and the noise allowed above its first-minute peak.
struct Limit {
    name: &'static str,
    unit: &'static str,
    read: fn(&Sample) -> u64,
    bound: u64,
    noise: u64,
}

/// The bounds, from a 10-minute debug run (600 changes, 13 files): VmRSS
/// 45.7–58.4 MiB, 13–27 fds, 13–14 threads, and a store that grows to 2.5 MiB
/// in 5 minutes as its event rings fill (1,000 events, 100 a container), then
/// stays; each bound is at least 1.6 times that. The noise, allowed above the
/// first minute's peak, covers what grows legitimately after it (the rings
/// filling: 2.1 MiB; the allocator: 2.2 MiB of VmRSS in 9 minutes) and a busier
/// blocking pool; a leak of one fd or thread per change (several hundred in 10
/// minutes), or of a few KiB of memory or store per change, exceeds it.
const LIMITS: [Limit; 4] = [
    Limit {
        name: "VmRSS",
        unit: "KiB",
        read: |s| s.rss_kib,
        bound: 96 * 1024,
        noise: 8 * 1024,
    },
    Limit {
        name: "open fds",
        unit: "",
        read: |s| s.fds,
        bound: 128,
        noise: 16,
    },
    Limit {
        name: "threads",
        unit: "",
        read: |s| s.threads,
        bound: 64,
        noise: 16,
    },
    Limit {
        name: "state store",
        unit: "KiB",
        read: |s| s.store_kib,
        bound: 32 * 1024,
        noise: 6 * 1024,
    },
];

fn main() {
    let options = match Options::parse() {
        Ok(Some(options)) => options,
        Ok(None) => return,
        Err(e) => {
            eprintln!("berth-soak: {e}");
            std::process::exit(2);
        }
    };
    common::catch_interrupts();
    println!(
        "berth-soak: seed {seed}, {secs} s (reproduce: cargo test -p berth-operator --test \
         berth-soak -- --duration {secs}s --seed {seed})",
        seed = options.seed,
        secs = options.duration.as_secs()
    );
    match run(&options) {
        Ok(()) => println!("berth-soak: passed\n1 passed, 0 failed"),
        Err(report) => {
            eprintln!("berth-soak: FAILED (seed {}): {report}", options.seed);
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}

#[derive(Debug)]
struct Options {
    duration: Duration,
    seed: u64,
}

/// `10m`, `90s`, `1h`, or whole seconds.
fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--duration wants `10m`, `90s` or `1h`, not {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("--duration: unknown unit in {text:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(seconds))
}

impl Options {
    /// `--duration D`, `--seed N` (or BERTH_SOAK_DURATION, BERTH_SOAK_SEED);
    /// libtest's own flags are ignored. `None`: no duration given, nothing to run.
    fn parse() -> Result<Option<Options>> {
        let mut duration = std::env::var("BERTH_SOAK_DURATION")
            .ok()
            .map(|d| parse_duration(&d))
            .transpose()?;
        let mut seed = match std::env::var("BERTH_SOAK_SEED") {
            Ok(text) => Some(
                text.parse()
                    .map_err(|_| format!("BERTH_SOAK_SEED wants a number, not {text:?}"))?,
            ),
            Err(_) => None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| args.next().ok_or(format!("{flag} wants a value"));
            match arg.as_str() {
                "--duration" => duration = Some(parse_duration(&value("--duration")?)?),
                "--seed" => {
                    let text = value("--seed")?;
                    seed = Some(
                        text.parse()
                            .map_err(|_| format!("--seed wants a number, not {text:?}"))?,
                    );
                }
                "--list" => {
                    println!("berth-soak: test");
                    return Ok(None);
                }
                "--test-threads" | "--color" | "--format" | "--skip" | "-Z" => {
                    value(&arg)?;
                }
                _ => {}
            }
        }
        let Some(duration) = duration else {
            println!(
                "berth-soak: not run (give it a duration: cargo test -p berth-operator --test \
                 berth-soak -- --duration 10m)\n0 passed, 0 failed"
            );
            return Ok(None);
        };
        let seed = seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(Some(Options { duration, seed }))
    }
}

/// xorshift64*: reproducible from its seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

// ---------------------------------------------------------------------------
// The harness: a state dir, a cgroup parent and a daemon of the soak's own.

#[path = "../harness/state_dir.rs"]
mod state_dir;
use state_dir::StateDir;

/// The running `berth daemon`, ended by its pid (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(state: &StateDir) -> Result<Daemon> {
        let log = state.path().join("daemon.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let socket = state.path().join("berth.sock");
        let child = state
            .berth(&["daemon", "--manifests"])
            .arg(state.manifests())
            .args([
                "--prune-grace",
                "1s",
                "--crash-backoff",
                "1s",
                "--resync",
                "3s",
            ])
            // Never the host's /etc/berth/labels.
            .arg("--labels-file")
            .arg(state.path().join("labels"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        let mut daemon = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(exit)) = daemon.child.try_wait() {
                return Err(format!("the daemon exited at start-up ({exit})"));
            }
            if Instant::now() > deadline {
                return Err("the daemon never served its socket in 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(exit)) => Err(format!(
                "the daemon exited ({exit}); its log ends:\n{}",
                self.log_tail()
            )),
            Err(e) => Err(format!("the daemon: {e}")),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The model: what each file holds, and so what each container should be.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/bin/sleep N`: runs until changed.
    Sleeper { busybox: bool },
    /// Busybox; reboots itself (`reboot -f` as pid 1) every `pause` seconds.
    Rebooter,
    /// Exits 3 after `pause` seconds; `restartPolicy: Always` restarts it, with back-off.
    Crasher,
    /// Exits 0 after `pause` seconds; `restartPolicy: OnFailure` leaves it stopped.
    Exiter,
    /// `state: Stopped`: created, never started.
    Stopped,
}

#[derive(Debug, Clone)]
struct Doc {
    name: String,
    kind: Kind,
    /// Unique per slot: every new document is a new spec.
    version: u32,
    pause: u32,
}

impl Doc {
    fn marker(&self) -> String {
        format!("#soak-v{}#", self.version)
    }

    fn sleep_seconds(&self) -> u32 {
        1_000_000 + self.version
    }

    fn text(&self) -> String {
        let mut text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {}\nspec:\n",
            self.name
        );
        let busybox = matches!(self.kind, Kind::Sleeper { busybox: true } | Kind::Rebooter);
        if busybox {
            text.push_str("  rootfs: {template: busybox}\n");
        }
        let (p, m) = (self.pause, self.marker());
        let command = match self.kind {
            Kind::Sleeper { .. } | Kind::Stopped => {
                format!("[/bin/sleep, '{}']", self.sleep_seconds())
            }
            // `$$ -eq 1`: only the init of a pid namespace may reboot.
            Kind::Rebooter => format!(
                "[/bin/sh, -c, 'echo \"{m}\"; sleep {p}; [ $$ -eq 1 ] && reboot -f; sleep 1000000']"
            ),
            Kind::Crasher => format!("[/bin/sh, -c, 'echo \"{m}\"; sleep {p}; exit 3']"),
            Kind::Exiter => format!("[/bin/sh, -c, 'echo \"{m}\"; sleep {p}; exit 0']"),
        };
        text.push_str(&format!("  command: {command}\n  stopTimeout: 0s\n"));
        match self.kind {
            Kind::Exiter => text.push_str("  restartPolicy: OnFailure\n"),
            Kind::Stopped => text.push_str("  state: Stopped\n"),
            _ => {}
        }
        text
    }

    /// Its text cut inside the command's `[`: what a reader sees of a file half
    /// written. Always a YAML syntax error.
    fn half(&self) -> String {
        let text = self.text();
        let at = text.find("command: [").map_or(text.len() / 2, |i| i + 14);
        text[..at].to_owned()
    }
}

/// Ways a file exists and cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    HalfWritten,
    Garbage,
    Misspelt,
    BadValue,
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Gone,
    Valid,
    Broken(Broken),
}

#[derive(Debug)]
struct Slot {
    file: String,
    name: String,
    content: Content,
    /// What the file last described usably since it was last removed: what
    /// should run (or have run) now.
    desired: Option<Doc>,
    /// The document of the current content (valid or not).
    doc: Option<Doc>,
    changed: Option<Instant>,
    /// Never changed after the start.
    steady: bool,
}

struct Soak<'a> {
    state: &'a StateDir,
    daemon: Daemon,
    rng: Rng,
    slots: Vec<Slot>,
    version: u32,
    samples: Vec<Sample>,
    started: Instant,
    /// Changes made, by what.
    changes: BTreeMap<&'static str, u32>,
    /// The most reboots and restarts seen of each name.
    reboots: BTreeMap<String, u64>,
    restarts: BTreeMap<String, u64>,
    host_pid_ns: PathBuf,
}

fn run(options: &Options) -> Result<()> {
    let state = StateDir::new("berth-soak-")?;
    std::fs::create_dir_all(state.manifests()).map_err(|e| format!("manifests dir: {e}"))?;
    let daemon = Daemon::start(&state)?;
    let tag = std::process::id();
    let mut soak = Soak {
        state: &state,
        daemon,
        rng: Rng::new(options.seed),
        slots: Vec::new(),
        version: 0,
        samples: Vec::new(),
        started: Instant::now(),
        changes: BTreeMap::new(),
        reboots: BTreeMap::new(),
        restarts: BTreeMap::new(),
        host_pid_ns: std::fs::read_link("/proc/self/ns/pid")
            .map_err(|e| format!("/proc/self/ns/pid: {e}"))?,
    };
    for (i, kind) in [Kind::Rebooter, Kind::Crasher, Kind::Exiter]
        .into_iter()
        .enumerate()
    {
        soak.slots.push(Slot {
            file: format!("steady-{i}.yaml"),
            name: format!("soak-steady{i}-{tag}"),
            content: Content::Gone,
            desired: None,
            doc: None,
            changed: None,
            steady: true,
        });
        let doc = soak.new_doc(i, Some(kind));
        soak.write_valid(i, doc, false)?;
    }
    for i in 0..SLOTS {
        soak.slots.push(Slot {
            file: format!("slot-{i}.yaml"),
            name: format!("soak-{i}-{tag}"),
            content: Content::Gone,
            desired: None,
            doc: None,
            changed: None,
            steady: false,
        });
    }
    let result = soak.churn(options.duration).and_then(|()| soak.converge());
    soak.summary();
    let bounds = soak.check_bounds();
    drop(soak);
    result.and(bounds)
}

impl Soak<'_> {
    fn new_doc(&mut self, slot: usize, kind: Option<Kind>) -> Doc {
        self.version += 1;
        let kind = kind.unwrap_or_else(|| match self.rng.below(7) {
            0 => Kind::Sleeper { busybox: false },
            1 => Kind::Sleeper { busybox: true },
            2 => Kind::Rebooter,
            3 => Kind::Crasher,
            4 => Kind::Exiter,
            5 => Kind::Stopped,
            _ => Kind::Sleeper { busybox: false },
        });
        Doc {
            name: self.slots[slot].name.clone(),
            kind,
            version: self.version,
            pause: 3 + self.rng.below(6) as u32,
        }
    }

    fn path(&self, slot: usize) -> PathBuf {
        self.state.manifests().join(&self.slots[slot].file)
    }

    /// An editor's save (a temp file renamed over) or `cat >` (in place).
    fn write(&mut self, slot: usize, bytes: &[u8]) -> Result<()> {
        let path = self.path(slot);
        if self.rng.chance(50) {
            let tmp = self
                .state
                .manifests()
                .join(format!(".{}.tmp", self.slots[slot].file));
            std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
        }
    }

    /// Write `doc`; `halting`: half of it first, the rest 50–400 ms later (a slow
    /// copy), which the daemon may read in between.
    fn write_valid(&mut self, slot: usize, doc: Doc, halting: bool) -> Result<()> {
        if halting {
            let path = self.path(slot);
            let half = doc.half();
            std::fs::write(&path, &half).map_err(|e| format!("{}: {e}", path.display()))?;
            std::thread::sleep(self.rng.millis(50, 400));
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(&doc.text().as_bytes()[half.len()..])
                .map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            self.write(slot, doc.text().as_bytes())?;
        }
        let s = &mut self.slots[slot];
        s.content = Content::Valid;
        s.desired = Some(doc.clone());
        s.doc = Some(doc);
        s.changed = Some(Instant::now());
        Ok(())
    }

    fn write_broken(&mut self, slot: usize, broken: Broken) -> Result<()> {
        let doc = match self.slots[slot].doc.clone() {
            Some(doc) => doc,
            None => self.new_doc(slot, None),
        };
        let text: Vec<u8> = match broken {
            Broken::HalfWritten => doc.half().into_bytes(),
            Broken::Garbage => (0..200).map(|_| (self.rng.next() >> 56) as u8).collect(),
            Broken::Misspelt => format!("{}  restartPolcy: Always\n", doc.text()).into_bytes(),
            Broken::BadValue => doc
                .text()
                .replace("stopTimeout: 0s", "stopTimeout: soon")
                .into_bytes(),
            Broken::Empty => Vec::new(),
        };
        if broken == Broken::HalfWritten {
            // A half-written file is written in place, never renamed.
            let path = self.path(slot);
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            self.write(slot, &text)?;
        }
        let s = &mut self.slots[slot];
        s.content = Content::Broken(broken);
        s.doc = Some(doc);
        s.changed = Some(Instant::now());
        Ok(())
    }

    fn remove(&mut self, slot: usize) -> Result<()> {
        let path = self.path(slot);
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let s = &mut self.slots[slot];
        s.content = Content::Gone;
        s.desired = None;
        s.doc = None;
        s.changed = Some(Instant::now());
        Ok(())
    }

    /// One random change to one file that has not changed for `SLOT_GAP`.
    fn change(&mut self) -> Result<bool> {
        let ready: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                !s.steady && s.changed.is_none_or(|at| at.elapsed() >= SLOT_GAP)
            })
            .collect();
        if ready.is_empty() {
            return Ok(false);
        }
        let slot = ready[self.rng.below(ready.len())];
        let broken = |rng: &mut Rng| match rng.below(5) {
            0 => Broken::HalfWritten,
            1 => Broken::Garbage,
            2 => Broken::Misspelt,
            3 => Broken::BadValue,
            _ => Broken::Empty,
        };
        let what = match self.slots[slot].content {
            Content::Gone => {
                if self.rng.chance(15) {
                    let b = broken(&mut self.rng);
                    self.write_broken(slot, b)?;
                    "added broken"
                } else {
                    let doc = self.new_doc(slot, None);
                    let halting = self.rng.chance(20);
                    self.write_valid(slot, doc, halting)?;
                    "added"
                }
            }
            Content::Valid => match self.rng.below(10) {
                0..=2 => {
                    let doc = self.new_doc(slot, None);
                    let halting = self.rng.chance(20);
                    self.write_valid(slot, doc, halting)?;
                    "edited"
                }
                3..=5 => {
                    let b = broken(&mut self.rng);
                    self.write_broken(slot, b)?;
                    "broken"
                }
                6 => {
                    let doc = self.slots[slot].desired.clone().unwrap();
                    self.write_valid(slot, doc, true)?;
                    "rewritten slowly as it was"
                }
                _ => {
                    self.remove(slot)?;
                    "removed"
                }
            },
            Content::Broken(_) => match self.rng.below(10) {
                0..=2 if self.slots[slot].desired.is_some() => {
                    let doc = self.slots[slot].desired.clone().unwrap();
                    self.write_valid(slot, doc, false)?;
                    "fixed as it was"
                }
                0..=5 => {
                    let doc = self.new_doc(slot, None);
                    self.write_valid(slot, doc, false)?;
                    "fixed with a new spec"
                }
                6 => {
                    let b = broken(&mut self.rng);
                    self.write_broken(slot, b)?;
                    "broken otherwise"
                }
                _ => {
                    self.remove(slot)?;
                    "removed"
                }
            },
        };
        *self.changes.entry(what).or_insert(0) += 1;
        Ok(true)
    }

    fn churn(&mut self, duration: Duration) -> Result<()> {
        let mut next_sample = Instant::now();
        let mut next_report = Instant::now() + Duration::from_secs(30);
        while self.started.elapsed() < duration {
            common::check_interrupted()?;
            self.daemon.alive()?;
            if Instant::now() >= next_sample {
                self.sample()?;
                next_sample += SAMPLE_EVERY;
            }
            if Instant::now() >= next_report {
                self.report_progress();
                next_report += Duration::from_secs(30);
            }
            self.change()?;
            let pause = self.rng.millis(300, 1500);
            std::thread::sleep(pause);
        }
        self.sample()?;
        Ok(())
    }

    fn report_progress(&self) {
        let changes: u32 = self.changes.values().sum();
        let last = self.samples.last();
        println!(
            "berth-soak: {:>4} s, {changes} changes; daemon {}",
            self.started.elapsed().as_secs(),
            last.map_or(String::new(), |s| format!(
                "VmRSS {} KiB, {} fds, {} threads; store {} KiB",
                s.rss_kib, s.fds, s.threads, s.store_kib
            ))
        );
    }

    fn sample(&mut self) -> Result<()> {
        let pid = self.daemon.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("the daemon's /proc/{pid}/status: {e}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or(format!("no {name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
            .count() as u64;
        let sample = Sample {
            at: self.started.elapsed(),
            rss_kib: field("VmRSS:")?,
            fds,
            threads: field("Threads:")?,
            store_kib: disk_kib(&self.state.path().join("state.db")),
        };
        self.samples.push(sample);
        // Counters, and the pid-namespace proof of every running rebooter.
        for item in self.items()? {
            let name = item["name"].as_str().unwrap_or_default().to_owned();
            for (key, seen) in [
                ("reboots", &mut self.reboots),
                ("restarts", &mut self.restarts),
            ] {
                let n = item[key].as_u64().unwrap_or(0);
                let most = seen.entry(name.clone()).or_insert(0);
                *most = (*most).max(n);
            }
            let rebooter = self.slots.iter().any(|s| {
                s.name == name && s.desired.as_ref().is_some_and(|d| d.kind == Kind::Rebooter)
            });
            if let (true, Some(pid)) = (rebooter, item["pid"].as_i64())
                && let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                && ns == self.host_pid_ns
            {
                return Err(format!(
                    "{name}, which reboots itself, runs in the host's pid namespace \
                     (its guard keeps it from rebooting)"
                ));
            }
        }
        Ok(())
    }

    /// `GET /v1/containers`, as `berth get` asks it.
    fn items(&self) -> Result<Vec<serde_json::Value>> {
        let socket = self.state.path().join("berth.sock");
        let mut stream = std::os::unix::net::UnixStream::connect(&socket)
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /v1/containers HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("the API: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| format!("the API: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(format!("the API answered {text:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("the API answered {head:?}: {body}"));
        }
        // The length-delimited or chunked body: the JSON array is all of it, or
        // between the chunk sizes.
        let json = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        serde_json::from_str(&json).map_err(|e| format!("the API's list: {e}: {json}"))
    }

    /// Wait for every container to be as its final file says; report each one
    /// that is not when `CONVERGE` runs out.
    fn converge(&mut self) -> Result<()> {
        println!(
            "berth-soak: changes over at {} s; converging",
            self.started.elapsed().as_secs()
        );
        let deadline = Instant::now() + CONVERGE;
        let started = Instant::now();
        loop {
            self.daemon.alive()?;
            common::check_interrupted()?;
            let problems = self.problems()?;
            if problems.is_empty() {
                let mut finals: BTreeMap<String, u32> = BTreeMap::new();
                for slot in &self.slots {
                    let what = match (&slot.content, &slot.desired) {
                        (Content::Gone, _) => "gone".to_owned(),
                        (Content::Valid, Some(d)) => format!("{:?}", d.kind),
                        (Content::Broken(_), Some(d)) => format!("broken, keeping {:?}", d.kind),
                        (_, None) => "broken, never usable".to_owned(),
                    };
                    *finals.entry(what).or_insert(0) += 1;
                }
                println!(
                    "berth-soak: converged {} s after the last change; the final files: {finals:?}",
                    started.elapsed().as_secs()
                );
                return self.check_the_check();
            }
            if Instant::now() > deadline {
                let files: Vec<String> = self
                    .slots
                    .iter()
                    .map(|s| format!("{} ({:?}, desired {:?})", s.file, s.content, s.desired))
                    .collect();
                return Err(format!(
                    "not converged {} s after the last change:\n  {}\nfiles:\n  {}\ndaemon log:\n{}",
                    CONVERGE.as_secs(),
                    problems.join("\n  "),
                    files.join("\n  "),
                    self.daemon.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The convergence check must see a difference: with any one file's desired
    /// state changed (a newer spec, or a container where there is none, or a
    /// running one for a stopped one) it must report a problem.
    fn check_the_check(&mut self) -> Result<()> {
        for i in 0..self.slots.len() {
            let kept = self.slots[i].desired.clone();
            let mut other = kept.clone().unwrap_or(Doc {
                name: self.slots[i].name.clone(),
                kind: Kind::Sleeper { busybox: false },
                version: 0,
                pause: 3,
            });
            other.version += 1000;
            if other.kind == Kind::Stopped {
                other.kind = Kind::Sleeper { busybox: false };
            }
            self.slots[i].desired = Some(other);
            let caught = !self.problems()?.is_empty();
            self.slots[i].desired = kept;
            if !caught {
                return Err(format!(
                    "the convergence check passes {} also with another desired state",
                    self.slots[i].name
                ));
            }
        }
        Ok(())
    }

    /// Every way the containers differ from what the files say.
    fn problems(&self) -> Result<Vec<String>> {
        let items: BTreeMap<String, serde_json::Value> = self
            .items()?
            .into_iter()
            .map(|i| (i["name"].as_str().unwrap_or_default().to_owned(), i))
            .collect();
        let dirs = self.state.container_dirs();
        let mut problems = Vec::new();
        for slot in &self.slots {
            let item = items.get(&slot.name);
            let Some(doc) = &slot.desired else {
                // Removed, or never usable since: nothing of it may be left.
                if let Some(item) =
                    item.filter(|i| slot.content == Content::Gone || i["pid"].is_i64())
                {
                    problems.push(format!("{}: should be gone, is {item}", slot.name));
                }
                if dirs.contains(&slot.name) {
                    problems.push(format!("{}: its directory is left", slot.name));
                }
                continue;
            };
            let Some(item) = item else {
                problems.push(format!(
                    "{}: missing (should be {:?} v{})",
                    slot.name, doc.kind, doc.version
                ));
                continue;
            };
            let phase = item["phase"].as_str().unwrap_or_default();
            let pid = item["pid"].as_i64();
            let cmdline = pid
                .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
                .unwrap_or_default();
            let runs_marker = String::from_utf8_lossy(&cmdline).contains(&doc.marker());
            let console =
                std::fs::read_to_string(self.state.container_dir(&slot.name).join("console.log"))
                    .unwrap_or_default();
            let last_marker = console.lines().rev().find(|l| l.starts_with("#soak-v"));
            let ran_marker = last_marker == Some(doc.marker().as_str());
            let ok = match doc.kind {
                Kind::Sleeper { .. } => {
                    phase == "Running"
                        && cmdline == format!("/bin/sleep\0{}\0", doc.sleep_seconds()).into_bytes()
                }
                Kind::Rebooter => phase == "Running" && runs_marker,
                Kind::Crasher => {
                    (phase == "Running" && runs_marker)
                        || (phase == "CrashLoopBackOff" && ran_marker)
                }
                Kind::Exiter => phase == "Stopped" && ran_marker && pid.is_none(),
                Kind::Stopped => matches!(phase, "Stopped" | "Created") && pid.is_none(),
            };
            if !ok {
                problems.push(format!(
                    "{}: should be {:?} v{} ({:?}); is {phase}, pid {pid:?}, cmdline {:?}, last marker {last_marker:?}",
                    slot.name,
                    doc.kind,
                    doc.version,
                    slot.content,
                    String::from_utf8_lossy(&cmdline)
                ));
            }
        }
        // Nothing of a name the soak never wrote.
        let names: BTreeSet<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
        for dir in &dirs {
            if !names.contains(dir.as_str()) {
                problems.push(format!("a container directory no file names: {dir}"));
            }
        }
        Ok(problems)
    }

    fn summary(&self) {
        let changes: Vec<String> = self
            .changes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("berth-soak: changes: {}", changes.join(", "));
        let steady: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.steady)
            .map(|s| {
                format!(
                    "{} ({:?}): {} reboots, {} restarts",
                    s.name,
                    s.desired.as_ref().map(|d| d.kind),
                    self.reboots.get(&s.name).copied().unwrap_or(0),
                    self.restarts.get(&s.name).copied().unwrap_or(0)
                )
            })
            .collect();
        println!("berth-soak: steady containers: {}", steady.join("; "));
        println!(
            "berth-soak: reboots seen in all: {}, restarts: {}",
            self.reboots.values().sum::<u64>(),
            self.restarts.values().sum::<u64>()
        );
        let warm = self.warmup();
        for limit in &LIMITS {
            let (first, later) = self.split(warm, limit);
            println!(
                "berth-soak: {:<12} first {} s {}–{} {unit}, after {}–{} {unit} (bound {} {unit}, noise {} {unit})",
                limit.name,
                warm.as_secs(),
                first.iter().min().copied().unwrap_or(0),
                first.iter().max().copied().unwrap_or(0),
                later.iter().min().copied().unwrap_or(0),
                later.iter().max().copied().unwrap_or(0),
                limit.bound,
                limit.noise,
                unit = limit.unit
            );
        }
    }

    /// The first minute, or the first half of a shorter run.
    fn warmup(&self) -> Duration {
        let total = self.samples.last().map_or(Duration::ZERO, |s| s.at);
        WARMUP.min(total / 2)
    }

    fn split(&self, warm: Duration, limit: &Limit) -> (Vec<u64>, Vec<u64>) {
        let (first, later): (Vec<&Sample>, Vec<&Sample>) =
            self.samples.iter().partition(|s| s.at <= warm);
        (
            first.iter().map(|s| (limit.read)(s)).collect(),
            later.iter().map(|s| (limit.read)(s)).collect(),
        )
    }

    /// Every sample under its bound; after the warm-up, none above the warm-up's
    /// peak plus the noise; and the steady containers did reboot, crash and exit.
    fn check_bounds(&self) -> Result<()> {
        let mut failures = Vec::new();
        let warm = self.warmup();
        for limit in &LIMITS {
            for sample in &self.samples {
                let value = (limit.read)(sample);
                if value > limit.bound {
                    failures.push(format!(
                        "{} {value} {} at {} s: over its bound {}",
                        limit.name,
                        limit.unit,
                        sample.at.as_secs(),
                        limit.bound
                    ));
                    break;
                }
            }
            let (first, later) = self.split(warm, limit);
            let peak = first.iter().max().copied().unwrap_or(0);
            if let Some(worst) = later.iter().max().copied()
                && worst > peak + limit.noise
            {
                failures.push(format!(
                    "{} grew after the first minute: {worst} {unit}, its first-minute peak \
                     {peak} {unit} (noise allowed {} {unit})",
                    limit.name,
                    limit.noise,
                    unit = limit.unit
                ));
            }
        }
        if self.started.elapsed() >= Duration::from_secs(60) {
            let steady = |i: usize| self.slots[i].name.as_str();
            if self.reboots.get(steady(0)).copied().unwrap_or(0) < 2 {
                failures.push(format!("{} never rebooted twice", steady(0)));
            }
            if self.restarts.get(steady(1)).copied().unwrap_or(0) < 2 {
                failures.push(format!("{} was never restarted twice", steady(1)));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

/// A chunked body's data.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The disk a directory tree takes (allocated blocks), in KiB.
fn disk_kib(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total / 1024
}
