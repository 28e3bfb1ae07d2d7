//! Seccomp filters, compiled in the monitor before the clone and installed by the
//! container's init as its last step before exec.
//!
//! seccompiler (rust-vmm, Firecracker's) rather than libseccomp: it is pure Rust,
//! so berth stays one static-friendly binary with no C library to ship to devices.
//!
//! Profiles are OCI's `linux.seccomp` JSON with Docker's additions (`includes` and
//! `excludes` by capability, architecture and kernel), which seccompiler's own
//! JSON format lacks: they are converted here, one filter per action. The default
//! profile is one of them, built into the binary.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use caps::Capability;
use seccompiler::{BpfProgram, TargetArch};
use serde::Deserialize;

use crate::error::{Error, Result};

mod tree;

/// An allow list derived from Docker's default profile: EPERM for everything else.
const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Config {
        path: "seccomp".into(),
        message: format!(
            "seccomp filters are not supported on {}",
            std::env::consts::ARCH
        ),
    })
}

/// The default profile, for a container holding `caps`.
pub fn default_filters(caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>> {
    compile_profile(
        DEFAULT_PROFILE.as_bytes(),
        Path::new("the default seccomp profile"),
        &Host::this(caps)?,
    )
}

/// A profile file, for a container holding `caps`.
pub fn profile_filters(path: &Path, caps: &HashSet<Capability>) -> Result<Vec<BpfProgram>> {
    let text = read_profile(path)?;
    profile_text_filters(&text, path, caps)
}

/// The profile file's text.
pub fn read_profile(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: format!("cannot read the seccomp profile: {e}"),
    })
}

/// A profile's `text`, read from `path`, for a container holding `caps`.
pub fn profile_text_filters(
    text: &[u8],
    path: &Path,
    caps: &HashSet<Capability>,
) -> Result<Vec<BpfProgram>> {
    compile_profile(text, path, &Host::this(caps)?)
}

/// `compile`'s filters, from `cache` when it holds those of the same inputs:
/// the profile's text, the capabilities, the architecture, the running kernel and
/// berth's binary (its size and change time), all hashed into the cache's key.
/// Compiling the default profile costs about 0.7 ms a start; reading the cache
/// a few µs. A cache that does not check out (another key, a torn or altered
/// file: its contents are hashed too) is compiled afresh and rewritten, so a
/// filter is never other than a fresh compile's.
pub fn cached(
    cache: &Path,
    profile: &[u8],
    caps: &HashSet<Capability>,
    compile: impl FnOnce() -> Result<Vec<BpfProgram>>,
) -> Result<Vec<BpfProgram>> {
    let key = cache_key(profile, caps);
    if let Some(programs) = std::fs::read(cache)
        .ok()
        .and_then(|bytes| decode_cache(&bytes, &key))
    {
        return Ok(programs);
    }
    let programs = compile()?;
    // Only a cache: a failed write costs the next start a compile.
    let _ = crate::config::write_replace(cache, &encode_cache(&key, &programs));
    Ok(programs)
}

/// The filters of a container's `security`, through `cache` when there is one.
/// The profile's capability-gated rules follow the container's capabilities.
pub fn for_container(
    security: &berth_manifests::Security,
    cache: Option<&Path>,
) -> Result<Vec<BpfProgram>> {
    use berth_manifests::SeccompPolicy;
    let caps = crate::security::capability_set(&security.cap_add, &security.cap_drop);
    match (&security.seccomp, cache) {
        (SeccompPolicy::Unconfined, _) => Ok(Vec::new()),
        (SeccompPolicy::Default, Some(cache)) => {
            cached(cache, default_profile(), &caps, || default_filters(&caps))
        }
        (SeccompPolicy::Default, None) => default_filters(&caps),
        // A profile file is read once: its text is both the key and what is
        // compiled, so an edit meanwhile cannot file one under the other.
        (SeccompPolicy::Profile(path), Some(cache)) => read_profile(path).and_then(|text| {
            cached(cache, &text, &caps, || {
                profile_text_filters(&text, path, &caps)
            })
        }),
        (SeccompPolicy::Profile(path), None) => profile_filters(path, &caps),
    }
}

/// The default profile's text, for `cached`.
pub fn default_profile() -> &'static [u8] {
    DEFAULT_PROFILE.as_bytes()
}

/// Bumped when the cache's layout or the compiler's output changes meaning.
const CACHE_FORMAT: &[u8] = b"berth seccomp cache 2";

fn cache_key(profile: &[u8], caps: &HashSet<Capability>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(CACHE_FORMAT);
    hasher.update(std::env::consts::ARCH);
    let mut caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    caps.sort();
    for cap in &caps {
        hasher.update(cap.as_bytes());
        hasher.update(b"\0");
    }
    if let Ok(kernel) = std::fs::read("/proc/sys/kernel/osrelease") {
        hasher.update(kernel);
    }
    hasher.update(b"\0");
    if let Ok(exe) = std::fs::metadata("/proc/self/exe") {
        use std::os::unix::fs::MetadataExt;
        hasher.update(exe.size().to_le_bytes());
        hasher.update(exe.ctime().to_le_bytes());
        hasher.update(exe.ctime_nsec().to_le_bytes());
    }
    hasher.update(Sha256::digest(profile));
    hasher.finalize().into()
}

/// `key`, the sha256 of the rest, then per program its length and its
/// instructions (code, jt, jf, k; little-endian).
fn encode_cache(key: &[u8; 32], programs: &[BpfProgram]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut body = Vec::new();
    body.extend((programs.len() as u32).to_le_bytes());
    for program in programs {
        body.extend((program.len() as u32).to_le_bytes());
        for insn in program {
            body.extend(insn.code.to_le_bytes());
            body.push(insn.jt);
            body.push(insn.jf);
            body.extend(insn.k.to_le_bytes());
        }
    }
    let mut bytes = key.to_vec();
    bytes.extend(Sha256::digest(&body));
    bytes.extend(body);
    bytes
}

fn decode_cache(bytes: &[u8], key: &[u8; 32]) -> Option<Vec<BpfProgram>> {
    use sha2::{Digest, Sha256};
    let (stored_key, rest) = bytes.split_at_checked(32)?;
    let (digest, body) = rest.split_at_checked(32)?;
    if stored_key != key || Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let mut at = 0;
    let u32_at = |at: &mut usize| -> Option<u32> {
        let value = u32::from_le_bytes(body.get(*at..*at + 4)?.try_into().ok()?);
        *at += 4;
        Some(value)
    };
    let count = u32_at(&mut at)?;
    // Each program takes at least its length field: no loop past the body.
    if count as usize > body.len() / 4 {
        return None;
    }
    let mut programs = Vec::new();
    for _ in 0..count {
        let len = u32_at(&mut at)? as usize;
        let insns = body.get(at..at.checked_add(len.checked_mul(8)?)?)?;
        at += insns.len();
        programs.push(
            insns
                .chunks_exact(8)
                .map(|i| seccompiler::sock_filter {
                    code: u16::from_le_bytes([i[0], i[1]]),
                    jt: i[2],
                    jf: i[3],
                    k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
                })
                .collect(),
        );
    }
    (at == body.len()).then_some(programs)
}

/// What a rule's `includes` and `excludes` are checked against.
#[derive(Debug)]
struct Host<'a> {
    caps: &'a HashSet<Capability>,
    arch: TargetArch,
}

impl<'a> Host<'a> {
    fn this(caps: &'a HashSet<Capability>) -> Result<Host<'a>> {
        Ok(Host {
            caps,
            arch: arch()?,
        })
    }

    /// Docker's (Go's) architecture names, and Rust's.
    fn is_arch(&self, name: &str) -> bool {
        let names: &[&str] = match self.arch {
            TargetArch::x86_64 => &["amd64", "x86_64"],
            TargetArch::aarch64 => &["arm64", "aarch64"],
            TargetArch::riscv64 => &["riscv64"],
        };
        names.contains(&name)
    }

    fn has_cap(&self, name: &str) -> bool {
        name.parse().is_ok_and(|cap| self.caps.contains(&cap))
    }
}

/// An OCI seccomp profile (the `linux.seccomp` object of runtime-spec, as Docker's
/// and Podman's profile files are).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<ArgRule>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

/// Docker's `includes`/`excludes`: a rule counts only if the container holds every
/// capability of `includes` and none of `excludes`, and likewise for the
/// architecture and the running kernel's version.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

impl SyscallRule {
    fn applies(&self, host: &Host, origin: &Path) -> Result<bool> {
        let (inc, exc) = (&self.includes, &self.excludes);
        let caps =
            inc.caps.iter().all(|c| host.has_cap(c)) && !exc.caps.iter().any(|c| host.has_cap(c));
        let arches = (inc.arches.is_empty() || inc.arches.iter().any(|a| host.is_arch(a)))
            && !exc.arches.iter().any(|a| host.is_arch(a));
        if !(caps && arches) {
            return Ok(false);
        }
        let kernel_included = match &inc.min_kernel {
            Some(min) => kernel_at_least(min, origin)?,
            None => true,
        };
        let kernel_excluded = match &exc.min_kernel {
            Some(min) => kernel_at_least(min, origin)?,
            None => false,
        };
        Ok(kernel_included && !kernel_excluded)
    }
}

/// Is the running kernel at least `min` (`MAJOR.MINOR`)?
fn kernel_at_least(min: &str, origin: &Path) -> Result<bool> {
    let version = |text: &str| -> Option<(u32, u32)> {
        let mut parts = text.trim().split(['.', '-']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let wanted = version(min).ok_or_else(|| Error::Config {
        path: origin.to_owned(),
        message: format!("minKernel {min:?} is not a MAJOR.MINOR version"),
    })?;
    let release_file = "/proc/sys/kernel/osrelease";
    let release = std::fs::read_to_string(release_file).map_err(|e| Error::Config {
        path: release_file.into(),
        message: format!("cannot read the kernel's version for minKernel: {e}"),
    })?;
    let running = version(&release).ok_or_else(|| Error::Config {
        path: release_file.into(),
        message: format!("cannot read the kernel's version from {release:?}"),
    })?;
    Ok(running >= wanted)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgRule {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

fn action(name: &str, errno: Option<u32>, path: &Path) -> Result<serde_json::Value> {
    let eperm = nix::libc::EPERM as u32;
    Ok(match name {
        "SCMP_ACT_ALLOW" => "allow".into(),
        "SCMP_ACT_ERRNO" => serde_json::json!({ "errno": errno.unwrap_or(eperm) }),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => "kill_thread".into(),
        "SCMP_ACT_KILL_PROCESS" => "kill_process".into(),
        "SCMP_ACT_TRAP" => "trap".into(),
        "SCMP_ACT_LOG" => "log".into(),
        other => {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("seccomp action {other} is not supported"),
            });
        }
    })
}

fn condition(arg: &ArgRule, path: &Path) -> Result<serde_json::Value> {
    let op: serde_json::Value = match arg.op.as_str() {
        "SCMP_CMP_EQ" => "eq".into(),
        "SCMP_CMP_NE" => "ne".into(),
        "SCMP_CMP_LT" => "lt".into(),
        "SCMP_CMP_LE" => "le".into(),
        "SCMP_CMP_GT" => "gt".into(),
        "SCMP_CMP_GE" => "ge".into(),
        "SCMP_CMP_MASKED_EQ" => serde_json::json!({ "masked_eq": arg.value }),
        other => {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("seccomp operator {other} is not supported"),
            });
        }
    };
    let value = if arg.op == "SCMP_CMP_MASKED_EQ" {
        arg.value_two
    } else {
        arg.value
    };
    Ok(serde_json::json!({ "index": arg.index, "type": "qword", "op": op, "val": value }))
}

/// The calls of one action: per syscall name, `None` when it matches whatever its
/// arguments, else its alternatives (each a list of conditions that must all hold).
type Calls = BTreeMap<String, Option<Vec<Vec<serde_json::Value>>>>;

/// Compile a profile for this host. Each action gets a filter of its own (the
/// kernel runs them all, and the strictest action wins; between two errnos the
/// filter installed last, so the allow list goes first and the explicit rules
/// after it); names this architecture does not have are skipped, as runc does.
fn compile_profile(text: &[u8], origin: &Path, host: &Host) -> Result<Vec<BpfProgram>> {
    compile_profile_with(text, origin, host, compile_group)
}

type Group =
    fn(&Calls, serde_json::Value, serde_json::Value, TargetArch, &Path) -> Result<BpfProgram>;

fn compile_profile_with(
    text: &[u8],
    origin: &Path,
    host: &Host,
    compile_group: Group,
) -> Result<Vec<BpfProgram>> {
    let profile: Profile = serde_json::from_slice(text).map_err(|e| Error::Config {
        path: origin.to_owned(),
        message: format!("not an OCI seccomp profile: {e}"),
    })?;
    let default = action(&profile.default_action, profile.default_errno_ret, origin)?;
    let mut groups: BTreeMap<String, (serde_json::Value, Calls)> = BTreeMap::new();
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret, origin)?;
        // Rules with the default action add nothing.
        if act == default || !rule.applies(host, origin)? {
            continue;
        }
        let args = rule
            .args
            .iter()
            .map(|a| condition(a, origin))
            .collect::<Result<Vec<_>>>()?;
        let calls = &mut groups
            .entry(act.to_string())
            .or_insert_with(|| (act.clone(), Calls::new()))
            .1;
        for name in &rule.names {
            add_call(calls, name, &args);
        }
    }
    let allow: serde_json::Value = "allow".into();
    let mut programs = Vec::new();
    if default != allow {
        // An allow list: everything not allowed gets the default action.
        let allowed = groups
            .remove(&allow.to_string())
            .map(|(_, calls)| calls)
            .unwrap_or_default();
        programs.push(compile_group(
            &allowed,
            default.clone(),
            allow.clone(),
            host.arch,
            origin,
        )?);
    }
    for (_, (act, calls)) in groups {
        programs.push(compile_group(
            &calls,
            allow.clone(),
            act,
            host.arch,
            origin,
        )?);
    }
    Ok(programs)
}

/// A call matched unconditionally stays so: seccompiler would otherwise keep
/// only its conditional alternatives.
fn add_call(calls: &mut Calls, name: &str, args: &[serde_json::Value]) {
    let entry = calls
        .entry(name.to_owned())
        .or_insert_with(|| Some(Vec::new()));
    match entry {
        None => {}
        Some(_) if args.is_empty() => *entry = None,
        Some(alternatives) => alternatives.push(args.to_vec()),
    }
}

fn rules_of(calls: &Calls, keep: impl Fn(&str) -> bool) -> Vec<serde_json::Value> {
    let mut rules = Vec::new();
    for (name, alternatives) in calls.iter().filter(|(name, _)| keep(name)) {
        match alternatives {
            None => rules.push(serde_json::json!({ "syscall": name })),
            Some(alternatives) => rules.extend(
                alternatives
                    .iter()
                    .map(|args| serde_json::json!({ "syscall": name, "args": args })),
            ),
        }
    }
    rules
}

/// Compile one action's calls: those matched by number alone as a search tree
/// (tree.rs), the ones with argument rules by seccompiler after it.
fn compile_group(
    calls: &Calls,
    mismatch: serde_json::Value,
    matched: serde_json::Value,
    arch: TargetArch,
    origin: &Path,
) -> Result<BpfProgram> {
    let (plain, with_args): (Calls, Calls) = calls
        .iter()
        .map(|(name, alternatives)| (name.clone(), alternatives.clone()))
        .partition(|(_, alternatives)| alternatives.is_none());
    let linear = compile_linear(&plain, mismatch.clone(), matched.clone(), arch, origin)?;
    let Some(plain) = tree::plain_calls(&linear) else {
        return compile_linear(calls, mismatch, matched, arch, origin);
    };
    let rest = match with_args.is_empty() {
        true => None,
        false => Some(compile_linear(&with_args, mismatch, matched, arch, origin)?),
    };
    Ok(tree::with_rest(&plain, rest))
}

/// Compile one action's calls as seccompiler does, leaving out the names unknown
/// to this architecture (or to seccompiler's table). The common case, where all
/// are known, compiles once.
fn compile_linear(
    calls: &Calls,
    mismatch: serde_json::Value,
    matched: serde_json::Value,
    arch: TargetArch,
    origin: &Path,
) -> Result<BpfProgram> {
    let all = rules_of(calls, |_| true);
    let first = match compile_rules(&all, mismatch.clone(), matched.clone(), arch, origin) {
        Ok(program) => return Ok(program),
        Err(e) => e,
    };
    let names: Vec<&str> = calls.keys().map(String::as_str).collect();
    let known: HashSet<&str> = known_names(&names, arch).into_iter().collect();
    if known.len() == names.len() {
        return Err(first);
    }
    let rules = rules_of(calls, |name| known.contains(name));
    compile_rules(&rules, mismatch, matched, arch, origin)
}

/// The names seccompiler knows on `arch`, found by halving: a compile per unknown
/// name and level instead of one per name.
fn known_names<'a>(names: &[&'a str], arch: TargetArch) -> Vec<&'a str> {
    let rules: Vec<serde_json::Value> = names
        .iter()
        .map(|name| serde_json::json!({ "syscall": name }))
        .collect();
    let compiles = compile_rules(
        &rules,
        "allow".into(),
        "log".into(),
        arch,
        Path::new("seccomp"),
    )
    .is_ok();
    match names {
        _ if compiles => names.to_vec(),
        [] | [_] => Vec::new(),
        _ => {
            let (left, right) = names.split_at(names.len() / 2);
            let mut known = known_names(left, arch);
            known.extend(known_names(right, arch));
            known
        }
    }
}

fn compile_rules(
    rules: &[serde_json::Value],
    mismatch: serde_json::Value,
    matched: serde_json::Value,
    arch: TargetArch,
    path: &Path,
) -> Result<BpfProgram> {
    let json = serde_json::json!({ "f": { "mismatch_action": mismatch, "match_action": matched, "filter": rules } });
    let mut map =
        seccompiler::compile_from_json(json.to_string().as_bytes(), arch).map_err(|e| {
            Error::Config {
                path: path.to_owned(),
                message: format!("cannot compile the seccomp profile: {e}"),
            }
        })?;
    map.remove("f").ok_or_else(|| Error::Config {
        path: path.to_owned(),
        message: "cannot compile the seccomp profile".to_owned(),
    })
}

/// Install the filters: the last thing before exec, after no_new_privs.
pub fn install(programs: &[BpfProgram]) -> std::result::Result<(), String> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::libc;

    fn all_caps() -> HashSet<Capability> {
        caps::all().into_iter().collect()
    }

    /// Run `calls` in a thread of its own under `programs` (a filter binds only
    /// its thread, and no_new_privs too): each call's result, or its errno negated.
    fn under_filter(programs: Vec<BpfProgram>, calls: fn() -> Vec<i64>) -> Vec<i64> {
        std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().unwrap();
            install(&programs).unwrap();
            calls()
        })
        .join()
        .unwrap()
    }

    fn errno_of(result: impl Into<i64>) -> i64 {
        if result.into() < 0 {
            -i64::from(nix::errno::Errno::last_raw())
        } else {
            0
        }
    }

    #[test]
    fn the_default_profile_as_a_tree_decides_every_call_as_seccompiler_s_program_does() {
        let caps = crate::security::capability_set(&[], &[]);
        let host = Host::this(&caps).unwrap();
        let origin = Path::new("default");
        let tree = compile_profile(DEFAULT_PROFILE.as_bytes(), origin, &host).unwrap();
        let linear =
            compile_profile_with(DEFAULT_PROFILE.as_bytes(), origin, &host, compile_linear)
                .unwrap();
        assert_eq!(tree.len(), linear.len());
        let (tree_len, linear_len): (usize, usize) = (
            tree.iter().map(Vec::len).sum(),
            linear.iter().map(Vec::len).sum(),
        );
        assert!(tree_len * 2 < linear_len, "{tree_len} vs {linear_len}");
        let audit = match std::env::consts::ARCH {
            "x86_64" => 0xc000_003e,
            _ => 0xc000_00b7,
        };
        // Arguments that the profile's rules look at (personality, clone's
        // namespace flags, socket families) and some they do not.
        let args: [[u64; 6]; 6] = [
            [0; 6],
            [0x8; 6],
            [0xffff_ffff; 6],
            [0x1000_0000, 0, 0, 0, 0, 0],
            [0x7e02_0000, 1, 2, 3, 4, 5],
            [u64::MAX, 16, 0x20008, 0x0040_0000, 0, 0],
        ];
        for (tree, linear) in tree.iter().zip(&linear) {
            for nr in (0..1000).chain([u32::MAX, 0x4000_0000 + 59]) {
                for args in args {
                    for arch in [audit, 0x4000_0003] {
                        assert_eq!(
                            tree::tests::run(tree, nr, arch, args),
                            tree::tests::run(linear, nr, arch, args),
                            "nr {nr} args {args:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_cache_gives_back_what_was_compiled_and_refuses_what_does_not_check_out() {
        let caps = crate::security::capability_set(&[], &[]);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp.bpf");
        let fresh = default_filters(&caps).unwrap();
        let first = cached(&cache, default_profile(), &caps, || default_filters(&caps)).unwrap();
        assert_eq!(first, fresh);
        // A hit: the compiler is not called.
        let hit = cached(&cache, default_profile(), &caps, || {
            panic!("compiled again")
        })
        .unwrap();
        assert_eq!(hit, fresh);
        // Other capabilities: another key, compiled.
        let mut more = caps.clone();
        more.insert(Capability::CAP_SYS_ADMIN);
        let mut compiled = false;
        cached(&cache, default_profile(), &more, || {
            compiled = true;
            default_filters(&more)
        })
        .unwrap();
        assert!(compiled);
        // One flipped bit in the instructions: refused, compiled afresh.
        cached(&cache, default_profile(), &caps, || default_filters(&caps)).unwrap();
        let mut bytes = std::fs::read(&cache).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&cache, &bytes).unwrap();
        let mut compiled = false;
        let again = cached(&cache, default_profile(), &caps, || {
            compiled = true;
            default_filters(&caps)
        })
        .unwrap();
        assert!(compiled && again == fresh);
        // Torn: refused.
        std::fs::write(&cache, &bytes[..40]).unwrap();
        assert!(decode_cache(&bytes[..40], &cache_key(default_profile(), &caps)).is_none());
    }

    #[test]
    fn the_default_profile_names_only_calls_both_architectures_know() {
        // An unknown name would cost a search at every start.
        let caps = all_caps();
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let host = Host { caps: &caps, arch };
            let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
            let origin = Path::new("default");
            for rule in profile.syscalls {
                if !rule.applies(&host, origin).unwrap() {
                    continue;
                }
                let names: Vec<&str> = rule.names.iter().map(String::as_str).collect();
                assert_eq!(known_names(&names, arch), names, "{arch:?}");
            }
            let programs = compile_profile(DEFAULT_PROFILE.as_bytes(), origin, &host).unwrap();
            // The allow list, and clone3's ENOSYS only without SYS_ADMIN.
            assert_eq!(programs.len(), 1, "{arch:?}");
        }
    }

    #[test]
    fn the_default_profile_allows_what_docker_allows_and_refuses_the_rest() {
        let caps = crate::security::capability_set(&[], &[]);
        let results = under_filter(default_filters(&caps).unwrap(), || {
            // SAFETY: each call gets arguments it cannot misuse: a zeroed buffer
            // of the size io_uring_setup reads, null pointers, flag values.
            unsafe {
                let params = [0u8; 120];
                vec![
                    errno_of(libc::syscall(libc::SYS_getpid)),
                    errno_of(libc::syscall(libc::SYS_io_uring_setup, 1, params.as_ptr())),
                    errno_of(libc::syscall(libc::SYS_userfaultfd, 1)),
                    errno_of(libc::syscall(libc::SYS_set_mempolicy, 0, 0, 0)),
                    errno_of(libc::unshare(libc::CLONE_NEWUSER)),
                    errno_of(libc::syscall(libc::SYS_clone3, 0, 0)),
                    errno_of(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0)),
                    errno_of(libc::personality(0xffff_ffff)),
                    errno_of(libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong)),
                    // SYS_BOOT is a default capability: reboot reaches the kernel,
                    // which refuses the wrong magic with EINVAL.
                    errno_of(libc::syscall(libc::SYS_reboot, 0, 0, 0, 0)),
                    // Threads still start: glibc's clone3 meets ENOSYS, falls back to clone.
                    if std::thread::spawn(|| ()).join().is_ok() {
                        0
                    } else {
                        -1
                    },
                ]
            }
        });
        let (eperm, enosys) = (-i64::from(libc::EPERM), -i64::from(libc::ENOSYS));
        let einval = -i64::from(libc::EINVAL);
        assert_eq!(
            results,
            [
                0, eperm, eperm, eperm, eperm, enosys, eperm, 0, eperm, einval, 0
            ]
        );
    }

    #[test]
    fn a_capability_brings_its_calls_into_the_default_profile() {
        let mut caps = crate::security::capability_set(&[], &[]);
        caps.insert(Capability::CAP_SYS_NICE);
        let results = under_filter(default_filters(&caps).unwrap(), || {
            // SAFETY: MPOL_DEFAULT with no node mask resets this thread's policy to
            // what it already is.
            vec![errno_of(unsafe {
                libc::syscall(libc::SYS_set_mempolicy, 0, 0, 0)
            })]
        });
        assert_eq!(results, [0]);
    }

    #[test]
    fn docker_includes_and_excludes_pick_the_rules_for_this_host() {
        let caps = HashSet::from([Capability::CAP_CHOWN]);
        let host = Host {
            caps: &caps,
            arch: TargetArch::x86_64,
        };
        let count = |rule: &str| {
            let text = format!(
                r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", {rule}}}]}}"#
            );
            compile_profile(text.as_bytes(), Path::new("p"), &host)
                .unwrap()
                .len()
        };
        assert_eq!(count(r#""includes": {"caps": ["CAP_CHOWN"]}"#), 1);
        assert_eq!(
            count(r#""includes": {"caps": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}"#),
            0
        );
        assert_eq!(count(r#""excludes": {"caps": ["CAP_CHOWN"]}"#), 0);
        assert_eq!(count(r#""includes": {"arches": ["arm64"]}"#), 0);
        assert_eq!(count(r#""includes": {"arches": ["amd64", "x32"]}"#), 1);
        assert_eq!(count(r#""excludes": {"arches": ["amd64"]}"#), 0);
        assert_eq!(count(r#""includes": {"minKernel": "3.10"}"#), 1);
        assert_eq!(count(r#""includes": {"minKernel": "999.0"}"#), 0);
    }

    #[test]
    fn an_oci_profile_compiles_per_action_and_skips_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdirat", "no_such_syscall"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(profile_filters(&path, &HashSet::new()).unwrap().len(), 3);
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#)
            .unwrap();
        assert_eq!(profile_filters(&path, &HashSet::new()).unwrap().len(), 1);
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
        assert!(
            profile_filters(&path, &HashSet::new())
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_NOTIFY is not supported")
        );
    }
}
