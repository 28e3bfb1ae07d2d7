//! Which files of a manifest directory are manifests: the same rule for
//! `berth validate DIR` and for the daemon's watched directory.

use std::path::{Path, PathBuf};

/// Is `name` (a file name, not a path) one berth reads? `*.yaml` and `*.yml`,
/// never hidden files or the leftovers of editors (`.web.yaml.swp`, `web.yaml~`,
/// `#web.yaml#`, `.#web.yaml`).
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.starts_with('#')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Every manifest file under `dir`, sorted by path. Hidden directories (`.git`,
/// Kubernetes' `..data`) are skipped; symlinks to files are followed, symlinks to
/// directories are not (they could loop); a dangling one is listed, so that reading
/// it reports the problem. Errors name the path they happened at.
pub fn manifest_files(dir: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push((current, e));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push((current.clone(), e));
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') {
                    pending.push(path);
                }
            } else if is_manifest_name(name) && (kind.is_file() || kind.is_symlink()) {
                files.push(path);
            }
        }
    }
    files.sort();
    (files, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_leftovers_and_hidden_files_are_not_manifests() {
        for name in ["web.yaml", "web.yml", "a.b.yaml"] {
            assert!(is_manifest_name(name), "{name}");
        }
        for name in [
            ".web.yaml",
            ".web.yaml.swp",
            "web.yaml~",
            "#web.yaml#",
            ".#web.yaml",
            "web.yaml.swp",
            "web.json",
            "4913",
        ] {
            assert!(!is_manifest_name(name), "{name}");
        }
    }

    #[test]
    fn walks_subdirectories_but_not_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("apps")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("..2026_11_29")).unwrap();
        for file in [
            "b.yaml",
            "apps/a.yml",
            ".git/c.yaml",
            "..2026_11_29/d.yaml",
            "notes.txt",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::os::unix::fs::symlink(root.join("b.yaml"), root.join("link.yaml")).unwrap();
        std::os::unix::fs::symlink(root.join("missing"), root.join("dangling.yaml")).unwrap();
        let (files, errors) = manifest_files(root);
        assert!(errors.is_empty());
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["apps/a.yml", "b.yaml", "dangling.yaml", "link.yaml"].map(PathBuf::from)
        );
    }
}
