//! The `kredis` command line. Glue only: parse arguments, start telemetry, run the task, map
//! errors to exit codes.
#![forbid(unsafe_code)]

mod dev;
mod local;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kredis: a Kubernetes operator for Redis Cluster.
#[derive(Debug, Parser)]
#[command(name = "kredis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local Redis Cluster of redis-server processes, built by the engine alone
    /// (no Kubernetes), and keep it running until Ctrl-C.
    Local(local::LocalArgs),
    /// Run the development control plane (a small Kubernetes with real redis-server processes).
    Dev(dev::DevArgs),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: failed to start the tokio runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local(args) => local::run(args).await,
            Command::Dev(args) => dev::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
