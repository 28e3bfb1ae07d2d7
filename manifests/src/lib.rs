//! The berth manifest: one YAML document per container, as people write it
//! (`schema`), checked and defaulted into what the runtime runs (`spec`), with
//! every problem reported as `FILE:LINE:COLUMN: field: message`.

mod discover;
/// Entry points for the fuzz targets (`fuzz/`) and their stable twins; not an API.
#[doc(hidden)]
pub mod fuzz;
mod image_ref;
mod locate;
mod parse;
mod schema;
mod selector;
mod spec;
mod units;
mod unknown;
mod user;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use discover::{is_manifest_name, manifest_files};
pub use image_ref::ImageRef;
pub use locate::Position;
pub use parse::{MAX_FILE_BYTES, ParsedFile, parse_bytes, parse_file, parse_str};
pub use schema::{
    API_VERSION, KIND, LabelSelector, Manifest, SelectorOperator, SelectorRequirement,
};
pub use selector::{check_label_key, check_label_value};
pub use spec::{
    Container, ContainerSpec, Mount, NetworkMode, PortMapping, Protocol, PullPolicy, Resources,
    RestartPolicy, RootfsSource, RunState, SeccompPolicy, Security, Source,
};
pub use spec::{Healthcheck, Probe, UpdateStrategy};
pub use spec::{IdMap, UsernsSpec};
pub use units::parse_duration;
pub use user::{Id, User};
pub use validate::check_name;

/// One problem, printed as `FILE:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The YAML document it belongs to; `None` for a problem of the whole file
    /// (unreadable, not UTF-8, too large). A syntax error stops the reading, so
    /// it also stands for every later document.
    pub document: Option<usize>,
}

impl Diagnostic {
    pub fn new(file: &Path, at: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: at.line,
            column: at.column,
            message: message.into(),
            document: None,
        }
    }

    fn in_document(mut self, document: usize) -> Self {
        self.document = Some(document);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// The JSON Schema of a manifest document, for editors and CI.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default()
}

/// A name may be defined once across all files, and a host port published or an
/// address pinned by one container only: every later definition is an error
/// naming the first. The later container is dropped from its file.
pub fn reject_duplicate_names(files: &mut [ParsedFile]) {
    let mut first: HashMap<String, Source> = HashMap::new();
    let mut published: Vec<(PortMapping, String, Source)> = Vec::new();
    let mut pinned: HashMap<std::net::Ipv4Addr, (String, Source)> = HashMap::new();
    for file in files.iter_mut() {
        let mut kept = Vec::with_capacity(file.containers.len());
        for container in std::mem::take(&mut file.containers) {
            let at = Position {
                line: container.source.line,
                column: container.source.column,
            };
            let shown = |s: &Source| format!("{}:{}:{}", s.file.display(), s.line, s.column);
            if let Some(earlier) = first.get(&container.name) {
                file.diagnostics.push(Diagnostic::new(
                    &container.source.file,
                    at,
                    format!(
                        "metadata.name: {:?} is already defined at {}",
                        container.name,
                        shown(earlier)
                    ),
                ));
                continue;
            }
            let clash = container.spec.ports.iter().find_map(|port| {
                published
                    .iter()
                    .find(|(other, ..)| other.clashes(port))
                    .map(|(_, name, source)| (port, name, source))
            });
            if let Some((port, name, source)) = clash {
                file.diagnostics.push(Diagnostic::new(
                    &container.source.file,
                    at,
                    format!(
                        "spec.network.ports: host port {port} of {:?} is published already by {name:?} at {}",
                        container.name,
                        shown(source)
                    ),
                ));
                continue;
            }
            if let Some((name, source)) = container.spec.address.and_then(|a| pinned.get(&a)) {
                file.diagnostics.push(Diagnostic::new(
                    &container.source.file,
                    at,
                    format!(
                        "spec.network.address: {} of {:?} is pinned already by {name:?} at {}",
                        container
                            .spec
                            .address
                            .map_or(String::new(), |a| a.to_string()),
                        container.name,
                        shown(source)
                    ),
                ));
                continue;
            }
            if let Some(address) = container.spec.address {
                pinned.insert(address, (container.name.clone(), container.source.clone()));
            }
            first.insert(container.name.clone(), container.source.clone());
            for port in &container.spec.ports {
                published.push((*port, container.name.clone(), container.source.clone()));
            }
            kept.push(container);
        }
        file.containers = kept;
    }
}

/// `spec.dependsOn` across all files: every name must be defined somewhere, and
/// no chain of dependencies may come back to where it started. A container with
/// an unknown dependency, and every container in a cycle, is reported (the cycle
/// as `a -> b -> c -> a`) and dropped from its file. Run after
/// `reject_duplicate_names`, so each name is defined once.
pub fn check_dependencies(files: &mut [ParsedFile]) {
    let deps: HashMap<String, Vec<String>> = files
        .iter()
        .flat_map(|f| &f.containers)
        .map(|c| (c.name.clone(), c.depends_on.clone()))
        .collect();
    let mut bad: HashMap<String, String> = HashMap::new();
    for (name, list) in &deps {
        if let Some(missing) = list.iter().find(|d| !deps.contains_key(*d)) {
            bad.insert(
                name.clone(),
                format!(
                    "spec.dependsOn: {name:?} depends on {missing:?}, which no manifest defines"
                ),
            );
        }
    }
    // Depth-first from every name in sorted order, so the cycle reported is stable.
    let mut names: Vec<&String> = deps.keys().collect();
    names.sort();
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for start in names {
        let mut path: Vec<&str> = Vec::new();
        find_cycles(start, &deps, &mut path, &mut done, &mut bad);
    }
    for file in files.iter_mut() {
        let mut kept = Vec::with_capacity(file.containers.len());
        for container in std::mem::take(&mut file.containers) {
            match bad.get(&container.name) {
                Some(message) => file.diagnostics.push(Diagnostic::new(
                    &container.source.file,
                    Position {
                        line: container.source.line,
                        column: container.source.column,
                    },
                    message.clone(),
                )),
                None => kept.push(container),
            }
        }
        file.containers = kept;
    }
}

fn find_cycles<'a>(
    name: &'a str,
    deps: &'a HashMap<String, Vec<String>>,
    path: &mut Vec<&'a str>,
    done: &mut std::collections::HashSet<&'a str>,
    bad: &mut HashMap<String, String>,
) {
    if done.contains(name) {
        return;
    }
    if let Some(at) = path.iter().position(|p| *p == name) {
        let cycle: Vec<&str> = path[at..].iter().copied().chain([name]).collect();
        let text = cycle.join(" -> ");
        for member in &path[at..] {
            bad.entry((*member).to_owned())
                .or_insert_with(|| format!("spec.dependsOn: dependency cycle {text}"));
        }
        return;
    }
    path.push(name);
    for dep in deps.get(name).into_iter().flatten() {
        if deps.contains_key(dep) {
            find_cycles(dep, deps, path, done, bad);
        }
    }
    path.pop();
    done.insert(name);
}
