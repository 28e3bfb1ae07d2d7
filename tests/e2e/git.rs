//! `berth daemon --git`: a local bare repository the test makes, a work clone
//! that commits and pushes, and a daemon following it (as root).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, events, get, manifest, wait_for, wait_phase};
use crate::{StateDir, stderr, stdout, unique};

/// A bare repository (the "remote") and a work clone of it, in the test's dir.
struct Repo {
    origin: PathBuf,
    work: PathBuf,
    /// The SSH key commits are signed with, when they are.
    key: PathBuf,
    /// The OpenPGP home commits are signed from, when they are.
    gnupg: PathBuf,
}

/// How a commit is signed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sign {
    No,
    Ssh,
    OpenPgp,
}

impl Repo {
    fn new(state: &StateDir) -> Repo {
        let top = state.dir.path().join("repos");
        std::fs::create_dir_all(&top).unwrap();
        let origin = top.join("origin.git");
        let work = top.join("work");
        let repo = Repo {
            origin,
            work,
            key: top.join("signing-key"),
            gnupg: top.join("gnupg"),
        };
        repo.git(
            &top,
            &["init", "--quiet", "--bare", "-b", "main", "origin.git"],
        );
        repo.git(&top, &["init", "--quiet", "-b", "main", "work"]);
        let origin = repo.origin.display().to_string();
        repo.git(&repo.work, &["remote", "add", "origin", &origin]);
        repo
    }

    /// git in `dir`, as [`git_in`], with the repository's own GnuPG home.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        git_in(dir, args, Some(&self.gnupg))
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.work.join(file)).unwrap();
    }

    /// Commit everything and push; the new commit's SHA.
    fn commit(&self, message: &str, sign: Sign) -> String {
        self.git(&self.work, &["add", "--all"]);
        let key = match sign {
            Sign::OpenPgp => "test@berth.invalid".to_owned(),
            _ => self.key.with_extension("pub").display().to_string(),
        };
        let signing = format!("user.signingkey={key}");
        let format = match sign {
            Sign::OpenPgp => "gpg.format=openpgp",
            _ => "gpg.format=ssh",
        };
        let mut args = vec!["-c", format, "-c", &signing, "commit", "--quiet"];
        if sign != Sign::No {
            args.push("-S");
        }
        args.extend(["-m", message]);
        self.git(&self.work, &args);
        self.git(&self.work, &["push", "--quiet", "origin", "main"]);
        self.git(&self.work, &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }

    /// An SSH signing key, and an allowed_signers file naming it.
    fn signing_key(&self) -> PathBuf {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&self.key)
            .output()
            .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
        assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
        let public = std::fs::read_to_string(self.key.with_extension("pub")).unwrap();
        let allowed = self.key.with_file_name("allowed_signers");
        std::fs::write(&allowed, format!("test@berth.invalid {public}")).unwrap();
        allowed
    }
}

fn sleeper(name: &str) -> String {
    manifest(
        name,
        "  command: [/bin/sleep, infinity]\n  stopTimeout: 0s\n",
    )
}

fn pid(item: &serde_json::Value) -> i64 {
    item["pid"].as_i64().expect("a pid")
}

/// The daemon's events with this reason whose message holds `text`.
fn wait_event(state: &StateDir, daemon: &Daemon, reason: &str, text: &str) -> serde_json::Value {
    let found = std::cell::Cell::new(0);
    let event = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("a {reason} event naming {text}"), || {
            found.set(found.get() + 1);
            events(state).into_iter().find(|e| {
                e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(text))
            })
        })
    }));
    event.unwrap_or_else(|_| {
        panic!(
            "no {reason} event naming {text}; events: {:?}\ndaemon log:\n{}",
            events(state),
            daemon.log()
        )
    })
}

#[test]
fn commits_add_change_and_remove_containers_and_a_bad_commit_or_a_lost_remote_changes_nothing() {
    let state = StateDir::new();
    let repo = Repo::new(&state);
    let (a, b, c) = (unique("git-a"), unique("git-b"), unique("git-c"));
    repo.write("README.md", "not a manifest: outside --git-path\n");
    repo.write(&format!("apps/{a}.yaml"), &sleeper(&a));
    let first = repo.commit("a", Sign::No);
    let url = format!("file://{}", repo.origin.display());
    let daemon = Daemon::start_with(
        &state,
        &[
            "--git",
            &url,
            "--git-ref",
            "main",
            "--git-path",
            "apps",
            "--git-interval",
            "1s",
        ],
    );
    let item = wait_phase(&state, &daemon, &a, "Running");
    assert_eq!(item["revision"]["commit"], first.as_str(), "{item}");
    let a_pid = pid(&item);

    // A commit adding a manifest starts its container; the other keeps its commit.
    repo.write(&format!("apps/{b}.yaml"), &sleeper(&b));
    let second = repo.commit("b", Sign::No);
    let item = wait_phase(&state, &daemon, &b, "Running");
    assert_eq!(item["revision"]["commit"], second.as_str(), "{item}");
    let item = get(&state, &a).unwrap();
    assert_eq!(item["revision"]["commit"], first.as_str(), "{item}");
    let table = stdout(&state.run(&["get", "-o", "wide"]));
    assert!(
        table.lines().next().unwrap().contains("REVISION"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&b) && l.contains(&second[..7])),
        "{table}"
    );
    let described = stdout(&state.run(&["describe", &b]));
    assert!(
        described.contains(&format!("Revision:  {second} (")),
        "{described}"
    );

    // One invalid manifest: nothing of the commit is applied, not even its good part.
    repo.write(&format!("apps/{c}.yaml"), &sleeper(&c));
    repo.write(
        "apps/zz-bad.yaml",
        &manifest("bad", "  command: [/bin/true]\n  restartPolcy: Always\n"),
    );
    let third = repo.commit("c and a typo", Sign::No);
    let event = wait_event(&state, &daemon, "InvalidRevision", &third);
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("apps/zz-bad.yaml:7:3"), "{message}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(get(&state, &c).is_none(), "a part of a refused commit ran");
    assert_eq!(pid(&get(&state, &a).unwrap()), a_pid);
    assert_eq!(get(&state, &b).unwrap()["phase"], "Running");

    // The next good commit applies: c starts, b (removed) goes, a runs on.
    repo.remove("apps/zz-bad.yaml");
    repo.remove(&format!("apps/{b}.yaml"));
    let fourth = repo.commit("fixed, b removed", Sign::No);
    let item = wait_phase(&state, &daemon, &c, "Running");
    assert_eq!(item["revision"]["commit"], fourth.as_str(), "{item}");
    wait_for(&format!("{b} to be removed"), || {
        get(&state, &b).is_none().then_some(())
    });
    assert_eq!(pid(&get(&state, &a).unwrap()), a_pid);
    let checkouts: Vec<_> = std::fs::read_dir(state.path().join("git/checkouts"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(checkouts, [fourth.as_str()], "old checkouts are pruned");

    // The repository goes away: everything keeps running, the failure is told.
    let moved = repo.origin.with_extension("moved");
    std::fs::rename(&repo.origin, &moved).unwrap();
    let event = wait_event(&state, &daemon, "FetchFailed", "cannot fetch main");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("the last good commit keeps running"),
        "{event}"
    );
    assert_eq!(pid(&get(&state, &a).unwrap()), a_pid);
    assert_eq!(get(&state, &c).unwrap()["phase"], "Running");
    // `berth status` tells it too, with the commit still applied.
    let out = state.run(&["status"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let text = crate::stdout(&out);
    assert!(
        text.contains("cannot fetch main") && text.contains(&fourth[..12]),
        "{text}"
    );
    std::fs::rename(&moved, &repo.origin).unwrap();
    repo.remove(&format!("apps/{c}.yaml"));
    repo.commit("c removed", Sign::No);
    wait_for(
        &format!("{c} to be removed once the repository is back"),
        || get(&state, &c).is_none().then_some(()),
    );
    assert_eq!(pid(&get(&state, &a).unwrap()), a_pid);
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_applied_and_revisions_survive_a_restart() {
    let state = StateDir::new();
    let repo = Repo::new(&state);
    let allowed = repo.signing_key();
    let (a, b) = (unique("sig-a"), unique("sig-b"));
    repo.write(&format!("{a}.yaml"), &sleeper(&a));
    let first = repo.commit("a", Sign::Ssh);
    // A plain path, and the remote's HEAD (no --git-ref).
    let origin = repo.origin.display().to_string();
    let allowed = allowed.display().to_string();
    let args = [
        "--git",
        origin.as_str(),
        "--git-interval",
        "1s",
        "--git-verify",
        allowed.as_str(),
    ];
    let daemon = Daemon::start_with(&state, &args);
    let item = wait_phase(&state, &daemon, &a, "Running");
    assert_eq!(item["revision"]["commit"], first.as_str());

    repo.write(&format!("{b}.yaml"), &sleeper(&b));
    let unsigned = repo.commit("b, unsigned", Sign::No);
    let event = wait_event(&state, &daemon, "InvalidRevision", &unsigned);
    assert!(
        event["message"].as_str().unwrap().contains("not signed"),
        "{event}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&state, &b).is_none(), "an unsigned commit was applied");

    repo.write(
        &format!("{b}.yaml"),
        &sleeper(&b).replace("infinity", "'1000'"),
    );
    let signed = repo.commit("b, signed", Sign::Ssh);
    let item = wait_phase(&state, &daemon, &b, "Running");
    assert_eq!(item["revision"]["commit"], signed.as_str());

    // A new daemon keeps each container's revision (the state store has it).
    drop(daemon);
    let daemon = Daemon::start_with(&state, &args);
    let item = wait_phase(&state, &daemon, &a, "Running");
    assert_eq!(item["revision"]["commit"], first.as_str(), "{item}");
    assert!(item["revision"]["time"].as_i64().unwrap() > 1_600_000_000);
    let item = wait_phase(&state, &daemon, &b, "Running");
    assert_eq!(item["revision"]["commit"], signed.as_str(), "{item}");
}

/// An OpenPGP key of the test's own (its agent ended on drop), exported armored.
struct OpenPgpKey<'a>(&'a Repo);

impl OpenPgpKey<'_> {
    fn new(repo: &Repo) -> (OpenPgpKey<'_>, PathBuf) {
        std::fs::create_dir_all(&repo.gnupg).unwrap();
        std::fs::set_permissions(&repo.gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = OpenPgpKey(repo);
        key.gpg(&[
            "--quick-gen-key",
            "berth test <test@berth.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        let public = repo.gnupg.with_file_name("public.asc");
        let armored = key.gpg(&["--armor", "--export", "test@berth.invalid"]);
        assert!(armored.starts_with("-----BEGIN PGP"), "{armored}");
        std::fs::write(&public, armored).unwrap();
        (key, public)
    }

    fn gpg(&self, args: &[&str]) -> String {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.0.gnupg)
            .args(["--batch", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("gpg {args:?}: {e}"));
        assert!(out.status.success(), "gpg {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for OpenPgpKey<'_> {
    /// The agent gpg started for this home (and only it).
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.0.gnupg)
            .args(["--kill", "all"])
            .output();
    }
}

#[test]
fn commits_signed_with_an_openpgp_key_of_the_keyring_pass_and_unsigned_ones_do_not() {
    let state = StateDir::new();
    let repo = Repo::new(&state);
    let (_key, public) = OpenPgpKey::new(&repo);
    let (a, b) = (unique("pgp-a"), unique("pgp-b"));
    repo.write(&format!("{a}.yaml"), &sleeper(&a));
    let first = repo.commit("a", Sign::OpenPgp);
    let url = format!("file://{}", repo.origin.display());
    let public = public.display().to_string();
    let daemon = Daemon::start_with(
        &state,
        &[
            "--git",
            &url,
            "--git-interval",
            "1s",
            "--git-verify",
            &public,
        ],
    );
    let item = wait_phase(&state, &daemon, &a, "Running");
    assert_eq!(item["revision"]["commit"], first.as_str());
    repo.write(&format!("{b}.yaml"), &sleeper(&b));
    let unsigned = repo.commit("b, unsigned", Sign::No);
    let event = wait_event(&state, &daemon, "InvalidRevision", &unsigned);
    assert!(
        event["message"].as_str().unwrap().contains("not signed"),
        "{event}"
    );
    // Signed with SSH: not a key of this keyring either.
    repo.signing_key();
    repo.write(
        &format!("{b}.yaml"),
        &sleeper(&b).replace("infinity", "'1000'"),
    );
    let ssh = repo.commit("b, signed with ssh", Sign::Ssh);
    wait_event(&state, &daemon, "InvalidRevision", &ssh);
    assert!(
        get(&state, &b).is_none(),
        "a commit without a good signature ran"
    );
    repo.write(&format!("{b}.yaml"), &sleeper(&b));
    let signed = repo.commit("b, signed", Sign::OpenPgp);
    let item = wait_phase(&state, &daemon, &b, "Running");
    assert_eq!(item["revision"]["commit"], signed.as_str());
}

/// A new ed25519 key pair without a passphrase at `path` (and `path.pub`).
fn ssh_keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

/// sshd's privilege-separation directory, compiled in (Debian's path): sshd will
/// not start without it. Made if missing, and then removed again on drop.
struct PrivsepDir {
    made: bool,
}

impl PrivsepDir {
    const PATH: &str = "/run/sshd";

    fn ensure() -> PrivsepDir {
        match std::fs::DirBuilder::new().mode(0o755).create(Self::PATH) {
            Ok(()) => PrivsepDir { made: true },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => PrivsepDir { made: false },
            Err(e) => panic!("cannot create sshd's {}: {e}", Self::PATH),
        }
    }
}

impl Drop for PrivsepDir {
    fn drop(&mut self) {
        if self.made {
            // Only while empty: an sshd started meanwhile keeps it.
            let _ = std::fs::remove_dir(Self::PATH);
        }
    }
}

/// A private sshd on 127.0.0.1 that lets root in with one key only, everything it
/// reads and writes in the test's dir; ended by its pid on drop, also when the
/// test fails. Declare it before the daemons that fetch from it.
struct Sshd {
    child: Child,
    port: u16,
    /// The client key its authorized_keys holds.
    key: PathBuf,
    log: PathBuf,
    /// Dropped after `child` is ended.
    _privsep: PrivsepDir,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        // An absolute path: sshd re-executes itself for every connection.
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "this test needs sshd (it fetches an ssh:// URL from a private one on \
                     127.0.0.1), which is not installed: apt-get install openssh-server"
                )
            });
        std::fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        ssh_keygen(&host_key);
        ssh_keygen(&key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let privsep = PrivsepDir::ensure();
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        // A port found free may be taken before sshd binds it: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            // StrictModes no: sshd refuses an authorized_keys file below a directory
            // others can write, and the test's dir is below /tmp (mode 1777). The
            // file itself is root's, in a directory only root can enter.
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1:{port}\n\
                     HostKey {host_key}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {authorized}\n\
                     AuthenticationMethods publickey\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     AllowUsers root\n\
                     UsePAM no\n\
                     StrictModes no\n",
                    host_key = host_key.display(),
                    pid = dir.join("sshd.pid").display(),
                    authorized = authorized.display(),
                ),
            )
            .unwrap();
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", sshd.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        child,
                        port,
                        key,
                        log,
                        _privsep: privsep,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Our own child, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            let text = read(&log);
            assert!(
                text.contains("Address already in use"),
                "sshd did not start:\n{text}"
            );
        }
        panic!("sshd found no free port:\n{}", read(&log))
    }

    fn log(&self) -> String {
        read(&self.log)
    }
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

impl Drop for Sshd {
    /// Our sshd, by its pid: SIGTERM, then SIGKILL.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if std::thread::panicking() {
            eprintln!("sshd log:\n{}", self.log());
        }
    }
}

#[test]
fn an_ssh_url_is_followed_with_the_key_given_and_an_unauthorized_key_runs_nothing() {
    let state = StateDir::new();
    let repo = Repo::new(&state);
    let sshd = Sshd::start(&state.dir.path().join("sshd"));
    let (a, b) = (unique("ssh-a"), unique("ssh-b"));
    repo.write(&format!("{a}.yaml"), &sleeper(&a));
    let first = repo.commit("a", Sign::No);
    let url = format!(
        "ssh://root@127.0.0.1:{}{}",
        sshd.port,
        repo.origin.display()
    );
    let key = sshd.key.display().to_string();
    let daemon = Daemon::start_with(
        &state,
        &["--git", &url, "--git-ssh-key", &key, "--git-interval", "1s"],
    );
    let item = wait_phase(&state, &daemon, &a, "Running");
    assert_eq!(item["revision"]["commit"], first.as_str(), "{item}");
    // The next fetch meets the host key learnt on the first.
    repo.write(&format!("{b}.yaml"), &sleeper(&b));
    let second = repo.commit("b", Sign::No);
    let item = wait_phase(&state, &daemon, &b, "Running");
    assert_eq!(item["revision"]["commit"], second.as_str(), "{item}");
    let out = state.run(&["get", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commit_of = |name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["revision"]["commit"].clone())
    };
    assert_eq!(commit_of(&a), Some(first.as_str().into()), "{list}");
    assert_eq!(commit_of(&b), Some(second.as_str().into()), "{list}");

    // Another device, whose key the server does not know: told, and nothing runs.
    let other = StateDir::new();
    let stranger = other.dir.path().join("stranger_key");
    ssh_keygen(&stranger);
    let stranger = stranger.display().to_string();
    let refused = Daemon::start_with(
        &other,
        &[
            "--git",
            &url,
            "--git-ssh-key",
            &stranger,
            "--git-interval",
            "1s",
        ],
    );
    let event = wait_event(&other, &refused, "FetchFailed", &url);
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot fetch HEAD from {url}"))
            && message.contains("Permission denied (publickey)"),
        "{message}"
    );
    let out = other.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&url) && text.contains("Permission denied (publickey)"),
        "{text}"
    );
    let out = other.run(&["get", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
}

#[test]
fn a_daemon_without_git_says_what_to_install() {
    let state = StateDir::new();
    let out = state
        .berth(&["daemon", "--git", "/nonexistent.git"])
        .env("PATH", state.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs the `git` program")
            && stderr(&out).contains("apt install git"),
        "{}",
        stderr(&out)
    );
    let out = state
        .berth(&["daemon", "--git", "/x.git", "--manifests", "/etc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--manifests"), "{}", stderr(&out));
}

/// git in `dir` with no user or system configuration (root's ~/.gitconfig does
/// not count), a test identity, and `gnupg` as GNUPGHOME when given; its stdout.
pub(crate) fn git_in(dir: &Path, args: &[&str], gnupg: Option<&Path>) -> String {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=berth test",
            "-c",
            "user.email=test@berth.invalid",
        ])
        .args(args);
    if let Some(gnupg) = gnupg {
        command.env("GNUPGHOME", gnupg);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out)
}
