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
    // A UTF-8 byte order mark (Windows editors write one) is not part of the text:
    // libyaml would otherwise read the first line as garbage, and an editor does
    // not count it as a column.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // First the YAML alone. After a syntax error or an unknown alias libyaml cannot
    // resynchronise: serde_yaml's document iterator then repeats the error forever
    // or, for an unknown alias, hands on the rest of the broken document, on which
    // it panics. So the documents before the first YAML error are all that is read.
    let index = locate::index(text);
    // A document nested too deep is not given to libyaml, nor any after it.
    let too_deep = index.iter().enumerate().find_map(|(document, doc)| {
        let deep = doc.too_deep.map(|at| (document, at, true));
        deep.or(doc.too_big.map(|at| (document, at, false)))
    });
    let mut readable = 0;
    let mut yaml_error = None;
    for de in serde_yaml::Deserializer::from_str(text).take(too_deep.map_or(usize::MAX, |d| d.0)) {
        match serde::de::IgnoredAny::deserialize(de) {
            Ok(_) => readable += 1,
            Err(err) => {
                yaml_error = Some(err);
                break;
            }
        }
    }
    let empty = DocumentIndex::default();
    // An alias bomb is not read further: expanding it is the attack.
    let bombs: Vec<Option<Position>> = (0..readable)
        .map(|document| index.get(document).and_then(|doc| doc.alias_bomb))
        .collect();
    // A third reading, as plain values: for the unknown fields, and for a key given
    // twice in a map (`env: {A: "1", A: "2"}`), which reads as a struct as its
    // last value (only the reading as a value notices; YAML forbids it). A document
    // that does not read as a value otherwise is left to serde's error. Each value
    // is dropped once looked at: a 1 MiB file's would hold 10 MiB till the end.
    let mut early = serde_yaml::Deserializer::from_str(text)
        .take(readable)
        .zip(&bombs)
        .enumerate()
        .map(|(document, (de, bomb))| {
            let doc_index = index.get(document).unwrap_or(&empty);
            if bomb.is_some() {
                return Default::default();
            }
            match serde_yaml::Value::deserialize(de) {
                Ok(value) => {
                    let (problems, meant) = unknown_fields(path, &value, doc_index);
                    (problems, meant, false)
                }
                Err(err) if err.to_string().contains("duplicate entry") => {
                    let twice = yaml_diagnostic(path, text, &err, doc_index);
                    (vec![twice], Vec::new(), true)
                }
                Err(_) => Default::default(),
            }
        })
        .collect::<Vec<(Vec<Diagnostic>, Vec<unknown::Unknown>, bool)>>()
        .into_iter();
    for (document, de) in serde_yaml::Deserializer::from_str(text)
        .take(readable)
        .enumerate()
    {
        let doc_index = index.get(document).unwrap_or(&empty);
        let (mut problems, meant, twice) = early.next().unwrap_or_default();
        if let Some(Some(at)) = bombs.get(document) {
            parsed.diagnostics.push(
                Diagnostic::new(
                    path,
                    *at,
                    format!(
                        "aliases expand this document by more than {} values (an alias bomb?); \
                         write the values out instead",
                        locate::MAX_ALIASED_NODES
                    ),
                )
                .in_document(document),
            );
            continue;
        }
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
            // Said already, with the key, by the reading as a value.
            Err(err) if twice && err.to_string().contains("duplicate field") => {}
            Err(err) => problems.push(yaml_diagnostic(path, text, &err, doc_index)),
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
            .push(yaml_diagnostic(path, text, &err, doc_index).in_document(readable));
    } else if let Some((document, at, deep)) = too_deep {
        let message = if deep {
            format!(
                "the document is nested more than {} levels deep; a manifest needs fewer than 10",
                locate::MAX_NESTING
            )
        } else {
            format!(
                "the document has more than {} values; a manifest needs a few hundred",
                locate::MAX_NODES
            )
        };
        parsed
            .diagnostics
            .push(Diagnostic::new(path, at, message).in_document(document));
    }
    for diagnostic in &mut parsed.diagnostics {
        shorten(&mut diagnostic.message);
    }
    parsed
}

/// Messages quote the values they refuse; a value of a megabyte is shown by its
/// ends, so that the message (and its advice, at the end) still fits a terminal.
fn shorten(message: &mut String) {
    const KEEP: usize = 200;
    let chars = message.chars().count();
    if chars <= 3 * KEEP {
        return;
    }
    let head: String = message.chars().take(KEEP).collect();
    let tail: String = message.chars().skip(chars - KEEP).collect();
    *message = format!("{head} … ({} characters) … {tail}", chars - 2 * KEEP);
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

fn yaml_diagnostic(
    path: &Path,
    text: &str,
    err: &serde_yaml::Error,
    doc_index: &DocumentIndex,
) -> Diagnostic {
    let mut message = err.to_string();
    // libyaml's reader errors ("control characters are not allowed") give a byte
    // offset, and a mark at the start of the file.
    if let Some((before, offset)) = message.rsplit_once(" at position ")
        && let Ok(offset) = offset.parse::<usize>()
    {
        let at = position_of(text, offset);
        let hint = if before.contains("control characters") {
            " (is it a text file?); write one as an escape in double quotes, e.g. \"\\t\""
        } else {
            ""
        };
        return Diagnostic::new(path, at, format!("{before}{hint}"));
    }
    let mut pos = match err.location() {
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
    // serde's "spec: duplicate field `x`" comes at the mapping's start; the key
    // given twice is where the index saw it last.
    if let Some(key) = duplicate_field(&message) {
        pos = doc_index.key(&key);
        message.push_str("; give each key once");
    }
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&hint);
    }
    // libyaml ends a text that lacks its last newline with one of its own, and
    // reports "unexpected end" on the line after it, which an editor does not have.
    let end = position_of(text, text.len());
    if (pos.line, pos.column) > (end.line, end.column) && !text.ends_with(['\n', '\r']) {
        pos = end;
    }
    Diagnostic::new(path, pos, message)
}

/// For serde's "spec.env: duplicate entry with key \"A\"" (or "duplicate field
/// `A`"): the key's path, "spec.env.A".
fn duplicate_field(message: &str) -> Option<String> {
    let (parent, rest) = ["duplicate field `", "duplicate entry with key \""]
        .into_iter()
        .find_map(|said| match message.split_once(&format!(": {said}")) {
            Some(split) => Some(split),
            None => Some(("", message.strip_prefix(said)?)),
        })?;
    let key = rest.split_once(['`', '"'])?.0;
    Some(if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    })
}

/// The line and column of byte `offset` of `text` (past its end: the end), with
/// lines ended as libyaml ends them: by \n, \r\n or a lone \r.
fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let bytes = before.as_bytes();
    let lone_cr = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    let breaks = (0..bytes.len()).filter(|&i| bytes[i] == b'\n' || lone_cr(i));
    let line_start = breaks.clone().next_back().map_or(0, |i| i + 1);
    Position {
        line: breaks.count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
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
