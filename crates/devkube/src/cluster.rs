//! The development control plane as one value: binds the API server on loopback, runs the
//! garbage collectors, scheduler and node controller, writes a kubeconfig, and stops all of it
//! (every process included) on [`DevCluster::shutdown`] or drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::api::{self, AppState, ServerConfig};
use crate::audit::{AuditEntry, AuditLog};
use crate::error::{ApiError, DevError};
use crate::meta;
use crate::store::{self, Store, WriteOptions};

/// How to start a [`DevCluster`].
#[derive(Debug, Clone)]
pub struct DevClusterOptions {
    /// State directory: kubeconfig, per-pod directories and logs.
    pub dir: PathBuf,
    /// API server port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Worker nodes created at start (`dev-node-1..N`).
    pub nodes: usize,
    /// Run kubelets (pods become processes). Without them pods stay Pending/unbound.
    pub kubelets: bool,
    /// Events kept for watches.
    pub history: usize,
    /// BOOKMARK interval for watches that allow them.
    pub bookmark_interval: Duration,
    /// Longest watch the server keeps open.
    pub max_watch: Duration,
    /// Second octet of every address: node `i` is `127.<block>.0.<i>`, its pods
    /// `127.<block>.<i>.<n>`. `kredis dev` uses 1 (DESIGN.md); tests running several clusters
    /// at once use [`DevClusterOptions::for_tests`] to get distinct blocks.
    pub address_block: u8,
    /// Requests kept in the audit log ([`DevCluster::audit`]); 0 records none.
    pub audit_capacity: usize,
}

impl DevClusterOptions {
    /// Defaults for a state directory: random port, 3 nodes, kubelets on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            port: 0,
            nodes: 3,
            kubelets: true,
            history: store::DEFAULT_HISTORY,
            bookmark_interval: Duration::from_secs(10),
            max_watch: Duration::from_secs(1800),
            address_block: 1,
            audit_capacity: crate::audit::DEFAULT_CAPACITY,
        }
    }

    /// Like [`DevClusterOptions::new`], with an address block unlikely to be used by another
    /// cluster of this or a concurrent test process, so pods of parallel tests never contend
    /// for the same IP and port.
    pub fn for_tests(dir: impl Into<PathBuf>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // 2..=254, spread by pid across processes and by a counter within one.
        let block = 2 + (std::process::id().wrapping_mul(31).wrapping_add(n) % 253) as u8;
        Self {
            address_block: block,
            ..Self::new(dir)
        }
    }
}

/// A running development control plane. Dropping it stops everything.
#[derive(Debug)]
pub struct DevCluster {
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    nodes: Option<crate::node::Nodes>,
}

impl DevCluster {
    /// Starts the API server and controllers, creates the worker nodes and writes
    /// `DIR/kubeconfig`.
    pub async fn start(opts: DevClusterOptions) -> Result<Self, DevError> {
        std::fs::create_dir_all(&opts.dir).map_err(|source| DevError::Write {
            path: opts.dir.display().to_string(),
            source,
        })?;
        let bind = format!("127.0.0.1:{}", opts.port);
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|source| DevError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| DevError::Bind {
            addr: bind.clone(),
            source,
        })?;
        let store = Store::new(opts.history);
        let config = ServerConfig {
            bookmark_interval: opts.bookmark_interval,
            max_watch: opts.max_watch,
            state_dir: Some(opts.dir.clone()),
        };
        let audit = Arc::new(AuditLog::new(opts.audit_capacity));
        let state = AppState {
            store: store.clone(),
            audit: audit.clone(),
            config: Arc::new(config),
            addr: addr.to_string(),
        };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = api::serve(listener, state, std::future::pending()).await {
                tracing::error!(error = %e, "API server stopped");
            }
        }));
        tasks.push(tokio::spawn(crate::gc::run(store.clone())));
        let nodes = if opts.kubelets {
            Some(crate::node::Nodes::start(
                store.clone(),
                opts.dir.clone(),
                opts.address_block,
            ))
        } else {
            None
        };
        let kubeconfig = opts.dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, addr)?;
        let cluster = Self {
            store,
            audit,
            addr,
            kubeconfig,
            dir: opts.dir,
            tasks,
            nodes,
        };
        for i in 1..=opts.nodes {
            cluster.add_node_named(&format!("dev-node-{i}"))?;
        }
        tracing::info!(url = %cluster.url(), nodes = opts.nodes, "development control plane started");
        Ok(cluster)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `DIR/kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kube-rs client for this server (default namespace `default`), as the anonymous
    /// user: nothing is enforced, but the audit log tells callers apart.
    pub fn client(&self) -> Result<kube::Client, DevError> {
        kube::Client::try_from(self.config()?).map_err(DevError::Client)
    }

    /// A kube-rs client authenticating as `user`: it sends `Authorization: Bearer <user>`,
    /// and the audit log records its requests under that name (e.g.
    /// `system:serviceaccount:kredis-system:kredis-operator`). Nothing is enforced.
    pub fn client_as(&self, user: &str) -> Result<kube::Client, DevError> {
        let bad = |message: String| DevError::Apply {
            what: format!("user {user:?}"),
            message,
        };
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(bad(
                "a user name must be non-empty and without spaces".into()
            ));
        }
        let value = axum::http::HeaderValue::from_str(&format!("Bearer {user}"))
            .map_err(|e| bad(e.to_string()))?;
        let mut config = self.config()?;
        config
            .headers
            .push((axum::http::header::AUTHORIZATION, value));
        kube::Client::try_from(config).map_err(DevError::Client)
    }

    fn config(&self) -> Result<kube::Config, DevError> {
        let uri: axum::http::Uri =
            self.url()
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| DevError::Apply {
                    what: "url".into(),
                    message: e.to_string(),
                })?;
        Ok(kube::Config::new(uri))
    }

    /// Every request the API server answered, oldest first (the newest
    /// [`DevClusterOptions::audit_capacity`]): user, RBAC verb, group, resource, subresource,
    /// namespace, name and response code. In-process controllers (scheduler, kubelets,
    /// garbage collector) write to the store directly and do not appear.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.audit.entries()
    }

    /// Empties the audit log.
    pub fn clear_audit(&self) {
        self.audit.clear();
    }

    /// In-process access to the store (tests, tooling).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Drops the watch event history: watches from older versions get 410 Expired and
    /// clients relist.
    pub fn compact(&self) {
        self.store.compact();
    }

    /// Adds a worker node `dev-node-<n>` with the next free index; returns its name.
    pub fn add_node(&self) -> Result<String, DevError> {
        let (nodes, _) = self.store.snapshot("nodes", None);
        let mut i = nodes.len() + 1;
        while nodes
            .iter()
            .any(|n| meta::name(n) == format!("dev-node-{i}"))
        {
            i += 1;
        }
        let name = format!("dev-node-{i}");
        self.add_node_named(&name)?;
        Ok(name)
    }

    /// Creates a Node object (its kubelet starts when the node controller sees it).
    pub fn add_node_named(&self, name: &str) -> Result<(), DevError> {
        let info = self
            .store
            .registry
            .by_key("nodes")
            .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
        let node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
        self.store
            .create(&info, "", node, &WriteOptions::internal("kredis-dev"))?;
        Ok(())
    }

    /// Deletes a Node object: its kubelet kills its processes and its pods are collected.
    pub fn delete_node(&self, name: &str) -> Result<(), DevError> {
        let info = self
            .store
            .registry
            .by_key("nodes")
            .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
        self.store
            .delete(&info, "", name, &store::DeleteOptions::default())?;
        Ok(())
    }

    /// Creates or updates every object of a multi-document YAML manifest (like `kubectl
    /// apply`, server-side with field manager `kredis-dev`); returns `kind/name` of each.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<String>, DevError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| DevError::Apply {
            what: "manifest".into(),
            message: e.to_string(),
        })?;
        let mut out = Vec::new();
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            let av = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let (group, _) = av.rsplit_once('/').unwrap_or(("", av));
            let info = self
                .store
                .registry
                .by_kind(group, kind)
                .ok_or_else(|| DevError::Apply {
                    what: format!("{kind} {}", meta::name(&doc)),
                    message: format!("no resource for {av} {kind}"),
                })?;
            let ns = if info.namespaced {
                let n = meta::namespace(&doc);
                if n.is_empty() {
                    "default"
                } else {
                    n
                }
            } else {
                ""
            }
            .to_owned();
            let name = meta::name(&doc).to_owned();
            let opts = WriteOptions::update("kredis-dev");
            match self.store.get(&info, &ns, &name) {
                Ok(_) => {
                    self.store.mutate(&info, &ns, &name, &opts, |old| {
                        let mut merged = crate::patch::merge_patch(old, &doc);
                        meta::metadata_mut(&mut merged).remove("resourceVersion");
                        Ok(merged)
                    })?;
                }
                Err(e) if e.code == 404 => {
                    self.store.create(&info, &ns, doc.clone(), &opts)?;
                }
                Err(e) => return Err(e.into()),
            }
            out.push(format!("{}/{name}", info.kind.to_lowercase()));
        }
        Ok(out)
    }

    /// Stops every kubelet (terminating its processes) and the server.
    pub async fn shutdown(mut self) {
        if let Some(nodes) = self.nodes.take() {
            nodes.shutdown().await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Nodes' own Drop kills every process group synchronously.
        self.nodes.take();
    }
}

fn write_kubeconfig(path: &Path, addr: SocketAddr) -> Result<(), DevError> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kredis-dev\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: kredis-dev\n  context:\n    cluster: kredis-dev\n    user: kredis-dev\n    namespace: default\ncurrent-context: kredis-dev\nusers:\n- name: kredis-dev\n  user: {{}}\n"
    );
    std::fs::write(path, text).map_err(|source| DevError::Write {
        path: path.display().to_string(),
        source,
    })
}
