//! Fault injection: the daemon's reliability promises, under random kills and edits.
//!
//! A daemon converges 12 containers from 10 manifests (single and multi-document,
//! host and busybox templates). Each round makes one random edit to one manifest
//! (a new command, invalid YAML, a misspelt field, empty then rewritten, moved away
//! and back, removed, restored), SIGKILLs the daemon at a random moment (0–300 ms
//! after a step of the edit, so sometimes mid-reconcile; in a fifth of the rounds it
//! runs on), sometimes also SIGKILLs a container's monitor or a `berth create` half
//! way through its template, or the new daemon right after its start, starts the
//! daemon again, waits for it to converge, and checks what a user would notice:
//! every desired container runs exactly once (one monitor, one init), nothing was
//! restarted that the edit did not change (the last good spec of a file that cannot
//! be used is kept), an orphan was replaced, nothing of a removed container is left
//! (process, cgroup, mount, directory, `partial`), and the store opens afterwards.
//!
//! `cargo test -p berth-operator --test faults -- --rounds 200 --seed 42` (as root);
//! or `BERTH_FAULT_ROUNDS=200 BERTH_FAULT_SEED=42`. Default: 20 rounds, a seed from
//! the clock, printed at the start for reproduction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../bench/common.rs"]
mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DEFAULT_ROUNDS: u32 = 20;
/// How long a round may take to converge after the daemon is started again.
const CONVERGE: Duration = Duration::from_secs(20);
/// The daemon's `--prune-grace`: a moved-away file comes back well within it.
const PRUNE_GRACE: &str = "1s";

type Result<T> = std::result::Result<T, String>;

fn main() {
    let options = match Options::parse() {
        Ok(Some(options)) => options,
        Ok(None) => return,
        Err(e) => {
            eprintln!("faults: {e}");
            std::process::exit(2);
        }
    };
    common::catch_interrupts();
    println!(
        "faults: seed {seed}, {rounds} rounds (reproduce: BERTH_FAULT_SEED={seed} \
         BERTH_FAULT_ROUNDS={rounds} cargo test -p berth-operator --test faults)",
        seed = options.seed,
        rounds = options.rounds
    );
    match run(&options) {
        Ok(()) => {
            println!("faults: {} rounds passed", options.rounds);
            println!("{} passed, 0 failed", options.rounds);
        }
        Err(report) => {
            eprintln!("{report}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}

#[derive(Debug)]
struct Options {
    rounds: u32,
    seed: u64,
}

impl Options {
    /// `--rounds N`, `--seed S` (or BERTH_FAULT_ROUNDS, BERTH_FAULT_SEED). libtest's
    /// own flags are ignored; a name filter that does not match "faults" (as in
    /// `cargo test --workspace exec::`) skips the run. `None`: nothing to run.
    fn parse() -> Result<Option<Options>> {
        let number = |what: &str, text: &str| -> Result<u64> {
            text.parse()
                .map_err(|_| format!("{what} wants a number, not {text:?}"))
        };
        let mut rounds = match std::env::var("BERTH_FAULT_ROUNDS") {
            Ok(text) => number("BERTH_FAULT_ROUNDS", &text)?,
            Err(_) => u64::from(DEFAULT_ROUNDS),
        };
        let mut seed = match std::env::var("BERTH_FAULT_SEED") {
            Ok(text) => Some(number("BERTH_FAULT_SEED", &text)?),
            Err(_) => None,
        };
        let mut args = std::env::args().skip(1);
        let mut filters = Vec::new();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| args.next().ok_or(format!("{flag} wants a value"));
            match arg.as_str() {
                "--rounds" => rounds = number("--rounds", &value("--rounds")?)?,
                "--seed" => seed = Some(number("--seed", &value("--seed")?)?),
                "--list" => {
                    println!("faults: test");
                    return Ok(None);
                }
                // libtest flags with a value.
                "--test-threads" | "--color" | "--format" | "--skip" | "-Z" => {
                    value(&arg)?;
                }
                flag if flag.starts_with('-') => {}
                filter => filters.push(filter.to_owned()),
            }
        }
        if !filters.is_empty() && !filters.iter().any(|f| "faults".contains(f.as_str())) {
            println!("0 passed, 0 failed (filtered out)");
            return Ok(None);
        }
        let seed = seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(Some(Options {
            rounds: u32::try_from(rounds).map_err(|_| "too many rounds".to_owned())?,
            seed,
        }))
    }
}

/// xorshift64*: enough randomness for choosing faults, reproducible from its seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
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

    /// Uniform enough in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.next() % (max + 1))
    }
}

// ---------------------------------------------------------------------------
// The harness: a state dir, a cgroup parent and a daemon of the test's own.

#[path = "../harness/state_dir.rs"]
mod state_dir;
use state_dir::{StateDir, read_pids};

/// A running `berth daemon`, ended (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
struct Daemon {
    child: Child,
}

impl Daemon {
    /// Start a daemon on `state`'s manifests, its stderr appended to `log`, and
    /// wait for its socket.
    fn start(state: &StateDir, log: &Path, why: &str) -> Result<Daemon> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let _ = writeln!(file, "=== daemon started: {why} ===");
        let socket = state.path().join("berth.sock");
        let _ = std::fs::remove_file(&socket);
        let child = state
            .berth(&["daemon", "--manifests"])
            .arg(state.manifests())
            .args(["--prune-grace", PRUNE_GRACE])
            .args(["--crash-backoff", "1s", "--resync", "3s"])
            // Never the host's /etc/berth/labels.
            .arg("--labels-file")
            .arg(state.path().join("labels"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        let mut daemon = Daemon { child };
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

    fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status within 10 s.
    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill_hard();
                return Err("the daemon did not exit within 10 s of SIGTERM".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.terminate();
        }
    }
}

// ---------------------------------------------------------------------------
// The model: what each manifest file holds, and so what is desired.

#[derive(Debug, Clone)]
struct Doc {
    name: String,
    busybox: bool,
    /// The command is `/bin/sleep 100000<version>`: a new version is a new spec.
    version: u32,
}

impl Doc {
    fn seconds(&self) -> String {
        format!("{}", 1_000_000 + self.version)
    }

    fn text(&self, misspelt: bool) -> String {
        let mut text = format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {}\nspec:\n",
            self.name
        );
        if self.busybox {
            text.push_str("  rootfs: {template: busybox}\n");
        }
        text.push_str(&format!(
            "  command: [/bin/sleep, '{}']\n  stopTimeout: 0s\n",
            self.seconds()
        ));
        if misspelt {
            text.push_str("  restartPolcy: Always\n");
        }
        text
    }

    /// `/proc/PID/cmdline` of its init.
    fn cmdline(&self) -> Vec<u8> {
        format!("/bin/sleep\0{}\0", self.seconds()).into_bytes()
    }
}

/// Ways a file can exist and not be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// A YAML syntax error (an unclosed `[`) in the last document: that document
    /// is unusable; the ones before it still parse.
    Syntax,
    /// Not a manifest at all.
    Garbage,
    /// Zero bytes.
    Empty,
    /// An unknown field in one document: that document alone is unusable.
    Misspelt(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Valid,
    Broken(Broken),
    Gone,
}

#[derive(Debug, Clone)]
struct ManifestFile {
    file: String,
    docs: Vec<Doc>,
    content: Content,
}

impl ManifestFile {
    fn text(&self) -> String {
        match self.content {
            Content::Gone => String::new(),
            Content::Valid => self.docs_text(None),
            Content::Broken(Broken::Misspelt(i)) => self.docs_text(Some(i)),
            Content::Broken(Broken::Empty) => String::new(),
            Content::Broken(Broken::Garbage) => "this is: [not a manifest\n".to_owned(),
            Content::Broken(Broken::Syntax) => {
                let mut text = self.docs_text(None);
                // Drop the closing bracket of the last command: `[/bin/sleep, 'N'`.
                let at = text.rfind("']").unwrap() + 1;
                text.remove(at);
                text
            }
        }
    }

    fn docs_text(&self, misspelt: Option<usize>) -> String {
        self.docs
            .iter()
            .enumerate()
            .map(|(i, d)| d.text(misspelt == Some(i)))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// Does document `i` describe its container as the file is now?
    fn usable(&self, i: usize) -> Option<bool> {
        match self.content {
            Content::Gone => None,
            Content::Valid => Some(true),
            Content::Broken(Broken::Misspelt(bad)) => Some(bad != i),
            Content::Broken(Broken::Syntax) => Some(i + 1 != self.docs.len()),
            Content::Broken(Broken::Garbage | Broken::Empty) => Some(false),
        }
    }
}

/// Every manifest file, and the version desired of every name.
#[derive(Debug, Clone)]
struct Model {
    files: Vec<ManifestFile>,
    desired: BTreeMap<String, u32>,
}

impl Model {
    fn new(pid: u32) -> Model {
        let doc = |name: String, busybox: bool| Doc {
            name,
            busybox,
            version: 0,
        };
        let mut files = Vec::new();
        for i in 0..8 {
            files.push(ManifestFile {
                file: format!("single{i}.yaml"),
                docs: vec![doc(format!("fault{i}-{pid}"), i % 3 == 0)],
                content: Content::Valid,
            });
        }
        for i in 0..2 {
            files.push(ManifestFile {
                file: format!("pair{i}.yaml"),
                docs: vec![
                    doc(format!("pair{i}a-{pid}"), i == 1),
                    doc(format!("pair{i}b-{pid}"), false),
                ],
                content: Content::Valid,
            });
        }
        let mut model = Model {
            files,
            desired: BTreeMap::new(),
        };
        model.desired = model.resolve(&BTreeMap::new());
        model
    }

    /// The "last good spec" rule: a name is desired at its version when its
    /// document is usable; when its file exists but the document is not usable,
    /// as it was desired before (if it was); when its file is gone, not at all.
    fn resolve(&self, before: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut desired = BTreeMap::new();
        for file in &self.files {
            for (i, doc) in file.docs.iter().enumerate() {
                let version = match file.usable(i) {
                    Some(true) => Some(doc.version),
                    Some(false) => before.get(&doc.name).copied(),
                    None => None,
                };
                if let Some(version) = version {
                    desired.insert(doc.name.clone(), version);
                }
            }
        }
        desired
    }

    fn doc(&self, name: &str) -> Option<&Doc> {
        self.files
            .iter()
            .flat_map(|f| &f.docs)
            .find(|d| d.name == name)
    }

    /// Does the file of `name` describe it as it is now (None: no such file)?
    fn usable(&self, name: &str) -> Option<bool> {
        self.files.iter().find_map(|f| {
            let i = f.docs.iter().position(|d| d.name == name)?;
            f.usable(i)
        })
    }
}

// ---------------------------------------------------------------------------
// Edits: what is done to the manifest directory in a round.

#[derive(Debug, Clone)]
enum Step {
    /// An editor's save: a temp file renamed over.
    Save(usize, String),
    /// `cat > file`: truncate and write in place.
    Overwrite(usize, String),
    Remove(usize),
    MoveAway(usize),
    MoveBack(usize),
    Sleep(Duration),
}

#[derive(Debug)]
struct Edit {
    what: String,
    steps: Vec<Step>,
}

/// Pick an edit of one random file, apply it to `model`, and return its steps.
fn choose_edit(model: &mut Model, rng: &mut Rng) -> Edit {
    let index = rng.below(model.files.len());
    let present = model
        .files
        .iter()
        .filter(|f| f.content != Content::Gone)
        .count();
    let keep_present = model.files.len() / 2;
    let file = &mut model.files[index];
    let name = file.file.clone();
    let save = |rng: &mut Rng, text: String| {
        if rng.chance(50) {
            Step::Save(index, text)
        } else {
            Step::Overwrite(index, text)
        }
    };
    if file.content == Content::Gone {
        // Restored: as it was, or with a new command.
        let bump = rng.chance(50);
        if bump {
            file.docs.iter_mut().for_each(|d| d.version += 1);
        }
        file.content = Content::Valid;
        let step = save(rng, file.text());
        let what = if bump {
            "restored with a new command"
        } else {
            "restored as it was"
        };
        return Edit {
            what: format!("{name}: {what}"),
            steps: vec![step],
        };
    }
    let multi = file.docs.len() > 1;
    // A file that cannot be used, moved away and back, must still keep what it
    // described: tried more often than chance alone would.
    let choice = if matches!(file.content, Content::Broken(_)) && rng.chance(25) {
        7
    } else {
        rng.below(9)
    };
    match choice {
        0 | 1 => {
            // A new command for one document (or all).
            let count = file.docs.len();
            let which = rng.below(count + 1);
            for (i, doc) in file.docs.iter_mut().enumerate() {
                if which == count || which == i {
                    doc.version += 1;
                }
            }
            let was = file.content;
            file.content = Content::Valid;
            Edit {
                what: format!(
                    "{name}: new command (doc {which} of {}, was {was:?})",
                    file.docs.len()
                ),
                steps: vec![save(rng, file.text())],
            }
        }
        2 => {
            // Fixed (or rewritten) with the last good content: no spec changes.
            let was = file.content;
            file.content = Content::Valid;
            Edit {
                what: format!("{name}: rewritten with its last good content (was {was:?})"),
                steps: vec![save(rng, file.text())],
            }
        }
        3 | 4 => {
            let broken = match rng.below(4) {
                0 => Broken::Syntax,
                1 => Broken::Garbage,
                2 => Broken::Empty,
                _ => Broken::Misspelt(rng.below(file.docs.len())),
            };
            file.content = Content::Broken(broken);
            Edit {
                what: format!("{name}: broken ({broken:?})"),
                steps: vec![save(rng, file.text())],
            }
        }
        5 if multi => {
            // One document gets a new command while the other breaks.
            file.docs[0].version += 1;
            file.content = Content::Broken(Broken::Misspelt(1));
            Edit {
                what: format!("{name}: doc 0 new command, doc 1 misspelt"),
                steps: vec![save(rng, file.text())],
            }
        }
        5 | 6 => {
            // What scp does: truncated, written a moment later.
            let text = file.text();
            Edit {
                what: format!("{name}: emptied, then written again as it was"),
                steps: vec![
                    Step::Overwrite(index, String::new()),
                    Step::Sleep(Duration::from_millis(150) + rng.millis(150)),
                    Step::Overwrite(index, text),
                ],
            }
        }
        7 => Edit {
            what: format!("{name}: moved away and back"),
            steps: vec![
                Step::MoveAway(index),
                // Long enough for the daemon to see it gone (it reads 100 ms after
                // a burst), well within the prune grace.
                Step::Sleep(Duration::from_millis(150) + rng.millis(150)),
                Step::MoveBack(index),
            ],
        },
        _ if present > keep_present => {
            file.content = Content::Gone;
            Edit {
                what: format!("{name}: removed"),
                steps: vec![Step::Remove(index)],
            }
        }
        _ => Edit {
            what: "no edit".to_owned(),
            steps: Vec::new(),
        },
    }
}

// ---------------------------------------------------------------------------
// What runs, as seen from outside berth.

/// One running container: its init and its monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Running {
    init: i32,
    monitor: i32,
}

/// A process the test has seen, by pid and start time (so a reused pid is not it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    pid: i32,
    start: u64,
    what: String,
}

/// Field 22 of /proc/PID/stat: start time in clock ticks; None if gone or a zombie.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Seen {
    fn new(pid: i32, what: String) -> Option<Seen> {
        Some(Seen {
            pid,
            start: start_time(pid)?,
            what,
        })
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Every live process whose root directory is `rootfs` (same device and inode).
fn processes_in(rootfs: &Path) -> Vec<i32> {
    let Ok(want) = std::fs::metadata(rootfs) else {
        return Vec::new();
    };
    process_roots()
        .remove(&(want.dev(), want.ino()))
        .unwrap_or_default()
}

/// Every live process, by the device and inode of its root directory.
fn process_roots() -> BTreeMap<(u64, u64), Vec<i32>> {
    let mut roots: BTreeMap<(u64, u64), Vec<i32>> = BTreeMap::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    for pid in pids {
        if let Ok(root) = std::fs::metadata(format!("/proc/{pid}/root/"))
            && start_time(pid).is_some()
        {
            roots.entry((root.dev(), root.ino())).or_default().push(pid);
        }
    }
    roots
}

// ---------------------------------------------------------------------------
// The run.

/// The history of the run, printed with the seed and the daemon's log when the
/// run fails, also by a panic.
#[derive(Debug)]
struct Report {
    seed: u64,
    round: RefCell<u32>,
    history: RefCell<Vec<String>>,
    log: PathBuf,
}

impl Report {
    fn note(&self, line: String) {
        println!("faults: {line}");
        self.history.borrow_mut().push(line);
    }

    fn render(&self, failure: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(300)..].join("\n");
        format!(
            "faults: FAILED in round {round} (seed {seed}; reproduce with BERTH_FAULT_SEED={seed} \
             BERTH_FAULT_ROUNDS={round}):\n{failure}\n\nedit history:\n{history}\n\n\
             daemon log (last 300 lines):\n{tail}",
            round = self.round.borrow(),
            seed = self.seed,
            history = self.history.borrow().join("\n"),
        )
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.render("panicked (see above)"));
        }
    }
}

/// Everything a round works with. Field order is drop order: the daemon ends
/// before the report reads its log and before the state dir stops the containers.
struct Harness {
    daemon: Option<Daemon>,
    report: Report,
    state: StateDir,
    rng: Rng,
    model: Model,
    /// What ran after the last convergence, by name.
    running: BTreeMap<String, Running>,
    /// Every init, monitor and template process ever seen.
    seen: BTreeSet<Seen>,
}

fn run(options: &Options) -> std::result::Result<(), String> {
    let state = StateDir::new("berth-faults-")?;
    let manifests = state.manifests();
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&manifests, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(state.path().join("away")).map_err(|e| e.to_string())?;
    let report = Report {
        seed: options.seed,
        round: RefCell::new(0),
        history: RefCell::new(Vec::new()),
        log: state.path().join("daemon.log"),
    };
    let mut h = Harness {
        daemon: None,
        report,
        state,
        rng: Rng::new(options.seed),
        model: Model::new(std::process::id()),
        running: BTreeMap::new(),
        seen: BTreeSet::new(),
    };
    let result = h.all_rounds(options.rounds);
    // The daemon's last words belong in the report.
    if let Some(mut daemon) = h.daemon.take() {
        let _ = daemon.terminate();
    }
    result.map_err(|failure| h.report.render(&failure))
}

impl Harness {
    fn all_rounds(&mut self, rounds: u32) -> Result<()> {
        for i in 0..self.model.files.len() {
            let text = self.model.files[i].text();
            self.write(&Step::Save(i, text))?;
        }
        self.start_daemon("first start")?;
        self.converge()?;
        self.check(&BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new())?;
        for round in 1..=rounds {
            common::check_interrupted()?;
            *self.report.round.borrow_mut() = round;
            self.round()?;
        }
        self.restart_cleanly()
    }

    fn start_daemon(&mut self, why: &str) -> Result<()> {
        self.daemon = Some(Daemon::start(&self.state, &self.report.log, why)?);
        Ok(())
    }

    fn kill_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill_hard();
        }
    }

    fn round(&mut self) -> Result<()> {
        let round = *self.report.round.borrow();
        let before = self.running.clone();
        let desired_before = self.model.desired.clone();
        let edit = choose_edit(&mut self.model, &mut self.rng);
        self.model.desired = self.model.resolve(&desired_before);
        let mut faults = Vec::new();
        let mut monitors_killed = BTreeSet::new();

        // Most rounds the daemon dies before the edit, between its steps or after
        // it; in the others it runs throughout, so that what it holds in memory
        // alone is tried too.
        let kill_at = self
            .rng
            .chance(80)
            .then(|| self.rng.below(edit.steps.len() + 1));
        if self.rng.chance(20)
            && let Some(name) = self.kill_a_monitor()?
        {
            faults.push(format!("monitor of {name} killed while the daemon ran"));
            monitors_killed.insert(name);
        }
        for (i, step) in edit.steps.iter().enumerate() {
            if kill_at == Some(i) {
                self.kill_daemon_soon(&mut faults, &format!("before step {}", i + 1));
            }
            self.write(step)?;
        }
        if kill_at == Some(edit.steps.len()) {
            self.kill_daemon_soon(&mut faults, "after the edit");
        }
        if kill_at.is_none() {
            faults.push("the daemon runs on".to_owned());
        } else {
            if self.rng.chance(20)
                && let Some(name) = self.kill_a_monitor()?
            {
                faults.push(format!("monitor of {name} killed while no daemon ran"));
                monitors_killed.insert(name);
            }
            // A daemon cleans up interrupted creates when it starts.
            if self.rng.chance(20) {
                faults.push(self.kill_a_create(round)?);
            }
        }
        let pid_suffix = format!("-{}", std::process::id());
        let desired: Vec<String> = self
            .model
            .desired
            .iter()
            .map(|(name, version)| format!("{}:v{version}", name.trim_end_matches(&pid_suffix)))
            .collect();
        self.report.note(format!(
            "round {round}: {} [{}]; desired: {}",
            edit.what,
            faults.join("; "),
            desired.join(" ")
        ));
        if kill_at.is_some() {
            self.start_daemon(&format!("round {round}"))?;
            if self.rng.chance(15) {
                // Killed again while it recovers, adopts and reconciles at start-up.
                let mut again = Vec::new();
                self.kill_daemon_soon(&mut again, "again after its start");
                self.report
                    .note(format!("round {round}: {}", again.join("")));
                self.start_daemon(&format!("round {round}, once more"))?;
            }
        }
        if self.rng.chance(15) {
            // A monitor killed while the new daemon converges.
            std::thread::sleep(self.rng.millis(300));
            if let Some(name) = self.kill_a_monitor()? {
                self.report.note(format!(
                    "round {round}: monitor of {name} killed while the new daemon converged"
                ));
                monitors_killed.insert(name);
            }
        }
        self.converge()?;
        self.check(&before, &desired_before, &monitors_killed)
    }

    /// SIGKILL the daemon 0–300 ms from now: sometimes mid-reconcile.
    fn kill_daemon_soon(&mut self, faults: &mut Vec<String>, when: &str) {
        let wait = self.rng.millis(300);
        std::thread::sleep(wait);
        self.kill_daemon();
        faults.push(format!("daemon killed {when} (+{} ms)", wait.as_millis()));
    }

    fn write(&self, step: &Step) -> Result<()> {
        let path = |i: usize| self.state.manifests().join(&self.model.files[i].file);
        let away = |i: usize| {
            self.state
                .path()
                .join("away")
                .join(&self.model.files[i].file)
        };
        let done = match step {
            Step::Save(i, text) => {
                let tmp = self.state.manifests().join(format!(".{i}.tmp"));
                std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path(*i)))
            }
            Step::Overwrite(i, text) => std::fs::write(path(*i), text),
            Step::Remove(i) => std::fs::remove_file(path(*i)),
            Step::MoveAway(i) => std::fs::rename(path(*i), away(*i)),
            Step::MoveBack(i) => std::fs::rename(away(*i), path(*i)),
            Step::Sleep(d) => {
                std::thread::sleep(*d);
                Ok(())
            }
        };
        done.map_err(|e| format!("{step:?}: {e}"))
    }

    /// SIGKILL the monitor of a random running container; its name, if it had one.
    fn kill_a_monitor(&mut self) -> Result<Option<String>> {
        let names: Vec<String> = self.running.keys().cloned().collect();
        if names.is_empty() {
            return Ok(None);
        }
        let name = names[self.rng.below(names.len())].clone();
        // The monitor's own status file: it needs no daemon to read.
        let status = self.state.container_dir(&name).join("status");
        let Some(monitor) = std::fs::read_to_string(&status)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|s| s["monitorPid"].as_i64())
        else {
            return Ok(None);
        };
        kill(Pid::from_raw(monitor as i32), Signal::SIGKILL)
            .map_err(|e| format!("kill the monitor {monitor} of {name}: {e}"))?;
        Ok(Some(name))
    }

    /// Start `berth create` of a container whose template script hangs, and
    /// SIGKILL it half way: it leaves a `partial` for the daemon to clean up.
    fn kill_a_create(&mut self, round: u32) -> Result<String> {
        let name = format!("hand{round}-{}", std::process::id());
        let script = self.state.path().join("hang.sh");
        let manifest = self.state.path().join("hand.yaml");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").map_err(|e| e.to_string())?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  \
                 rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
                script.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut create = self
            .state
            .berth(&["create", "-f"])
            .arg(&manifest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("berth create: {e}"))?;
        // Until the template runs (or a random moment before).
        let template = |parent: &Path| parent.join(&name).join("create").join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        let patience = Instant::now() + self.rng.millis(400);
        loop {
            let running = self
                .state
                .cgroup_parents()
                .iter()
                .any(|p| !read_pids(&template(p)).is_empty());
            if running && Instant::now() > patience {
                break;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                let _ = create.wait();
                return Err(format!("berth create of {name} never ran its template"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for parent in self.state.cgroup_parents() {
            for pid in read_pids(&template(&parent)) {
                self.seen
                    .extend(Seen::new(pid, format!("template of {name}")));
            }
        }
        let _ = create.kill();
        let _ = create.wait();
        Ok(format!("berth create of {name} killed mid-template"))
    }

    /// `berth get -o json`, by name.
    fn items(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        let out = self.state.run(&["get", "-o", "json"])?;
        if !out.status.success() {
            return Err(format!(
                "berth get failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("berth get -o json: {e}"))?;
        let items = list["items"]
            .as_array()
            .ok_or_else(|| format!("berth get -o json printed no items: {list}"))?;
        Ok(items
            .iter()
            .cloned()
            .map(|i| (i["name"].as_str().unwrap_or_default().to_owned(), i))
            .collect())
    }

    /// Wait until every desired name runs its desired command, nothing else is
    /// listed and no other container directory is left.
    fn converge(&self) -> Result<()> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            self.never_two_inits()?;
            let differences = self.differences();
            if differences.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not converged within {CONVERGE:?}:\n  {}",
                    differences.join("\n  ")
                ));
            }
            common::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Not even for a moment two processes in one container's rootfs: the
    /// containers here run one process each.
    fn never_two_inits(&self) -> Result<()> {
        let roots = process_roots();
        for name in self.state.container_dirs() {
            let Ok(rootfs) = std::fs::metadata(self.state.container_dir(&name).join("rootfs"))
            else {
                continue;
            };
            if let Some(pids) = roots.get(&(rootfs.dev(), rootfs.ino()))
                && pids.len() > 1
            {
                return Err(format!("two inits of {name} at once: {pids:?}"));
            }
        }
        Ok(())
    }

    fn differences(&self) -> Vec<String> {
        let items = match self.items() {
            Ok(items) => items,
            Err(e) => return vec![e],
        };
        let mut differences = Vec::new();
        for (name, version) in &self.model.desired {
            let Some(item) = items.get(name) else {
                differences.push(format!(
                    "{name}: desired (version {version}) but not listed"
                ));
                continue;
            };
            let doc = self.model.doc(name).unwrap();
            let want = Doc {
                version: *version,
                ..doc.clone()
            };
            let cmdline = item["pid"]
                .as_i64()
                .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok());
            // `get` shows the daemon's record; the monitor's own status says whether
            // an orphan was replaced yet.
            let status = self.status(name).unwrap_or_default();
            let monitored = status["phase"] == "Running"
                && status["monitorPid"].is_i64()
                && status["initPid"] == item["pid"];
            if item["phase"] != "Running"
                || !monitored
                || cmdline.as_deref() != Some(&want.cmdline()[..])
            {
                differences.push(format!(
                    "{name}: want Running `sleep {}`, have {} pid {} `{}` ({}); its status: {}",
                    want.seconds(),
                    item["phase"],
                    item["pid"],
                    String::from_utf8_lossy(&cmdline.unwrap_or_default()).replace('\0', " "),
                    item["message"],
                    status
                ));
            }
        }
        // What `berth get` says of its manifest: a problem exactly when its document
        // cannot be used, and never "no longer defines" for a name whose file exists
        // (that one would be pruned once the grace is over).
        for (name, item) in &items {
            let Some(usable) = self.model.usable(name) else {
                continue;
            };
            let problems: Vec<&str> = item["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["message"].as_str())
                .collect();
            if problems.iter().any(|p| p.contains("no longer defines"))
                || usable != problems.is_empty()
            {
                differences.push(format!(
                    "{name}: its document is {}usable, and it shows the problems {problems:?}",
                    if usable { "" } else { "not " }
                ));
            }
        }
        for name in items.keys() {
            if !self.model.desired.contains_key(name) {
                differences.push(format!("{name}: not desired but listed: {}", items[name]));
            }
        }
        for name in self.state.container_dirs() {
            if !self.model.desired.contains_key(&name) {
                differences.push(format!("{name}: not desired but its directory is left"));
            }
        }
        differences
    }

    /// After convergence: what a user would notice, checked from outside berth.
    fn check(
        &mut self,
        before: &BTreeMap<String, Running>,
        desired_before: &BTreeMap<String, u32>,
        monitors_killed: &BTreeSet<String>,
    ) -> Result<()> {
        let mut now = BTreeMap::new();
        for name in self.model.desired.keys() {
            now.insert(name.clone(), self.runs_once(name)?);
        }
        // Nothing restarted that the round did not change; every orphan replaced.
        for (name, was) in before {
            let Some(is) = now.get(name) else { continue };
            let same_spec = desired_before.get(name) == self.model.desired.get(name);
            if monitors_killed.contains(name) {
                if is.init == was.init {
                    return Err(format!(
                        "{name}: its monitor was killed, yet its old init {} runs on (not replaced)",
                        was.init
                    ));
                }
            } else if same_spec && is.init != was.init {
                return Err(format!(
                    "{name} was restarted (init {} -> {}) though its spec did not change",
                    was.init, is.init
                ));
            }
        }
        for (name, is) in &now {
            self.seen
                .extend(Seen::new(is.init, format!("init of {name}")));
            self.seen
                .extend(Seen::new(is.monitor, format!("monitor of {name}")));
        }
        // Every process seen before that is not a current init or monitor is gone.
        let current: BTreeSet<i32> = now.values().flat_map(|r| [r.init, r.monitor]).collect();
        let mut survivors = Vec::new();
        for seen in &self.seen {
            if current.contains(&seen.pid) {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while seen.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if seen.alive() {
                survivors.push(format!("{} (pid {})", seen.what, seen.pid));
            }
        }
        if !survivors.is_empty() {
            return Err(format!("processes outlived their container: {survivors:?}"));
        }
        self.seen.retain(|s| current.contains(&s.pid) && s.alive());
        self.nothing_left_over()?;
        self.running = now;
        Ok(())
    }

    /// `berth status NAME`: what its monitor says.
    fn status(&self, name: &str) -> Result<serde_json::Value> {
        let out = self.state.run(&["status", name])?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "berth status {name}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// One monitor and one init of `name`, seen by berth and by the kernel alike.
    fn runs_once(&self, name: &str) -> Result<Running> {
        let status = self.status(name)?;
        let pid = |key: &str| {
            status[key]
                .as_i64()
                .map(|p| p as i32)
                .ok_or(format!("{name}: no {key} in its status: {status}"))
        };
        let running = Running {
            init: pid("initPid")?,
            monitor: pid("monitorPid")?,
        };
        if status["phase"] != "Running" {
            return Err(format!("{name}: status says {status}"));
        }
        let rootfs = self.state.container_dir(name).join("rootfs");
        let inits = processes_in(&rootfs);
        if inits != [running.init] {
            return Err(format!(
                "{name}: processes with its rootfs as root: {inits:?}, want its init {} alone",
                running.init
            ));
        }
        let dirs = status["cgroups"]["hierarchies"]
            .as_array()
            .ok_or(format!("{name}: no cgroups in its status: {status}"))?;
        for dir in dirs.iter().filter_map(|h| h["dir"].as_str()) {
            let dir = Path::new(dir);
            for (leaf, want) in [("payload", running.init), ("monitor", running.monitor)] {
                let pids = read_pids(&dir.join(leaf).join("cgroup.procs"));
                if pids != [want] {
                    return Err(format!(
                        "{name}: {}/{leaf} holds {pids:?}, want [{want}]",
                        dir.display()
                    ));
                }
            }
        }
        Ok(running)
    }

    /// No `partial`, no mount under the state dir, no cgroup of a name not desired.
    fn nothing_left_over(&self) -> Result<()> {
        for name in self.state.container_dirs() {
            if self.state.container_dir(&name).join("partial").exists() {
                return Err(format!("{name}: a `partial` is left after convergence"));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let state = self.state.path().display().to_string();
        if let Some(line) = mounts.lines().find(|l| l.contains(&state)) {
            return Err(format!("a mount under the state dir is left: {line}"));
        }
        for parent in self.state.cgroup_parents() {
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let name = child.file_name().to_string_lossy().into_owned();
                if !child.path().is_dir() {
                    continue;
                }
                if !self.model.desired.contains_key(&name) {
                    return Err(format!(
                        "cgroup {} is left for a container that does not exist",
                        child.path().display()
                    ));
                }
                if child.path().join("create").exists() {
                    return Err(format!("cgroup {}/create is left", child.path().display()));
                }
            }
        }
        Ok(())
    }

    /// The end: the daemon stops on SIGTERM with exit 0, a new one opens the store
    /// and adopts every container as it runs.
    fn restart_cleanly(&mut self) -> Result<()> {
        *self.report.round.borrow_mut() += 1;
        self.report
            .note("end: SIGTERM, then a daemon once more".to_owned());
        if let Some(mut daemon) = self.daemon.take() {
            let status = daemon.terminate()?;
            if !status.success() {
                return Err(format!("the daemon exited with {status} on SIGTERM"));
            }
        }
        self.start_daemon("the end: store opens again")?;
        let before = self.running.clone();
        let desired = self.model.desired.clone();
        self.converge()?;
        self.check(&before, &desired, &BTreeSet::new())?;
        // Longer than the prune grace: what is desired stays.
        std::thread::sleep(Duration::from_millis(1500));
        self.converge()?;
        self.check(&before, &desired, &BTreeSet::new())
    }
}
