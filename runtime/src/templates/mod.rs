//! Templates fill a fresh rootfs: `host`, `busybox`, an LXC-style script, a
//! tarball or an OCI image layout. `resolve` runs before anything is made, so that
//! a missing tool fails the create at once with what to install.

mod busybox;
mod etc;
mod host;
pub(crate) mod oci;
mod script;
mod tar_guard;
pub(crate) mod unpack;

use std::path::{Path, PathBuf};

use berth_manifests::RootfsSource;

use crate::config::ImageDefaults;
use crate::error::{Error, Result};
use crate::layers::{ImageLayers, LayeredRootfs};

/// What a template needs to know.
#[derive(Debug)]
pub struct Context<'a> {
    pub name: &'a str,
    pub hostname: &'a str,
    /// The container directory.
    pub dir: &'a Path,
    pub rootfs: &'a Path,
    /// Where template output goes.
    pub log: &'a Path,
    /// The cgroup parent: a template script runs in `PARENT/NAME/create`.
    pub cgroup_parent: &'a str,
    /// Set: the container runs in a user namespace with these maps.
    pub id_maps: Option<&'a crate::userns::IdMaps>,
    /// Copy an image's layers even where overlayfs would serve.
    pub copy_layers: bool,
    /// `<state-dir>/templates`: what templates share between containers.
    pub templates: &'a Path,
}

/// What a template leaves for the start path.
#[derive(Debug, Default)]
pub struct Built {
    pub host_binds: Vec<PathBuf>,
    pub shared_binds: Vec<SharedBind>,
    pub image: Option<ImageDefaults>,
    pub layers: Option<LayeredRootfs>,
}

/// A directory shared by containers (a template's skeleton), bound read-only at
/// `target` in the container at start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedBind {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// A template ready to run: its tools are found.
#[derive(Debug)]
pub enum Resolved {
    Host,
    Busybox(PathBuf),
    Script {
        script: PathBuf,
        args: Vec<String>,
    },
    Path,
    Tarball(PathBuf),
    Oci {
        layout: PathBuf,
        reference: Option<String>,
    },
    /// An image's unpacked layers, as the image store hands them over.
    Layers(ImageLayers),
}

/// Step 1 of the create path: find what the template needs, or say what is missing.
pub fn resolve(source: &RootfsSource) -> Result<Resolved> {
    let missing = |template: &str, message: String| Error::Template {
        template: template.to_owned(),
        message,
    };
    Ok(match source {
        RootfsSource::Host => Resolved::Host,
        RootfsSource::Busybox => Resolved::Busybox(busybox::find()?),
        RootfsSource::Script { script, args } => {
            let meta = std::fs::metadata(script).map_err(|e| {
                missing(
                    &script.display().to_string(),
                    format!("cannot use the script: {e}"),
                )
            })?;
            if !meta.is_file()
                || std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0
            {
                return Err(missing(
                    &script.display().to_string(),
                    "is not an executable file (chmod +x it)".to_owned(),
                ));
            }
            Resolved::Script {
                script: script.clone(),
                args: args.clone(),
            }
        }
        RootfsSource::Path(dir) => {
            if !dir.is_dir() {
                return Err(missing(
                    "path",
                    format!("{} is not a directory", dir.display()),
                ));
            }
            Resolved::Path
        }
        RootfsSource::Tarball(file) => {
            std::fs::metadata(file).map_err(|e| Error::Archive {
                path: file.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            Resolved::Tarball(file.clone())
        }
        RootfsSource::Oci { layout, reference } => {
            if !layout.join("index.json").is_file() {
                return Err(Error::Oci {
                    layout: layout.clone(),
                    message: "has no index.json; is it an OCI image layout (skopeo copy ... oci:DIR:TAG)?".to_owned(),
                });
            }
            Resolved::Oci {
                layout: layout.clone(),
                reference: reference.clone(),
            }
        }
        RootfsSource::Image { reference, .. } => {
            return Err(Error::Image {
                reference: reference.to_string(),
                message: "an image rootfs comes from the image store, not a template".to_owned(),
            });
        }
    })
}

impl Resolved {
    /// The template's name and arguments, for the config header.
    pub fn header(&self) -> (String, Vec<String>) {
        match self {
            Resolved::Host => ("host".to_owned(), Vec::new()),
            Resolved::Busybox(binary) => ("busybox".to_owned(), vec![binary.display().to_string()]),
            Resolved::Script { script, args } => (script.display().to_string(), args.clone()),
            Resolved::Path => ("path".to_owned(), Vec::new()),
            Resolved::Tarball(file) => ("tarball".to_owned(), vec![file.display().to_string()]),
            Resolved::Oci { layout, reference } => {
                let mut args = vec![layout.display().to_string()];
                args.extend(reference.clone());
                ("oci".to_owned(), args)
            }
            Resolved::Layers(layers) => ("image".to_owned(), vec![layers.image.clone()]),
        }
    }

    /// Does this source get a rootfs directory of its own?
    pub fn owns_rootfs(&self) -> bool {
        !matches!(self, Resolved::Path)
    }

    /// Step 5: fill `ctx.rootfs`.
    pub fn run(&self, ctx: &Context) -> Result<Built> {
        match self {
            Resolved::Host => host::build(ctx),
            Resolved::Busybox(binary) => busybox::build(ctx, binary),
            Resolved::Script { script, args } => {
                script::run(ctx, script, args).map(|()| Built::default())
            }
            Resolved::Path => Ok(Built::default()),
            Resolved::Tarball(file) => unpack::tarball(file, ctx.rootfs).map(|()| Built::default()),
            Resolved::Oci { layout, reference } => {
                let image = oci::unpack(layout, reference.as_deref(), ctx.rootfs)?;
                Ok(Built {
                    image: Some(image),
                    ..Built::default()
                })
            }
            Resolved::Layers(layers) => Ok(Built {
                image: Some(layers.defaults.clone()),
                layers: Some(crate::layers::build(layers, ctx)?),
                ..Built::default()
            }),
        }
    }
}
