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

/// Aliases may add this many nodes to a document, no more. Reading an alias
/// bomb ("billion laughs") as values costs serde_yaml its repetition limit: a
/// third of a second and 15 MiB for a 300-byte file. A manifest has no use for
/// more than a few reused values.
pub const MAX_ALIASED_NODES: u64 = 10_000;

/// Documents nested deeper than this are refused unread: libyaml's scanner takes
/// time quadratic in the depth of flow collections (`[[[[...`: 6 s for 10,000
/// levels), and a manifest's fields go 6 deep.
pub const MAX_NESTING: usize = 64;

/// Documents with more values than this are refused unread: a manifest has a
/// few hundred, and reading one of a megabyte of short entries (70,000 `env`
/// pairs) costs libyaml, serde and this index 66 MiB and seconds.
pub const MAX_NODES: u64 = 10_000;

/// Fields deeper than this are not indexed (a manifest's go 6 deep): a path per
/// node of 10,000 nested sequences, `[0][0]...`, would take 300 MB.
const MAX_INDEXED_DEPTH: usize = 32;

/// Positions in one YAML document.
#[derive(Debug, Default)]
pub struct DocumentIndex {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
    /// The alias at which the nodes aliases add pass `MAX_ALIASED_NODES`.
    pub alias_bomb: Option<Position>,
    /// The collection that opens level `MAX_NESTING + 1`.
    pub too_deep: Option<Position>,
    /// The value that passes `MAX_NODES`.
    pub too_big: Option<Position>,
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

/// How many nodes each anchor stands for, and how many aliases added so far.
#[derive(Default)]
struct AliasCount {
    anchors: HashMap<usize, u64>,
    /// The open collections: nodes so far (the collection itself included), anchor.
    open: Vec<(u64, usize)>,
    added: u64,
}

impl AliasCount {
    /// Count one event; true when the aliases now add too many nodes.
    fn event(&mut self, event: &Event) -> bool {
        let (nodes, anchor) = match event {
            Event::Scalar(_, _, anchor, _) => (1, *anchor),
            Event::Alias(anchor) => {
                let nodes = self.anchors.get(anchor).copied().unwrap_or(1);
                self.added = self.added.saturating_add(nodes);
                (nodes, 0)
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                self.open.push((1, *anchor));
                return false;
            }
            Event::MappingEnd | Event::SequenceEnd => self.open.pop().unwrap_or((1, 0)),
            _ => return false,
        };
        if anchor != 0 {
            self.anchors.insert(anchor, nodes);
        }
        if let Some((parent, _)) = self.open.last_mut() {
            *parent = parent.saturating_add(nodes);
        }
        self.added > MAX_ALIASED_NODES
    }
}

/// Index every document of `text`. Documents past a syntax error get no entry.
pub fn index(text: &str) -> Vec<DocumentIndex> {
    let mut docs: Vec<DocumentIndex> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut aliases = AliasCount::default();
    let mut too_deep = 0usize;
    let mut nodes = 0u64;
    // yaml-rust2 refuses a tab after `key:` (`stopSignal:\tNOPE`), which libyaml
    // and YAML allow, and would index nothing after it. A tab where YAML forbids
    // one is libyaml's error to report; here a space, one byte and one column
    // like the tab, keeps every position.
    let untabbed;
    let text = if text.contains('\t') {
        untabbed = text.replace('\t', " ");
        untabbed.as_str()
    } else {
        text
    };
    let mut parser = Parser::new_from_str(text);
    // A parser bug must not hang validation: no document has more events than chars.
    for _ in 0..=text.len() + 16 {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                // yaml-rust2 stops at 255 levels of flow collections, before its
                // parser has told of the first 64 if a key might still follow.
                if e.info().contains("recursion limit") {
                    if docs.is_empty() {
                        docs.push(DocumentIndex::default());
                    }
                    if let Some(doc) = docs.last_mut() {
                        doc.too_deep = Some(Position {
                            line: e.marker().line(),
                            column: e.marker().col() + 1,
                        });
                    }
                }
                break;
            }
        };
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        if aliases.event(&event)
            && let Some(doc) = docs.last_mut()
        {
            doc.alias_bomb.get_or_insert(pos);
        }
        if matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
        ) {
            nodes += 1;
            if nodes > MAX_NODES
                && let Some(doc) = docs.last_mut()
            {
                // Nothing after it is read, as for a document too deep.
                doc.too_big = Some(pos);
                break;
            }
        }
        if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..))
            && stack.len() + too_deep >= MAX_NESTING
            && let Some(doc) = docs.last_mut()
        {
            // Nothing after it is read: stop here, before yaml-rust2 goes down too.
            doc.too_deep = Some(pos);
            break;
        }
        // Below MAX_INDEXED_DEPTH nothing is indexed, only counted to find the way up.
        if too_deep > 0 || stack.len() >= MAX_INDEXED_DEPTH {
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    too_deep += 1;
                    continue;
                }
                Event::MappingEnd | Event::SequenceEnd if too_deep > 0 => {
                    too_deep -= 1;
                    continue;
                }
                Event::Scalar(..) | Event::Alias(_) if too_deep > 0 => continue,
                _ => {}
            }
        }
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                stack.clear();
                too_deep = 0;
                nodes = 0;
                aliases = AliasCount::default();
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
