//! A rootfs from an image's unpacked layers. Normally an overlay: the layers as
//! read-only lowers, shared by every container of the image, and the container's
//! own `upper` and `work` directories; creating one is two mkdirs, and the
//! container's init mounts it in its private mount namespace at every start.
//! Where overlayfs cannot serve, the layers are copied into `rootfs` instead, and
//! config.json says so.

mod copy;
mod idmap;
mod overlay;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ImageDefaults;
use crate::error::{Error, Result, io};
use crate::layout::{UPPER, WORK};

pub use idmap::detached_overlay;
pub use overlay::{Overlay, attach as attach_overlay, mount as mount_overlay};

/// An image as the store resolved it: what `Runtime::create_from_layers` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    /// The image's digest (`sha256:...`), recorded in config.json.
    pub image: String,
    /// Unpacked layer directories, bottom first, in overlayfs's lower format
    /// (whiteouts as 0:0 character devices, opaque directories marked with
    /// `trusted.overlay.opaque=y`). berth never writes to them; they must stay
    /// while a container made from them exists (an overlay reads them at every
    /// start; config.json's `layers.lowers` names them).
    pub lowers: Vec<PathBuf>,
    /// The image's command, env and working directory.
    pub defaults: ImageDefaults,
}

/// How a container's rootfs was made from its image's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RootfsMode {
    /// `rootfs` is an overlay mount point; writes go to `upper`.
    Overlay,
    /// The same, for a container with a user namespace: the layers are seen
    /// through idmapped mounts, so their host ids are the container's.
    IdmappedOverlay,
    /// The layers were copied into `rootfs` at create.
    Copy,
}

/// config.json's record of an image rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayeredRootfs {
    /// The image's digest.
    pub image: String,
    /// Bottom first.
    pub lowers: Vec<PathBuf>,
    pub mode: RootfsMode,
    /// Why the layers were copied rather than overlaid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl LayeredRootfs {
    /// What the container's init mounts, for a container in `dir`.
    pub fn overlay(&self, dir: &Path) -> Option<Overlay> {
        (self.mode != RootfsMode::Copy).then(|| Overlay {
            lowers: self.lowers.clone(),
            upper: dir.join(UPPER),
            work: dir.join(WORK),
        })
    }
}

fn refuse(image: &str, message: String) -> Error {
    Error::Template {
        template: format!("image {image}"),
        message,
    }
}

/// Every lower an existing directory (not a symlink to one), given by an
/// absolute path outside the container's directory.
fn check_lowers(layers: &ImageLayers, dir: &Path) -> Result<()> {
    if layers.lowers.is_empty() {
        return Err(refuse(&layers.image, "has no layers".to_owned()));
    }
    for lower in &layers.lowers {
        let meta = std::fs::symlink_metadata(lower)
            .map_err(|e| refuse(&layers.image, format!("layer {}: {e}", lower.display())))?;
        if !lower.is_absolute() || !meta.is_dir() {
            return Err(refuse(
                &layers.image,
                format!(
                    "layer {} is not a directory given by an absolute path",
                    lower.display()
                ),
            ));
        }
        if lower.starts_with(dir) {
            return Err(refuse(
                &layers.image,
                format!("layer {} is inside the container", lower.display()),
            ));
        }
    }
    Ok(())
}

/// Step 5 of the create path for an image: make the overlay's directories and
/// try it, or copy the layers into `rootfs` (an empty directory by now).
pub fn build(layers: &ImageLayers, ctx: &crate::templates::Context) -> Result<LayeredRootfs> {
    let (dir, rootfs) = (ctx.dir, ctx.rootfs);
    check_lowers(layers, dir)?;
    let fallback = if ctx.copy_layers {
        Some("copying was asked for".to_owned())
    } else {
        make_upper(layers, dir)?;
        let overlay = Overlay {
            lowers: layers.lowers.clone(),
            upper: dir.join(UPPER),
            work: dir.join(WORK),
        };
        let tried = match ctx.id_maps {
            None => overlay::probe(&overlay),
            Some(maps) => crate::userns::shift_tree(&overlay.upper, maps)
                .map_err(|e| e.to_string())
                .and_then(|()| idmap::detached_overlay(&overlay, maps).map(drop)),
        };
        match tried {
            Ok(()) => None,
            Err(why) => {
                crate::remove::remove_tree(&overlay.upper)?;
                crate::remove::remove_tree(&overlay.work)?;
                Some(why)
            }
        }
    };
    let mode = match (&fallback, ctx.id_maps) {
        (None, None) => RootfsMode::Overlay,
        (None, Some(_)) => RootfsMode::IdmappedOverlay,
        (Some(why), _) => {
            tracing::info!(image = %layers.image, "copying the layers: {why}");
            copy::apply(&layers.lowers, rootfs)?;
            RootfsMode::Copy
        }
    };
    Ok(LayeredRootfs {
        image: layers.image.clone(),
        lowers: layers.lowers.clone(),
        mode,
        fallback,
    })
}

/// `upper` takes the top layer's root's owner and mode (the overlay's / shows
/// them); `work` is overlayfs's alone.
fn make_upper(layers: &ImageLayers, dir: &Path) -> Result<()> {
    let (upper, work) = (dir.join(UPPER), dir.join(WORK));
    let top = layers.lowers.last().map(std::fs::metadata).transpose();
    let top = top.map_err(|e| refuse(&layers.image, format!("top layer: {e}")))?;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&upper)
        .map_err(io("create", &upper))?;
    if let Some(top) = top {
        std::os::unix::fs::chown(&upper, Some(top.uid()), Some(top.gid()))
            .map_err(io("chown", &upper))?;
        std::fs::set_permissions(&upper, PermissionsExt::from_mode(top.mode() & 0o7777))
            .map_err(io("chmod", &upper))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .map_err(io("create", &work))
}
