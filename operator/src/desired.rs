//! The desired set: every valid container document in the manifest directory,
//! by name. A broken edit never takes a container away: its file keeps its last
//! good containers, each marked with the problem (`InvalidManifest`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_manifests::{Container, Diagnostic, Position};
use sha2::{Digest, Sha256};

/// What is desired of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The last good spec.
    pub container: Container,
    /// The current problems of its file or definition, `FILE:LINE:COLUMN: message`.
    pub problems: Vec<String>,
}

#[derive(Debug, Default)]
struct FileState {
    /// sha256 of the content last read; changes are detected by content, not mtime.
    hash: Option<[u8; 32]>,
    /// The last good containers of this file.
    containers: Vec<Container>,
    diagnostics: Vec<Diagnostic>,
}

#[derive(Debug)]
pub struct DesiredSet {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Problems that belong to no container (a new file that never parsed).
    orphan_problems: Vec<String>,
    resolved: BTreeMap<String, Desired>,
}

/// Why a rescan could not look at the directory; nothing desired changes then.
#[derive(Debug)]
pub struct ScanError(pub String);

impl DesiredSet {
    pub fn new(dir: &Path) -> DesiredSet {
        DesiredSet {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            orphan_problems: Vec::new(),
            resolved: BTreeMap::new(),
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

    /// Read the whole directory again. Returns the names whose desired state
    /// changed (added, removed, new spec or new problems). `Ok(true)` in the
    /// second field asks for another rescan soon (a file vanished mid-read).
    pub fn rescan(&mut self) -> Result<(BTreeSet<String>, bool), ScanError> {
        let dir = &self.dir;
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
                "refusing manifest directory {}: {why}; fix with chmod go-w / chown root",
                dir.display()
            )));
        }
        let (listed, errors) = berth_manifests::manifest_files(dir);
        if let Some((path, err)) = errors.first() {
            // An unreadable subdirectory could hide files: deleting their containers
            // on its account would be wrong, so nothing changes.
            return Err(ScanError(format!("cannot read {}: {err}", path.display())));
        }
        let mut again = false;
        let mut files = BTreeMap::new();
        for path in listed {
            let mut state = self.files.remove(&path).unwrap_or_default();
            match read_checked(&path) {
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
                Read::Problem(message) => {
                    state.hash = None;
                    state.diagnostics = vec![Diagnostic::new(&path, Position::START, message)];
                }
            }
            files.insert(path, state);
        }
        self.files = files;
        Ok((self.resolve(), again))
    }

    /// Rebuild the name → desired map; returns the names that changed.
    fn resolve(&mut self) -> BTreeSet<String> {
        let mut resolved: BTreeMap<String, Desired> = BTreeMap::new();
        let mut orphans = Vec::new();
        // Files in path order: the lexicographically first definition of a name wins.
        for state in self.files.values() {
            let problems: Vec<String> = state.diagnostics.iter().map(ToString::to_string).collect();
            if state.containers.is_empty() {
                orphans.extend(problems.iter().cloned());
            }
            for container in &state.containers {
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
                                problems: problems.clone(),
                            },
                        );
                    }
                }
            }
        }
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
}

/// Keep the last good containers of names whose documents broke; take the new
/// good ones as they are.
fn apply_parse(state: &mut FileState, parsed: berth_manifests::ParsedFile) {
    let mut containers = parsed.containers;
    if !parsed.diagnostics.is_empty() {
        for old in &state.containers {
            if !containers.iter().any(|c| c.name == old.name) {
                containers.push(old.clone());
            }
        }
    }
    state.containers = containers;
    state.diagnostics = parsed.diagnostics;
}

enum Read {
    Bytes(Vec<u8>),
    Vanished,
    Problem(String),
}

/// Read a manifest, refusing (like sshd's StrictModes) one that users other than
/// root or the daemon's own could have written: a manifest is code that runs as root.
fn read_checked(path: &Path) -> Read {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Vanished,
        Err(e) => return Read::Problem(format!("cannot read: {e}")),
    };
    if let Some(why) = unsafe_mode(&meta) {
        return Read::Problem(format!("refused: {why}; fix with chmod go-w / chown root"));
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

fn unsafe_mode(meta: &std::fs::Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!("it is owned by uid {}, not root", meta.uid()));
    }
    let mode = meta.mode();
    // A sticky directory writable by others still lets them add files: refuse too.
    if mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by group or others (mode {:o})",
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

    #[test]
    fn a_broken_edit_keeps_the_last_good_spec_and_says_where() {
        let dir = dir();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, doc("web", "/bin/a")).unwrap();
        let mut set = DesiredSet::new(dir.path());
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
        let mut set = DesiredSet::new(dir.path());
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
        let mut set = DesiredSet::new(dir.path());
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
        let mut set = DesiredSet::new(dir.path());
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
}
