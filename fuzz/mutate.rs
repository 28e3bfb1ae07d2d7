//! The stable twin of libFuzzer's loop: a seeded mutator over a seed corpus, for
//! `cargo test` on a toolchain without cargo-fuzz. Each crate's `tests/fuzz.rs`
//! includes this file (`#[path]`), so there is one mutator, not four. It is far
//! weaker than libFuzzer (no coverage feedback) but it runs every target's body
//! on every CI run; `fuzz/README.md` says how to run the real thing.
//!
//! `BERTH_FUZZ_SEED=N` replays a run, `BERTH_FUZZ_CASES=N` sets its length. A
//! failing case is written to `target/fuzz-failures/` before the panic goes on.

#![allow(dead_code)] // each test uses what it needs

use std::path::{Path, PathBuf};

/// xorshift64*: small, seedable, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The run's seed: `BERTH_FUZZ_SEED`, else the clock; printed so a failure replays.
pub fn seed(target: &str) -> u64 {
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("fuzz {target}: BERTH_FUZZ_SEED={seed}");
    seed
}

/// `BERTH_FUZZ_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Bytes that change how a parser reads what follows.
const INTERESTING: &[u8] = b"\0\n\r\t :-[]{},&*!|>'\"#%@`./\\\x7f\xff\xfe\xef\xbb\xbf";

/// One to eight edits of a seed: bit flips, interesting bytes, inserts, deletes,
/// repeats, splices from another seed and dictionary words.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dictionary: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut data = rng.pick(seeds).clone();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(9) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] = *rng.pick(INTERESTING);
            }
            2 => {
                let n = rng.below(8) + 1;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            3 if at < data.len() => {
                let end = (at + rng.below(32) + 1).min(data.len());
                data.drain(at..end);
            }
            4 if at < data.len() => {
                let end = (at + rng.below(64) + 1).min(data.len());
                let chunk = data[at..end].to_vec();
                for _ in 0..=rng.below(4) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            5 => {
                let other = rng.pick(seeds);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let end = (from + rng.below(256) + 1).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
            }
            6 if !dictionary.is_empty() => {
                let word = rng.pick(dictionary);
                data.splice(at..at, word.iter().copied());
            }
            7 => data.truncate(at),
            _ => {
                let n = rng.below(4) + 1;
                data.splice(at..at, std::iter::repeat_n(*rng.pick(INTERESTING), n));
            }
        }
    }
    data.truncate(max_len);
    data
}

/// Every file of `dir` and its subdirectories, sorted; none if it is missing.
pub fn seed_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// Run `body` on every seed, then on `cases` mutations of them. A panicking input
/// is saved under `target/fuzz-failures/TARGET-N` and the panic goes on.
pub fn run(
    target: &str,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    max_len: usize,
    cases: usize,
    mut body: impl FnMut(&[u8]),
) {
    assert!(!seeds.is_empty(), "fuzz {target}: no seeds");
    let mut rng = Rng::new(seed(target));
    let started = std::time::Instant::now();
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..cases).map(|_| mutate(&mut rng, seeds, dictionary, max_len)));
    for (n, input) in inputs.enumerate() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&input)));
        if let Err(panic) = outcome {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let saved = dir.join(format!("{target}-{n}"));
            let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&saved, &input));
            eprintln!(
                "fuzz {target}: case {n} panicked; its input is {}",
                saved.display()
            );
            std::panic::resume_unwind(panic);
        }
    }
    eprintln!(
        "fuzz {target}: {} seeds and {cases} mutations in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
}
