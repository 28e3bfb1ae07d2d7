//! `berth pull`, `berth images`, `berth rmi` and the image half of `berth gc`:
//! thin verbs over the image store and the registry client. They lock the store
//! per operation, so they work beside a running daemon as without one.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use berth_manifests::{ImageRef, PullPolicy, RootfsSource};
use berth_runtime::image::{ImageStore, StoredImage, containers_by_image};

/// Where the registry settings are (`--registries-conf`, `--authfile`).
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    pub conf: Option<std::path::PathBuf>,
    pub authfile: Option<std::path::PathBuf>,
}

impl RegistrySettings {
    pub fn load(&self) -> anyhow::Result<berth_registry::PullOptions> {
        Ok(berth_registry::PullOptions::load(
            self.conf.as_deref(),
            self.authfile.as_deref(),
        )?)
    }
}

/// How `ensure` came by the image.
#[derive(Debug)]
pub enum Fetched {
    /// It was in the store.
    Stored,
    /// Pulled just now.
    Pulled,
    /// `Always` could not pull; the stored image serves (what runs must not
    /// depend on the registry being up). The error says why.
    Kept(String),
}

/// The image a create needs, per its `pullPolicy`: `None` for any other rootfs
/// source. `IfNotPresent` pulls what the store lacks; `Always` pulls every time
/// (but a reference pinned by digest that is there already), falling back to a
/// stored image when the registry cannot be reached; `Never` only looks.
pub async fn ensure(
    store: &ImageStore,
    rootfs: &RootfsSource,
    options: &berth_registry::PullOptions,
) -> anyhow::Result<Option<(StoredImage, Fetched)>> {
    let RootfsSource::Image {
        reference,
        pull_policy,
        ..
    } = rootfs
    else {
        return Ok(None);
    };
    let present = {
        let (store, reference) = (store.clone(), reference.clone());
        tokio::task::spawn_blocking(move || store.get(&reference)).await??
    };
    let pull = match (pull_policy, &present) {
        (PullPolicy::Never, None) => anyhow::bail!(
            "{reference}: not in the image store and pullPolicy is Never: berth pull {reference}"
        ),
        (PullPolicy::Never | PullPolicy::IfNotPresent, Some(_)) => false,
        (PullPolicy::Always, Some(_)) => reference.digest().is_none(),
        (_, None) => true,
    };
    let present = match (pull, present) {
        (false, Some(image)) => return Ok(Some((image, Fetched::Stored))),
        (_, present) => present,
    };
    match berth_registry::pull(reference, options, store).await {
        Ok(image) => Ok(Some((image, Fetched::Pulled))),
        Err(e) => match present {
            Some(image) => Ok(Some((image, Fetched::Kept(format!("{e:#}"))))),
            None => Err(e.into()),
        },
    }
}

fn parse(reference: &str) -> anyhow::Result<ImageRef> {
    reference.parse().map_err(anyhow::Error::msg)
}

pub fn pull(
    state_dir: &Path,
    reference: &str,
    options: &berth_registry::PullOptions,
) -> anyhow::Result<ExitCode> {
    let reference = parse(reference)?;
    let store = ImageStore::open(state_dir).context("cannot open the image store")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let image = runtime.block_on(berth_registry::pull(&reference, options, &store))?;
    println!("pulled {} ({})", image.reference, image.digest);
    Ok(ExitCode::SUCCESS)
}

pub fn list(state_dir: &Path, output: &str) -> anyhow::Result<ExitCode> {
    let images = ImageStore::open(state_dir)
        .and_then(|store| store.list())
        .context("cannot read the image store")?;
    let users = containers_by_image(state_dir)?;
    let users_of = |digest: &str| users.get(digest).cloned().unwrap_or_default();
    if output == "json" {
        let items: Vec<serde_json::Value> = images
            .iter()
            .map(|image| {
                serde_json::json!({
                    "reference": image.reference.to_string(),
                    "digest": image.digest,
                    "indexDigest": image.index_digest,
                    "configDigest": image.config_digest,
                    "layers": image.layers,
                    "size": image.size,
                    "pulledAt": image.pulled_at,
                    "containers": users_of(&image.digest),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|image| {
            [
                image.reference.to_string(),
                short_digest(&image.digest),
                human_size(image.size),
                users_of(&image.digest).len().to_string(),
            ]
        })
        .collect();
    let header = [
        "REFERENCE".to_owned(),
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "CONTAINERS".to_owned(),
    ];
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// Refused while a container uses the image, unless another reference keeps
/// the same digest in the store.
pub fn remove(state_dir: &Path, reference: &str) -> anyhow::Result<()> {
    let reference = parse(reference)?;
    let store = ImageStore::open(state_dir).context("cannot open the image store")?;
    let Some(image) = store.get(&reference)? else {
        anyhow::bail!("{reference}: no such image in the store (`berth images` lists them)");
    };
    let users = containers_by_image(state_dir)?
        .remove(&image.digest)
        .unwrap_or_default();
    let kept_by_another = store
        .list()?
        .iter()
        .any(|other| other.reference != reference && other.digest == image.digest);
    if !users.is_empty() && !kept_by_another {
        anyhow::bail!(
            "{reference}: in use by container{} {}; destroy {} first",
            if users.len() == 1 { "" } else { "s" },
            users.join(", "),
            if users.len() == 1 { "it" } else { "them" },
        );
    }
    store.remove(&reference)?;
    println!("removed {reference} ({})", image.digest);
    Ok(())
}

/// Returns whether it freed anything.
pub fn gc(state_dir: &Path) -> anyhow::Result<bool> {
    if !state_dir.join("images").is_dir() {
        return Ok(false);
    }
    let store = ImageStore::open(state_dir).context("cannot open the image store")?;
    let freed = store
        .gc()
        .context("cannot free unused image blobs and layers")?;
    if freed.blobs + freed.layers == 0 {
        return Ok(false);
    }
    println!(
        "freed {} ({} blob{}, {} layer{} no image uses)",
        human_size(freed.bytes),
        freed.blobs,
        if freed.blobs == 1 { "" } else { "s" },
        freed.layers,
        if freed.layers == 1 { "" } else { "s" },
    );
    Ok(true)
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows ids.
fn short_digest(digest: &str) -> String {
    let hex: String = digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    format!("sha256:{hex}")
}

/// Decimal units, as `docker images` and `podman images` print sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_are_shown_short() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(4_200_000), "4.2 MB");
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
    }
}
