//! A real registry on 127.0.0.1 for the tests (Debian's `docker-registry`, the
//! CNCF distribution server), with images built by `umoci` from the host's static
//! busybox and pushed with `skopeo`. Nothing leaves the machine.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails with what to install when a tool is missing.
pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (bash .ci/run installs it)"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `docker-registry serve` of the test's own; killed (by pid) and its storage
/// removed on drop.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Registry {
    pub fn start() -> Registry {
        need("docker-registry", "docker-registry");
        let mut dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        // A free port: bound and let go; the registry takes it a moment later.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut registry = Registry { dir, child, port };
            if registry.wait_ready() {
                return registry;
            }
            let _ = registry.child.kill();
            let _ = registry.child.wait();
            dir = std::mem::replace(&mut registry.dir, tempfile::tempdir().unwrap());
        }
        panic!("docker-registry did not start on 127.0.0.1");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's output, its access log among it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of blob GETs.
    pub fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .map(str::to_owned)
            .collect()
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A registries.conf that marks this registry plain HTTP.
    pub fn registries_conf(&self, dir: &Path) -> PathBuf {
        let path = dir.join("registries.conf");
        std::fs::write(
            &path,
            format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                self.host()
            ),
        )
        .unwrap();
        path
    }

    /// Build an image from the host's static busybox (plus `random_mb` MiB of
    /// random bytes in a layer of their own) and push it as `name:tag`. Its
    /// config runs `sh -c 'echo hello from the image'` as 1000:1000 in /srv with
    /// GREETING=hello.
    pub fn push_busybox(&self, name: &str, tag: &str, random_mb: usize) -> PushedImage {
        self.push_busybox_running(name, tag, random_mb, "echo hello from the image")
    }

    /// `push_busybox` whose config runs `sh -c SCRIPT` (the same env, working dir
    /// and user).
    pub fn push_busybox_running(
        &self,
        name: &str,
        tag: &str,
        random_mb: usize,
        script: &str,
    ) -> PushedImage {
        need("umoci", "umoci");
        need("skopeo", "skopeo");
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: apt-get install busybox-static"
        );
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let image = format!("{}:{tag}", layout.display());
        let bundle = work.path().join("bundle");
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("srv")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        // --refresh-bundle: a second repack then holds only what changed after it.
        run(Command::new("umoci")
            .args(["repack", "--refresh-bundle", "--image", &image])
            .arg(&bundle));
        if random_mb > 0 {
            let mut bytes = vec![0u8; random_mb << 20];
            std::fs::File::open("/dev/urandom")
                .unwrap()
                .read_exact(&mut bytes)
                .unwrap();
            std::fs::write(rootfs.join("srv/random"), &bytes).unwrap();
            run(Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle));
        }
        run(Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--config.cmd=/bin/sh",
            "--config.cmd=-c",
            &format!("--config.cmd={script}"),
            "--config.env=GREETING=hello",
            "--config.workingdir=/srv",
            "--config.user=1000:1000",
        ]));
        let reference = format!("{}/{name}:{tag}", self.host());
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{reference}"),
        ]));
        let manifest = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ]));
        let digest = format!("sha256:{}", sha256_hex(manifest.as_bytes()));
        let manifest_size = manifest.len();
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let layers = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        PushedImage {
            reference,
            digest,
            manifest_size,
            layers,
        }
    }

    /// Tag a multi-platform index in `name` listing `image`'s manifest under each
    /// of `platforms` (`(os, architecture)`); returns the index's digest.
    pub fn put_index(
        &self,
        name: &str,
        tag: &str,
        image: &PushedImage,
        platforms: &[(&str, &str)],
    ) -> String {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .map(|(os, arch)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": image.digest,
                    "size": image.manifest_size,
                    "platform": {"os": os, "architecture": arch}
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        }))
        .unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "PUT /v2/{name}/manifests/{tag} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n",
            self.host(),
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 201") || answer.starts_with("HTTP/1.0 201"),
            "{answer}"
        );
        format!("sha256:{}", sha256_hex(&body))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:PORT/NAME:TAG`
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    pub manifest_size: usize,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
