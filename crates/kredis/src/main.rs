//! The `kredis` command line. Glue only: parse arguments, start telemetry, run the task, map
//! errors to exit codes.
#![forbid(unsafe_code)]

mod crd;
mod dev;
mod local;
mod manifests;
mod operator;
mod signal;

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
    /// Print the KRedis CustomResourceDefinition as YAML.
    Crd,
    /// Print the CRD and the operator's install manifests (RBAC, Deployment, Service) as YAML.
    Manifests(manifests::ManifestsArgs),
    /// Run the kredis operator (controller + HTTP API) against a Kubernetes API server.
    Operator(operator::OperatorArgs),
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
    // No runtime and no logging: the output is meant to be redirected into deploy/crd.yaml.
    if let Command::Crd = cli.command {
        return exit_code(crd::run());
    }
    if let Command::Manifests(args) = cli.command {
        return exit_code(manifests::run(args));
    }
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
            Command::Operator(args) => operator::run(args).await,
            Command::Crd => crd::run(),
            Command::Manifests(args) => manifests::run(args),
        }
    });
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
