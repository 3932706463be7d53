//! The planner: a pure function from (desired, members, view, policy) to a `Plan`.
//!
//! Order of a plan (each part only when needed):
//! 1. re-MEET members whose id is recorded elsewhere at a stale address (PITFALLS 4, 31);
//! 2. close open slots before any topology change (PITFALLS 17);
//! 3. promote replicas of lost or terminating masters, confirmed before anything is
//!    forgotten (PITFALLS 1, 9-12, 15);
//! 4. forget ids no member backs any more, on every node (PITFALLS 2, 3, 8);
//! 5. bootstrap slots of a brand-new cluster (only when no node holds any key: PITFALLS 32);
//! 6. MEET joining nodes, then REPLICATE with explicit master ids (PITFALLS 7);
//! 7. serve slots whose every copy is gone, by policy, from a node that has joined
//!    (PITFALLS 6);
//! 8. when the cluster is otherwise converged: move slots to balance, drain removed shards
//!    (PITFALLS 18, 22-25), and detach surplus nodes;
//! 9. wait for convergence.

use std::collections::{BTreeMap, BTreeSet};

use super::rebalance::{balanced_targets, plan_moves};
use super::{Desired, Member, NodeRef, Note, Plan, PlanError, Policy, Step};
use crate::admin::FailoverMode;
use crate::model::{
    ClusterView, NodeId, NodeObservation, Role, SlotRange, SlotSet, ViewNode, SLOT_COUNT,
};

/// A member with what we observed of it.
#[derive(Clone, Debug)]
struct Resolved<'a> {
    member: &'a Member,
    /// Its node, when it answered.
    obs: Option<&'a NodeObservation>,
    id: Option<NodeId>,
}

impl Resolved<'_> {
    fn node_ref(&self) -> Option<NodeRef> {
        self.id.clone().map(|id| NodeRef {
            id,
            addr: self.member.addr.clone(),
            bus_port: self.member.bus_port,
        })
    }
}

/// Plans the steps that take the observed cluster to the desired one.
pub fn plan(
    desired: &Desired,
    members: &[Member],
    view: &ClusterView,
    policy: &Policy,
) -> Result<Plan, PlanError> {
    if desired.masters == 0 {
        return Err(PlanError::InvalidDesired(
            "at least one master is required".into(),
        ));
    }
    if desired.masters > usize::from(SLOT_COUNT) {
        return Err(PlanError::InvalidDesired(format!(
            "{} masters exceed the 16384 slots",
            desired.masters
        )));
    }
    let mut seen: BTreeMap<&crate::model::NodeAddr, &str> = BTreeMap::new();
    for m in members {
        if let Some(prev) = seen.insert(&m.addr, &m.name) {
            return Err(PlanError::DuplicateAddress {
                a: prev.to_owned(),
                b: m.name.clone(),
                addr: m.addr.clone(),
            });
        }
    }
    Planner::new(desired, members, view, policy).run()
}

struct Planner<'a> {
    desired: &'a Desired,
    view: &'a ClusterView,
    policy: &'a Policy,
    resolved: Vec<Resolved<'a>>,
    /// Node ids of the main cluster (the connected group holding the slots).
    cluster: BTreeSet<NodeId>,
    /// Index into `resolved` of members that may take part (in the cluster, or joinable).
    eligible: Vec<usize>,
    /// Shard of each eligible member (index into `resolved`).
    shard_of: BTreeMap<usize, usize>,
    /// Shard of each slot-owning master id (members or not).
    master_shard: BTreeMap<NodeId, usize>,
    /// The member picked to become master of a shard that has no slot owner yet.
    intended_master: BTreeMap<usize, usize>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(
        desired: &'a Desired,
        members: &'a [Member],
        view: &'a ClusterView,
        policy: &'a Policy,
    ) -> Self {
        let resolved = members
            .iter()
            .map(|m| {
                let id = view.id_at(&m.addr).cloned();
                let obs = id.as_ref().and_then(|i| view.observed.get(i));
                Resolved { member: m, obs, id }
            })
            .collect();
        Planner {
            desired,
            view,
            policy,
            resolved,
            cluster: BTreeSet::new(),
            eligible: Vec::new(),
            shard_of: BTreeMap::new(),
            master_shard: BTreeMap::new(),
            intended_master: BTreeMap::new(),
            plan: Plan::default(),
        }
    }

    fn run(mut self) -> Result<Plan, PlanError> {
        self.find_cluster();
        self.classify_members();
        self.assign_shards();
        let bootstrap = self.is_bootstrap();
        if bootstrap && !self.ready_to_bootstrap() {
            return Ok(self.plan);
        }

        let mut stale_meets = self.stale_address_meets();
        let fixes = self.open_slot_fixes();
        let masters = self.choose_masters();
        let (promotions, master_of_shard, lost) =
            (masters.promotions, masters.master_of_shard, masters.lost);
        let forgets = self.forgets();
        let recover = self.recover_lost(&lost, &master_of_shard);
        let boot = if bootstrap {
            self.bootstrap_slots(&master_of_shard)
        } else {
            Vec::new()
        };
        let (joins, mut surplus) = self.joins_and_replication(&master_of_shard);
        surplus.extend(self.unbacked_live());
        // Replicas leave before masters: a master cannot be forgotten while a node still
        // replicates it ("Can't forget my master"). Shards order the detaches of one removed
        // shard, but a drained master owns no slot, so it and its replica may be parked in
        // different shards (found by the scale-in test with unpinned members).
        surplus.sort_by_key(|step| match step {
            Step::Detach { node } => self.node(&node.id).is_some_and(|n| n.role == Role::Master),
            _ => false,
        });

        let mut steps = Vec::new();
        steps.append(&mut stale_meets);
        steps.extend(fixes);
        steps.extend(promotions);
        steps.extend(forgets);
        steps.extend(boot);
        steps.extend(joins);
        // After the joins: the node taking lost slots must know the cluster's current epoch so
        // its bumped epoch is above every other (PITFALLS 6).
        steps.extend(recover);
        steps.extend(self.partial_join_meets());
        // PITFALLS 18: slots move only in a stable cluster; otherwise the next plan does it.
        let converged = self.staying_view().is_converged();
        if steps.is_empty() && converged {
            steps.extend(self.rebalance(&master_of_shard));
        }
        steps.extend(surplus);
        let blocked = self.plan.notes.iter().any(|n| {
            matches!(
                n,
                Note::Unreachable { .. }
                    | Note::ForeignNode { .. }
                    | Note::LostSlots { .. }
                    | Note::Waiting { .. }
            )
        });
        // Nothing to do but not converged either (gossip still spreading): wait for it, so
        // an empty plan always means a converged cluster unless a note says why not.
        if !steps.is_empty() || (!blocked && !converged) {
            steps.push(Step::WaitConverged);
        }
        self.plan.steps = steps;
        self.plan.shards = self
            .shard_of
            .iter()
            .map(|(&i, &s)| (self.resolved[i].member.name.clone(), s))
            .collect();
        self.plan.scope = self.scope();
        Ok(self.plan)
    }

    /// The main cluster: the group of nodes, connected by "knows", with the most slots.
    fn find_cluster(&mut self) {
        let mut groups: Vec<BTreeSet<NodeId>> = Vec::new();
        for (id, obs) in &self.view.observed {
            let mut known: BTreeSet<NodeId> = obs
                .entries
                .iter()
                .filter(|e| !e.flags.handshake)
                .map(|e| e.id.clone())
                .collect();
            known.insert(id.clone());
            let (mut joined, rest): (Vec<_>, Vec<_>) =
                groups.into_iter().partition(|g| !g.is_disjoint(&known));
            let mut merged = known;
            for g in joined.drain(..) {
                merged.extend(g);
            }
            groups = rest;
            groups.push(merged);
        }
        let slots_of = |g: &BTreeSet<NodeId>| -> usize {
            g.iter()
                .filter_map(|id| self.view.nodes.get(id))
                .map(|n| n.slots.len())
                .sum()
        };
        // Largest by slots, then by size (a half-met bootstrap has no slots yet).
        self.cluster = groups
            .into_iter()
            .max_by_key(|g| (slots_of(g), g.len()))
            .unwrap_or_default();
    }

    fn classify_members(&mut self) {
        // In a new or half-created cluster (no key anywhere, nothing failing), a member that
        // got slots, met some others or was attached before the creation stopped is not
        // another cluster: it joins like a fresh one (groups merge; nothing can be lost).
        let creating = self.is_bootstrap();
        let member_ids: BTreeSet<&NodeId> = self.resolved.iter().filter_map(id_of).collect();
        for i in 0..self.resolved.len() {
            let r = &self.resolved[i];
            let Some(obs) = r.obs else {
                self.plan.notes.push(Note::Unreachable {
                    member: r.member.name.clone(),
                });
                continue;
            };
            let fresh = obs.is_alone()
                && obs
                    .myself()
                    .is_some_and(|m| m.slots.is_empty() && m.role() == Role::Master);
            // Only groups made of our own members: a node that knows any other node may
            // belong to someone else's cluster, which a MEET would drag in (PITFALLS 32).
            let ours = obs
                .entries
                .iter()
                .all(|e| e.flags.handshake || member_ids.contains(&e.id));
            let joinable = obs.keys == 0 && (fresh || (creating && ours));
            if joinable || self.in_cluster(i) {
                self.eligible.push(i);
                continue;
            }
            let reason = if obs.keys > 0 {
                format!("it holds {} keys but is not part of this cluster", obs.keys)
            } else {
                "it belongs to another cluster".to_owned()
            };
            self.plan.notes.push(Note::ForeignNode {
                member: r.member.name.clone(),
                reason,
            });
        }
    }

    fn node(&self, id: &NodeId) -> Option<&'a ViewNode> {
        self.view.nodes.get(id)
    }

    fn in_cluster(&self, i: usize) -> bool {
        let r = &self.resolved[i];
        // A node alone in its table is part of the cluster only when it serves slots (a
        // one-master cluster); otherwise it is joinable at best.
        r.id.as_ref().is_some_and(|id| self.cluster.contains(id))
            && r.obs
                .is_some_and(|o| !o.is_alone() || self.has_slots(id_of(r)))
    }

    fn has_slots(&self, id: Option<&NodeId>) -> bool {
        id.and_then(|id| self.node(id))
            .is_some_and(|n| !n.slots.is_empty())
    }

    /// Member index backing a node id.
    fn member_of(&self, id: &NodeId) -> Option<usize> {
        self.eligible
            .iter()
            .copied()
            .find(|&i| self.resolved[i].id.as_ref() == Some(id))
    }

    /// Slot-owning masters in shard order (lowest slot first), members or not.
    fn slot_masters(&self) -> Vec<&'a ViewNode> {
        let mut masters: Vec<&ViewNode> = self
            .view
            .nodes
            .values()
            .filter(|n| {
                n.role == Role::Master && !n.slots.is_empty() && self.cluster.contains(&n.id)
            })
            .collect();
        masters.sort_by_key(|n| n.slots.iter().next());
        masters
    }

    fn assign_shards(&mut self) {
        // Explicit shards first.
        for &i in &self.eligible {
            if let Some(s) = self.resolved[i].member.shard {
                self.shard_of.insert(i, s);
            }
        }
        // Slot-owning masters: the shard of their member, or the next free shard number.
        let mut next_free = 0;
        for m in self.slot_masters() {
            let shard = match self
                .member_of(&m.id)
                .and_then(|i| self.shard_of.get(&i).copied())
            {
                Some(s) => s,
                None => {
                    // A gone master: the shard its replicas were placed in, if any.
                    let from_replicas = self.eligible.iter().find_map(|&i| {
                        let r = &self.resolved[i];
                        let rid = r.id.as_ref()?;
                        let n = self.node(rid)?;
                        (n.master.as_ref() == Some(&m.id))
                            .then(|| self.shard_of.get(&i).copied())
                            .flatten()
                    });
                    match from_replicas {
                        Some(s) => s,
                        None => {
                            while self.master_shard.values().any(|&s| s == next_free)
                                || self.shard_of.values().any(|&s| s == next_free)
                            {
                                next_free += 1;
                            }
                            next_free
                        }
                    }
                }
            };
            self.master_shard.insert(m.id.clone(), shard);
            if let Some(i) = self.member_of(&m.id) {
                self.shard_of.entry(i).or_insert(shard);
            }
        }
        // Replicas follow their master's shard.
        for &i in &self.eligible.clone() {
            if self.shard_of.contains_key(&i) {
                continue;
            }
            let Some(n) = id_of(&self.resolved[i]).and_then(|id| self.node(id)) else {
                continue;
            };
            if let Some(s) = n.master.as_ref().and_then(|m| self.master_shard.get(m)) {
                self.shard_of.insert(i, *s);
            }
        }
        // Everything else: first a master for every empty shard (spread over workers), then
        // replicas by maximum matching onto shards whose master is on another worker, then
        // whatever is left onto the emptiest shards.
        let per_shard = 1 + self.desired.replicas_per_master;
        let mut unassigned: Vec<usize> = self
            .eligible
            .iter()
            .copied()
            .filter(|i| !self.shard_of.contains_key(i))
            .collect();
        for s in 0..self.desired.masters {
            if self.shard_of.values().any(|&x| x == s)
                || self.master_shard.values().any(|&x| x == s)
            {
                continue;
            }
            let masters_on = |w: &str, me: &Self| {
                (0..me.desired.masters)
                    .filter(|&t| me.shard_master_worker(t) == Some(w))
                    .count()
            };
            let pick = unassigned
                .iter()
                .enumerate()
                .min_by_key(|(k, &i)| (masters_on(&self.resolved[i].member.worker, self), *k))
                .map(|(k, _)| k);
            let Some(k) = pick else { break };
            let i = unassigned.remove(k);
            self.shard_of.insert(i, s);
            self.intended_master.insert(s, i);
        }
        let mut capacity: Vec<(usize, Option<String>)> = Vec::new();
        for s in 0..self.desired.masters {
            let count = self.shard_of.values().filter(|&&x| x == s).count();
            let worker = self.shard_master_worker(s).map(str::to_owned);
            for _ in count..per_shard {
                capacity.push((s, worker.clone()));
            }
        }
        let ok = |i: usize, slot: &(usize, Option<String>)| {
            slot.1.as_deref() != Some(self.resolved[i].member.worker.as_str())
        };
        let matched = max_matching(&unassigned, &capacity, ok);
        let mut taken = vec![false; capacity.len()];
        for (&i, slot) in unassigned.iter().zip(&matched) {
            if let Some(c) = *slot {
                taken[c] = true;
                self.shard_of.insert(i, capacity[c].0);
            }
        }
        for (&i, slot) in unassigned.iter().zip(&matched) {
            if slot.is_some() {
                continue;
            }
            let free = (0..capacity.len()).find(|&c| !taken[c]);
            let shard = match free {
                Some(c) => {
                    taken[c] = true;
                    capacity[c].0
                }
                // Every shard is full: the member is surplus; park it in the least-filled shard.
                None => (0..self.desired.masters)
                    .min_by_key(|s| self.shard_of.values().filter(|&&x| x == *s).count())
                    .unwrap_or(0),
            };
            self.shard_of.insert(i, shard);
        }
    }

    /// Worker of the member that is (or will be) the master of shard `s`: the slot owner if it
    /// is a member, else the first member placed in the shard.
    fn shard_master_worker(&self, s: usize) -> Option<&'a str> {
        let owner = self
            .master_shard
            .iter()
            .find(|(_, &x)| x == s)
            .map(|(id, _)| id);
        if let Some(i) = owner
            .and_then(|id| self.member_of(id))
            .or_else(|| self.intended_master.get(&s).copied())
        {
            return Some(self.resolved[i].member.worker.as_str());
        }
        self.shard_of
            .iter()
            .filter(|(_, &x)| x == s)
            .map(|(&i, _)| i)
            .min()
            .map(|i| self.resolved[i].member.worker.as_str())
    }

    /// A new or half-created cluster: no node holds a key, and either no slot is assigned
    /// anywhere, or a creation stopped between two `ADDSLOTS` (found by the crash-safety
    /// test): members that took an epoch or slots are still apart from the main group, no
    /// node is failing and every slot owner answers. Bootstrap sets every epoch before the
    /// first `ADDSLOTS`, so a creation stopped anywhere looks like this or like a new cluster.
    /// Lost slots (an owner that died, the survivors together) never do.
    fn is_bootstrap(&self) -> bool {
        let no_keys = self.view.observed.values().all(|o| o.keys == 0);
        let untouched = self.view.nodes.values().all(|n| n.slots.is_empty());
        // Members that got slots, an epoch or peers but are not in the main group: a creation
        // stopped before its MEETs.
        let split = self.resolved.iter().any(|r| {
            r.obs.is_some_and(|o| !o.is_fresh())
                && r.id.as_ref().is_some_and(|id| !self.cluster.contains(id))
        });
        let half_created = split
            && self
                .view
                .nodes
                .values()
                .all(|n| !n.failed && n.pfail_by == 0 && (n.slots.is_empty() || n.reachable));
        no_keys && (untouched || half_created)
    }

    fn ready_to_bootstrap(&mut self) -> bool {
        let reachable = self.eligible.len();
        let unreachable = self.resolved.iter().filter(|r| r.obs.is_none()).count();
        if unreachable > 0 || reachable < self.desired.masters {
            self.plan.notes.push(Note::Waiting {
                reason: format!(
                    "bootstrap needs {} reachable empty nodes; {reachable} are ready, {unreachable} unreachable",
                    self.desired.masters
                ),
            });
            return false;
        }
        true
    }

    /// PITFALLS 4, 31: a live node recorded at another address is re-MEET, never forgotten.
    fn stale_address_meets(&self) -> Vec<Step> {
        let mut out = Vec::new();
        let mut done: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();
        for d in &self.view.disagreements {
            let crate::model::Disagreement::Address { observer, node, .. } = d else {
                continue;
            };
            let (Some(ni), Some(oi)) = (self.member_of(node), self.member_of(observer)) else {
                continue;
            };
            let (Some(n), Some(o)) = (self.resolved[ni].node_ref(), self.resolved[oi].node_ref())
            else {
                continue;
            };
            if done.insert((node.clone(), observer.clone())) {
                out.push(Step::Meet { node: n, via: o });
            }
        }
        out
    }

    /// The view restricted to the members that stay (eligible, not released), and the
    /// live cluster nodes no member backs (they still count until drained and detached).
    fn staying_view(&self) -> ClusterView {
        let mut keep: BTreeSet<NodeId> = self
            .eligible
            .iter()
            .filter(|&&i| !self.plan.released.contains(&self.resolved[i].member.name))
            .filter_map(|&i| self.resolved[i].id.clone())
            .collect();
        keep.extend(
            self.view
                .observed
                .keys()
                .filter(|id| self.cluster.contains(*id) && self.member_of(id).is_none())
                .cloned(),
        );
        let unreachable = self
            .resolved
            .iter()
            .filter(|r| r.obs.is_none() && !self.plan.released.contains(&r.member.name))
            .map(|r| r.member.addr.clone())
            .collect();
        self.view.restricted_to(&keep, &unreachable)
    }

    /// A reachable node's ref, from its own observation.
    fn observed_ref(&self, id: &NodeId) -> Option<NodeRef> {
        let obs = self.view.observed.get(id)?;
        let bus_port = obs.myself()?.bus_port;
        Some(NodeRef {
            id: id.clone(),
            addr: obs.addr.clone(),
            bus_port,
        })
    }

    /// Live nodes of the cluster that no member backs: replicas and empty masters are
    /// detached; masters with slots are drained first by the rebalance.
    fn unbacked_live(&self) -> Vec<Step> {
        let mut out = Vec::new();
        for (id, obs) in &self.view.observed {
            if self.member_of(id).is_some() || !self.cluster.contains(id) || obs.is_alone() {
                continue;
            }
            let Some(me) = obs.myself() else { continue };
            if me.role() == Role::Master && !me.slots.is_empty() {
                continue;
            }
            if let Some(r) = self.observed_ref(id) {
                out.push(Step::Detach { node: r });
            }
        }
        out
    }

    /// A member of the cluster that some other member does not know (a MEET interrupted
    /// before gossip spread it): MEET it again through each node that misses it. Released
    /// members are left alone: they are on their way out.
    fn partial_join_meets(&self) -> Vec<Step> {
        let mut out = Vec::new();
        for d in &self.view.disagreements {
            let crate::model::Disagreement::Unknown { observer, node } = d else {
                continue;
            };
            let (Some(ni), Some(oi)) = (self.member_of(node), self.member_of(observer)) else {
                continue;
            };
            let released = |i: usize| self.plan.released.contains(&self.resolved[i].member.name);
            if released(ni) || released(oi) || !self.in_cluster(ni) || !self.in_cluster(oi) {
                continue;
            }
            if let (Some(n), Some(o)) = (self.resolved[ni].node_ref(), self.resolved[oi].node_ref())
            {
                out.push(Step::Meet { node: n, via: o });
            }
        }
        out
    }

    /// PITFALLS 17: open slots are closed before anything else moves.
    fn open_slot_fixes(&self) -> Vec<Step> {
        let mut by_slot: BTreeMap<crate::model::Slot, BTreeSet<NodeId>> = BTreeMap::new();
        for (id, open, _) in self.view.open_slots() {
            let e = by_slot.entry(open.slot).or_default();
            e.insert(id.clone());
            e.insert(open.peer.clone());
        }
        let mut out = Vec::new();
        for (slot, ids) in by_slot {
            let refs: Vec<NodeRef> = ids
                .iter()
                .filter_map(|id| self.member_of(id).and_then(|i| self.resolved[i].node_ref()))
                .collect();
            // Owner: the consensus owner if it is reachable, else the node importing it.
            let owner = self
                .view
                .owner_of(slot)
                .and_then(|id| refs.iter().find(|r| &r.id == id))
                .or_else(|| refs.first())
                .cloned();
            if let Some(owner) = owner {
                out.push(Step::FixOpenSlot {
                    slot,
                    owner,
                    involved: refs,
                });
            }
        }
        out
    }

    fn choose_masters(&mut self) -> MasterChoice {
        let mut choice = MasterChoice::default();
        let shards: BTreeSet<usize> = self
            .shard_of
            .values()
            .copied()
            .chain(self.master_shard.values().copied())
            .collect();
        for s in (0..self.desired.masters).filter(|s| !shards.contains(s)) {
            // The caller must add a member (a pod) for this shard.
            self.plan.notes.push(Note::ShardWithoutMaster { shard: s });
        }
        let live_masters = self
            .slot_masters()
            .iter()
            .filter(|m| self.is_alive(&m.id))
            .count();
        let total_masters = self.slot_masters().len();
        for s in shards {
            let in_shard: Vec<usize> = self
                .shard_of
                .iter()
                .filter(|(_, &x)| x == s)
                .map(|(&i, _)| i)
                .collect();
            let owners: Vec<&ViewNode> = self
                .master_shard
                .iter()
                .filter(|(_, &x)| x == s)
                .filter_map(|(id, _)| self.node(id))
                .collect();
            let alive_owner = owners
                .iter()
                .find(|m| self.is_alive(&m.id) && !self.is_terminating(&m.id))
                .and_then(|m| self.member_of(&m.id));
            if let Some(i) = alive_owner {
                choice.master_of_shard.insert(s, i);
                continue;
            }
            if let Some(old) = owners.first() {
                // The shard's master is gone, failed or terminating: promote its best replica.
                let candidates: Vec<usize> = in_shard
                    .iter()
                    .copied()
                    .filter(|&i| {
                        id_of(&self.resolved[i])
                            .and_then(|id| self.node(id))
                            .is_some_and(|n| {
                                n.master.as_ref() == Some(&old.id) && n.role == Role::Replica
                            })
                    })
                    .collect();
                let best = candidates.iter().copied().max_by_key(|&i| {
                    let obs = self.resolved[i].obs;
                    let off = obs.map_or(0, |o| o.replication.offset);
                    let flagged = id_of(&self.resolved[i])
                        .and_then(|id| self.node(id))
                        .is_some_and(|n| n.failed || n.pfail_by > 0);
                    (!flagged, !self.resolved[i].member.terminating, off)
                });
                let Some(best) = best else {
                    if self.answers(&old.id) {
                        // Terminating, or live but backed by no member, with no replica: it
                        // keeps serving until a replica exists or the rebalance drains it.
                        if let Some(i) = self.member_of(&old.id) {
                            choice.master_of_shard.insert(s, i);
                        }
                    } else {
                        choice.lost.push((s, old.id.clone()));
                        if let Some(i) = self.pick_new_master(&in_shard) {
                            choice.master_of_shard.insert(s, i);
                        }
                    }
                    continue;
                };
                let Some(node) = self.resolved[best].node_ref() else {
                    continue;
                };
                let mode = if self.answers(&old.id) {
                    FailoverMode::Graceful
                } else if live_masters * 2 > total_masters {
                    FailoverMode::Force
                } else {
                    // PITFALLS 15: no quorum can vote; only TAKEOVER can promote.
                    FailoverMode::Takeover
                };
                choice.promotions.push(Step::Failover {
                    node,
                    of: old.id.clone(),
                    mode,
                });
                choice.master_of_shard.insert(s, best);
                continue;
            }
            // A shard with no slots: its master is an empty master among its members.
            match self.pick_new_master(&in_shard) {
                Some(i) => {
                    choice.master_of_shard.insert(s, i);
                }
                None if !in_shard.is_empty() => {
                    self.plan.notes.push(Note::ShardWithoutMaster { shard: s })
                }
                None => {}
            }
        }
        choice
    }

    /// For a shard without a slot owner: a member that is already an empty master in the
    /// cluster, else a joinable one; never a replica of another shard.
    fn pick_new_master(&self, in_shard: &[usize]) -> Option<usize> {
        let mut cands: Vec<usize> = in_shard
            .iter()
            .copied()
            .filter(|&i| {
                let r = &self.resolved[i];
                !r.member.terminating
                    && r.obs
                        .and_then(NodeObservation::myself)
                        .is_some_and(|m| m.role() == Role::Master)
            })
            .collect();
        let intended: BTreeSet<usize> = self.intended_master.values().copied().collect();
        cands.sort_by_key(|&i| (!self.in_cluster(i), !intended.contains(&i), i));
        cands.first().copied()
    }

    fn is_alive(&self, id: &NodeId) -> bool {
        self.member_of(id)
            .is_some_and(|i| self.resolved[i].obs.is_some())
            && self.node(id).is_some_and(|n| n.reachable)
    }

    /// The node answered us and the cluster does not consider it failed (a member or not).
    fn answers(&self, id: &NodeId) -> bool {
        self.node(id).is_some_and(|n| n.reachable && !n.failed)
    }

    fn is_terminating(&self, id: &NodeId) -> bool {
        self.member_of(id)
            .is_some_and(|i| self.resolved[i].member.terminating)
    }

    /// Ids to forget: nodes no eligible member backs, that are not reachable anywhere
    /// (PITFALLS 3: the caller says the process is gone), plus stuck handshakes.
    fn forgets(&self) -> Vec<Step> {
        let mut out = Vec::new();
        for (id, node) in &self.view.nodes {
            if self.member_of(id).is_some() || node.reachable {
                continue;
            }
            if !node.handshake && !self.cluster.contains(id) {
                continue;
            }
            out.push(Step::Forget { id: id.clone() });
        }
        out
    }

    /// PITFALLS 6: slots whose owner is gone with no replica are served again (by policy).
    fn recover_lost(
        &mut self,
        lost: &[(usize, NodeId)],
        master_of_shard: &BTreeMap<usize, usize>,
    ) -> Vec<Step> {
        let mut slots = self.view.uncovered_slots();
        for (_, id) in lost {
            if let Some(n) = self.node(id) {
                slots.union_with(&n.slots);
            }
        }
        if slots.is_empty() || self.is_bootstrap() {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Group lost slots by the shard that lost them; uncovered slots nobody claims go to
        // the master with the fewest slots.
        let mut assigned = SlotSet::new();
        for (s, id) in lost {
            let Some(n) = self.node(id) else { continue };
            let Some(fallback) = master_of_shard
                .get(s)
                .and_then(|&i| self.resolved[i].node_ref())
            else {
                self.plan.notes.push(Note::ShardWithoutMaster { shard: *s });
                continue;
            };
            assigned.union_with(&n.slots);
            out.push(Step::RecoverSlots {
                slots: n.slots.ranges(),
                fallback,
                allow_empty: self.policy.recover_lost_slots,
            });
        }
        let rest = slots.difference(&assigned);
        if !rest.is_empty() {
            let fallback = master_of_shard
                .values()
                .filter_map(|&i| self.resolved[i].node_ref())
                .min_by_key(|r| self.node(&r.id).map_or(0, |n| n.slots.len()));
            if let Some(fallback) = fallback {
                out.push(Step::RecoverSlots {
                    slots: rest.ranges(),
                    fallback,
                    allow_empty: self.policy.recover_lost_slots,
                });
            }
        }
        if !self.policy.recover_lost_slots {
            self.plan.notes.push(Note::LostSlots {
                slots: slots.ranges(),
            });
        }
        out
    }

    /// Even contiguous ranges per shard for a new cluster; slots already held are kept. Every
    /// config epoch is set before the first slot is added (see [`Self::is_bootstrap`]).
    fn bootstrap_slots(&self, master_of_shard: &BTreeMap<usize, usize>) -> Vec<Step> {
        let mut epochs = Vec::new();
        let mut out = Vec::new();
        let n = self.desired.masters;
        let uncovered = self.view.uncovered_slots();
        for (s, &i) in master_of_shard {
            if *s >= n {
                continue;
            }
            let Some(node) = self.resolved[i].node_ref() else {
                continue;
            };
            let range = even_range(*s, n);
            let want: SlotSet = range.slots().filter(|x| uncovered.contains(*x)).collect();
            if self.resolved[i].obs.is_some_and(NodeObservation::is_alone)
                && self.view.max_epoch() == 0
            {
                epochs.push(Step::SetConfigEpoch {
                    node: node.clone(),
                    epoch: *s as u64 + 1,
                });
            }
            if !want.is_empty() {
                out.push(Step::AddSlots {
                    node,
                    slots: want.ranges(),
                });
            }
        }
        epochs.extend(out);
        epochs
    }

    /// MEET joining members, attach replicas to their shard's master, detach surplus.
    fn joins_and_replication(
        &mut self,
        master_of_shard: &BTreeMap<usize, usize>,
    ) -> (Vec<Step>, Vec<Step>) {
        let mut meets = Vec::new();
        let mut replicates = Vec::new();
        let mut surplus = Vec::new();
        // A node already in the cluster to introduce joiners through: a live master.
        let via = master_of_shard
            .values()
            .copied()
            .filter(|&i| self.in_cluster(i))
            .chain(
                self.eligible
                    .iter()
                    .copied()
                    .filter(|&i| self.in_cluster(i)),
            )
            .find_map(|i| self.resolved[i].node_ref())
            .or_else(|| {
                master_of_shard
                    .values()
                    .find_map(|&i| self.resolved[i].node_ref())
            });
        let mut shards: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (&i, &s) in &self.shard_of {
            shards.entry(s).or_default().push(i);
        }
        for (s, members) in shards {
            let removed_shard = s >= self.desired.masters;
            let Some(&mi) = master_of_shard.get(&s) else {
                continue;
            };
            let Some(master) = self.resolved[mi].node_ref() else {
                continue;
            };
            let drained = self.node(&master.id).is_none_or(|n| n.slots.is_empty());
            if removed_shard && drained {
                // A removed shard whose master serves nothing (drained, or never filled):
                // detach its replicas, then its master (PITFALLS 23), and release them all.
                let mut order: Vec<usize> = members.iter().copied().filter(|&i| i != mi).collect();
                order.push(mi);
                for i in order {
                    if let (true, Some(node)) = (self.in_cluster(i), self.resolved[i].node_ref()) {
                        surplus.push(Step::Detach { node });
                    }
                    self.plan
                        .released
                        .push(self.resolved[i].member.name.clone());
                }
                continue;
            }
            if let Some(v) = &via {
                if !self.in_cluster(mi) && v.id != master.id {
                    meets.push(Step::Meet {
                        node: master.clone(),
                        via: v.clone(),
                    });
                }
            }
            // Keep the best R replicas: already attached, on another worker, in sync.
            let mut reps: Vec<usize> = members.iter().copied().filter(|&i| i != mi).collect();
            let master_worker = self.resolved[mi].member.worker.clone();
            reps.sort_by_key(|&i| {
                let r = &self.resolved[i];
                let attached = id_of(r)
                    .and_then(|id| self.node(id))
                    .is_some_and(|n| n.master.as_ref() == Some(&master.id));
                let other_worker = r.member.worker != master_worker;
                let off = r.obs.map_or(0, |o| o.replication.offset);
                (
                    r.member.terminating,
                    !attached,
                    !other_worker,
                    std::cmp::Reverse(off),
                    r.member.name.clone(),
                )
            });
            let keep = if removed_shard {
                reps.len()
            } else {
                self.desired.replicas_per_master.min(reps.len())
            };
            for (k, &i) in reps.iter().enumerate() {
                let r = &self.resolved[i];
                let Some(node) = r.node_ref() else { continue };
                if k >= keep || r.member.terminating {
                    if self.in_cluster(i) {
                        surplus.push(Step::Detach { node });
                    }
                    self.plan.released.push(r.member.name.clone());
                    continue;
                }
                if r.member.worker == master_worker {
                    let other_free = self
                        .resolved
                        .iter()
                        .any(|o| o.member.worker != master_worker);
                    if !other_free || self.resolved[mi].member.shard.is_some() {
                        self.plan.notes.push(Note::AntiAffinityUnmet {
                            replica: r.member.name.clone(),
                            master: self.resolved[mi].member.name.clone(),
                            worker: master_worker.clone(),
                        });
                    }
                }
                if !self.in_cluster(i) {
                    let via = if self.in_cluster(mi) {
                        Some(master.clone())
                    } else {
                        via.clone()
                    };
                    if let Some(v) = via {
                        if v.id != node.id {
                            meets.push(Step::Meet {
                                node: node.clone(),
                                via: v,
                            });
                        }
                    }
                }
                let attached = id_of(r).and_then(|id| self.node(id)).is_some_and(|n| {
                    n.role == Role::Replica && n.master.as_ref() == Some(&master.id)
                });
                if !attached {
                    replicates.push(Step::Replicate {
                        node,
                        master: master.clone(),
                    });
                }
            }
        }
        meets.extend(replicates);
        (meets, surplus)
    }

    /// Balance slots over the masters of shards `0..desired.masters` and drain the masters
    /// of removed shards; then detach the drained shards' nodes.
    fn rebalance(&mut self, master_of_shard: &BTreeMap<usize, usize>) -> Vec<Step> {
        let mut keep: Vec<NodeId> = Vec::new();
        let mut refs: BTreeMap<NodeId, NodeRef> = BTreeMap::new();
        for (&s, &i) in master_of_shard {
            let Some(r) = self.resolved[i].node_ref() else {
                continue;
            };
            if s < self.desired.masters {
                keep.push(r.id.clone());
            }
            refs.insert(r.id.clone(), r);
        }
        if keep.is_empty() {
            return Vec::new();
        }
        // Live masters no member backs are drained too (their target is 0).
        for id in self
            .view
            .observed
            .keys()
            .filter(|id| self.cluster.contains(*id))
        {
            if let Some(r) = self.observed_ref(id) {
                refs.entry(id.clone()).or_insert(r);
            }
        }
        let mut owned: BTreeMap<NodeId, SlotSet> = BTreeMap::new();
        for n in self.view.nodes.values() {
            let ours = self.cluster.contains(&n.id);
            if ours && n.role == Role::Master && (!n.slots.is_empty() || keep.contains(&n.id)) {
                owned.insert(n.id.clone(), n.slots.clone());
            }
        }
        for id in &keep {
            owned.entry(id.clone()).or_default();
        }
        let counts = owned.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        let targets = balanced_targets(&keep, &counts);
        // Leave a master alone when it is within one slot of its fair share.
        let floor = usize::from(SLOT_COUNT) / keep.len();
        let balanced = owned.iter().all(|(id, set)| {
            if keep.contains(id) {
                set.len() == floor || set.len() == floor + 1
            } else {
                set.is_empty()
            }
        });
        if balanced {
            return Vec::new();
        }
        plan_moves(&owned, &targets)
            .into_iter()
            .filter_map(|m| {
                Some(Step::MoveSlots {
                    from: refs.get(&m.from)?.clone(),
                    to: refs.get(&m.to)?.clone(),
                    slots: m.slots,
                })
            })
            .collect()
    }

    /// Nodes that stay in the cluster once the plan ran (released members are left out: they
    /// are alone after their Detach and must not count against convergence).
    fn scope(&self) -> Vec<NodeRef> {
        self.eligible
            .iter()
            .filter(|&&i| !self.plan.released.contains(&self.resolved[i].member.name))
            .filter_map(|&i| self.resolved[i].node_ref())
            .collect()
    }
}

#[derive(Default)]
struct MasterChoice {
    promotions: Vec<Step>,
    /// Shard -> member index of its (future) master.
    master_of_shard: BTreeMap<usize, usize>,
    /// Shards whose master is gone with no replica: (shard, old master id).
    lost: Vec<(usize, NodeId)>,
}

/// Maximum bipartite matching (Kuhn's augmenting paths) of `left` items onto `slots`, using
/// only pairs `ok` accepts. Returns the slot index matched to each left item.
fn max_matching<T>(
    left: &[usize],
    slots: &[T],
    ok: impl Fn(usize, &T) -> bool,
) -> Vec<Option<usize>> {
    fn augment<T>(
        l: usize,
        left: &[usize],
        slots: &[T],
        ok: &impl Fn(usize, &T) -> bool,
        owner: &mut Vec<Option<usize>>,
        seen: &mut Vec<bool>,
    ) -> bool {
        for c in 0..slots.len() {
            if seen[c] || !ok(left[l], &slots[c]) {
                continue;
            }
            seen[c] = true;
            let free = match owner[c] {
                None => true,
                Some(other) => augment(other, left, slots, ok, owner, seen),
            };
            if free {
                owner[c] = Some(l);
                return true;
            }
        }
        false
    }
    let mut owner: Vec<Option<usize>> = vec![None; slots.len()];
    for l in 0..left.len() {
        let mut seen = vec![false; slots.len()];
        augment(l, left, slots, &ok, &mut owner, &mut seen);
    }
    let mut out = vec![None; left.len()];
    for (c, o) in owner.iter().enumerate() {
        if let Some(l) = o {
            out[*l] = Some(c);
        }
    }
    out
}

fn id_of<'r>(r: &'r Resolved<'_>) -> Option<&'r NodeId> {
    r.id.as_ref()
}

/// Slot range `i` of `n` even contiguous ranges, computed like `redis-cli --cluster create`
/// (3 masters: 0-5460, 5461-10922, 10923-16383). Requires `i < n <= 16384`.
pub fn even_range(i: usize, n: usize) -> SlotRange {
    let total = f64::from(SLOT_COUNT);
    let per = total / n as f64;
    let last_of = |k: usize| -> u16 {
        if k + 1 >= n {
            SLOT_COUNT - 1
        } else {
            ((k + 1) as f64 * per - 1.0).round().clamp(0.0, total - 1.0) as u16
        }
    };
    let first = if i == 0 {
        0
    } else {
        last_of(i - 1).saturating_add(1).min(SLOT_COUNT - 1)
    };
    let last = last_of(i).max(first);
    let slot = |x: u16| crate::model::Slot::new(x.min(SLOT_COUNT - 1));
    match (slot(first), slot(last)) {
        (Ok(a), Ok(b)) => SlotRange::new(a, b).unwrap_or_else(|_| SlotRange::single(a)),
        // Both values are clamped below 16384, so this arm never runs.
        _ => SlotRange::single(crate::model::Slot::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ranges_match_redis_cli() {
        assert_eq!(even_range(0, 3).to_string(), "0-5460");
        assert_eq!(even_range(1, 3).to_string(), "5461-10922");
        assert_eq!(even_range(2, 3).to_string(), "10923-16383");
        assert_eq!(even_range(0, 1).to_string(), "0-16383");
    }
}
