//! `ClusterView`: the merged picture of a cluster built from every reachable node's own
//! `CLUSTER NODES`, DBSIZE and replication info. Records where nodes disagree. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ids::{NodeAddr, NodeId, Slot};
use super::nodes::{NodeEntry, OpenSlot, Role};
use super::slotset::SlotSet;

/// Replication facts from `INFO replication`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationInfo {
    /// `role:master` or `role:slave`.
    pub is_replica: bool,
    /// `master_link_status:up` (replicas only).
    pub master_link_up: bool,
    /// `slave_repl_offset` for a replica, `master_repl_offset` for a master.
    pub offset: u64,
    /// `master_sync_in_progress:1`.
    pub sync_in_progress: bool,
}

/// Everything one reachable node told us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeObservation {
    /// The address we reached it at.
    pub addr: NodeAddr,
    /// Its `CLUSTER NODES`.
    pub entries: Vec<NodeEntry>,
    /// `DBSIZE`.
    pub keys: u64,
    /// `INFO replication`.
    pub replication: ReplicationInfo,
    /// `cluster_state:ok` in `CLUSTER INFO`.
    pub cluster_state_ok: bool,
    /// `cluster_current_epoch`.
    pub current_epoch: u64,
}

impl NodeObservation {
    /// The node's own line.
    pub fn myself(&self) -> Option<&NodeEntry> {
        self.entries.iter().find(|e| e.flags.myself)
    }

    /// The node's own id.
    pub fn id(&self) -> Option<&NodeId> {
        self.myself().map(|e| &e.id)
    }

    /// Whether the node knows no other node, serves no slot, holds no key and has epoch 0:
    /// the only state in which it may be bootstrapped or joined (PITFALLS 32).
    pub fn is_fresh(&self) -> bool {
        self.entries.len() == 1
            && self.keys == 0
            && self
                .myself()
                .is_some_and(|m| m.slots.is_empty() && m.role() == Role::Master)
            && self.current_epoch == 0
    }

    /// Whether the node is an empty master that knows only itself (it may have been reset
    /// after holding data in another life, so its epoch can be non-zero).
    pub fn is_alone(&self) -> bool {
        self.entries.len() == 1
    }

    fn entry(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.entries.iter().find(|e| &e.id == id)
    }
}

/// The merged state of one node id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewNode {
    /// Node id.
    pub id: NodeId,
    /// Address: where we reached it, else the address most observers record.
    pub addr: Option<NodeAddr>,
    /// Role: its own word if reachable, else the observers'.
    pub role: Role,
    /// Master of a replica.
    pub master: Option<NodeId>,
    /// Slots it serves in the consensus slot map.
    pub slots: SlotSet,
    /// Config epoch.
    pub config_epoch: u64,
    /// We reached it ourselves.
    pub reachable: bool,
    /// Some observer flags it `fail` (or as a `noaddr` master holding slots).
    pub failed: bool,
    /// Number of observers that flag it `fail?`.
    pub pfail_by: usize,
    /// Every observer that knows it still has it in handshake.
    pub handshake: bool,
    /// Some observer has no address for it.
    pub noaddr: bool,
    /// Reachable observers that list it (itself included).
    pub known_by: BTreeSet<NodeId>,
    /// Open migrating slots (own line only).
    pub migrating: Vec<OpenSlot>,
    /// Open importing slots (own line only).
    pub importing: Vec<OpenSlot>,
}

/// A way in which reachable nodes disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disagreement {
    /// Observers name different owners for these slots.
    SlotOwners {
        /// The slots concerned.
        slots: SlotSet,
        /// Per observer, the owner it names (`None`: unassigned).
        claims: Vec<(NodeId, Option<NodeId>)>,
    },
    /// `observer` does not know `node`, which others know.
    Unknown {
        /// The node lacking the entry.
        observer: NodeId,
        /// The node it does not know.
        node: NodeId,
    },
    /// `observer` records `node` at another address than the node itself answers on.
    Address {
        /// The node with the stale entry.
        observer: NodeId,
        /// The node concerned.
        node: NodeId,
        /// What the observer records (`None`: no address).
        seen: Option<NodeAddr>,
    },
    /// `observer` believes `node` has another role or master than it says itself.
    Role {
        /// The node with the stale entry.
        observer: NodeId,
        /// The node concerned.
        node: NodeId,
    },
}

/// The merged view of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Reachable nodes, by their own id.
    pub observed: BTreeMap<NodeId, NodeObservation>,
    /// Addresses we could not read, with the reason.
    pub unreachable: BTreeMap<NodeAddr, String>,
    /// Every node id any reachable node knows (handshake entries included).
    pub nodes: BTreeMap<NodeId, ViewNode>,
    /// Where reachable nodes disagree.
    pub disagreements: Vec<Disagreement>,
}

impl ClusterView {
    /// Merges observations. `unreachable` lists the addresses that could not be read.
    pub fn build(
        observations: Vec<NodeObservation>,
        unreachable: BTreeMap<NodeAddr, String>,
    ) -> Self {
        let mut observed: BTreeMap<NodeId, NodeObservation> = BTreeMap::new();
        for obs in observations {
            if let Some(id) = obs.id().cloned() {
                observed.entry(id).or_insert(obs);
            }
        }
        let mut view = ClusterView {
            observed,
            unreachable,
            ..Default::default()
        };
        view.merge_nodes();
        view.merge_slots();
        view.find_disagreements();
        view
    }

    fn merge_nodes(&mut self) {
        let mut all_ids: BTreeSet<NodeId> = BTreeSet::new();
        for obs in self.observed.values() {
            all_ids.extend(obs.entries.iter().map(|e| e.id.clone()));
        }
        for id in all_ids {
            let own = self.observed.get(&id);
            let seen: Vec<(&NodeId, &NodeEntry)> = self
                .observed
                .iter()
                .filter_map(|(oid, obs)| obs.entry(&id).map(|e| (oid, e)))
                .collect();
            let others: Vec<&NodeEntry> = seen
                .iter()
                .filter(|(o, _)| **o != id)
                .map(|(_, e)| *e)
                .collect();
            // The best second-hand entry: not in handshake, highest config epoch.
            let best = others
                .iter()
                .copied()
                .max_by_key(|e| (!e.flags.handshake, e.config_epoch, e.addr.is_some()));
            let base = own.and_then(NodeObservation::myself).or(best);
            let Some(base) = base else { continue };
            let addr = match own {
                Some(obs) => Some(obs.addr.clone()),
                None => majority_addr(&others),
            };
            let node = ViewNode {
                id: id.clone(),
                addr,
                role: base.role(),
                master: base.master.clone(),
                slots: SlotSet::new(),
                config_epoch: base.config_epoch,
                reachable: own.is_some(),
                failed: others.iter().any(|e| e.is_failed()),
                pfail_by: others.iter().filter(|e| e.flags.pfail).count(),
                handshake: !others.is_empty() && others.iter().all(|e| e.flags.handshake),
                noaddr: others.iter().any(|e| e.flags.noaddr),
                known_by: seen.iter().map(|(o, _)| (*o).clone()).collect(),
                migrating: own
                    .and_then(NodeObservation::myself)
                    .map(|m| m.migrating.clone())
                    .unwrap_or_default(),
                importing: own
                    .and_then(NodeObservation::myself)
                    .map(|m| m.importing.clone())
                    .unwrap_or_default(),
            };
            self.nodes.insert(id, node);
        }
    }

    /// Consensus slot map: a reachable master's claim on its own line wins (highest epoch on
    /// conflict); otherwise the owner most observers name.
    fn merge_slots(&mut self) {
        let owners = self.consensus_owners();
        for (i, owner) in owners.iter().enumerate() {
            if let (Some(owner), Some(slot)) =
                (owner, u16::try_from(i).ok().and_then(|n| Slot::new(n).ok()))
            {
                if let Some(node) = self.nodes.get_mut(owner) {
                    node.slots.insert(slot);
                }
            }
        }
    }

    fn consensus_owners(&self) -> Vec<Option<NodeId>> {
        let mut owners: Vec<Option<NodeId>> = vec![None; usize::from(super::SLOT_COUNT)];
        let mut epoch_of: Vec<u64> = vec![0; owners.len()];
        // First-hand claims.
        for obs in self.observed.values() {
            let Some(me) = obs.myself() else { continue };
            if me.role() != Role::Master {
                continue;
            }
            for slot in me.slots.iter() {
                let i = usize::from(slot.get());
                if owners[i].is_none() || me.config_epoch > epoch_of[i] {
                    owners[i] = Some(me.id.clone());
                    epoch_of[i] = me.config_epoch;
                }
            }
        }
        // Second-hand claims for slots no reachable node claims.
        for (i, owner) in owners.iter_mut().enumerate() {
            if owner.is_some() {
                continue;
            }
            let Some(slot) = u16::try_from(i).ok().and_then(|n| Slot::new(n).ok()) else {
                continue;
            };
            let mut votes: BTreeMap<&NodeId, usize> = BTreeMap::new();
            for obs in self.observed.values() {
                for e in &obs.entries {
                    if !e.flags.myself && e.slots.contains(slot) {
                        *votes.entry(&e.id).or_default() += 1;
                    }
                }
            }
            *owner = votes
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(id, _)| id.clone());
        }
        owners
    }

    fn find_disagreements(&mut self) {
        let mut out = Vec::new();
        // Slot owners per observer.
        let mut groups: BTreeMap<Vec<(NodeId, Option<NodeId>)>, SlotSet> = BTreeMap::new();
        for slot in Slot::all() {
            let claims: Vec<(NodeId, Option<NodeId>)> = self
                .observed
                .iter()
                .map(|(oid, obs)| {
                    let owner = obs
                        .entries
                        .iter()
                        .find(|e| e.role() == Role::Master && e.slots.contains(slot))
                        .map(|e| e.id.clone());
                    (oid.clone(), owner)
                })
                .collect();
            let distinct: BTreeSet<&Option<NodeId>> = claims.iter().map(|(_, o)| o).collect();
            if distinct.len() > 1 {
                groups.entry(claims).or_default().insert(slot);
            }
        }
        for (claims, slots) in groups {
            out.push(Disagreement::SlotOwners { slots, claims });
        }
        for (node_id, node) in &self.nodes {
            if node.handshake {
                continue;
            }
            for (oid, obs) in &self.observed {
                match obs.entry(node_id) {
                    None => out.push(Disagreement::Unknown {
                        observer: oid.clone(),
                        node: node_id.clone(),
                    }),
                    Some(e) if oid != node_id && node.reachable => {
                        if e.addr != node.addr {
                            out.push(Disagreement::Address {
                                observer: oid.clone(),
                                node: node_id.clone(),
                                seen: e.addr.clone(),
                            });
                        }
                        if e.role() != node.role || e.master != node.master {
                            out.push(Disagreement::Role {
                                observer: oid.clone(),
                                node: node_id.clone(),
                            });
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        self.disagreements = out;
    }

    /// The view as if only the nodes in `keep` (by id) and the unreachable addresses in
    /// `keep_unreachable` had been read: drops nodes on their way out, or never in.
    pub fn restricted_to(
        &self,
        keep: &BTreeSet<NodeId>,
        keep_unreachable: &BTreeSet<NodeAddr>,
    ) -> ClusterView {
        let obs = self
            .observed
            .iter()
            .filter(|(id, _)| keep.contains(*id))
            .map(|(_, o)| o.clone())
            .collect();
        let unreachable = self
            .unreachable
            .iter()
            .filter(|(a, _)| keep_unreachable.contains(*a))
            .map(|(a, r)| (a.clone(), r.clone()))
            .collect();
        ClusterView::build(obs, unreachable)
    }

    /// The consensus owner of a slot.
    pub fn owner_of(&self, slot: Slot) -> Option<&NodeId> {
        self.nodes
            .values()
            .find(|n| n.slots.contains(slot))
            .map(|n| &n.id)
    }

    /// Slots no node serves in the consensus map.
    pub fn uncovered_slots(&self) -> SlotSet {
        let mut covered = SlotSet::new();
        for node in self.nodes.values() {
            covered.union_with(&node.slots);
        }
        SlotSet::full().difference(&covered)
    }

    /// Ids of reachable nodes with open (migrating or importing) slots.
    pub fn open_slots(&self) -> Vec<(&NodeId, &OpenSlot, bool)> {
        let mut out = Vec::new();
        for node in self.nodes.values() {
            out.extend(node.migrating.iter().map(|o| (&node.id, o, true)));
            out.extend(node.importing.iter().map(|o| (&node.id, o, false)));
        }
        out
    }

    /// Highest config epoch any node holds.
    pub fn max_epoch(&self) -> u64 {
        self.observed
            .values()
            .map(|o| o.current_epoch)
            .max()
            .unwrap_or(0)
    }

    /// The node (id) answering at an address, if we reached it.
    pub fn id_at(&self, addr: &NodeAddr) -> Option<&NodeId> {
        self.observed
            .iter()
            .find(|(_, o)| &o.addr == addr)
            .map(|(id, _)| id)
    }

    /// Whether the cluster is converged: every reachable node agrees on everything, reports
    /// `cluster_state:ok`, no slot is open or uncovered, nothing is failed or in handshake.
    pub fn is_converged(&self) -> bool {
        self.problems().is_empty()
    }

    /// Human-readable reasons the cluster is not converged (empty when converged).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.disagreements {
            out.push(match d {
                Disagreement::SlotOwners { slots, .. } => {
                    format!("nodes disagree on the owners of slots {slots}")
                }
                Disagreement::Unknown { observer, node } => {
                    format!(
                        "node {} does not know node {}",
                        observer.short(),
                        node.short()
                    )
                }
                Disagreement::Address {
                    observer,
                    node,
                    seen,
                } => format!(
                    "node {} records node {} at {}",
                    observer.short(),
                    node.short(),
                    seen.as_ref()
                        .map_or_else(|| "no address".to_owned(), ToString::to_string)
                ),
                Disagreement::Role { observer, node } => {
                    format!(
                        "node {} has a stale role for node {}",
                        observer.short(),
                        node.short()
                    )
                }
            });
        }
        for (id, obs) in &self.observed {
            if !obs.cluster_state_ok {
                out.push(format!(
                    "node {} ({}) reports cluster_state:fail",
                    id.short(),
                    obs.addr
                ));
            }
        }
        for (id, slot, migrating) in self.open_slots() {
            let dir = if migrating { "migrating" } else { "importing" };
            out.push(format!(
                "node {} has slot {} open ({dir})",
                id.short(),
                slot.slot
            ));
        }
        let uncovered = self.uncovered_slots();
        if !uncovered.is_empty() {
            out.push(format!(
                "{} slots are not served: {uncovered}",
                uncovered.len()
            ));
        }
        for node in self.nodes.values() {
            if node.failed || node.handshake || node.noaddr || node.pfail_by > 0 {
                out.push(format!(
                    "node {} is failed, in handshake or unreachable",
                    node.id.short()
                ));
            }
        }
        for addr in self.unreachable.keys() {
            out.push(format!("{addr} is unreachable"));
        }
        out
    }
}

fn majority_addr(entries: &[&NodeEntry]) -> Option<NodeAddr> {
    let mut votes: BTreeMap<&NodeAddr, usize> = BTreeMap::new();
    for e in entries {
        if let Some(a) = &e.addr {
            *votes.entry(a).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(a, _)| a.clone())
}
