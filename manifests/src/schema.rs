//! The manifest as people write it: serde types that reject unknown fields.
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The container's name, unique on the host: a DNS-1123 label (lower-case
    /// letters, digits and '-', at most 63 characters).
    pub name: String,
    /// Free-form labels, shown by the CLI and kept in state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// Where the root filesystem comes from. Default: `{template: host}`.
    pub rootfs: Option<Rootfs>,
    /// The program and its arguments, run as the container's init (PID 1).
    /// Required unless the rootfs is an OCI image that supplies one.
    pub command: Option<Vec<String>>,
    /// Environment variables, on top of a clean environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The command's working directory inside the container. Default: `/`.
    pub working_dir: Option<String>,
    /// The container's hostname. Default: the container's name.
    pub hostname: Option<String>,
    /// The desired run state. Default: `Running`.
    pub state: Option<RunState>,
    /// What to do when the command exits. Default: `Always`.
    pub restart_policy: Option<RestartPolicy>,
    /// The signal that asks the command to stop (`SIGTERM`, `TERM` or `15`). Default: `SIGTERM`.
    pub stop_signal: Option<String>,
    /// How long to wait after the stop signal before SIGKILL (`10s`, `1m30s`, `500ms`,
    /// or whole seconds). Default: `10s`.
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
}

/// Set exactly one of `template`, `path`, `tarball` or `oci`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rootfs {
    /// `host` (the host's /usr, /bin, /lib*, /sbin bound read-only, a small writable
    /// /etc, /tmp, /var, /run), `busybox` (the host's static busybox), or an LXC-style
    /// template script `{script: PATH, args: [...]}`.
    pub template: Option<Template>,
    /// An existing directory used in place; berth never deletes it.
    pub path: Option<String>,
    /// A rootfs tar archive (.tar, .tar.gz, .tar.zst) unpacked on create.
    pub tarball: Option<String>,
    /// An OCI image layout on disk, as `skopeo copy ... oci:DIR:TAG` writes it.
    pub oci: Option<OciImage>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Template {
    Builtin(String),
    Script(TemplateScript),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateScript {
    /// Absolute path of the script; it is called with `--path`, `--name`, `--rootfs`.
    pub script: String,
    /// Extra arguments after berth's own.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OciImage {
    /// Absolute path of the OCI image layout directory.
    pub layout: String,
    /// The tag (`org.opencontainers.image.ref.name`) to use; may be left out when
    /// the layout holds a single image.
    #[serde(rename = "ref")]
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Memory limit in bytes or with a suffix (`64Mi`, `1Gi`, `500M`).
    pub memory: Option<NumberOrText>,
    /// The most processes and threads the container may have; `0` for no limit.
    /// Default: 4096, applied at start (it is not part of the spec or its hash).
    pub pids: Option<u64>,
    /// CPU time limit as a number of CPUs (`0.5`) or thousandths (`"500m"`).
    pub cpus: Option<Cpus>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// `none`: its own network namespace with only loopback up; `host`: the host's
    /// network; `bridge` (a veth pair on a berth bridge) is reserved and refused for
    /// now. Default: `none`.
    pub mode: Option<NetworkMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Absolute host path to bind.
    pub source: String,
    /// Absolute path inside the container; may not contain `..`.
    pub target: String,
    /// Bind read-only. Default: false.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Security {
    /// Mount the root filesystem read-only (/tmp and /run stay writable). Default: false.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Changes to the default capability set.
    pub capabilities: Option<Capabilities>,
    /// `default`, `unconfined`, or `{profile: FILE}` (OCI seccomp JSON). Default: `default`.
    pub seccomp: Option<Seccomp>,
    /// Run in a user namespace: `auto` (a free range of 65536 ids) or
    /// `{uidMap: [...], gidMap: [...]}`. Root inside is then an unprivileged user
    /// on the host. Default: none.
    pub userns: Option<Userns>,
    /// Host paths that mount sources may be, or be inside, although they are (or
    /// are inside) the host's /proc, /sys or /dev, e.g. `[/dev/ttyUSB0]`. Absolute
    /// paths. Default: none.
    pub allow_host_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Userns {
    Auto(String),
    Maps(IdMaps),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdMaps {
    /// Ranges of user ids: `{container: 0, host: 100000, size: 65536}`.
    pub uid_map: Vec<IdMapEntry>,
    /// Ranges of group ids. Default: the same as uidMap.
    pub gid_map: Option<Vec<IdMapEntry>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdMapEntry {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    #[serde(default)]
    pub add: Vec<String>,
    /// Capabilities to drop (`ALL` drops every one).
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Seccomp {
    Named(String),
    Profile(SeccompProfile),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompProfile {
    /// Absolute path of an OCI seccomp profile (JSON).
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
