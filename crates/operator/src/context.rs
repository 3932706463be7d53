//! What every reconcile shares: the kube client, the Event recorder, metrics, the cache of
//! KRedis objects, one admin connection pool per cluster, and per-cluster backoff. No
//! network of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kredis_api::KRedis;
use kredis_engine::admin::{Admin, AdminConfig, Credentials, TlsConfig};
use kredis_engine::exec::ExecOptions;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::Client;

use crate::metrics::Metrics;

/// How long WaitConverged may take inside a reconcile. Shorter than the engine's default
/// (60 s): a cluster still gossiping is simply reconciled again, and a shorter wait keeps
/// status fresh.
pub const RECONCILE_CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`OperatorConfig::secret_volume_sync`]: the kubelet's default sync period
/// (60 s) plus the TTL of its Secret cache (60 s at most with the default Watch strategy, which
/// is usually far quicker).
pub const SECRET_VOLUME_SYNC: Duration = Duration::from_secs(120);

/// Operator settings that are not per cluster.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Name of this controller in Events (`reportingController`).
    pub controller_name: String,
    /// This replica's identity (pod name), in Events and leases.
    pub instance: String,
    /// Engine executor settings.
    pub exec: ExecOptions,
    /// Requeue interval of a Ready cluster: drift that no event announces (a Redis node
    /// changed behind our back) is found within this.
    pub resync: Duration,
    /// Requeue interval while a cluster converges.
    pub busy_requeue: Duration,
    /// How long after a Secret changes its volumes may still hold the old content: the
    /// kubelet's sync period (1 min by default) plus its Secret cache. A renewed TLS Secret is
    /// reloaded on every node until this has passed ([`crate::renewal`]).
    pub secret_volume_sync: Duration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            controller_name: "kredis-operator".into(),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "kredis-operator".into()),
            exec: ExecOptions {
                converge_timeout: RECONCILE_CONVERGE_TIMEOUT,
                ..ExecOptions::default()
            },
            resync: Duration::from_secs(30),
            busy_requeue: Duration::from_secs(2),
            secret_volume_sync: SECRET_VOLUME_SYNC,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Every KRedis, from the controller's watch cache.
    pub store: Store<KRedis>,
    /// Settings.
    pub config: OperatorConfig,
    /// Whether this replica holds the leader Lease (None: no election).
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Which nodes have loaded the current TLS material.
    pub renewals: crate::renewal::Memory,
    admins: Mutex<HashMap<String, (AdminConfig, Admin)>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        store: Store<KRedis>,
        metrics: Arc<Metrics>,
        config: OperatorConfig,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: config.controller_name.clone(),
                instance: Some(config.instance.clone()),
            },
        );
        Context {
            client,
            recorder,
            metrics,
            store,
            config,
            leading: None,
            renewals: crate::renewal::Memory::default(),
            admins: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Makes every engine step check that this replica still leads.
    pub fn with_leadership(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = Some(leading);
        self
    }

    /// Whether this replica may act (it leads, or there is no election).
    pub fn may_act(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    /// The admin connection pool of cluster `key`, rebuilt when its password or TLS material
    /// changes.
    pub fn admin(&self, key: &str, password: Option<&str>, tls: Option<TlsConfig>) -> Admin {
        let mut admins = self.admins.lock().unwrap_or_else(|e| e.into_inner());
        let config = AdminConfig {
            credentials: Credentials {
                username: None,
                password: password.map(str::to_owned),
            },
            tls,
            ..AdminConfig::default()
        };
        if let Some((c, admin)) = admins.get(key) {
            if c.credentials == config.credentials && c.tls == config.tls {
                return admin.clone();
            }
        }
        let admin = Admin::new(config.clone());
        admins.insert(key.to_owned(), (config, admin.clone()));
        admin
    }

    /// Drops a deleted cluster's connections and backoff.
    pub fn forget(&self, key: &str) {
        self.renewals.forget(key);
        self.admins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Records a failure of `key`; returns how long to wait before the next try (1 s doubling
    /// to 60 s).
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(6)).min(Duration::from_secs(60))
    }

    /// Clears the backoff of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
