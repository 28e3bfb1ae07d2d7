//! `berth`: one binary for the daemon, the CLI and the per-container monitor.

mod cli;
mod lifecycle;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info".into()),
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
    match cli.command {
        cli::Command::Validate { paths } => Ok(validate::run(&paths)),
        cli::Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_manifests::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Create { file } => lifecycle::create(&cli.state_dir, &file),
        cli::Command::Destroy { name } => lifecycle::destroy(&cli.state_dir, &name),
        cli::Command::Gc => lifecycle::gc(&cli.state_dir),
    }
}
