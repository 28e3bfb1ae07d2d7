//! Credentials from the files `podman login` and `docker login` write:
//! `{"auths": {"HOST": {"auth": base64("user:pass")}}}`. The first file that
//! has an entry for the registry wins: the one named (`--authfile`,
//! `REGISTRY_AUTH_FILE`), then `/run/containers/0/auth.json`, then
//! `~/.docker/config.json`. Credential helpers are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::Error;

const PODMAN_ROOT: &str = "/run/containers/0/auth.json";

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AuthFile {
    auths: BTreeMap<String, Entry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    auth: Option<String>,
}

/// The files looked at, in order: the named one (which must exist), then the
/// usual places (which may not).
pub(crate) fn auth_files(named: Option<&Path>) -> Vec<(PathBuf, bool)> {
    let mut files = Vec::new();
    if let Some(named) = named {
        files.push((named.to_owned(), true));
    }
    files.push((PathBuf::from(PODMAN_ROOT), false));
    if let Some(home) = std::env::var_os("HOME") {
        files.push((Path::new(&home).join(".docker/config.json"), false));
    }
    files
}

/// The credentials for `registry/repository` and the file they came from, or
/// anonymous.
pub(crate) fn credentials(
    files: &[(PathBuf, bool)],
    registry: &str,
    repository: &str,
) -> Result<(RegistryAuth, Option<PathBuf>), Error> {
    for (path, required) in files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Config {
                    path: path.clone(),
                    message: format!("cannot read the auth file: {e}"),
                });
            }
        };
        let config = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        let file: AuthFile = serde_json::from_slice(&bytes)
            .map_err(|e| config(format!("not an auth.json/config.json: {e}")))?;
        if let Some(entry) = find(&file.auths, registry, repository) {
            let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    config(format!(
                        "auths.{registry}.auth is not base64 of user:password"
                    ))
                })?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                config(format!(
                    "auths.{registry}.auth is not base64 of user:password"
                ))
            })?;
            return Ok((
                RegistryAuth::Basic(user.to_owned(), password.to_owned()),
                Some(path.clone()),
            ));
        }
        let helper = file
            .cred_helpers
            .get(registry)
            .or(file.creds_store.as_ref());
        if let Some(helper) = helper {
            return Err(config(format!(
                "the credentials for {registry} are kept by the credential helper docker-credential-{helper}, which berth does not run; log in with `podman login --authfile FILE {registry}` and pass --authfile FILE"
            )));
        }
    }
    Ok((RegistryAuth::Anonymous, None))
}

/// The entry for a registry: keys may be `host`, `host/repo/path` (the longest
/// match of the repository wins), or a URL (`https://host/v1/`).
fn find<'a>(
    auths: &'a BTreeMap<String, Entry>,
    registry: &str,
    repository: &str,
) -> Option<&'a Entry> {
    let name = format!("{registry}/{repository}");
    let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    auths
        .iter()
        .filter_map(|(key, entry)| {
            let key = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let key = key
                .strip_suffix("/v1/")
                .or(key.strip_suffix("/v2/"))
                .unwrap_or(key);
            let key = key.trim_end_matches('/');
            let (host, path) = key.split_once('/').unwrap_or((key, ""));
            let same_host =
                host == registry || (docker_hub.contains(&host) && docker_hub.contains(&registry));
            let matches = same_host
                && (path.is_empty()
                    || name == format!("{registry}/{path}")
                    || name.starts_with(&format!("{registry}/{path}/")));
            matches.then_some((path.len(), entry))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, entry)| entry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn the_first_file_with_an_entry_wins_and_repository_keys_are_more_specific() {
        let dir = tempfile::tempdir().unwrap();
        // base64("u:p") and base64("team:secret")
        let named = write(
            dir.path(),
            "auth.json",
            r#"{"auths": {"r.example": {"auth": "dTpw"}, "r.example/team": {"auth": "dGVhbTpzZWNyZXQ="}}}"#,
        );
        let other = write(
            dir.path(),
            "config.json",
            r#"{"auths": {"https://other.example/v1/": {"auth": "dTpw"}}}"#,
        );
        let files = [(named, true), (other, false)];
        let basic = |u: &str, p: &str| RegistryAuth::Basic(u.to_owned(), p.to_owned());
        let credentials = |files: &[(PathBuf, bool)], r: &str, repo: &str| {
            credentials(files, r, repo).map(|(auth, _)| auth)
        };
        assert_eq!(
            credentials(&files, "r.example", "app").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            credentials(&files, "r.example", "team/app").unwrap(),
            basic("team", "secret")
        );
        assert_eq!(
            credentials(&files, "other.example", "x").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            credentials(&files, "none.example", "x").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn credential_helpers_and_bad_files_are_named() {
        let credentials = |files: &[(PathBuf, bool)], r: &str, repo: &str| {
            credentials(files, r, repo).map(|(auth, _)| auth)
        };
        let dir = tempfile::tempdir().unwrap();
        let helpers = write(
            dir.path(),
            "config.json",
            r#"{"credHelpers": {"r.example": "ecr-login"}}"#,
        );
        let e = credentials(&[(helpers, true)], "r.example", "app")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-ecr-login, which berth does not run"),
            "{e}"
        );
        let missing = dir.path().join("missing.json");
        let e = credentials(&[(missing, true)], "r.example", "app")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json: cannot read the auth file"), "{e}");
    }
}
