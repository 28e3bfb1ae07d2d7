//! Seccomp filters, compiled in the monitor before the clone and installed by the
//! container's init as its last step before exec.
//!
//! seccompiler (rust-vmm, Firecracker's) rather than libseccomp: it is pure Rust,
//! so berth stays one static-friendly binary with no C library to ship to devices.

use std::collections::BTreeMap;
use std::path::Path;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

use crate::error::{Error, Result};

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Config {
        path: "seccomp".into(),
        message: format!(
            "seccomp filters are not supported on {}",
            std::env::consts::ARCH
        ),
    })
}

fn compile(filter: SeccompFilter) -> Result<BpfProgram> {
    BpfProgram::try_from(filter).map_err(|e| Error::Config {
        path: "seccomp".into(),
        message: e.to_string(),
    })
}

/// Docker's spirit, as a deny list: EPERM for what a container has no business
/// calling, whatever its capabilities.
pub fn default_filter() -> Result<Vec<BpfProgram>> {
    use nix::libc;
    let deny = [
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_acct,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_pivot_root,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_mount_setattr,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        deny.iter().map(|nr| (*nr, Vec::new())).collect();
    // No new user namespaces: unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER...).
    let newuser = libc::CLONE_NEWUSER as u64;
    let flag = |index: u8| {
        SeccompCondition::new(
            index,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
    };
    let rule_err = |e: seccompiler::BackendError| Error::Config {
        path: "seccomp".into(),
        message: e.to_string(),
    };
    rules.insert(libc::SYS_unshare, vec![flag(0).map_err(rule_err)?]);
    rules.insert(libc::SYS_clone, vec![flag(0).map_err(rule_err)?]);
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch()?).map_err(rule_err)?;
    // clone3 hides its flags behind a pointer: ENOSYS makes libc fall back to clone.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(rule_err)?;
    Ok(vec![compile(deny)?, compile(clone3)?])
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

/// Compile a profile file. Each action gets a filter of its own (the kernel runs
/// them all and the strictest answer wins, which is the profile's meaning); names
/// this architecture does not have are skipped.
pub fn profile_filters(path: &Path) -> Result<Vec<BpfProgram>> {
    let bad = |message: String| Error::Config {
        path: path.to_owned(),
        message,
    };
    let text =
        std::fs::read(path).map_err(|e| bad(format!("cannot read the seccomp profile: {e}")))?;
    let profile: Profile = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not an OCI seccomp profile: {e}")))?;
    let default = action(&profile.default_action, profile.default_errno_ret, path)?;
    let arch = arch()?;
    // Group rules by action; rules with the default action add nothing.
    let mut groups: BTreeMap<String, (serde_json::Value, Vec<serde_json::Value>)> = BTreeMap::new();
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret, path)?;
        if act == default {
            continue;
        }
        let args = rule
            .args
            .iter()
            .map(|a| condition(a, path))
            .collect::<Result<Vec<_>>>()?;
        for name in &rule.names {
            let mut entry = serde_json::json!({ "syscall": name });
            if !args.is_empty() {
                entry["args"] = serde_json::Value::Array(args.clone());
            }
            // Unknown to this architecture (or to seccompiler): skip, as runc does.
            if compile_json(
                &serde_json::json!({ "syscall": name }),
                "allow".into(),
                "log".into(),
                arch,
            )
            .is_err()
            {
                continue;
            }
            groups
                .entry(act.to_string())
                .or_insert_with(|| (act.clone(), Vec::new()))
                .1
                .push(entry);
        }
    }
    let mut programs = Vec::new();
    let allow: serde_json::Value = "allow".into();
    if default != allow {
        // An allow list: everything not allowed gets the default action.
        let allowed = groups
            .remove(&allow.to_string())
            .map(|(_, rules)| rules)
            .unwrap_or_default();
        programs.push(compile_rules(
            &allowed,
            default.clone(),
            allow.clone(),
            arch,
            path,
        )?);
    }
    for (_, (act, rules)) in groups {
        programs.push(compile_rules(&rules, allow.clone(), act, arch, path)?);
    }
    Ok(programs)
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

fn compile_json(
    rule: &serde_json::Value,
    mismatch: serde_json::Value,
    matched: serde_json::Value,
    arch: TargetArch,
) -> Result<()> {
    compile_rules(
        std::slice::from_ref(rule),
        mismatch,
        matched,
        arch,
        Path::new("seccomp"),
    )
    .map(drop)
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

    #[test]
    fn the_default_filter_compiles() {
        let programs = default_filter().unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
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
        assert_eq!(profile_filters(&path).unwrap().len(), 3);
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#)
            .unwrap();
        assert_eq!(profile_filters(&path).unwrap().len(), 1);
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
        assert!(
            profile_filters(&path)
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_NOTIFY is not supported")
        );
    }
}
