//! Planning: desired topology + members + observed `ClusterView` -> an ordered `Plan` of
//! typed, idempotent steps. Pure functions of data; never touches the network.

mod planner;
mod rebalance;

use serde::{Deserialize, Serialize};

use crate::admin::FailoverMode;
use crate::model::{NodeAddr, NodeId, Slot, SlotRange};

pub use planner::plan;
pub use rebalance::{balanced_targets, plan_moves, SlotMove};

/// What the caller wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Number of slot-serving masters (shards).
    pub masters: usize,
    /// Replicas per master.
    pub replicas_per_master: usize,
}

/// Decisions the caller makes for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Serve slots again, empty, when every copy of them is gone (a cache usually wants
    /// this). When false the slots stay uncovered and the plan reports them.
    pub recover_lost_slots: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            recover_lost_slots: true,
        }
    }
}

/// A process that should be a node of the cluster (a pod, or a local process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable name (pod name).
    pub name: String,
    /// Client address.
    pub addr: NodeAddr,
    /// Cluster bus port.
    pub bus_port: u16,
    /// Worker (Kubernetes node) the process runs on; replicas avoid their master's worker.
    pub worker: String,
    /// Shard (group of a master and its replicas) the caller placed it in; `None` lets the
    /// planner choose.
    pub shard: Option<usize>,
    /// The member is going away (pod being deleted) but still answers: hand its role over
    /// gracefully.
    pub terminating: bool,
}

/// A node the plan acts on: its id and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// Node id.
    pub id: NodeId,
    /// Client address.
    pub addr: NodeAddr,
    /// Cluster bus port.
    pub bus_port: u16,
}

/// One idempotent step. Running a step whose effect is already in place does nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Close an open slot (repair): finish the move if the keys can go to the target,
    /// otherwise bring them back to `owner`, then mark the slot stable everywhere.
    FixOpenSlot {
        /// The slot.
        slot: Slot,
        /// Who should serve the slot when done.
        owner: NodeRef,
        /// Nodes with the slot marked migrating or importing, or holding keys of it.
        involved: Vec<NodeRef>,
    },
    /// Give a fresh node a distinct config epoch before it meets anybody (bootstrap).
    SetConfigEpoch {
        /// The node.
        node: NodeRef,
        /// Epoch.
        epoch: u64,
    },
    /// Assign unowned slots to a master.
    AddSlots {
        /// The master.
        node: NodeRef,
        /// Slots.
        slots: Vec<SlotRange>,
    },
    /// Introduce `node` to the cluster through `via` (also re-MEETs a node that moved).
    Meet {
        /// The node to introduce.
        node: NodeRef,
        /// A node already in the cluster.
        via: NodeRef,
    },
    /// Make `node` a replica of `master`.
    Replicate {
        /// The future replica.
        node: NodeRef,
        /// Its master (explicit id: PITFALLS 7).
        master: NodeRef,
    },
    /// Promote replica `node` in place of `of`, then confirm a majority of masters sees it.
    Failover {
        /// The replica to promote.
        node: NodeRef,
        /// The master it replaces.
        of: NodeId,
        /// Graceful when `of` still answers, Force when it does not, Takeover without quorum.
        mode: FailoverMode,
    },
    /// Move slots, with their keys, from one master to another.
    MoveSlots {
        /// Current owner.
        from: NodeRef,
        /// New owner.
        to: NodeRef,
        /// Slots.
        slots: Vec<SlotRange>,
    },
    /// Unassign slots from a master that holds no key in them (only used to undo AddSlots).
    DelSlots {
        /// The master.
        node: NodeRef,
        /// Slots.
        slots: Vec<SlotRange>,
    },
    /// Take `node` out of the cluster: it forgets everybody and takes a new id (CLUSTER RESET HARD) and everybody
    /// forgets it. Only for nodes that hold no unique data (PITFALLS 5, 23).
    Detach {
        /// The node.
        node: NodeRef,
    },
    /// Remove a node id from every node's table, repeating until it is gone (PITFALLS 2).
    Forget {
        /// The id.
        id: NodeId,
    },
    /// Serve slots whose every owner is gone: give them to the node holding their keys, or,
    /// when `allow_empty`, to `fallback` empty, with an epoch above the cluster's (PITFALLS 6).
    RecoverSlots {
        /// The slots.
        slots: Vec<SlotRange>,
        /// Who serves slots whose keys survive nowhere.
        fallback: NodeRef,
        /// Whether serving them empty is allowed (the `recoverLostSlots` policy).
        allow_empty: bool,
    },
    /// Wait until every node agrees on the slot map, no slot is open, all replicas are linked.
    WaitConverged,
}

impl Step {
    /// A short name for logs, metrics and status (`operation.step`).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::FixOpenSlot { .. } => "FixOpenSlot",
            Step::SetConfigEpoch { .. } => "SetConfigEpoch",
            Step::AddSlots { .. } => "AddSlots",
            Step::Meet { .. } => "Meet",
            Step::Replicate { .. } => "Replicate",
            Step::Failover { .. } => "Failover",
            Step::MoveSlots { .. } => "MoveSlots",
            Step::DelSlots { .. } => "DelSlots",
            Step::Detach { .. } => "Detach",
            Step::Forget { .. } => "Forget",
            Step::RecoverSlots { .. } => "RecoverSlots",
            Step::WaitConverged => "WaitConverged",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges = |r: &[SlotRange]| {
            r.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Step::FixOpenSlot { slot, owner, .. } => {
                write!(f, "fix open slot {slot} (owner {})", owner.addr)
            }
            Step::SetConfigEpoch { node, epoch } => {
                write!(f, "set config epoch {epoch} on {}", node.addr)
            }
            Step::AddSlots { node, slots } => {
                write!(f, "add slots {} to {}", ranges(slots), node.addr)
            }
            Step::Meet { node, via } => write!(f, "meet {} via {}", node.addr, via.addr),
            Step::Replicate { node, master } => {
                write!(f, "replicate {} -> master {}", node.addr, master.addr)
            }
            Step::Failover { node, of, mode } => {
                write!(
                    f,
                    "failover ({mode:?}) {} in place of {}",
                    node.addr,
                    of.short()
                )
            }
            Step::MoveSlots { from, to, slots } => {
                write!(
                    f,
                    "move slots {} from {} to {}",
                    ranges(slots),
                    from.addr,
                    to.addr
                )
            }
            Step::DelSlots { node, slots } => {
                write!(f, "delete slots {} from {}", ranges(slots), node.addr)
            }
            Step::Detach { node } => write!(f, "detach {}", node.addr),
            Step::Forget { id } => write!(f, "forget {}", id.short()),
            Step::RecoverSlots {
                slots,
                fallback,
                allow_empty,
            } => write!(
                f,
                "recover slots {} (fallback {}, empty allowed: {allow_empty})",
                ranges(slots),
                fallback.addr
            ),
            Step::WaitConverged => write!(f, "wait for convergence"),
        }
    }
}

/// Something the plan could not do or had to compromise on. Always reported to the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// A replica shares a worker with its master because no other worker hosts a member.
    AntiAffinityUnmet {
        /// The replica member.
        replica: String,
        /// The master member.
        master: String,
        /// The shared worker.
        worker: String,
    },
    /// A member's node holds data or belongs to another cluster; it is left alone.
    ForeignNode {
        /// Member name.
        member: String,
        /// Why.
        reason: String,
    },
    /// A member could not be reached; nothing destructive is done about it.
    Unreachable {
        /// Member name.
        member: String,
    },
    /// Slots with no surviving copy that stay uncovered by policy.
    LostSlots {
        /// The slots.
        slots: Vec<SlotRange>,
    },
    /// The plan waits for something before it can go on (e.g. too few members to bootstrap).
    Waiting {
        /// What for.
        reason: String,
    },
    /// A shard has no member that can serve as its master yet.
    ShardWithoutMaster {
        /// Shard.
        shard: usize,
    },
}

/// An ordered list of steps, plus what the caller must know about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Steps, to be run in order.
    pub steps: Vec<Step>,
    /// Compromises and blockers.
    pub notes: Vec<Note>,
    /// Members the plan took out of the cluster (or will, by the end of the plan): the
    /// caller may stop their processes once the plan succeeded.
    pub released: Vec<String>,
    /// Where every member with a node id ended up: name -> (shard, node id).
    pub shards: Vec<(String, usize)>,
    /// Addresses of every reachable node of the cluster (the executor's scope for FORGET and
    /// convergence checks).
    pub scope: Vec<NodeRef>,
}

impl Plan {
    /// Whether the plan does nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The planner cannot produce a plan at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The desired topology is impossible.
    #[error("invalid desired topology: {0}")]
    InvalidDesired(String),
    /// Two members share an address.
    #[error("members {a} and {b} share the address {addr}")]
    DuplicateAddress {
        /// First member.
        a: String,
        /// Second member.
        b: String,
        /// Address.
        addr: NodeAddr,
    },
}
