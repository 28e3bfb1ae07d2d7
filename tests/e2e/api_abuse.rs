//! The API socket under abuse (as root): garbage, old and new protocols, huge
//! heads and bodies, slowloris, path traversal, unknown methods and 1,000
//! connections at once. Each is answered with a 4xx or closed; a well-behaved
//! client keeps being served meanwhile, and the daemon's memory and fds come back.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::{StateDir, stderr, unique};

/// The daemon's header timeout (api.rs HEADER_READ_TIMEOUT) plus slack for a
/// loaded machine: a connection still open after this was held, not closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(12);
/// The worst latency of a well-behaved `GET /v1/containers` during the abuse.
/// The goal is 100 ms (a release build on a quiet device); this debug
/// test shares two cores with other tests, so it asserts what tells "served
/// alongside" from "queued behind stalled clients" (which costs the 5 s header
/// timeout), and prints the figures.
const WORST_LATENCY: Duration = Duration::from_millis(2500);
/// How far the daemon's VmRSS may stay above its level before the abuse once
/// it is over: the allocator keeps some freed memory for reuse (1,000
/// connections' buffers, at most 16 KiB each).
const RSS_TOLERANCE_KIB: u64 = 24 * 1024;
/// Open fds the daemon may have beyond its count before the abuse.
const FD_TOLERANCE: usize = 2;

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// Closed (EOF or reset) without an answer.
    Closed,
    /// Still open after CLOSED_WITHIN: the daemon held it.
    Held,
}

fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()))
}

/// What the daemon did with a connection on which `send` was written (in
/// chunks; write errors are the daemon closing early, which is fine).
fn outcome_of(socket: &Path, send: &mut dyn Iterator<Item = Vec<u8>>) -> (Outcome, String) {
    let mut stream = connect(socket);
    // A daemon that neither reads nor closes must not hang the test.
    stream.set_write_timeout(Some(CLOSED_WITHIN)).unwrap();
    for chunk in send {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    read_outcome(&mut stream)
}

fn read_outcome(stream: &mut UnixStream) -> (Outcome, String) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = CLOSED_WITHIN.saturating_sub(started.elapsed());
        if left.is_zero() {
            return (Outcome::Held, String::from_utf8_lossy(&answer).into_owned());
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (Outcome::Held, String::from_utf8_lossy(&answer).into_owned());
            }
            Err(_) => break,
        }
        // One answer is enough: the daemon may keep the connection alive.
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    match status {
        Some(code) => (Outcome::Status(code), text),
        None => (Outcome::Closed, text),
    }
}

/// Every abuse the daemon did not refuse, reported together at the end.
static NOT_REFUSED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `what` was refused: a 4xx, or closed without an answer.
fn assert_refused(what: &str, (outcome, answer): (Outcome, String)) {
    let head: String = answer.chars().take(300).collect();
    println!("{what}: {outcome:?}");
    if !matches!(outcome, Outcome::Status(400..=499) | Outcome::Closed) {
        NOT_REFUSED.lock().unwrap().push(format!(
            "{what}: the daemon answered {outcome:?}, not a 4xx or a close:\n{head}"
        ));
    }
}

fn once(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> {
    std::iter::once(bytes.to_vec())
}

/// xorshift64*: garbage that is the same in every run.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// The daemon's VmRSS (KiB), open fds and threads.
fn usage(pid: i32) -> (u64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (field("VmRSS:"), fds, field("Threads:") as usize)
}

/// One well-behaved `GET /v1/containers` on a new connection: its latency, from
/// connect to the whole answer.
fn probe(socket: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /v1/containers HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let took = started.elapsed();
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(took)
    } else {
        Err(format!(
            "answered {:?} after {took:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ))
    }
}

/// A well-behaved client asking every 20 ms until told to stop; every latency.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Result<Duration, String>>>>,
}

impl Prober {
    fn start(socket: PathBuf) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                seen.push(probe(&socket));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Result<Duration, String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A test process may start with 1,024 fds; 1,000 connections need more.
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = 4096.min(limit.maximum.unwrap_or(u64::MAX));
    if limit.current.is_some_and(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        )
        .unwrap_or_else(|e| panic!("cannot raise the fd limit to {want}: {e}"));
    }
}

/// Slowloris: a request line, then one header line a second (or, `by_byte`,
/// one byte a second), for as long as the daemon keeps the connection open.
/// How long it stayed open.
fn slowloris(socket: &Path, by_byte: bool) -> Duration {
    let mut stream = connect(socket);
    let started = Instant::now();
    let _ = stream.write_all(b"GET /v1/containers HTTP/1.1\r\n");
    let line = b"X-Slow: 1\r\n";
    let mut n = 0usize;
    while started.elapsed() < CLOSED_WITHIN + Duration::from_secs(5) {
        let sent = if by_byte {
            stream.write_all(&line[n % line.len()..n % line.len() + 1])
        } else {
            stream.write_all(line)
        };
        if sent.is_err() {
            return started.elapsed();
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    started.elapsed()
}

#[test]
fn abuse_of_the_api_socket_is_refused_while_a_well_behaved_client_is_served() {
    raise_fd_limit();
    let state = StateDir::new();
    let daemon = Daemon::start_with(&state, &[]);
    let pid = daemon.pid();
    let socket = state.path().join("berth.sock");
    // A file the path traversals would reach: containers/../console.log.
    let marker = unique("outside-the-containers");
    std::fs::write(state.path().join("console.log"), &marker).unwrap();

    // Warm up (the first answers allocate what every later one reuses), then
    // the levels to come back to.
    for _ in 0..20 {
        probe(&socket).unwrap();
    }
    let (rss_before, fds_before, threads_before) = usage(pid);
    println!("before: VmRSS {rss_before} KiB, {fds_before} fds, {threads_before} threads");

    let prober = Prober::start(socket.clone());

    // 1,000 connections at once: a third send nothing, a third half a request
    // line, a third a whole request they never read the answer of.
    let mut crowd = Vec::new();
    for i in 0..1000 {
        let mut stream = connect(&socket);
        let _ = match i % 3 {
            0 => Ok(()),
            1 => stream.write_all(b"GET /v1/conta"),
            _ => stream.write_all(b"GET /v1/containers HTTP/1.1\r\nHost: berth\r\n\r\n"),
        };
        crowd.push(stream);
    }
    let started = Instant::now();
    let out = state.run(&["get"]);
    let crowded_get = started.elapsed();
    println!("berth get beside 1,000 connections: {crowded_get:?}");
    assert!(
        out.status.success(),
        "berth get beside 1,000 connections: {}",
        stderr(&out)
    );

    assert_refused("garbage", outcome_of(&socket, &mut once(&garbage(4096))));
    assert_refused(
        "garbage after a request line",
        outcome_of(
            &socket,
            &mut once(&[b"GET / HTTP/1.1\r\n".as_slice(), &garbage(512)].concat()),
        ),
    );
    assert_refused(
        "HTTP/0.9",
        outcome_of(&socket, &mut once(b"GET /v1/containers\r\n")),
    );
    assert_refused(
        "HTTP/2 preface",
        outcome_of(
            &socket,
            &mut once(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        ),
    );
    let big = [
        b"GET /v1/containers HTTP/1.1\r\nHost: berth\r\nX-Big: ".to_vec(),
        vec![b'a'; 1 << 20],
        b"\r\n\r\n".to_vec(),
    ];
    assert_refused("a 1 MiB header", outcome_of(&socket, &mut big.into_iter()));
    let mut many = std::iter::once(b"GET /v1/containers HTTP/1.1\r\nHost: berth\r\n".to_vec())
        .chain((0..10_000).map(|i| format!("X-H{i}: v\r\n").into_bytes()))
        .chain(std::iter::once(b"\r\n".to_vec()));
    assert_refused("10,000 headers", outcome_of(&socket, &mut many));
    for path in [
        "/v1/containers",
        &format!("/v1/containers/{}/reboot", unique("body")),
    ] {
        let method = if path.ends_with("reboot") {
            "POST"
        } else {
            "GET"
        };
        let mut body = std::iter::once(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Length: {}\r\n\r\n",
                100 << 20
            )
            .into_bytes(),
        )
        .chain((0..1600).map(|_| vec![0u8; 64 << 10]));
        let (outcome, answer) = outcome_of(&socket, &mut body);
        // Refused for its declared length, before any handler runs.
        assert!(
            outcome == Outcome::Status(413) && answer.contains("\"code\":\"PayloadTooLarge\""),
            "a 100 MiB body to {method} {path}: {outcome:?}\n{answer}"
        );
        assert_refused(
            &format!("a 100 MiB body to {method} {path}"),
            (outcome, answer),
        );
    }
    let mut chunked = std::iter::once(
        b"POST /v1/containers/x/stop HTTP/1.1\r\nHost: berth\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec(),
    )
    .chain((0..1600).map(|_| [b"10000\r\n".as_slice(), &[0u8; 1 << 16], b"\r\n"].concat()));
    assert_refused("a 100 MiB chunked body", outcome_of(&socket, &mut chunked));

    for path in [
        "/v1/containers/%2e%2e/logs",
        "/v1/containers/%2E%2E/logs?tail=10",
        "/v1/containers/..%2f..%2fetc/logs",
        "/v1/containers/..%2fconsole.log",
        "/v1/containers/%2e%2e",
        "/v1/containers/a%00b/logs",
        "/v1/containers/../../console.log",
        "/v1/containers/..%252f/logs",
    ] {
        let (outcome, answer) = outcome_of(
            &socket,
            &mut once(
                format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            ),
        );
        assert!(
            !answer.contains(&marker),
            "GET {path} read outside the containers:\n{answer}"
        );
        assert_refused(&format!("GET {path}"), (outcome, answer));
    }
    for path in [
        "/v1/containers/%2e%2e/reboot",
        "/v1/containers/..%2f..%2f/stop",
    ] {
        assert_refused(
            &format!("POST {path}"),
            outcome_of(
                &socket,
                &mut once(
                    format!("POST {path} HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n")
                        .as_bytes(),
                ),
            ),
        );
    }
    assert_refused(
        "a NUL in the request line",
        outcome_of(
            &socket,
            &mut once(b"GET /v1/containers/a\0b HTTP/1.1\r\nHost: berth\r\n\r\n"),
        ),
    );
    for request in [
        "BREW /v1/containers HTTP/1.1\r\nHost: berth\r\n\r\n",
        "DELETE /v1/containers HTTP/1.1\r\nHost: berth\r\n\r\n",
        "TRACE / HTTP/1.1\r\nHost: berth\r\n\r\n",
        "CONNECT berth:80 HTTP/1.1\r\nHost: berth\r\n\r\n",
        "G\x01T /v1/containers HTTP/1.1\r\nHost: berth\r\n\r\n",
        "GET /v1/containers HTTP/7.3\r\nHost: berth\r\n\r\n",
    ] {
        let method = request.split(' ').next().unwrap_or_default();
        assert_refused(
            &format!("method {method:?}"),
            outcome_of(&socket, &mut once(request.as_bytes())),
        );
    }

    // The crowd, held a while longer, then gone; the slow ones closed by the daemon.
    let out = state.run(&["get"]);
    assert!(
        out.status.success(),
        "berth get during the abuse: {}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_secs(2));
    drop(crowd);

    // Slowloris with room to spare (none closed to make room): 8 by line, 8 by
    // byte, each closed by the header timeout.
    let lorises: Vec<_> = (0..16)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || slowloris(&socket, i % 2 == 0))
        })
        .collect();
    let held: Vec<Duration> = lorises.into_iter().map(|l| l.join().unwrap()).collect();
    let probes = prober.finish();
    println!("slowloris connections closed after {held:?}");

    let failures: Vec<&String> = probes.iter().filter_map(|p| p.as_ref().err()).collect();
    let mut latencies: Vec<Duration> = probes
        .iter()
        .filter_map(|p| p.as_ref().ok().copied())
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "well-behaved GET /v1/containers during the abuse: {} requests, median {:?}, p95 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    );
    assert!(
        held.iter().all(|open| *open < CLOSED_WITHIN),
        "a slowloris connection was held for {:?}",
        held.iter().max()
    );
    let not_refused = NOT_REFUSED.lock().unwrap().clone();
    assert!(not_refused.is_empty(), "{}", not_refused.join("\n"));
    assert!(
        failures.is_empty(),
        "well-behaved requests failed: {failures:?}"
    );
    assert!(
        crowded_get < WORST_LATENCY * 2,
        "berth get took {crowded_get:?} beside 1,000 connections"
    );
    assert!(
        latencies.len() >= 20,
        "only {} well-behaved requests",
        latencies.len()
    );
    assert!(
        at(1.0) < WORST_LATENCY,
        "a well-behaved request took {:?} during the abuse",
        at(1.0)
    );

    // Back to where it was: every connection closed, memory returned.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = usage(pid);
    while after.1 > fds_before + FD_TOLERANCE && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = usage(pid);
    }
    let (rss_after, fds_after, threads_after) = after;
    println!("after: VmRSS {rss_after} KiB, {fds_after} fds, {threads_after} threads");
    assert!(
        fds_after <= fds_before + FD_TOLERANCE,
        "the daemon holds {fds_after} fds after the abuse, {fds_before} before"
    );
    assert!(
        rss_after <= rss_before + RSS_TOLERANCE_KIB,
        "the daemon's VmRSS is {rss_after} KiB after the abuse, {rss_before} KiB before"
    );
    probe(&socket).unwrap();
    drop(daemon);
}
