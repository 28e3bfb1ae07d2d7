//! `oci: {layout, ref}`: an OCI image layout on disk. Pick the manifest by its
//! `org.opencontainers.image.ref.name`, check every blob's sha256, apply the
//! layers in order with whiteouts, and keep the image's command, env and
//! working directory for a manifest that names none.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::unpack::{self, Progress};
use crate::config::ImageDefaults;
use crate::error::{Error, Result};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Blobs read whole into memory (index, manifest, config) are small; refuse giants.
const MAX_JSON_BLOB: u64 = 4 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Oci {
            layout: self.dir.to_owned(),
            message: message.into(),
        }
    }

    /// `blobs/<alg>/<hex>` for a digest, refusing digests that are not sha256 hex.
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error(format!("unsupported or malformed digest {digest:?}")))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// Check a blob against its descriptor before anything of it is used.
    fn verify(&self, descriptor: &Descriptor) -> Result<PathBuf> {
        let path = self.blob_path(&descriptor.digest)?;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| self.error(format!("blob {} is missing: {e}", descriptor.digest)))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| self.error(format!("cannot read blob {}: {e}", descriptor.digest)))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if format!("sha256:{actual}") != descriptor.digest {
            return Err(self.error(format!(
                "blob {} is corrupt: its content hashes to sha256:{actual}",
                descriptor.digest
            )));
        }
        if let Some(expected) = descriptor.size
            && expected != size
        {
            return Err(self.error(format!(
                "blob {} is {size} bytes, its descriptor says {expected}",
                descriptor.digest
            )));
        }
        Ok(path)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, path: &Path, what: &str) -> Result<T> {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_JSON_BLOB {
            return Err(self.error(format!("{what} is {size} bytes; that is not a {what}")));
        }
        let bytes =
            std::fs::read(path).map_err(|e| self.error(format!("cannot read {what}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| self.error(format!("{what} is not valid: {e}")))
    }

    /// The image manifest for `reference`, following nested indexes by platform.
    fn select(&self, reference: Option<&str>) -> Result<Manifest> {
        let index: Index = self.json(&self.dir.join("index.json"), "index.json")?;
        let chosen = match reference {
            Some(reference) => index
                .manifests
                .iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(reference))
                .ok_or_else(|| {
                    let known: Vec<&str> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
                        .collect();
                    self.error(format!(
                        "has no image tagged {reference:?}; it has {known:?}"
                    ))
                })?,
            None => match index.manifests.as_slice() {
                [only] => only,
                [] => return Err(self.error("index.json lists no image")),
                _ => return Err(self.error("holds several images; name one with `ref`")),
            },
        };
        let mut descriptor_path = self.verify(chosen)?;
        let mut media_type = chosen.media_type.clone();
        // An index inside (multi-platform image): pick this machine's platform.
        for _ in 0..4 {
            if !INDEX_TYPES.contains(&media_type.as_str()) {
                return self.json(&descriptor_path, "image manifest");
            }
            let nested: Index = self.json(&descriptor_path, "image index")?;
            let arch = go_arch();
            let found = nested
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                })
                .ok_or_else(|| self.error(format!("has no image for linux/{arch}")))?;
            descriptor_path = self.verify(found)?;
            media_type = found.media_type.clone();
        }
        Err(self.error("image indexes nest too deeply"))
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub fn unpack(dir: &Path, reference: Option<&str>, rootfs: &Path) -> Result<ImageDefaults> {
    let layout = Layout { dir };
    let manifest = layout.select(reference)?;
    let config_path = layout.verify(&manifest.config)?;
    let config: ImageConfigFile = layout.json(&config_path, "image config")?;
    // Verify every layer before unpacking any, so a corrupt image changes nothing.
    let layers = manifest
        .layers
        .iter()
        .map(|layer| layout.verify(layer))
        .collect::<Result<Vec<_>>>()?;
    let total = layers
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let progress = Progress::with_total(total);
    for layer in &layers {
        unpack::layer(layer, rootfs, &progress)?;
    }
    progress.finish();
    Ok(config.defaults())
}

impl ImageConfigFile {
    fn defaults(self) -> ImageDefaults {
        let run = self.config.unwrap_or_default();
        let mut command = run.entrypoint.unwrap_or_default();
        command.extend(run.cmd.unwrap_or_default());
        ImageDefaults {
            command,
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.filter(|dir| !dir.is_empty()),
            user: run.user.filter(|user| !user.is_empty()),
            digest: None,
        }
    }
}

/// The run defaults of an image config blob (`application/vnd.oci.image.config.v1+json`).
pub(crate) fn image_defaults(config: &[u8]) -> std::result::Result<ImageDefaults, String> {
    serde_json::from_slice::<ImageConfigFile>(config)
        .map(ImageConfigFile::defaults)
        .map_err(|e| format!("the image config is not valid: {e}"))
}
