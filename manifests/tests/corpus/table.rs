//! The bad corpus's table (`bad/EXPECTED.tsv`) and its generated inputs, shared by
//! the tests that read it: `berth validate` on each (tests/e2e/corpus.rs, and
//! its timing in tests/bench/corpus.rs) and the JSON Schema's agreement
//! (manifests/tests/schema_agrees.rs). Included with `#[path]`, not a test itself.

#![allow(dead_code)] // each includer uses what it needs

/// One diagnostic `berth validate PATH` must print, in order.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Relative to `bad/`: a file, a directory validated as one (its files are
    /// checked together), or `generated/NAME`, made by `generate`.
    pub path: String,
    /// `LINE:COLUMN`, or `FILE:LINE:COLUMN` for a file inside a directory.
    pub location: String,
    /// Whether the JSON Schema (`berth schema`) rejects the file too; some checks
    /// are `berth validate`'s alone, and some files are not YAML at all.
    pub schema: bool,
    /// A substring of the diagnostic's message.
    pub message: String,
}

pub const TABLE: &str = include_str!("bad/EXPECTED.tsv");

/// The rows of the table, in its order; `#` lines and blank lines are comments.
pub fn expected() -> Vec<Expected> {
    TABLE
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            let [path, location, schema, message] = fields[..] else {
                panic!("EXPECTED.tsv: {line:?} does not have 4 tab-separated fields");
            };
            assert!(
                matches!(schema, "y" | "-"),
                "EXPECTED.tsv: {line:?}: the schema column is y or -"
            );
            Expected {
                path: path.to_owned(),
                location: location.to_owned(),
                schema: schema == "y",
                message: message.to_owned(),
            }
        })
        .collect()
}

const HEAD: &str = "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: bad\nspec:\n  command: [/bin/true]\n";

/// The inputs too large or too regular to commit: `generated/NAME` of the table.
pub fn generate(name: &str) -> Option<Vec<u8>> {
    let deep = 10_000;
    let text = match name {
        // Refused unread, by its size.
        "huge.yaml" => format!("{HEAD}# {}\n", "x".repeat(1 << 20)),
        // Just under the size limit, but 140,000 values: refused at the 10,001st,
        // unread beyond it (reading it all took 66 MiB and seconds).
        "just-under-the-limit.yaml" => {
            let mut text = format!("{HEAD}  env:\n");
            for i in 0..70_000 {
                text.push_str(&format!("    K{i:05}: v\n"));
            }
            text.push_str("  stopSignal: NOPE\n");
            text
        }
        "one-long-line.yaml" => format!("{HEAD}  hostname: {}\n", "a".repeat(1_000_000)),
        "nested-10000-flow-sequences.yaml" => {
            format!("{}{}\n", "[".repeat(deep), "]".repeat(deep))
        }
        "nested-10000-flow-mappings.yaml" => {
            format!("{}x{}\n", "{a: ".repeat(deep), "}".repeat(deep))
        }
        "nested-10000-block-sequences.yaml" => format!("{}x\n", "- ".repeat(deep)),
        "nested-10000-in-a-field.yaml" => {
            format!(
                "{HEAD}  env: {{A: {}{}}}\n",
                "[".repeat(deep),
                "]".repeat(deep)
            )
        }
        "nested-10000-unclosed.yaml" => format!("{HEAD}  env: {}\n", "[".repeat(deep)),
        // Ten levels of ten: 10^10 strings if aliases were expanded.
        "billion-laughs-10-levels.yaml" => {
            let mut text =
                String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
            for level in 1..=10 {
                let refs = vec![format!("*l{}", level - 1); 10].join(", ");
                text.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
            }
            text
        }
        // 5,000 good documents and a bad one: the cost of a big file of many.
        "many-documents.yaml" => {
            let mut text = String::new();
            for i in 0..5_000 {
                text.push_str(&format!(
                    "---\napiVersion: berth.dev/v1\nkind: Container\nmetadata: {{name: c{i}}}\nspec: {{command: [/bin/true]}}\n"
                ));
            }
            text.push_str("---\napiVersion: berth.dev/v1\nkind: Container\nmetadata: {name: C}\nspec: {command: [/bin/true]}\n");
            text
        }
        _ => return None,
    };
    Some(text.into_bytes())
}
