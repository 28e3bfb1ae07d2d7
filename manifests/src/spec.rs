//! The resolved container: every default filled in, every value parsed. This is
//! what the runtime creates from, what `config.json` records, and what the spec
//! hash is computed over.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::image_ref::ImageRef;
pub use crate::schema::{
    LabelSelector, NetworkMode, Protocol, PullPolicy, RestartPolicy, RunState,
};

/// A valid container document, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Which devices run it. Not part of the spec hash: a selector edit that still
    /// selects this device changes nothing that runs. Absent for every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The desired run state. Not part of the spec hash: stopping a container is
    /// not a change of what it is.
    pub state: RunState,
    /// `spec.dependsOn`: not part of the spec hash (the order things start in is
    /// not what a container is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// `spec.restartWithDependency`. Not part of the spec hash.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart_with_dependency: bool,
    /// `spec.updateStrategy`. Not part of the spec hash: how a change is rolled out
    /// is not a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    pub spec: ContainerSpec,
    /// `sha256:` of the canonical serialization of `spec`.
    pub hash: String,
    pub source: Source,
}

/// The file and document a container was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub file: PathBuf,
    /// Zero-based index of the YAML document in the file.
    pub document: usize,
    /// Where `metadata.name` stands, for "defined twice" messages.
    pub line: usize,
    pub column: usize,
}

/// Field names and their meaning are part of the spec hash: renaming one, or adding
/// one that is not skipped while it holds its default, restarts every workload on
/// upgrade. Add new fields as `Option` with `skip_serializing_if = "Option::is_none"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub rootfs: RootfsSource,
    /// Empty only when an OCI image supplies the command.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    pub hostname: String,
    pub restart_policy: RestartPolicy,
    /// Canonical name, e.g. `SIGTERM`.
    pub stop_signal: String,
    pub stop_timeout_ms: u64,
    pub resources: Resources,
    pub network: NetworkMode,
    pub mounts: Vec<Mount>,
    pub security: Security,
    /// A minimal init as PID 1 that forwards signals and reaps zombies. Absent
    /// when false, so the hash of every spec without it stays what it was.
    #[serde(default, skip_serializing_if = "is_false")]
    pub init: bool,
    /// `UID[:GID]` or `NAME[:GROUP]`, as written (checked by `User`'s parser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<u32>,
    /// `spec.network.address`: the pinned bridge address; absent when allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// `spec.network.ports`, defaults filled in; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// `spec.healthcheck`, defaults filled in. Part of the hash: the monitor runs
    /// the check it was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// A resolved `spec.healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Healthcheck {
    /// Absent when only `notify` tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub notify: bool,
}

/// What one health check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    /// Run in the container; healthy when it exits 0.
    Exec(Vec<String>),
    /// Connect to this port inside the container's network namespace.
    Tcp(u16),
    /// GET `path` on this port inside the container's network namespace; healthy on 2xx/3xx.
    Http { port: u16, path: String },
}

/// A resolved `spec.updateStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    pub rollback: bool,
    pub healthy_for_ms: u64,
}

/// A host port published to the container (`spec.network.ports[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
    #[serde(rename = "hostIP")]
    pub host_ip: Ipv4Addr,
}

impl PortMapping {
    /// Would both take the same host port: one protocol, one port, and the same
    /// address or either on every address (0.0.0.0).
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.host == other.host
            && self.protocol == other.protocol
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl std::fmt::Display for PortMapping {
    /// `8080/tcp on 0.0.0.0`, the host side.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = crate::validate::protocol_name(self.protocol);
        write!(f, "{}/{protocol} on {}", self.host, self.host_ip)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RootfsSource {
    Host,
    Busybox,
    Script {
        script: PathBuf,
        args: Vec<String>,
    },
    Path(PathBuf),
    Tarball(PathBuf),
    Oci {
        layout: PathBuf,
        reference: Option<String>,
    },
    /// An image from a registry, pulled into the image store.
    Image {
        reference: ImageRef,
        pull_policy: PullPolicy,
        /// How often the daemon checks the tag for a new digest; only with
        /// `PullPolicy::Always`. Absent when off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        update_interval_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    pub read_only_rootfs: bool,
    /// Canonical `CAP_*` names, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: SeccompPolicy,
    /// Absent (not null) without a user namespace, so the hash of every spec
    /// without one stays what it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UsernsSpec>,
    /// Absent when unset, for the same reason as `userns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_paths: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UsernsSpec {
    /// A free range, chosen at create and kept in the container's config.
    Auto,
    Maps {
        uid: Vec<IdMap>,
        gid: Vec<IdMap>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SeccompPolicy {
    Default,
    Unconfined,
    Profile(PathBuf),
}

impl RootfsSource {
    /// Whether a container of `self` can take a spec of `other` without being
    /// created again: the same source, where an image's pull policy and update
    /// interval are how it is kept, not what it is.
    pub fn same_source(&self, other: &RootfsSource) -> bool {
        match (self, other) {
            (
                RootfsSource::Image { reference: a, .. },
                RootfsSource::Image { reference: b, .. },
            ) => a == b,
            _ => self == other,
        }
    }
}

impl ContainerSpec {
    /// `sha256:<hex>` of the canonical JSON of this spec: object keys sorted, no
    /// whitespace. Independent of key order in the YAML and of serde_json features.
    pub fn hash(&self) -> String {
        let mut canonical = String::new();
        match serde_json::to_value(self) {
            Ok(value) => write_canonical(&value, &mut canonical),
            // Serializing plain data to a Value cannot fail; hash the debug form
            // rather than panic if it ever does.
            Err(_) => canonical = format!("{self:?}"),
        }
        let digest = Sha256::digest(canonical.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
