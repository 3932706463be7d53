//! Promote a replica: check the masters know it as a replica of the old master (PITFALLS 9),
//! send `CLUSTER FAILOVER [FORCE|TAKEOVER]`, poll `ROLE` with a bound, then confirm a majority
//! of masters sees it serving the slots before anything is forgotten (PITFALLS 1). A graceful
//! failover whose master dies midway falls back to FORCE; a live master is never forced
//! (PITFALLS 10). Touches the network.

use tracing::{info, warn};

use super::{find_ref, Ctx, StepError, Undo};
use crate::admin::FailoverMode;
use crate::model::{NodeId, Role};
use crate::plan::{NodeRef, Step};

/// Runs one failover step.
pub async fn run(
    ctx: &Ctx,
    node: &NodeRef,
    of: &NodeId,
    mode: FailoverMode,
) -> Result<Undo, StepError> {
    let client = ctx.client(&node.addr).await?;
    if client.role().await? == "master" {
        confirm(ctx, node).await?;
        return Ok(Undo::Nothing);
    }
    // PITFALLS 9: the voters must know the candidate as a replica of the old master.
    ctx.poll(
        &format!(
            "the masters to list {} as a replica of {}",
            node.addr,
            of.short()
        ),
        ctx.options.meet_timeout,
        || async {
            let view = ctx.view().await;
            let masters: Vec<_> = view
                .observed
                .iter()
                .filter(|(id, obs)| {
                    *id != of
                        && *id != &node.id
                        && obs
                            .myself()
                            .is_some_and(|m| m.role() == Role::Master && !m.slots.is_empty())
                })
                .collect();
            let agree = masters
                .iter()
                .filter(|(_, obs)| {
                    obs.entries
                        .iter()
                        .any(|e| e.id == node.id && e.master.as_ref() == Some(of))
                })
                .count();
            Ok(if masters.is_empty() || agree * 2 > masters.len() {
                None
            } else {
                Some(format!("{agree} of {} masters agree", masters.len()))
            })
        },
    )
    .await?;

    client.failover(mode).await?;
    let promoted = ctx
        .poll(
            &format!("{} to become master", node.addr),
            ctx.options.failover_timeout,
            || async {
                Ok(if client.role().await? == "master" {
                    None
                } else {
                    Some("still a replica".into())
                })
            },
        )
        .await;
    if let Err(e) = promoted {
        // A graceful failover needs the old master; if it died meanwhile, force it.
        let old_alive = match find_ref(&ctx.scope, of) {
            Some(r) => {
                ctx.client(&r.addr).await.is_ok_and(|_| true) && ctx.entries(&r.addr).await.is_ok()
            }
            None => false,
        };
        if mode != FailoverMode::Graceful || old_alive {
            return Err(e);
        }
        warn!(node = %node.addr, "graceful failover did not complete and the master is gone; forcing");
        client.failover(FailoverMode::Force).await?;
        ctx.poll(
            &format!("{} to become master (forced)", node.addr),
            ctx.options.failover_timeout,
            || async {
                Ok(if client.role().await? == "master" {
                    None
                } else {
                    Some("still a replica".into())
                })
            },
        )
        .await?;
    }
    confirm(ctx, node).await?;
    info!(node = %node.addr, old = %of.short(), ?mode, "failover confirmed");
    Ok(match (mode, find_ref(&ctx.scope, of)) {
        (FailoverMode::Graceful, Some(old)) => Undo::Steps(vec![Step::Failover {
            node: old.clone(),
            of: node.id.clone(),
            mode: FailoverMode::Graceful,
        }]),
        _ => Undo::Barrier,
    })
}

/// Waits until a majority of the reachable slot-owning masters see `node` as a master with
/// slots (PITFALLS 1: only then may the old id be forgotten).
async fn confirm(ctx: &Ctx, node: &NodeRef) -> Result<(), StepError> {
    ctx.poll(
        &format!("a majority of masters to see {} as master", node.addr),
        ctx.options.failover_timeout,
        || async {
            let view = ctx.view().await;
            let masters: Vec<_> = view
                .observed
                .values()
                .filter(|obs| {
                    obs.myself()
                        .is_some_and(|m| m.role() == Role::Master && !m.slots.is_empty())
                })
                .collect();
            let agree = masters
                .iter()
                .filter(|obs| {
                    obs.entries
                        .iter()
                        .any(|e| e.id == node.id && e.role() == Role::Master && !e.slots.is_empty())
                })
                .count();
            Ok(if agree * 2 > masters.len() {
                None
            } else {
                Some(format!("{agree} of {} masters agree", masters.len()))
            })
        },
    )
    .await
}
