//! Slot assignment: config epochs, ADDSLOTS/DELSLOTS, and recovery of slots whose every
//! copy is gone (PITFALLS 6). Touches the network.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::{Ctx, StepError, Undo};
use crate::model::{NodeId, Role, SlotRange, SlotSet};
use crate::plan::{NodeRef, Step};

/// Sets a distinct config epoch on a node that knows only itself and has epoch 0 (bootstrap,
/// like `redis-cli --cluster create`); a no-op otherwise.
pub async fn set_config_epoch(ctx: &Ctx, node: &NodeRef, epoch: u64) -> Result<Undo, StepError> {
    let client = ctx.client(&node.addr).await?;
    let info = client.cluster_info().await?;
    if info.known_nodes <= 1 && info.my_epoch == 0 && info.current_epoch == 0 {
        client.set_config_epoch(epoch).await?;
    }
    Ok(Undo::Nothing)
}

/// Assigns the slots the node does not serve yet.
pub async fn add(ctx: &Ctx, node: &NodeRef, slots: &[SlotRange]) -> Result<Undo, StepError> {
    let entries = ctx.entries(&node.addr).await?;
    let owned = entries
        .iter()
        .find(|e| e.flags.myself)
        .map(|e| e.slots.clone())
        .unwrap_or_default();
    let want = SlotSet::from(slots.to_vec()).difference(&owned);
    if want.is_empty() {
        return Ok(Undo::Nothing);
    }
    ctx.client(&node.addr)
        .await?
        .add_slots(&want.ranges())
        .await?;
    Ok(Undo::Steps(vec![Step::DelSlots {
        node: node.clone(),
        slots: want.ranges(),
    }]))
}

/// Unassigns slots the node serves, refusing if any of them holds keys.
pub async fn del(ctx: &Ctx, node: &NodeRef, slots: &[SlotRange]) -> Result<Undo, StepError> {
    let client = ctx.client(&node.addr).await?;
    let entries = ctx.entries(&node.addr).await?;
    let owned = entries
        .iter()
        .find(|e| e.flags.myself)
        .map(|e| e.slots.clone())
        .unwrap_or_default();
    let drop = SlotSet::from(slots.to_vec()).intersection(&owned);
    if drop.is_empty() {
        return Ok(Undo::Nothing);
    }
    for slot in drop.iter() {
        if client.count_keys_in_slot(slot).await? > 0 {
            return Err(StepError::Refused {
                node: node.addr.clone(),
                reason: format!("slot {slot} holds keys; it is never unassigned"),
            });
        }
    }
    client.del_slots(&drop.ranges()).await?;
    Ok(Undo::Steps(vec![Step::AddSlots {
        node: node.clone(),
        slots: drop.ranges(),
    }]))
}

/// Serves slots nobody serves: each goes to a master that still holds keys of it; the rest go
/// to `fallback`, empty, only when `allow_empty`. The receiving node first bumps its epoch
/// above every other so its claim wins over stale gossip (PITFALLS 6).
pub async fn recover(
    ctx: &Ctx,
    slots: &[SlotRange],
    fallback: &NodeRef,
    allow_empty: bool,
) -> Result<Undo, StepError> {
    let view = ctx.view().await;
    let wanted = SlotSet::from(slots.to_vec());
    // Slots still served by a live master (someone else fixed them) are left alone.
    let mut lost = SlotSet::new();
    for slot in wanted.iter() {
        let served = view
            .owner_of(slot)
            .and_then(|id| view.nodes.get(id))
            .is_some_and(|n| n.reachable && !n.failed);
        if !served {
            lost.insert(slot);
        }
    }
    if lost.is_empty() {
        return Ok(Undo::Nothing);
    }
    // Where do keys of these slots survive?
    let mut by_node: BTreeMap<NodeId, SlotSet> = BTreeMap::new();
    let masters: Vec<_> = view
        .observed
        .iter()
        .filter(|(_, o)| o.myself().is_some_and(|m| m.role() == Role::Master) && o.keys > 0)
        .collect();
    let mut with_keys = SlotSet::new();
    for slot in lost.iter() {
        let mut best: Option<(&NodeId, u64)> = None;
        for (id, obs) in &masters {
            let n = ctx
                .client(&obs.addr)
                .await?
                .count_keys_in_slot(slot)
                .await?;
            if n > 0 && best.is_none_or(|(_, b)| n > b) {
                best = Some((id, n));
            }
        }
        if let Some((id, _)) = best {
            by_node.entry(id.clone()).or_default().insert(slot);
            with_keys.insert(slot);
        }
    }
    let empty = lost.difference(&with_keys);
    if !empty.is_empty() {
        if allow_empty {
            by_node
                .entry(fallback.id.clone())
                .or_default()
                .union_with(&empty);
            warn!(slots = %empty, node = %fallback.addr, "serving lost slots again, empty (recoverLostSlots)");
        } else {
            warn!(slots = %empty, "slots lost with every copy; left uncovered by policy");
        }
    }
    let cluster_epoch = view.max_epoch();
    for (id, set) in by_node {
        let Some(addr) = view.observed.get(&id).map(|o| o.addr.clone()) else {
            continue;
        };
        let client = ctx.client(&addr).await?;
        // BUMPEPOCH gives currentEpoch + 1: above every other node's only once this node has
        // learned the cluster's current epoch through gossip.
        ctx.poll(
            &format!("{addr} to learn the cluster's epoch"),
            ctx.options.meet_timeout,
            || async {
                let info = client.cluster_info().await?;
                Ok((info.current_epoch < cluster_epoch)
                    .then(|| format!("current epoch {} < {cluster_epoch}", info.current_epoch)))
            },
        )
        .await?;
        client.bump_epoch().await?;
        for range in set.ranges() {
            if let Err(e) = client.add_slots(&[range]).await {
                // Still assigned to the dead owner in this node's own table: drop that first.
                if e.detail().contains("busy") {
                    client.del_slots(&[range]).await?;
                    client.add_slots(&[range]).await?;
                } else {
                    return Err(e.into());
                }
            }
        }
        info!(node = %addr, slots = %set, "slots recovered");
    }
    // With the policy off, the slots stay uncovered; the plan's LostSlots note reports them.
    Ok(Undo::Barrier)
}
