//! Where each field stands in the YAML text, so that validation errors found
//! after deserialization can still point at `FILE:LINE:COLUMN`.
//!
//! serde_yaml reports a location only for its own errors, so this walks the
//! event stream of a second, pure-Rust parser and records the position of every
//! key and value by its field path (`spec.mounts[0].target`). It is best effort:
//! if the two parsers ever disagree, a lookup falls back to the nearest parent.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// One-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };
}

/// Positions in one YAML document.
#[derive(Debug, Default)]
pub struct DocumentIndex {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
}

impl DocumentIndex {
    /// The position of the value at `path`, else of the nearest enclosing field.
    pub fn value(&self, path: &str) -> Position {
        self.lookup(path, &self.values)
    }

    /// The position of the key at `path` (for "field X is missing/wrong as a whole").
    pub fn key(&self, path: &str) -> Position {
        self.lookup(path, &self.keys)
    }

    fn lookup(&self, path: &str, first: &HashMap<String, Position>) -> Position {
        let mut path = path;
        loop {
            if let Some(pos) = first.get(path).or_else(|| self.values.get(path)) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return self.values.get("").copied().unwrap_or(Position::START),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

/// Index every document of `text`. Documents past a syntax error get no entry.
pub fn index(text: &str) -> Vec<DocumentIndex> {
    let mut docs: Vec<DocumentIndex> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    // A parser bug must not hang validation: no document has more events than chars.
    for _ in 0..=text.len() + 16 {
        let Ok((event, mark)) = parser.next_token() else {
            break;
        };
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                stack.clear();
                docs.push(DocumentIndex::default());
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let Some(doc) = docs.last_mut() else { break };
                let opens = match event {
                    Event::MappingStart(..) => Some(true),
                    Event::SequenceStart(..) => Some(false),
                    _ => None,
                };
                let path = match stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Seq { path, next }) => {
                        *next += 1;
                        Some(format!("{path}[{}]", *next - 1))
                    }
                    Some(Frame::Map { path, key }) => match key.take() {
                        Some(key) => Some(join(path, &key)),
                        None => {
                            // This node is a key.
                            let name = match &event {
                                Event::Scalar(s, ..) => s.clone(),
                                _ => "?".to_owned(),
                            };
                            doc.keys.insert(join(path, &name), pos);
                            // A block mapping's start event is marked after its first
                            // key; the mapping really starts at that key.
                            if let Some(map_pos) = doc.values.get_mut(path.as_str())
                                && (pos.line, pos.column) < (map_pos.line, map_pos.column)
                            {
                                *map_pos = pos;
                            }
                            *key = Some(name);
                            None
                        }
                    },
                };
                if let Some(path) = &path {
                    doc.values.entry(path.clone()).or_insert(pos);
                }
                // A complex key's contents are indexed under "?" and ignored.
                if let Some(is_map) = opens {
                    let path = path.unwrap_or_else(|| "?".to_owned());
                    stack.push(if is_map {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::DocumentEnd | Event::StreamStart | Event::Nothing => {}
        }
    }
    docs
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: berth.dev/v1
kind: Container
metadata:
  name: web
spec:
  mounts:
    - source: /srv
      target: ../etc
---
metadata: {name: two}
";

    #[test]
    fn values_and_keys_have_their_positions() {
        let docs = index(DOC);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value("metadata.name"),
            Position { line: 4, column: 9 }
        );
        assert_eq!(
            docs[0].key("metadata.name"),
            Position { line: 4, column: 3 }
        );
        assert_eq!(
            docs[0].value("spec.mounts[0].target"),
            Position {
                line: 8,
                column: 15
            }
        );
        assert_eq!(
            docs[1].value("metadata.name"),
            Position {
                line: 10,
                column: 18
            }
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_parent() {
        let docs = index(DOC);
        assert_eq!(docs[0].key("spec.command"), docs[0].key("spec"));
        assert_eq!(
            docs[0].value("spec.mounts[3].source"),
            docs[0].value("spec.mounts")
        );
        assert_eq!(
            docs[0].value("nothing.here"),
            Position { line: 1, column: 1 }
        );
    }
}
