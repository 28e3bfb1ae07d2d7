//! Every class of manifest error is reported at FILE:LINE:COLUMN with the field
//! path and a message that says what to write instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use berth_manifests::{ParsedFile, parse_bytes, parse_str, reject_duplicate_names};

const HEAD: &str = "apiVersion: berth.dev/v1\nkind: Container\n";

fn check(text: &str) -> ParsedFile {
    parse_str(Path::new("m.yaml"), text)
}

/// The diagnostics of `text`, printed as the CLI prints them.
fn errors(text: &str) -> Vec<String> {
    check(text)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A valid document with `spec_extra` appended to its spec (two-space indented).
fn with_spec(name: &str, spec_extra: &str) -> String {
    format!("{HEAD}metadata:\n  name: {name}\nspec:\n  command: [/bin/true]\n{spec_extra}")
}

fn assert_one(text: &str, expected: &str) {
    let errors = errors(text);
    assert_eq!(errors, [expected], "for:\n{text}");
}

#[test]
fn a_minimal_manifest_is_valid_and_defaulted() {
    let parsed = check(&with_spec("web", ""));
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let c = &parsed.containers[0];
    assert_eq!(c.name, "web");
    assert_eq!(c.spec.hostname, "web");
    assert_eq!(c.spec.working_dir, "/");
    assert_eq!(c.spec.stop_signal, "SIGTERM");
    assert_eq!(c.spec.stop_timeout_ms, 10_000);
    assert_eq!(c.spec.rootfs, berth_manifests::RootfsSource::Host);
    assert_eq!(c.spec.network, berth_manifests::NetworkMode::None);
    assert_eq!(c.state, berth_manifests::RunState::Running);
    assert_eq!(
        c.spec.restart_policy,
        berth_manifests::RestartPolicy::Always
    );
    assert_eq!(
        c.spec.security.seccomp,
        berth_manifests::SeccompPolicy::Default
    );
    assert_eq!((c.source.line, c.source.column), (4, 9));
    // No pids limit in the spec: the runtime's default applies at start.
    assert_eq!(c.spec.resources.pids, None);
}

#[test]
fn pids_zero_means_no_limit_and_is_valid() {
    let parsed = check(&with_spec("web", "  resources: {pids: 0}\n"));
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    assert_eq!(parsed.containers[0].spec.resources.pids, Some(0));
}

#[test]
fn yaml_syntax_errors_point_at_the_broken_line() {
    assert_one(
        &format!("{HEAD}metadata:\n  name: web\n spec: x\n"),
        "m.yaml:5:2: did not find expected key, while parsing a block mapping",
    );
    let tab = errors(&format!("{HEAD}metadata:\n\tname: web\n"));
    assert!(tab[0].starts_with("m.yaml:4:1: "), "{tab:?}");
}

#[test]
fn other_api_versions_and_kinds_are_named() {
    assert_one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
        "m.yaml:1:13: apiVersion: \"v1\" is not supported; use berth.dev/v1",
    );
    assert_one(
        "apiVersion: berth.dev/v1\nkind: Pod\nmetadata: {name: web}\n",
        "m.yaml:2:7: kind: \"Pod\" is not supported; use Container",
    );
}

#[test]
fn an_unknown_field_does_not_hide_the_documents_other_problems() {
    let text = with_spec(
        "web",
        "  restartPolcy: Always\n  resources: {memory: 64MB}\n  \
         mounts: [{source: srv, target: /data, ro: true}]\n",
    );
    assert_eq!(
        errors(&text),
        [
            "m.yaml:7:3: spec: unknown field `restartPolcy`, expected one of `command`, `dependsOn`, `env`, `healthcheck`, `hostname`, \
             `init`, `mounts`, `network`, `resources`, `restartPolicy`, `restartWithDependency`, `rootfs`, \
             `security`, `state`, `stopSignal`, `stopTimeout`, `supplementalGroups`, `updateStrategy`, \
             `user`, `workingDir`; did you mean `restartPolicy`?",
            "m.yaml:8:23: spec.resources.memory: \"64MB\" is not a quantity; use e.g. 64Mi or 67108864",
            "m.yaml:9:21: spec.mounts[0].source: \"srv\" is not absolute; a mount source must start with /",
            "m.yaml:9:41: spec.mounts[0]: unknown field `ro`, expected one of `readOnly`, `source`, `target`",
        ]
    );
}

#[test]
fn a_misspelt_required_field_is_reported_once_as_a_typo() {
    let text = with_spec("web", "").replace("command", "comand");
    assert_one(
        &text,
        "m.yaml:6:3: spec: unknown field `comand`, expected one of `command`, `dependsOn`, `env`, `healthcheck`, `hostname`, \
         `init`, `mounts`, `network`, `resources`, `restartPolicy`, `restartWithDependency`, `rootfs`, \
         `security`, `state`, `stopSignal`, `stopTimeout`, `supplementalGroups`, `updateStrategy`, \
         `user`, `workingDir`; did you mean `command`?",
    );
    let text = with_spec("web", "").replace("  name: web", "  nmae: web");
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("m.yaml:4:3: metadata: unknown field `nmae`"),
        "{found:?}"
    );
}

#[test]
fn a_document_with_only_an_unknown_field_yields_no_container() {
    let parsed = check(&with_spec("web", "  restartPolcy: Always\n"));
    assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
    assert!(parsed.containers.is_empty());
}

#[test]
fn unknown_fields_are_errors_with_a_suggestion() {
    assert_one(
        &with_spec("web", "  restartPolcy: Always\n"),
        "m.yaml:7:3: spec: unknown field `restartPolcy`, expected one of `command`, `dependsOn`, `env`, `healthcheck`, `hostname`, \
         `init`, `mounts`, `network`, `resources`, `restartPolicy`, `restartWithDependency`, `rootfs`, \
         `security`, `state`, `stopSignal`, `stopTimeout`, `supplementalGroups`, `updateStrategy`, \
         `user`, `workingDir`; did you mean `restartPolicy`?",
    );
    let nested = errors(&with_spec("web", "  resources: {memroy: 64Mi}\n"));
    assert!(
        nested[0].starts_with("m.yaml:7:15: spec.resources: unknown field `memroy`"),
        "{nested:?}"
    );
    assert!(nested[0].ends_with("did you mean `memory`?"), "{nested:?}");
}

#[test]
fn wrong_types_and_enum_values_name_the_field() {
    assert_one(
        &with_spec("web", "  state: Runing\n"),
        "m.yaml:7:10: spec.state: unknown variant `Runing`, expected `Running` or `Stopped`",
    );
    assert_one(
        &with_spec("web", "  resources:\n    memory: true\n"),
        "m.yaml:8:13: spec.resources.memory: invalid type: boolean `true`, expected a number or a string such as \"64Mi\"",
    );
    assert_one(
        &with_spec("web", "  rootfs: {template: 3}\n"),
        "m.yaml:7:22: spec.rootfs.template: invalid type: integer `3`, expected a template name (host or busybox) or {script: PATH, args: [...]}",
    );
    assert_one(
        &with_spec("web", "  env: {PORT: [8080]}\n"),
        "m.yaml:7:15: spec.env.PORT: invalid type: sequence, expected a string",
    );
    // Scalars keep the text as written: PORT: 8080 and DEBUG: true are strings.
    let parsed = check(&with_spec(
        "web",
        "  env: {PORT: 8080, RATIO: 1.50, DEBUG: true}\n",
    ));
    let env = &parsed.containers[0].spec.env;
    assert_eq!(
        (
            env["PORT"].as_str(),
            env["RATIO"].as_str(),
            env["DEBUG"].as_str()
        ),
        ("8080", "1.50", "true")
    );
}

#[test]
fn missing_required_fields_are_named() {
    assert_one(
        &format!("{HEAD}metadata:\n  name: web\n"),
        "m.yaml:1:1: missing field `spec`",
    );
    assert_one(
        &format!("{HEAD}metadata:\n  name: web\nspec:\n  hostname: web\n"),
        "m.yaml:5:1: spec.command: is required (the program to run, e.g. [\"/bin/sh\", \"-c\", \"...\"])",
    );
}

#[test]
fn bad_names_say_why() {
    let cases = [
        (
            "Web",
            "m.yaml:4:9: metadata.name: \"Web\" has upper-case letters",
        ),
        (
            "..",
            "m.yaml:4:9: metadata.name: \"..\" contains '/' or '.'",
        ),
        (
            "a/b",
            "m.yaml:4:9: metadata.name: \"a/b\" contains '/' or '.'",
        ),
        ("''", "m.yaml:4:9: metadata.name: the name is empty"),
        (
            "-web",
            "m.yaml:4:9: metadata.name: \"-web\" is not a valid name",
        ),
        (
            "web_1",
            "m.yaml:4:9: metadata.name: \"web_1\" is not a valid name",
        ),
    ];
    for (name, expected) in cases {
        let errors = errors(&with_spec(name, ""));
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert!(errors[0].starts_with(expected), "{name}: {errors:?}");
    }
    let long = "a".repeat(64);
    let errors = errors(&with_spec(&long, ""));
    assert!(
        errors[0].ends_with("is 64 characters long; the limit is 63"),
        "{errors:?}"
    );
    assert!(check(&with_spec(&"a".repeat(63), "")).is_valid());
}

#[test]
fn duplicate_names_name_both_places() {
    let two = format!("{}---\n{}", with_spec("web", ""), with_spec("web", ""));
    let mut files = vec![check(&two)];
    reject_duplicate_names(&mut files);
    let errors: Vec<String> = files[0]
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["m.yaml:11:9: metadata.name: \"web\" is already defined at m.yaml:4:9"]
    );
    assert_eq!(files[0].containers.len(), 1);

    let mut files = vec![
        parse_str(Path::new("a.yaml"), &with_spec("web", "")),
        parse_str(
            Path::new("b.yaml"),
            &format!("# comment\n{}", with_spec("web", "")),
        ),
    ];
    reject_duplicate_names(&mut files);
    assert!(files[0].is_valid());
    let errors: Vec<String> = files[1]
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["b.yaml:5:9: metadata.name: \"web\" is already defined at a.yaml:4:9"]
    );
}

#[test]
fn bad_quantities_durations_and_signals_say_how_to_write_them() {
    assert_one(
        &with_spec("web", "  resources: {memory: 64MB}\n"),
        "m.yaml:7:23: spec.resources.memory: \"64MB\" is not a quantity; use e.g. 64Mi or 67108864",
    );
    assert_one(
        &with_spec("web", "  resources: {cpus: lots}\n"),
        "m.yaml:7:21: spec.resources.cpus: \"lots\" is not a CPU count; use e.g. 0.5, 2 or 500m",
    );
    assert_one(
        &with_spec("web", "  stopTimeout: ten\n"),
        "m.yaml:7:16: spec.stopTimeout: \"ten\" is not a duration; use e.g. 10s, 1m30s or 500ms",
    );
    assert_one(
        &with_spec("web", "  stopSignal: SIGSTOPP\n"),
        "m.yaml:7:15: spec.stopSignal: \"SIGSTOPP\" is not a signal; use a name such as SIGTERM or SIGINT",
    );
}

#[test]
fn mount_targets_must_be_absolute_and_stay_inside() {
    let mounts = "  mounts:\n    - {source: /srv, target: data}\n    - {source: /srv, target: /data/../../etc}\n";
    assert_eq!(
        errors(&with_spec("web", mounts)),
        [
            "m.yaml:8:30: spec.mounts[0].target: \"data\" is not absolute; a mount target must start with /",
            "m.yaml:9:30: spec.mounts[1].target: \"/data/../../etc\" contains '..'; a mount target must stay inside the container",
        ]
    );
    assert_one(
        &with_spec("web", "  mounts: [{source: /srv, target: /}]\n"),
        "m.yaml:7:35: spec.mounts[0].target: cannot mount over the container's root",
    );
    assert_one(
        &with_spec(
            "web",
            "  mounts: [{source: /a, target: /d}, {source: /b, target: /d/}]\n",
        ),
        "m.yaml:7:59: spec.mounts[1].target: \"/d/\" is mounted twice",
    );
}

#[test]
fn mount_targets_on_the_kernels_files_are_refused() {
    let mounts = "  mounts:\n    - {source: /srv, target: /proc}\n    - {source: /srv, target: /proc/sys}\n    \
                  - {source: /srv, target: /sys/kernel}\n    - {source: /srv, target: /dev}\n    \
                  - {source: /srv, target: /dev/tty0}\n";
    assert_eq!(
        errors(&with_spec("web", mounts)),
        [
            "m.yaml:8:30: spec.mounts[0].target: \"/proc\" is on or under /proc, where berth masks the kernel's files; mount elsewhere",
            "m.yaml:9:30: spec.mounts[1].target: \"/proc/sys\" is on or under /proc, where berth masks the kernel's files; mount elsewhere",
            "m.yaml:10:30: spec.mounts[2].target: \"/sys/kernel\" is on or under /sys, where berth masks the kernel's files; mount elsewhere",
            "m.yaml:11:30: spec.mounts[3].target: cannot mount over /dev; berth makes the container's /dev (name a single device node, e.g. target /dev/ttyUSB0)",
            "m.yaml:12:30: spec.mounts[4].target: \"/dev/tty0\" is under /dev; only a device node whose source is named in spec.security.allowHostPaths may be mounted there",
        ]
    );
    // A device node the manifest names may go under /dev.
    let device = check(&with_spec(
        "web",
        "  mounts: [{source: /dev/net/tun, target: /dev/tun}]\n  security: {allowHostPaths: [/dev/net]}\n",
    ));
    assert!(device.is_valid(), "{:?}", device.diagnostics);
}

#[test]
fn allowed_host_paths_are_absolute_and_absent_from_the_hash_when_unset() {
    assert_one(
        &with_spec(
            "web",
            "  security: {allowHostPaths: [/dev/ttyUSB0, dev/ttyUSB1]}\n",
        ),
        "m.yaml:7:45: spec.security.allowHostPaths[1]: \"dev/ttyUSB1\" is not absolute; an allowed host path must start with /",
    );
    let parsed = check(&with_spec(
        "web",
        "  security: {allowHostPaths: [/dev/ttyUSB0]}\n",
    ));
    assert_eq!(
        parsed.containers[0].spec.security.allow_host_paths,
        Some(vec![std::path::PathBuf::from("/dev/ttyUSB0")])
    );
    assert_ne!(
        parsed.containers[0].hash,
        check(&with_spec("web", "")).containers[0].hash
    );
    assert!(
        !serde_json::to_string(&check(&with_spec("web", "")).containers[0].spec)
            .unwrap()
            .contains("allowHostPaths")
    );
}

#[test]
fn the_hosts_root_is_not_a_rootfs() {
    for path in ["/", "//", "/.", "/.."] {
        assert_one(
            &with_spec("web", &format!("  rootfs: {{path: \"{path}\"}}\n")),
            &format!(
                "m.yaml:7:18: spec.rootfs.path: \"{path}\" is the host's root; a container needs a root of its own"
            ),
        );
    }
}

#[test]
fn host_paths_must_be_absolute() {
    let cases = [
        (
            "  mounts: [{source: srv, target: /srv}]\n",
            "spec.mounts[0].source: \"srv\" is not absolute",
        ),
        (
            "  rootfs: {path: rootfs}\n",
            "spec.rootfs.path: \"rootfs\" is not absolute",
        ),
        (
            "  rootfs: {tarball: r.tar}\n",
            "spec.rootfs.tarball: \"r.tar\" is not absolute",
        ),
        (
            "  rootfs: {oci: {layout: img}}\n",
            "spec.rootfs.oci.layout: \"img\" is not absolute",
        ),
        (
            "  rootfs: {template: {script: ./t.sh}}\n",
            "spec.rootfs.template.script: \"./t.sh\" is not absolute",
        ),
        (
            "  security: {seccomp: {profile: p.json}}\n",
            "spec.security.seccomp.profile: \"p.json\" is not absolute",
        ),
        (
            "  workingDir: srv\n",
            "spec.workingDir: \"srv\" is not absolute",
        ),
    ];
    for (extra, expected) in cases {
        let errors = errors(&with_spec("web", extra));
        assert_eq!(errors.len(), 1, "{extra}: {errors:?}");
        assert!(errors[0].starts_with("m.yaml:7:"), "{errors:?}");
        assert!(errors[0].contains(expected), "{errors:?}");
    }
}

#[test]
fn rootfs_sources_are_checked() {
    assert_one(
        &with_spec("web", "  rootfs: {template: alpine}\n"),
        "m.yaml:7:22: spec.rootfs.template: unknown template \"alpine\"; use host, busybox or {script: PATH}",
    );
    assert_one(
        &with_spec("web", "  rootfs: {template: host, path: /srv}\n"),
        "m.yaml:7:3: spec.rootfs: set only one of template, path, tarball, oci and image",
    );
    let oci = format!(
        "{HEAD}metadata: {{name: img}}\nspec:\n  rootfs: {{oci: {{layout: /srv/img, ref: v1}}}}\n"
    );
    assert!(
        check(&oci).is_valid(),
        "an OCI image may supply the command"
    );
}

#[test]
fn an_image_source_is_checked_where_it_is_written() {
    let image = |rootfs: &str| format!("{HEAD}metadata: {{name: img}}\nspec:\n  rootfs:\n{rootfs}");
    let parsed = check(&image("    image: 127.0.0.1:5000/team/app:1.4\n"));
    assert!(parsed.is_valid(), "{:?}", parsed.diagnostics);
    let spec = &parsed.containers[0].spec;
    assert!(spec.command.is_empty(), "the image supplies the command");
    match &spec.rootfs {
        berth_manifests::RootfsSource::Image {
            reference,
            pull_policy,
            update_interval_ms,
        } => {
            assert_eq!(reference.to_string(), "127.0.0.1:5000/team/app:1.4");
            assert_eq!(*pull_policy, berth_manifests::PullPolicy::IfNotPresent);
            assert_eq!(*update_interval_ms, None);
        }
        other => panic!("{other:?}"),
    }
    assert_one(
        &image("    image: alpine\n"),
        "m.yaml:6:12: spec.rootfs.image: \"alpine\" is a short name: write the registry too, e.g. docker.io/library/alpine (berth has no default registry)",
    );
    assert_one(
        &image("    image: r.example/app\n    updateInterval: 1h\n"),
        "m.yaml:7:5: spec.rootfs.updateInterval: needs pullPolicy: Always (an update is a pull of the tag's new digest)",
    );
    assert_one(
        &image("    image: r.example/app\n    pullPolicy: Always\n    updateInterval: 0s\n"),
        "m.yaml:8:21: spec.rootfs.updateInterval: must be more than 0; leave it out to never check for updates",
    );
    assert_one(
        &with_spec(
            "web",
            "  rootfs:\n    template: host\n    pullPolicy: Never\n",
        ),
        "m.yaml:9:5: spec.rootfs.pullPolicy: goes only with spec.rootfs.image",
    );
    let pinned = format!(
        "    image: r.example/app@sha256:{}\n    pullPolicy: Always\n    updateInterval: 1h\n",
        "0".repeat(64)
    );
    assert_one(
        &image(&pinned),
        "m.yaml:8:5: spec.rootfs.updateInterval: the image is pinned by digest, which never changes; name a tag to follow",
    );
    let always = check(&image(
        "    image: r.example/app\n    pullPolicy: Always\n    updateInterval: 1h\n",
    ));
    assert!(always.is_valid(), "{:?}", always.diagnostics);
    assert!(matches!(
        always.containers[0].spec.rootfs,
        berth_manifests::RootfsSource::Image {
            update_interval_ms: Some(3_600_000),
            ..
        }
    ));
}

#[test]
fn empty_commands_are_errors() {
    assert_one(
        &with_spec("web", "").replace("[/bin/true]", "[]"),
        "m.yaml:6:12: spec.command: is empty; name the program to run",
    );
    assert_one(
        &with_spec("web", "").replace("[/bin/true]", "['', x]"),
        "m.yaml:6:13: spec.command[0]: the program name is empty",
    );
}

#[test]
fn every_problem_in_a_document_is_reported() {
    let text = format!(
        "{HEAD}metadata:\n  name: Web\nspec:\n  command: []\n  resources: {{memory: 1X}}\n  stopSignal: NOPE\n"
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn capabilities_and_seccomp_are_checked() {
    let parsed = check(&with_spec(
        "web",
        "  security: {capabilities: {add: [net_admin, CAP_SYS_TIME], drop: [ALL]}}\n",
    ));
    assert!(parsed.is_valid(), "{:?}", parsed.diagnostics);
    assert_eq!(
        parsed.containers[0].spec.security.cap_add,
        ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    );
    assert_one(
        &with_spec("web", "  security: {capabilities: {add: [SUPERPOWER]}}\n"),
        "m.yaml:7:35: spec.security.capabilities.add[0]: \"SUPERPOWER\" is not a capability; use a name such as NET_ADMIN, or ALL",
    );
    assert_one(
        &with_spec("web", "  security: {seccomp: strict}\n"),
        "m.yaml:7:23: spec.security.seccomp: \"strict\" is not a seccomp policy; use default, unconfined or {profile: FILE}",
    );
}

#[test]
fn files_that_are_not_utf8_are_refused_with_a_position() {
    let mut bytes = with_spec("web", "").into_bytes();
    bytes.extend_from_slice(b"  hostname: caf\xe9\n");
    let parsed = parse_bytes(Path::new("m.yaml"), &bytes);
    let errors: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(errors, ["m.yaml:7:16: the file is not UTF-8 text"]);
}

#[test]
fn files_over_one_mebibyte_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut text = with_spec("web", "");
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(&path, text).unwrap();
    let parsed = berth_manifests::parse_file(&path);
    assert_eq!(parsed.diagnostics.len(), 1);
    assert_eq!(
        parsed.diagnostics[0].to_string(),
        format!(
            "{}:1:1: the file is larger than 1024 KiB, the limit for a manifest",
            path.display()
        )
    );
    assert!(parsed.containers.is_empty());
}

#[test]
fn empty_files_and_documents_desire_nothing() {
    for text in ["", "\n", "# only a comment\n", "---\n", "---\n---\n...\n"] {
        let parsed = check(text);
        assert!(parsed.is_valid(), "{text:?}: {:?}", parsed.diagnostics);
        assert!(parsed.containers.is_empty());
    }
}

#[test]
fn a_bad_document_does_not_hide_a_good_one() {
    let text = format!("hello\n---\n{}", with_spec("web", ""));
    let parsed = check(&text);
    assert_eq!(parsed.containers.len(), 1);
    assert_eq!(
        parsed.diagnostics[0].to_string(),
        "m.yaml:1:1: invalid type: string \"hello\", expected struct Manifest"
    );
}

#[test]
fn unreadable_files_are_reported_not_skipped() {
    let parsed = berth_manifests::parse_file(Path::new("/nonexistent/berth/m.yaml"));
    assert_eq!(parsed.diagnostics.len(), 1);
    assert!(
        parsed.diagnostics[0]
            .to_string()
            .starts_with("/nonexistent/berth/m.yaml:1:1: cannot read: ")
    );
}

#[test]
fn unknown_aliases_and_alias_bombs_are_errors_not_crashes() {
    // serde_yaml panics on the remains of a document with an unknown alias if asked to go on.
    let text = format!(
        "{}  hostname: *nowhere\n---\n{}",
        with_spec("a", ""),
        with_spec("b", "")
    );
    let found = errors(&text);
    assert_eq!(found, ["m.yaml:7:13: unknown anchor"]);
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    assert_eq!(errors(bomb).len(), 1);
}

#[test]
fn user_namespaces_are_checked() {
    let parsed = check(&with_spec("web", "  security: {userns: auto}\n"));
    assert_eq!(
        parsed.containers[0].spec.security.userns,
        Some(berth_manifests::UsernsSpec::Auto)
    );
    let maps = check(&with_spec(
        "web",
        "  security:\n    userns: {uidMap: [{container: 0, host: 100000, size: 65536}]}\n",
    ));
    assert!(maps.is_valid(), "{:?}", maps.diagnostics);
    let Some(berth_manifests::UsernsSpec::Maps { uid, gid }) =
        &maps.containers[0].spec.security.userns
    else {
        panic!("no maps");
    };
    assert_eq!(uid, gid, "gidMap defaults to uidMap");
    assert_one(
        &with_spec("web", "  security: {userns: yes}\n"),
        "m.yaml:7:22: spec.security.userns: \"yes\" is not a user namespace setting; use auto or {uidMap: [...], gidMap: [...]}",
    );
    assert_one(
        &with_spec(
            "web",
            "  security: {userns: {uidMap: [{container: 0, host: 0, size: 10}]}}\n",
        ),
        "m.yaml:7:32: spec.security.userns.uidMap[0]: maps to host root (id 0), which defeats the user namespace",
    );
    assert_one(
        &with_spec(
            "web",
            "  security: {userns: {uidMap: [{container: 1, host: 1000, size: 10}]}}\n",
        ),
        "m.yaml:7:31: spec.security.userns.uidMap: must map id 0 (root inside the container)",
    );
    assert_one(
        &with_spec(
            "web",
            "  network: {mode: host}\n  security: {userns: auto}\n",
        ),
        "m.yaml:8:22: spec.security.userns: a user namespace needs a network namespace of its own; use network mode none or bridge",
    );
    // Without userns the spec hash is what it always was (pinned in examples.rs).
    assert!(
        !serde_json::to_string(&check(&with_spec("web", "")).containers[0].spec)
            .unwrap()
            .contains("userns")
    );
}

#[test]
fn bridge_network_takes_an_address_and_ports() {
    let c = check(&with_spec(
        "web",
        "  network:\n    mode: bridge\n    address: 10.88.0.9\n    ports: [{host: 8080, container: 80}, {host: 53, container: 53, protocol: udp, hostIP: 127.0.0.1}]\n",
    ));
    assert!(c.is_valid(), "{:?}", c.diagnostics);
    let spec = &c.containers[0].spec;
    assert_eq!(spec.network, berth_manifests::NetworkMode::Bridge);
    assert_eq!(spec.address, Some(std::net::Ipv4Addr::new(10, 88, 0, 9)));
    assert_eq!(spec.ports.len(), 2);
    assert_eq!(spec.ports[0].host_ip, std::net::Ipv4Addr::UNSPECIFIED);
    assert_eq!(spec.ports[0].protocol, berth_manifests::Protocol::Tcp);
    // Without them the spec hash is what it always was (pinned in examples.rs).
    let plain = serde_json::to_string(&check(&with_spec("web", "")).containers[0].spec).unwrap();
    assert!(
        !plain.contains("address") && !plain.contains("ports"),
        "{plain}"
    );
}

#[test]
fn bad_addresses_and_ports_name_the_field() {
    assert_one(
        &with_spec("web", "  network: {mode: bridge, address: 10.88.0.256}\n"),
        "m.yaml:7:36: spec.network.address: \"10.88.0.256\" is not an IPv4 address such as 10.88.0.5",
    );
    assert_one(
        &with_spec("web", "  network: {address: 10.88.0.2}\n"),
        "m.yaml:7:22: spec.network.address: needs spec.network.mode: bridge",
    );
    assert_one(
        &with_spec(
            "web",
            "  network: {mode: bridge, ports: [{host: 80, container: 70000}]}\n",
        ),
        "m.yaml:7:57: spec.network.ports[0].container: 70000 is not a port; use 1 to 65535",
    );
    assert_one(
        &with_spec(
            "web",
            "  network: {mode: bridge, ports: [{host: 80, container: 80}, {host: 80, container: 81, hostIP: 127.0.0.1}]}\n",
        ),
        "m.yaml:7:69: spec.network.ports[1].host: host port 80/tcp on 127.0.0.1 is published already by spec.network.ports[0]",
    );
    // Another protocol is another port.
    assert!(
        check(&with_spec(
            "web",
            "  network: {mode: bridge, ports: [{host: 80, container: 80}, {host: 80, container: 80, protocol: udp}]}\n",
        ))
        .is_valid()
    );
}

#[test]
fn a_host_port_published_by_two_files_names_both() {
    let ports = "  network: {mode: bridge, ports: [{host: 8080, container: 80}]}\n";
    let mut files = vec![
        parse_str(Path::new("a.yaml"), &with_spec("web", ports)),
        parse_str(Path::new("b.yaml"), &with_spec("api", ports)),
    ];
    reject_duplicate_names(&mut files);
    assert!(files[0].is_valid());
    let errors: Vec<String> = files[1]
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "b.yaml:4:9: spec.network.ports: host port 8080/tcp on 0.0.0.0 of \"api\" is published already by \"web\" at a.yaml:4:9"
        ]
    );
    assert!(files[1].containers.is_empty());
}

#[test]
fn an_address_pinned_by_two_files_names_both() {
    let pin = "  network: {mode: bridge, address: 10.88.0.9}\n";
    let mut files = vec![
        parse_str(Path::new("a.yaml"), &with_spec("db", pin)),
        parse_str(Path::new("b.yaml"), &with_spec("cache", pin)),
        parse_str(
            Path::new("c.yaml"),
            &with_spec("web", "  network: {mode: bridge, address: 10.88.0.10}\n"),
        ),
    ];
    reject_duplicate_names(&mut files);
    assert!(files[0].is_valid() && files[2].is_valid());
    let errors: Vec<String> = files[1]
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "b.yaml:4:9: spec.network.address: 10.88.0.9 of \"cache\" is pinned already by \"db\" at a.yaml:4:9"
        ]
    );
    assert!(files[1].containers.is_empty());
}

#[test]
fn selector_errors_name_the_field_at_its_value() {
    let text = format!(
        "{HEAD}metadata:\n  name: web\n  selector:\n    matchLabels: {{\"-group\": cameras}}\n    matchExpressions:\n      - key: gpu\n        operator: Exists\n        values: [nvidia]\n      - {{key: arch, operator: In}}\n      - {{key: arch, operator: Equals}}\nspec:\n  command: [/bin/true]\n"
    );
    let first = errors(&text);
    assert_eq!(first.len(), 1, "{first:?}");
    // An unknown operator is serde's to report, alone: the document does not read.
    assert!(
        first[0].starts_with("m.yaml:12:") && first[0].contains("unknown variant `Equals`"),
        "{first:?}"
    );
    let text = text.replace("Equals", "NotIn, values: [arm]");
    assert_eq!(
        errors(&text),
        [
            "m.yaml:6:19: metadata.selector.matchLabels.-group: \"-group\": the name must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            "m.yaml:10:17: metadata.selector.matchExpressions[0].values: Exists takes no values; leave values out",
            "m.yaml:11:9: metadata.selector.matchExpressions[1].values: In needs at least one value",
        ]
    );
}

#[test]
fn the_selector_is_not_part_of_the_spec_hash() {
    let plain = check(&with_spec("web", ""));
    let selected = check(&format!(
        "{HEAD}metadata:\n  name: web\n  selector: {{matchLabels: {{group: cameras}}}}\nspec:\n  command: [/bin/true]\n"
    ));
    assert!(
        selected.diagnostics.is_empty(),
        "{:?}",
        selected.diagnostics
    );
    assert_eq!(plain.containers[0].hash, selected.containers[0].hash);
    assert!(selected.containers[0].selector.is_some());
}

// Found by the bad corpus (tests/corpus/bad/EXPECTED.tsv) and the fuzz target.

#[test]
fn a_byte_order_mark_is_not_part_of_the_text() {
    let text = format!("\u{feff}{}", with_spec("web", "  stopTimeout: ten\n"));
    assert_one(
        &text,
        "m.yaml:7:16: spec.stopTimeout: \"ten\" is not a duration; use e.g. 10s, 1m30s or 500ms",
    );
    assert!(check(&format!("\u{feff}{}", with_spec("web", ""))).is_valid());
}

#[test]
fn control_characters_are_reported_where_they_are() {
    let text = with_spec("web", "  hostname: we\u{1}b\n");
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("m.yaml:7:15: control characters are not allowed"),
        "{found:?}"
    );
}

#[test]
fn a_tab_after_a_colon_keeps_the_positions_of_what_follows() {
    assert_one(
        &with_spec("web", "  stopSignal:\tNOPE\n"),
        "m.yaml:7:15: spec.stopSignal: \"NOPE\" is not a signal; use a name such as SIGTERM or SIGINT",
    );
    assert_one(
        &with_spec("web", "  resources: {memory:\t64MB}\n"),
        "m.yaml:7:23: spec.resources.memory: \"64MB\" is not a quantity; use e.g. 64Mi or 67108864",
    );
}

#[test]
fn a_key_given_twice_is_an_error_at_its_second_place() {
    assert_one(
        &with_spec("web", "  env: {A: \"1\", A: \"2\"}\n"),
        "m.yaml:7:17: spec.env: duplicate entry with key \"A\"; give each key once",
    );
    assert_one(
        &with_spec("web", "  hostname: a\n  hostname: b\n"),
        "m.yaml:8:3: spec: duplicate entry with key \"hostname\"; give each key once",
    );
}

#[test]
fn alias_bombs_are_refused_before_they_are_expanded() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..=6 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    let found = errors(&bomb);
    assert_eq!(
        found,
        [
            "m.yaml:4:45: aliases expand this document by more than 10000 values (an alias bomb?); write the values out instead"
        ]
    );
    // A few reused values are fine.
    let reuse = with_spec("web", "  env: {A: &v x, B: *v}\n");
    assert!(check(&reuse).is_valid());
}

#[test]
fn deep_nesting_is_refused_unread() {
    for (text, at) in [
        (format!("{}x\n", "- ".repeat(10_000)), "m.yaml:1:129: "),
        (
            format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            "m.yaml:1:256: ",
        ),
        (
            with_spec("web", &format!("  env: {{A: {}}}\n", "[".repeat(10_000))),
            "m.yaml:7:266: ",
        ),
    ] {
        let started = std::time::Instant::now();
        let found = errors(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(at), "{found:?}");
        assert!(
            found[0].ends_with("nested more than 64 levels deep; a manifest needs fewer than 10")
        );
        // libyaml's scanner is quadratic in flow depth: seconds for 10,000 levels.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // 64 levels are still read.
    let deep = format!("{}x{}\n", "[".repeat(63), "]".repeat(63));
    assert!(!errors(&deep)[0].contains("nested"));
}

#[test]
fn an_error_at_the_end_of_a_text_without_a_last_newline_points_into_the_text() {
    for text in [
        "apiVersion: berth.dev/v1\nkind: Container\nmet",
        "apiVersion: berth.dev/v1\rkind: Container\rmet",
        "apiVersion: berth.dev/v1\r\nkind: Container\r\nmet",
    ] {
        let found = errors(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("m.yaml:3:4: could not find expected ':'"),
            "{found:?}"
        );
    }
}

#[test]
fn a_huge_value_is_quoted_by_its_ends() {
    let found = errors(&with_spec(
        "web",
        &format!("  hostname: {}\n", "a".repeat(100_000)),
    ));
    assert_eq!(found.len(), 1);
    assert!(found[0].len() < 1000, "{} bytes", found[0].len());
    assert!(found[0].contains(" … (99692 characters) … "), "{found:?}");
    assert!(found[0].ends_with(
        "\" is not a hostname; use letters, digits, '-' and '.', at most 64 characters"
    ));
}
