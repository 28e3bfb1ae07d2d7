//! A search tree for the calls a filter matches without looking at arguments.
//!
//! seccompiler checks the syscall number against each rule in turn: five
//! instructions per call, so Docker's allow list is a program of some 1,700
//! instructions that the kernel verifies and JIT-compiles at every start and
//! walks, on average half of it, at every system call the container makes.
//! Here the plain calls (no argument rules) become ranges of consecutive numbers
//! searched by halving, as libseccomp's binary-tree mode does: some 500
//! instructions, a dozen of them on any one call's path. Calls with argument
//! rules stay in seccompiler's program, which runs when the number is not one
//! of the plain calls.

use seccompiler::{BpfProgram, sock_filter};

/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_RET_K: u16 = 0x06;
/// `seccomp_data`: `nr` at 0, `arch` at 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// A jump to the program's rest, its offset filled in once the tree's length is known.
const TO_REST: u32 = u32::MAX;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What seccompiler made of plain calls only: the architecture check, the
/// number's load, and per call `jeq nr,0,1; ja 1; ja 2; ret match; ret
/// mismatch`, then `ret mismatch`. The numbers and the two actions, or None
/// when the program has another shape (then it is used as it is).
pub(super) struct Plain {
    prologue: [sock_filter; 4],
    numbers: Vec<u32>,
    matched: u32,
    mismatched: u32,
}

pub(super) fn plain_calls(program: &BpfProgram) -> Option<Plain> {
    let [arch_load, arch_check, arch_kill, nr_load, body @ ..] = program.as_slice() else {
        return None;
    };
    let prologue_fits = arch_load.code == BPF_LD_W_ABS
        && arch_load.k == OFFSET_ARCH
        && arch_check.code == BPF_JMP | BPF_JEQ
        && (arch_check.jt, arch_check.jf) == (1, 0)
        && arch_kill.code == BPF_RET_K
        && nr_load.code == BPF_LD_W_ABS
        && nr_load.k == OFFSET_NR;
    let (last, chains) = body.split_last()?;
    if !prologue_fits || last.code != BPF_RET_K || chains.len() % 5 != 0 {
        return None;
    }
    let mismatched = last.k;
    let mut matched = None;
    let mut numbers = Vec::with_capacity(chains.len() / 5);
    for chain in chains.chunks_exact(5) {
        let [eq, ja1, ja2, ret_match, ret_mismatch] = chain else {
            return None;
        };
        let fits = eq.code == BPF_JMP | BPF_JEQ
            && (eq.jt, eq.jf) == (0, 1)
            && ja1.code == BPF_JMP | BPF_JA
            && ja1.k == 1
            && ja2.code == BPF_JMP | BPF_JA
            && ja2.k == 2
            && ret_match.code == BPF_RET_K
            && *matched.get_or_insert(ret_match.k) == ret_match.k
            && ret_mismatch.code == BPF_RET_K
            && ret_mismatch.k == mismatched;
        if !fits {
            return None;
        }
        numbers.push(eq.k);
    }
    Some(Plain {
        prologue: [
            arch_load.clone(),
            arch_check.clone(),
            arch_kill.clone(),
            nr_load.clone(),
        ],
        numbers,
        matched: matched?,
        mismatched,
    })
}

/// The plain calls as a search tree; a number not among them goes on to `rest`
/// (seccompiler's program for the calls with argument rules), or gets the
/// mismatch action when there is none.
pub(super) fn with_rest(plain: &Plain, rest: Option<BpfProgram>) -> BpfProgram {
    let mut numbers = plain.numbers.clone();
    numbers.sort_unstable();
    numbers.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for n in numbers {
        match ranges.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(n) => *last = n,
            _ => ranges.push((n, n)),
        }
    }
    let mut program = plain.prologue.to_vec();
    let tree = search(&ranges, plain.matched);
    let tree_start = program.len();
    program.extend(tree);
    let rest_at = program.len();
    for (at, insn) in program.iter_mut().enumerate().skip(tree_start) {
        if insn.code == BPF_JMP | BPF_JA && insn.k == TO_REST {
            // The rest follows the tree: a forward jump that always fits a u32.
            insn.k = (rest_at - at - 1) as u32;
        }
    }
    match rest {
        Some(rest) => program.extend(rest),
        None => program.push(stmt(BPF_RET_K, plain.mismatched)),
    }
    program
}

/// `ranges` (sorted, apart) by halving: at each level `jge` on the first number
/// of the upper half; at a leaf the range's bounds, then the match action.
fn search(ranges: &[(u32, u32)], matched: u32) -> Vec<sock_filter> {
    match ranges {
        [] => vec![stmt(BPF_JMP | BPF_JA, TO_REST)],
        [(low, high)] if low == high => vec![
            jump(BPF_JMP | BPF_JEQ, *low, 0, 1),
            stmt(BPF_RET_K, matched),
            stmt(BPF_JMP | BPF_JA, TO_REST),
        ],
        [(low, high)] => vec![
            jump(BPF_JMP | BPF_JGE, *low, 0, 2),
            jump(BPF_JMP | BPF_JGT, *high, 1, 0),
            stmt(BPF_RET_K, matched),
            stmt(BPF_JMP | BPF_JA, TO_REST),
        ],
        _ => {
            let (lower, upper) = ranges.split_at(ranges.len() / 2);
            let pivot = upper[0].0;
            let lower = search(lower, matched);
            let upper = search(upper, matched);
            let mut out = Vec::with_capacity(lower.len() + upper.len() + 2);
            match u8::try_from(lower.len()) {
                Ok(skip) => out.push(jump(BPF_JMP | BPF_JGE, pivot, skip, 0)),
                // Too far for a conditional jump: over an unconditional one.
                Err(_) => {
                    out.push(jump(BPF_JMP | BPF_JGE, pivot, 0, 1));
                    out.push(stmt(BPF_JMP | BPF_JA, lower.len() as u32));
                }
            }
            out.extend(lower);
            out.extend(upper);
            out
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A classic BPF interpreter for what seccompiler and the tree emit: loads
    /// from `seccomp_data`, ALU and/or/sub on A, jumps on K, return K.
    pub(crate) fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for arg in args {
            data.extend(arg.to_ne_bytes());
        }
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let mut mem = [0u32; 16];
        loop {
            let insn = &program[pc];
            pc += 1;
            let class = insn.code & 0x07;
            match class {
                0x00 | 0x01 => {
                    let value = match insn.code & 0xe0 {
                        0x20 => {
                            let at = insn.k as usize;
                            u32::from_ne_bytes(data[at..at + 4].try_into().unwrap())
                        }
                        0x00 => insn.k,
                        0x60 => mem[insn.k as usize],
                        mode => panic!("load mode {mode:#x}"),
                    };
                    if class == 0x00 { a = value } else { x = value }
                }
                0x02 => mem[insn.k as usize] = a,
                0x03 => mem[insn.k as usize] = x,
                0x04 => {
                    let operand = if insn.code & 0x08 != 0 { x } else { insn.k };
                    a = match insn.code & 0xf0 {
                        0x00 => a.wrapping_add(operand),
                        0x10 => a.wrapping_sub(operand),
                        0x40 => a | operand,
                        0x50 => a & operand,
                        op => panic!("alu op {op:#x}"),
                    }
                }
                0x05 => {
                    let operand = if insn.code & 0x08 != 0 { x } else { insn.k };
                    let taken = match insn.code & 0xf0 {
                        0x00 => {
                            pc += insn.k as usize;
                            continue;
                        }
                        0x10 => a == operand,
                        0x20 => a > operand,
                        0x30 => a >= operand,
                        0x40 => a & operand != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                0x06 => return insn.k,
                0x07 => {
                    if insn.code & 0xf8 == 0x00 {
                        x = a
                    } else {
                        a = x
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    fn linear(numbers: &[u32]) -> BpfProgram {
        let mut program = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JMP | BPF_JEQ, 0xc000_003e, 1, 0),
            stmt(BPF_RET_K, 0x8000_0000),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
        ];
        for &n in numbers {
            program.extend([
                jump(BPF_JMP | BPF_JEQ, n, 0, 1),
                stmt(BPF_JMP | BPF_JA, 1),
                stmt(BPF_JMP | BPF_JA, 2),
                stmt(BPF_RET_K, 0x7fff_0000),
                stmt(BPF_RET_K, 0x0005_0001),
            ]);
        }
        program.push(stmt(BPF_RET_K, 0x0005_0001));
        program
    }

    #[test]
    fn the_tree_answers_every_number_as_the_linear_program_does() {
        // Runs, singles, a gap at 0, numbers far apart: and enough of them for
        // the lower half of the top levels to be out of a conditional jump's reach.
        let mut numbers: Vec<u32> = (1..40).chain([42, 44, 45, 46, 300, 301, 4000]).collect();
        numbers.extend((500..2000).step_by(3));
        numbers.reverse();
        let before = linear(&numbers);
        let plain = plain_calls(&before).unwrap();
        let after = with_rest(&plain, None);
        assert!(
            after.len() < before.len(),
            "{} vs {}",
            after.len(),
            before.len()
        );
        // The far form was taken somewhere: a jge that falls through to a long ja.
        assert!(
            after
                .windows(2)
                .any(|pair| pair[0].code == BPF_JMP | BPF_JGE
                    && (pair[0].jt, pair[0].jf) == (0, 1)
                    && pair[1].code == BPF_JMP | BPF_JA
                    && pair[1].k > 255)
        );
        for nr in (0..4100).chain([u32::MAX, u32::MAX - 1]) {
            for arch in [0xc000_003e, 0x4000_0003] {
                assert_eq!(
                    run(&after, nr, arch, [0; 6]),
                    run(&before, nr, arch, [0; 6]),
                    "nr {nr} arch {arch:#x}"
                );
            }
        }
    }

    #[test]
    fn a_program_of_another_shape_is_not_taken_apart() {
        let mut program = linear(&[1, 2, 3]);
        program[5].k = 3; // a jump that is not seccompiler's pattern
        assert!(plain_calls(&program).is_none());
        let mut program = linear(&[1, 2, 3]);
        program.pop();
        assert!(plain_calls(&program).is_none());
        let empty = linear(&[]);
        let plain = plain_calls(&empty);
        assert!(plain.is_none() || plain.is_some_and(|p| p.numbers.is_empty()));
    }
}
