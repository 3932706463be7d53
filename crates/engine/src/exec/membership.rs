//! MEET, REPLICATE and detach: who belongs to the cluster and whom replicas follow.
//! Touches the network.

use tracing::info;

use super::{find_ref, forget, Ctx, StepError, Undo};
use crate::model::{NodeEntry, Role};
use crate::plan::{NodeRef, Step};

fn knows(entries: &[NodeEntry], node: &NodeRef) -> bool {
    entries
        .iter()
        .any(|e| e.id == node.id && !e.flags.handshake && e.addr.as_ref() == Some(&node.addr))
}

/// `node` with the id its own table reports (ids change on CLUSTER RESET HARD).
fn live_ref(node: &NodeRef, entries: &[NodeEntry]) -> NodeRef {
    match entries.iter().find(|e| e.flags.myself) {
        Some(me) => NodeRef {
            id: me.id.clone(),
            ..node.clone()
        },
        None => node.clone(),
    }
}

/// `CLUSTER MEET` `node` through `via`, then wait until both know each other by id
/// (PITFALLS 7: nothing may reference a node before it is known).
pub async fn meet(ctx: &Ctx, node: &NodeRef, via: &NodeRef) -> Result<Undo, StepError> {
    let via_entries = ctx.entries(&via.addr).await?;
    let node_entries = ctx.entries(&node.addr).await?;
    // The id the node has now: a detached node got a new one (CLUSTER RESET HARD).
    let node = &live_ref(node, &node_entries);
    if knows(&via_entries, node) && knows(&node_entries, via) {
        return Ok(Undo::Nothing);
    }
    let was_alone = node_entries.len() == 1;
    let client = ctx.client(&via.addr).await?;
    client.meet(&node.addr, node.bus_port).await?;
    ctx.poll(
        &format!("{} and {} to know each other", node.addr, via.addr),
        ctx.options.meet_timeout,
        || async {
            let a = ctx.entries(&via.addr).await?;
            let b = ctx.entries(&node.addr).await?;
            Ok(if knows(&a, node) && knows(&b, via) {
                None
            } else {
                Some("handshake not finished".into())
            })
        },
    )
    .await?;
    info!(node = %node.addr, via = %via.addr, "node met");
    Ok(if was_alone {
        Undo::Steps(vec![Step::Detach { node: node.clone() }])
    } else {
        Undo::Nothing
    })
}

/// Makes `node` a replica of `master`, after `node` knows `master` (PITFALLS 7).
pub async fn replicate(ctx: &Ctx, node: &NodeRef, master: &NodeRef) -> Result<Undo, StepError> {
    let entries = ctx.entries(&node.addr).await?;
    let node = &live_ref(node, &entries);
    let Some(me) = entries.iter().find(|e| e.flags.myself) else {
        return Err(StepError::Refused {
            node: node.addr.clone(),
            reason: "CLUSTER NODES has no myself line".into(),
        });
    };
    if me.role() == Role::Replica && me.master.as_ref() == Some(&master.id) {
        return Ok(Undo::Nothing);
    }
    if me.role() == Role::Master && !me.slots.is_empty() {
        return Err(StepError::Refused {
            node: node.addr.clone(),
            reason: format!(
                "it serves {} slots; a slot owner is never turned into a replica",
                me.slots.len()
            ),
        });
    }
    let undo = match (&me.master, me.role()) {
        (Some(prev), Role::Replica) => {
            let prev_ref = find_ref(&ctx.scope, prev).cloned().or_else(|| {
                entries.iter().find(|e| &e.id == prev).and_then(|e| {
                    e.addr.clone().map(|addr| NodeRef {
                        id: prev.clone(),
                        addr,
                        bus_port: e.bus_port,
                    })
                })
            });
            match prev_ref {
                Some(p) => Undo::Steps(vec![Step::Replicate {
                    node: node.clone(),
                    master: p,
                }]),
                None => Undo::Barrier,
            }
        }
        // It was an empty master: undoing means leaving the cluster and meeting it again.
        _ => Undo::Steps(vec![
            Step::Detach { node: node.clone() },
            Step::Meet {
                node: node.clone(),
                via: master.clone(),
            },
        ]),
    };
    let client = ctx.client(&node.addr).await?;
    ctx.poll(
        &format!("{} to accept {} as its master", node.addr, master.addr),
        ctx.options.meet_timeout,
        || async {
            let entries = ctx.entries(&node.addr).await?;
            if !knows(&entries, master) {
                return Ok(Some(format!(
                    "{} does not know {} yet",
                    node.addr,
                    master.id.short()
                )));
            }
            match client.replicate(&master.id).await {
                Ok(()) => Ok(None),
                // "Unknown node" is retriable while gossip catches up (PITFALLS 7).
                Err(e) if e.detail().contains("Unknown node") => Ok(Some(e.detail())),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;
    info!(node = %node.addr, master = %master.addr, "replica attached");
    Ok(undo)
}

/// Takes a node out of the cluster: it must hold no unique data (a replica, or a master with
/// no slot and no key: PITFALLS 5, 23). It forgets everybody and takes a new id (`CLUSTER
/// RESET HARD`), then everybody forgets its old id.
pub async fn detach(ctx: &Ctx, node: &NodeRef) -> Result<Undo, StepError> {
    let mut undo = Undo::Barrier;
    let mut live_id = None;
    // Gone already (no answer): only the others' tables need cleaning.
    if let Ok(entries) = ctx.entries(&node.addr).await {
        // The node at the member's address, whatever its id now (an undo may run after a
        // hard reset gave it a new one). The checks below keep any data safe.
        let me = entries.iter().find(|e| e.flags.myself);
        if let Some(me) = me {
            live_id = Some(me.id.clone());
            let client = ctx.client(&node.addr).await?;
            if me.role() == Role::Master {
                let keys = client.dbsize().await?;
                if !me.slots.is_empty() || keys > 0 {
                    return Err(StepError::Refused {
                        node: node.addr.clone(),
                        reason: format!(
                            "it is a master with {} slots and {keys} keys",
                            me.slots.len()
                        ),
                    });
                }
            }
            if let (Role::Replica, Some(m)) = (me.role(), &me.master) {
                if let Some(mref) = find_ref(&ctx.scope, m) {
                    undo = Undo::Steps(vec![
                        Step::Meet {
                            node: node.clone(),
                            via: mref.clone(),
                        },
                        Step::Replicate {
                            node: node.clone(),
                            master: mref.clone(),
                        },
                    ]);
                }
            }
            // HARD: the node leaves with a new id. Its old id sits in every other node's
            // 60 s FORGET blacklist, so rejoining under it would be refused by gossip.
            client.reset(true).await?;
        }
    }
    forget::everywhere(ctx, &node.id, Some(&node.addr)).await?;
    if let Some(live) = live_id.filter(|l| l != &node.id) {
        forget::everywhere(ctx, &live, Some(&node.addr)).await?;
    }
    info!(node = %node.addr, "node detached");
    Ok(undo)
}
