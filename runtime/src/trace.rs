//! `berth start --trace`: how long each step of one start takes, in the manner of
//! LXC's step logging, to find what the start path spends its time on.
//!
//! Three processes take part: the starter (`berth start`), the monitor and the
//! container's init. They share one clock (CLOCK_MONOTONIC is the same in every
//! process of the host, and a new PID namespace does not change it), so each
//! writes `PROCESS START END STEP` lines, in nanoseconds, to `<container
//! dir>/trace` and the starter sorts them into one timeline. Steps are the work
//! between the processes' waits, never the waits themselves, so they do not
//! overlap: what lies between them is the waking of the other process.
//!
//! The file is in the state dir, made by the starter (0600, no symlink followed)
//! and opened close-on-exec by the monitor before it clones init. Init closes its
//! copy just before the execve of the command, which never sees it. When nobody
//! traces, every step costs one atomic load.

use std::fmt::Display;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

/// Set for the monitor by a traced start: the starter's clock when it spawned it.
pub(crate) const ENV: &str = "BERTH_TRACE";

/// The trace file of this process, or -1: not tracing.
static FD: AtomicI32 = AtomicI32::new(-1);
/// Who this process is, as the records name it: an index into `PROCESSES`.
static PROCESS: AtomicU8 = AtomicU8::new(0);

const PROCESSES: [&str; 3] = ["berth start", "monitor", "init"];

#[derive(Debug, Clone, Copy)]
pub(crate) enum Process {
    Monitor = 1,
    Init = 2,
}

/// Nanoseconds of CLOCK_MONOTONIC.
pub(crate) fn now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn enabled() -> bool {
    FD.load(Ordering::Relaxed) >= 0
}

/// The monitor: write this process's steps to `path`, which the starter made.
pub(crate) fn open(path: &Path) -> rustix::io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let old = FD.swap(std::os::fd::IntoRawFd::into_raw_fd(fd), Ordering::Relaxed);
    close_raw(old);
    Ok(())
}

/// Stop tracing and close the file: init before its execve, the monitor once it
/// has reported (a reboot's start is not traced).
pub(crate) fn close() {
    close_raw(FD.swap(-1, Ordering::Relaxed));
}

fn close_raw(fd: i32) {
    if fd >= 0 {
        // SAFETY: the fd came from `open` and only this module held it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Name this process in the records (init, right after its clone).
pub(crate) fn set_process(process: Process) {
    PROCESS.store(process as u8, Ordering::Relaxed);
}

/// The clock now if tracing, for a step timed by hand with `record`.
pub(crate) fn start() -> Option<u64> {
    enabled().then(now)
}

/// Record `step` from `start` until now. `end: None`: a step that lasts until
/// the next record of any process (the execve, after which init cannot write).
pub(crate) fn record(step: impl Display, start: Option<u64>, end: Option<u64>) {
    let fd = FD.load(Ordering::Relaxed);
    let Some(start) = start.filter(|_| fd >= 0) else {
        return;
    };
    let process = PROCESSES
        .get(usize::from(PROCESS.load(Ordering::Relaxed)))
        .unwrap_or(&"?");
    let end = end.map_or_else(|| "-".to_owned(), |e| e.to_string());
    let step = step.to_string().replace(['\t', '\n'], " ");
    let line = format!("{process}\t{start}\t{end}\t{step}\n");
    // SAFETY: `fd` is open until `close`, which nothing runs concurrently with:
    // the monitor and init are single-threaded.
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    // One write of a short line to an O_APPEND file: the processes' lines never mix.
    let _ = rustix::io::write(file, line.as_bytes());
}

/// Time `f` as `step`.
pub(crate) fn step<T>(step: impl Display, f: impl FnOnce() -> T) -> T {
    let started = start();
    let value = f();
    if started.is_some() {
        record(step, started, Some(now()));
    }
    value
}

/// A step's line from a process's records, or the starter's own.
#[derive(Debug, Clone)]
struct Record {
    process: String,
    start: u64,
    end: Option<u64>,
    step: String,
}

fn parse(line: &str) -> Option<Record> {
    let mut fields = line.splitn(4, '\t');
    let process = fields.next()?.to_owned();
    let start = fields.next()?.parse().ok()?;
    let end = match fields.next()? {
        "-" => None,
        end => Some(end.parse().ok()?),
    };
    let step = fields.next()?.to_owned();
    Some(Record {
        process,
        start,
        end,
        step,
    })
}

/// One start, step by step.
#[derive(Debug, Clone)]
pub struct StartTrace {
    pub steps: Vec<TracedStep>,
    /// From the first step's start to the last one's end.
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedStep {
    /// `berth start`, `monitor` or `init`.
    pub process: String,
    pub step: String,
    /// Since the first step's start.
    pub offset: Duration,
    pub duration: Duration,
}

/// The starter's side: its own steps in memory, the others' from the file.
#[derive(Debug, Default)]
pub(crate) struct Starter {
    records: Vec<Record>,
}

impl Starter {
    pub(crate) fn step<T>(&mut self, step: &str, f: impl FnOnce() -> T) -> T {
        let start = now();
        let value = f();
        self.records.push(Record {
            process: PROCESSES[0].to_owned(),
            start,
            end: Some(now()),
            step: step.to_owned(),
        });
        value
    }

    /// Its steps and those in `file`, as one timeline.
    pub(crate) fn finish(mut self, file: &str) -> StartTrace {
        self.records.extend(file.lines().filter_map(parse));
        timeline(self.records)
    }
}

/// Sorted by start; an open step ends where the next one starts.
fn timeline(mut records: Vec<Record>) -> StartTrace {
    records.sort_by_key(|r| r.start);
    let first = records.first().map_or(0, |r| r.start);
    let ends: Vec<u64> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.end
                .or_else(|| records.get(i + 1).map(|next| next.start))
                .unwrap_or(r.start)
                .max(r.start)
        })
        .collect();
    let last = ends.iter().copied().max().unwrap_or(first);
    let steps = records
        .into_iter()
        .zip(ends)
        .map(|(r, end)| TracedStep {
            offset: Duration::from_nanos(r.start - first),
            duration: Duration::from_nanos(end - r.start),
            process: r.process,
            step: r.step,
        })
        .collect();
    StartTrace {
        steps,
        total: Duration::from_nanos(last - first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_sorts_the_processes_steps_and_ends_an_open_step_at_the_next() {
        let mut starter = Starter::default();
        starter.records.push(Record {
            process: "berth start".to_owned(),
            start: 1_000,
            end: Some(3_000),
            step: "checks".to_owned(),
        });
        let file = "init\t10000\t-\texec\n\
                    monitor\t4000\t9000\tclone3\n\
                    garbage line\n\
                    monitor\t12000\t12500\tstatus write\n";
        let trace = starter.finish(file);
        let got: Vec<(&str, u64, u64)> = trace
            .steps
            .iter()
            .map(|s| {
                (
                    s.step.as_str(),
                    s.offset.as_nanos() as u64,
                    s.duration.as_nanos() as u64,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("checks", 0, 2_000),
                ("clone3", 3_000, 5_000),
                ("exec", 9_000, 2_000),
                ("status write", 11_000, 500),
            ]
        );
        assert_eq!(trace.total, Duration::from_nanos(11_500));
    }

    #[test]
    fn a_traced_process_appends_its_steps_and_none_once_closed() {
        // The only test that touches this process's trace file.
        assert_eq!(start(), None, "nothing traces until a file is opened");
        assert_eq!(step("untraced", || 7), 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace");
        std::fs::write(&path, "").unwrap();
        open(&path).unwrap();
        set_process(Process::Monitor);
        step("clone3", || ());
        record("exec", start(), None);
        close();
        step("after close", || ());
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Record> = text.lines().filter_map(parse).collect();
        let steps: Vec<(&str, &str, bool)> = records
            .iter()
            .map(|r| (r.process.as_str(), r.step.as_str(), r.end.is_some()))
            .collect();
        assert_eq!(
            steps,
            [("monitor", "clone3", true), ("monitor", "exec", false)]
        );
        assert!(records[0].end.unwrap() >= records[0].start);
        assert!(records[1].start >= records[0].end.unwrap());
    }
}
