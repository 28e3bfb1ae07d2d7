//! The bad-input corpus: `berth validate` on every file of
//! manifests/tests/corpus/bad/ (and the inputs generated beside it: a file over
//! the size limit, 10,000 levels of nesting, alias bombs, ...) prints exactly the
//! diagnostics of EXPECTED.tsv, at their LINE:COLUMN, exits 1, and neither
//! panics nor runs away with time or memory. The good corpus and every YAML
//! example of the README validate.
//!
//! Time and peak RSS of each run are measured (wait4) and printed. Memory is
//! held to 50 MiB here; time only to a loose bound, because a debug binary on a
//! loaded CI machine says little about speed: the 100 ms target is checked on a
//! release build by `cargo bench -p berth-operator --bench corpus`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../manifests/tests/corpus/table.rs"]
mod table;

pub const MAX_RSS_KIB: i64 = 50 * 1024;
/// Inputs known to need more, with their own bound, so that they do not grow
/// unseen. None now: the one there was (a 1 MiB manifest of 70,000 env entries, 66
/// MiB read whole) is refused at its 10,001st value (locate::MAX_NODES).
pub const KNOWN_OVER: &[(&str, i64)] = &[];
/// A hundred times the 100 ms target: a debug build on two cores shared with
/// builds, where the largest inputs take 1 to 3 s. It catches a hang or a blow-up
/// (10,000 nested brackets took 8 s before they were refused unread), not speed.
#[cfg(test)]
const LOOSE_TIME: Duration = Duration::from_secs(10);

pub fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/tests/corpus")
        .join(kind)
}

/// One run of `berth validate PATH`.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub wall: Duration,
    pub max_rss_kib: i64,
}

/// Runs `berth validate PATH`, with the child's own peak RSS from wait4.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's wait cannot give RSS
pub fn validate(berth: &Path, path: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(berth)
        .arg("validate")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", berth.display()));
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_end(&mut stderr)
            .unwrap_or_else(|e| panic!("reading berth's stderr: {e}"));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap_or_else(|e| panic!("pid: {e}"));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child (std's Child never waits on drop);
    // `status` and `usage` are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let wall = started.elapsed();
    let exit = std::process::ExitStatus::from_raw(status);
    Run {
        code: exit.code(),
        signal: exit.signal(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Writes the generated inputs the table names under `dir/generated/`.
pub fn generate_into(dir: &Path, rows: &[table::Expected]) {
    std::fs::create_dir_all(dir.join("generated")).unwrap_or_else(|e| panic!("{e}"));
    for row in rows {
        if let Some(name) = row.path.strip_prefix("generated/") {
            let bytes = table::generate(name).unwrap_or_else(|| {
                panic!("EXPECTED.tsv names {}, which nothing generates", row.path)
            });
            std::fs::write(dir.join(&row.path), bytes).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Every path of the table with its rows, in the table's order of first mention.
pub fn rows_by_path() -> Vec<(String, Vec<table::Expected>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_path: BTreeMap<String, Vec<table::Expected>> = BTreeMap::new();
    for row in table::expected() {
        if !by_path.contains_key(&row.path) {
            order.push(row.path.clone());
        }
        by_path.entry(row.path.clone()).or_default().push(row);
    }
    order
        .into_iter()
        .map(|path| {
            let rows = by_path.remove(&path).unwrap_or_default();
            (path, rows)
        })
        .collect()
}

/// Runs every path of the table and returns what did not hold, with the runs.
pub fn check_corpus(berth: &Path, time_limit: Duration) -> (Vec<String>, Vec<(String, Run)>) {
    let generated = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let groups = rows_by_path();
    let all: Vec<table::Expected> = groups.iter().flat_map(|(_, r)| r.clone()).collect();
    generate_into(generated.path(), &all);
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    for (path, rows) in groups {
        let full = if path.starts_with("generated/") {
            generated.path().join(&path)
        } else {
            corpus_dir("bad").join(&path)
        };
        let run = validate(berth, &full);
        let mut fail = |what: String| failures.push(format!("{path}: {what}"));
        if run.code != Some(1) {
            fail(format!(
                "exit code {:?}, signal {:?} (1 is a validation failure; 101 a panic)\n{}",
                run.code, run.signal, run.stderr
            ));
        }
        if run.stderr.contains("panicked at") || run.stderr.contains("has overflowed its stack") {
            fail(format!("crashed:\n{}", run.stderr));
        }
        // Every line but the summary is a diagnostic: FULLPATH:LINE:COLUMN: message.
        let prefix = if full.is_dir() {
            format!("{}/", full.display())
        } else {
            format!("{}:", full.display())
        };
        let lines: Vec<&str> = run.stderr.lines().collect();
        let diagnostics = &lines[..lines.len().saturating_sub(1)];
        if diagnostics.len() != rows.len() {
            fail(format!(
                "{} diagnostics, the table has {}:\n{}",
                diagnostics.len(),
                rows.len(),
                run.stderr
            ));
        }
        for (row, line) in rows.iter().zip(diagnostics) {
            let located = line.strip_prefix(&prefix).unwrap_or(line);
            let at = format!("{}: ", row.location);
            if !located.starts_with(&at) || !located.contains(&row.message) {
                fail(format!(
                    "expected {}: ...{}...\n     got {line}",
                    row.location, row.message
                ));
            }
        }
        let rss_limit = KNOWN_OVER
            .iter()
            .find(|(known, _)| *known == path)
            .map_or(MAX_RSS_KIB, |(_, limit)| *limit);
        if run.max_rss_kib > rss_limit {
            fail(format!(
                "peak RSS {} KiB, the limit is {rss_limit} KiB",
                run.max_rss_kib
            ));
        }
        if run.wall > time_limit {
            fail(format!("took {:?}, the limit is {time_limit:?}", run.wall));
        }
        runs.push((path, run));
    }
    (failures, runs)
}

pub fn print_runs(runs: &[(String, Run)]) {
    let mut sorted: Vec<&(String, Run)> = runs.iter().collect();
    sorted.sort_by_key(|(_, run)| std::cmp::Reverse(run.wall));
    eprintln!("berth validate on the bad corpus, slowest first (wall time, peak RSS):");
    for (path, run) in sorted {
        eprintln!(
            "  {:>8.1} ms {:>8} KiB  {path}",
            run.wall.as_secs_f64() * 1000.0,
            run.max_rss_kib
        );
    }
}

#[test]
fn every_bad_manifest_is_reported_at_its_line_and_column_without_a_crash() {
    let rows = table::expected();
    let paths: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    assert!(
        rows.len() >= 80 && paths.len() >= 80,
        "the corpus has {} rows over {} inputs; it should have 80 inputs",
        rows.len(),
        paths.len()
    );
    // Every committed file is in the table, so none is left unchecked.
    let (files, errors) = berth_manifests::manifest_files(&corpus_dir("bad"));
    assert!(errors.is_empty(), "{errors:?}");
    let bad = corpus_dir("bad");
    for file in files {
        let relative = file
            .strip_prefix(&bad)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        assert!(
            paths
                .iter()
                .any(|p| relative == *p || relative.starts_with(&format!("{p}/"))),
            "{relative} is not in EXPECTED.tsv"
        );
    }
    let (failures, runs) = check_corpus(Path::new(env!("CARGO_BIN_EXE_berth")), LOOSE_TIME);
    print_runs(&runs);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The YAML blocks of README.md that are manifests (they have an apiVersion).
#[cfg(test)]
fn readme_manifests() -> Vec<(usize, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap_or_else(|e| panic!("README.md: {e}"));
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in readme.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        current = match current.take() {
            None if line.trim_start().starts_with("```yaml") => Some((n + 2, String::new())),
            None => None,
            Some((start, text)) if fence => {
                if text.contains("apiVersion:") {
                    blocks.push((start, text));
                }
                None
            }
            Some((start, mut text)) => {
                text.push_str(line);
                text.push('\n');
                Some((start, text))
            }
        };
    }
    blocks
}

#[test]
fn the_good_corpus_and_every_readme_example_validate() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = readme_manifests();
    assert!(
        !blocks.is_empty(),
        "README.md has no YAML manifest examples"
    );
    // Each README example on its own: they may reuse names between them.
    let berth = Path::new(env!("CARGO_BIN_EXE_berth"));
    let mut failures = Vec::new();
    for (line, text) in &blocks {
        let path = dir.path().join(format!("readme-line-{line}.yaml"));
        std::fs::write(&path, text).unwrap();
        let run = validate(berth, &path);
        if run.code != Some(0) {
            failures.push(format!("README.md line {line}:\n{}", run.stderr));
        }
    }
    let (good, errors) = berth_manifests::manifest_files(&corpus_dir("good"));
    assert!(errors.is_empty() && good.len() >= 20, "{good:?} {errors:?}");
    for file in &good {
        let run = validate(berth, file);
        if run.code != Some(0) {
            failures.push(format!("{}:\n{}", file.display(), run.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{} README examples and {} good manifests validate",
        blocks.len(),
        good.len()
    );
}
