//! `kredis operator`: run the controller and its HTTP API against a Kubernetes API server
//! until SIGINT/SIGTERM. Glue: arguments -> validated options -> `kredis_operator::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use kredis_operator::leader::{LeaderElection, LeaseTimings};
use kredis_operator::{OperatorConfig, RunOptions};

/// The Lease every replica competes for.
const LEASE_NAME: &str = "kredis-operator";

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
    /// Reconcile only while holding the Lease `kredis-operator` (run 2+ replicas for a
    /// standby that takes over within the lease duration; every replica serves the HTTP API).
    #[arg(long, env = "KREDIS_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in Events (default: POD_NAME, else host-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds the kubelet may take to update a Secret volume after the Secret changed; a
    /// renewed TLS certificate is reloaded on every node until they have passed (raise it if
    /// your kubelets use a longer `syncFrequency`).
    #[arg(long, env = "KREDIS_SECRET_VOLUME_SYNC_SECONDS", default_value_t = kredis_operator::context::SECRET_VOLUME_SYNC.as_secs())]
    secret_volume_sync_seconds: u64,
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
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "kredis".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    anyhow::ensure!(!identity.is_empty(), "--identity must not be empty");
    let client = client(args.kubeconfig.as_ref()).await?;
    let config = OperatorConfig {
        instance: identity.clone(),
        secret_volume_sync: std::time::Duration::from_secs(args.secret_volume_sync_seconds),
        ..OperatorConfig::default()
    };
    let options = RunOptions {
        namespace: args.namespace,
        http_addr: args.http_addr,
        config,
        leader_election: args.leader_elect.then(|| LeaderElection {
            namespace: args.lease_namespace.clone(),
            name: LEASE_NAME.into(),
            identity,
            timings: LeaseTimings::default(),
        }),
    };
    kredis_operator::run(client, options, crate::signal::shutdown())
        .await
        .context("the operator failed")
}
