//! Containers made from registry images, driven as a user would: `berth create`
//! and `start` of a manifest naming `spec.rootfs.image`, the daemon on a manifest
//! directory, `rmi` and `gc` beside containers that use an image (as root, a real
//! registry on 127.0.0.1).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::daemon::{Daemon, count_events, events, get, save, wait_for, wait_phase};
use crate::pull::{assert_ok, berth_with, images_dir, names_in};
use crate::registry::{PushedImage, Registry};
use crate::{StateDir, console_until, stderr, stdout, unique};

/// What the test image's own config runs (as 1000:1000 in /srv, GREETING=hello):
/// who and where it is, then it stays up.
const IMAGE_SCRIPT: &str = "echo uid=$(/bin/busybox id -u):$(/bin/busybox id -g) cwd=$(pwd) greeting=$GREETING; exec /bin/busybox sleep 1000";

/// What the image's script prints.
const IMAGE_SAYS: &str = "uid=1000:1000 cwd=/srv greeting=hello\n";

fn push(registry: &Registry, name: &str) -> PushedImage {
    registry.push_busybox_running(name, "1", 0, IMAGE_SCRIPT)
}

/// The manifest body of a container of `reference` with `extra` spec lines.
fn image_spec(reference: &str, extra: &str) -> String {
    format!("  rootfs:\n    image: {reference}\n  stopTimeout: 0s\n{extra}")
}

fn create(state: &StateDir, conf: &Path, name: &str, spec: &str) -> std::process::Output {
    let manifest = state.manifest(name, spec);
    berth_with(state, conf, &["create", "-f", manifest.to_str().unwrap()])
}

fn start(state: &StateDir, name: &str) {
    assert_ok(&state.run(&["start", name]));
}

fn saved(state: &StateDir, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.container_dir(name).join("config.json")).unwrap())
        .unwrap()
}

/// config.json's `layers.lowers`.
fn lowers(state: &StateDir, name: &str) -> Vec<PathBuf> {
    saved(state, name)["layers"]["lowers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l.as_str().unwrap()))
        .collect()
}

/// `(name, device, inode)` of every unpacked layer: an unpack again would rename
/// a new directory into place.
fn layer_dirs(state: &StateDir) -> Vec<(String, u64, u64)> {
    let dir = images_dir(state).join("layers");
    names_in(&dir)
        .into_iter()
        .map(|name| {
            let meta = std::fs::symlink_metadata(dir.join(&name)).unwrap();
            (name, meta.dev(), meta.ino())
        })
        .collect()
}

/// The `berth images` row of `reference`.
fn images_row(state: &StateDir, reference: &str) -> String {
    let out = state.run(&["images"]);
    assert_ok(&out);
    let table = stdout(&out);
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .unwrap_or_else(|| panic!("{reference} is not listed:\n{table}"))
        .to_owned()
}

#[test]
fn an_image_container_pulls_on_create_and_runs_the_images_command_env_workdir_and_user() {
    let registry = Registry::start();
    let image = push(&registry, "test/app");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let name = unique("imgapp");

    let out = create(&state, &conf, &name, &image_spec(&image.reference, ""));
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "pulled {} ({})\ncreated {name}\n",
            image.reference, image.digest
        )
    );
    assert_eq!(
        registry.blob_gets().len(),
        image.layers.len() + 1,
        "the config and each layer, once"
    );

    start(&state, &name);
    let log = console_until(&state, &name, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");

    let row = images_row(&state, &image.reference);
    assert!(row.contains(&image.digest[..7 + 12]), "{row}");
    assert!(row.ends_with(" 1"), "one container uses it: {row}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&state.run(&["images", "-o", "json"]))).unwrap();
    assert_eq!(json[0]["containers"], serde_json::json!([name]));

    // An overlay of the store's own layer directories, bottom first.
    let config = saved(&state, &name);
    assert_eq!(config["layers"]["mode"], "overlay", "{config:#}");
    assert_eq!(config["layers"]["image"], image.digest.as_str());
    let layers = images_dir(&state).join("layers");
    let want: Vec<PathBuf> = image
        .layers
        .iter()
        .map(|d| layers.join(d.trim_start_matches("sha256:")))
        .collect();
    assert_eq!(lowers(&state, &name), want);
    let described = stdout(&state.run(&["describe", &name]));
    assert!(
        described.contains(&format!("  Image layers:   overlay of {}\n", image.digest)),
        "{described}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&state.run(&["status", &name]).stdout).unwrap();
    assert_eq!(status["phase"], "Running", "{status:#}");
}

#[test]
fn a_second_container_of_an_image_fetches_and_unpacks_nothing_and_neither_sees_the_others_writes() {
    let registry = Registry::start();
    let image = push(&registry, "test/twice");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    // Root, so that both may write to the image's /srv.
    let script = "echo seen=$(/bin/busybox cat /srv/written 2>/dev/null); echo mine-$(/bin/busybox hostname) > /srv/written; echo ready; exec /bin/busybox sleep 1000";
    let spec = image_spec(
        &image.reference,
        &format!("  user: \"0:0\"\n  command: [/bin/sh, -c, '{script}']\n"),
    );
    let (first, second) = (unique("imgfirst"), unique("imgsecond"));

    assert_ok(&create(&state, &conf, &first, &spec));
    let requests = registry.log();
    let fetched = registry.blob_gets();
    let unpacked = layer_dirs(&state);
    assert_eq!(unpacked.len(), image.layers.len());

    let out = create(&state, &conf, &second, &spec);
    assert_ok(&out);
    assert_eq!(stdout(&out), format!("created {second}\n"), "no pull");
    assert_eq!(
        registry.blob_gets(),
        fetched,
        "the second create fetched a blob"
    );
    assert_eq!(
        requests_since(&registry, requests.len()),
        Vec::<String>::new(),
        "IfNotPresent asks nothing"
    );
    assert_eq!(layer_dirs(&state), unpacked, "a layer was unpacked again");
    assert_eq!(lowers(&state, &first), lowers(&state, &second));
    let row = images_row(&state, &image.reference);
    assert!(row.ends_with(" 2"), "{row}");

    start(&state, &first);
    console_until(&state, &first, "ready");
    start(&state, &second);
    let log = console_until(&state, &second, "ready");
    assert!(
        log.contains("seen=\n"),
        "the second sees the first's write: {log}"
    );
    // Each write is in its own container's upper, none in the shared layers.
    for name in [&first, &second] {
        let upper = state.container_dir(name).join("upper/srv/written");
        assert_eq!(
            std::fs::read_to_string(&upper).unwrap(),
            format!("mine-{name}\n")
        );
    }
    for lower in lowers(&state, &first) {
        assert!(!lower.join("srv/written").exists(), "{}", lower.display());
    }
    // A start again sees its own earlier write, not the other's.
    assert_ok(&state.run(&["stop", &first, "--timeout", "0s"]));
    std::fs::remove_file(state.container_dir(&first).join("console.log")).unwrap();
    start(&state, &first);
    let log = console_until(&state, &first, "ready");
    assert!(log.contains(&format!("seen=mine-{first}\n")), "{log}");
}

#[test]
fn the_daemon_runs_an_image_and_a_pull_that_fails_fails_only_its_own_container() {
    let registry = Registry::start();
    let image = push(&registry, "test/daemon");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let daemon = Daemon::start_with(&state, &["--registries-conf", conf.to_str().unwrap()]);
    let (good, missing, never, plain) = (
        unique("dimg"),
        unique("dnotag"),
        unique("dnever"),
        unique("dplain"),
    );
    let missing_ref = format!("{}/test/daemon:nope", registry.host());
    let never_ref = format!("{}/test/elsewhere:1", registry.host());
    let text = [
        crate::daemon::manifest(&good, &image_spec(&image.reference, "")),
        crate::daemon::manifest(&missing, &image_spec(&missing_ref, "")),
        crate::daemon::manifest(
            &never,
            &format!(
                "  rootfs:\n    image: {never_ref}\n    pullPolicy: Never\n  stopTimeout: 0s\n"
            ),
        ),
        crate::daemon::manifest(
            &plain,
            "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
        ),
    ]
    .join("---\n");
    save(&state, "images.yaml", &text);

    wait_phase(&state, &daemon, &good, "Running");
    let log = console_until(&state, &good, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");
    // Through the daemon's API too.
    let described = stdout(&state.run(&["describe", &good]));
    assert!(
        described.contains(&format!("  Image layers:   overlay of {}\n", image.digest))
            && described.contains("Pulled"),
        "{described}"
    );
    let pulled: Vec<serde_json::Value> = events(&state)
        .into_iter()
        .filter(|e| e["name"] == good.as_str() && e["reason"] == "Pulled")
        .collect();
    assert_eq!(pulled.len(), 1, "{pulled:#?}");
    assert_eq!(
        pulled[0]["message"],
        format!("{} ({})", image.reference, image.digest).as_str()
    );

    let failed = wait_phase(&state, &daemon, &missing, "Failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&missing_ref) && message.contains("manifest unknown"),
        "{failed:#}"
    );
    wait_for("a FailedPull event", || {
        (count_events(&state, &missing, "FailedPull") >= 1).then_some(())
    });
    assert!(
        !state.container_dir(&missing).exists(),
        "nothing was created"
    );

    let failed = wait_phase(&state, &daemon, &never, "Failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("berth pull {never_ref}")),
        "{failed:#}"
    );
    assert_eq!(count_events(&state, &never, "Pulled"), 0);

    // The others run on, once and for all: the failures are retried beside them.
    wait_phase(&state, &daemon, &plain, "Running");
    let running = get(&state, &good).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let later = get(&state, &good).unwrap();
    assert_eq!(later["phase"], "Running");
    assert_eq!(later["pid"], running["pid"], "{later:#}");
    assert_eq!(later["restarts"], 0);
    assert_eq!(count_events(&state, &good, "Pulled"), 1);

    // The missing tag pushed at last: the retry pulls it and the container runs.
    let pushed = registry.push_busybox_running("test/daemon", "nope", 0, IMAGE_SCRIPT);
    wait_phase(&state, &daemon, &missing, "Running");
    console_until(&state, &missing, IMAGE_SAYS);
    assert_eq!(count_events(&state, &missing, "Pulled"), 1);
    // pullPolicy Never: nothing happens until someone pulls it by hand.
    let elsewhere = push(&registry, "test/elsewhere");
    assert_eq!(elsewhere.reference, never_ref);
    assert_eq!(get(&state, &never).unwrap()["phase"], "Failed");
    assert_ok(&berth_with(&state, &conf, &["pull", &never_ref]));
    wait_phase(&state, &daemon, &never, "Running");
    assert_eq!(count_events(&state, &never, "Pulled"), 0);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&state.run(&["images", "-o", "json"]))).unwrap();
    let users: Vec<(&str, &str, &serde_json::Value)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let text = |key: &str| i[key].as_str().unwrap();
            (text("reference"), text("digest"), &i["containers"])
        })
        .collect();
    for (reference, digest, name) in [
        (&missing_ref, &pushed.digest, &missing),
        (&never_ref, &elsewhere.digest, &never),
    ] {
        assert!(
            users.contains(&(
                reference.as_str(),
                digest.as_str(),
                &serde_json::json!([name])
            )),
            "{users:#?}"
        );
    }
}

#[test]
fn rmi_is_refused_while_a_container_runs_the_image_and_after_its_destroy_gc_frees_the_layers() {
    let registry = Registry::start();
    let image = push(&registry, "test/rmi");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let name = unique("imgrmi");
    assert_ok(&create(
        &state,
        &conf,
        &name,
        &image_spec(&image.reference, ""),
    ));
    start(&state, &name);

    let out = state.run(&["rmi", &image.reference]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "{}: in use by container {name}; destroy it first",
            image.reference
        )),
        "{}",
        stderr(&out)
    );
    images_row(&state, &image.reference);
    let out = state.run(&["gc"]);
    assert_ok(&out);
    assert_eq!(layer_dirs(&state).len(), image.layers.len());

    assert_ok(&state.run(&["stop", &name, "--timeout", "0s"]));
    assert_ok(&state.run(&["destroy", &name]));
    assert_ok(&state.run(&["rmi", &image.reference]));
    let out = state.run(&["gc"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("freed "), "{}", stdout(&out));
    assert_eq!(
        names_in(&images_dir(&state).join("layers")),
        Vec::<String>::new()
    );
    assert_eq!(
        names_in(&images_dir(&state).join("blobs/sha256")),
        Vec::<String>::new()
    );
}

#[test]
fn gc_keeps_the_layers_a_container_reads_when_no_image_record_names_them() {
    let registry = Registry::start();
    let image = push(&registry, "test/orphaned");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let name = unique("imgkept");
    assert_ok(&create(
        &state,
        &conf,
        &name,
        &image_spec(&image.reference, ""),
    ));
    // The record goes behind berth's back (a tag moved, a hand at work).
    let refs = images_dir(&state).join("refs");
    for record in names_in(&refs) {
        std::fs::remove_file(refs.join(record)).unwrap();
    }

    assert_ok(&state.run(&["gc"]));
    for lower in lowers(&state, &name) {
        assert!(
            lower.join("bin/busybox").is_file(),
            "{} went",
            lower.display()
        );
    }
    start(&state, &name);
    let log = console_until(&state, &name, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");

    // Once the container goes, so do its layers.
    assert_ok(&state.run(&["stop", &name, "--timeout", "0s"]));
    assert_ok(&state.run(&["destroy", &name]));
    assert_ok(&state.run(&["gc"]));
    assert_eq!(
        names_in(&images_dir(&state).join("layers")),
        Vec::<String>::new()
    );
}

#[test]
fn a_read_only_rootfs_from_an_image_refuses_writes() {
    let registry = Registry::start();
    let image = push(&registry, "test/readonly");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let name = unique("imgro");
    let script = "echo x > /srv/probe && echo wrote-srv || echo refused-srv; echo x > /tmp/probe && echo wrote-tmp; echo done";
    let spec = image_spec(
        &image.reference,
        &format!(
            "  user: \"0:0\"\n  security: {{readOnlyRootfs: true}}\n  command: [/bin/sh, -c, '{script}']\n  restartPolicy: Never\n"
        ),
    );
    assert_ok(&create(&state, &conf, &name, &spec));
    start(&state, &name);
    let log = console_until(&state, &name, "done");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(log.contains("refused-srv\n"), "{log}");
    assert!(log.contains("wrote-tmp\n"), "/tmp stays writable: {log}");
    assert!(
        !state.container_dir(&name).join("upper/srv/probe").exists(),
        "the write reached the upper"
    );
}

#[test]
fn gc_keeps_a_containers_layers_whatever_path_names_the_state_dir() {
    let registry = Registry::start();
    let image = push(&registry, "test/spelled");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let name = unique("imgspelled");
    // The daemon and the create know the state dir by a symlink (as a
    // /var/lib/berth moved to a bigger disk); gc runs under its real path.
    let elsewhere = tempfile::Builder::new()
        .prefix("berth-link-")
        .tempdir()
        .unwrap();
    let link = elsewhere.path().join("state");
    std::os::unix::fs::symlink(state.path(), &link).unwrap();
    let manifest = state.manifest(&name, &image_spec(&image.reference, ""));
    let out = crate::berth()
        .arg("--state-dir")
        .arg(&link)
        .arg("--cgroup-parent")
        .arg(&state.cgroup_parent)
        .arg("--registries-conf")
        .arg(&conf)
        .args(["create", "-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    let refs = images_dir(&state).join("refs");
    for record in names_in(&refs) {
        std::fs::remove_file(refs.join(record)).unwrap();
    }

    assert_ok(&state.run(&["gc"]));
    assert_eq!(layer_dirs(&state).len(), image.layers.len(), "gc took them");
    start(&state, &name);
    let log = console_until(&state, &name, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");
}

#[test]
fn a_registry_image_runs_in_a_user_namespace_on_the_stores_shared_layers() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::start();
    let image = push(&registry, "test/userns");
    let state = StateDir::new();
    // A user namespace needs every directory above the state dir searchable.
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let conf = registry.registries_conf(state.dir.path());
    let script = "echo uid=$(/bin/busybox id -u) owner=$(/bin/busybox stat -c %u /bin/busybox); echo mine > /srv/written && echo wrote; exec /bin/busybox sleep 1000";
    let spec = image_spec(
        &image.reference,
        &format!(
            "  user: \"0:0\"\n  security: {{userns: auto}}\n  command: [/bin/sh, -c, '{script}']\n"
        ),
    );
    let (first, second) = (unique("imguserns"), unique("imguserns2"));
    assert_ok(&create(&state, &conf, &first, &spec));
    assert_ok(&create(&state, &conf, &second, &spec));
    for name in [&first, &second] {
        let config = saved(&state, name);
        assert_eq!(config["layers"]["mode"], "idmappedOverlay", "{config:#}");
        start(&state, name);
        let log = console_until(&state, name, "wrote");
        assert!(log.starts_with("uid=0 owner=0\n"), "{log}");
    }
    // The store's layers stay the host's root's: nothing was chowned in them.
    for lower in lowers(&state, &first) {
        assert_eq!(
            std::fs::metadata(lower.join("bin/busybox")).unwrap().uid(),
            0
        );
    }
}

/// Access-log lines of requests to the registry's API after `from` bytes of its log.
fn requests_since(registry: &Registry, from: usize) -> Vec<String> {
    registry.log()[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn pull_policy_always_asks_the_registry_at_each_create_and_a_digest_reference_never_does() {
    let registry = Registry::start();
    let image = push(&registry, "test/always");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let always = |reference: &str| {
        format!("  rootfs:\n    image: {reference}\n    pullPolicy: Always\n  stopTimeout: 0s\n")
    };
    assert_ok(&create(
        &state,
        &conf,
        &unique("always1"),
        &always(&image.reference),
    ));
    let fetched = registry.blob_gets();

    // The tag is asked again; the blobs it names are in the store already.
    let seen = registry.log().len();
    let name = unique("always2");
    let out = create(&state, &conf, &name, &always(&image.reference));
    assert_ok(&out);
    assert!(stdout(&out).starts_with("pulled "), "{}", stdout(&out));
    assert!(
        requests_since(&registry, seen)
            .iter()
            .any(|l| l.contains("/manifests/1")),
        "the tag was not asked again"
    );
    assert_eq!(registry.blob_gets(), fetched, "a blob was fetched again");

    // By digest: pulled once (no blob again), then never asked again.
    let pinned = format!("{}/test/always@{}", registry.host(), image.digest);
    let name = unique("pinned1");
    let out = create(&state, &conf, &name, &always(&pinned));
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with(&format!("pulled {pinned}")),
        "{}",
        stdout(&out)
    );
    let seen = registry.log().len();
    let name = unique("pinned2");
    let out = create(&state, &conf, &name, &always(&pinned));
    assert_ok(&out);
    assert_eq!(stdout(&out), format!("created {name}\n"));
    assert_eq!(requests_since(&registry, seen), Vec::<String>::new());
    assert_eq!(registry.blob_gets(), fetched, "a blob was fetched again");
    start(&state, &name);
    let log = console_until(&state, &name, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");
}

#[test]
fn the_daemon_runs_several_containers_of_one_image_pulled_at_once() {
    let registry = Registry::start();
    let image = push(&registry, "test/burst");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let daemon = Daemon::start_with(
        &state,
        &[
            "--registries-conf",
            conf.to_str().unwrap(),
            "--concurrency",
            "4",
        ],
    );
    let names: Vec<String> = (0..4).map(|i| unique(&format!("burst{i}"))).collect();
    let text: Vec<String> = names
        .iter()
        .map(|name| crate::daemon::manifest(name, &image_spec(&image.reference, "")))
        .collect();
    save(&state, "burst.yaml", &text.join("---\n"));
    for name in &names {
        wait_phase(&state, &daemon, name, "Running");
        let log = console_until(&state, name, "greeting=");
        assert!(log.contains(IMAGE_SAYS), "{log}");
    }
    assert_eq!(layer_dirs(&state).len(), image.layers.len());
    assert_eq!(names_in(&images_dir(&state).join("refs")).len(), 1);
    assert_eq!(
        names_in(&images_dir(&state).join("tmp")),
        Vec::<String>::new()
    );
    let row = images_row(&state, &image.reference);
    assert!(row.ends_with(" 4"), "{row}");
}

#[test]
fn with_the_registry_gone_a_new_daemon_starts_an_image_container_again_from_the_store() {
    let registry = Registry::start();
    let image = push(&registry, "test/offline");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let args = ["--registries-conf", conf.to_str().unwrap()];
    let name = unique("offline");
    let mut daemon = Daemon::start_with(&state, &args);
    save(
        &state,
        "offline.yaml",
        &crate::daemon::manifest(&name, &image_spec(&image.reference, "")),
    );
    wait_phase(&state, &daemon, &name, "Running");
    console_until(&state, &name, IMAGE_SAYS);
    // A power cut, as far as berth can tell: the daemon and the container gone,
    // and the device comes back without its network.
    daemon.kill_hard();
    drop(registry);
    assert_ok(&state.run(&["stop", &name, "--timeout", "0s"]));
    std::fs::remove_file(state.container_dir(&name).join("console.log")).unwrap();

    let daemon = Daemon::start_with(&state, &args);
    wait_phase(&state, &daemon, &name, "Running");
    let log = console_until(&state, &name, "greeting=");
    assert!(log.contains(IMAGE_SAYS), "{log}");
    assert_eq!(count_events(&state, &name, "FailedPull"), 0);
    assert_eq!(count_events(&state, &name, "Pulled"), 1);
}

#[test]
fn an_edit_to_an_image_that_cannot_be_pulled_keeps_the_running_container() {
    let registry = Registry::start();
    let image = push(&registry, "test/keep");
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let daemon = Daemon::start_with(&state, &["--registries-conf", conf.to_str().unwrap()]);
    let name = unique("dkeep");
    save(
        &state,
        "keep.yaml",
        &crate::daemon::manifest(&name, &image_spec(&image.reference, "")),
    );
    let running = wait_phase(&state, &daemon, &name, "Running");
    let pid = running["pid"].as_i64().unwrap();
    // A typo in the tag: nothing to pull, so nothing to replace it with.
    let typo = format!("{}/test/keep:nope", registry.host());
    save(
        &state,
        "keep.yaml",
        &crate::daemon::manifest(&name, &image_spec(&typo, "")),
    );
    wait_for("a FailedPull event", || {
        (count_events(&state, &name, "FailedPull") >= 1).then_some(())
    });
    let item = wait_for("the message", || {
        get(&state, &name).filter(|i| {
            i["message"]
                .as_str()
                .is_some_and(|m| m.contains("keeps running its current rootfs"))
        })
    });
    assert_eq!(item["phase"], "Running", "{item:#}");
    assert_eq!(item["pid"].as_i64(), Some(pid), "{item:#}");
    assert!(
        item["message"].as_str().unwrap().contains(&typo),
        "{item:#}"
    );
    assert!(!crate::process_gone_now(pid as i32));
}
