//! The data model of a Redis Cluster: ids, slots, addresses, `CLUSTER NODES` entries and the
//! merged `ClusterView`. Pure data and parsing; never touches the network.

mod ids;
mod nodes;
mod slotset;
mod view;

pub use ids::{NodeAddr, NodeId, Slot, SlotRange, SLOT_COUNT};
pub use nodes::{parse_cluster_nodes, NodeEntry, NodeFlags, OpenSlot, Role};
pub use slotset::SlotSet;
pub use view::{ClusterView, Disagreement, NodeObservation, ReplicationInfo, ViewNode};

/// A value that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not a 40-character lower-case hex node id.
    #[error("invalid node id {0:?}")]
    NodeId(String),
    /// Not a slot or slot range inside 0..16384.
    #[error("invalid slot {0:?}")]
    Slot(String),
    /// Not a `host:port` address.
    #[error("invalid address {0:?}")]
    Addr(String),
    /// A malformed `CLUSTER NODES` line.
    #[error("malformed CLUSTER NODES line: {0}")]
    Line(String),
}
