//! Wiring: the kube-runtime Controller (one reconcile at a time per KRedis, many KRedis in
//! parallel: the seed's queue per resource) plus the HTTP API, until shutdown.
//!
//! `Controller::new(KRedis).owns(Pod).owns(Secret)`: a pod event reconciles its owner at once,
//! which is how a deleted master pod is failed over without waiting for Redis' node timeout.
//! At start the controller lists every KRedis and reconciles each before it follows events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::FutureExt;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kredis_api::{labels, KRedis};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::context::{Context, OperatorConfig};
use crate::http::{router, ApiState};
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch only this namespace (None: all).
    pub namespace: Option<String>,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Per-reconcile settings.
    pub config: OperatorConfig,
}

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP API could not listen.
    #[error("failed to listen on {addr} for the HTTP API")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the HTTP API failed")]
    Serve(#[source] std::io::Error),
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller and the HTTP API until `shutdown` completes; in-flight reconciles
/// finish their current step first.
pub async fn run(
    client: Client,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: options.http_addr,
            source,
        })?;
    serve(client, listener, options, shutdown).await
}

/// [`run`] with the HTTP API on an already bound listener (`options.http_addr` is ignored).
pub async fn serve(
    client: Client,
    listener: tokio::net::TcpListener,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.boxed().shared();
    let ns = options.namespace.as_deref();
    let metrics = Arc::new(Metrics::new());
    let controller = Controller::new(api::<KRedis>(&client, ns), watcher::Config::default())
        .owns(
            api::<Pod>(&client, ns),
            watcher::Config::default().labels(&format!("{}={}", labels::NAME, labels::APP_NAME)),
        )
        .owns(
            api::<Secret>(&client, ns),
            watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY_KEY,
                labels::MANAGED_BY
            )),
        );
    let store = controller.store();
    let ready = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Context::new(
        client.clone(),
        store.clone(),
        metrics.clone(),
        options.config.clone(),
    ));

    let local = listener.local_addr().unwrap_or(options.http_addr);
    info!(addr = %local, "HTTP API listening");
    let app = router(ApiState {
        store: store.clone(),
        metrics,
        ready: ready.clone(),
    });
    let http = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone());

    let mark_ready = {
        let store = store.clone();
        async move {
            if store.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Relaxed);
                info!("watch cache filled: every KRedis is being reconciled");
            }
        }
    };
    let run = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(cluster = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "controller error"),
            }
        });
    let (http, _, _) = tokio::join!(http, run, mark_ready);
    http.map_err(RunError::Serve)?;
    info!("operator stopped");
    Ok(())
}
