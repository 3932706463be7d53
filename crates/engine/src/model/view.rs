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
        let ids = IdTable::of(&self.observed);
        let owners = self.consensus_owners(&ids);
        let mut sets: Vec<SlotSet> = vec![SlotSet::new(); ids.len()];
        for (slot, &owner) in Slot::all().zip(&owners) {
            if let Some(set) = sets.get_mut(usize::from(owner)) {
                set.insert(slot);
            }
        }
        for (id, set) in ids.ids.iter().zip(sets) {
            if let Some(node) = self.nodes.get_mut(*id) {
                node.slots = set;
            }
        }
    }

    /// Per slot, the index in `ids` of its consensus owner ([`NO_OWNER`]: none).
    fn consensus_owners(&self, ids: &IdTable<'_>) -> Vec<u16> {
        let mut owners: Vec<u16> = vec![NO_OWNER; usize::from(super::SLOT_COUNT)];
        let mut epoch_of: Vec<u64> = vec![0; owners.len()];
        // First-hand claims.
        for obs in self.observed.values() {
            let Some(me) = obs.myself() else { continue };
            if me.role() != Role::Master {
                continue;
            }
            let idx = ids.index(&me.id);
            for slot in me.slots.iter() {
                let i = usize::from(slot.get());
                if owners[i] == NO_OWNER || me.config_epoch > epoch_of[i] {
                    owners[i] = idx;
                    epoch_of[i] = me.config_epoch;
                }
            }
        }
        // Second-hand claims for slots no reachable node claims: the owner most observers
        // name (on a tie, the highest id).
        let mut unowned = SlotSet::new();
        for (slot, &owner) in Slot::all().zip(&owners) {
            if owner == NO_OWNER {
                unowned.insert(slot);
            }
        }
        if unowned.is_empty() {
            return owners;
        }
        let claims: Vec<(u16, SlotSet)> = self
            .observed
            .values()
            .flat_map(|obs| obs.entries.iter())
            .filter(|e| !e.flags.myself)
            .map(|e| (ids.index(&e.id), e.slots.intersection(&unowned)))
            .filter(|(_, set)| !set.is_empty())
            .collect();
        if claims.is_empty() {
            return owners;
        }
        let mut votes = vec![0usize; ids.len()];
        for slot in unowned.iter() {
            votes.iter_mut().for_each(|v| *v = 0);
            for (idx, set) in &claims {
                if set.contains(slot) {
                    if let Some(v) = votes.get_mut(usize::from(*idx)) {
                        *v += 1;
                    }
                }
            }
            let best = votes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .max_by_key(|(_, n)| **n)
                .and_then(|(i, _)| u16::try_from(i).ok());
            if let Some(best) = best {
                owners[usize::from(slot.get())] = best;
            }
        }
        owners
    }

    fn find_disagreements(&mut self) {
        let mut out = Vec::new();
        // Slot owners per observer: one table each; only slots where the tables differ are
        // looked at one by one (a settled cluster costs a comparison per observer).
        let ids = IdTable::of(&self.observed);
        let tables: Vec<(&NodeId, Vec<u16>)> = self
            .observed
            .iter()
            .map(|(oid, obs)| (oid, ids.owners_seen_by(obs)))
            .collect();
        let mut groups: BTreeMap<Vec<(NodeId, Option<NodeId>)>, SlotSet> = BTreeMap::new();
        if let Some((_, first)) = tables.first() {
            if tables.iter().any(|(_, t)| t != first) {
                for slot in Slot::all() {
                    let i = usize::from(slot.get());
                    if tables.iter().all(|(_, t)| t[i] == first[i]) {
                        continue;
                    }
                    let claims = tables
                        .iter()
                        .map(|(oid, t)| ((*oid).clone(), ids.get(t[i]).cloned()))
                        .collect();
                    groups.entry(claims).or_default().insert(slot);
                }
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

/// "No owner" in a slot owner table.
const NO_OWNER: u16 = u16::MAX;

/// Every node id any observer lists, sorted, so slot owner tables can hold small indices
/// instead of cloned ids (16384 slots per table).
struct IdTable<'a> {
    ids: Vec<&'a NodeId>,
}

impl<'a> IdTable<'a> {
    fn of(observed: &'a BTreeMap<NodeId, NodeObservation>) -> Self {
        let mut ids: Vec<&NodeId> = observed
            .values()
            .flat_map(|o| o.entries.iter().map(|e| &e.id))
            .collect();
        ids.sort();
        ids.dedup();
        IdTable { ids }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn index(&self, id: &NodeId) -> u16 {
        self.ids
            .binary_search(&id)
            .ok()
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(NO_OWNER)
    }

    fn get(&self, index: u16) -> Option<&'a NodeId> {
        self.ids.get(usize::from(index)).copied()
    }

    /// The owner of each slot as one observer sees it: the first master line claiming it.
    fn owners_seen_by(&self, obs: &NodeObservation) -> Vec<u16> {
        let mut table = vec![NO_OWNER; usize::from(super::SLOT_COUNT)];
        for e in obs.entries.iter().filter(|e| e.role() == Role::Master) {
            let idx = self.index(&e.id);
            for slot in e.slots.iter() {
                let t = &mut table[usize::from(slot.get())];
                if *t == NO_OWNER {
                    *t = idx;
                }
            }
        }
        table
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_cluster_nodes;

    fn id(i: usize) -> String {
        format!("{i:040x}")
    }

    /// Three masters (ids 0-2, slots split evenly unless `map` says otherwise), one replica
    /// each (ids 3-5), as node `me` prints `CLUSTER NODES`.
    fn observation(me: usize, map: [(u16, u16); 3]) -> NodeObservation {
        let mut text = String::new();
        for (m, (start, end)) in map.iter().enumerate() {
            let flag = if me == m { "myself," } else { "" };
            text.push_str(&format!(
                "{} 127.0.0.1:{}@{} {flag}master - 0 0 {} connected {start}-{end}\n",
                id(m),
                7000 + m,
                17000 + m,
                m + 1
            ));
            let r = m + 3;
            let flag = if me == r { "myself," } else { "" };
            text.push_str(&format!(
                "{} 127.0.0.1:{}@{} {flag}slave {} 0 0 {} connected\n",
                id(r),
                7000 + r,
                17000 + r,
                id(m),
                m + 1
            ));
        }
        NodeObservation {
            addr: NodeAddr::new("127.0.0.1", u16::try_from(7000 + me).unwrap_or(0)),
            entries: parse_cluster_nodes(&text).unwrap_or_else(|e| panic!("{e}")),
            keys: 0,
            replication: ReplicationInfo::default(),
            cluster_state_ok: true,
            current_epoch: 3,
        }
    }

    const EVEN: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

    fn node(i: usize) -> NodeId {
        NodeId::parse(&id(i)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn slots(a: u16, b: u16) -> SlotSet {
        (a..=b)
            .map(|n| Slot::new(n).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn a_settled_cluster_has_one_owner_per_slot_and_no_disagreement() {
        let view = ClusterView::build(
            (0..6).map(|me| observation(me, EVEN)).collect(),
            Default::default(),
        );
        assert!(view.disagreements.is_empty(), "{:?}", view.disagreements);
        assert_eq!(view.nodes[&node(1)].slots, slots(5461, 10922));
        assert!(view.nodes[&node(4)].slots.is_empty());
        assert!(view.uncovered_slots().is_empty());
    }

    #[test]
    fn a_stale_map_is_one_disagreement_over_exactly_the_moved_slots() {
        let stale = [(0, 5360), (5361, 10922), (10923, 16383)];
        let mut obs: Vec<_> = (0..5).map(|me| observation(me, EVEN)).collect();
        obs.push(observation(5, stale));
        let view = ClusterView::build(obs, Default::default());
        let owners: Vec<_> = view
            .disagreements
            .iter()
            .filter_map(|d| match d {
                Disagreement::SlotOwners { slots, claims } => Some((slots.clone(), claims.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(owners.len(), 1, "{:?}", view.disagreements);
        let (moved, claims) = &owners[0];
        assert_eq!(moved, &slots(5361, 5460));
        let by_5 = claims
            .iter()
            .find(|(o, _)| o == &node(5))
            .map(|(_, c)| c.clone());
        assert_eq!(by_5, Some(Some(node(1))));
        let by_0 = claims
            .iter()
            .find(|(o, _)| o == &node(0))
            .map(|(_, c)| c.clone());
        assert_eq!(by_0, Some(Some(node(0))));
        // First-hand claims win: master 0 still serves its own range.
        assert_eq!(view.nodes[&node(0)].slots, slots(0, 5460));
    }

    #[test]
    fn an_unreachable_master_keeps_its_slots_by_majority() {
        // Master 2 is not read; the others name it as the owner of its range.
        let obs = (0..6)
            .filter(|&me| me != 2)
            .map(|me| observation(me, EVEN))
            .collect();
        let view = ClusterView::build(obs, Default::default());
        assert_eq!(view.nodes[&node(2)].slots, slots(10923, 16383));
        assert!(!view.nodes[&node(2)].reachable);
        assert!(view.uncovered_slots().is_empty());
    }
}
