//! FORGET a node id on every node, repeating until no node lists it (PITFALLS 2): a missed
//! node re-gossips the id back within the 60 s forget window. Touches the network.

use tracing::info;

use super::{Ctx, StepError};
use crate::model::{NodeAddr, NodeId};

/// Removes `id` from every live node's table. `skip` is the forgotten node's own address
/// (a detached node that still runs: it cannot forget itself).
pub async fn everywhere(ctx: &Ctx, id: &NodeId, skip: Option<&NodeAddr>) -> Result<(), StepError> {
    let mut last = String::new();
    for round in 0..super::FORGET_ROUNDS {
        let view = ctx.view().await;
        let holders: Vec<&NodeAddr> = view
            .observed
            .iter()
            .filter(|(oid, obs)| {
                *oid != id && Some(&obs.addr) != skip && obs.entries.iter().any(|e| &e.id == id)
            })
            .map(|(_, obs)| &obs.addr)
            .collect();
        if holders.is_empty() {
            if round > 0 {
                info!(id = %id.short(), rounds = round, "node forgotten everywhere");
            }
            return Ok(());
        }
        let mut blocked = Vec::new();
        for addr in holders {
            let result = ctx
                .admin
                .with_node(addr, |c| async move { c.forget(id).await })
                .await;
            match result {
                Ok(()) => {}
                Err(e) if e.detail().contains("Unknown node") => {}
                // A replica of the forgotten master must be re-pointed first; the plan does
                // that before forgetting, so this only happens transiently.
                Err(e) if e.detail().contains("forget my master") => {
                    blocked.push(format!("{addr} replicates it"))
                }
                Err(e) => blocked.push(format!("{addr}: {e:#}")),
            }
        }
        // FORGET blacklists the id on each node for 60 s, so gossip cannot bring it back to
        // a node that executed it: check again at once after the first round, and give
        // gossip or a blocked node time only when a round did not clear everything.
        if round > 0 || !blocked.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        last = blocked.join("; ");
    }
    Err(StepError::Timeout {
        what: format!("every node to forget {}", id.short()),
        after: std::time::Duration::from_millis(100 * (super::FORGET_ROUNDS as u64 - 1)),
        detail: if last.is_empty() {
            "the id keeps coming back through gossip".into()
        } else {
            last
        },
    })
}
