//! The manifest as people write it. Unknown fields are errors, but serde skips
//! them: `unknown` finds them against the schema (`schemars(deny_unknown_fields)`)
//! so that they are reported with the document's other problems, not instead of
//! them. Read manifests through `parse_str`, which does both.
//! Values that need parsing (quantities, durations, signals, paths) stay text here;
//! `validate` turns a `Manifest` into a defaulted, typed `Container`.
//! Doc comments become the descriptions in `berth schema`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "berth.dev/v1";
pub const KIND: &str = "Container";

/// One container: one YAML document in a manifest file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(title = "berth Container manifest")]
pub struct Manifest {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

/// Always `berth.dev/v1`. Checked as soon as it is read, so that a document meant
/// for another tool is reported as such rather than as a list of unknown fields.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ApiVersion;

/// Always `Container`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Kind;

/// Checks a constant inside the deserializer's own call, so that serde_yaml gives
/// the error the position of the value.
fn expect_const<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<(), D::Error> {
    struct Const(&'static str);
    impl de::Visitor<'_> for Const {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{}", self.0)
        }
        fn visit_str<E: de::Error>(self, found: &str) -> Result<(), E> {
            if found == self.0 {
                Ok(())
            } else {
                Err(E::custom(format!(
                    "{found:?} is not supported; use {}",
                    self.0
                )))
            }
        }
    }
    d.deserialize_str(Const(expected))
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expect_const(d, API_VERSION).map(|()| ApiVersion)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expect_const(d, KIND).map(|()| Kind)
    }
}

impl JsonSchema for ApiVersion {
    fn schema_name() -> Cow<'static, str> {
        "ApiVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "const": API_VERSION })
    }
}

impl JsonSchema for Kind {
    fn schema_name() -> Cow<'static, str> {
        "Kind".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "const": KIND })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Metadata {
    /// The container's name, unique on the host: a DNS-1123 label (lower-case
    /// letters, digits and '-', at most 63 characters).
    #[schemars(extend("pattern" = NAME_PATTERN, "maxLength" = 63))]
    pub name: String,
    /// Free-form labels, shown by the CLI and kept in state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": ["string", "number", "boolean"]}))]
    pub labels: BTreeMap<String, String>,
    /// Which devices run this container, by their labels (`berth daemon --label`,
    /// /etc/berth/labels, `berth.dev/hostname`, `berth.dev/arch`, `berth.dev/os`),
    /// with Kubernetes' label-selector semantics. Default: every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Kubernetes' `LabelSelector`: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold. An empty selector selects every device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct LabelSelector {
    /// `KEY: VALUE` pairs the device's labels must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "propertyNames" = {"pattern": LABEL_KEY_PATTERN, "maxLength": 317},
        "additionalProperties" = {"type": ["string", "number", "boolean"], "pattern": LABEL_VALUE_PATTERN}
    ))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on the device's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement: `In` and `NotIn` need `values`; `Exists` and
/// `DoesNotExist` take none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"operator": {"enum": ["In", "NotIn"]}}},
    "then" = {"required": ["values"], "properties": {"values": {"minItems": 1}}},
    "else" = {"properties": {"values": {"maxItems": 0}}}
))]
pub struct SelectorRequirement {
    /// The label key, e.g. `berth.dev/arch` or `fleet.example/group`.
    #[schemars(extend("pattern" = LABEL_KEY_PATTERN, "maxLength" = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The label values `In` and `NotIn` compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": ["string", "number", "boolean"], "pattern": LABEL_VALUE_PATTERN}))]
    pub values: Vec<String>,
}

/// `In`: the label is one of `values`; `NotIn`: it is none of them, or absent;
/// `Exists`: the device has the label; `DoesNotExist`: it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["command"]},
    {"required": ["rootfs"], "properties": {"rootfs": {"type": "object", "anyOf": [
        {"required": ["oci"]},
        {"required": ["image"]}
    ]}}}
]))]
pub struct Spec {
    /// Where the root filesystem comes from. Default: `{template: host}`.
    pub rootfs: Option<Rootfs>,
    /// The program and its arguments, run as the container's init (PID 1).
    /// Required unless the rootfs is an OCI image (`oci` or `image`) that supplies one.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "command_schema")]
    pub command: Option<Vec<String>>,
    /// Environment variables, on top of a clean environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "propertyNames" = {"pattern": ENV_NAME_PATTERN},
        "additionalProperties" = {"type": ["string", "number", "boolean"]}
    ))]
    pub env: BTreeMap<String, String>,
    /// The command's working directory inside the container. Default: `/`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "inside_path_schema")]
    pub working_dir: Option<String>,
    /// The container's hostname. Default: the container's name.
    #[schemars(extend("pattern" = HOSTNAME_PATTERN, "maxLength" = 64))]
    pub hostname: Option<String>,
    /// The desired run state. Default: `Running`.
    pub state: Option<RunState>,
    /// What to do when the command exits. Default: `Always`.
    pub restart_policy: Option<RestartPolicy>,
    /// The signal that asks the command to stop (`SIGTERM`, `TERM` or `15`). Default: `SIGTERM`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "signal_schema")]
    pub stop_signal: Option<String>,
    /// How long to wait after the stop signal before SIGKILL (`10s`, `1m30s`, `500ms`,
    /// or whole seconds). Default: `10s`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "duration_schema")]
    pub stop_timeout: Option<Seconds>,
    /// Resource limits, enforced with cgroups. Default: none.
    pub resources: Option<Resources>,
    /// Networking. Default: `{mode: none}`.
    pub network: Option<Network>,
    /// Host paths bound into the container. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Security settings. Default: the safe defaults.
    pub security: Option<Security>,
    /// Run a minimal init as PID 1 (like `podman --init`): it forwards every
    /// catchable signal to the command, reaps orphaned processes and exits with
    /// the command's status (128 + N when killed by signal N). Default: `false`.
    pub init: Option<bool>,
    /// Who the command runs as: `UID[:GID]` or `NAME[:GROUP]`, names looked up in
    /// the container's /etc/passwd and /etc/group at start. Default: the image's
    /// user, else root. A user other than root has no capabilities.
    #[schemars(extend("pattern" = crate::user::USER_PATTERN))]
    pub user: Option<String>,
    /// Group ids added to the user's own groups (from the container's /etc/group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "integer", "minimum": 0, "maximum": 4294967294_u64}))]
    pub supplemental_groups: Vec<u32>,
    /// How the container's monitor tells whether it works: one of `exec`, `tcp` or
    /// `http`, and/or `notify`. Default: none (Running means the process exists).
    pub healthcheck: Option<Healthcheck>,
    /// Containers (by name, in any file) that must be Running, and Healthy when they
    /// have a health check, before this one starts. A cycle is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}))]
    pub depends_on: Vec<String>,
    /// Restart this container when one it depends on restarts. Default: `false`.
    pub restart_with_dependency: Option<bool>,
    /// How a changed spec is rolled out. Default: no rollback.
    pub update_strategy: Option<UpdateStrategy>,
}

/// A health check, run by the container's monitor (so it goes on while the daemon
/// is down): `exec` in the container's namespaces and confinement, as `berth exec`
/// runs it; `tcp` and `http` from inside its network namespace.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["exec"]}, {"required": ["tcp"]}, {"required": ["http"]},
    {"required": ["notify"], "properties": {"notify": {"const": true}}}
]))]
pub struct Healthcheck {
    /// A command run inside the container; healthy when it exits 0.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "command_schema")]
    pub exec: Option<Vec<String>>,
    /// A TCP port of the container; healthy when a connection is accepted.
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: Option<u16>,
    /// An HTTP GET; healthy on a 2xx or 3xx answer.
    pub http: Option<HttpCheck>,
    /// Time between checks. Default: `10s`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "interval_schema")]
    pub interval: Option<Seconds>,
    /// How long one check may take. Default: `2s`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "interval_schema")]
    pub timeout: Option<Seconds>,
    /// Failures in a row that make the container Unhealthy. Default: `3`.
    #[schemars(range(min = 1, max = 1000))]
    pub retries: Option<u32>,
    /// Failures during this time after a start do not count. Default: `0`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "duration_schema")]
    pub start_period: Option<Seconds>,
    /// Give the container a `NOTIFY_SOCKET` (the sd_notify protocol): it stays
    /// Starting until it sends `READY=1`. Default: `false`.
    pub notify: Option<bool>,
}

/// `spec.healthcheck.http`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HttpCheck {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Default: `/`.
    #[schemars(extend("pattern" = "^/"))]
    pub path: Option<String>,
    /// `HTTP` only. Default: `HTTP`.
    #[schemars(extend("enum" = ["HTTP", "http"]))]
    pub scheme: Option<String>,
}

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct UpdateStrategy {
    /// Put the previous spec back when a changed one does not stay Running (and
    /// Healthy, when checked) for `healthyFor`. Default: `false`.
    pub rollback: Option<bool>,
    /// How long a new spec must stay Running (and Healthy) to be kept. Default: `60s`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "interval_schema")]
    pub healthy_for: Option<Seconds>,
}

/// Set exactly one of `template`, `path`, `tarball`, `oci` or `image`;
/// `pullPolicy` and `updateInterval` go with `image` only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(extend(
    "anyOf" = [
        {"maxProperties": 1},
        {"required": ["image"], "propertyNames": {"enum": ["image", "pullPolicy", "updateInterval"]}}
    ],
    "dependentRequired" = {"pullPolicy": ["image"], "updateInterval": ["image"]},
    "if" = {"required": ["updateInterval"]},
    "then" = {"required": ["pullPolicy"], "properties": {
        "pullPolicy": {"const": "Always"},
        "image": {"not": {"pattern": "@"}}
    }}
))]
pub struct Rootfs {
    /// `host` (the host's /usr, /bin, /lib*, /sbin bound read-only, a small writable
    /// /etc, /tmp, /var, /run), `busybox` (the host's static busybox), or an LXC-style
    /// template script `{script: PATH, args: [...]}`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "template_schema")]
    pub template: Option<Template>,
    /// An existing directory used in place; berth never deletes it.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "absolute_path_schema")]
    pub path: Option<String>,
    /// A rootfs tar archive (.tar, .tar.gz, .tgz, .tar.zst) unpacked on create.
    #[schemars(extend("pattern" = TARBALL_PATTERN))]
    pub tarball: Option<String>,
    /// An OCI image layout on disk, as `skopeo copy ... oci:DIR:TAG` writes it.
    pub oci: Option<OciImage>,
    /// An image in a registry: `registry.example:5000/team/app:1.4` or
    /// `…/app@sha256:…`. The registry must be named: berth has no default one.
    #[schemars(extend("pattern" = IMAGE_REF_PATTERN))]
    pub image: Option<String>,
    /// When to pull `image`: `IfNotPresent` (once), `Always` (on every create),
    /// or `Never` (it must be in the store). Default: `IfNotPresent`.
    pub pull_policy: Option<PullPolicy>,
    /// How often the daemon checks `image`'s tag for a new digest (`1h`, `30m`, or
    /// whole seconds); only with `pullPolicy: Always`. Default: never.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "interval_schema")]
    pub update_interval: Option<Seconds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
    Never,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Template {
    Builtin(String),
    Script(TemplateScript),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct TemplateScript {
    /// Absolute path of the script; it is called with `--path`, `--name`, `--rootfs`.
    #[schemars(schema_with = "absolute_path_schema")]
    pub script: String,
    /// Extra arguments after berth's own.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct OciImage {
    /// Absolute path of the OCI image layout directory.
    #[schemars(schema_with = "absolute_path_schema")]
    pub layout: String,
    /// The tag (`org.opencontainers.image.ref.name`) to use; may be left out when
    /// the layout holds a single image.
    #[serde(rename = "ref")]
    #[schemars(extend("pattern" = "^[^/\\x00]+$"))]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum RunState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// A number, or a string with a unit.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// Whole seconds, or a string with a unit (`10s`, `1m30s`, `500ms`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Seconds {
    Whole(u64),
    Text(String),
}

/// A number of CPUs (`0.5`, `2`) or thousandths of one (`"500m"`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Cpus {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in bytes or with a suffix (`64Mi`, `1Gi`, `500M`).
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Option<NumberOrText>,
    /// The most processes and threads the container may have; `0` for no limit.
    /// Default: 4096, applied at start (it is not part of the spec or its hash).
    pub pids: Option<u64>,
    /// CPU time limit as a number of CPUs (`0.5`) or thousandths (`"500m"`).
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "cpus_schema")]
    pub cpus: Option<Cpus>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["mode"], "properties": {"mode": {"const": "bridge"}}},
    {"properties": {"address": false, "ports": {"maxItems": 0}}}
]))]
pub struct Network {
    /// `none`: its own network namespace with only loopback up; `host`: the host's
    /// network; `bridge`: its own namespace with `eth0`, a veth on berth's bridge,
    /// an address from berth's allocator and the other bridged containers by name
    /// in /etc/hosts. Default: `none`.
    pub mode: Option<NetworkMode>,
    /// With `bridge`: pin this IPv4 address (inside the bridge's subnet, not its
    /// gateway, not another container's; checked at start). Default: allocated.
    #[schemars(extend("pattern" = IPV4_PATTERN))]
    pub address: Option<String>,
    /// With `bridge`: host ports published to the container.
    #[serde(default)]
    pub ports: Vec<Port>,
}

/// A dotted quad without leading zeros, as Rust's `Ipv4Addr` parses it.
const IPV4_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$";

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Port {
    /// The port on the host, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub host: u64,
    /// The port inside the container, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub container: u64,
    /// `tcp` or `udp`. Default: `tcp`.
    pub protocol: Option<Protocol>,
    /// The host address to publish on. Default: `0.0.0.0` (every address).
    #[serde(rename = "hostIP")]
    #[schemars(extend("pattern" = IPV4_PATTERN))]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Mount {
    /// Absolute host path to bind.
    #[schemars(schema_with = "absolute_path_schema")]
    pub source: String,
    /// Absolute path inside the container; may not contain `..`, be `/`, or be on
    /// or under /proc or /sys.
    #[schemars(schema_with = "mount_target_schema")]
    pub target: String,
    /// Bind read-only. Default: false.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Security {
    /// Mount the root filesystem read-only (/tmp and /run stay writable). Default: false.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Changes to the default capability set.
    pub capabilities: Option<Capabilities>,
    /// `default`, `unconfined`, or `{profile: FILE}` (OCI seccomp JSON). Default: `default`.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "seccomp_schema")]
    pub seccomp: Option<Seccomp>,
    /// Run in a user namespace: `auto` (a free range of 65536 ids) or
    /// `{uidMap: [...], gidMap: [...]}`. Root inside is then an unprivileged user
    /// on the host. Default: none.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "userns_schema")]
    pub userns: Option<Userns>,
    /// Host paths that mount sources may be, or be inside, although they are (or
    /// are inside) the host's /proc, /sys or /dev, e.g. `[/dev/ttyUSB0]`. Absolute
    /// paths. Default: none.
    #[serde(default)] // Optional in the schema too, despite schema_with.
    #[schemars(schema_with = "absolute_paths_schema")]
    pub allow_host_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Userns {
    Auto(String),
    Maps(IdMaps),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct IdMaps {
    /// Ranges of user ids: `{container: 0, host: 100000, size: 65536}`.
    pub uid_map: Vec<IdMapEntry>,
    /// Ranges of group ids. Default: the same as uidMap.
    pub gid_map: Option<Vec<IdMapEntry>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct IdMapEntry {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Capabilities {
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    #[serde(default)]
    #[schemars(schema_with = "capabilities_schema")]
    pub add: Vec<String>,
    /// Capabilities to drop (`ALL` drops every one).
    #[serde(default)]
    #[schemars(schema_with = "capabilities_schema")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Seccomp {
    Named(String),
    Profile(SeccompProfile),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct SeccompProfile {
    /// Absolute path of an OCI seccomp profile (JSON).
    #[schemars(schema_with = "absolute_path_schema")]
    pub profile: String,
}

// The either-types below are read with visitors rather than `#[serde(untagged)]`,
// whose errors lose the field path and position ("data did not match any variant").

/// A visitor that takes a number or a string, for the `number or text` types.
macro_rules! number_or_text {
    ($ty:ident, $expecting:literal, $num:ident($numty:ty), $text:ident, [$($visit:ident: $from:ty),*]) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    $(fn $visit<E: de::Error>(self, v: $from) -> Result<$ty, E> {
                        Ok($ty::$num(v as $numty))
                    })*
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::$text(v.to_owned()))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

number_or_text!(NumberOrText, "a number or a string such as \"64Mi\"", Number(u64), Text, [visit_u64: u64]);
number_or_text!(Seconds, "a duration such as \"10s\" or a whole number of seconds", Whole(u64), Text, [visit_u64: u64]);
number_or_text!(
    Cpus,
    "a number of CPUs such as 0.5 or \"500m\"",
    Number(f64),
    Text,
    [visit_f64: f64, visit_u64: u64, visit_i64: i64]
);

/// A visitor that takes a name or a mapping, for `template` and `seccomp`.
macro_rules! name_or_map {
    ($ty:ident, $expecting:literal, $name:ident, $map:ident($mapty:ty)) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::$name(v.to_owned()))
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$mapty>::deserialize(de::value::MapAccessDeserializer::new(map))
                            .map($ty::$map)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

name_or_map!(
    Template,
    "a template name (host or busybox) or {script: PATH, args: [...]}",
    Builtin,
    Script(TemplateScript)
);
name_or_map!(
    Seccomp,
    "default, unconfined, or {profile: FILE}",
    Named,
    Profile(SeccompProfile)
);
name_or_map!(
    Userns,
    "auto, or {uidMap: [...], gidMap: [...]}",
    Auto,
    Maps(IdMaps)
);

// The schema says what `validate` says, so that an editor or CI with a standard
// JSON Schema validator rejects what `berth validate` rejects. What a schema
// cannot say (a quantity that is not a whole number of bytes or overflows, a CPU
// count as a decimal string out of range or finer than a thousandth, /dev mount
// targets, duplicate targets, id map ranges) is left to `berth validate`; tests/schema_agrees.rs checks both
// verdicts over a corpus of manifests. serde_yaml reads a plain number or boolean
// as text where text is expected (`PORT: 8080`, `command: [sleep, 10]`), so env,
// labels and command take those too.

/// `check_name`'s rule: a DNS-1123 label.
const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// `check_hostname`'s rule: dot-separated labels of letters, digits and '-'.
const HOSTNAME_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";
/// Kubernetes' qualified name: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters (checked fully by `selector::check_key`).
pub(crate) const LABEL_KEY_PATTERN: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// Kubernetes' label value: empty, or at most 63 characters of the name's kind.
pub(crate) const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
const ENV_NAME_PATTERN: &str = "^[^=\\x00]+$";
const TARBALL_PATTERN: &str = "^/[^\\x00]*(\\.tar|\\.tar\\.gz|\\.tgz|\\.tar\\.zst)$";
/// `ImageRef`'s grammar: a registry (with a '.' or ':', or `localhost`), lower-case
/// path components, an optional tag and an optional sha256 digest. The length
/// limit of the name is left to `berth validate`.
const IMAGE_REF_PATTERN: &str = concat!(
    "^(",
    "[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+(:[0-9]{1,5})?",
    "|[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?:[0-9]{1,5}",
    "|localhost",
    "|\\[[0-9A-Fa-f:.]+\\](:[0-9]{1,5})?",
    ")",
    "(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)+",
    "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    "(@sha256:[0-9a-f]{64})?$"
);
/// Absolute, without NUL bytes.
const ABSOLUTE_PATTERN: &str = "^/[^\\x00]*$";
/// A `..` component, which would climb out of the container's root.
const PARENT_DIR_PATTERN: &str = "(^|/)\\.\\.(/|$)";

fn absolute_path_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": ABSOLUTE_PATTERN })
}

fn absolute_paths_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "items": { "type": "string", "pattern": ABSOLUTE_PATTERN }
    })
}

fn inside_path_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "pattern": ABSOLUTE_PATTERN,
        "not": { "type": "string", "pattern": PARENT_DIR_PATTERN }
    })
}

fn mount_target_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": ABSOLUTE_PATTERN,
        "not": { "anyOf": [
            { "pattern": PARENT_DIR_PATTERN },
            // The container's root: `/`, `//`, `/.`.
            { "pattern": "^/(\\.?/)*\\.?$" },
            { "pattern": "^/+(\\./+)*(proc|sys|dev)(/+\\.?)*$" },
            { "pattern": "^/+(\\./+)*(proc|sys)/" }
        ] }
    })
}

fn command_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "minItems": 1,
        "prefixItems": [{ "minLength": 1 }],
        "items": { "type": ["string", "number", "boolean"], "pattern": "^[^\\x00]*$" }
    })
}

/// `units::parse_bytes`: digits, an optional fraction, a Kubernetes suffix.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "integer", "minimum": 1 },
        { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$" },
        { "type": "null" }
    ] })
}

/// `units::parse_millicpus`: a number of CPUs or thousandths with `m`.
fn cpus_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "number", "minimum": 0.01, "maximum": 1_000_000 },
        // At least 10m, the smallest share the kernel enforces.
        { "type": "string", "pattern": "^(0*[1-9][0-9]+m|[0-9]+(\\.[0-9]+)?)$" },
        { "type": "null" }
    ] })
}

/// `units::parse_duration`: whole seconds, `0`, or numbers with ms, s, m, h.
fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "integer", "minimum": 0 },
        { "type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$" },
        { "type": "null" }
    ] })
}

/// A duration as `duration_schema`, but not zero.
fn interval_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "integer", "minimum": 1 },
        {
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h))+$",
            "not": { "pattern": "^(0+(ms|s|m|h))+$" }
        },
        { "type": "null" }
    ] })
}

/// `units::parse_signal`: `SIGTERM`, `TERM` or `15`, for every signal of this platform.
fn signal_schema(_: &mut SchemaGenerator) -> Schema {
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for signal in nix::sys::signal::Signal::iterator() {
        let name = signal.as_str();
        names.push(name.to_owned());
        names.push(name.trim_start_matches("SIG").to_owned());
        names.push((signal as i32).to_string());
        // A plain `15` is read as text too.
        numbers.push(signal as i32);
    }
    let mut allowed: Vec<serde_json::Value> = names.into_iter().map(Into::into).collect();
    allowed.extend(numbers.into_iter().map(serde_json::Value::from));
    allowed.push(serde_json::Value::Null);
    json_schema!({ "enum": allowed })
}

/// `validate::capabilities`: any capability this host's `caps` knows, in any case,
/// with or without `CAP_`, or `ALL`. The enum is for editors' completion; the
/// case-insensitive pattern is the rule.
fn capabilities_schema(_: &mut SchemaGenerator) -> Schema {
    let mut canonical: Vec<String> = caps::all().iter().map(ToString::to_string).collect();
    canonical.sort();
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let short: Vec<&str> = canonical
        .iter()
        .map(|c| c.trim_start_matches("CAP_"))
        .collect();
    let pattern = format!(
        "^({}|({})?({}))$",
        any_case("ALL"),
        any_case("CAP_"),
        short
            .iter()
            .map(|s| any_case(s))
            .collect::<Vec<_>>()
            .join("|")
    );
    let mut completions = vec!["ALL".to_owned()];
    completions.extend(short.iter().map(|s| (*s).to_owned()));
    completions.extend(canonical.iter().cloned());
    json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "anyOf": [{ "enum": completions }, { "pattern": pattern }]
        }
    })
}

fn template_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "string", "enum": ["host", "busybox"] },
        generator.subschema_for::<TemplateScript>(),
        { "type": "null" }
    ] })
}

fn seccomp_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "string", "enum": ["default", "unconfined"] },
        generator.subschema_for::<SeccompProfile>(),
        { "type": "null" }
    ] })
}

fn userns_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [
        { "type": "string", "const": "auto" },
        generator.subschema_for::<IdMaps>(),
        { "type": "null" }
    ] })
}
