//! Shared test harness: a dev control plane on a free loopback port in a temporary directory,
//! torn down (every process killed) when the guard drops, even on panic.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use kredis_devkube::{DevCluster, DevClusterOptions};

/// Drop order matters: the cluster (and its processes) before the directory.
pub struct Harness {
    pub cluster: DevCluster,
    pub dir: tempfile::TempDir,
}

pub async fn start(
    nodes: usize,
    kubelets: bool,
    tweak: impl FnOnce(&mut DevClusterOptions),
) -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevClusterOptions::for_tests(dir.path());
    opts.nodes = nodes;
    opts.kubelets = kubelets;
    tweak(&mut opts);
    let cluster = DevCluster::start(opts).await.expect("start dev cluster");
    Harness { cluster, dir }
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
