//! `berth validate`: what a GitOps repository's CI runs on every push.

use std::os::unix::process::CommandExt;

use crate::{berth, examples_dir, stderr, stdout};

#[test]
fn the_examples_validate() {
    let out = berth()
        .arg("validate")
        .arg(examples_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("3 files valid, 4 containers"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_directory_with_one_bad_file_fails_and_points_at_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for example in ["hello.yaml", "jobs.yaml"] {
        std::fs::copy(examples_dir().join(example), dir.path().join(example)).unwrap();
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: bad\nspec:\n  command: [/bin/true]\n  \
         resources:\n    memory: 64MB\n",
    )
    .unwrap();
    // Editor leftovers and hidden files next to it are not read at all.
    std::fs::write(dir.path().join("bad.yaml~"), "not: [yaml").unwrap();
    std::fs::write(dir.path().join(".bad.yaml.swp"), "not: [yaml").unwrap();

    let out = berth().arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let expected = format!(
        "{}:8:13: spec.resources.memory: \"64MB\" is not a quantity; use e.g. 64Mi or 67108864",
        bad.display()
    );
    let err = stderr(&out);
    assert_eq!(err.lines().next(), Some(expected.as_str()), "{err}");
    assert!(
        err.contains("1 error in 1 of 3 files; 3 containers valid"),
        "{err}"
    );
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let doc = "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  command: [/bin/true]\n";
    std::fs::write(dir.path().join("a.yaml"), doc).unwrap();
    std::fs::write(dir.path().join("b.yml"), format!("\n{doc}")).unwrap();
    let out = berth().arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yml");
    assert!(
        stderr(&out).contains(&format!(
            "{}:5:9: metadata.name: \"web\" is already defined at {}:4:9",
            b.display(),
            a.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_paths_are_errors() {
    let out = berth()
        .args(["validate", "/nonexistent/berth-manifests"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("/nonexistent/berth-manifests:1:1: cannot read: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_needs_neither_root_nor_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(examples_dir().join("web.yaml"), dir.path().join("web.yaml")).unwrap();
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    let mut cmd = berth();
    cmd.args(["--state-dir", "/nonexistent/state", "validate"])
        .arg(dir.path());
    if nix::unistd::Uid::effective().is_root() {
        // Run as nobody, as a CI runner would.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
