//! The desired set: every valid container document in the manifest directory,
//! by name. A file that exists but cannot be used (broken, empty, refused,
//! unreadable) never takes a container away: it keeps the containers it last
//! described, each marked with the problem (`InvalidManifest`). A name whose
//! definition is gone stays desired for a grace period, so that a file briefly
//! missing (an editor's or `git`'s swap, `mv` away and back) costs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_manifests::{Container, Diagnostic, Position};
use sha2::{Digest, Sha256};

/// What is desired of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The last good spec.
    pub container: Container,
    /// The current problems of its file or definition, `FILE:LINE:COLUMN: message`.
    pub problems: Vec<String>,
    /// Its `spec.dependsOn` names a container no manifest defines, or is part of
    /// a cycle: it is not started (what runs keeps running). Also in `problems`.
    pub blocked: Option<String>,
}

/// One container of a file, and whether the file's current content still says it.
#[derive(Debug, Clone)]
struct Kept {
    container: Container,
    /// Read from the file as it is now; false for a last good spec kept while
    /// the file cannot be used.
    current: bool,
}

#[derive(Debug, Default)]
struct FileState {
    /// sha256 of the content last read; changes are detected by content, not mtime.
    hash: Option<[u8; 32]>,
    containers: Vec<Kept>,
    diagnostics: Vec<Diagnostic>,
}

#[derive(Debug)]
pub struct DesiredSet {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Problems that belong to no container (a new file that never parsed).
    orphan_problems: Vec<String>,
    resolved: BTreeMap<String, Desired>,
    /// How long a name whose definition went away stays desired.
    grace: Duration,
    /// Names whose definition went away, and when they stop being desired.
    leaving: BTreeMap<String, Instant>,
    /// This device's labels (device.rs), which `metadata.selector` must match.
    device: BTreeMap<String, String>,
    /// Valid definitions whose selector does not match this device: not desired
    /// here, listed by `berth get --all` as `NotSelected`.
    not_selected: BTreeMap<String, Desired>,
    /// Git: the commit the directory holds since its last swap, and the one the
    /// last good rescan read (what `resolved` came from). Both change under the
    /// set's lock, so a reconcile never pairs a spec with the wrong commit.
    swapped_in: Option<berth_state::Revision>,
    revision: Option<berth_state::Revision>,
}

/// Why a rescan could not look at the directory; nothing desired changes then.
#[derive(Debug)]
pub struct ScanError(pub String);

impl DesiredSet {
    pub fn new(dir: &Path, grace: Duration) -> DesiredSet {
        DesiredSet {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            orphan_problems: Vec::new(),
            resolved: BTreeMap::new(),
            grace,
            leaving: BTreeMap::new(),
            device: BTreeMap::new(),
            not_selected: BTreeMap::new(),
            swapped_in: None,
            revision: None,
        }
    }

    /// Desire only what selects a device with `labels` (without this, a device
    /// with no labels: only manifests without a selector, or with one that an
    /// empty label set meets).
    pub fn select_for(&mut self, labels: BTreeMap<String, String>) {
        self.device = labels;
    }

    /// Valid definitions this device does not run, by name.
    pub fn not_selected(&self) -> &BTreeMap<String, Desired> {
        &self.not_selected
    }

    /// The Git source swapped the directory to `revision` (with this set locked).
    pub fn swapped(&mut self, revision: berth_state::Revision) {
        self.swapped_in = Some(revision);
    }

    /// The commit the desired specs were read from, for a Git source.
    pub fn revision(&self) -> Option<&berth_state::Revision> {
        self.revision.as_ref()
    }

    /// Start from the last good specs a previous daemon applied (kept in the state
    /// store): a file that cannot be used now keeps them, and a file that is gone
    /// prunes them only after the grace period, as if this daemon had never stopped.
    pub fn seed(&mut self, containers: impl IntoIterator<Item = Container>) {
        for container in containers {
            self.resolved.insert(
                container.name.clone(),
                Desired {
                    container: container.clone(),
                    problems: Vec::new(),
                    blocked: None,
                },
            );
            self.files
                .entry(container.source.file.clone())
                .or_default()
                .containers
                .push(Kept {
                    container,
                    current: false,
                });
        }
    }

    pub fn get(&self, name: &str) -> Option<&Desired> {
        self.resolved.get(name)
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.resolved.keys().cloned().collect()
    }

    /// Problems not tied to any desired container.
    pub fn orphan_problems(&self) -> &[String] {
        &self.orphan_problems
    }

    /// When the next name whose definition went away stops being desired.
    pub fn next_prune(&self) -> Option<Instant> {
        self.leaving.values().min().copied()
    }

    /// Read the whole directory again. Returns the names whose desired state
    /// changed (added, removed, new spec or new problems). `Ok(true)` in the
    /// second field asks for another rescan soon (a file vanished mid-read).
    pub fn rescan(&mut self) -> Result<(BTreeSet<String>, bool), ScanError> {
        let dir = &self.dir;
        // The directory itself may be a symlink (git-sync, a ConfigMap's `..data`):
        // the one symlink that is followed without checking the link.
        let meta = std::fs::metadata(dir)
            .map_err(|e| ScanError(format!("manifest directory {}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(ScanError(format!(
                "manifest directory {} is not a directory",
                dir.display()
            )));
        }
        if let Some(why) = unsafe_mode(&meta) {
            return Err(ScanError(format!(
                "refusing manifest directory {}: it {why}; fix with chmod go-w / chown root",
                dir.display()
            )));
        }
        let (listed, errors) = berth_manifests::manifest_files(dir);
        if let Some((path, err)) = errors.first() {
            // An unreadable subdirectory could hide files: deleting their containers
            // on its account would be wrong, so nothing changes.
            return Err(ScanError(format!("cannot read {}: {err}", path.display())));
        }
        let mut trust = DirTrust::new(dir);
        let mut again = false;
        let mut files = BTreeMap::new();
        for path in listed {
            let mut state = match self.files.remove(&path) {
                Some(state) => state,
                None => self.returning(&path),
            };
            let read = match trust.refusal(&path) {
                Some(why) => Read::Problem(why),
                None => read_checked(&path),
            };
            match read {
                Read::Bytes(bytes) => {
                    let hash: [u8; 32] = Sha256::digest(&bytes).into();
                    if state.hash != Some(hash) {
                        state.hash = Some(hash);
                        let parsed = berth_manifests::parse_bytes(&path, &bytes);
                        apply_parse(&mut state, parsed);
                    }
                }
                Read::Vanished => {
                    // Between the listing and the read: not a deletion (yet).
                    again = true;
                }
                Read::Problem(message) => cannot_use(&mut state, &path, message),
            }
            files.insert(path, state);
        }
        // A file gone from a directory that others could write to may have been
        // removed by them: that is no removal of root's.
        for (path, mut state) in std::mem::take(&mut self.files) {
            if let Some(why) = trust.refusal(&path) {
                cannot_use(&mut state, &path, why);
                files.insert(path, state);
            }
        }
        self.files = files;
        self.revision.clone_from(&self.swapped_in);
        Ok((self.resolve(), again))
    }

    /// The state of a file not seen in the last scan. One back within the grace of
    /// the names it defined starts from their last good specs, so that coming back
    /// unusable (a broken file moved away and back) keeps them, as any file that
    /// cannot be used does.
    fn returning(&self, path: &Path) -> FileState {
        let containers = self
            .leaving
            .keys()
            .filter_map(|name| self.resolved.get(name))
            .filter(|desired| desired.container.source.file == path)
            .map(|desired| Kept {
                container: desired.container.clone(),
                current: false,
            })
            .collect();
        FileState {
            containers,
            ..FileState::default()
        }
    }

    /// Rebuild the name → desired map; returns the names that changed.
    fn resolve(&mut self) -> BTreeSet<String> {
        let mut resolved: BTreeMap<String, Desired> = BTreeMap::new();
        let mut orphans = Vec::new();
        // Files in path order: the lexicographically first definition of a name wins.
        for state in self.files.values() {
            let mut shown = vec![false; state.diagnostics.len()];
            for kept in &state.containers {
                let container = &kept.container;
                let problems = problems_of(state, kept, &mut shown);
                match resolved.get_mut(&container.name) {
                    Some(first) => first.problems.push(format!(
                        "{}:{}:{}: metadata.name: {:?} is also defined here; that definition is ignored",
                        container.source.file.display(),
                        container.source.line,
                        container.source.column,
                        container.name
                    )),
                    None => {
                        resolved.insert(
                            container.name.clone(),
                            Desired {
                                container: container.clone(),
                                problems,
                                blocked: None,
                            },
                        );
                    }
                }
            }
            orphans.extend(
                state
                    .diagnostics
                    .iter()
                    .zip(shown)
                    .filter(|(_, shown)| !shown)
                    .map(|(d, _)| d.to_string()),
            );
        }
        // Names are unique across every file, selected here or not; then what
        // selects another device is set aside. Its problems are reported all the same.
        let mut not_selected = BTreeMap::new();
        for (name, desired) in &resolved {
            let selects = desired
                .container
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&self.device));
            if !selects {
                orphans.extend(desired.problems.iter().cloned());
                not_selected.insert(name.clone(), desired.clone());
            }
        }
        resolved.retain(|name, _| !not_selected.contains_key(name));
        self.not_selected = not_selected;
        self.keep_leaving(&mut resolved);
        check_order(&mut resolved, &self.not_selected);
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (name, desired) in &resolved {
            if self.resolved.get(name) != Some(desired) {
                changed.insert(name.clone());
            }
        }
        for name in self.resolved.keys() {
            if !resolved.contains_key(name) {
                changed.insert(name.clone());
            }
        }
        self.resolved = resolved;
        self.orphan_problems = orphans;
        changed
    }

    /// Names desired before and defined nowhere now stay desired until their
    /// grace period ends; a name defined again is no longer leaving. A name whose
    /// selector no longer matches this device is not leaving but gone at once: its
    /// manifest is there and says so, no swap of files in progress.
    fn keep_leaving(&mut self, resolved: &mut BTreeMap<String, Desired>) {
        let now = Instant::now();
        let not_selected = &self.not_selected;
        self.leaving
            .retain(|name, _| !resolved.contains_key(name) && !not_selected.contains_key(name));
        for (name, before) in &self.resolved {
            if resolved.contains_key(name) || not_selected.contains_key(name) {
                continue;
            }
            let until = *self.leaving.entry(name.clone()).or_insert(now + self.grace);
            if until <= now {
                self.leaving.remove(name);
                continue;
            }
            let file = before.container.source.file.display();
            let mut desired = before.clone();
            desired.problems = vec![format!(
                "{file}: no longer defines {name} (removed?); it keeps running and is \
                 stopped and destroyed if it is still gone after the prune grace of {:?}",
                self.grace
            )];
            resolved.insert(name.clone(), desired);
        }
    }
}

/// `spec.dependsOn` across every file, as `berth validate` checks it: a name no
/// manifest defines (here or for other devices) and a cycle block a container's
/// start, shown as a problem of it.
fn check_order(resolved: &mut BTreeMap<String, Desired>, not_selected: &BTreeMap<String, Desired>) {
    let all = resolved
        .values()
        .chain(not_selected.values())
        .map(|d| &d.container);
    let problems = crate::order::dependency_problems(all);
    for (name, desired) in resolved.iter_mut() {
        desired.blocked = problems.get(name).cloned();
        if let Some(problem) = &desired.blocked
            && !desired.problems.contains(problem)
        {
            desired.problems.push(problem.clone());
        }
    }
}

/// The problems a container of `state` shows: those of the whole file, and those
/// of its own document; a last good spec kept from a document that no longer
/// reads also shows the other documents' problems (it may have moved or broken).
fn problems_of(state: &FileState, kept: &Kept, shown: &mut [bool]) -> Vec<String> {
    let document = kept.container.source.document;
    let own = |d: &Diagnostic| d.document.is_none_or(|at| at == document);
    let has_own = state
        .diagnostics
        .iter()
        .any(|d| d.document == Some(document));
    let mut problems = Vec::new();
    for (diagnostic, shown) in state.diagnostics.iter().zip(shown.iter_mut()) {
        if own(diagnostic) || (!kept.current && !has_own) {
            problems.push(diagnostic.to_string());
            *shown = true;
        }
    }
    problems
}

/// Keep the last good containers of names whose documents broke; take the new
/// good ones as they are. A file that parses to no container at all (empty, only
/// comments) cannot be used either: what it described is kept.
fn apply_parse(state: &mut FileState, parsed: berth_manifests::ParsedFile) {
    let mut diagnostics = parsed.diagnostics;
    if parsed.containers.is_empty() && diagnostics.is_empty() {
        diagnostics.push(Diagnostic::new(
            &parsed.path,
            Position::START,
            "the file describes no container (empty?); the containers it described \
             keep running until the file is deleted",
        ));
    }
    let mut containers: Vec<Kept> = parsed
        .containers
        .into_iter()
        .map(|container| Kept {
            container,
            current: true,
        })
        .collect();
    if !diagnostics.is_empty() {
        for old in &state.containers {
            if !containers
                .iter()
                .any(|c| c.container.name == old.container.name)
            {
                containers.push(Kept {
                    container: old.container.clone(),
                    current: false,
                });
            }
        }
    }
    state.containers = containers;
    state.diagnostics = diagnostics;
}

/// The file cannot be read or is refused: keep every container it last described.
fn cannot_use(state: &mut FileState, path: &Path, message: String) {
    state.hash = None;
    state.diagnostics = vec![Diagnostic::new(path, Position::START, message)];
    for kept in &mut state.containers {
        kept.current = false;
    }
}

enum Read {
    Bytes(Vec<u8>),
    Vanished,
    Problem(String),
}

/// Read a manifest, refusing (like sshd's StrictModes) one that users other than
/// root or the daemon's own could have written: a manifest is code that runs as
/// root. A symlink must be owned by root too, as well as what it points to.
fn read_checked(path: &Path) -> Read {
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Vanished,
        Err(e) => return Read::Problem(format!("cannot read: {e}")),
    };
    if link.file_type().is_symlink()
        && let Some(why) = unsafe_owner(&link)
    {
        return Read::Problem(format!(
            "refused: the symlink {why}; fix with chown -h root"
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Vanished,
        Err(e) => return Read::Problem(format!("cannot read: {e}")),
    };
    if let Some(why) = unsafe_mode(&meta) {
        return Read::Problem(format!(
            "refused: it {why}; fix with chmod go-w / chown root"
        ));
    }
    if meta.len() > berth_manifests::MAX_FILE_BYTES {
        return Read::Problem(format!(
            "the file is larger than {} KiB, the limit for a manifest",
            berth_manifests::MAX_FILE_BYTES >> 10
        ));
    }
    match std::fs::read(path) {
        Ok(bytes) => Read::Bytes(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Read::Vanished,
        Err(e) => Read::Problem(format!("cannot read: {e}")),
    }
}

/// The ownership and mode rule for every directory between the manifest
/// directory and a file, each looked at once per rescan.
struct DirTrust<'a> {
    root: &'a Path,
    verdicts: BTreeMap<PathBuf, Option<String>>,
}

impl<'a> DirTrust<'a> {
    fn new(root: &'a Path) -> DirTrust<'a> {
        DirTrust {
            root,
            verdicts: BTreeMap::new(),
        }
    }

    /// Why a file at `path` cannot be trusted for where it lies, if it cannot.
    /// Directories that no longer exist do not count: removing one takes root.
    fn refusal(&mut self, path: &Path) -> Option<String> {
        let below = path.strip_prefix(self.root).ok()?;
        let mut dir = self.root.to_owned();
        let parents: Vec<_> = below.parent()?.components().collect();
        for part in parents {
            dir.push(part);
            let verdict = self.verdicts.entry(dir.clone()).or_insert_with(|| {
                // Never followed: a symlinked subdirectory is not walked anyway.
                let meta = std::fs::symlink_metadata(&dir).ok()?;
                unsafe_mode(&meta).map(|why| {
                    format!(
                        "refused: its directory {} {why}; fix with chmod go-w / chown root",
                        dir.display()
                    )
                })
            });
            if verdict.is_some() {
                return verdict.clone();
            }
        }
        None
    }
}

fn unsafe_owner(meta: &std::fs::Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    (meta.uid() != 0 && meta.uid() != me)
        .then(|| format!("is owned by uid {}, not root", meta.uid()))
}

fn unsafe_mode(meta: &std::fs::Metadata) -> Option<String> {
    if let Some(why) = unsafe_owner(meta) {
        return Some(why);
    }
    let mode = meta.mode();
    // A sticky directory writable by others still lets them add files: refuse too.
    if mode & 0o022 != 0 {
        return Some(format!(
            "is writable by group or others (mode {:o})",
            mode & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn doc(name: &str, command: &str) -> String {
        format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  command: [{command}]\n"
        )
    }

    fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn selected_doc(name: &str, group: &str) -> String {
        format!(
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\n  selector:\n    matchLabels: {{group: {group}}}\nspec:\n  command: [/bin/true]\n"
        )
    }

    #[test]
    fn a_manifest_for_other_devices_is_not_desired_and_leaves_at_once() {
        let dir = dir();
        std::fs::write(dir.path().join("cam.yaml"), selected_doc("cam", "cameras")).unwrap();
        std::fs::write(dir.path().join("all.yaml"), doc("all", "/bin/true")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::from_secs(3600));
        set.select_for(BTreeMap::from([("group".to_owned(), "cameras".to_owned())]));
        set.rescan().unwrap();
        assert_eq!(
            set.names(),
            BTreeSet::from(["all".to_owned(), "cam".to_owned()])
        );
        assert!(set.not_selected().is_empty());

        // The selector now names another group: gone without the prune grace.
        std::fs::write(dir.path().join("cam.yaml"), selected_doc("cam", "gates")).unwrap();
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["cam".to_owned()]));
        assert_eq!(set.names(), BTreeSet::from(["all".to_owned()]));
        assert_eq!(set.not_selected().keys().collect::<Vec<_>>(), ["cam"]);
        assert!(set.next_prune().is_none());

        // A selector edit that still selects this device changes no spec hash.
        std::fs::write(dir.path().join("cam.yaml"), selected_doc("cam", "cameras")).unwrap();
        set.rescan().unwrap();
        let before = set.get("cam").unwrap().container.hash.clone();
        let text = selected_doc("cam", "cameras").replace(
            "matchLabels: {group: cameras}",
            "matchExpressions: [{key: group, operator: In, values: [cameras, gates]}]",
        );
        std::fs::write(dir.path().join("cam.yaml"), text).unwrap();
        set.rescan().unwrap();
        assert_eq!(set.get("cam").unwrap().container.hash, before);
    }

    #[test]
    fn a_name_is_defined_once_even_where_one_definition_selects_another_device() {
        let dir = dir();
        std::fs::write(dir.path().join("a.yaml"), selected_doc("web", "gates")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), selected_doc("web", "cameras")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.select_for(BTreeMap::from([("group".to_owned(), "cameras".to_owned())]));
        set.rescan().unwrap();
        assert!(set.names().is_empty());
        let web = &set.not_selected()["web"];
        assert!(
            web.problems[0].contains("also defined here"),
            "{:?}",
            web.problems
        );
        assert!(
            set.orphan_problems()
                .iter()
                .any(|p| p.contains("also defined here")),
            "{:?}",
            set.orphan_problems()
        );
    }

    #[test]
    fn a_broken_edit_keeps_the_last_good_spec_and_says_where() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["web".to_owned()]));
        std::fs::write(
            &file,
            "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\n spec: [\n",
        )
        .unwrap();
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["web".to_owned()]));
        let web = set.get("web").unwrap();
        assert_eq!(web.container.spec.command, ["/bin/a"]);
        assert!(
            web.problems[0].starts_with(&format!("{}:5:", file.display())),
            "{:?}",
            web.problems
        );
        // Unchanged content: nothing to do.
        let (changed, _) = set.rescan().unwrap();
        assert!(changed.is_empty());
        std::fs::write(&file, doc("web", "/bin/b")).unwrap();
        set.rescan().unwrap();
        assert_eq!(set.get("web").unwrap().container.spec.command, ["/bin/b"]);
        assert!(set.get("web").unwrap().problems.is_empty());
    }

    #[test]
    fn deleting_a_file_removes_its_names_but_a_missing_directory_removes_nothing() {
        let dir = dir();
        std::fs::write(dir.path().join("a.yaml"), doc("a", "/bin/a")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), doc("b", "/bin/b")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["b".to_owned()]));
        assert_eq!(set.names(), BTreeSet::from(["a".to_owned()]));
        let gone = dir.path().to_owned();
        drop(dir);
        assert!(
            set.rescan()
                .unwrap_err()
                .0
                .contains(&gone.display().to_string())
        );
        assert_eq!(set.names(), BTreeSet::from(["a".to_owned()]));
    }

    #[test]
    fn the_first_file_wins_a_duplicate_name_and_the_other_is_reported() {
        let dir = dir();
        std::fs::write(dir.path().join("b.yaml"), doc("web", "/bin/b")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        let web = set.get("web").unwrap();
        assert_eq!(web.container.spec.command, ["/bin/a"]);
        assert!(web.problems[0].contains("b.yaml:4:9"), "{:?}", web.problems);
    }

    #[test]
    fn files_writable_by_others_are_refused() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        assert!(set.get("web").is_none());
        assert!(
            set.orphan_problems()[0].contains("writable by group or others (mode 666)"),
            "{:?}",
            set.orphan_problems()
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            set.rescan()
                .unwrap_err()
                .0
                .contains("refusing manifest directory")
        );
    }

    fn two_docs(first: &str, second: &str) -> String {
        format!("{first}---\n{second}")
    }

    #[test]
    fn an_empty_file_keeps_what_it_described() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        for empty in ["", "\n", "# nothing here\n", "---\n"] {
            std::fs::write(&file, empty).unwrap();
            set.rescan().unwrap();
            let web = set.get("web").expect("kept");
            assert_eq!(web.container.spec.command, ["/bin/a"]);
            assert!(
                web.problems[0].contains("describes no container"),
                "{:?}",
                web.problems
            );
        }
    }

    #[test]
    fn a_broken_file_moved_away_and_back_still_keeps_what_it_described() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::from_millis(300));
        set.rescan().unwrap();
        std::fs::write(&file, "").unwrap();
        set.rescan().unwrap();
        let away = dir.path().join(".away");
        std::fs::rename(&file, &away).unwrap();
        set.rescan().unwrap();
        std::fs::rename(&away, &file).unwrap();
        set.rescan().unwrap();
        let web = set.get("web").expect("kept");
        assert_eq!(web.container.spec.command, ["/bin/a"]);
        assert!(
            web.problems[0].contains("describes no container"),
            "{:?}",
            web.problems
        );
        assert!(set.next_prune().is_none(), "it is to be pruned");
        std::thread::sleep(Duration::from_millis(350));
        set.rescan().unwrap();
        assert!(set.get("web").is_some(), "pruned though its file is back");
    }

    #[test]
    fn a_removed_file_prunes_only_after_the_grace_and_a_return_cancels_it() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::from_millis(300));
        set.rescan().unwrap();
        std::fs::remove_file(&file).unwrap();
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["web".to_owned()]));
        let web = set.get("web").expect("still desired within the grace");
        assert!(web.problems[0].contains("no longer defines web"), "{web:?}");
        assert!(set.next_prune().is_some());
        // Back within the grace: nothing leaves.
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        set.rescan().unwrap();
        assert!(set.get("web").unwrap().problems.is_empty());
        assert!(set.next_prune().is_none());
        // Gone for longer than the grace: no longer desired.
        std::fs::remove_file(&file).unwrap();
        set.rescan().unwrap();
        assert!(set.get("web").is_some());
        std::thread::sleep(Duration::from_millis(350));
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed, BTreeSet::from(["web".to_owned()]));
        assert!(set.get("web").is_none());
        assert!(set.next_prune().is_none());
    }

    #[test]
    fn a_broken_second_document_keeps_its_spec_and_the_first_shows_no_problem() {
        let dir = dir();
        let file = dir.path().join("pair.yaml");
        std::fs::write(
            &file,
            two_docs(&doc("one", "/bin/a"), &doc("two", "/bin/b")),
        )
        .unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        let broken = doc("two", "/bin/b").replace("command", "comand");
        std::fs::write(&file, two_docs(&doc("one", "/bin/a2"), &broken)).unwrap();
        set.rescan().unwrap();
        let one = set.get("one").unwrap();
        assert_eq!(one.container.spec.command, ["/bin/a2"]);
        assert!(one.problems.is_empty(), "{:?}", one.problems);
        let two = set.get("two").expect("document 2 keeps its last good spec");
        assert_eq!(two.container.spec.command, ["/bin/b"]);
        assert!(two.problems[0].contains("comand"), "{:?}", two.problems);
    }

    #[test]
    fn seeded_specs_survive_a_file_that_cannot_be_used_and_leave_with_a_gone_one() {
        let dir = dir();
        let web = dir.path().join("web.yaml");
        let db = dir.path().join("db.yaml");
        std::fs::write(&web, doc("web", "/bin/a")).unwrap();
        std::fs::write(&db, doc("db", "/bin/d")).unwrap();
        let mut first = DesiredSet::new(dir.path(), Duration::ZERO);
        first.rescan().unwrap();
        let applied: Vec<Container> = ["web", "db"]
            .iter()
            .map(|n| first.get(n).unwrap().container.clone())
            .collect();
        // The daemon stops; meanwhile one file breaks in every way and one goes.
        std::fs::remove_file(&db).unwrap();
        for broken in [
            "spec: [\n".to_owned(),
            String::new(),
            doc("web", "/bin/a").replace("restartPolicy", "x") + "  restartPolcy: Always\n",
        ] {
            std::fs::write(&web, &broken).unwrap();
            let mut set = DesiredSet::new(dir.path(), Duration::from_secs(60));
            set.seed(applied.clone());
            set.rescan().unwrap();
            let kept = set.get("web").expect("kept from the store");
            assert_eq!(kept.container.spec.command, ["/bin/a"]);
            assert!(!kept.problems.is_empty());
            let leaving = set.get("db").expect("inside the grace");
            assert!(leaving.problems[0].contains("no longer defines db"));
        }
        std::fs::set_permissions(&web, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.seed(applied.clone());
        set.rescan().unwrap();
        assert!(set.get("web").unwrap().problems[0].contains("writable by group or others"));
        assert!(set.get("db").is_none(), "no grace: gone");
    }

    #[test]
    fn a_subdirectory_others_can_write_to_is_refused_and_removals_from_it_do_not_count() {
        let dir = dir();
        let sub = dir.path().join("apps");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(sub.join("web.yaml"), doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(sub.join("evil.yaml"), doc("evil", "/bin/e")).unwrap();
        std::fs::remove_file(sub.join("web.yaml")).unwrap();
        set.rescan().unwrap();
        assert!(set.get("evil").is_none(), "a file in it is not run");
        let web = set.get("web").expect("a removal from it is not a removal");
        assert!(
            web.problems[0].contains("its directory") && web.problems[0].contains("777"),
            "{:?}",
            web.problems
        );
    }

    #[test]
    fn a_symlink_owned_by_another_user_is_refused() {
        let dir = dir();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("web.yaml");
        std::fs::write(&target, doc("web", "/bin/a")).unwrap();
        let link = dir.path().join("web.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        assert!(set.get("web").is_some(), "root's own symlink is followed");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        assert!(set.get("web").is_none());
        assert!(
            set.orphan_problems()[0].contains("the symlink is owned by uid 65534"),
            "{:?}",
            set.orphan_problems()
        );
    }

    #[test]
    fn an_unknown_dependency_or_a_cycle_across_files_blocks_its_members_only() {
        let dir = dir();
        let with =
            |name: &str, deps: &str| format!("{}  dependsOn: [{deps}]\n", doc(name, "/bin/true"));
        std::fs::write(dir.path().join("a.yaml"), with("a", "b")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), with("b", "c")).unwrap();
        std::fs::write(dir.path().join("c.yaml"), doc("c", "/bin/true")).unwrap();
        let mut set = DesiredSet::new(dir.path(), Duration::ZERO);
        set.rescan().unwrap();
        assert!(
            set.names()
                .iter()
                .all(|n| set.get(n).unwrap().blocked.is_none())
        );
        // c now depends on a: a cycle; d names what nothing defines.
        std::fs::write(dir.path().join("c.yaml"), with("c", "a")).unwrap();
        std::fs::write(dir.path().join("d.yaml"), with("d", "nowhere")).unwrap();
        let (changed, _) = set.rescan().unwrap();
        assert_eq!(changed.len(), 4, "{changed:?}");
        for name in ["a", "b", "c"] {
            let desired = set
                .get(name)
                .expect("still desired: what runs keeps running");
            let blocked = desired.blocked.as_deref().unwrap_or_default();
            assert!(
                blocked.ends_with("spec.dependsOn: dependency cycle a -> b -> c -> a"),
                "{blocked}"
            );
            assert!(desired.problems.iter().any(|p| p == blocked), "{desired:?}");
        }
        let d = set.get("d").unwrap();
        assert!(
            d.blocked
                .as_deref()
                .is_some_and(|b| b.contains("\"nowhere\""))
        );
        // Fixed: nothing blocked, no problem left.
        std::fs::write(dir.path().join("c.yaml"), doc("c", "/bin/true")).unwrap();
        std::fs::write(dir.path().join("nowhere.yaml"), doc("nowhere", "/bin/true")).unwrap();
        set.rescan().unwrap();
        for name in set.names() {
            let desired = set.get(&name).unwrap();
            assert!(
                desired.blocked.is_none() && desired.problems.is_empty(),
                "{desired:?}"
            );
        }
    }
}
