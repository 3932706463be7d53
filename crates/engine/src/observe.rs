//! Observation: read every node's `CLUSTER NODES`, `CLUSTER INFO`, `DBSIZE` and
//! `INFO replication` concurrently and merge them into a `ClusterView`. Network, read-only.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use tracing::instrument;

use crate::admin::{Admin, AdminError};
use crate::model::{ClusterView, NodeAddr, NodeObservation};

/// Reads one node.
#[instrument(level = "debug", skip(admin), fields(node = %addr))]
pub async fn observe_node(admin: &Admin, addr: &NodeAddr) -> Result<NodeObservation, AdminError> {
    admin
        .with_node(addr, |c| async move {
            let (entries, info, keys, replication) = tokio::try_join!(
                c.cluster_nodes(),
                c.cluster_info(),
                c.dbsize(),
                c.info_replication()
            )?;
            Ok(NodeObservation {
                addr: c.addr().clone(),
                entries,
                keys,
                replication,
                cluster_state_ok: info.state_ok,
                current_epoch: info.current_epoch,
            })
        })
        .await
}

/// Reads every seed address, then every other address the seeds' tables name (so a node
/// alive at an address no seed covers is seen alive, PITFALLS 3), and merges the results.
#[instrument(level = "debug", skip_all, fields(seeds = seeds.len()))]
pub async fn observe(admin: &Admin, seeds: &[NodeAddr]) -> ClusterView {
    let mut polled: BTreeSet<NodeAddr> = BTreeSet::new();
    let mut observations = Vec::new();
    let mut unreachable = BTreeMap::new();
    let mut wave: Vec<NodeAddr> = seeds.to_vec();
    // Two waves: the seeds, then addresses learned from them. Deeper chains are not needed:
    // every node of a cluster lists every other.
    for _ in 0..2 {
        wave.retain(|a| polled.insert(a.clone()));
        if wave.is_empty() {
            break;
        }
        let results = join_all(wave.iter().map(|a| observe_node(admin, a))).await;
        let mut next = Vec::new();
        for (addr, result) in wave.iter().zip(results) {
            match result {
                Ok(obs) => {
                    next.extend(
                        obs.entries
                            .iter()
                            .filter(|e| !e.flags.handshake)
                            .filter_map(|e| e.addr.clone()),
                    );
                    observations.push(obs);
                }
                Err(e) => {
                    unreachable.insert(addr.clone(), format!("{e:#}"));
                }
            }
        }
        wave = next;
    }
    // Addresses learned second-hand that do not answer are dead entries, reported through
    // the nodes' flags; only seeds count as unreachable members.
    unreachable.retain(|a, _| seeds.contains(a));
    ClusterView::build(observations, unreachable)
}
