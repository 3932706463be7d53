//! Status: what `kubectl get kredis` shows, built purely from the validated cluster, the pods
//! and the engine's view (DESIGN.md "Status"). No network; the reconciler writes the result
//! only when it differs from what is stored (no churn, no timestamps besides transitions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kredis_api::{KRedisStatus, NodeRole, NodeStatus, OperationStatus, Phase, ValidatedCluster};
use kredis_engine::model::{ClusterView, Role, SLOT_COUNT};

use crate::topology::{PodFacts, PodState};

/// Condition types.
pub const READY: &str = "Ready";
/// Condition type: an operation is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs attention.
pub const DEGRADED: &str = "Degraded";

/// How the reconcile that produced this status went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The engine's plan came back empty: nothing left to do.
    Converged,
    /// Waiting for something outside the operator (pods starting, scheduling, gossip).
    Waiting(String),
    /// A step failed; `category` is the error's stable category.
    Failed {
        /// Stable category (metric label, Event reason).
        category: String,
        /// What failed.
        message: String,
    },
    /// `spec.paused`: observed only.
    Paused,
}

/// Everything a status is computed from.
pub struct Inputs<'a> {
    /// The validated cluster.
    pub cluster: &'a ValidatedCluster,
    /// Its pods.
    pub pods: &'a [PodFacts],
    /// The engine's view after this reconcile's changes.
    pub view: &'a ClusterView,
    /// How the reconcile went.
    pub outcome: &'a Outcome,
    /// The operation still running (pods being created), if any.
    pub operation: Option<OperationStatus>,
    /// The stored status (phases are sticky until Ready; transition times are kept).
    pub previous: Option<&'a KRedisStatus>,
    /// Whether dead nodes or gone pods were seen (a failure is being healed).
    pub healing: bool,
}

/// Builds the status; `now` is only used for conditions whose status changes.
pub fn build(inputs: &Inputs<'_>, now: &Time) -> KRedisStatus {
    let Inputs {
        cluster,
        pods,
        view,
        outcome,
        previous,
        ..
    } = inputs;
    let mut nodes = Vec::new();
    let mut ready_masters = 0u32;
    let mut ready_replicas = 0u32;
    let mut pods_ready = 0u32;
    let mut sorted: Vec<&PodFacts> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.index, p.name.clone()));
    for p in sorted {
        if p.state == PodState::Gone {
            continue;
        }
        let addr = p.addr();
        let node = addr
            .as_ref()
            .and_then(|a| view.id_at(a))
            .and_then(|id| view.nodes.get(id));
        let obs = node.and_then(|n| view.observed.get(&n.id));
        let role = node.map(|n| match n.role {
            Role::Master => NodeRole::Master,
            Role::Replica => NodeRole::Replica,
        });
        let counted = p.ready && p.state == PodState::Running;
        if counted {
            pods_ready += 1;
        }
        if let (true, Some(n)) = (counted, node) {
            match n.role {
                Role::Master if !n.slots.is_empty() && !n.failed => ready_masters += 1,
                Role::Replica if obs.is_some_and(|o| o.replication.master_link_up) => {
                    ready_replicas += 1
                }
                _ => {}
            }
        }
        nodes.push(NodeStatus {
            pod: p.name.clone(),
            host: p.ip.clone(),
            port: p.client_port.map_or(0, i32::from),
            node_id: node.map(|n| n.id.to_string()),
            role,
            master_id: node
                .and_then(|n| n.master.as_ref())
                .map(ToString::to_string),
            shard: p.shard.and_then(|s| i32::try_from(s).ok()),
            slots: node
                .map(|n| {
                    n.slots
                        .ranges()
                        .iter()
                        .map(|r| [i32::from(r.start().get()), i32::from(r.end().get())])
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    let slots_assigned = if view.nodes.is_empty() {
        0
    } else {
        usize::from(SLOT_COUNT) - view.uncovered_slots().len()
    };
    let desired_pods = cluster.pod_count();
    let live_pods = pods.iter().filter(|p| p.state != PodState::Gone).count();
    let state_ok = !view.observed.is_empty() && view.observed.values().all(|o| o.cluster_state_ok);
    let mut not_ready = Vec::new();
    if !state_ok {
        not_ready.push("cluster_state is not ok on every node".to_string());
    }
    if slots_assigned != usize::from(SLOT_COUNT) {
        not_ready.push(format!("{slots_assigned}/16384 slots are served"));
    }
    if !view.open_slots().is_empty() {
        not_ready.push(format!("{} slot(s) are open", view.open_slots().len()));
    }
    if ready_masters != cluster.masters {
        not_ready.push(format!("{ready_masters}/{} masters ready", cluster.masters));
    }
    let want_replicas = cluster.masters * cluster.replicas_per_master;
    if ready_replicas != want_replicas {
        not_ready.push(format!("{ready_replicas}/{want_replicas} replicas ready"));
    }
    if live_pods != desired_pods as usize || pods_ready != desired_pods {
        not_ready.push(format!(
            "{pods_ready}/{desired_pods} pods ready ({live_pods} exist)"
        ));
    }
    let problems = view.problems();
    if not_ready.is_empty() && !problems.is_empty() {
        not_ready.push(problems.join("; "));
    }
    if let Some(op) = &inputs.operation {
        not_ready.push(format!("{} in progress: {}", op.kind, op.step));
    }
    let ready = not_ready.is_empty();

    let phase = if ready {
        Phase::Ready
    } else if matches!(outcome, Outcome::Failed { .. })
        || (slots_assigned > 0 && slots_assigned < usize::from(SLOT_COUNT))
    {
        Phase::Degraded
    } else if slots_assigned == 0 {
        if pods.iter().any(|p| p.state == PodState::Running) {
            Phase::Creating
        } else {
            Phase::Pending
        }
    } else {
        working_phase(inputs.healing, cluster.generation, previous)
    };

    let (ready_reason, ready_message) = if ready {
        (
            "ClusterReady",
            "every slot is served and every node is ready".to_string(),
        )
    } else {
        ("NotReady", not_ready.join("; "))
    };
    let progressing = matches!(phase, Phase::Creating | Phase::Scaling | Phase::Healing)
        || inputs.operation.is_some();
    let (deg_status, deg_reason, deg_message) = match outcome {
        Outcome::Failed { category, message } => (true, category.as_str(), message.clone()),
        _ if phase == Phase::Degraded => (
            true,
            "SlotsUncovered",
            format!("{slots_assigned}/16384 slots are served"),
        ),
        _ => (false, "AsExpected", "nothing needs attention".to_string()),
    };
    let progress_message = match outcome {
        Outcome::Waiting(w) => w.clone(),
        Outcome::Paused => "spec.paused is true: the operator observes and changes nothing".into(),
        _ if progressing => format!("{phase:?}"),
        _ => "no operation in progress".into(),
    };
    let prev_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let conditions = vec![
        condition(
            READY,
            ready,
            ready_reason,
            ready_message,
            cluster,
            prev_conditions,
            now,
        ),
        condition(
            PROGRESSING,
            progressing,
            if let Some(op) = &inputs.operation {
                op.kind.as_str()
            } else if progressing {
                phase_name(phase)
            } else {
                "Idle"
            },
            progress_message,
            cluster,
            prev_conditions,
            now,
        ),
        condition(
            DEGRADED,
            deg_status,
            deg_reason,
            deg_message,
            cluster,
            prev_conditions,
            now,
        ),
    ];
    KRedisStatus {
        phase: Some(phase),
        observed_generation: cluster.generation,
        conditions,
        ready_masters: ready_masters as i32,
        ready_replicas: ready_replicas as i32,
        slots_assigned: slots_assigned as i32,
        ready_display: Some(KRedisStatus::ready_display(pods_ready, desired_pods)),
        auth_secret: cluster.auth.secret_name().map(str::to_owned),
        nodes,
        operation: inputs.operation.clone(),
    }
}

/// The phase of a cluster that serves slots and is being worked on: Healing when a node died
/// or a pod is gone; Scaling when the spec changed since the last status; otherwise the
/// previous working phase (an operation keeps its phase until the cluster is Ready), and
/// Healing when there is none (nothing asked for the change, so something broke).
pub fn working_phase(
    healing: bool,
    generation: Option<i64>,
    previous: &Option<&KRedisStatus>,
) -> Phase {
    let spec_changed = previous.and_then(|s| s.observed_generation) != generation;
    match previous.and_then(|s| s.phase) {
        _ if healing => Phase::Healing,
        _ if spec_changed => Phase::Scaling,
        Some(p @ (Phase::Scaling | Phase::Healing)) => p,
        _ => Phase::Healing,
    }
}

/// Status of a KRedis whose spec is invalid: phase Invalid, Ready False with every reason.
pub fn invalid(
    generation: Option<i64>,
    errors: &[String],
    previous: Option<&KRedisStatus>,
    now: &Time,
) -> KRedisStatus {
    let prev_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let message = errors.join("; ");
    let mk = |type_: &str, status: bool, reason: &str, message: String| {
        condition_with(
            type_,
            status,
            reason,
            message,
            generation,
            prev_conditions,
            now,
        )
    };
    KRedisStatus {
        phase: Some(Phase::Invalid),
        observed_generation: generation,
        conditions: vec![
            mk(READY, false, "InvalidSpec", message.clone()),
            mk(
                PROGRESSING,
                false,
                "InvalidSpec",
                "waiting for the spec to be fixed".into(),
            ),
            mk(DEGRADED, true, "InvalidSpec", message),
        ],
        // Keep what was observed before the bad edit: the cluster itself is untouched.
        ..previous
            .cloned()
            .map(|mut s| {
                s.operation = None;
                s
            })
            .unwrap_or_default()
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Creating => "Creating",
        Phase::Ready => "Ready",
        Phase::Scaling => "Scaling",
        Phase::Healing => "Healing",
        Phase::Degraded => "Degraded",
        Phase::Invalid => "Invalid",
        Phase::Deleting => "Deleting",
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    cluster: &ValidatedCluster,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    condition_with(
        type_,
        status,
        reason,
        message,
        cluster.generation,
        previous,
        now,
    )
}

/// A condition whose lastTransitionTime moves only when its status does.
fn condition_with(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}
