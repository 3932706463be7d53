//! `kredis dev`: wires the development control plane from `kredis-devkube` — parses and
//! validates arguments, starts the control plane, writes the kubeconfig, optionally applies the
//! example, and runs in the foreground until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use kredis_devkube::{DevCluster, DevClusterOptions};

/// Arguments of `kredis dev`.
///
/// Runs a small Kubernetes on this machine: an API server emulator on 127.0.0.1 and simulated
/// worker nodes whose kubelets run pods as local processes (redis-server included). All state
/// is kept in memory: stopping `kredis dev` discards every object and stops every process.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "State is in memory only: stopping kredis dev (Ctrl-C, SIGTERM) stops every \
process it started and discards all objects. Nodes are dev-node-1..N at 127.1.0.<i>; pods get \
127.1.<i>.<n> and run as local processes."
)]
pub struct DevArgs {
    /// State directory: kubeconfig, per-pod directories and container logs (not objects: those
    /// live in memory).
    #[arg(long, env = "KREDIS_DEV_DIR", default_value = ".kredis-dev")]
    dir: PathBuf,
    /// API server port on 127.0.0.1.
    #[arg(long, env = "KREDIS_DEV_PORT", default_value_t = 6440)]
    port: u16,
    /// Number of worker nodes to start with (1-250).
    #[arg(long, env = "KREDIS_DEV_NODES", default_value_t = 3)]
    nodes: usize,
    /// Do not run the operator in-process.
    #[arg(long)]
    no_operator: bool,
    /// Apply examples/kredis.yaml once the control plane is up.
    #[arg(long)]
    example: bool,
}

/// Where `--example` looks.
const EXAMPLE: &str = "examples/kredis.yaml";

/// Validated `kredis dev` configuration.
struct DevConfig {
    options: DevClusterOptions,
    operator: bool,
    example: bool,
}

impl DevArgs {
    fn validate(self) -> anyhow::Result<DevConfig> {
        anyhow::ensure!(
            (1..=250).contains(&self.nodes),
            "--nodes must be between 1 and 250, got {}",
            self.nodes
        );
        anyhow::ensure!(self.port != 0, "--port must not be 0");
        let dir = if self.dir.is_absolute() {
            self.dir
        } else {
            std::env::current_dir()
                .context("failed to read the current directory")?
                .join(self.dir)
        };
        let mut options = DevClusterOptions::new(dir);
        options.port = self.port;
        options.nodes = self.nodes;
        Ok(DevConfig {
            options,
            operator: !self.no_operator,
            example: self.example,
        })
    }
}

/// Runs `kredis dev` until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let nodes = config.options.nodes;
    let cluster = DevCluster::start(config.options)
        .await
        .context("failed to start the development control plane")?;
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    println!("kredis dev: Kubernetes API at {} with {nodes} node(s) dev-node-1..{nodes} (127.1.0.1..{nodes})", cluster.url());
    println!("kubeconfig: {kubeconfig}");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodes");
    println!("State is in memory only; Ctrl-C stops every process and discards all objects.");
    if config.operator {
        println!("note: the kredis operator is not built yet; running without it (same as --no-operator).");
    }
    if config.example {
        match std::fs::read_to_string(EXAMPLE) {
            Ok(text) => match cluster.apply_yaml(&text) {
                Ok(applied) => println!("applied {EXAMPLE}: {}", applied.join(", ")),
                Err(err) => println!("could not apply {EXAMPLE}: {err:#} (is its CRD installed?)"),
            },
            Err(err) => {
                println!("--example: cannot read {EXAMPLE} ({err}); run from the repository root")
            }
        }
    }
    kredis_devkube::run_until_signal(cluster)
        .await
        .context("development control plane failed")?;
    println!("kredis dev: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    #[test]
    fn defaults_and_validation() {
        let cli = Cli::try_parse_from(["dev"]).unwrap();
        let config = cli.dev.validate().unwrap();
        assert_eq!(
            (config.options.port, config.options.nodes, config.operator),
            (6440, 3, true)
        );
        assert!(config.options.dir.is_absolute() && config.options.dir.ends_with(".kredis-dev"));
        let cli = Cli::try_parse_from(["dev", "--nodes", "0"]).unwrap();
        assert!(cli.dev.validate().is_err());
        let cli =
            Cli::try_parse_from(["dev", "--no-operator", "--example", "--port", "7000"]).unwrap();
        let config = cli.dev.validate().unwrap();
        assert!(!config.operator && config.example);
        assert_eq!(config.options.port, 7000);
    }
}
