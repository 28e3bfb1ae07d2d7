//! berth's side of OCI/Docker registries: pull an image into the image store
//! (`berth_runtime::image`), or ask a tag's digest. The protocol (tokens,
//! manifests, blob streams) is `oci-client`'s; which registry is plain HTTP or
//! blocked comes from `registries.conf`, credentials from `auth.json`.

mod auth;
mod conf;
/// Entry points for the fuzz targets (`fuzz/`) and their stable twins; not an API.
#[doc(hidden)]
pub mod fuzz;

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_manifests::ImageRef;
use berth_runtime::image::{ImageStore, Pull, StoredImage};
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{self as media, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

pub use conf::{DEFAULT_PATH as DEFAULT_REGISTRIES_CONF, RegistriesConf, Registry};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// registries.conf or an auth file.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// The registry, or what it sent.
    #[error("{reference}: {message}")]
    Pull { reference: String, message: String },
    /// The store (a blob's digest or size mismatch names the blob). Not a
    /// `#[source]`: the message says it already, and `{:#}` would say it twice.
    #[error("{reference}: {error}")]
    Store {
        reference: String,
        error: berth_runtime::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the settings come from.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub registries: RegistriesConf,
    /// `--authfile` / `REGISTRY_AUTH_FILE`: looked at first, and must exist.
    pub authfile: Option<PathBuf>,
}

impl PullOptions {
    /// registries.conf from `registries_conf` (else the default path, which may
    /// be missing), and the named auth file.
    pub fn load(registries_conf: Option<&Path>, authfile: Option<&Path>) -> Result<PullOptions> {
        Ok(PullOptions {
            registries: RegistriesConf::load(registries_conf)?,
            authfile: authfile.map(Path::to_owned),
        })
    }
}

const MANIFEST_TYPES: &[&str] = &[
    media::OCI_IMAGE_MEDIA_TYPE,
    media::IMAGE_MANIFEST_MEDIA_TYPE,
    media::OCI_IMAGE_INDEX_MEDIA_TYPE,
    media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
const INDEX_TYPES: &[&str] = &[
    media::OCI_IMAGE_INDEX_MEDIA_TYPE,
    media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
/// Manifests are read whole; refuse giants.
const MAX_MANIFEST: usize = 4 << 20;

/// A connection to the registry of one reference.
struct Session {
    reference: ImageRef,
    insecure: bool,
    target: Reference,
    client: Client,
    auth: RegistryAuth,
    /// The file `auth` came from.
    authfile: Option<PathBuf>,
}

impl Session {
    fn new(reference: &ImageRef, options: &PullOptions) -> Result<Session> {
        let fail = |message: String| Error::Pull {
            reference: reference.to_string(),
            message,
        };
        let settings = options
            .registries
            .find(reference.registry(), reference.repository());
        if settings.is_some_and(|r| r.blocked) {
            return Err(fail(format!(
                "the registry {} is blocked in registries.conf",
                reference.registry()
            )));
        }
        let insecure = settings.is_some_and(|r| r.insecure);
        let (auth, authfile) = auth::credentials(
            &auth::auth_files(options.authfile.as_deref()),
            reference.registry(),
            reference.repository(),
        )?;
        // reqwest is built without a crypto provider of its own: ring's, once
        // per process (an Err means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            // `insecure = true`: plain HTTP, as a registry on a device's LAN or on
            // loopback serves.
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(300)),
            ..ClientConfig::default()
        });
        let (registry, repository) = (
            reference.registry().to_owned(),
            reference.repository().to_owned(),
        );
        let target = match (reference.tag(), reference.digest()) {
            (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
                registry,
                repository,
                tag.to_owned(),
                digest.to_owned(),
            ),
            (_, Some(digest)) => Reference::with_digest(registry, repository, digest.to_owned()),
            (tag, None) => {
                Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_owned())
            }
        };
        Ok(Session {
            reference: reference.clone(),
            insecure,
            target,
            client,
            auth,
            authfile,
        })
    }

    fn fail(&self, message: impl Into<String>) -> Error {
        Error::Pull {
            reference: self.reference.to_string(),
            message: message.into(),
        }
    }

    fn store(&self) -> impl FnOnce(berth_runtime::Error) -> Error + '_ {
        |error| Error::Store {
            reference: self.reference.to_string(),
            error,
        }
    }

    /// What the registry said, in the user's words.
    fn explain(&self, e: OciDistributionError) -> Error {
        let host = self.reference.registry();
        let message = match &e {
            OciDistributionError::RequestError(inner)
                if inner.is_connect() || inner.is_timeout() =>
            {
                let hint = if self.insecure {
                    ""
                } else {
                    " (if it serves plain HTTP, set `insecure = true` for it in registries.conf)"
                };
                format!(
                    "cannot reach the registry {host}: {}{hint}",
                    berth_runtime::with_causes(inner)
                )
            }
            OciDistributionError::RequestError(inner) => {
                format!(
                    "talking to the registry {host} failed: {}",
                    berth_runtime::with_causes(inner)
                )
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => match &self.authfile {
                Some(file) => format!(
                    "the registry {host} refused access (401 Unauthorized) with the credentials of {}: log in again with `podman login --authfile {} {host}` ({e})",
                    file.display(),
                    file.display()
                ),
                None => format!(
                    "the registry {host} refused access (401 Unauthorized): log in with `podman login {host}` or name an auth file with --authfile ({e})"
                ),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => {
                "manifest unknown: the registry has no such tag or digest".to_owned()
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                    )
                }) =>
            {
                format!("manifest unknown: the registry has no such tag or digest ({e})")
            }
            _ => format!("the registry {host}: {e}"),
        };
        self.fail(message)
    }

    /// A manifest or index by `target`, checked against the digest it was asked
    /// by (if any) and the digest the registry names.
    async fn manifest(&self, target: &Reference) -> Result<(Vec<u8>, String)> {
        let (bytes, said) = self
            .client
            .pull_manifest_raw(target, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.explain(e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(self.fail(format!("the manifest is {} bytes; refused", bytes.len())));
        }
        let actual = berth_runtime::image::sha256_of(&bytes);
        if let Some(asked) = target.digest()
            && asked != actual
        {
            return Err(self.fail(format!(
                "manifest {asked}: digest mismatch: the registry sent content that hashes to {actual}"
            )));
        }
        if said.starts_with("sha256:") && said != actual {
            return Err(self.fail(format!(
                "manifest {said}: digest mismatch: the registry sent content that hashes to {actual}"
            )));
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Stream one blob into the store through its verifying writer.
    async fn fetch_blob(&self, pull: &Pull<'_>, descriptor: &OciDescriptor) -> Result<()> {
        let size = self.size(descriptor)?;
        let mut writer = pull
            .blob_writer(&descriptor.digest, size)
            .map_err(self.store())?;
        let mut stream = self
            .client
            .pull_blob_stream(&self.target, descriptor)
            .await
            .map_err(|e| self.explain(e))?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => writer
                    .write_all(&bytes)
                    // The writer's error names the blob.
                    .map_err(|e| self.fail(e.to_string()))?,
                // oci-client checks the digest too, at the end of the stream: then
                // the writer's own check says what is wrong, naming the blob.
                Err(_) if writer.written() == size => break,
                Err(e) => {
                    return Err(self.fail(format!(
                        "blob {}: the download failed: {e}",
                        descriptor.digest
                    )));
                }
            }
        }
        writer.commit().map_err(self.store())
    }

    /// A descriptor's size; a negative one is refused.
    fn size(&self, descriptor: &OciDescriptor) -> Result<u64> {
        u64::try_from(descriptor.size).map_err(|_| {
            self.fail(format!(
                "blob {}: the manifest gives it the size {}",
                descriptor.digest, descriptor.size
            ))
        })
    }

    async fn pull(&self, store: &ImageStore) -> Result<StoredImage> {
        let (mut bytes, mut digest) = self.manifest(&self.target).await?;
        let mut index = None;
        if INDEX_TYPES.contains(&media_type(&bytes).as_str()) {
            let chosen = self.choose_platform(&bytes)?;
            let by_digest = self.target.clone_with_digest(chosen.clone());
            index = Some((bytes, digest));
            (bytes, digest) = self.manifest(&by_digest).await?;
            if digest != chosen {
                return Err(self.fail(format!("manifest {chosen}: the registry sent {digest}")));
            }
        }
        let manifest: OciImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(format!("manifest {digest} is not an image manifest: {e}")))?;
        if manifest.layers.is_empty() {
            return Err(self.fail(format!("manifest {digest} has no layers")));
        }

        let pull = store.begin_pull().map_err(self.store())?;
        for (content, digest) in index.iter().map(|(b, d)| (b, d)).chain([(&bytes, &digest)]) {
            if !pull.has_blob(digest).map_err(self.store())? {
                let mut writer = pull
                    .blob_writer(digest, content.len() as u64)
                    .map_err(self.store())?;
                writer
                    .write_all(content)
                    .map_err(|e| self.fail(format!("manifest {digest}: {e}")))?;
                writer.commit().map_err(self.store())?;
            }
        }
        if !pull
            .has_blob(&manifest.config.digest)
            .map_err(self.store())?
        {
            self.fetch_blob(&pull, &manifest.config).await?;
        }
        for layer in &manifest.layers {
            let present = pull.has_layer(&layer.digest).map_err(self.store())?
                || pull.has_blob(&layer.digest).map_err(self.store())?;
            if !present {
                self.fetch_blob(&pull, layer).await?;
            }
        }
        // Every blob is in and verified: now unpack, once per layer.
        for layer in &manifest.layers {
            pull.unpack_layer(&layer.digest).map_err(self.store())?;
        }
        let mut defaults = pull
            .image_defaults(&manifest.config.digest)
            .map_err(self.store())?;
        defaults.digest = Some(digest.clone());
        let mut size = self.size(&manifest.config)?;
        for layer in &manifest.layers {
            size = size.saturating_add(self.size(layer)?);
        }
        let pulled_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        pull.commit(StoredImage {
            reference: self.reference.clone(),
            digest,
            index_digest: index.map(|(_, digest)| digest),
            config_digest: manifest.config.digest.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            defaults,
            lowers: Vec::new(),
            size,
            pulled_at,
        })
        .map_err(self.store())
    }

    /// This machine's entry of a multi-platform index, or an error naming the
    /// platforms it has.
    fn choose_platform(&self, bytes: &[u8]) -> Result<String> {
        let index: OciImageIndex = serde_json::from_slice(bytes)
            .map_err(|e| self.fail(format!("the image index is not valid: {e}")))?;
        let (os, arch, variant) = platform();
        let matches = |p: &media::Platform| {
            p.os.to_string() == os
                && p.architecture.to_string() == arch
                && (variant.is_none() || p.variant.is_none() || p.variant.as_deref() == variant)
        };
        if let Some(entry) = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(matches))
        {
            return Ok(entry.digest.clone());
        }
        let present: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .filter(|p| p.os.to_string() != "unknown")
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        Err(self.fail(format!(
            "no image for this machine's platform {os}/{arch}; the index has {}",
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        )))
    }
}

/// This machine in the OCI's (Go's) words.
fn platform() -> (&'static str, &'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("linux", "amd64", None),
        "aarch64" => ("linux", "arm64", Some("v8")),
        "arm" => ("linux", "arm", Some("v7")),
        "x86" => ("linux", "386", None),
        "powerpc64" => ("linux", "ppc64le", None),
        "s390x" => ("linux", "s390x", None),
        "riscv64" => ("linux", "riscv64", None),
        other => ("linux", other, None),
    }
}

fn media_type(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Typed {
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Typed>(bytes) {
        // An OCI index may leave out its mediaType; its `manifests` gives it away.
        Ok(t) if t.media_type.is_empty() && t.manifests.is_some() => {
            media::OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()
        }
        Ok(t) => t.media_type,
        Err(_) => String::new(),
    }
}

/// Pull `reference` into `store`: the manifest (this machine's, from a
/// multi-platform index), the config and every layer not already there, each
/// verified while it streams in; then the layers are unpacked (once each) and
/// the image recorded. A blob or layer already in the store is not fetched again.
pub async fn pull(
    reference: &ImageRef,
    options: &PullOptions,
    store: &ImageStore,
) -> Result<StoredImage> {
    Session::new(reference, options)?.pull(store).await
}

/// The digest the registry gives for `reference` now (a HEAD request; no layer
/// is downloaded): compare it with `StoredImage::registry_digest`.
pub async fn resolve_digest(reference: &ImageRef, options: &PullOptions) -> Result<String> {
    let session = Session::new(reference, options)?;
    session
        .client
        .fetch_manifest_digest(&session.target, &session.auth)
        .await
        .map_err(|e| session.explain(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_platform_is_named_with_those_present() {
        let reference: ImageRef = "localhost:5000/app".parse().unwrap();
        let session = Session::new(&reference, &PullOptions::default()).unwrap();
        let entry = |digest: &str, os: &str, arch: &str| {
            format!(
                r#"{{"mediaType": "{}", "size": 1, "digest": "{digest}", "platform": {{"os": "{os}", "architecture": "{arch}"}}}}"#,
                media::OCI_IMAGE_MEDIA_TYPE
            )
        };
        let index = |entries: &[String]| {
            format!(
                r#"{{"schemaVersion": 2, "manifests": [{}]}}"#,
                entries.join(",")
            )
        };
        let foreign = index(&[
            entry("sha256:aa", "linux", "mips64"),
            entry("sha256:bb", "windows", "amd64"),
            entry("sha256:cc", "unknown", "unknown"),
        ]);
        let index_bytes = foreign.as_bytes();
        let e = session
            .choose_platform(index_bytes)
            .unwrap_err()
            .to_string();
        let (_, arch, _) = platform();
        assert_eq!(
            e,
            format!(
                "localhost:5000/app:latest: no image for this machine's platform linux/{arch}; the index has linux/mips64, windows/amd64"
            )
        );
        let ours = index(&[entry("sha256:dd", "linux", arch)]);
        assert_eq!(
            session.choose_platform(ours.as_bytes()).unwrap(),
            "sha256:dd"
        );
        assert_eq!(media_type(index_bytes), media::OCI_IMAGE_INDEX_MEDIA_TYPE);
    }

    #[test]
    fn a_blocked_registry_is_refused_before_any_request() {
        let reference: ImageRef = "registry.example/app".parse().unwrap();
        let options = PullOptions {
            registries: RegistriesConf::parse(
                "[[registry]]\nlocation = \"registry.example\"\nblocked = true\n",
            )
            .unwrap(),
            authfile: None,
        };
        let e = Session::new(&reference, &options)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is blocked in registries.conf"), "{e}");
    }
}
