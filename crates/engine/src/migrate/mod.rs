//! Slot migration with keys: the safe per-slot protocol (IMPORTING on the target, MIGRATING
//! on the source, GETKEYSINSLOT + `MIGRATE ... KEYS` batches, `SETSLOT NODE` on the target,
//! then the source, then every other master), made fast with large adaptive batches and many
//! slots in flight at once over pipelined connections. A slot is finalized only when its
//! source holds no key of it (PITFALLS 19). Touches the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use tracing::{debug, instrument, warn};

use crate::admin::{AdminError, MigrateOutcome, NodeClient};
use crate::exec::Ctx;
use crate::model::{NodeAddr, NodeId, Role, Slot, SlotRange, SlotSet};
use crate::plan::{NodeRef, Plan, Step};

/// Keys per MIGRATE at most. redis-cli uses 10; a few hundred small keys fit in one round
/// trip of well under a millisecond of server time.
pub const BATCH_KEYS: usize = 500;

/// Slots migrated concurrently between one source and target. Redis serializes the work on
/// each node; concurrency hides the round trips, which dominate on small slots.
pub const SLOTS_IN_FLIGHT: usize = 16;

/// MIGRATE's own I/O timeout. It must stay well below the cluster node timeout so a big key
/// cannot stall a node long enough to trigger a failover (PITFALLS 20); on timeout the batch
/// is halved and retried.
pub const MIGRATE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Migration settings.
#[derive(Clone, Debug)]
pub struct MigrationOptions {
    /// Keys per MIGRATE.
    pub batch_keys: usize,
    /// Slots in flight per move.
    pub slots_in_flight: usize,
    /// MIGRATE timeout.
    pub migrate_timeout: Duration,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            batch_keys: BATCH_KEYS,
            slots_in_flight: SLOTS_IN_FLIGHT,
            migrate_timeout: MIGRATE_TIMEOUT,
        }
    }
}

/// Live progress counters, cheap to clone and read from another task.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug, Default)]
struct ProgressInner {
    slots_total: AtomicU64,
    slots_done: AtomicU64,
    keys_moved: AtomicU64,
}

impl Progress {
    /// Slots the current plan moves in total.
    pub fn slots_total(&self) -> u64 {
        self.inner.slots_total.load(Ordering::Relaxed)
    }

    /// Slots moved so far.
    pub fn slots_done(&self) -> u64 {
        self.inner.slots_done.load(Ordering::Relaxed)
    }

    /// Keys moved so far.
    pub fn keys_moved(&self) -> u64 {
        self.inner.keys_moved.load(Ordering::Relaxed)
    }

    pub(crate) fn set_total(&self, plan: &Plan) {
        let total: usize = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::MoveSlots { slots, .. } => slots.iter().map(SlotRange::len).sum(),
                _ => 0,
            })
            .sum();
        self.inner
            .slots_total
            .store(total as u64, Ordering::Relaxed);
        self.inner.slots_done.store(0, Ordering::Relaxed);
        self.inner.keys_moved.store(0, Ordering::Relaxed);
    }

    fn slot_done(&self, keys: u64) {
        self.inner.slots_done.fetch_add(1, Ordering::Relaxed);
        self.inner.keys_moved.fetch_add(keys, Ordering::Relaxed);
    }
}

/// A failed migration. The slot stays open with its remaining keys on the source; the next
/// plan's FixOpenSlot finishes it.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Moving keys failed.
    #[error("failed to move keys of slot {slot} from {from} to {to}")]
    Keys {
        /// Slot.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Target.
        to: NodeAddr,
        /// Cause.
        #[source]
        source: AdminError,
    },
    /// The target is out of memory: the keys stay on the source.
    #[error("failed to move keys of slot {slot} to {to}: the target is out of memory (maxmemory); keys stay on {from}")]
    OutOfMemory {
        /// Slot.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Target.
        to: NodeAddr,
    },
    /// A key could not move even alone within the MIGRATE timeout.
    #[error("failed to move a key of slot {slot} from {from}: it does not transfer within {timeout:?} even alone (a very large key?)")]
    KeyTooBig {
        /// Slot.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Bound.
        timeout: Duration,
    },
    /// Keys remain on the source, so the slot is not finalized.
    #[error("refused to finalize slot {slot}: {left} keys remain on {from}")]
    KeysLeft {
        /// Slot.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Keys left.
        left: u64,
    },
    /// Opening or closing the slot failed.
    #[error("failed to change the state of slot {slot}")]
    SlotState {
        /// Slot.
        slot: Slot,
        /// Cause.
        #[source]
        source: AdminError,
    },
}

/// Moves `ranges` from `from` to `to`, many slots at a time.
#[instrument(skip_all, fields(from = %from.addr, to = %to.addr, slots = ranges.iter().map(SlotRange::len).sum::<usize>()))]
pub async fn move_slots(
    ctx: &Ctx,
    from: &NodeRef,
    to: &NodeRef,
    ranges: &[SlotRange],
) -> Result<(), MigrateError> {
    let slot_err = |slot: Slot| {
        move |source: crate::exec::StepError| match source {
            crate::exec::StepError::Admin(source) => MigrateError::SlotState { slot, source },
            other => MigrateError::SlotState {
                slot,
                source: AdminError::Protocol {
                    addr: from.addr.clone(),
                    op: "connect",
                    detail: other.to_string(),
                },
            },
        }
    };
    let first = ranges.first().map_or(Slot::MIN, SlotRange::start);
    let src = ctx.client(&from.addr).await.map_err(slot_err(first))?;
    let dst = ctx.client(&to.addr).await.map_err(slot_err(first))?;
    // The other masters learn the new owner directly (faster than gossip alone).
    let view = ctx.view().await;
    let mut others = Vec::new();
    for (id, obs) in &view.observed {
        if id != &from.id && id != &to.id && obs.myself().is_some_and(|m| m.role() == Role::Master)
        {
            if let Ok(c) = ctx.client(&obs.addr).await {
                others.push(c);
            }
        }
    }
    let owned_by_dst: SlotSet = view
        .nodes
        .get(&to.id)
        .map(|n| n.slots.clone())
        .unwrap_or_default();
    let slots: Vec<Slot> = ranges.iter().flat_map(SlotRange::slots).collect();
    let opts = &ctx.options.migration;
    stream::iter(slots.into_iter().map(Ok))
        .try_for_each_concurrent(opts.slots_in_flight.max(1), |slot| {
            let (src, dst, others, owned_by_dst) = (&src, &dst, &others, &owned_by_dst);
            async move {
                if owned_by_dst.contains(slot) {
                    // Done by an earlier, interrupted run.
                    ctx.progress.slot_done(0);
                    return Ok(());
                }
                let keys = move_slot(src, dst, &from.id, to, slot, others, opts).await?;
                ctx.progress.slot_done(keys);
                Ok(())
            }
        })
        .await
}

/// The per-slot protocol. Returns the number of keys moved.
async fn move_slot(
    src: &NodeClient,
    dst: &NodeClient,
    from_id: &NodeId,
    to: &NodeRef,
    slot: Slot,
    others: &[NodeClient],
    opts: &MigrationOptions,
) -> Result<u64, MigrateError> {
    let state = |source| MigrateError::SlotState { slot, source };
    dst.setslot_importing(slot, from_id).await.map_err(state)?;
    if let Err(e) = src.setslot_migrating(slot, &to.id).await {
        // Not the owner any more: an earlier run finished this slot on the source side.
        if e.detail().contains("not the owner") {
            dst.setslot_node(slot, &to.id).await.map_err(state)?;
            return Ok(0);
        }
        return Err(state(e));
    }
    let moved = move_keys(src, dst.addr(), slot, true, opts).await?;
    let left = src.count_keys_in_slot(slot).await.map_err(state)?;
    if left > 0 {
        return Err(MigrateError::KeysLeft {
            slot,
            from: src.addr().clone(),
            left,
        });
    }
    finalize(slot, &to.id, dst, Some(src), others).await?;
    Ok(moved)
}

/// `SETSLOT NODE` on the new owner first, then the old one, then everybody else (best
/// effort: gossip carries it to any node we miss).
pub(crate) async fn finalize(
    slot: Slot,
    owner: &NodeId,
    owner_client: &NodeClient,
    old: Option<&NodeClient>,
    others: &[NodeClient],
) -> Result<(), MigrateError> {
    let state = |source| MigrateError::SlotState { slot, source };
    owner_client
        .setslot_node(slot, owner)
        .await
        .map_err(state)?;
    if let Some(old) = old {
        old.setslot_node(slot, owner).await.map_err(state)?;
    }
    let results =
        futures::future::join_all(others.iter().map(|c| c.setslot_node(slot, owner))).await;
    for (c, r) in others.iter().zip(results) {
        if let Err(e) = r {
            debug!(node = %c.addr(), slot = %slot, error = %e, "SETSLOT NODE on a bystander failed; gossip will tell it");
        }
    }
    Ok(())
}

/// Moves every key of `slot` from `src` to `target` in batches. With `replace_on_busy`, a key
/// that already exists on the target (left by an interrupted move of this same slot) is
/// overwritten; otherwise BUSYKEY is an error. Halves the batch on timeouts (big keys).
pub(crate) async fn move_keys(
    src: &NodeClient,
    target: &NodeAddr,
    slot: Slot,
    replace_on_busy: bool,
    opts: &MigrationOptions,
) -> Result<u64, MigrateError> {
    let mut batch = opts.batch_keys.max(1);
    let mut moved = 0u64;
    loop {
        let keys = src
            .keys_in_slot(slot, batch)
            .await
            .map_err(|source| MigrateError::SlotState { slot, source })?;
        if keys.is_empty() {
            return Ok(moved);
        }
        let n = keys.len() as u64;
        match src
            .migrate(target, &keys, opts.migrate_timeout, false)
            .await
        {
            Ok(MigrateOutcome::Ok | MigrateOutcome::NoKey) => moved += n,
            Err(e) if e.is_busykey() && replace_on_busy => {
                src.migrate(target, &keys, opts.migrate_timeout, true)
                    .await
                    .map_err(|source| MigrateError::Keys {
                        slot,
                        from: src.addr().clone(),
                        to: target.clone(),
                        source,
                    })?;
                moved += n;
            }
            Err(e) if e.detail().contains("OOM") => {
                return Err(MigrateError::OutOfMemory {
                    slot,
                    from: src.addr().clone(),
                    to: target.clone(),
                });
            }
            Err(e) if is_timeout(&e) => {
                if batch == 1 {
                    return Err(MigrateError::KeyTooBig {
                        slot,
                        from: src.addr().clone(),
                        timeout: opts.migrate_timeout,
                    });
                }
                batch = (batch / 2).max(1);
                warn!(slot = %slot, batch, "MIGRATE timed out; retrying with a smaller batch");
            }
            Err(source) => {
                return Err(MigrateError::Keys {
                    slot,
                    from: src.addr().clone(),
                    to: target.clone(),
                    source,
                });
            }
        }
    }
}

fn is_timeout(e: &AdminError) -> bool {
    matches!(e, AdminError::Timeout { .. })
        || (e.code() == Some("IOERR") && e.detail().contains("timeout"))
}
