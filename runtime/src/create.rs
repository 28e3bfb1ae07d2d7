//! The create path, step by step as in LXC's `lxcapi_create`.

use std::os::unix::fs::DirBuilderExt;

use berth_manifests::Container;

use crate::config::{Header, Origin, SavedConfig};
use crate::error::{Error, Result, io};
use crate::layers::ImageLayers;
use crate::layout::ContainerDir;
use crate::partial::{PartialLock, Probe};
use crate::templates::{self, Context};
use crate::{Runtime, remove};

impl Runtime {
    /// Create `container` from its rootfs source. On failure nothing is left behind.
    pub fn create(&self, container: &Container, origin: Origin) -> Result<SavedConfig> {
        // 1. Resolve the template: a missing tool fails before anything is made.
        if let berth_manifests::RootfsSource::Image { reference, .. } = &container.spec.rootfs {
            return self.create_from_store(container, origin, reference);
        }
        let template = templates::resolve(&container.spec.rootfs)?;
        self.create_resolved(container, origin, template)
    }

    /// Create `container` from an image's unpacked layers, whatever its
    /// `spec.rootfs` says: an overlay of `layers.lowers` with an upper of its own
    /// (no copy, no unpack), or, where overlayfs cannot serve or the container has
    /// a user namespace, a copy of them. The image's defaults fill in what the
    /// manifest leaves out. On failure nothing is left behind; the lowers are
    /// never written to.
    pub fn create_from_layers(
        &self,
        container: &Container,
        origin: Origin,
        layers: ImageLayers,
    ) -> Result<SavedConfig> {
        self.create_resolved(container, origin, templates::Resolved::Layers(layers))
    }

    /// `spec.rootfs.image`: from the image the store holds for `reference`
    /// (pulling it is the caller's), the store locked until config.json names it.
    fn create_from_store(
        &self,
        container: &Container,
        origin: Origin,
        reference: &berth_manifests::ImageRef,
    ) -> Result<SavedConfig> {
        let store = crate::image::ImageStore::open(&self.state_dir)?;
        let Some((image, _lock)) = store.get_locked(reference)? else {
            return Err(Error::Image {
                reference: reference.to_string(),
                message: format!("not in the image store; pull it first: berth pull {reference}"),
            });
        };
        let layers = ImageLayers {
            image: image.digest.clone(),
            lowers: image.lowers.clone(),
            defaults: image.defaults.clone(),
        };
        self.create_from_layers(container, origin, layers)
    }

    fn create_resolved(
        &self,
        container: &Container,
        origin: Origin,
        template: templates::Resolved,
    ) -> Result<SavedConfig> {
        // 2-3. The directory, and the `partial` lock held for the whole create.
        let dir = self.dir(&container.name)?;
        let partial = self.make_dir_and_lock(&dir)?;
        match self.fill(&dir, container, &template, origin) {
            Ok(config) => {
                // The seccomp filter compiled now, not on the first start (and
                // not in the monitor's heap). Only a cache: a profile that does
                // not compile fails that start, with its error, as before.
                if let Err(e) = crate::seccomp::for_container(
                    &container.spec.security,
                    Some(&dir.seccomp_cache()),
                ) {
                    tracing::debug!(container = %container.name, "seccomp filter not cached: {e}");
                }
                // 7. Done: the config in place and the marker gone, both made
                // durable by one sync of the directory; then the lock goes.
                config
                    .stage(&dir.config())
                    .and_then(crate::config::Staged::rename)?;
                partial.finish()?;
                std::fs::File::open(&dir.path)
                    .and_then(|d| d.sync_all())
                    .map_err(crate::error::io("fsync", dir.path.clone()))?;
                tracing::info!(container = %container.name, template = %config.header.as_ref().map_or("", |h| h.template.as_str()), "created");
                Ok(config)
            }
            Err(err) => {
                if let Err(cleanup) = remove::remove_tree(&dir.path) {
                    tracing::error!(container = %container.name, "failed create left files behind: {cleanup}");
                }
                drop(partial);
                Err(err)
            }
        }
    }

    fn make_dir_and_lock(&self, dir: &ContainerDir) -> Result<PartialLock> {
        let containers = self.containers_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&containers)
            .map_err(io("create", &containers))?;
        for _ in 0..2 {
            match std::fs::DirBuilder::new().mode(0o700).create(&dir.path) {
                Ok(()) => return PartialLock::create(&dir.partial(), &dir.name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &dir.path)(e)),
            }
            match PartialLock::probe(&dir.partial())? {
                Probe::Held => return Err(Error::Busy(dir.name.clone())),
                Probe::Absent => return Err(Error::Exists(dir.name.clone())),
                // A create that died: clear it away and try once more.
                Probe::Stale(_lock) => {
                    tracing::warn!(container = %dir.name, "removing the remains of an interrupted create");
                    self.kill_template_leftovers(&dir.name)?;
                    remove::remove_tree(&dir.path)?;
                }
            }
        }
        Err(Error::Busy(dir.name.clone()))
    }

    /// SIGKILL whatever a template script of `name` left running (its create was
    /// killed, so nobody killed its children), before its files are removed.
    pub(crate) fn kill_template_leftovers(&self, name: &str) -> Result<()> {
        let resources = berth_manifests::Resources::default();
        match crate::cgroup::Cgroups::new(&self.cgroup_parent, name, &resources) {
            Ok(cgroups) => cgroups.kill_create(),
            // Without cgroups no template script can have run.
            Err(e) => {
                tracing::debug!(container = name, "no template cgroup to clean: {e}");
                Ok(())
            }
        }
    }

    /// Pick the user namespace ids and record them in the config at once, under a
    /// lock, so that two creates never take the same range.
    fn allocate_ids(
        &self,
        dir: &ContainerDir,
        spec: &berth_manifests::UsernsSpec,
        config: &mut SavedConfig,
    ) -> Result<crate::userns::IdMaps> {
        let lock_path = self.containers_dir().join(".userns.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("create", &lock_path))?;
        let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| crate::error::errno("lock", lock_path.clone())(e))?;
        let used: Vec<crate::userns::IdMaps> = self
            .list()?
            .iter()
            .filter(|name| **name != dir.name)
            .filter_map(|name| self.dir(name).ok())
            .filter_map(|d| SavedConfig::load(&d.config()).ok())
            .filter_map(|c| c.id_maps)
            .collect();
        let maps = crate::userns::resolve(spec, &used)?;
        config.id_maps = Some(maps.clone());
        config.save_unsynced(&dir.config())?;
        Ok(maps)
    }

    /// Steps 4-6, under the lock.
    fn fill(
        &self,
        dir: &ContainerDir,
        container: &Container,
        template: &templates::Resolved,
        origin: Origin,
    ) -> Result<SavedConfig> {
        let rootfs = match (&container.spec.rootfs, template) {
            (berth_manifests::RootfsSource::Path(path), templates::Resolved::Path) => path.clone(),
            _ => dir.rootfs(),
        };
        let mut config = SavedConfig {
            header: None,
            container: container.clone(),
            rootfs: rootfs.clone(),
            host_binds: Vec::new(),
            shared_binds: Vec::new(),
            image: None,
            id_maps: None,
            layers: None,
        };
        if let Some(spec) = &container.spec.security.userns {
            config.id_maps = Some(self.allocate_ids(dir, spec, &mut config)?);
        }
        // 4. The storage. A plain directory needs no forked child (LXC forks for
        // storage such as zfs that mounts only in the initial namespace).
        if template.owns_rootfs() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&rootfs)
                .map_err(io("create", &rootfs))?;
        }
        config.save_unsynced(&dir.config())?;
        // 5. The template.
        let built = template.run(&Context {
            name: &container.name,
            hostname: &container.spec.hostname,
            dir: &dir.path,
            rootfs: &rootfs,
            log: &dir.template_log(),
            cgroup_parent: &self.cgroup_parent,
            id_maps: config.id_maps.as_ref(),
            copy_layers: self.copy_layers,
            templates: &self.state_dir.join("templates"),
        })?;
        // 6. The header naming the template, with what it leaves for start.
        let (name, args) = template.header();
        config.header = Some(Header {
            template: name,
            args,
            berth_version: env!("CARGO_PKG_VERSION").to_owned(),
            origin,
        });
        if let Some(maps) = &config.id_maps {
            if template.owns_rootfs() {
                crate::userns::shift_tree(&rootfs, maps)?;
            }
            // Root inside is an ordinary host user: let it through to its rootfs.
            for path in [&dir.path, &self.containers_dir()] {
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                    .map_err(io("chmod", path.clone()))?;
            }
        }
        config.host_binds = built.host_binds;
        config.shared_binds = built.shared_binds;
        config.image = built.image;
        config.layers = built.layers;
        // Put in place, synced, by the caller once this returns.
        Ok(config)
    }
}
