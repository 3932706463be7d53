//! MEET, REPLICATE and detach: who belongs to the cluster and whom replicas follow.
//! Touches the network.

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{find_ref, forget, Ctx, StepError, Undo};
use crate::admin::NodeClient;
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
                wait_for_clients_to_move_on(&client, ctx.options.detach_grace).await;
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

/// How long a drained master's MOVED count must stay still before it is reset.
const CLIENTS_QUIET: Duration = Duration::from_millis(200);
/// How often the count is read meanwhile.
const CLIENTS_POLL: Duration = Duration::from_millis(50);

/// A drained master still answers MOVED to clients whose slot map is stale, and they refresh
/// their map; once reset it answers CLUSTERDOWN instead, which clients (redis-rs among them)
/// retry on the same stale map until they time out. So wait, at most `grace`, until its
/// `errorstat_MOVED` has stopped rising for [`CLIENTS_QUIET`]. With no client connected but
/// the engine's own, no wait. Never fails the detach: a node that cannot say is reset at once.
async fn wait_for_clients_to_move_on(client: &NodeClient, grace: Duration) {
    if grace.is_zero() {
        return;
    }
    if !clients_connected(client).await {
        return;
    }
    let started = Instant::now();
    let Some(mut last) = moved_count(client).await else {
        return;
    };
    let mut still_since = Instant::now();
    while started.elapsed() < grace {
        tokio::time::sleep(CLIENTS_POLL).await;
        let Some(now) = moved_count(client).await else {
            return;
        };
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= CLIENTS_QUIET {
            debug!(node = %client.addr(), waited = ?started.elapsed(), "no client redirected any more");
            return;
        }
    }
    info!(node = %client.addr(), ?grace, "clients still redirected by the drained master; detaching it anyway");
}

/// Whether any normal client other than the engine's own connections (named
/// [`crate::admin::CLIENT_NAME`]) is connected; `true` when the node cannot say.
async fn clients_connected(client: &NodeClient) -> bool {
    let mut list = redis::cmd("CLIENT");
    list.arg("LIST").arg("TYPE").arg("normal");
    match client.raw::<String>("CLIENT LIST", list).await {
        Ok(text) => others_in_client_list(&text) > 0,
        Err(_) => true,
    }
}

fn others_in_client_list(text: &str) -> usize {
    let own = format!("name={}", crate::admin::CLIENT_NAME);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.split_whitespace().any(|f| f == own))
        .count()
}

/// `errorstat_MOVED` of `INFO errorstats` (0 when the node never answered MOVED).
async fn moved_count(client: &NodeClient) -> Option<u64> {
    let mut info = redis::cmd("INFO");
    info.arg("errorstats");
    let text: String = client.raw("INFO errorstats", info).await.ok()?;
    Some(parse_moved(&text))
}

fn parse_moved(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("errorstat_MOVED:count="))
        .and_then(|n| n.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn moved_count_is_read_from_errorstats() {
        let text = "# Errorstats\r\nerrorstat_ASK:count=3\r\nerrorstat_MOVED:count=1234\r\n";
        assert_eq!(super::parse_moved(text), 1234);
        assert_eq!(super::parse_moved("# Errorstats\r\n"), 0);
    }

    #[test]
    fn the_engine_s_own_connections_are_not_clients() {
        let list = "id=3 addr=127.0.0.1:5 laddr=127.0.0.1:7000 fd=8 name=kredis-engine age=1 cmd=client|list\n\
                    id=4 addr=127.0.0.1:6 laddr=127.0.0.1:7000 fd=9 name= age=1 cmd=get\n";
        assert_eq!(super::others_in_client_list(list), 1);
        let ours = "id=3 addr=127.0.0.1:5 laddr=127.0.0.1:7000 fd=8 name=kredis-engine age=1\n";
        assert_eq!(super::others_in_client_list(ours), 0);
        assert_eq!(super::others_in_client_list(""), 0);
    }
}
