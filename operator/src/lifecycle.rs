//! `berth create`, `destroy`, `gc`, `start`, `stop`, `reboot`, `status`: the
//! runtime's calls, by hand.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use berth_manifests::RootfsSource;
use berth_runtime::{Origin, Runtime};

/// `path` is a manifest file or a directory of them (`berth validate`'s rules).
/// Nothing is created unless every manifest is valid; then each container is
/// created, whatever happened to the others.
/// `pull`: the registry settings, loaded only if a container needs an image.
pub fn create(
    runtime: &Runtime,
    path: &Path,
    pull: impl Fn() -> anyhow::Result<berth_registry::PullOptions>,
) -> anyhow::Result<ExitCode> {
    let (unreadable, parsed) = crate::validate::parse_paths(&[path.to_owned()]);
    let mut invalid = false;
    for diagnostic in unreadable
        .iter()
        .chain(parsed.iter().flat_map(|f| &f.diagnostics))
    {
        eprintln!("{diagnostic}");
        invalid = true;
    }
    if invalid {
        return Ok(ExitCode::FAILURE);
    }
    let containers: Vec<_> = parsed.iter().flat_map(|f| &f.containers).collect();
    if containers.is_empty() {
        anyhow::bail!("{} holds no container", path.display());
    }
    // Made when the first container of an image needs them.
    let mut registry: Option<(
        tokio::runtime::Runtime,
        berth_registry::PullOptions,
        berth_runtime::image::ImageStore,
    )> = None;
    Ok(each(&containers, |container| {
        let name = &container.name;
        if matches!(container.spec.rootfs, RootfsSource::Image { .. }) {
            if registry.is_none() {
                let tokio = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                let store = berth_runtime::image::ImageStore::open(runtime.state_dir())
                    .context("cannot open the image store")?;
                registry = Some((tokio, pull()?, store));
            }
            if let Some((tokio, options, store)) = &registry {
                let ensured = tokio.block_on(crate::images::ensure(
                    store,
                    &container.spec.rootfs,
                    options,
                ));
                match ensured.with_context(|| format!("cannot create {name}"))? {
                    Some((image, crate::images::Fetched::Pulled)) => {
                        println!("pulled {} ({})", image.reference, image.digest);
                    }
                    Some((image, crate::images::Fetched::Kept(error))) => eprintln!(
                        "berth: {error}; using the stored {} ({})",
                        image.reference, image.digest
                    ),
                    _ => {}
                }
            }
        }
        runtime
            .create(container, Origin::Cli)
            .with_context(|| format!("cannot create {name}"))?;
        println!("created {name}");
        Ok(())
    }))
}

/// Acts on every item (a name, a container) in turn, whatever happened to the
/// ones before: each failure is one line on stderr (its error names the
/// container); fails if any failed.
pub fn each<T>(items: &[T], mut act: impl FnMut(&T) -> anyhow::Result<()>) -> ExitCode {
    let mut failed = false;
    for item in items {
        if let Err(err) = act(item) {
            eprintln!("berth: {err:#}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The names given, or with `--all` every container in the state dir.
pub fn names_or_all(
    runtime: &Runtime,
    names: Vec<String>,
    all: bool,
) -> anyhow::Result<Vec<String>> {
    if all {
        runtime.list().context("cannot list the containers")
    } else {
        Ok(names)
    }
}

/// With `force`, a running container is stopped first, without waiting for its
/// stop timeout (like `podman rm -f`).
pub fn destroy(runtime: &Runtime, name: &str, force: bool) -> anyhow::Result<()> {
    if force {
        runtime
            .stop(name, Some(std::time::Duration::ZERO))
            .with_context(|| format!("cannot stop {name}"))?;
    }
    if runtime
        .destroy(name)
        .with_context(|| format!("cannot destroy {name}"))?
    {
        println!("destroyed {name}");
    } else {
        println!("{name} does not exist");
    }
    Ok(())
}

/// Returns whether it removed anything.
pub fn gc(runtime: &Runtime) -> anyhow::Result<bool> {
    let recovered = runtime
        .recover()
        .context("cannot clean up interrupted creates")?;
    for name in &recovered {
        println!("removed interrupted create {name}");
    }
    Ok(!recovered.is_empty())
}

pub fn start(runtime: &Runtime, name: &str, trace: bool) -> anyhow::Result<()> {
    // The runtime's start errors name the container already.
    if !trace {
        let pid = runtime.start(name)?;
        println!("started {name} (init pid {pid})");
        return Ok(());
    }
    let (pid, trace) = runtime.start_traced(name)?;
    println!("started {name} (init pid {pid})");
    print!("{}", trace_table(&trace));
    Ok(())
}

/// One row a step, in milliseconds since the first, then what the steps add up to.
fn trace_table(trace: &berth_runtime::StartTrace) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut table = format!(
        "{:>9}  {:>9}  {:<11}  STEP\n",
        "OFFSET ms", "TOOK ms", "PROCESS"
    );
    for step in &trace.steps {
        table.push_str(&format!(
            "{:>9.3}  {:>9.3}  {:<11}  {}\n",
            ms(step.offset),
            ms(step.duration),
            step.process,
            step.step
        ));
    }
    let in_steps: std::time::Duration = trace.steps.iter().map(|s| s.duration).sum();
    table.push_str(&format!(
        "total {:.3} ms: {:.3} ms in the steps above, {:.3} ms between them (a process waking up)\n",
        ms(trace.total),
        ms(in_steps),
        ms(trace.total.saturating_sub(in_steps))
    ));
    table
}

pub fn stop(
    runtime: &Runtime,
    name: &str,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    match runtime
        .stop(name, timeout)
        .with_context(|| format!("cannot stop {name}"))?
    {
        Some(status)
            if status
                .last_exit
                .as_ref()
                .is_some_and(|e| e.reason == berth_runtime::ExitReason::OrphanKilled) =>
        {
            println!(
                "killed {name}: its monitor was gone ({})",
                describe_exit(&status)
            );
        }
        Some(status) => println!("stopped {name} ({})", describe_exit(&status)),
        None => println!("{name} is not running"),
    }
    Ok(())
}

pub fn reboot(runtime: &Runtime, name: &str) -> anyhow::Result<()> {
    runtime
        .reboot(name)
        .with_context(|| format!("cannot reboot {name}"))?;
    println!("rebooting {name}");
    Ok(())
}

pub fn status(runtime: &Runtime, name: &str) -> anyhow::Result<ExitCode> {
    match runtime.status(name)? {
        Some(status) => println!("{}", serde_json::to_string_pretty(&status)?),
        None => println!("{{\"phase\": \"Created\"}}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_exit(status: &berth_runtime::Status) -> String {
    match &status.last_exit {
        Some(exit) => match (&exit.code, &exit.signal) {
            (Some(code), _) => format!("{:?}, exit code {code}", exit.reason),
            (None, Some(signal)) => format!("{:?}, {signal}", exit.reason),
            (None, None) => format!("{:?}", exit.reason),
        },
        None => format!("{:?}", status.phase),
    }
}
