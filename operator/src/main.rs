//! `berth`: one binary for the daemon, the CLI and the per-container monitor.

mod cli;
mod lifecycle;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A monitor is this binary re-executed with its title as argv[0].
    if let Some(argv0) = std::env::args().next()
        && argv0.starts_with(berth_runtime::monitor::TITLE)
    {
        return ExitCode::from(u8::try_from(berth_runtime::monitor::main(&argv0)).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // Commands by hand report on stdout; logs are for problems (BERTH_LOG=info for more).
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    let runtime =
        berth_runtime::Runtime::new(&cli.state_dir).with_cgroup_parent(&cli.cgroup_parent);
    match cli.command {
        cli::Command::Validate { paths } => Ok(validate::run(&paths)),
        cli::Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_manifests::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Create { file } => lifecycle::create(&runtime, &file),
        cli::Command::Destroy { name } => lifecycle::destroy(&runtime, &name),
        cli::Command::Gc => lifecycle::gc(&runtime),
        cli::Command::Start { name } => lifecycle::start(&runtime, &name),
        cli::Command::Stop { name, timeout } => lifecycle::stop(&runtime, &name, timeout),
        cli::Command::Reboot { name } => lifecycle::reboot(&runtime, &name),
        cli::Command::Status { name } => lifecycle::status(&runtime, &name),
    }
}
