//! TLS certificates renewed in place (`spec.tls`): when the TLS Secret's content changes (a
//! cert-manager renewal, a CA bundle edit), every node reloads its certificate, key and CA
//! from the mounted Secret with `CONFIG SET tls-cert-file ... tls-key-file ...
//! tls-ca-cert-file ...` (Redis 7 rebuilds its TLS context on that command, even with the same
//! paths, which are read from the node first; established connections, the bus and
//! replication keep running). No pod restarts.
//!
//! The kubelet updates a Secret volume some time after the Secret changes (its sync period,
//! up to about a minute, plus its cache), all keys at once. So a node is reloaded on every
//! pass until (a) it presents the Secret's certificate, read with a TLS handshake of our own,
//! and (b) `OperatorConfig::secret_volume_sync` has passed since this operator first saw
//! the content: a change of `ca.crt` alone shows in no handshake, so only time says the
//! files were updated before the last reload. Which nodes are done is kept in memory: after
//! an operator restart every node is reloaded again, which is harmless.
//!
//! Touches Redis (CONFIG SET, a handshake per node not yet done); no API server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kredis_engine::admin::{
    leaf_certificate, served_certificate, Admin, AdminError, TlsConfig, CONNECT_TIMEOUT,
};
use kredis_engine::model::{ClusterView, NodeAddr, NodeId};
use tracing::{info, warn};

use crate::error::chain;
use crate::pod::TLS_CERT_KEY;

/// What one pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Nodes that now present the Secret's certificate after presenting another one.
    pub reloaded: Vec<NodeAddr>,
    /// Nodes that still present another certificate after a reload: their pod's files are
    /// not updated yet. Overdue once `overdue` is set.
    pub stale: Vec<NodeAddr>,
    /// The stale nodes have had longer than the kubelet needs; say so in status.
    pub overdue: bool,
    /// Nodes that could not be reloaded or checked, with the reason.
    pub failures: Vec<String>,
}

/// What the operator remembers between passes, per cluster.
#[derive(Default)]
pub struct Memory {
    clusters: Mutex<HashMap<String, Seen>>,
}

#[derive(Default)]
struct Seen {
    /// Digest of the Secret's material and when this operator first saw it.
    material: Option<([u8; 32], Instant)>,
    /// Per node: the digest it is known to have loaded, and the leaf it last presented.
    nodes: HashMap<(NodeAddr, NodeId), NodeSeen>,
}

#[derive(Default, Clone)]
struct NodeSeen {
    done: Option<[u8; 32]>,
    leaf: Option<Vec<u8>>,
}

impl Memory {
    /// Forgets a deleted cluster.
    pub fn forget(&self, key: &str) {
        self.clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether a node of cluster `key` has not loaded the current material for sure yet, so
    /// the cluster should be looked at again before the next resync.
    pub fn settling(&self, key: &str) -> bool {
        // Read only: clusters without TLS leave no entry behind.
        let clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        clusters.get(key).is_some_and(|seen| {
            let current = seen.material.map(|(d, _)| d);
            seen.nodes.values().any(|n| n.done != current)
        })
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        f(clusters.entry(key.to_owned()).or_default())
    }
}

fn digest(tls: &TlsConfig) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&tls.ca_cert);
    if let Some((cert, key)) = &tls.client {
        ctx.update(b"\0");
        ctx.update(cert);
        ctx.update(b"\0");
        ctx.update(key);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Reloads the TLS material on every reachable node of cluster `key` that has not loaded
/// `tls` yet (see the module docs), and reports what it found.
pub async fn ensure(
    memory: &Memory,
    key: &str,
    admin: &Admin,
    view: &ClusterView,
    tls: &TlsConfig,
    volume_sync: Duration,
) -> Renewal {
    let mut out = Renewal::default();
    let Some(want) = tls
        .client
        .as_ref()
        .and_then(|(cert, _)| leaf_certificate(cert))
    else {
        out.failures
            .push(format!("{TLS_CERT_KEY} holds no certificate"));
        return out;
    };
    let material = digest(tls);
    let first_seen = memory.with(key, |seen| match seen.material {
        Some((d, at)) if d == material => at,
        _ => {
            let now = Instant::now();
            seen.material = Some((material, now));
            now
        }
    });
    let settled = first_seen.elapsed() >= volume_sync;
    for (id, obs) in &view.observed {
        let node = (obs.addr.clone(), id.clone());
        let before = memory.with(key, |seen| {
            seen.nodes.get(&node).cloned().unwrap_or_default()
        });
        if before.done == Some(material) {
            continue;
        }
        if let Err(e) = reload(admin, &obs.addr).await {
            let e = chain(&e);
            warn!(node = %obs.addr, error = %e, "failed to reload the TLS material");
            out.failures
                .push(format!("TLS reload on {}: {e}", obs.addr));
            continue;
        }
        let served = match served_certificate(&obs.addr, tls, CONNECT_TIMEOUT).await {
            Ok(leaf) => leaf,
            Err(e) => {
                let e = chain(&e);
                warn!(node = %obs.addr, error = %e, "failed to read the certificate a node presents");
                out.failures
                    .push(format!("TLS handshake with {}: {e}", obs.addr));
                continue;
            }
        };
        let current = served == want;
        if current && before.leaf.as_ref().is_some_and(|l| *l != want) {
            info!(node = %obs.addr, "the node presents the renewed certificate");
            out.reloaded.push(obs.addr.clone());
        }
        if !current {
            out.stale.push(obs.addr.clone());
        }
        memory.with(key, |seen| {
            let entry = seen.nodes.entry(node).or_default();
            entry.leaf = Some(served);
            if current && settled {
                entry.done = Some(material);
            }
        });
    }
    // Nodes that left the cluster are not remembered forever.
    memory.with(key, |seen| {
        seen.nodes
            .retain(|(_, id), _| view.observed.contains_key(id))
    });
    out.overdue = !out.stale.is_empty() && settled;
    out
}

/// The files a node reads its TLS material from: the node's own paths, asked for rather than
/// assumed (the pod's mount, which `kredis dev` maps to a directory of its own).
const TLS_FILES: [&str; 3] = ["tls-cert-file", "tls-key-file", "tls-ca-cert-file"];

/// `CONFIG SET` of the node's three paths to themselves, in one command: Redis rebuilds its
/// TLS context from the files, checks the new material before it replaces the old, and keeps
/// the old on error.
async fn reload(admin: &Admin, addr: &NodeAddr) -> Result<(), AdminError> {
    admin
        .with_node(addr, |c| async move {
            let mut get = redis::cmd("CONFIG");
            get.arg("GET").arg("tls-*-file");
            let pairs: Vec<String> = c.raw("CONFIG GET tls-*-file", get).await?;
            let mut set = redis::cmd("CONFIG");
            set.arg("SET");
            for name in TLS_FILES {
                let path = pairs
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .and_then(|kv| kv.get(1))
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| AdminError::Protocol {
                        addr: c.addr().clone(),
                        op: "CONFIG GET tls-*-file",
                        detail: format!("the node has no {name}"),
                    })?;
                set.arg(name).arg(path);
            }
            c.raw::<redis::Value>("CONFIG SET tls-*-file", set)
                .await
                .map(drop)
        })
        .await
}
