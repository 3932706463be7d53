//! Worker nodes: the node controller (a kubelet per Node object, each with its own loopback
//! address `127.1.0.<i>`), the scheduler, and the kubelets that run pods as local processes.
//! Every process started here is registered in a [`ProcessTable`] whose drop kills every
//! process group, so nothing outlives the control plane.

mod container;
mod kubelet;
mod probe;
mod scheduler;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::meta;
use crate::store::{Store, WriteOptions};

pub use kubelet::Kubelet;

/// How long a shutting-down control plane waits for SIGTERMed processes before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The per-pod directory under the state directory (volumes and logs live there).
pub fn pod_dir(state_dir: &Path, pod: &Value) -> PathBuf {
    state_dir.join("pods").join(format!(
        "{}_{}_{}",
        meta::namespace(pod),
        meta::name(pod),
        meta::uid(pod)
    ))
}

/// Process groups of every running container; dropping the table SIGKILLs them all.
#[derive(Debug, Default)]
pub struct ProcessTable {
    groups: Mutex<std::collections::BTreeSet<i32>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl ProcessTable {
    /// Refuses new processes from now on (shutdown in progress).
    pub fn stop_spawning(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether shutdown is in progress.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Registers a process group (the container's leader pid).
    pub fn add(&self, pgid: i32) {
        self.lock().insert(pgid);
    }

    /// Forgets a reaped process group.
    pub fn remove(&self, pgid: i32) {
        self.lock().remove(&pgid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<i32>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signals every registered group.
    pub fn signal_all(&self, sig: Signal) {
        for pgid in self.lock().iter() {
            let _ = killpg(Pid::from_raw(*pgid), sig);
        }
    }

    /// Number of live groups.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no group is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ProcessTable {
    fn drop(&mut self) {
        self.signal_all(Signal::SIGKILL);
    }
}

/// Sends `sig` to a process group, ignoring "no such process".
pub fn signal_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// The node controller, scheduler and kubelets.
#[derive(Debug)]
pub struct Nodes {
    controller: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    kubelets: Arc<Mutex<BTreeMap<String, Kubelet>>>,
    processes: Arc<ProcessTable>,
}

impl Nodes {
    /// Starts the node controller and the scheduler. Node `i` gets `127.<block>.0.<i>`, its
    /// pods `127.<block>.<i>.<n>`.
    pub fn start(store: Arc<Store>, dir: PathBuf, block: u8) -> Self {
        let processes = Arc::new(ProcessTable::default());
        let kubelets: Arc<Mutex<BTreeMap<String, Kubelet>>> = Arc::default();
        let controller = tokio::spawn(control(
            store.clone(),
            dir,
            block,
            kubelets.clone(),
            processes.clone(),
        ));
        let scheduler = tokio::spawn(scheduler::run(store));
        Self {
            controller,
            scheduler,
            kubelets,
            processes,
        }
    }

    /// The table of live process groups.
    pub fn processes(&self) -> &Arc<ProcessTable> {
        &self.processes
    }

    /// Stops everything: SIGTERM to every process, SIGKILL after a short grace.
    pub async fn shutdown(self) {
        self.controller.abort();
        self.scheduler.abort();
        self.processes.stop_spawning();
        self.processes.signal_all(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        // Workers reap their processes (and cannot restart them any more).
        while !self.processes.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kubelets: Vec<Kubelet> = {
            let mut k = self
                .kubelets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::take(&mut *k).into_values().collect()
        };
        for k in kubelets {
            k.kill();
        }
        self.processes.signal_all(Signal::SIGKILL);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.controller.abort();
        self.scheduler.abort();
        let mut k = self
            .kubelets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, kubelet) in std::mem::take(&mut *k) {
            kubelet.abort();
        }
        self.processes.signal_all(Signal::SIGKILL);
    }
}

/// The node index encoded in `dev-node-<i>`, if any.
fn index_from_name(name: &str) -> Option<u8> {
    name.strip_prefix("dev-node-")
        .and_then(|i| i.parse::<u8>().ok())
        .filter(|i| *i >= 1 && *i <= 250)
}

/// Node controller loop: a kubelet per Node, node status, kubelets of deleted nodes stopped.
async fn control(
    store: Arc<Store>,
    dir: PathBuf,
    block: u8,
    kubelets: Arc<Mutex<BTreeMap<String, Kubelet>>>,
    processes: Arc<ProcessTable>,
) {
    let mut changed = store.subscribe();
    let Some(info) = store.registry.by_key("nodes") else {
        return;
    };
    loop {
        changed.borrow_and_update();
        let (nodes, _) = store.snapshot("nodes", None);
        let live: HashMap<String, Arc<Value>> = nodes
            .iter()
            .map(|n| (meta::name(n).to_owned(), n.clone()))
            .collect();
        let mut to_status = Vec::new();
        {
            let mut ks = kubelets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Nodes gone (or being deleted): their kubelets kill everything at once.
            let gone: Vec<String> = ks
                .iter()
                .filter(|(name, k)| {
                    live.get(*name)
                        .is_none_or(|n| meta::uid(n) != k.node_uid || meta::is_deleting(n))
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                if let Some(k) = ks.remove(&name) {
                    tracing::info!(node = %name, "node deleted: stopping its kubelet");
                    k.kill();
                }
            }
            let used: Vec<u8> = ks.values().map(|k| k.index).collect();
            for (name, node) in &live {
                if ks.contains_key(name) || meta::is_deleting(node) {
                    continue;
                }
                let index = index_from_name(name)
                    .filter(|i| !used.contains(i) && !ks.values().any(|k| k.index == *i))
                    .or_else(|| {
                        (1..=250u8).find(|i| {
                            !ks.values().any(|k| k.index == *i)
                                && !live
                                    .keys()
                                    .any(|n| index_from_name(n) == Some(*i) && n != name)
                        })
                    });
                let Some(index) = index else {
                    tracing::warn!(node = %name, "no free node address");
                    continue;
                };
                tracing::info!(node = %name, ip = %format!("127.{block}.0.{index}"), "starting kubelet");
                let k = Kubelet::start(
                    store.clone(),
                    dir.clone(),
                    name.clone(),
                    meta::uid(node).to_owned(),
                    block,
                    index,
                    processes.clone(),
                );
                ks.insert(name.clone(), k);
                create_lease(&store, node);
            }
            for (name, k) in ks.iter() {
                if let Some(n) = live.get(name) {
                    to_status.push((n.clone(), k.index));
                }
            }
        }
        for (node, index) in to_status {
            let status = node_status(meta::name(&node), &format!("127.{block}.0.{index}"), &node);
            let _ = store.mutate(
                &info,
                "",
                meta::name(&node),
                &WriteOptions::internal("kubelet"),
                |old| {
                    let mut o = old.clone();
                    o["status"] = status;
                    Ok(o)
                },
            );
        }
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The node's Lease in `kube-node-lease` (owned by the Node, so it goes with it). Written
/// once: renewing it would churn resourceVersions for nothing in dev mode.
fn create_lease(store: &Store, node: &Value) {
    let Some(info) = store.registry.by_key("leases.coordination.k8s.io") else {
        return;
    };
    let name = meta::name(node);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": meta::uid(node)}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": chrono_micro()},
    });
    match store.create(
        &info,
        "kube-node-lease",
        lease,
        &WriteOptions::internal("kubelet"),
    ) {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => tracing::debug!(node = name, error = %e, "failed to create node lease"),
    }
}

/// `MicroTime` format (RFC 3339 with microseconds), as Lease times use.
fn chrono_micro() -> String {
    let now = std::time::SystemTime::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    let base = meta::rfc3339(now);
    format!("{}.{micros:06}Z", base.trim_end_matches('Z'))
}

fn node_status(name: &str, ip: &str, old: &Value) -> Value {
    let since = old
        .pointer("/status/conditions/0/lastTransitionTime")
        .cloned()
        .unwrap_or_else(|| json!(meta::now_rfc3339()));
    let resources =
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status (kredis dev)", "lastHeartbeatTime": since, "lastTransitionTime": since}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": "linux", "osImage": "kredis dev",
            "kernelVersion": "", "kubeletVersion": "v1.33.0-kredis-dev", "kubeProxyVersion": "v1.33.0-kredis-dev",
            "containerRuntimeVersion": "process://kredis-dev", "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}
