//! The Git source: `berth daemon --git URL`. A bare clone under
//! `<state-dir>/git/repo.git` is fetched every interval; each new commit is
//! checked out beside the one applied (`git/checkouts/<sha>`), validated whole
//! (every manifest under the served directory parses and validates, no name is
//! used twice) and only then swapped in by renaming the symlink `git/current`
//! over the old one, so the desired set never reads half a tree. A commit that
//! fails (or is not signed by a key of `--git-verify`) is refused as a whole:
//! the last good commit keeps running.
//!
//! The `git` program does the work rather than a library: it speaks file,
//! https and ssh and verifies SSH and OpenPGP signatures the way users know
//! (their credentials, their ssh config, their keys), as Argo CD does; gix would
//! be a large dependency and would still need ssh and ssh-keygen or gpg.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::{Notify, oneshot, watch};

use crate::desired::DesiredSet;
use crate::health::{Source, SourceKind, Sync as SyncResult, unix_now};
use crate::reconcile::Context;

/// What `berth daemon --git*` asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// As given, made absolute for a local path; may hold credentials.
    pub url: String,
    pub reference: Option<String>,
    /// Relative to the repository's top; empty for the top itself.
    pub path: PathBuf,
    pub interval: Duration,
    pub ssh_key: Option<PathBuf>,
    pub verify: Option<PathBuf>,
}

impl Options {
    /// Checks what can be checked before the daemon starts.
    pub fn new(
        url: String,
        reference: Option<String>,
        path: Option<PathBuf>,
        interval: Duration,
        ssh_key: Option<PathBuf>,
        verify: Option<PathBuf>,
    ) -> anyhow::Result<Options> {
        if url.starts_with('-') || reference.as_deref().is_some_and(|r| r.starts_with('-')) {
            bail!("--git and --git-ref cannot start with '-'");
        }
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("git").is_file()));
        if !found {
            bail!(
                "--git needs the `git` program, which is not on PATH: install it \
                 (apt install git, dnf install git, apk add git)"
            );
        }
        let path = path.unwrap_or_default();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "--git-path {}: give a directory inside the repository, relative to its top \
                 and without `..`",
                path.display()
            );
        }
        if interval.is_zero() {
            bail!("--git-interval must be longer than 0s");
        }
        // A local path is fetched from wherever git runs: make it absolute.
        let url = if !url.contains("://") && Path::new(&url).exists() {
            std::path::absolute(&url)
                .with_context(|| format!("--git {url}"))?
                .display()
                .to_string()
        } else {
            url
        };
        let absolute = |file: Option<PathBuf>, flag: &str| -> anyhow::Result<Option<PathBuf>> {
            file.map(|f| {
                let f =
                    std::path::absolute(&f).with_context(|| format!("{flag} {}", f.display()))?;
                std::fs::metadata(&f)
                    .with_context(|| format!("{flag} {}: cannot read it", f.display()))?;
                Ok(f)
            })
            .transpose()
        };
        Ok(Options {
            url,
            reference,
            path,
            interval,
            ssh_key: absolute(ssh_key, "--git-ssh-key")?,
            verify: absolute(verify, "--git-verify")?,
        })
    }

    /// The directory the desired set reads: the served directory of the
    /// checkout `current` points to.
    pub fn manifest_dir(&self, state_dir: &Path) -> PathBuf {
        let current = state_dir.join("git").join("current");
        if self.path.as_os_str().is_empty() {
            current
        } else {
            current.join(&self.path)
        }
    }

    /// The daemon's source, as `berth status` shows it before the first sync.
    pub fn source(&self) -> Source {
        Source {
            kind: SourceKind::Git,
            location: redact(&self.url),
            reference: Some(self.reference.clone().unwrap_or_else(|| "HEAD".to_owned())),
            path: (!self.path.as_os_str().is_empty()).then(|| self.path.display().to_string()),
            revision: None,
            last_sync: None,
            last_error: None,
        }
    }
}

/// The URL with any user and password replaced, for logs, events and status:
/// `https://TOKEN@host/x` and `https://user:pw@host/x` become `https://***@host/x`.
/// An ssh:// user without a password (`ssh://git@host/x`) is no secret and stays.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((user, host)) if scheme != "ssh" || user.contains(':') => {
            format!("{scheme}://***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// How `--git-verify`'s file is used.
#[derive(Debug, Clone)]
enum Verify {
    /// An allowed_signers file (ssh-keygen(1)), for SSH signatures.
    Ssh(PathBuf),
    /// OpenPGP keys, imported into a keyring of berth's own (`GNUPGHOME`).
    OpenPgp,
}

/// A fetch of the followed ref, or a commit that cannot be applied.
#[derive(Debug)]
enum Outcome {
    /// This commit is the one applied already.
    Unchanged,
    /// Swapped in.
    Applied(berth_state::Revision),
    /// Fetched, but not applied; the message names the commit and what is wrong.
    Refused { commit: String, message: String },
    /// The fetch (or git itself) failed.
    Failed(String),
}

/// Everything git needs to run, fixed at start.
#[derive(Debug)]
pub struct Git {
    options: Options,
    /// `<state-dir>/git`, 0700.
    dir: PathBuf,
    verify: Option<Verify>,
}

/// No git command runs longer: a hung connection must not stop the source.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest wait between retries of a failing fetch (or the interval, if longer).
const BACKOFF_CAP: Duration = Duration::from_secs(300);

impl Git {
    fn repo(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    fn checkouts(&self) -> PathBuf {
        self.dir.join("checkouts")
    }

    fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// A git (or gpg) command with a clean, fixed environment: no user or system
    /// configuration, no hooks, no prompts, HOME in berth's own git directory.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH")
                    .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into()),
            )
            .env("HOME", &self.dir)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GNUPGHOME", self.dir.join("gnupg"))
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if program == "git" {
            command.args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "gc.autoDetach=false",
                "-c",
                "http.lowSpeedLimit=1000",
                "-c",
                "http.lowSpeedTime=60",
            ]);
        }
        command
    }

    /// ssh without a terminal: the key given, hosts learnt on first use into
    /// berth's own known_hosts (pre-fill it for strict checking).
    fn ssh_command(&self) -> String {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let mut ssh = format!(
            "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 \
             -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={}",
            quote(&self.dir.join("known_hosts"))
        );
        if let Some(key) = &self.options.ssh_key {
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quote(key)));
        }
        ssh
    }

    /// Run `git ARGS`; its stdout, or its stderr (credentials taken out) as the error.
    fn git(&self, args: &[&str]) -> Result<String, String> {
        run(self.command("git").args(args)).map_err(|e| {
            // The subcommand: the first word that is no option nor a `-c` value.
            let what = args
                .iter()
                .zip(std::iter::once(&"").chain(args))
                .find(|(a, before)| !a.starts_with('-') && **before != "-c")
                .map_or("git", |(a, _)| *a);
            format!(
                "git {what}: {}",
                e.replace(&self.options.url, &redact(&self.options.url))
            )
        })
    }

    /// Set up the directory, the bare repository and the keyring; the revision a
    /// previous daemon applied, if there is one.
    fn setup(
        options: Options,
        state_dir: &Path,
    ) -> anyhow::Result<(Git, Option<berth_state::Revision>)> {
        let dir = state_dir.join("git");
        DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod 0700 {}", dir.display()))?;
        let mut git = Git {
            options,
            dir,
            verify: None,
        };
        match git.command("git").arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "--git needs the `git` program, which is not on PATH: install it \
                 (apt install git, dnf install git, apk add git)"
            ),
            Err(e) => bail!("cannot run git: {e}"),
            Ok(out) if !out.status.success() => bail!("git --version failed"),
            Ok(_) => {}
        }
        if let Some(file) = git.options.verify.clone() {
            git.verify = Some(git.keyring(&file)?);
        }
        if !git.repo().join("HEAD").exists() {
            git.git(&["init", "--bare", "--quiet", "repo.git"])
                .map_err(anyhow::Error::msg)?;
        }
        std::fs::create_dir_all(git.checkouts())
            .with_context(|| format!("cannot create {}", git.checkouts().display()))?;
        let applied = git.applied();
        git.prune(applied.as_ref().map(|r| r.commit.as_str()));
        Ok((git, applied))
    }

    /// Read `--git-verify`'s file: OpenPGP keys (armored or binary) are imported
    /// into `<state-dir>/git/gnupg`; anything else is an allowed_signers file.
    fn keyring(&self, file: &Path) -> anyhow::Result<Verify> {
        let bytes = std::fs::read(file)
            .with_context(|| format!("--git-verify {}: cannot read it", file.display()))?;
        let openpgp =
            bytes.starts_with(b"-----BEGIN PGP") || bytes.first().is_some_and(|b| b & 0x80 != 0);
        let (program, package) = if openpgp {
            ("gpg", "gnupg")
        } else {
            ("ssh-keygen", "openssh-client")
        };
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        });
        if !found {
            bail!(
                "--git-verify {}: checking these signatures needs `{program}`, which is not on \
                 PATH: install {package}",
                file.display()
            );
        }
        if !openpgp {
            return Ok(Verify::Ssh(file.to_owned()));
        }
        // Anew at each start: a key taken out of the file is no longer trusted.
        let home = self.dir.join("gnupg");
        if let Err(e) = std::fs::remove_dir_all(&home)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            bail!("cannot remove the old keyring {}: {e}", home.display());
        }
        DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        run(self
            .command("gpg")
            .args(["--batch", "--quiet", "--no-autostart", "--import"])
            .arg(file))
        .map_err(|e| anyhow::anyhow!("--git-verify {}: gpg --import: {e}", file.display()))?;
        Ok(Verify::OpenPgp)
    }

    /// The commit `current` points to, if any.
    fn applied(&self) -> Option<berth_state::Revision> {
        let target = std::fs::read_link(self.current()).ok()?;
        let commit = target.file_name()?.to_str()?.to_owned();
        // A checkout removed by hand is checked out again by the next sync.
        if !self.checkouts().join(&commit).is_dir() {
            return None;
        }
        let time = self.commit_time(&commit).ok()?;
        Some(berth_state::Revision { commit, time })
    }

    fn commit_time(&self, commit: &str) -> Result<i64, String> {
        let text = self.git(&["--git-dir=repo.git", "show", "-s", "--format=%ct", commit])?;
        text.trim()
            .parse()
            .map_err(|_| format!("git show: no commit time for {commit}: {text:?}"))
    }

    /// Remove every checkout but `keep` (and what interrupted checkouts left).
    fn prune(&self, keep: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(self.checkouts()) else {
            return;
        };
        for entry in entries.flatten() {
            if keep.is_some_and(|k| entry.file_name() == k) {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(
                    "cannot remove the old checkout {}: {e}",
                    entry.path().display()
                );
            }
        }
    }

    /// One look at the repository: fetch, and apply the commit if it is new and good.
    fn sync(&self, desired: &Mutex<DesiredSet>, refused: Option<&(String, String)>) -> Outcome {
        let reference = self.options.reference.as_deref().unwrap_or("HEAD");
        if let Err(e) = self.git(&[
            "--git-dir=repo.git",
            "fetch",
            "--quiet",
            "--no-tags",
            "--depth=1",
            &self.options.url,
            reference,
        ]) {
            return Outcome::Failed(e);
        }
        let commit = match self.git(&[
            "--git-dir=repo.git",
            "rev-parse",
            "--verify",
            "FETCH_HEAD^{commit}",
        ]) {
            Ok(c) => c.trim().to_owned(),
            Err(e) => return Outcome::Failed(e),
        };
        let time = match self.commit_time(&commit) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e),
        };
        let revision = berth_state::Revision { commit, time };
        if self.applied().is_some_and(|a| a.commit == revision.commit) {
            return Outcome::Unchanged;
        }
        if let Some((commit, message)) = refused
            && *commit == revision.commit
        {
            return Outcome::Refused {
                commit: commit.clone(),
                message: message.clone(),
            };
        }
        match self.apply(&revision, desired) {
            Ok(()) => Outcome::Applied(revision),
            Err(problem) => Outcome::Refused {
                message: format!("commit {}: {problem}", revision.commit),
                commit: revision.commit,
            },
        }
    }

    /// Verify, check out, validate and swap in `revision`.
    fn apply(
        &self,
        revision: &berth_state::Revision,
        desired: &Mutex<DesiredSet>,
    ) -> Result<(), String> {
        let commit = revision.commit.as_str();
        match &self.verify {
            None => {}
            Some(verify) => {
                let allowed;
                let mut args = vec!["--git-dir=repo.git"];
                if let Verify::Ssh(file) = verify {
                    allowed = format!("gpg.ssh.allowedSignersFile={}", file.display());
                    args.extend(["-c", &allowed]);
                }
                args.extend(["verify-commit", commit]);
                if let Err(e) = self.git(&args) {
                    let file = self.options.verify.as_deref().unwrap_or(Path::new("-"));
                    return Err(format!(
                        "not signed by a key of --git-verify {} (unsigned, or signed by \
                         another key), refused: {e}",
                        file.display()
                    ));
                }
            }
        }
        let checkout = self.checkouts().join(commit);
        let fresh = self.checkouts().join(format!(".new-{commit}"));
        if !checkout.is_dir() {
            let _ = std::fs::remove_dir_all(&fresh);
            self.check_out(commit, &fresh)?;
            std::fs::rename(&fresh, &checkout)
                .map_err(|e| format!("cannot rename {} into place: {e}", fresh.display()))?;
        }
        if let Err(problem) = validate(&checkout, &self.options.path) {
            let _ = std::fs::remove_dir_all(&checkout);
            return Err(problem);
        }
        // The swap and the set's revision change together, under the set's lock:
        // a rescan reads either the old tree and commit or the new ones.
        let Ok(mut set) = desired.lock() else {
            return Err("the desired set is poisoned".to_owned());
        };
        let link = self.dir.join(".current.new");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("checkouts").join(commit), &link)
            .and_then(|()| std::fs::rename(&link, self.current()))
            .map_err(|e| format!("cannot swap {} in: {e}", self.current().display()))?;
        set.swapped(revision.clone());
        drop(set);
        // Keeps the commit's objects from any gc.
        if let Err(e) = self.git(&[
            "--git-dir=repo.git",
            "update-ref",
            "refs/berth/applied",
            commit,
        ]) {
            tracing::warn!("{e}");
        }
        self.prune(Some(commit));
        Ok(())
    }

    /// Write the tree of `commit` into `dir` (new), with a throw-away index.
    fn check_out(&self, commit: &str, dir: &Path) -> Result<(), String> {
        DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let index = self.dir.join(".index.new");
        let _ = std::fs::remove_file(&index);
        let git_dir = format!("--git-dir={}", self.repo().display());
        let work_tree = format!("--work-tree={}", dir.display());
        let with_index = |args: &[&str]| {
            let mut command = self.command("git");
            command
                .args([git_dir.as_str(), work_tree.as_str()])
                .args(args)
                .env("GIT_INDEX_FILE", &index)
                .current_dir(dir);
            run(&mut command).map_err(|e| format!("git {}: {e}", args[0]))
        };
        let result = with_index(&["read-tree", commit])
            .and_then(|_| with_index(&["checkout-index", "--all", "--force"]));
        let _ = std::fs::remove_file(&index);
        result.map(|_| ())
    }
}

/// The whole revision must be usable: the served directory exists, nothing in
/// it can be written by others or leads out of the checkout, and every manifest
/// under it parses and validates with no name used twice (what `berth validate`
/// checks). The problems name files relative to the repository's top.
fn validate(checkout: &Path, path: &Path) -> Result<(), String> {
    let dir = checkout.join(path);
    if !dir.is_dir() {
        return Err(format!(
            "the commit has no directory {} (--git-path)",
            path.display()
        ));
    }
    let top =
        std::fs::canonicalize(checkout).map_err(|e| format!("{}: {e}", checkout.display()))?;
    tighten(&top, &top)?;
    let relative = |file: &Path| {
        file.strip_prefix(checkout)
            .unwrap_or(file)
            .display()
            .to_string()
    };
    let (unreadable, parsed) = crate::validate::parse_paths(&[dir]);
    let problems: Vec<String> = unreadable
        .iter()
        .chain(parsed.iter().flat_map(|f| &f.diagnostics))
        .map(|d| {
            format!(
                "{}:{}:{}: {}",
                relative(&d.file),
                d.line,
                d.column,
                d.message
            )
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    let mut text = problems[..problems.len().min(SHOWN)].join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    Err(format!("nothing of it is applied: {text}"))
}

/// Take group and other write away from everything under `dir` (git honours the
/// umask, which may allow it), as the desired set's trust checks want; refuse a
/// symlink that leads out of the checkout (it would read a host file).
fn tighten(top: &Path, dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            let inside = std::fs::canonicalize(&path).is_ok_and(|to| to.starts_with(top));
            if !inside {
                return Err(format!(
                    "{}: a symlink that leads out of the repository (or nowhere); nothing of \
                     the commit is applied",
                    path.strip_prefix(top).unwrap_or(&path).display()
                ));
            }
            continue;
        }
        let mode = std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777;
        if mode & 0o022 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o022))
                .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        }
        if meta.is_dir() {
            tighten(top, &path)?;
        }
    }
    Ok(())
}

/// Run a command to its end (or [`GIT_TIMEOUT`]); its stdout, or its stderr.
fn run(command: &mut Command) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + GIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() > deadline => {
                // Our own child, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("no answer within {GIT_TIMEOUT:?}; stopped"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for it: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status? {
        s if s.success() => Ok(stdout),
        s => {
            let text = stderr.trim();
            Err(if text.is_empty() {
                format!("{s}")
            } else {
                text.replace('\n', " / ")
            })
        }
    }
}

/// Set the Git source up (a missing `git` is an error here, at start) and start
/// following the repository. When the daemon has no checkout to serve yet, the
/// receiver answers once the first good commit is in place (or the source
/// stops): until then nothing is desired, nor is anything to be reconciled.
pub async fn start(
    ctx: &Context,
    options: Options,
    rescan: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<oneshot::Receiver<()>>> {
    let state_dir = ctx.runtime.state_dir().to_owned();
    let (git, applied) =
        tokio::task::spawn_blocking(move || Git::setup(options, &state_dir)).await??;
    let (tell, wait) = match applied {
        Some(revision) => {
            if let Ok(mut set) = ctx.desired.lock() {
                set.swapped(revision.clone());
            }
            ctx.health
                .update_source(|s| s.revision = Some(to_health(&revision)));
            (None, None)
        }
        None => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
    };
    tokio::spawn(follow(ctx.clone(), Arc::new(git), rescan, tell, stop));
    Ok(wait)
}

fn to_health(revision: &berth_state::Revision) -> crate::health::Revision {
    crate::health::Revision {
        commit: revision.commit.clone(),
        time: revision.time,
    }
}

/// Fetch every interval; after a failure, sooner at first, then less often.
async fn follow(
    ctx: Context,
    git: Arc<Git>,
    rescan: Arc<Notify>,
    mut first: Option<oneshot::Sender<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = git.options.interval;
    let mut failures: u32 = 0;
    let mut refused: Option<(String, String)> = None;
    let mut last_failure: Option<String> = None;
    loop {
        let outcome = {
            let (git, desired, refused) = (git.clone(), ctx.desired.clone(), refused.clone());
            tokio::task::spawn_blocking(move || git.sync(&desired, refused.as_ref())).await
        };
        let outcome =
            outcome.unwrap_or_else(|e| Outcome::Failed(format!("the sync task failed: {e}")));
        let now = unix_now();
        let outcome_applied = matches!(outcome, Outcome::Applied(_));
        match outcome {
            Outcome::Unchanged | Outcome::Applied(_) => {
                failures = 0;
                last_failure = None;
                if let Outcome::Applied(revision) = &outcome {
                    refused = None;
                    rescan.notify_one();
                    ctx.event(
                        "-",
                        "RevisionApplied",
                        &format!(
                            "commit {} of {} ({}) applied",
                            revision.commit,
                            redact(&git.options.url),
                            git.options.reference.as_deref().unwrap_or("HEAD"),
                        ),
                    );
                    ctx.health
                        .update_source(|s| s.revision = Some(to_health(revision)));
                }
                ctx.health.update_source(|s| {
                    s.last_sync = Some(SyncResult {
                        at: now,
                        ok: true,
                        message: None,
                    })
                });
            }
            Outcome::Refused { commit, message } => {
                failures = 0;
                last_failure = None;
                if refused.as_ref().is_none_or(|(c, _)| *c != commit) {
                    tracing::error!("{message}");
                    ctx.event("-", "InvalidRevision", &message);
                }
                failed(&ctx, now, &message);
                refused = Some((commit, message));
            }
            Outcome::Failed(message) => {
                failures = failures.saturating_add(1);
                let meanwhile = match ctx.health.source().revision {
                    Some(_) => "the last good commit keeps running",
                    None => "nothing is applied until a fetch succeeds",
                };
                let message = format!(
                    "cannot fetch {} from {}: {message}; {meanwhile}",
                    git.options.reference.as_deref().unwrap_or("HEAD"),
                    redact(&git.options.url)
                );
                if last_failure.as_ref() != Some(&message) {
                    tracing::error!("{message}");
                }
                ctx.event("-", "FetchFailed", &message);
                failed(&ctx, now, &message);
                last_failure = Some(message);
            }
        }
        if outcome_applied && let Some(first) = first.take() {
            let _ = first.send(());
        } else if !outcome_applied && first.is_some() {
            ctx.notify.up_without_source();
        }
        let wait = match failures {
            0 => interval,
            n => interval
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_CAP.max(interval)),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

fn failed(ctx: &Context, at: i64, message: &str) {
    ctx.health.update_source(|s| {
        let result = SyncResult {
            at,
            ok: false,
            message: Some(message.to_owned()),
        };
        s.last_sync = Some(result.clone());
        s.last_error = Some(result);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_never_shown() {
        assert_eq!(
            redact("https://tok@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(
            redact("https://u:p@w@example.com:443/r.git"),
            "https://***@example.com:443/r.git"
        );
        assert_eq!(
            redact("ssh://git@example.com/r.git"),
            "ssh://git@example.com/r.git"
        );
        assert_eq!(
            redact("ssh://git:pw@example.com/r.git"),
            "ssh://***@example.com/r.git"
        );
        assert_eq!(redact("/srv/repo.git"), "/srv/repo.git");
        assert_eq!(
            redact("file:///srv/a@b/repo.git"),
            "file:///srv/a@b/repo.git"
        );
    }

    #[test]
    fn a_git_path_must_stay_inside_the_repository() {
        let new = |path: &str| {
            Options::new(
                "/nonexistent".into(),
                None,
                Some(path.into()),
                Duration::from_secs(1),
                None,
                None,
            )
        };
        assert!(new("deploy/fleet").is_ok());
        assert!(new("../etc").is_err());
        assert!(new("/etc").is_err());
        assert_eq!(
            new("apps").unwrap().manifest_dir(Path::new("/s")),
            Path::new("/s/git/current/apps")
        );
    }

    #[test]
    fn a_revision_with_one_bad_manifest_is_refused_naming_the_file_and_line() {
        let top = tempfile::tempdir().unwrap();
        let apps = top.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        std::fs::write(
            apps.join("good.yaml"),
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: a\nspec:\n  command: [/bin/true]\n",
        )
        .unwrap();
        assert_eq!(validate(top.path(), Path::new("apps")), Ok(()));
        std::fs::write(
            apps.join("bad.yaml"),
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: b\nspec:\n  comand: [/bin/true]\n",
        )
        .unwrap();
        let err = validate(top.path(), Path::new("apps")).unwrap_err();
        assert!(err.contains("apps/bad.yaml:6:3"), "{err}");
        assert!(validate(top.path(), Path::new("other")).is_err());
        std::fs::remove_file(apps.join("bad.yaml")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", apps.join("host.yaml")).unwrap();
        let err = validate(top.path(), Path::new("apps")).unwrap_err();
        assert!(err.contains("leads out"), "{err}");
    }
}
