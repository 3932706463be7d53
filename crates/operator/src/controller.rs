//! Wiring: the kube-runtime Controller (one reconcile at a time per KRedis, many KRedis in
//! parallel: the seed's queue per resource) plus the HTTP API, until shutdown.
//!
//! `Controller::new(KRedis).owns(Pod).owns(Secret)`: a pod event reconciles its owner at once,
//! which is how a deleted master pod is failed over without waiting for Redis' node timeout.
//! Secrets a KRedis names (TLS, auth) are watched too, so a renewal or a new password acts at
//! once.
//! At start the controller lists every KRedis and reconciles each before it follows events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::FutureExt;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kredis_api::{labels, KRedis};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::context::{Context, OperatorConfig};
use crate::http::{router, ApiState};
use crate::leader::{self, LeaderElection};
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
    /// Reconcile only while holding this Lease (None: always; one replica only).
    pub leader_election: Option<LeaderElection>,
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

/// The KRedis that name `secret` as their TLS or auth Secret.
fn referencing(kredis: &reflector::Store<KRedis>, secret: &Secret) -> Vec<ObjectRef<KRedis>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    kredis
        .state()
        .iter()
        .filter(|k| k.namespace() == ns)
        .filter(|k| {
            k.spec.tls.as_ref().is_some_and(|t| t.secret_name == name)
                || k.spec.auth.secret_name.as_deref() == Some(name.as_str())
        })
        .map(|k| ObjectRef::from_obj(&**k))
        .collect()
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

    // The HTTP API reads its own watch cache: a standby that does not reconcile still
    // answers (MISSION: the address API must survive the leader).
    let (reader, writer) = reflector::store::<KRedis>();
    let cache = reflector(
        writer,
        watcher(api::<KRedis>(&client, ns), watcher::Config::default()).default_backoff(),
    )
    .for_each(|event| async move {
        if let Err(e) = event {
            warn!(error = %e, "KRedis watch failed; retrying");
        }
    });
    let ready = Arc::new(AtomicBool::new(false));
    let mark_ready = {
        let reader = reader.clone();
        let ready = ready.clone();
        async move {
            if reader.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Relaxed);
            }
        }
    };
    let local = listener.local_addr().unwrap_or(options.http_addr);
    info!(addr = %local, "HTTP API listening");
    let app = router(ApiState {
        store: reader,
        metrics: metrics.clone(),
        ready,
    });
    let http = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone());

    let (leading_tx, leading) = watch::channel(options.leader_election.is_none());
    // Aborted when `serve` returns or is dropped: a dropped operator must not keep renewing.
    let _election = options.leader_election.clone().map(|e| {
        let client = client.clone();
        AbortOnDrop(tokio::spawn(leader::run(client, e, leading_tx)))
    });
    let controllers = reconcile_while_leading(
        client.clone(),
        options.clone(),
        metrics,
        leading,
        shutdown.clone(),
    );
    let background = async {
        tokio::join!(cache, mark_ready);
    };
    let result = tokio::select! {
        (http, ()) = async { tokio::join!(http, controllers) } => http.map_err(RunError::Serve),
        () = background => Ok(()),
    };
    info!("operator stopped");
    result
}

/// Completes when leadership is lost; never when there is no election (the sender is gone).
async fn lost(leading: &mut watch::Receiver<bool>) {
    if leading.wait_for(|l| !*l).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the controller whenever this replica leads, until `shutdown`. Losing the lease drops
/// the controller at once (every in-flight reconcile with it): a reconcile cut short is what
/// a crash leaves, which the next leader repairs, while two reconciling replicas would race.
async fn reconcile_while_leading(
    client: Client,
    options: RunOptions,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) {
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            () = shutdown.clone() => return,
        }
        info!("leading: starting the controller");
        let ns = options.namespace.as_deref();
        let controller = Controller::new(api::<KRedis>(&client, ns), watcher::Config::default());
        let kredis = controller.store();
        let controller = controller
            .owns(
                api::<Pod>(&client, ns),
                watcher::Config::default().labels(&format!(
                    "{}={}",
                    labels::NAME,
                    labels::APP_NAME
                )),
            )
            .owns(
                api::<Secret>(&client, ns),
                watcher::Config::default().labels(&format!(
                    "{}={}",
                    labels::MANAGED_BY_KEY,
                    labels::MANAGED_BY
                )),
            )
            // Secrets the user names (a TLS Secret that cert-manager renews, an auth Secret
            // with a new password): their KRedis is reconciled at once, not at the next resync.
            .watches(
                api::<Secret>(&client, ns),
                watcher::Config::default(),
                move |secret: Secret| referencing(&kredis, &secret),
            );
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                controller.store(),
                metrics.clone(),
                options.config.clone(),
            )
            .with_leadership(leading.clone()),
        );
        let run = controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => debug!(cluster = %obj, "reconciled"),
                    Err(e) => warn!(error = %e, "controller error"),
                }
            });
        tokio::select! {
            () = run => return,
            () = lost(&mut leading) => {
                warn!("lost the lease: controller stopped");
                metrics.forget_all_clusters();
            }
        }
    }
}
