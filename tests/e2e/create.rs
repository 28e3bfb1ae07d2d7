//! `berth create`, `destroy` and `gc` against real root filesystems (as root).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{StateDir, process_gone, stderr, stdout, unique};

fn create_ok(state: &StateDir, manifest: &Path) {
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "create failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn destroy_leaves_nothing(state: &StateDir, name: &str) {
    let out = state.run(&["destroy", name]);
    assert!(out.status.success(), "destroy failed: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("destroyed {name}"));
    assert!(
        state.leftovers().is_empty(),
        "left behind: {:?}",
        state.leftovers()
    );
    // Destroying again is not an error.
    let out = state.run(&["destroy", name]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("{name} does not exist"));
}

fn config(state: &StateDir, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(state.container_dir(name).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn host_template_creates_a_rootfs_and_destroy_removes_it() {
    let state = StateDir::new();
    let name = unique("host");
    let manifest = state.manifest(&name, "  command: [/bin/true]\n  hostname: box\n");
    create_ok(&state, &manifest);
    let rootfs = state.container_dir(&name).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
        "box\n"
    );
    assert!(
        std::fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    assert!(
        rootfs.join("usr").is_dir(),
        "a mount point for the host's /usr"
    );
    assert_eq!(
        std::fs::read_dir(rootfs.join("usr")).unwrap().count(),
        0,
        "nothing copied"
    );
    assert!(!state.container_dir(&name).join("partial").exists());
    let config = config(&state, &name);
    assert_eq!(config["header"]["template"], "host");
    assert_eq!(config["header"]["origin"], "cli");
    assert!(
        config["hostBinds"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("/usr"))
    );
    assert_eq!(
        config["container"]["hash"],
        config["container"]["hash"]
            .as_str()
            .map(|h| h.to_owned())
            .unwrap()
    );
    let mode = std::fs::metadata(state.container_dir(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // A second create of the same name is refused and harms nothing.
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("container {name} already exists")),
        "{}",
        stderr(&out)
    );
    assert!(rootfs.join("etc/hostname").exists());

    destroy_leaves_nothing(&state, &name);
}

#[test]
fn busybox_template_installs_the_static_busybox_and_its_applets() {
    assert!(
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .any(|p| Path::new(p).exists()),
        "this test needs a static busybox: apt-get install busybox-static"
    );
    let state = StateDir::new();
    let name = unique("bb");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: busybox}\n  command: [/bin/sh]\n",
    );
    create_ok(&state, &manifest);
    let rootfs = state.container_dir(&name).join("rootfs");
    // /bin, /sbin and /usr are mount points for one skeleton shared by every
    // busybox container, bound read-only at start.
    let config = config(&state, &name);
    assert_eq!(config["header"]["template"], "busybox");
    let binds = config["sharedBinds"].as_array().unwrap();
    let skeleton = |target: &str| -> PathBuf {
        binds
            .iter()
            .find(|b| b["target"] == target)
            .and_then(|b| b["source"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no shared bind of {target}: {config}"))
    };
    let bin = skeleton("/bin");
    assert!(bin.starts_with(state.path().join("templates")), "{bin:?}");
    for dir in ["bin", "sbin", "usr"] {
        assert_eq!(std::fs::read_dir(rootfs.join(dir)).unwrap().count(), 0);
    }
    assert_eq!(
        std::fs::read_link(bin.join("sh")).unwrap(),
        PathBuf::from("/bin/busybox")
    );
    // The copy runs by itself: ask it which applets it has.
    let out = std::process::Command::new(bin.join("busybox"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(stdout(&out).lines().any(|l| l == "sh"));

    // A second container shares it (one directory, by device and inode).
    let other = unique("bb2");
    create_ok(
        &state,
        &state.manifest(
            &other,
            "  rootfs: {template: busybox}\n  command: [/bin/sh]\n",
        ),
    );
    let other_config = self::config(&state, &other);
    let other_bin = other_config["sharedBinds"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["target"] == "/bin"))
        .and_then(|b| b["source"].as_str())
        .map(PathBuf::from)
        .unwrap();
    let id = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    assert_eq!(id(&bin), id(&other_bin));

    // Inside, the applets run, and the shared /bin cannot be written.
    let script = state.manifest(
        &unique("bb3"),
        "  rootfs: {template: busybox}\n  restartPolicy: Never\n  \
         command: [/bin/sh, -c, 'touch /bin/x 2>/dev/null || echo bin-is-read-only; echo ok > /tmp/t && cat /tmp/t']\n",
    );
    let third = script.file_stem().unwrap().to_str().unwrap().to_owned();
    create_ok(&state, &script);
    let out = state.run(&["start", &third]);
    assert!(out.status.success(), "{}", stderr(&out));
    let console = crate::console_until(&state, &third, "ok");
    assert!(console.contains("bin-is-read-only"), "{console}");
    assert!(!bin.join("x").exists());
    assert!(
        state
            .run(&["destroy", "--force", &third, &other])
            .status
            .success()
    );

    destroy_leaves_nothing(&state, &name);
    // The skeleton outlives its containers' destroy: it is not theirs.
    assert!(bin.join("busybox").is_file());
}

#[test]
fn a_template_script_gets_lxc_style_arguments_and_a_clean_environment() {
    let state = StateDir::new();
    let name = unique("script");
    let script = write_script(
        state.path(),
        "tmpl.sh",
        "set -e\nwhile [ $# -gt 0 ]; do case \"$1\" in --rootfs) R=$2; shift;; esac; shift; done\n\
         mkdir -p \"$R/etc\"\necho \"$0 $*\" > \"$R/etc/args\"\nenv | sort > \"$R/etc/env\"\n\
         echo \"made by script\" > \"$R/etc/motd\"\necho template ran\n",
    );
    let manifest = state.manifest(
        &name,
        &format!("  rootfs: {{template: {{script: {}, args: [--release, bookworm]}}}}\n  command: [/bin/true]\n", script.display()),
    );
    let out = state
        .berth(&["create", "-f", manifest.to_str().unwrap()])
        .env("LEAKED_SECRET", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = state.container_dir(&name);
    let rootfs = dir.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "made by script\n"
    );
    let env = std::fs::read_to_string(rootfs.join("etc/env")).unwrap();
    assert!(
        env.contains(&format!("BERTH_CONTAINER_NAME={name}")),
        "{env}"
    );
    assert!(
        env.contains(&format!("BERTH_ROOTFS_PATH={}", rootfs.display())),
        "{env}"
    );
    assert!(
        !env.contains("LEAKED_SECRET"),
        "the environment was not cleared: {env}"
    );
    // The script's output went to the template log.
    assert_eq!(
        std::fs::read_to_string(dir.join("template.log")).unwrap(),
        "template ran\n"
    );
    let header = &config(&state, &name)["header"];
    assert_eq!(header["template"], script.display().to_string());
    assert_eq!(header["args"], serde_json::json!(["--release", "bookworm"]));
    destroy_leaves_nothing(&state, &name);
}

#[test]
fn a_failing_template_script_fails_the_create_and_leaves_nothing() {
    let state = StateDir::new();
    let name = unique("badscript");
    let script = write_script(
        state.path(),
        "fail.sh",
        "echo 'cannot reach the mirror' >&2\nexit 3\n",
    );
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
            script.display()
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot create {name}")), "{err}");
    assert!(err.contains("failed (exit status: 3)"), "{err}");
    assert!(err.contains("cannot reach the mirror"), "{err}");
    assert!(state.leftovers().is_empty(), "{:?}", state.leftovers());
}

#[test]
fn a_missing_template_tool_says_what_to_fix_before_making_anything() {
    let state = StateDir::new();
    let name = unique("noscript");
    let manifest = state.manifest(
        &name,
        "  rootfs: {template: {script: /nonexistent/tmpl}}\n  command: [/bin/true]\n",
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/tmpl: cannot use the script"),
        "{}",
        stderr(&out)
    );
    assert!(state.leftovers().is_empty());
}

/// A tar archive of `entries`: (path, contents); a path ending in '/' is a directory.
/// Names are written raw, so a test can make entries that a tar tool would refuse.
fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in entries {
        let mut header = if path.ends_with('/') {
            header(tar::EntryType::Directory, 0o755, 0)
        } else {
            header(tar::EntryType::Regular, 0o644, contents.len() as u64)
        };
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, contents.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A root-owned tar header of `kind`.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_tarball_is_unpacked_by_its_magic_bytes_and_destroyed() {
    let state = StateDir::new();
    let name = unique("tarball");
    // Gzip content under a .tar name: the magic bytes decide, not the file name.
    let archive = state.path().join("rootfs.tar");
    std::fs::write(
        &archive,
        gzip(&tar_of(&[
            ("bin/", ""),
            ("bin/hello", "hi\n"),
            ("./etc/", ""),
            ("etc/motd", "tar\n"),
        ])),
    )
    .unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{tarball: {}}}\n  command: [/bin/hello]\n",
            archive.display()
        ),
    );
    create_ok(&state, &manifest);
    let rootfs = state.container_dir(&name).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/hello")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "tar\n"
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    destroy_leaves_nothing(&state, &name);
}

#[test]
fn a_tarball_entry_with_dotdot_is_refused_and_nothing_escapes() {
    let state = StateDir::new();
    let name = unique("evil");
    let archive = state.path().join("evil.tar");
    std::fs::write(
        &archive,
        tar_of(&[("etc/", ""), ("etc/ok", "fine"), ("../../escaped", "pwned")]),
    )
    .unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{tarball: {}}}\n  command: [/bin/true]\n",
            archive.display()
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("entry ../../escaped would be unpacked outside the rootfs: it contains '..'"),
        "{}",
        stderr(&out)
    );
    assert!(state.leftovers().is_empty());
    assert!(
        !state.path().join("escaped").exists() && !state.path().join("containers/escaped").exists()
    );
}

#[test]
fn a_tarball_cannot_write_through_its_own_symlink_to_the_host() {
    let state = StateDir::new();
    let name = unique("symlinked");
    let outside = tempfile::Builder::new()
        .prefix("berth-outside-")
        .tempdir()
        .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = header(tar::EntryType::Symlink, 0o777, 0);
    builder
        .append_link(&mut link, "out", outside.path())
        .unwrap();
    let mut file = header(tar::EntryType::Regular, 0o644, 5);
    builder
        .append_data(&mut file, "out/pwned", "pwned".as_bytes())
        .unwrap();
    let archive = state.path().join("links.tar");
    std::fs::write(&archive, builder.into_inner().unwrap()).unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{tarball: {}}}\n  command: [/bin/true]\n",
            archive.display()
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("out/pwned"), "{}", stderr(&out));
    assert!(
        !outside.path().join("pwned").exists(),
        "the archive wrote outside its rootfs"
    );
    assert!(state.leftovers().is_empty());
}

/// Writes `bytes` as a blob of the layout and returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An OCI layout with two layers: the second whites out a file and makes a
/// directory opaque. Returns the layout path and the digest of the second layer.
fn oci_layout(dir: &Path) -> (PathBuf, String) {
    let layout = dir.join("image");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let lower = tar_of(&[
        ("etc/", ""),
        ("etc/keep", "kept\n"),
        ("etc/gone", "should be whited out\n"),
        ("opt/", ""),
        ("opt/app/", ""),
        ("opt/app/old", "old\n"),
    ]);
    let upper = gzip(&tar_of(&[
        ("etc/.wh.gone", ""),
        ("opt/app/.wh..wh..opq", ""),
        ("opt/app/new", "new\n"),
    ]));
    let layer1 = blob(&layout, "application/vnd.oci.image.layer.v1.tar", &lower);
    let layer2 = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &upper,
    );
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["PATH=/bin", "MODE=oci"], "WorkingDir": "/opt/app"},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer1, layer2.clone()]
    });
    let mut manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    manifest["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    (layout, layer2["digest"].as_str().unwrap().to_owned())
}

#[test]
fn an_oci_layout_is_applied_layer_by_layer_with_whiteouts() {
    let state = StateDir::new();
    let name = unique("oci");
    let (layout, _) = oci_layout(state.path());
    // No command: the image supplies one.
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{oci: {{layout: {}, ref: v1}}}}\n",
            layout.display()
        ),
    );
    create_ok(&state, &manifest);
    let rootfs = state.container_dir(&name).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/keep")).unwrap(),
        "kept\n"
    );
    assert!(!rootfs.join("etc/gone").exists(), "whiteout not applied");
    assert!(
        !rootfs.join("etc/.wh.gone").exists(),
        "whiteout marker unpacked"
    );
    assert!(
        !rootfs.join("opt/app/old").exists(),
        "opaque directory kept a lower file"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/app/new")).unwrap(),
        "new\n"
    );
    let image = &config(&state, &name)["image"];
    assert_eq!(image["command"], serde_json::json!(["/bin/app", "--serve"]));
    assert_eq!(image["env"], serde_json::json!(["PATH=/bin", "MODE=oci"]));
    assert_eq!(image["workingDir"], "/opt/app");
    destroy_leaves_nothing(&state, &name);
}

#[test]
fn a_corrupt_oci_blob_fails_the_create_and_leaves_nothing() {
    let state = StateDir::new();
    let name = unique("corrupt");
    let (layout, digest) = oci_layout(state.path());
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{oci: {{layout: {}, ref: v1}}}}\n",
            layout.display()
        ),
    );
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("blob {digest} is corrupt")),
        "{}",
        stderr(&out)
    );
    assert!(state.leftovers().is_empty());
}

/// A `berth create` running a template that records its pid and then sleeps.
struct SlowCreate {
    child: Child,
    script_pid: i32,
}

impl SlowCreate {
    fn start(state: &StateDir, name: &str) -> SlowCreate {
        let pidfile = state.path().join(format!("{name}.pid"));
        let script = write_script(
            state.path(),
            &format!("{name}.sh"),
            &format!(
                "echo $$ > {}.tmp && mv {0}.tmp {0}\nexec sleep 60\n",
                pidfile.display()
            ),
        );
        let manifest = state.manifest(
            name,
            &format!(
                "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
                script.display()
            ),
        );
        let child = state
            .berth(&["create", "-f", manifest.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let script_pid = loop {
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                break pid.trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the template never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        SlowCreate { child, script_pid }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SlowCreate {
    fn drop(&mut self) {
        self.kill();
        // The template dies with berth (PR_SET_PDEATHSIG); make sure of it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.script_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn a_create_killed_mid_template_leaves_partial_and_gc_removes_it() {
    let state = StateDir::new();
    let name = unique("killed");
    let mut create = SlowCreate::start(&state, &name);
    assert!(state.container_dir(&name).join("partial").exists());
    create.kill();
    assert!(
        process_gone(create.script_pid),
        "the template outlived berth"
    );
    assert!(
        state.container_dir(&name).join("partial").exists(),
        "partial must survive a kill -9"
    );

    let out = state.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("removed interrupted create {name}")
    );
    assert!(state.leftovers().is_empty());
}

#[test]
fn gc_and_destroy_leave_a_running_create_alone() {
    let state = StateDir::new();
    let name = unique("running");
    let create = SlowCreate::start(&state, &name);
    let out = state.run(&["gc"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "nothing to clean up");
    assert!(state.container_dir(&name).join("partial").exists());
    assert!(state.container_dir(&name).join("rootfs").exists());

    let out = state.run(&["destroy", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("container {name} is being created")),
        "{}",
        stderr(&out)
    );

    let manifest = state.path().join(format!("{name}.yaml"));
    let out = state.run(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("container {name} is being created")),
        "{}",
        stderr(&out)
    );
    assert!(state.container_dir(&name).join("partial").exists());
    drop(create);
}

#[test]
fn destroy_refuses_to_cross_a_bind_mount_and_the_mounted_files_survive() {
    let state = StateDir::new();
    let name = unique("bound");
    let manifest = state.manifest(&name, "  command: [/bin/true]\n");
    create_ok(&state, &manifest);
    // Stands in for the host's /usr: a directory of the test's own with a file in it.
    let precious = tempfile::Builder::new()
        .prefix("berth-precious-")
        .tempdir()
        .unwrap();
    std::fs::write(precious.path().join("file"), "must survive").unwrap();
    let target = state.container_dir(&name).join("rootfs/usr");

    // The bind lives in a private mount namespace of its own, which ends with the
    // shell: nothing can leak onto the host's mounts even if the test fails.
    let berth = env!("CARGO_BIN_EXE_berth");
    let script = format!(
        "mount --bind {src} {dst} && ls {dst}/file >/dev/null && {berth} --state-dir {state} destroy {name}",
        src = precious.path().display(),
        dst = target.display(),
        state = state.path().display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) is needed for this test");
    assert_eq!(
        out.status.code(),
        Some(1),
        "destroy should fail: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "refusing to delete {}: it is a mount point",
            target.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(precious.path().join("file")).unwrap(),
        "must survive"
    );
    // Outside that namespace there is no mount, and destroy goes through, without
    // following a symlink out of the rootfs either.
    std::os::unix::fs::symlink(
        precious.path(),
        state.container_dir(&name).join("rootfs/escape"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        precious.path().join("file"),
        state.container_dir(&name).join("rootfs/etc/file"),
    )
    .unwrap();
    destroy_leaves_nothing(&state, &name);
    assert_eq!(
        std::fs::read_to_string(precious.path().join("file")).unwrap(),
        "must survive"
    );
}

/// Kills a process by pid when dropped (a test's background writer), in case
/// berth failed to.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_killed_create_leaves_no_template_child_writing_into_the_next_create() {
    let state = StateDir::new();
    let name = unique("writer");
    let pidfile = state.path().join("writer.pid");
    // A template that leaves a child appending a line every 10 ms, then hangs.
    let forking = write_script(
        state.path(),
        "forking.sh",
        &format!(
            "( while :; do echo background >> \"$BERTH_ROOTFS_PATH/lines\"; sleep 0.01; done ) &\n\
             echo $! > {0}.tmp && mv {0}.tmp {0}\nexec sleep 60\n",
            pidfile.display()
        ),
    );
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
            forking.display()
        ),
    );
    let mut first = state
        .berth(&["create", "-f", manifest.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut writer = KillOnDrop(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let writer_pid: i32 = loop {
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            break pid.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the template never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.0 = Some(writer_pid);
    first.kill().unwrap();
    first.wait().unwrap();

    // The same name again, from a template that writes 40 lines and ends.
    let counting = write_script(
        state.path(),
        "counting.sh",
        "for i in $(seq 40); do echo line >> \"$BERTH_ROOTFS_PATH/lines\"; done\n",
    );
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
            counting.display()
        ),
    );
    create_ok(&state, &manifest);
    // A surviving writer would add a line every 10 ms.
    std::thread::sleep(Duration::from_millis(300));
    let lines = std::fs::read_to_string(state.container_dir(&name).join("rootfs/lines")).unwrap();
    assert_eq!(lines.lines().count(), 40, "{lines}");
    assert!(
        process_gone(writer_pid),
        "the first template's child outlived its create"
    );
}

#[test]
fn a_finished_create_leaves_no_template_child_behind() {
    let state = StateDir::new();
    let name = unique("daemonizing");
    let pidfile = state.path().join("child.pid");
    let script = write_script(
        state.path(),
        "daemonizing.sh",
        &format!("sleep 60 &\necho $! > {}\n", pidfile.display()),
    );
    let manifest = state.manifest(
        &name,
        &format!(
            "  rootfs: {{template: {{script: {}}}}}\n  command: [/bin/true]\n",
            script.display()
        ),
    );
    create_ok(&state, &manifest);
    let child: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(Some(child));
    assert!(
        process_gone(child),
        "the template's child outlived the create"
    );
    destroy_leaves_nothing(&state, &name);
}

#[test]
fn a_host_template_container_runs_the_hosts_alternatives_without_copying_them() {
    if std::fs::read_link("/etc/alternatives/awk").is_err() {
        eprintln!("skipped: this host has no /etc/alternatives/awk (not a Debian-style host)");
        return;
    }
    let state = StateDir::new();
    let name = unique("alt");
    let manifest = state.manifest(
        &name,
        "  command: [/usr/bin/awk, 'BEGIN { print \"awk-through-alternatives\" }']\n  restartPolicy: Never\n",
    );
    create_ok(&state, &manifest);
    let rootfs = state.container_dir(&name).join("rootfs");
    assert_eq!(
        std::fs::read_dir(rootfs.join("etc/alternatives"))
            .unwrap()
            .count(),
        0,
        "a mount point, nothing copied"
    );
    let out = state.run(&["start", &name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    crate::console_until(&state, &name, "awk-through-alternatives");
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    destroy_leaves_nothing(&state, &name);
}
