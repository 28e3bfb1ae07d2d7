//! Reading manifest files: size and encoding checks, YAML documents, and the
//! errors of each located at `FILE:LINE:COLUMN`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::locate::{self, DocumentIndex, Position};
use crate::schema::{API_VERSION, KIND, Manifest};
use crate::spec::{Container, Source};
use crate::{Diagnostic, unknown, validate};

/// Larger files are refused unread (the kubelet caps static pod files the same way).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Everything one file says: its valid containers and its problems.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub path: PathBuf,
    pub containers: Vec<Container>,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedFile {
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Read and check one file. I/O errors become diagnostics too.
pub fn parse_file(path: &Path) -> ParsedFile {
    match read_limited(path) {
        Ok(bytes) => parse_bytes(path, &bytes),
        Err(message) => ParsedFile {
            path: path.to_owned(),
            containers: Vec::new(),
            diagnostics: vec![Diagnostic::new(path, Position::START, message)],
        },
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly 1 MiB" from "more".
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} KiB, the limit for a manifest",
            MAX_FILE_BYTES >> 10
        ));
    }
    Ok(bytes)
}

/// Check the bytes of a file named `path`.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> ParsedFile {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(path, text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            ParsedFile {
                path: path.to_owned(),
                containers: Vec::new(),
                diagnostics: vec![Diagnostic::new(
                    path,
                    Position { line, column },
                    "the file is not UTF-8 text",
                )],
            }
        }
    }
}

/// Check the text of a file named `path`.
pub fn parse_str(path: &Path, text: &str) -> ParsedFile {
    let mut parsed = ParsedFile {
        path: path.to_owned(),
        ..ParsedFile::default()
    };
    // First the YAML alone. After a syntax error or an unknown alias libyaml cannot
    // resynchronise: serde_yaml's document iterator then repeats the error forever
    // or, for an unknown alias, hands on the rest of the broken document, on which
    // it panics. So the documents before the first YAML error are all that is read.
    let mut readable = 0;
    let mut yaml_error = None;
    for de in serde_yaml::Deserializer::from_str(text) {
        match serde::de::IgnoredAny::deserialize(de) {
            Ok(_) => readable += 1,
            Err(err) => {
                yaml_error = Some(err);
                break;
            }
        }
    }
    let index = locate::index(text);
    let empty = DocumentIndex::default();
    // A third reading, as plain values, for the unknown fields. A document that
    // does not read as a value (e.g. a key given twice) is left to serde's error.
    let values: Vec<Option<serde_yaml::Value>> = serde_yaml::Deserializer::from_str(text)
        .take(readable)
        .map(|de| serde_yaml::Value::deserialize(de).ok())
        .collect();
    for (document, de) in serde_yaml::Deserializer::from_str(text)
        .take(readable)
        .enumerate()
    {
        let doc_index = index.get(document).unwrap_or(&empty);
        let (mut problems, meant) = values
            .get(document)
            .and_then(Option::as_ref)
            .map(|value| unknown_fields(path, value, doc_index))
            .unwrap_or_default();
        match Option::<Manifest>::deserialize(de) {
            Ok(Some(manifest)) => {
                let name_at = doc_index.value("metadata.name");
                let source = Source {
                    file: path.to_owned(),
                    document,
                    line: name_at.line,
                    column: name_at.column,
                };
                match validate::container(manifest, doc_index, source) {
                    Ok(container) if problems.is_empty() => parsed.containers.push(container),
                    Ok(_) => {}
                    Err(invalid) => problems.extend(invalid),
                }
            }
            Ok(None) => {} // an empty document desires nothing
            Err(err) => problems.push(yaml_diagnostic(path, &err, doc_index)),
        }
        // `comand` is reported as a typo of `command`; that `command` is then
        // missing says nothing more.
        problems.retain(|p| !meant.iter().any(|field| reports_missing(&p.message, field)));
        problems.sort_by_key(|p| (p.line, p.column));
        parsed
            .diagnostics
            .extend(problems.into_iter().map(|p| p.in_document(document)));
    }
    if let Some(err) = yaml_error {
        let doc_index = index.get(readable).unwrap_or(&empty);
        parsed
            .diagnostics
            .push(yaml_diagnostic(path, &err, doc_index).in_document(readable));
    }
    parsed
}

/// The unknown fields of a document meant for berth, each at its key, and the
/// paths of the fields they are probably typos of. A document for another tool
/// (another apiVersion or kind) is reported as such by serde, not as a list of
/// fields berth does not know.
fn unknown_fields(
    path: &Path,
    value: &serde_yaml::Value,
    doc_index: &DocumentIndex,
) -> (Vec<Diagnostic>, Vec<unknown::Unknown>) {
    let is_berths = value.get("apiVersion").and_then(serde_yaml::Value::as_str)
        == Some(API_VERSION)
        && value.get("kind").and_then(serde_yaml::Value::as_str) == Some(KIND);
    if !is_berths {
        return Default::default();
    }
    let mut problems = Vec::new();
    let mut meant = Vec::new();
    for field in unknown::fields(value) {
        let mut message = unknown_field_message(&field);
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&hint);
        }
        problems.push(Diagnostic::new(path, doc_index.key(&field.path()), message));
        if let Some(name) = closest(&field.key, field.expected.iter().map(String::as_str)) {
            meant.push(unknown::Unknown {
                key: name.to_owned(),
                ..field
            });
        }
    }
    (problems, meant)
}

/// Does `message` say that `field` is missing, in validate's words or serde's?
fn reports_missing(message: &str, field: &unknown::Unknown) -> bool {
    let serde_says = format!("missing field `{}`", field.key);
    let serde_says = if field.parent.is_empty() {
        serde_says
    } else {
        format!("{}: {serde_says}", field.parent)
    };
    message.starts_with(&serde_says)
        || message.starts_with(&format!("{}: is required", field.path()))
}

/// serde's wording: "spec: unknown field `x`, expected one of `a`, `b`".
fn unknown_field_message(field: &unknown::Unknown) -> String {
    let quoted: Vec<String> = field
        .expected
        .iter()
        .map(|name| format!("`{name}`"))
        .collect();
    let expected = match quoted.as_slice() {
        [] => "there are no fields".to_owned(),
        [one] => format!("expected {one}"),
        [first, second] => format!("expected {first} or {second}"),
        many => format!("expected one of {}", many.join(", ")),
    };
    let prefix = if field.parent.is_empty() {
        String::new()
    } else {
        format!("{}: ", field.parent)
    };
    format!("{prefix}unknown field `{}`, {expected}", field.key)
}

fn yaml_diagnostic(path: &Path, err: &serde_yaml::Error, doc_index: &DocumentIndex) -> Diagnostic {
    let mut message = err.to_string();
    let pos = match err.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C"; the position goes in front instead.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
            Position {
                line: loc.line(),
                column: loc.column(),
            }
        }
        None => doc_index.value(""),
    };
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&hint);
    }
    Diagnostic::new(path, pos, message)
}

/// For serde's "unknown field `restartPolcy`, expected one of `rootfs`, ...":
/// the expected name closest to the typo, if it is close.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split_once("unknown field `")?.1;
    let (typo, expected) = rest.split_once('`')?;
    closest(typo, expected.split('`').skip(1).step_by(2))
        .map(|name| format!("; did you mean `{name}`?"))
}

/// The name closest to `typo`, if it is close.
fn closest<'a>(typo: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|name| (edit_distance(typo, name), name))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
