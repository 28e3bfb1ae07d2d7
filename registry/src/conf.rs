//! `registries.conf`, version 2 (containers-registries.conf(5)), as Podman reads
//! it: `[[registry]]` tables with `location` (or `prefix`), `insecure` and
//! `blocked`. Other keys (search registries, short-name aliases) mean nothing to
//! berth, which has no short names, and are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// Where Podman, Buildah and Skopeo read it.
pub const DEFAULT_PATH: &str = "/etc/containers/registries.conf";

/// The registries.conf in force.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    registries: Vec<Registry>,
}

/// What registries.conf says of one registry (or namespace in it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Registry {
    /// `host[:port][/path]`.
    pub location: String,
    /// Matched against references instead of `location` when set.
    pub prefix: Option<String>,
    /// Plain HTTP, or HTTPS without certificate checks.
    pub insecure: bool,
    /// Pulls from it are refused.
    pub blocked: bool,
    /// Read so that a file with mirrors is accepted; berth does not use them yet.
    #[serde(rename = "mirror")]
    mirrors: Vec<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct File {
    registry: Vec<Registry>,
}

impl RegistriesConf {
    /// Read `path`, or `/etc/containers/registries.conf` when `None`; the default
    /// file may be missing (no settings), a file named explicitly may not.
    pub fn load(path: Option<&Path>) -> Result<RegistriesConf, Error> {
        let (path, required) = match path {
            Some(path) => (path.to_owned(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistriesConf::default());
            }
            Err(e) => {
                return Err(Error::Config {
                    path,
                    message: format!("cannot read it: {e}"),
                });
            }
        };
        Self::parse(&text).map_err(|message| Error::Config { path, message })
    }

    pub fn parse(text: &str) -> Result<RegistriesConf, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        for registry in &file.registry {
            if registry.location.is_empty() && registry.prefix.is_none() {
                return Err("a [[registry]] has neither location nor prefix".to_owned());
            }
        }
        Ok(RegistriesConf {
            registries: file.registry,
        })
    }

    /// The entry for `registry/repository`: the one whose prefix (or location)
    /// matches it longest, on a `/` boundary, as Podman picks it.
    pub fn find(&self, registry: &str, repository: &str) -> Option<&Registry> {
        let name = format!("{registry}/{repository}");
        self.registries
            .iter()
            .filter(|r| {
                let key = r.prefix.as_deref().unwrap_or(&r.location);
                name == key || name.starts_with(&format!("{}/", key.trim_end_matches('/')))
            })
            .max_by_key(|r| r.prefix.as_deref().unwrap_or(&r.location).len())
            .inspect(|r| {
                if !r.mirrors.is_empty() {
                    tracing::warn!(registry = %r.location, "registries.conf names mirrors; berth does not use mirrors yet and pulls from the registry itself");
                }
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "registry.example"
blocked = true

[[registry]]
prefix = "registry.example/ok"
location = "registry.example/ok"

[[registry.mirror]]
location = "mirror.example"
"#;

    #[test]
    fn the_longest_matching_location_or_prefix_wins() {
        let conf = RegistriesConf::parse(CONF).unwrap();
        let local = conf.find("127.0.0.1:5000", "busybox").unwrap();
        assert!(local.insecure && !local.blocked);
        assert!(conf.find("registry.example", "team/app").unwrap().blocked);
        assert!(!conf.find("registry.example", "ok/app").unwrap().blocked);
        assert!(conf.find("127.0.0.1:50001", "busybox").is_none());
        assert!(conf.find("docker.io", "library/alpine").is_none());
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it_and_a_missing_default_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, "[[registry]]\ninsecure = \"yes\"\n").unwrap();
        let e = RegistriesConf::load(Some(&path)).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        let e = RegistriesConf::load(Some(&dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }
}
