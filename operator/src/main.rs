//! `berth`: one binary for the daemon, the CLI and the per-container monitor.

mod api;
mod cli;
mod client;
mod container_health;
mod daemon;
mod desired;
mod device;
mod git;
mod health;
mod images;
mod lifecycle;
mod metrics;
mod notify;
mod order;
mod reconcile;
mod rollout;
mod scheduler;
mod selector;
mod status;
mod updates;
mod validate;
mod watcher;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    // A monitor is this binary re-executed with its title as argv[0].
    if let Some(argv0) = std::env::args().next()
        && argv0.starts_with(berth_runtime::monitor::TITLE)
    {
        return ExitCode::from(u8::try_from(berth_runtime::monitor::main(&argv0)).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    if !matches!(cli.command, cli::Command::Daemon { .. }) {
        die_quietly_on_closed_pipes();
    }
    init_logging(&cli.command);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `berth get | head -1` ends as `cat` would: killed by SIGPIPE, not panicking
/// on a failed print (Rust ignores SIGPIPE by default). Not for the daemon and the
/// monitor, which must outlive any reader that goes away.
fn die_quietly_on_closed_pipes() {
    // SAFETY: SIG_DFL installs no handler of ours; nothing else changes SIGPIPE's
    // disposition, and no thread has been started yet.
    if let Err(err) = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    } {
        eprintln!("berth: cannot reset SIGPIPE: {err}");
    }
}

/// The daemon logs what it does (text on a terminal, or JSON lines); commands run
/// by hand report on stdout and log only problems. BERTH_LOG overrides the level.
fn init_logging(command: &cli::Command) {
    let (level, json) = match command {
        cli::Command::Daemon { log_format, .. } => ("info", log_format == "json"),
        _ => ("warn", false),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| level.into());
    // Colours only on a terminal, and never under NO_COLOR (no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(mut cli: cli::Cli) -> anyhow::Result<ExitCode> {
    // Absolute: the monitors run elsewhere (cwd /), and config.json names paths in it.
    cli.state_dir = std::path::absolute(&cli.state_dir)
        .with_context(|| format!("state directory {}", cli.state_dir.display()))?;
    // A delegated daemon's choice, recorded, is every command's default.
    // Commands that never touch the state dir do not read it (a user who may
    // not read /var/lib/berth can still validate).
    let offline = matches!(
        cli.command,
        cli::Command::Validate { .. }
            | cli::Command::Schema
            | cli::Command::Completions { .. }
            | cli::Command::Man
    );
    let cgroup_parent = match &cli.cgroup_parent {
        Some(parent) => parent.clone(),
        None if offline => "berth".to_owned(),
        None => berth_runtime::cgroup::recorded_parent(&cli.state_dir)?
            .unwrap_or_else(|| "berth".to_owned()),
    };
    let runtime = berth_runtime::Runtime::new(&cli.state_dir)
        .with_cgroup_parent(&cgroup_parent)
        .with_network(cli.bridge.clone(), cli.subnet.clone(), cli.subnet6.clone());
    match cli.command {
        cli::Command::Validate { paths } => Ok(validate::run(&paths)),
        cli::Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_manifests::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut cli::Cli::command(),
                "berth",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Man => {
            clap_mangen::Man::new(cli::Cli::command())
                .render(&mut std::io::stdout())
                .context("cannot print the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Create { file } => lifecycle::create(&runtime, &file, || {
            Ok(berth_registry::PullOptions::load(
                cli.registries_conf.as_deref(),
                cli.authfile.as_deref(),
            )?)
        }),
        cli::Command::Destroy { names, all, force } => {
            let names = lifecycle::names_or_all(&runtime, names, all)?;
            Ok(lifecycle::each(&names, |name| {
                lifecycle::destroy(&runtime, name, force)
            }))
        }
        cli::Command::Gc => {
            let recovered = lifecycle::gc(&runtime)?;
            let freed = images::gc(&cli.state_dir)?;
            if !recovered && !freed {
                println!("nothing to clean up");
            }
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Pull { reference } => {
            let options = berth_registry::PullOptions::load(
                cli.registries_conf.as_deref(),
                cli.authfile.as_deref(),
            )?;
            images::pull(&cli.state_dir, &reference, &options)
        }
        cli::Command::Images { output } => images::list(&cli.state_dir, &output),
        cli::Command::Rmi { references } => Ok(lifecycle::each(&references, |reference| {
            images::remove(&cli.state_dir, reference)
        })),
        cli::Command::Start { names, trace } => Ok(lifecycle::each(&names, |name| {
            lifecycle::start(&runtime, name, trace)
        })),
        cli::Command::Stop {
            names,
            all,
            timeout,
        } => {
            let names = lifecycle::names_or_all(&runtime, names, all)?;
            Ok(lifecycle::each(&names, |name| {
                lifecycle::stop(&runtime, name, timeout)
            }))
        }
        cli::Command::Reboot { names } => Ok(lifecycle::each(&names, |name| {
            lifecycle::reboot(&runtime, name)
        })),
        cli::Command::Status { name, output } => match name {
            Some(name) => lifecycle::status(&runtime, &name),
            None => status::print(&cli.state_dir, &output).map(|()| ExitCode::SUCCESS),
        },
        cli::Command::Exec {
            name,
            env,
            workdir,
            interactive,
            tty,
            command,
        } => {
            // Before anything else: the container must never see the host's binary.
            berth_runtime::reexec_from_sealed_copy(runtime.state_dir())?;
            let options = berth_runtime::ExecOptions {
                command,
                env,
                working_dir: workdir,
                stdin: interactive,
                tty,
            };
            let code = runtime.exec(&name, &options)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        cli::Command::Daemon {
            manifests,
            resync,
            concurrency,
            crash_backoff,
            prune_grace,
            log_format: _,
            git,
            git_ref,
            git_path,
            git_interval,
            git_ssh_key,
            git_verify,
            metrics_addr,
            labels,
            labels_file,
            cgroup_delegate,
            stop_on_exit,
        } => {
            // Before anything starts: a bad labels file is the operator's to fix.
            let labels = device::labels(&labels, &labels_file).map_err(anyhow::Error::msg)?;
            let git = git
                .map(|url| {
                    git::Options::new(
                        url,
                        git_ref,
                        git_path,
                        git_interval,
                        git_ssh_key,
                        git_verify,
                    )
                })
                .transpose()?;
            let manifests = match &git {
                Some(git) => git.manifest_dir(&cli.state_dir),
                None => manifests,
            };
            // One sealed copy of berth, shared by every monitor the daemon starts.
            berth_runtime::reexec_from_sealed_copy(runtime.state_dir())?;
            let concurrency = concurrency
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            daemon::run(
                runtime,
                daemon::Options {
                    manifests,
                    resync,
                    concurrency,
                    backoff_base: crash_backoff,
                    prune_grace,
                    registries: images::RegistrySettings {
                        conf: cli.registries_conf.clone(),
                        authfile: cli.authfile.clone(),
                    },
                    git,
                    metrics_addr,
                    labels,
                    cgroup_delegate,
                    stop_on_exit,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Get {
            name,
            output,
            selector,
            show_labels,
            all,
        } => {
            let options = client::GetOptions {
                name: name.as_deref(),
                selector: selector.as_deref(),
                show_labels,
                all,
            };
            client::get(&runtime, &options, &output).map(|()| ExitCode::SUCCESS)
        }
        cli::Command::Describe { name } => {
            client::describe(&runtime, &name).map(|()| ExitCode::SUCCESS)
        }
        cli::Command::Logs { name, follow, tail } => {
            client::logs(&runtime, &name, follow, tail).map(|()| ExitCode::SUCCESS)
        }
        cli::Command::Events { follow } => {
            client::events(&cli.state_dir, follow).map(|()| ExitCode::SUCCESS)
        }
    }
}
