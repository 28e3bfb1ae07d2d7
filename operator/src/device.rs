//! This device's labels, which manifests' `metadata.selector` is matched
//! against: the built-ins (`berth.dev/hostname`, `berth.dev/arch`,
//! `berth.dev/os`), then the labels file (`/etc/berth/labels`), then
//! `--label k=v` flags, each later source overriding an earlier one's key (so
//! that a device can be given the name its fleet knows it by).

use std::collections::BTreeMap;
use std::path::Path;

pub const HOSTNAME: &str = "berth.dev/hostname";
pub const ARCH: &str = "berth.dev/arch";
pub const OS: &str = "berth.dev/os";

/// Every label of this device. An error names the flag or `FILE:LINE` to fix;
/// a labels file that does not exist is no labels.
pub fn labels(flags: &[String], file: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut labels = built_in();
    labels.extend(read_file(file)?);
    for flag in flags {
        let (key, value) = pair(flag).map_err(|why| format!("--label {flag:?}: {why}"))?;
        labels.insert(key, value);
    }
    Ok(labels)
}

fn built_in() -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    match nix::unistd::gethostname() {
        Ok(name) => {
            labels.insert(HOSTNAME.to_owned(), name.to_string_lossy().into_owned());
        }
        Err(e) => tracing::warn!("cannot read the hostname ({e}); no {HOSTNAME} label"),
    }
    labels.insert(ARCH.to_owned(), oci_arch(std::env::consts::ARCH).to_owned());
    labels.insert(OS.to_owned(), std::env::consts::OS.to_owned());
    labels
}

/// Rust's name of a CPU architecture in Go's and OCI's words, which image
/// indexes and Kubernetes' `kubernetes.io/arch` use.
pub fn oci_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        // arm, riscv64, s390x, ppc64, mips64 and mips are spelled alike.
        other => other,
    }
}

/// The labels of `path`: `KEY=VALUE` lines, `#` comments, blank lines.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("labels file {}: {e}", path.display())),
    }
}

/// `text` read from `path` (named in errors as `FILE:LINE`).
pub fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) =
            pair(line).map_err(|why| format!("{}:{}: {why}", path.display(), i + 1))?;
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!(
                "{}:{}: {key:?} is given twice; keep one line per label",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(labels)
}

/// `KEY=VALUE`, both checked as Kubernetes checks label keys and values.
fn pair(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} is not KEY=VALUE (e.g. fleet.example/group=cameras)"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    berth_manifests::check_label_key(key)?;
    berth_manifests::check_label_value(value)?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labels_file_takes_pairs_comments_and_blank_lines() {
        let text = "# this device\n\nfleet.example/group=cameras\n  site = hall-2  \nempty=\n";
        let labels = parse_file(Path::new("/etc/berth/labels"), text).unwrap();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            [
                ("empty".to_owned(), String::new()),
                ("fleet.example/group".to_owned(), "cameras".to_owned()),
                ("site".to_owned(), "hall-2".to_owned()),
            ]
        );
    }

    #[test]
    fn a_bad_line_is_reported_at_its_file_and_line() {
        let path = Path::new("/etc/berth/labels");
        for (text, expected) in [
            (
                "a=b\njust-a-word\n",
                "/etc/berth/labels:2: \"just-a-word\" is not KEY=VALUE",
            ),
            (
                "# ok\n\nBad.Prefix/x=y\n",
                "/etc/berth/labels:3: \"Bad.Prefix/x\"",
            ),
            (
                "a=b\n\n\na=c\n",
                "/etc/berth/labels:4: \"a\" is given twice",
            ),
            (
                "a=two words\n",
                "/etc/berth/labels:1: \"two words\": a label value",
            ),
            ("=x\n", "/etc/berth/labels:1: \"\": the key has no name"),
        ] {
            let error = parse_file(path, text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_missing_file_is_no_labels_and_flags_override_the_file_and_built_ins() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("labels");
        assert!(read_file(&missing).unwrap().is_empty());
        let built = labels(&[], &missing).unwrap();
        assert_eq!(built.get(OS).map(String::as_str), Some("linux"));
        assert!(built.contains_key(HOSTNAME) && built.contains_key(ARCH));

        std::fs::write(&missing, "group=cameras\nberth.dev/hostname=cam-01\n").unwrap();
        let flags = ["group=gates".to_owned(), "site=x".to_owned()];
        let labels = labels(&flags, &missing).unwrap();
        assert_eq!(labels["group"], "gates");
        assert_eq!(labels["site"], "x");
        assert_eq!(labels[HOSTNAME], "cam-01");
        let error = super::labels(&["nokey".to_owned()], &missing).unwrap_err();
        assert!(error.starts_with("--label \"nokey\""), "{error}");
    }

    #[test]
    fn architectures_have_their_oci_names() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("arm"), "arm");
        assert_eq!(oci_arch("riscv64"), "riscv64");
    }
}
