//! `berth create`, `destroy` and `gc`: the runtime's calls, by hand.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use berth_runtime::{Origin, Runtime};

pub fn create(state_dir: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let parsed = berth_manifests::parse_file(file);
    if !parsed.is_valid() {
        for diagnostic in &parsed.diagnostics {
            eprintln!("{diagnostic}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if parsed.containers.is_empty() {
        anyhow::bail!("{} holds no container", file.display());
    }
    let runtime = Runtime::new(state_dir);
    for container in &parsed.containers {
        runtime
            .create(container, Origin::Cli)
            .with_context(|| format!("cannot create {}", container.name))?;
        println!("created {}", container.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn destroy(state_dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(state_dir);
    if runtime
        .destroy(name)
        .with_context(|| format!("cannot destroy {name}"))?
    {
        println!("destroyed {name}");
    } else {
        println!("{name} does not exist");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(state_dir);
    let recovered = runtime
        .recover()
        .context("cannot clean up interrupted creates")?;
    for name in &recovered {
        println!("removed interrupted create {name}");
    }
    if recovered.is_empty() {
        println!("nothing to clean up");
    }
    Ok(ExitCode::SUCCESS)
}
