//! `berth pull`, `images`, `rmi` and `gc` against a real registry on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::registry::{Registry, sha256_hex};
use crate::{StateDir, stderr, stdout};

/// `berth --registries-conf CONF ARGS...` in `state`.
pub(crate) fn berth_with(state: &StateDir, conf: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = state.berth(args);
    cmd.arg("--registries-conf").arg(conf);
    cmd.output().unwrap()
}

pub(crate) fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

pub(crate) fn images_dir(state: &StateDir) -> PathBuf {
    state.path().join("images")
}

pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every blob in the store hashes to its name: nothing unverified was kept.
fn assert_blobs_verified(state: &StateDir) {
    let blobs = images_dir(state).join("blobs/sha256");
    for name in names_in(&blobs) {
        let bytes = std::fs::read(blobs.join(&name)).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "blob {name} does not match its name"
        );
    }
}

#[test]
fn a_pulled_image_is_listed_and_a_second_pull_fetches_no_blob_again() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/busybox", "1", 0);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());

    let out = berth_with(&state, &conf, &["pull", &image.reference]);
    assert_ok(&out);
    assert!(stdout(&out).contains(&image.digest), "{}", stdout(&out));
    let fetched = registry.blob_gets();
    // The config and every layer, once each.
    assert_eq!(fetched.len(), image.layers.len() + 1, "{fetched:#?}");

    let out = state.run(&["images"]);
    assert_ok(&out);
    let table = stdout(&out);
    let short = &image.digest[..7 + 12];
    assert!(table.starts_with("REFERENCE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&image.reference) && l.contains(short) && l.ends_with(" 0")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&state.run(&["images", "-o", "json"]))).unwrap();
    assert_eq!(json[0]["reference"], image.reference.as_str());
    assert_eq!(json[0]["digest"], image.digest.as_str());
    assert_eq!(json[0]["containers"], serde_json::json!([]));
    // The busybox layer is unpacked, as an overlay lower.
    let bottom = image.layers[0].trim_start_matches("sha256:");
    assert!(
        images_dir(&state)
            .join("layers")
            .join(bottom)
            .join("bin/busybox")
            .is_file()
    );

    let out = berth_with(&state, &conf, &["pull", &image.reference]);
    assert_ok(&out);
    assert_eq!(
        registry.blob_gets(),
        fetched,
        "the second pull fetched a blob again"
    );

    let out = berth_with(
        &state,
        &conf,
        &["pull", &format!("{}/test/busybox:nope", registry.host())],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("manifest unknown"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_blob_corrupted_in_the_registry_fails_the_pull_naming_it_and_nothing_unverified_stays() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/corrupt", "1", 0);
    let layer = image.layers.last().unwrap();
    let data = registry.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&data, &bytes).unwrap();

    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let out = berth_with(&state, &conf, &["pull", &image.reference]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("blob {layer}: digest mismatch")),
        "{err}"
    );
    assert_eq!(
        err.matches("digest mismatch").count(),
        1,
        "said once: {err}"
    );
    assert_blobs_verified(&state);
    assert!(
        !names_in(&images_dir(&state).join("blobs/sha256"))
            .contains(&layer.trim_start_matches("sha256:").to_owned())
    );
    assert_eq!(
        names_in(&images_dir(&state).join("layers")),
        Vec::<String>::new()
    );
    assert_eq!(
        names_in(&images_dir(&state).join("refs")),
        Vec::<String>::new()
    );
    assert_ok(&state.run(&["images"]));
    assert_eq!(
        names_in(&images_dir(&state).join("tmp")),
        Vec::<String>::new()
    );
}

#[test]
fn a_pull_killed_mid_way_leaves_nothing_used_and_the_next_pull_succeeds() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/big", "1", 64);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let tmp = images_dir(&state).join("tmp");

    let mut cmd = state.berth(&["pull", &image.reference]);
    cmd.arg("--registries-conf").arg(&conf);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Kill it while a blob streams into tmp/.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut caught = false;
    while Instant::now() < deadline {
        if names_in(&tmp).iter().any(|n| n.starts_with("blob-")) {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            caught = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.wait();
    assert!(caught, "the pull ended before it could be killed mid-way");
    assert_eq!(
        names_in(&images_dir(&state).join("refs")),
        Vec::<String>::new()
    );
    assert_blobs_verified(&state);

    let out = berth_with(&state, &conf, &["pull", &image.reference]);
    assert_ok(&out);
    assert_eq!(names_in(&tmp), Vec::<String>::new(), "tmp leftovers");
    assert_blobs_verified(&state);
    let top = image.layers.last().unwrap().trim_start_matches("sha256:");
    let random = images_dir(&state)
        .join("layers")
        .join(top)
        .join("srv/random");
    assert_eq!(std::fs::metadata(random).unwrap().len(), 64 << 20);
}

#[test]
fn rmi_removes_an_unused_image_and_gc_frees_its_layers_and_blobs() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/rmi", "1", 0);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    assert_ok(&berth_with(&state, &conf, &["pull", &image.reference]));

    let out = state.run(&["gc"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim(),
        "nothing to clean up",
        "the image is kept"
    );

    let out = state.run(&["rmi", &image.reference]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("removed "), "{}", stdout(&out));
    let out = state.run(&["images"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let out = state.run(&["rmi", &image.reference]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));

    let out = state.run(&["gc"]);
    assert_ok(&out);
    let said = stdout(&out);
    // The manifest, the config and each layer's blob; each layer's directory.
    let blobs = image.layers.len() + 2;
    assert!(
        said.starts_with("freed ")
            && said.contains(&format!("({blobs} blobs, {} layer", image.layers.len())),
        "{said}"
    );
    assert_eq!(
        names_in(&images_dir(&state).join("blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(
        names_in(&images_dir(&state).join("layers")),
        Vec::<String>::new()
    );
}

#[test]
fn rmi_is_refused_while_a_container_uses_the_image() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/inuse", "1", 0);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    assert_ok(&berth_with(&state, &conf, &["pull", &image.reference]));
    // A container made from the image, as the create path records it: its
    // config.json names the image's digest.
    let name = crate::unique("inuse");
    let manifest = state.manifest(&name, "  command: [/bin/true]\n");
    assert_ok(&state.run(&["create", "-f", manifest.to_str().unwrap()]));
    let config_path = state.container_dir(&name).join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["image"] = serde_json::json!({
        "command": [], "env": [], "workingDir": null, "digest": image.digest
    });
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

    let table = stdout(&state.run(&["images"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&image.reference) && l.ends_with(" 1")),
        "{table}"
    );
    let out = state.run(&["rmi", &image.reference]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("in use by container {name}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&state.run(&["images"])).lines().count(), 2);

    assert_ok(&state.run(&["destroy", &name]));
    assert_ok(&state.run(&["rmi", &image.reference]));
}

#[test]
fn short_names_and_unreachable_registries_are_refused_clearly() {
    let state = StateDir::new();
    let out = state.run(&["pull", "alpine"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "berth: \"alpine\" is a short name: write the registry too, e.g. docker.io/library/alpine (berth has no default registry)"
    );
    // A port nothing listens on (bound, then let go), marked plain HTTP.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = state.dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"),
    )
    .unwrap();
    let out = berth_with(&state, &conf, &["pull", &format!("127.0.0.1:{port}/app:1")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot reach the registry 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

/// Go's name of this machine's architecture, as image indexes use it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn a_multi_platform_index_resolves_to_this_machine_or_names_the_platforms_it_has() {
    let registry = Registry::start();
    let image = registry.push_busybox("test/multi", "single", 0);
    let other = if go_arch() == "s390x" {
        "mips64le"
    } else {
        "s390x"
    };
    let index = registry.put_index(
        "test/multi",
        "1",
        &image,
        &[("linux", other), ("linux", go_arch())],
    );
    registry.put_index(
        "test/multi",
        "foreign",
        &image,
        &[("linux", other), ("windows", "amd64")],
    );
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());

    let reference = format!("{}/test/multi:1", registry.host());
    let out = berth_with(&state, &conf, &["pull", &reference]);
    assert_ok(&out);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&state.run(&["images", "-o", "json"]))).unwrap();
    assert_eq!(
        json[0]["digest"],
        image.digest.as_str(),
        "this platform's manifest"
    );
    assert_eq!(json[0]["indexDigest"], index.as_str());

    let out = berth_with(
        &state,
        &conf,
        &["pull", &format!("{}/test/multi:foreign", registry.host())],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "no image for this machine's platform linux/{}; the index has linux/{other}, windows/amd64",
            go_arch()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn resolve_digest_asks_the_registry_without_downloading_a_layer() {
    let registry = Registry::start();
    let first = registry.push_busybox("test/moving", "1", 0);
    let state = StateDir::new();
    let conf = registry.registries_conf(state.dir.path());
    let options = berth_registry::PullOptions::load(Some(&conf), None).unwrap();
    let reference: berth_manifests::ImageRef = first.reference.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resolve = || {
        runtime
            .block_on(berth_registry::resolve_digest(&reference, &options))
            .unwrap()
    };
    assert_eq!(resolve(), first.digest);
    // The tag moves: a new image pushed to it.
    let second = registry.push_busybox("test/moving", "1", 1);
    assert_ne!(second.digest, first.digest);
    let before = registry.blob_gets();
    assert_eq!(resolve(), second.digest);
    assert_eq!(registry.blob_gets(), before, "no blob was downloaded");
}

/// A registry stand-in on 127.0.0.1 that answers every request 401, asking for
/// basic auth, and keeps the request heads it was sent. It serves `limit`
/// connections, then its thread ends.
fn unauthorized_registry(limit: usize) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heads, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(limit) {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
            let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
        }
    });
    (port, received)
}

#[test]
fn credentials_come_from_the_authfile_and_a_401_says_to_log_in() {
    let (port, heads) = unauthorized_registry(8);
    let state = StateDir::new();
    let conf = state.dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"),
    )
    .unwrap();
    // base64("u:p")
    let authfile = state.dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths": {{"127.0.0.1:{port}": {{"auth": "dTpw"}}}}}}"#),
    )
    .unwrap();
    let mut cmd = state.berth(&["pull", &format!("127.0.0.1:{port}/app:1")]);
    cmd.arg("--registries-conf")
        .arg(&conf)
        .arg("--authfile")
        .arg(&authfile);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "the registry 127.0.0.1:{port} refused access (401 Unauthorized) with the credentials of {}: log in again",
            authfile.display()
        )),
        "{}",
        stderr(&out)
    );
    let sent: Vec<String> = heads.try_iter().collect();
    assert!(
        sent.iter()
            .any(|h| h.to_ascii_lowercase().contains("authorization: basic dtpw")),
        "no request carried the authfile's credentials: {sent:#?}"
    );
}
