//! `kredis operator`: run the controller and its HTTP API against a Kubernetes API server
//! until SIGINT/SIGTERM. Glue: arguments -> validated options -> `kredis_operator::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use kredis_operator::{OperatorConfig, RunOptions};

/// Arguments of `kredis operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Kubeconfig file (default: in-cluster config, then $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KREDIS_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP API (/v1/..., /metrics, /healthz, /readyz).
    #[arg(long, env = "KREDIS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Use a Lease so only one replica reconciles (not built yet: refused rather than ignored).
    #[arg(long)]
    leader_elect: bool,
}

/// A kube client from a kubeconfig file, or the default chain.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("failed to use the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("failed to find a Kubernetes configuration")?,
    };
    kube::Client::try_from(config).context("failed to build the Kubernetes client")
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.leader_elect,
        "--leader-elect is not available in this version: run a single replica"
    );
    let client = client(args.kubeconfig.as_ref()).await?;
    let options = RunOptions {
        namespace: args.namespace,
        http_addr: args.http_addr,
        config: OperatorConfig::default(),
    };
    kredis_operator::run(client, options, crate::signal::shutdown())
        .await
        .context("the operator failed")
}
