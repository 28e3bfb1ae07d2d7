//! `berth validate PATH...`

use std::path::PathBuf;
use std::process::ExitCode;

use berth_manifests::{
    Diagnostic, ParsedFile, Position, check_dependencies, manifest_files, parse_file,
    reject_duplicate_names,
};

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let (unreadable, parsed) = parse_paths(paths);
    let diagnostics = unreadable
        .iter()
        .chain(parsed.iter().flat_map(|f| &f.diagnostics));
    let mut errors = 0;
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
        errors += 1;
    }
    let containers: usize = parsed.iter().map(|f| f.containers.len()).sum();
    let bad_files = parsed.iter().filter(|f| !f.is_valid()).count();
    let files = plural(parsed.len(), "file");
    if errors == 0 {
        println!("{files} valid, {}", plural(containers, "container"));
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} in {bad_files} of {files}; {} valid",
            plural(errors, "error"),
            plural(containers, "container")
        );
        ExitCode::FAILURE
    }
}

/// Every manifest of `paths` (files, or directories searched as the daemon does),
/// parsed, with names used twice rejected; and the directories that could not be read.
pub fn parse_paths(paths: &[PathBuf]) -> (Vec<Diagnostic>, Vec<ParsedFile>) {
    let mut unreadable = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let (found, errors) = manifest_files(path);
            files.extend(found);
            for (at, err) in errors {
                unreadable.push(Diagnostic::new(
                    &at,
                    Position::START,
                    format!("cannot read directory: {err}"),
                ));
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut parsed: Vec<ParsedFile> = files.iter().map(|f| parse_file(f)).collect();
    reject_duplicate_names(&mut parsed);
    check_dependencies(&mut parsed);
    (unreadable, parsed)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
