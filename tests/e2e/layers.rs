//! Containers from an image's unpacked layers (`Runtime::create_from_layers`):
//! an overlay of read-only lowers with an upper of the container's own, or a
//! copy of the layers where overlayfs cannot serve (as root).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_runtime::{ImageDefaults, ImageLayers, Origin, Runtime};
use sha2::{Digest, Sha256};

use crate::{StateDir, console_until, stderr, stdout, unique};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What each container prints: the merged view, then its own write.
const SCRIPT: &str = "cat /etc/motd; [ -e /etc/doomed ] && echo doomed-visible || echo doomed-absent; \
    echo opt=$(ls /opt/hidden); cat /srv/top; echo written=$(cat /srv/written 2>/dev/null); \
    echo mine-$(hostname) > /srv/written; echo ready; exec sleep 1000";

/// Three layers in overlayfs's lower format, bottom first: a static busybox and
/// some files; a layer that changes a file, whites one out (a 0:0 character
/// device) and makes a directory opaque; a layer that adds a file.
struct Layers {
    _dir: tempfile::TempDir,
    lowers: Vec<PathBuf>,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn layers() -> Layers {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("this test needs a static busybox: apt-get install busybox-static");
    let dir = tempfile::Builder::new()
        .prefix("berth-layers-")
        .tempdir()
        .unwrap();
    let lowers: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("layer{i}")))
        .collect();
    for lower in &lowers {
        std::fs::create_dir(lower).unwrap();
        std::fs::set_permissions(lower, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bottom = &lowers[0];
    std::fs::create_dir_all(bottom.join("bin")).unwrap();
    std::fs::copy(busybox, bottom.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "ls", "echo", "sleep", "hostname", "id", "stat", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", bottom.join("bin").join(applet)).unwrap();
    }
    for dir in ["tmp", "proc", "sys", "dev", "srv"] {
        std::fs::create_dir_all(bottom.join(dir)).unwrap();
    }
    write(&bottom.join("etc/motd"), "from the bottom layer\n");
    write(&bottom.join("etc/doomed"), "whited out above\n");
    write(&bottom.join("opt/hidden/old"), "hidden by an opaque dir\n");

    let middle = &lowers[1];
    write(&middle.join("etc/motd"), "the upper layer wins\n");
    nix::sys::stat::mknod(
        &middle.join("etc/doomed"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    write(&middle.join("opt/hidden/new"), "");
    let opaque = CString::new(middle.join("opt/hidden").as_os_str().as_bytes()).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call; the value
    // is one byte long.
    let set = unsafe {
        nix::libc::setxattr(
            opaque.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());

    write(&lowers[2].join("srv/top"), "the top layer\n");
    Layers { _dir: dir, lowers }
}

/// Everything of a tree a write could change: names, types, modes, owners,
/// times, contents, link targets.
fn tree_hash(root: &Path) -> String {
    fn walk(path: &Path, rel: &Path, hasher: &mut Sha256) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        hasher.update(format!(
            "{}|{:o}|{}|{}|{}|{}.{}|",
            rel.display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.rdev(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
        if meta.file_type().is_symlink() {
            hasher.update(std::fs::read_link(path).unwrap().as_os_str().as_bytes());
        } else if meta.is_file() {
            hasher.update(std::fs::read(path).unwrap());
        } else if meta.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                walk(&path.join(&name), &rel.join(&name), hasher);
            }
        }
    }
    let mut hasher = Sha256::new();
    walk(root, Path::new(""), &mut hasher);
    format!("{:x}", hasher.finalize())
}

fn hashes(layers: &Layers) -> Vec<String> {
    layers.lowers.iter().map(|l| tree_hash(l)).collect()
}

fn runtime(state: &StateDir) -> Runtime {
    Runtime::new(state.path()).with_cgroup_parent(&state.cgroup_parent)
}

fn container(state: &StateDir, name: &str, spec: &str) -> berth_manifests::Container {
    let path = state.manifest(name, spec);
    let parsed = berth_manifests::parse_file(&path);
    assert!(parsed.is_valid(), "{:?}", parsed.diagnostics);
    parsed.containers.into_iter().next().unwrap()
}

fn image(layers: &Layers) -> ImageLayers {
    ImageLayers {
        image: DIGEST.to_owned(),
        lowers: layers.lowers.clone(),
        defaults: ImageDefaults::default(),
    }
}

fn create(state: &StateDir, runtime: &Runtime, name: &str, spec: &str, layers: &Layers) {
    let container = container(state, name, spec);
    runtime
        .create_from_layers(&container, Origin::Cli, image(layers))
        .unwrap();
}

fn start(state: &StateDir, name: &str) {
    let out = state.run(&["start", name]);
    assert!(out.status.success(), "start {name}: {}", stderr(&out));
}

fn saved(state: &StateDir, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(state.container_dir(name).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The host's own mount table never names anything of the state dir.
fn assert_host_sees_no_mount(state: &StateDir) {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state_path = state.path().to_str().unwrap();
    assert!(
        !table.lines().any(|l| l.contains(state_path)),
        "the host sees a mount of the container:\n{table}"
    );
}

fn assert_merged_view(log: &str) {
    assert!(log.contains("the upper layer wins\n"), "{log}");
    assert!(!log.contains("from the bottom layer"), "{log}");
    assert!(log.contains("doomed-absent\n"), "{log}");
    assert!(
        log.contains("opt=new\n"),
        "the opaque dir hides the lower's file: {log}"
    );
    assert!(log.contains("the top layer\n"), "{log}");
}

const SPEC: &str = "  stopTimeout: 0s\n";

fn spec(script: &str) -> String {
    format!("  command: [/bin/sh, -c, '{script}']\n{SPEC}")
}

#[test]
fn an_image_container_is_an_overlay_of_its_layers_and_writes_only_to_its_upper() {
    let state = StateDir::new();
    let layers = layers();
    let before = hashes(&layers);
    let runtime = runtime(&state);
    let (a, b) = (unique("layers-a"), unique("layers-b"));
    create(&state, &runtime, &a, &spec(SCRIPT), &layers);
    create(&state, &runtime, &b, &spec(SCRIPT), &layers);

    // Created without a copy: an empty mount point, an upper and a work dir.
    let dir = state.container_dir(&a);
    let config = saved(&state, &a);
    assert_eq!(config["header"]["template"], "image");
    assert_eq!(config["layers"]["image"], DIGEST);
    assert_eq!(config["layers"]["mode"], "overlay");
    assert!(config["layers"].get("fallback").is_none(), "{config}");
    assert_eq!(
        config["layers"]["lowers"][0],
        layers.lowers[0].to_str().unwrap()
    );
    assert_eq!(std::fs::read_dir(dir.join("rootfs")).unwrap().count(), 0);
    assert!(dir.join("upper").is_dir() && dir.join("work").is_dir());

    start(&state, &a);
    let log = console_until(&state, &a, "ready");
    assert_merged_view(&log);
    assert!(log.contains("written=\n"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.join("upper/srv/written")).unwrap(),
        format!("mine-{a}\n"),
        "the write lands in the container's upper"
    );
    // berth exec joins the same view.
    let out = state.run(&["exec", &a, "cat", "/srv/written"]);
    assert_eq!(stdout(&out), format!("mine-{a}\n"), "{}", stderr(&out));

    // A second container of the same layers does not see the first one's write.
    start(&state, &b);
    let log_b = console_until(&state, &b, "ready");
    assert_merged_view(&log_b);
    assert!(log_b.contains("written=\n"), "{log_b}");
    assert_host_sees_no_mount(&state);

    // A reboot mounts the overlay afresh, on the same upper.
    let out = state.run(&["reboot", &a]);
    assert!(out.status.success(), "reboot: {}", stderr(&out));
    let log = console_until(&state, &a, &format!("written=mine-{a}\n"));
    assert_merged_view(&log);
    assert_host_sees_no_mount(&state);

    for name in [&a, &b] {
        let out = state.run(&["stop", name]);
        assert!(out.status.success(), "stop: {}", stderr(&out));
    }
    // Overlayfs leaves work/work with mode 000: destroy still removes it all.
    assert!(dir.join("work/work").is_dir());
    for name in [&a, &b] {
        let out = state.run(&["destroy", name]);
        assert!(out.status.success(), "destroy: {}", stderr(&out));
    }
    assert!(!dir.exists(), "upper and work are gone");
    assert_eq!(hashes(&layers), before, "no lower layer was written to");
    assert_host_sees_no_mount(&state);
}

#[test]
fn a_read_only_image_rootfs_refuses_writes_with_or_without_a_user_namespace() {
    let state = StateDir::new();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let layers = layers();
    let runtime = runtime(&state);
    for (prefix, userns) in [("layers-ro", ""), ("layers-ro-userns", ", userns: auto")] {
        let name = unique(prefix);
        create(
            &state,
            &runtime,
            &name,
            &format!(
                "  command: [/bin/sh, -c, 'touch /srv/new 2>&1 || echo refused; echo ready; exec sleep 1000']\n  security: {{readOnlyRootfs: true{userns}}}\n{SPEC}"
            ),
            &layers,
        );
        start(&state, &name);
        let log = console_until(&state, &name, "ready");
        assert!(log.contains("Read-only file system"), "{name}: {log}");
        assert!(log.contains("refused"), "{log}");
        assert!(!state.container_dir(&name).join("upper/srv/new").exists());
    }
}

#[test]
fn the_copy_fallback_shows_the_same_view_and_leaves_the_layers_alone() {
    let state = StateDir::new();
    let layers = layers();
    let before = hashes(&layers);
    let runtime = runtime(&state).with_layers_copied(true);
    let name = unique("layers-copy");
    create(&state, &runtime, &name, &spec(SCRIPT), &layers);
    let dir = state.container_dir(&name);
    let config = saved(&state, &name);
    assert_eq!(config["layers"]["mode"], "copy");
    assert!(config["layers"]["fallback"].is_string(), "{config}");
    assert!(!dir.join("upper").exists());
    // describe says so, and why.
    let described = stdout(&state.run(&["describe", &name]));
    assert!(
        described.contains(&format!(
            "  Image layers:   copy of {DIGEST} (not an overlay: copying was asked for)\n"
        )),
        "{described}"
    );
    // The layers as overlayfs would show them, in the rootfs itself.
    let rootfs = dir.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "the upper layer wins\n"
    );
    assert!(std::fs::symlink_metadata(rootfs.join("etc/doomed")).is_err());
    assert!(!rootfs.join("opt/hidden/old").exists());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    start(&state, &name);
    let log = console_until(&state, &name, "ready");
    assert_merged_view(&log);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/written")).unwrap(),
        format!("mine-{name}\n")
    );
    let out = state.run(&["stop", &name]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    let out = state.run(&["destroy", &name]);
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    assert!(!dir.exists());
    assert_eq!(hashes(&layers), before, "no lower layer was written to");
}

#[test]
fn a_userns_image_container_sees_the_layers_as_its_own_through_idmapped_mounts() {
    let state = StateDir::new();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let layers = layers();
    let before = hashes(&layers);
    let spec = format!(
        "  command: [/bin/sh, -c, 'echo uid=$(id -u) owner=$(stat -c %u /etc/motd); {SCRIPT}']\n  security: {{userns: auto}}\n{SPEC}"
    );
    let (mapped, copied) = (unique("layers-idmap"), unique("layers-chown"));
    create(&state, &runtime(&state), &mapped, &spec, &layers);
    let copying = runtime(&state).with_layers_copied(true);
    create(&state, &copying, &copied, &spec, &layers);

    let config = saved(&state, &mapped);
    assert_eq!(config["layers"]["mode"], "idmappedOverlay", "{config}");
    let host_root = config["idMaps"]["uid"][0]["host"].as_u64().unwrap();
    let dir = state.container_dir(&mapped);
    assert_eq!(std::fs::read_dir(dir.join("rootfs")).unwrap().count(), 0);
    assert_eq!(
        u64::from(std::fs::metadata(dir.join("upper")).unwrap().uid()),
        host_root
    );
    start(&state, &mapped);
    let log = console_until(&state, &mapped, "ready");
    assert!(log.starts_with("uid=0 owner=0\n"), "{log}");
    assert_merged_view(&log);
    let written = std::fs::metadata(dir.join("upper/srv/written")).unwrap();
    assert_eq!(
        u64::from(written.uid()),
        host_root,
        "written by the container's root"
    );
    assert_host_sees_no_mount(&state);
    let out = state.run(&["reboot", &mapped]);
    assert!(out.status.success(), "reboot: {}", stderr(&out));
    console_until(&state, &mapped, &format!("written=mine-{mapped}\n"));

    // Copied and chowned instead, where asked (or where idmapped layers fail).
    let config = saved(&state, &copied);
    assert_eq!(config["layers"]["mode"], "copy");
    let rootfs = state.container_dir(&copied).join("rootfs");
    let owner = std::fs::metadata(rootfs.join("etc/motd")).unwrap().uid();
    assert!(
        owner >= 100_000,
        "the copy belongs to the container's ids: {owner}"
    );
    start(&state, &copied);
    let log = console_until(&state, &copied, "ready");
    assert!(log.starts_with("uid=0 owner=0\n"), "{log}");
    assert_merged_view(&log);

    for name in [&mapped, &copied] {
        let out = state.run(&["destroy", "--force", name]);
        assert!(out.status.success(), "destroy: {}", stderr(&out));
    }
    assert!(
        !dir.exists() && !rootfs.exists(),
        "upper, work and the copy are gone"
    );
    assert_eq!(
        hashes(&layers),
        before,
        "no lower layer was written to or chowned"
    );
}

/// Not a test of behaviour: the time a create takes, printed for the README.
/// `cargo test -p berth-operator --test e2e create_times -- --ignored --nocapture`
#[test]
#[ignore]
fn create_times() {
    let state = StateDir::new();
    let layers = layers();
    let runtime = runtime(&state);
    let rounds = 20;
    let time = |label: &str, create: &dyn Fn(&str)| {
        let started = Instant::now();
        for i in 0..rounds {
            create(&format!("{label}-{i}"));
        }
        let each = started.elapsed() / rounds;
        for i in 0..rounds {
            runtime.destroy(&format!("{label}-{i}")).unwrap();
        }
        println!("{label}: {each:?} per create");
    };
    time("overlay", &|name| {
        create(&state, &runtime, name, &spec("true"), &layers)
    });
    let copying = runtime.clone().with_layers_copied(true);
    time("copy", &|name| {
        create(&state, &copying, name, &spec("true"), &layers)
    });
    let userns = format!("{}  security: {{userns: auto}}\n", spec("true"));
    time("idmapped", &|name| {
        create(&state, &runtime, name, &userns, &layers)
    });
    time("busybox", &|name| {
        let c = container(
            &state,
            name,
            &format!("  rootfs: {{template: busybox}}\n{}", spec("true")),
        );
        runtime.create(&c, Origin::Cli).unwrap();
    });
}

#[test]
fn a_start_whose_layer_is_gone_fails_naming_it() {
    let state = StateDir::new();
    let layers = layers();
    let name = unique("layers-gone");
    create(&state, &runtime(&state), &name, &spec("true"), &layers);
    let moved = layers.lowers[1].with_extension("moved");
    std::fs::rename(&layers.lowers[1], &moved).unwrap();
    let out = state.run(&["start", &name]);
    std::fs::rename(&moved, &layers.lowers[1]).unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(layers.lowers[1].to_str().unwrap()) && err.contains("No such file"),
        "{err}"
    );
    assert_host_sees_no_mount(&state);
}
