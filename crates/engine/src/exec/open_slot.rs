//! Close an open slot (repair). Covers every case `redis-cli --cluster fix` handles and the
//! ones it refuses:
//! - owner MIGRATING to a live master: finish the move forward (re-applying IMPORTING on the
//!   target if a failover dropped it: PITFALLS 21), BUSYKEY replaced (this slot's own move);
//! - otherwise every other master holding keys of the slot (importing leftovers, a promoted
//!   replica of a dead target, keys loaded from disk) gives them back to the owner; a key that
//!   exists on both is a conflict and is reported, never overwritten or deleted;
//! - no owner at all: the node with the most keys claims it with a bumped epoch;
//! - finally every master's marker for the slot is cleared.
//!
//! Touches the network.

use tracing::info;

use super::{Ctx, StepError, Undo};
use crate::admin::NodeClient;
use crate::migrate::{finalize, move_keys, MigrateError};
use crate::model::{NodeId, Role, Slot};
use crate::plan::NodeRef;

struct MasterState {
    id: NodeId,
    client: NodeClient,
    owns: bool,
    epoch: u64,
    migrating_to: Option<NodeId>,
    importing_from: Option<NodeId>,
    keys: u64,
}

/// Runs one FixOpenSlot step.
pub async fn fix(
    ctx: &Ctx,
    slot: Slot,
    owner: &NodeRef,
    _involved: &[NodeRef],
) -> Result<Undo, StepError> {
    let view = ctx.view().await;
    let mut masters = Vec::new();
    for (id, obs) in &view.observed {
        let Some(me) = obs.myself() else { continue };
        if me.role() != Role::Master {
            continue;
        }
        let client = ctx.client(&obs.addr).await?;
        let keys = client.count_keys_in_slot(slot).await?;
        masters.push(MasterState {
            id: id.clone(),
            client,
            owns: me.slots.contains(slot),
            epoch: me.config_epoch,
            migrating_to: me
                .migrating
                .iter()
                .find(|o| o.slot == slot)
                .map(|o| o.peer.clone()),
            importing_from: me
                .importing
                .iter()
                .find(|o| o.slot == slot)
                .map(|o| o.peer.clone()),
            keys,
        });
    }
    // The owner: a master that serves the slot in its own table (the planned one first).
    let owner_idx = masters
        .iter()
        .position(|m| m.owns && m.id == owner.id)
        .or_else(|| {
            masters
                .iter()
                .enumerate()
                .filter(|(_, m)| m.owns)
                .max_by_key(|(_, m)| m.epoch)
                .map(|(i, _)| i)
        });
    let owner_idx = match owner_idx {
        Some(i) => i,
        None => {
            // Nobody serves it: the master with the most keys of it claims it.
            let Some(i) = masters
                .iter()
                .enumerate()
                .max_by_key(|(_, m)| (m.keys, m.id == owner.id))
                .map(|(i, _)| i)
            else {
                return Err(StepError::Refused {
                    node: owner.addr.clone(),
                    reason: "no reachable master".into(),
                });
            };
            let c = &masters[i].client;
            c.bump_epoch().await?;
            c.setslot_stable(slot).await?;
            if let Err(e) = c.add_slots(&[crate::model::SlotRange::single(slot)]).await {
                if !e.detail().contains("busy") {
                    return Err(e.into());
                }
                c.setslot_node(slot, &masters[i].id).await?;
            }
            masters[i].owns = true;
            i
        }
    };
    let opts = &ctx.options.migration;
    let owner_id = masters[owner_idx].id.clone();
    let forward = masters[owner_idx]
        .migrating_to
        .clone()
        .and_then(|t| masters.iter().position(|m| m.id == t));
    if let Some(t) = forward {
        // Finish the interrupted move.
        let target_id = masters[t].id.clone();
        if masters[t].importing_from.as_ref() != Some(&owner_id) {
            masters[t].client.setslot_importing(slot, &owner_id).await?;
        }
        let src = masters[owner_idx].client.clone();
        let moved = move_keys(&src, masters[t].client.addr(), slot, true, opts).await?;
        let left = src.count_keys_in_slot(slot).await?;
        if left > 0 {
            return Err(MigrateError::KeysLeft {
                slot,
                from: src.addr().clone(),
                left,
            }
            .into());
        }
        let bystanders: Vec<NodeClient> = masters
            .iter()
            .filter(|m| m.id != owner_id && m.id != target_id)
            .map(|m| m.client.clone())
            .collect();
        finalize(
            slot,
            &target_id,
            &masters[t].client,
            Some(&src),
            &bystanders,
        )
        .await?;
        info!(slot = %slot, moved, "open slot closed by finishing the move");
    } else {
        // Bring stray keys back to the owner; conflicts are reported, never overwritten.
        let owner_addr = masters[owner_idx].client.addr().clone();
        for m in masters.iter().filter(|m| m.id != owner_id && m.keys > 0) {
            match move_keys(&m.client, &owner_addr, slot, false, opts).await {
                Ok(moved) => {
                    info!(slot = %slot, from = %m.client.addr(), moved, "stray keys returned to the owner")
                }
                Err(MigrateError::Keys { source, .. }) if source.is_busykey() => {
                    return Err(StepError::Refused {
                        node: m.client.addr().clone(),
                        reason: format!(
                            "keys of slot {slot} exist both here and on the owner {owner_addr}; resolve them by hand, nothing was overwritten"
                        ),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        masters[owner_idx].client.setslot_stable(slot).await?;
    }
    // Clear every remaining marker.
    for m in &masters {
        if m.migrating_to.is_some() || m.importing_from.is_some() {
            let entries = ctx.entries(m.client.addr()).await?;
            let still_open = entries.iter().find(|e| e.flags.myself).is_some_and(|me| {
                me.migrating
                    .iter()
                    .chain(&me.importing)
                    .any(|o| o.slot == slot)
            });
            if still_open {
                m.client.setslot_stable(slot).await?;
            }
        }
    }
    Ok(Undo::Barrier)
}
