//! From pods to engine members, and which pods to create: pure functions of the pods the API
//! server lists, the validated cluster and the engine's view. No network.
//!
//! Roles never come from here (PITFALLS 14): a pod's shard label places it, the live cluster
//! says who is master. The only decisions made here are about pods: which ones are gone and
//! must be deleted, which indexes and shards new pods get.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kredis_api::{labels, PortLayout, ValidatedCluster};
use kredis_engine::model::{ClusterView, NodeAddr, NodeId, Role};
use kredis_engine::plan::Member;
use kube::ResourceExt;

use crate::pod::{pod_port, BUS_PORT_NAME, CLIENT_PORT_NAME, SPEC_HASH_ANNOTATION};

/// Where a pod is in its life, as far as the operator cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not scheduled or not started yet: no Redis to talk to.
    Pending,
    /// Its process runs (it may not answer yet).
    Running,
    /// Deletion requested; the process still runs through its grace period.
    Terminating,
    /// The process is gone for good (`Failed`/`Succeeded` with `restartPolicy: Never`), or its
    /// worker node is gone: the pod only needs deleting.
    Gone,
    /// Redis exited by itself before the pod ever joined the cluster (a bad setting, a
    /// broken image): the pod is kept for `kubectl logs`, not recreated in a loop, and the
    /// rollout that made it stops until the spec changes.
    FailedToStart,
}

/// What the operator reads from one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// Pod name.
    pub name: String,
    /// `kredis.io/index`.
    pub index: Option<u32>,
    /// `kredis.io/shard`.
    pub shard: Option<u32>,
    /// Client port declared by the redis container.
    pub client_port: Option<u16>,
    /// Bus port declared by the redis container.
    pub bus_port: Option<u16>,
    /// Whether the pod runs on the node's network.
    pub host_network: bool,
    /// Pod IP (the node's IP with host network).
    pub ip: Option<String>,
    /// Worker node.
    pub node: Option<String>,
    /// Lifecycle.
    pub state: PodState,
    /// Ready condition (readiness probe passes).
    pub ready: bool,
    /// Labels as they are (node id and role labels are kept up to date by the operator).
    pub labels: BTreeMap<String, String>,
    /// [`crate::pod::spec_hash`] recorded at creation.
    pub spec_hash: Option<String>,
    /// Why the redis container cannot start (image missing, not runnable...), if it waits.
    pub waiting_reason: Option<String>,
}

impl PodFacts {
    /// Reads a pod. `nodes` are the worker nodes that exist; a pod bound to another is gone.
    pub fn from_pod(pod: &Pod, nodes: &BTreeSet<String>) -> Self {
        let labels = pod.labels().clone();
        let parse = |k: &str| labels.get(k).and_then(|v| v.parse::<u32>().ok());
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ip = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        let node_gone = node.as_ref().is_some_and(|n| !nodes.contains(n));
        let redis_status = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.name == crate::pod::REDIS_CONTAINER);
        let exit_code = redis_status
            .and_then(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| t.exit_code);
        // Killed by a signal (128+n) is a crash or an eviction, not a start-up failure.
        let exited_by_itself = exit_code.is_some_and(|c| c != 0 && c < 128);
        let never_joined = !labels.contains_key(labels::NODE_ID);
        let state = if phase == "Failed" && !node_gone && exited_by_itself && never_joined {
            PodState::FailedToStart
        } else if matches!(phase, "Failed" | "Succeeded") || node_gone {
            PodState::Gone
        } else if pod.metadata.deletion_timestamp.is_some() {
            PodState::Terminating
        } else if phase == "Running" && ip.is_some() {
            PodState::Running
        } else {
            PodState::Pending
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        // A redis container that waits for anything but its normal start is stuck.
        let waiting_reason = match (state, exit_code) {
            (PodState::FailedToStart, Some(code)) => {
                Some(format!("redis exited with code {code} at start"))
            }
            _ => redis_status
                .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .filter(|r| !matches!(r.as_str(), "ContainerCreating" | "PodInitializing")),
        };
        PodFacts {
            name: pod.name_any(),
            waiting_reason,
            index: parse(labels::INDEX),
            shard: parse(labels::SHARD),
            client_port: pod_port(pod, CLIENT_PORT_NAME),
            bus_port: pod_port(pod, BUS_PORT_NAME),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
            ip,
            node,
            state,
            ready,
            spec_hash: pod.annotations().get(SPEC_HASH_ANNOTATION).cloned(),
            labels,
        }
    }

    /// The Redis address of a pod whose process runs.
    pub fn addr(&self) -> Option<NodeAddr> {
        Some(NodeAddr::new(self.ip.clone()?, self.client_port?))
    }

    /// The engine member for a pod whose process runs (or still runs while terminating).
    pub fn member(&self) -> Option<Member> {
        if !matches!(self.state, PodState::Running | PodState::Terminating) {
            return None;
        }
        Some(Member {
            name: self.name.clone(),
            addr: self.addr()?,
            bus_port: self.bus_port?,
            worker: self.node.clone()?,
            shard: self.shard.map(|s| s as usize),
            terminating: self.state == PodState::Terminating,
        })
    }
}

/// The members of the cluster, in index order: every pod whose Redis process runs, and every
/// terminating pod whose node still belongs to the cluster (a master among them is handed
/// over gracefully). A terminating pod whose node was already detached, or that no longer
/// answers, is left out: its process is about to go, and a dead master is failed over by force.
///
/// When a kept shard has more running pods than `replicas` + 1 (replicasPerMaster went down),
/// the replicas with the highest indexes are marked terminating, so the engine releases those and
/// the cluster's ports shrink back into its range.
pub fn members(
    pods: &[PodFacts],
    view: &ClusterView,
    cluster: &ValidatedCluster,
    replicas: u32,
) -> Vec<Member> {
    let mut sorted: Vec<&PodFacts> = pods.iter().filter(|p| is_member(p, view)).collect();
    sorted.sort_by_key(|p| (p.index, p.name.clone()));
    let per_shard = 1 + replicas as usize;
    let mut retire: BTreeSet<&str> = BTreeSet::new();
    let mut by_shard: BTreeMap<u32, Vec<&PodFacts>> = BTreeMap::new();
    for p in sorted.iter().filter(|p| p.state == PodState::Running) {
        if let Some(s) = p.shard.filter(|s| *s < cluster.masters) {
            by_shard.entry(s).or_default().push(p);
        }
    }
    for pods in by_shard.values() {
        let excess = pods.len().saturating_sub(per_shard);
        let serves_slots = |p: &PodFacts| {
            p.addr()
                .as_ref()
                .and_then(|a| view.id_at(a))
                .and_then(|id| view.nodes.get(id))
                .is_some_and(|n| n.role == Role::Master && !n.slots.is_empty())
        };
        retire.extend(
            pods.iter()
                .rev()
                .filter(|p| !serves_slots(p))
                .take(excess)
                .map(|p| p.name.as_str()),
        );
    }
    sorted
        .into_iter()
        .filter_map(|p| {
            let mut m = p.member()?;
            m.terminating |= retire.contains(p.name.as_str());
            Some(m)
        })
        .collect()
}

/// Whether a pod takes part in the cluster (see [`members`]).
pub fn is_member(pod: &PodFacts, view: &ClusterView) -> bool {
    match pod.state {
        PodState::Running => true,
        PodState::Terminating => pod
            .addr()
            .as_ref()
            .and_then(|a| view.id_at(a))
            .and_then(|id| view.observed.get(id))
            .is_some_and(|o| !o.is_alone()),
        PodState::Pending | PodState::Gone | PodState::FailedToStart => false,
    }
}

/// A pod that exists but contradicts a field that cannot change (the API server's CEL rules
/// refuse such edits; this catches them where no CEL runs, and objects edited around it).
pub fn immutable_field_errors(cluster: &ValidatedCluster, pods: &[PodFacts]) -> Vec<String> {
    let mut errors = BTreeSet::new();
    for p in pods.iter().filter(|p| p.state != PodState::Gone) {
        if p.host_network != cluster.ports.host_network() {
            errors.insert(format!(
                "spec.hostNetwork: hostNetwork is immutable (pod {} runs with hostNetwork {}): set it back to {} or create a new KRedis",
                p.name, p.host_network, p.host_network
            ));
            continue;
        }
        if let (PortLayout::HostNetwork { base, .. }, Some(index), Some(port)) =
            (cluster.ports, p.index, p.client_port)
        {
            let pod_base = i64::from(port) - i64::from(index);
            if pod_base != i64::from(base) {
                errors.insert(format!(
                    "spec.basePort: basePort is immutable (pod {} was created from basePort {pod_base}): set it back to {pod_base} or create a new KRedis",
                    p.name
                ));
            }
        }
    }
    errors.into_iter().collect()
}

/// Client ports no new pod may take yet, of node ids in `view` that no running pod backs:
/// - dead nodes (they do not answer) the engine has not forgotten yet;
/// - masters that still answer and that replicas follow: a process whose pod object is gone
///   (force-deleted before its container stopped). Its replicas replicate from its address,
///   so a fresh, empty redis-server started there would be taken for their master once the
///   old process dies: they would full-resync from it and drop the shard's data (Redis
///   checks neither node id nor replication id before a full resync). The port is free
///   again once the engine has promoted a replica.
pub fn ghost_ports(view: &ClusterView, pods: &[PodFacts]) -> BTreeSet<u16> {
    let live: BTreeSet<NodeAddr> = pods
        .iter()
        .filter(|p| matches!(p.state, PodState::Running | PodState::Terminating))
        .filter_map(PodFacts::addr)
        .collect();
    let followed: BTreeSet<&NodeId> = view
        .nodes
        .values()
        .filter(|n| n.role == Role::Replica)
        .filter_map(|n| n.master.as_ref())
        .collect();
    view.nodes
        .values()
        .filter(|n| !n.reachable || (n.role == Role::Master && followed.contains(&n.id)))
        .filter(|n| n.addr.as_ref().is_none_or(|a| !live.contains(a)))
        .map(|n| n.addr.as_ref().map_or(0, |a| a.port))
        .collect()
}

/// The index for a temporary replica of a rolling update: the lowest free one of the whole
/// layout (which reserves one index beyond the cluster's pods), never a dead node's port.
pub fn surge_index(
    cluster: &ValidatedCluster,
    pods: &[PodFacts],
    ghosts: &BTreeSet<u16>,
) -> Option<u32> {
    let used: BTreeSet<u32> = pods.iter().filter_map(|p| p.index).collect();
    (0..=cluster.pod_count()).find(|i| {
        !used.contains(i)
            && cluster
                .ports
                .ports(*i)
                .is_some_and(|p| !cluster.ports.host_network() || !ghosts.contains(&p.client))
    })
}

/// Pods to create and pods to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPlan {
    /// Pods whose process is gone for good: delete them (immediately) so they can be replaced.
    pub delete: Vec<String>,
    /// New pods: (index, shard).
    pub create: Vec<(u32, u32)>,
    /// Why some wanted pods cannot be created yet.
    pub waiting: Vec<String>,
}

/// Decides pod creation and deletion. Each shard `0..masters` wants `1 + replicasPerMaster`
/// pods; shards at or above `masters` are drained and released by the engine, never filled.
/// A new pod takes the lowest free index of the cluster's range, and never the port of a dead
/// node id the cluster still remembers (DESIGN.md: the replacement reuses the freed index only
/// after the old id has been forgotten; PITFALLS 8).
pub fn plan_pods(cluster: &ValidatedCluster, pods: &[PodFacts], ghosts: &BTreeSet<u16>) -> PodPlan {
    let mut out = PodPlan::default();
    for p in pods.iter().filter(|p| p.state == PodState::Gone) {
        out.delete.push(p.name.clone());
    }
    let per_shard = 1 + cluster.replicas_per_master;
    let mut have: BTreeMap<u32, u32> = BTreeMap::new();
    for p in pods {
        if matches!(p.state, PodState::Pending | PodState::Running) {
            if let Some(s) = p.shard {
                *have.entry(s).or_default() += 1;
            }
        }
    }
    let mut wanted: Vec<u32> = Vec::new();
    for shard in 0..cluster.masters {
        let n = have.get(&shard).copied().unwrap_or(0);
        wanted.extend(std::iter::repeat_n(
            shard,
            per_shard.saturating_sub(n) as usize,
        ));
    }
    if wanted.is_empty() {
        return out;
    }
    // Indexes stay taken until the pod object is gone, terminating and gone pods included.
    let used: BTreeSet<u32> = pods.iter().filter_map(|p| p.index).collect();
    // Regular pods use indexes 0..pods; the layout's one extra index is for the temporary
    // replica of a rolling update ([`surge_index`]).
    let max_pods = cluster.pod_count();
    let host = cluster.ports.host_network();
    if !host && !ghosts.is_empty() {
        out.waiting.push(format!(
            "{} new pod(s) wait until {} dead node id(s) are forgotten",
            wanted.len(),
            ghosts.len()
        ));
        return out;
    }
    let mut free = (0..max_pods).filter(|i| {
        !used.contains(i)
            && cluster
                .ports
                .ports(*i)
                .is_some_and(|p| !ghosts.contains(&p.client))
    });
    for shard in wanted.iter().copied() {
        match free.next() {
            Some(index) => out.create.push((index, shard)),
            None => {
                out.waiting.push(format!(
                    "{} new pod(s) wait for a free index in the cluster's port range (taken by terminating pods or dead node ids not yet forgotten)",
                    wanted.len() - out.create.len()
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kredis_api::{validate, KRedis, KRedisSpec};
    use kredis_engine::model::{SlotSet, ViewNode};

    pub(crate) fn cluster(masters: i32, replicas: i32) -> ValidatedCluster {
        let mut kr = KRedis::new(
            "c",
            KRedisSpec {
                masters,
                replicas_per_master: replicas,
                ..KRedisSpec::default()
            },
        );
        kr.metadata.namespace = Some("default".into());
        kr.metadata.uid = Some("u".into());
        validate(&kr, &[]).unwrap()
    }

    pub(crate) fn facts(index: u32, shard: u32, state: PodState) -> PodFacts {
        PodFacts {
            name: format!("c-{index}"),
            index: Some(index),
            shard: Some(shard),
            client_port: Some(10000 + index as u16),
            bus_port: Some(20000 + index as u16),
            host_network: true,
            ip: Some("127.0.0.1".into()),
            node: Some("n1".into()),
            state,
            ready: true,
            labels: BTreeMap::new(),
            spec_hash: None,
            waiting_reason: None,
        }
    }

    #[test]
    fn new_cluster_gets_every_pod_in_shard_order() {
        let c = cluster(3, 1);
        let plan = plan_pods(&c, &[], &BTreeSet::new());
        assert_eq!(
            plan.create,
            vec![(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
        );
    }

    #[test]
    fn gone_pod_is_deleted_and_its_index_waits_for_the_ghost() {
        let c = cluster(2, 1);
        let pods = vec![
            facts(0, 0, PodState::Running),
            facts(1, 0, PodState::Gone),
            facts(2, 1, PodState::Running),
            facts(3, 1, PodState::Running),
        ];
        let plan = plan_pods(&c, &pods, &BTreeSet::new());
        assert_eq!(plan.delete, vec!["c-1".to_string()]);
        // Index 1 is still taken by the gone pod's object until it is deleted.
        assert!(plan.create.is_empty() && !plan.waiting.is_empty());
        let pods: Vec<_> = pods.into_iter().filter(|p| p.index != Some(1)).collect();
        let ghost = BTreeSet::from([10001]);
        assert!(plan_pods(&c, &pods, &ghost).create.is_empty());
        assert_eq!(plan_pods(&c, &pods, &BTreeSet::new()).create, vec![(1, 0)]);
    }

    fn view_node(
        id: char,
        port: u16,
        role: Role,
        master: Option<char>,
        reachable: bool,
    ) -> ViewNode {
        let id_of = |c: char| NodeId::parse(&c.to_string().repeat(40)).expect("node id");
        ViewNode {
            id: id_of(id),
            addr: Some(NodeAddr::new("127.0.0.1".to_string(), port)),
            role,
            master: master.map(id_of),
            slots: SlotSet::new(),
            config_epoch: 0,
            reachable,
            failed: false,
            pfail_by: 0,
            handshake: false,
            noaddr: false,
            known_by: BTreeSet::new(),
            migrating: Vec::new(),
            importing: Vec::new(),
        }
    }

    fn view_of(nodes: Vec<ViewNode>) -> ClusterView {
        ClusterView {
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn an_orphaned_master_with_replicas_keeps_its_port_until_a_replica_is_promoted() {
        // c-0's pod object is gone (force-deleted) but its process still answers as master
        // of c-1: a new pod on port 10000 would become c-1's replication source.
        let pods = vec![facts(1, 0, PodState::Running)];
        let followed = view_of(vec![
            view_node('a', 10000, Role::Master, None, true),
            view_node('b', 10001, Role::Replica, Some('a'), true),
        ]);
        assert_eq!(ghost_ports(&followed, &pods), BTreeSet::from([10000]));
        let c = cluster(1, 1);
        let plan = plan_pods(&c, &pods, &ghost_ports(&followed, &pods));
        assert!(
            plan.create.is_empty() && !plan.waiting.is_empty(),
            "{plan:?}"
        );
        // Once c-1 is the master (promoted), nobody follows port 10000: the pod is created.
        let promoted = view_of(vec![
            view_node('a', 10000, Role::Replica, Some('b'), true),
            view_node('b', 10001, Role::Master, None, true),
        ]);
        assert!(ghost_ports(&promoted, &pods).is_empty());
        assert_eq!(plan_pods(&c, &pods, &BTreeSet::new()).create, vec![(0, 0)]);
        // A dead node the engine has not forgotten keeps its port too.
        let dead = view_of(vec![
            view_node('a', 10000, Role::Master, None, false),
            view_node('b', 10001, Role::Master, None, true),
        ]);
        assert_eq!(ghost_ports(&dead, &pods), BTreeSet::from([10000]));
        // A followed master backed by its running pod is no ghost.
        let pods = vec![
            facts(0, 0, PodState::Running),
            facts(1, 0, PodState::Running),
        ];
        assert!(ghost_ports(&followed, &pods).is_empty());
    }

    #[test]
    fn scale_in_creates_nothing_for_removed_shards() {
        let c = cluster(2, 1);
        let pods: Vec<_> = (0..6).map(|i| facts(i, i / 2, PodState::Running)).collect();
        let plan = plan_pods(&c, &pods, &BTreeSet::new());
        assert_eq!(plan, PodPlan::default());
    }

    #[test]
    fn surplus_replicas_with_the_highest_indexes_retire() {
        // replicasPerMaster 2 -> 1: shard 0 has pods 0, 3 and 6; nobody answered, so no pod
        // is known to serve slots and the two highest indexes beyond the wanted count retire.
        let c = cluster(1, 1);
        let pods = vec![
            facts(0, 0, PodState::Running),
            facts(3, 0, PodState::Running),
            facts(1, 0, PodState::Running),
        ];
        let m = members(&pods, &ClusterView::default(), &c, 1);
        let retired: Vec<_> = m
            .iter()
            .filter(|m| m.terminating)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(retired, vec!["c-3"]);
    }

    #[test]
    fn immutable_ports_are_reported() {
        let c = cluster(1, 0);
        let mut p = facts(0, 0, PodState::Running);
        p.client_port = Some(12000);
        let errors = immutable_field_errors(&c, &[p.clone()]);
        assert!(errors[0].contains("basePort is immutable"), "{errors:?}");
        p.client_port = Some(10000);
        p.host_network = false;
        let errors = immutable_field_errors(&c, &[p]);
        assert!(errors[0].contains("hostNetwork is immutable"), "{errors:?}");
    }

    #[test]
    fn members_are_running_and_terminating_pods() {
        let pods = vec![
            facts(2, 1, PodState::Terminating),
            facts(0, 0, PodState::Running),
            facts(1, 0, PodState::Pending),
            facts(3, 1, PodState::Gone),
        ];
        // Nobody answered: a terminating pod is not a member (its process is going or gone).
        let m = members(&pods, &ClusterView::default(), &cluster(2, 1), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "c-0");
        assert!(!m[0].terminating);
    }
}
