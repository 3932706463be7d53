//! `kredis dev`: wires the development control plane from `kredis-devkube` — parses and
//! validates arguments, starts the control plane, writes the kubeconfig, optionally applies the
//! example, and runs in the foreground until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kredis_api::{KRedis, NodeRole, Phase};
use kredis_devkube::{DevCluster, DevClusterOptions};
use kredis_operator::{OperatorConfig, RunOptions};

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
    /// Do not run the operator in-process (its HTTP API would listen on 127.0.0.1:<port+1>).
    #[arg(long)]
    no_operator: bool,
    /// Apply examples/kredis.yaml once the control plane is up.
    #[arg(long)]
    example: bool,
}

/// Where `--example` looks.
const EXAMPLE: &str = "examples/kredis.yaml";
/// The in-process operator's `secret_volume_sync`: the dev kubelet brings Secret volumes up
/// to date every second (a real one takes up to about two minutes), so a few seconds cover it.
pub const DEV_SECRET_VOLUME_SYNC: Duration = Duration::from_secs(3);

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
    let api_port = config.options.port;
    let cluster = DevCluster::start(config.options)
        .await
        .context("failed to start the development control plane")?;
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    println!("kredis dev: Kubernetes API at {} with {nodes} node(s) dev-node-1..{nodes} (127.1.0.1..{nodes})", cluster.url());
    println!("kubeconfig: {kubeconfig}");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodes");
    println!("State is in memory only; Ctrl-C stops every process and discards all objects.");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut operator = None;
    if config.operator {
        let crd =
            serde_saphyr::to_string(&kredis_api::crd()).context("failed to serialize the CRD")?;
        cluster
            .apply_yaml(&crd)
            .context("failed to install the KRedis CRD")?;
        let http_addr = SocketAddr::from(([127, 0, 0, 1], api_port.saturating_add(1)));
        let client = cluster.client().context("failed to build a client")?;
        let options = RunOptions {
            namespace: None,
            http_addr,
            config: OperatorConfig {
                // The dev kubelet refreshes Secret volumes within a second.
                secret_volume_sync: DEV_SECRET_VOLUME_SYNC,
                ..OperatorConfig::default()
            },
            leader_election: None,
        };
        println!("operator: running in-process; HTTP API at http://{http_addr} (try /v1/clusters)");
        operator = Some(tokio::spawn(kredis_operator::run(client, options, async {
            let _ = stopped.await;
        })));
    }
    if config.example {
        match std::fs::read_to_string(EXAMPLE) {
            Ok(text) => match cluster.apply_yaml(&text) {
                Ok(applied) => {
                    println!("applied {EXAMPLE}: {}", applied.join(", "));
                    if config.operator {
                        if let Ok(client) = cluster.client() {
                            tokio::spawn(announce_example(client, text));
                        }
                    }
                }
                Err(err) => println!("could not apply {EXAMPLE}: {err:#} (is its CRD installed?)"),
            },
            Err(err) => {
                println!("--example: cannot read {EXAMPLE} ({err}); run from the repository root")
            }
        }
    }
    crate::signal::shutdown().await;
    // The operator first, so it does not react to the pods the shutdown stops.
    let _ = stop.send(());
    if let Some(task) = operator {
        match tokio::time::timeout(OPERATOR_STOP, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("operator: {:#}", anyhow::Error::from(e)),
            Ok(Err(e)) => eprintln!("operator task: {e}"),
            Err(_) => eprintln!("operator: did not stop within {OPERATOR_STOP:?}"),
        }
    }
    cluster.shutdown().await;
    println!("kredis dev: stopped");
    Ok(())
}

/// How long the in-process operator may take to finish its current step at shutdown.
const OPERATOR_STOP: Duration = Duration::from_secs(20);
/// How long `--example` waits for the example cluster before it stops announcing.
const EXAMPLE_WAIT: Duration = Duration::from_secs(300);

/// Waits for the example KRedis to be Ready, then prints how to connect to it.
async fn announce_example(client: kube::Client, manifest: String) {
    let Some((ns, name)) = example_name(&manifest) else {
        return;
    };
    let api: kube::Api<KRedis> = kube::Api::namespaced(client, &ns);
    let deadline = tokio::time::Instant::now() + EXAMPLE_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(k) = api.get(&name).await {
            if let Some(status) = k.status.as_ref().filter(|s| s.phase == Some(Phase::Ready)) {
                let first = status
                    .nodes
                    .iter()
                    .find(|n| n.role == Some(NodeRole::Master) && n.host.is_some());
                println!(
                    "\nKRedis {ns}/{name} is Ready: {}",
                    status.ready_display.clone().unwrap_or_default()
                );
                println!("  kubectl get kredis {name} -o wide; kubectl get pods -o wide");
                if let Some(n) = first {
                    let host = n.host.clone().unwrap_or_default();
                    let auth = match &status.auth_secret {
                        Some(secret) => format!(
                            " -a \"$(kubectl get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d)\""
                        ),
                        None => String::new(),
                    };
                    println!("  redis-cli -c -h {host} -p {}{auth}", n.port);
                }
                println!("  kubectl patch kredis {name} --type merge -p '{{\"spec\":{{\"masters\":4}}}}'   # scale out");
                println!("  kubectl delete pod {name}-0   # watch it heal: kubectl get kredis -w");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "KRedis {ns}/{name} is not Ready after {EXAMPLE_WAIT:?}: kubectl describe kredis {name}"
    );
}

/// Namespace and name of the first KRedis in a manifest.
fn example_name(manifest: &str) -> Option<(String, String)> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifest).ok()?;
    let doc = docs
        .iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("KRedis"))?;
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_owned();
    let ns = meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_owned();
    Some((ns, name))
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
