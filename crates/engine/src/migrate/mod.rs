//! Slot migration with keys: the safe per-slot protocol (IMPORTING on the target, MIGRATING
//! on the source, GETKEYSINSLOT + `MIGRATE ... KEYS` batches, `SETSLOT NODE` on the target,
//! then the source, then every other master), made fast by moving slots in waves: each phase
//! of the protocol is sent for all the slots of a wave in one pipeline (one round trip, and
//! one nodes.conf rewrite per node, instead of one per slot), the MIGRATEs of a wave are
//! queued back to back on the source, and two waves overlap so the source keeps migrating
//! while the other wave is opened or finalized. The moves of a plan run as a group: the
//! moves out of one source form one queue of waves (so the source never idles between two
//! moves), and the queues of different sources run concurrently (scale-out from M sources
//! into one new master keeps all of them busy).
//!
//! What remains is MIGRATE itself: Redis 7.0 runs it synchronously on the source, one slot
//! per command (keys of different slots are refused with CROSSSLOT), and reads the target's
//! replies one byte per system call; the source waits while the target restores. On the
//! 2-core development VM a bare MIGRATE loop, without any cluster, moves 250,000 keys of 100
//! bytes out of one source in 1.35-1.8 s (`docs/benchmarks.md`). A slot is finalized only
//! when its source holds no key of it (PITFALLS 19). Touches the network.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue};
use tokio::sync::Semaphore;
use tracing::{debug, instrument, warn};

use crate::admin::{AdminConfig, AdminError, MigrateOutcome, NodeClient};
use crate::exec::Ctx;
use crate::model::{NodeAddr, NodeId, Role, Slot, SlotRange, SlotSet};
use crate::plan::{NodeRef, Plan, Step};

/// Keys per MIGRATE at most. redis-cli uses 10; a few hundred small keys fit in one round
/// trip of well under a millisecond of server time.
pub const BATCH_KEYS: usize = 500;

/// Slots open at once per source (split into [`WAVES_IN_FLIGHT`] waves), over every move out
/// of it. Each phase of the protocol costs one round trip per wave, so large waves amortize
/// the round trips and the nodes.conf rewrite Redis does after every batch of SETSLOT; the
/// bound keeps the number of slots a crash can leave open (for FixOpenSlot to close) small.
/// Measured on 1,000,000 keys: 128 to 384 move at the same speed within noise.
pub const SLOTS_IN_FLIGHT: usize = 256;

/// Waves open concurrently per source: while one is being opened or finalized, the other
/// keeps the source busy migrating keys.
pub const WAVES_IN_FLIGHT: usize = 2;

/// MIGRATEs queued on a source at once, over every move out of it. Redis runs MIGRATE
/// synchronously, one at a time, so a short queue is enough to leave no idle round trip
/// between them, even when this process is briefly descheduled; a MIGRATE that times out
/// is retried alone (see `transfer_keys`), so a big key never waits behind the queue twice.
pub const MIGRATES_IN_FLIGHT: usize = 8;

/// A MIGRATE slower than `migrate_timeout / SLOW_MIGRATE_FRACTION` marks its slot as holding
/// big keys: its next MIGRATEs run alone on the source.
const SLOW_MIGRATE_FRACTION: u32 = 8;

/// How often the target's epoch is read while it waits to hear of the source's (gossip).
const EPOCH_POLL: Duration = Duration::from_millis(20);

/// Times a wave re-drains slots whose COUNTKEYSINSLOT is not zero before giving up.
const DRAIN_ATTEMPTS: usize = 3;

/// MIGRATE's own I/O timeout. It must stay well below the cluster node timeout so a big key
/// cannot stall a node long enough to trigger a failover (PITFALLS 20); on timeout the batch
/// is halved and retried.
pub const MIGRATE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Migration settings.
#[derive(Clone, Debug)]
pub struct MigrationOptions {
    /// Keys per MIGRATE.
    pub batch_keys: usize,
    /// Slots open at once per source (over `waves_in_flight` waves).
    pub slots_in_flight: usize,
    /// Waves open at once per source.
    pub waves_in_flight: usize,
    /// MIGRATEs queued at once on a source, shared by every move out of it that runs
    /// concurrently.
    pub migrates_in_flight: usize,
    /// MIGRATE timeout.
    pub migrate_timeout: Duration,
    /// Finalize each slot on its target with its own `SETSLOT NODE` (one epoch bump and one
    /// PONG broadcast per slot, the textbook form) instead of one broadcast per wave. Only
    /// for comparisons (`migration_bench --broadcast-per-slot`).
    pub broadcast_per_slot: bool,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            batch_keys: BATCH_KEYS,
            slots_in_flight: SLOTS_IN_FLIGHT,
            waves_in_flight: WAVES_IN_FLIGHT,
            migrates_in_flight: MIGRATES_IN_FLIGHT,
            migrate_timeout: MIGRATE_TIMEOUT,
            broadcast_per_slot: false,
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
    /// A step running concurrently failed, so this move stopped at a wave boundary: the slots
    /// from `slot` on were not moved (none is left open).
    #[error("stopped before slot {slot}: a step running concurrently failed; {left} slot(s) of this move stay on {from}")]
    Stopped {
        /// First slot not moved.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Slots not moved.
        left: usize,
    },
    /// The target's config epoch did not rise above the source's in time, so the slot was not
    /// finalized (the source's claim would win over the target's and undo the move).
    #[error("refused to finalize slot {slot}: the config epoch of {to} ({target_epoch}) did not rise above that of {from} ({source_epoch}) within {waited:?}")]
    EpochBehind {
        /// First slot of the wave.
        slot: Slot,
        /// Source.
        from: NodeAddr,
        /// Target.
        to: NodeAddr,
        /// The source's config epoch.
        source_epoch: u64,
        /// The target's config epoch.
        target_epoch: u64,
        /// How long we waited for gossip.
        waited: Duration,
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

/// One slot move of a group: `slots` from `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Move<'a> {
    /// Current owner.
    pub from: &'a NodeRef,
    /// New owner.
    pub to: &'a NodeRef,
    /// The slots.
    pub slots: &'a [SlotRange],
}

/// Moves `ranges` from `from` to `to`, in waves of many slots.
pub async fn move_slots(
    ctx: &Ctx,
    from: &NodeRef,
    to: &NodeRef,
    ranges: &[SlotRange],
) -> Result<(), MigrateError> {
    let moves = [Move {
        from,
        to,
        slots: ranges,
    }];
    move_slots_group(ctx, &moves).await.pop().unwrap_or(Ok(()))
}

/// What became of one move of a group.
#[derive(Default)]
struct MoveStatus {
    /// Slots of the waves started so far (a prefix of the move's slots).
    started: usize,
    /// The first failure.
    error: Option<MigrateError>,
}

/// Moves the slots of every move in `moves` (slot sets disjoint), in waves. The moves out of
/// one source form one queue of waves, in the order given, at most `waves_in_flight` of them
/// open at once, so the source always has MIGRATEs queued (a source runs one at a time,
/// whatever the target) and works on one target at a time but across a move's end; the
/// queues of different sources run concurrently. The first failure stops every queue at its
/// next wave boundary: waves already open finish (no slot is left open on purpose), no new
/// one starts. One result per move, in order: `Stopped` for a move that a failure elsewhere
/// cut short or never started.
#[instrument(skip_all, fields(moves = moves.len(), slots = moves.iter().flat_map(|m| m.slots).map(SlotRange::len).sum::<usize>()))]
pub async fn move_slots_group(ctx: &Ctx, moves: &[Move<'_>]) -> Vec<Result<(), MigrateError>> {
    let config = ctx.admin.config();
    let opts = &ctx.options.migration;
    let view = ctx.view().await;
    let mut status: Vec<MoveStatus> = moves.iter().map(|_| MoveStatus::default()).collect();
    // One pipelined connection per master involved: sources, targets, and every other master
    // (they learn each new owner directly, faster than gossip alone).
    let mut pipes: BTreeMap<NodeAddr, Pipe> = BTreeMap::new();
    let mut bystanders: Vec<(NodeId, NodeAddr)> = Vec::new();
    for (id, obs) in &view.observed {
        if obs.myself().is_some_and(|m| m.role() == Role::Master) {
            bystanders.push((id.clone(), obs.addr.clone()));
        }
    }
    let mut clients = Vec::with_capacity(moves.len());
    let mut pending: Vec<Vec<Slot>> = Vec::with_capacity(moves.len());
    for (m, st) in moves.iter().zip(status.iter_mut()) {
        match connect_move(ctx, m, &mut pipes).await {
            Ok(c) => clients.push(Some(c)),
            Err(e) => {
                st.error = Some(e);
                clients.push(None);
            }
        }
        let owned_by_dst: SlotSet = view
            .nodes
            .get(&m.to.id)
            .map(|n| n.slots.clone())
            .unwrap_or_default();
        let mut slots = Vec::new();
        for slot in m.slots.iter().flat_map(SlotRange::slots) {
            if owned_by_dst.contains(slot) {
                // Done by an earlier, interrupted run.
                ctx.progress.slot_done(0);
            } else {
                slots.push(slot);
            }
        }
        pending.push(slots);
    }
    for (id, addr) in &bystanders {
        if pipes.contains_key(addr) || !moves.iter().any(|m| &m.from.id != id && &m.to.id != id) {
            continue;
        }
        match Pipe::connect(config, addr).await {
            Ok(p) => {
                pipes.insert(addr.clone(), p);
            }
            Err(e) => {
                debug!(node = %addr, error = %e, "bystander unreachable; gossip will tell it")
            }
        }
    }
    // A failure before anything moved stops the whole group.
    let stop = AtomicBool::new(status.iter().any(|s| s.error.is_some()));
    let queue_size = u32::try_from(opts.migrates_in_flight.clamp(1, 1024)).unwrap_or(1);
    let queues: BTreeMap<&NodeAddr, Semaphore> = moves
        .iter()
        .map(|m| (&m.from.addr, Semaphore::new(queue_size as usize)))
        .collect();
    // One wave finalizes at a time across the group: see `WaveMover::outrank_source`.
    let finalizing = tokio::sync::Mutex::new(());
    let movers: Vec<Option<WaveMover>> = moves
        .iter()
        .zip(&clients)
        .map(|(m, client)| {
            let src = client.as_ref()?;
            Some(WaveMover {
                ctx,
                src,
                src_pipe: pipes.get(&m.from.addr)?,
                dst_pipe: pipes.get(&m.to.addr)?,
                others: bystanders
                    .iter()
                    .filter(|(id, _)| id != &m.from.id && id != &m.to.id)
                    .filter_map(|(_, addr)| pipes.get(addr))
                    .collect(),
                from_id: &m.from.id,
                to_id: &m.to.id,
                opts,
                migrates: queues.get(&m.from.addr)?,
                queue_size,
                finalizing: &finalizing,
            })
        })
        .collect();
    let in_flight = opts.slots_in_flight.max(1);
    let waves = opts.waves_in_flight.clamp(1, in_flight);
    let wave_size = in_flight.div_ceil(waves);
    let mut by_source: BTreeMap<&NodeAddr, Vec<(usize, &[Slot])>> = BTreeMap::new();
    for (i, (m, slots)) in moves.iter().zip(&pending).enumerate() {
        let queue = by_source.entry(&m.from.addr).or_default();
        queue.extend(slots.chunks(wave_size).map(|w| (i, w)));
    }
    let status = Mutex::new(status);
    join_all(
        by_source
            .into_values()
            .map(|queue| run_queue(queue, &movers, waves, &stop, &status)),
    )
    .await;
    let status = status
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut results = Vec::with_capacity(moves.len());
    for (st, (m, slots)) in status.into_iter().zip(moves.iter().zip(&pending)) {
        results.push(match (st.error, slots.get(st.started)) {
            (Some(e), _) => Err(e),
            (None, Some(&slot)) => Err(MigrateError::Stopped {
                slot,
                from: m.from.addr.clone(),
                left: slots.len() - st.started,
            }),
            (None, None) => Ok(()),
        });
    }
    results
}

/// The pipes of a move's source and target (added to `pipes` unless there already), and the
/// source's client for MIGRATE.
async fn connect_move(
    ctx: &Ctx,
    m: &Move<'_>,
    pipes: &mut BTreeMap<NodeAddr, Pipe>,
) -> Result<NodeClient, MigrateError> {
    let first = m.slots.first().map_or(Slot::MIN, SlotRange::start);
    let state = |source| MigrateError::SlotState {
        slot: first,
        source,
    };
    for addr in [&m.from.addr, &m.to.addr] {
        if !pipes.contains_key(addr) {
            let pipe = Pipe::connect(ctx.admin.config(), addr)
                .await
                .map_err(state)?;
            pipes.insert(addr.clone(), pipe);
        }
    }
    ctx.admin.node(&m.from.addr).await.map_err(state)
}

/// Runs the waves of one source's queue, `waves` at a time, until the queue is empty or
/// `stop` is set (then the waves already open finish and no new one starts).
async fn run_queue(
    queue: Vec<(usize, &[Slot])>,
    movers: &[Option<WaveMover<'_>>],
    waves: usize,
    stop: &AtomicBool,
    status: &Mutex<Vec<MoveStatus>>,
) {
    let mut queue = queue.into_iter();
    let mut open = FuturesUnordered::new();
    loop {
        while open.len() < waves && !stop.load(Ordering::Relaxed) {
            let Some((m, wave)) = queue.next() else { break };
            let Some(mover) = movers.get(m).and_then(Option::as_ref) else {
                continue;
            };
            if let Ok(mut st) = status.lock() {
                st[m].started += wave.len();
            }
            open.push(async move { (m, mover.move_wave(wave).await) });
        }
        let Some((m, result)) = open.next().await else {
            break;
        };
        if let Err(e) = result {
            stop.store(true, Ordering::Relaxed);
            if let Ok(mut st) = status.lock() {
                st[m].error.get_or_insert(e);
            }
        }
    }
}

/// What every wave of one move shares.
struct WaveMover<'a> {
    ctx: &'a Ctx,
    /// The source, for MIGRATE and GETKEYSINSLOT.
    src: &'a NodeClient,
    /// Pipelined connections for the protocol phases.
    src_pipe: &'a Pipe,
    dst_pipe: &'a Pipe,
    /// Every other master.
    others: Vec<&'a Pipe>,
    from_id: &'a NodeId,
    to_id: &'a NodeId,
    opts: &'a MigrationOptions,
    /// Bounds the MIGRATEs queued on the source (shared by every move out of it).
    migrates: &'a Semaphore,
    /// Its number of permits.
    queue_size: u32,
    /// Held from the epoch check to the source's `SETSLOT NODE`, group-wide.
    finalizing: &'a tokio::sync::Mutex<()>,
}

impl WaveMover<'_> {
    /// The per-slot protocol for every slot of `wave`, each phase sent for all of them in one
    /// pipeline; a phase starts only when the previous one succeeded for every slot, so each
    /// slot sees the same commands in the same order as when moved alone.
    async fn move_wave(&self, wave: &[Slot]) -> Result<(), MigrateError> {
        let (src, dst) = (self.src_pipe, self.dst_pipe);
        // 1. IMPORTING on the target.
        dst.setslots_all("CLUSTER SETSLOT IMPORTING", wave, "IMPORTING", self.from_id)
            .await?;
        // 2. MIGRATING on the source.
        let results = src
            .setslots("CLUSTER SETSLOT MIGRATING", wave, "MIGRATING", self.to_id)
            .await?;
        let mut open = Vec::with_capacity(wave.len());
        let mut adopted = Vec::new();
        for (&slot, r) in wave.iter().zip(results) {
            match r {
                Ok(_) => open.push(slot),
                // Not the owner any more: an earlier run finished this slot on the source side.
                Err(e) if e.detail().contains("not the owner") => adopted.push(slot),
                Err(source) => return Err(MigrateError::SlotState { slot, source }),
            }
        }
        if !adopted.is_empty() {
            dst.setslots_all("CLUSTER SETSLOT NODE", &adopted, "NODE", self.to_id)
                .await?;
            for _ in &adopted {
                self.ctx.progress.slot_done(0);
            }
        }
        // 3. Keys: the MIGRATEs of the wave queued back to back on the source.
        let mut moved = try_join_all(open.iter().map(|&s| self.drain(s))).await?;
        // 4. Never finalize a slot the source still holds keys of (PITFALLS 19). A slot whose
        //    last batch came back short is normally empty; any key left is drained again.
        let mut attempt = 1;
        loop {
            let counts = src.count_keys(&open).await?;
            let left: Vec<(usize, u64)> = counts
                .into_iter()
                .enumerate()
                .filter(|&(_, n)| n > 0)
                .collect();
            let Some(&(i, n)) = left.first() else { break };
            if attempt >= DRAIN_ATTEMPTS {
                return Err(MigrateError::KeysLeft {
                    slot: open[i],
                    from: src.addr.clone(),
                    left: n,
                });
            }
            attempt += 1;
            debug!(
                slots = left.len(),
                "keys left after draining; draining again"
            );
            let again = try_join_all(left.iter().map(|&(i, _)| self.drain(open[i]))).await?;
            for (&(i, _), n) in left.iter().zip(again) {
                moved[i] += n;
            }
        }
        // 5. SETSLOT NODE on the target for every slot (with one epoch bump and one broadcast
        //    for the whole wave), then on the source, then (best effort: gossip tells whoever
        //    we miss) on every other master. The target must outrank the source from its
        //    SETSLOT NODE to the source's, with no other wave bumping an epoch meanwhile.
        let finalizing = self.finalizing.lock().await;
        if let Some(&first) = open.first() {
            self.outrank_source(first).await?;
        }
        if self.opts.broadcast_per_slot {
            dst.setslots_all("CLUSTER SETSLOT NODE", &open, "NODE", self.to_id)
                .await?;
        } else {
            dst.adopt_wave(&open, self.to_id).await?;
        }
        src.setslots_all("CLUSTER SETSLOT NODE", &open, "NODE", self.to_id)
            .await?;
        drop(finalizing);
        let results = join_all(
            self.others
                .iter()
                .map(|p| p.setslots("CLUSTER SETSLOT NODE", &open, "NODE", self.to_id)),
        )
        .await;
        for (p, r) in self.others.iter().zip(results) {
            let failed = match r {
                Ok(rs) => rs.into_iter().find_map(Result::err).map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(error) = failed {
                debug!(node = %p.addr, %error, "SETSLOT NODE on a bystander failed; gossip will tell it");
            }
        }
        for n in moved {
            self.ctx.progress.slot_done(n);
        }
        Ok(())
    }

    /// Makes the target's config epoch higher than the source's before the target takes the
    /// wave's slots.
    ///
    /// Why: from the target's `SETSLOT NODE` (which clears its importing state) to the
    /// source's, the source still claims the slots in its heartbeats. A claim with a higher
    /// epoch than the target's makes the target give the slots back *and delete their keys*
    /// (Redis' "dirty slots"), after which the source's own `SETSLOT NODE` leaves each node
    /// thinking the other owns them: keys lost and a slot map that never converges. The
    /// target's bump (`BUMPEPOCH`, or `SETSLOT NODE` on an importing slot) only rises above
    /// the epochs the target has heard of, and a node that is a target in one queue of the
    /// group and a source in another bumps its epoch concurrently; seen as "nodes disagree on
    /// the owners of slots {...}" after an interrupted scale. So: under the group-wide
    /// finalization lock (no other wave bumps meanwhile), wait until the target has heard of
    /// the source's epoch, bump it, and check that it is strictly higher (an equal epoch is a
    /// collision, which Redis resolves by bumping either node).
    async fn outrank_source(&self, slot: Slot) -> Result<(), MigrateError> {
        let dst = self
            .ctx
            .admin
            .node(&self.dst_pipe.addr)
            .await
            .map_err(|source| MigrateError::SlotState { slot, source })?;
        outrank(self.src, &dst, slot, self.ctx.options.meet_timeout).await
    }

    /// Moves the keys of `slot` until a batch comes back short (the caller then counts what
    /// is left). A key left by an interrupted move of this same slot is overwritten.
    async fn drain(&self, slot: Slot) -> Result<u64, MigrateError> {
        transfer_keys(
            self.src,
            &self.dst_pipe.addr,
            slot,
            true,
            self.opts,
            Some((self.migrates, self.queue_size)),
        )
        .await
    }
}

/// A connection of its own to one node for pipelines: all the commands of a phase go out in
/// one write and their replies come back in one read, so Redis runs them in one event-loop
/// pass and rewrites nodes.conf once for the whole wave of SETSLOT instead of once per slot
/// (about 0.1 ms each). [`NodeClient`] sends one command per call.
struct Pipe {
    addr: NodeAddr,
    conn: MultiplexedConnection,
    timeout: Duration,
}

impl Pipe {
    /// Connects and authenticates like [`NodeClient::connect`].
    async fn connect(config: &AdminConfig, addr: &NodeAddr) -> Result<Pipe, AdminError> {
        let conn = crate::admin::open_connection(addr, config).await?;
        Ok(Pipe {
            addr: addr.clone(),
            conn,
            timeout: config.command_timeout,
        })
    }

    /// Runs one command per slot as one pipeline within the command timeout: one result per
    /// slot. A failure of the whole pipeline (connection, timeout) is the error of the first
    /// slot.
    async fn per_slot<T: FromRedisValue>(
        &self,
        op: &'static str,
        slots: &[Slot],
        cmd: impl Fn(Slot) -> Cmd,
    ) -> Result<Vec<Result<T, AdminError>>, MigrateError> {
        let Some(&first) = slots.first() else {
            return Ok(Vec::new());
        };
        self.pipeline(op, slots.iter().map(|&s| cmd(s)), first)
            .await
    }

    /// Runs `cmds` as one pipeline within the command timeout: one result per command. A
    /// failure of the whole pipeline (connection, timeout) is the error of slot `blame`.
    async fn pipeline<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmds: impl IntoIterator<Item = Cmd>,
        blame: Slot,
    ) -> Result<Vec<Result<T, AdminError>>, MigrateError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        let mut conn = self.conn.clone();
        let query = pipe.query_async::<Vec<redis::RedisResult<T>>>(&mut conn);
        let source = match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(replies)) => {
                return Ok(replies
                    .into_iter()
                    .map(|r| r.map_err(|e| AdminError::command(&self.addr, op, e)))
                    .collect())
            }
            Ok(Err(e)) => AdminError::command(&self.addr, op, e),
            Err(_) => AdminError::Timeout {
                addr: self.addr.clone(),
                op,
                after: self.timeout,
            },
        };
        Err(MigrateError::SlotState {
            slot: blame,
            source,
        })
    }

    /// `CLUSTER SETSLOT slot <sub> id` for every slot; one result per slot.
    async fn setslots(
        &self,
        op: &'static str,
        slots: &[Slot],
        sub: &str,
        id: &NodeId,
    ) -> Result<Vec<Result<redis::Value, AdminError>>, MigrateError> {
        self.per_slot(op, slots, |slot| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot.get()).arg(sub).arg(id.as_str());
            cmd
        })
        .await
    }

    /// [`Pipe::setslots`] where every slot must succeed: the first failure is the error of
    /// its slot.
    async fn setslots_all(
        &self,
        op: &'static str,
        slots: &[Slot],
        sub: &str,
        id: &NodeId,
    ) -> Result<(), MigrateError> {
        let results = self.setslots(op, slots, sub, id).await?;
        for (&slot, r) in slots.iter().zip(results) {
            r.map_err(|source| MigrateError::SlotState { slot, source })?;
        }
        Ok(())
    }

    /// The target's `SETSLOT NODE` for a whole wave of importing slots, in one pipeline:
    /// `SETSLOT STABLE` + `SETSLOT NODE` for every slot but the last, then a plain `SETSLOT
    /// NODE` for the last (which bumps the epoch if need be and broadcasts).
    ///
    /// Why: `SETSLOT NODE` on an importing slot bumps the epoch (a no-op once this node holds
    /// the highest) and broadcasts a PONG carrying all 16384 slots to every node, which each
    /// receiver checks slot by slot. Per slot, that was one broadcast per slot moved: in a
    /// 3 -> 4 step of 4096 slots, 12,288 PONGs to process, a fifth of a target's CPU. Here the
    /// wave's last slot does the one broadcast, which announces every slot of the wave.
    ///
    /// Why it is as safe as the per-slot form: the importing state protects a slot the target
    /// already holds keys of from a claim by the source (a claim with a higher epoch would
    /// make the target hand the slot back and delete its keys). Once its importing state is
    /// cleared, what protects it is the target's epoch being above the source's, which
    /// [`WaveMover::outrank_source`] ensures before this runs, under the lock that keeps other
    /// waves from bumping an epoch until the source's own `SETSLOT NODE`.
    async fn adopt_wave(&self, slots: &[Slot], to: &NodeId) -> Result<(), MigrateError> {
        let Some((&last, rest)) = slots.split_last() else {
            return Ok(());
        };
        let node = |slot: Slot| {
            crate::admin::cluster(&["SETSLOT", &slot.get().to_string(), "NODE", to.as_str()])
        };
        let cmds = rest
            .iter()
            .flat_map(|&slot| {
                let stable = crate::admin::cluster(&["SETSLOT", &slot.get().to_string(), "STABLE"]);
                [stable, node(slot)]
            })
            .chain([node(last)]);
        let replies = self
            .pipeline::<redis::Value>("CLUSTER SETSLOT NODE", cmds, last)
            .await?;
        // Two replies per slot, one for the last.
        for (i, r) in replies.into_iter().enumerate() {
            r.map_err(|source| MigrateError::SlotState {
                slot: slots.get(i / 2).copied().unwrap_or(last),
                source,
            })?;
        }
        Ok(())
    }

    /// `CLUSTER COUNTKEYSINSLOT slot` for every slot.
    async fn count_keys(&self, slots: &[Slot]) -> Result<Vec<u64>, MigrateError> {
        let op = "CLUSTER COUNTKEYSINSLOT";
        let results = self
            .per_slot(op, slots, |slot| {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("COUNTKEYSINSLOT").arg(slot.get());
                cmd
            })
            .await?;
        let mut counts = Vec::with_capacity(slots.len());
        for (&slot, r) in slots.iter().zip(results) {
            counts.push(r.map_err(|source| MigrateError::SlotState { slot, source })?);
        }
        Ok(counts)
    }
}

/// Raises `dst`'s config epoch strictly above `src`'s (see [`WaveMover::outrank_source`] for
/// why), waiting at most `budget` for `dst` to hear of `src`'s epoch through gossip.
async fn outrank(
    src: &NodeClient,
    dst: &NodeClient,
    slot: Slot,
    budget: Duration,
) -> Result<(), MigrateError> {
    let state = |source| MigrateError::SlotState { slot, source };
    let started = std::time::Instant::now();
    loop {
        let source_epoch = src.cluster_info().await.map_err(state)?.my_epoch;
        let target = dst.cluster_info().await.map_err(state)?;
        if target.my_epoch > source_epoch {
            return Ok(());
        }
        if target.current_epoch >= source_epoch {
            dst.bump_epoch().await.map_err(state)?;
            let bumped = dst.cluster_info().await.map_err(state)?.my_epoch;
            if bumped > source_epoch {
                return Ok(());
            }
        }
        if started.elapsed() >= budget {
            return Err(MigrateError::EpochBehind {
                slot,
                from: src.addr().clone(),
                to: dst.addr().clone(),
                source_epoch,
                target_epoch: target.my_epoch,
                waited: budget,
            });
        }
        debug!(target = %dst.addr(), source_epoch, target_epoch = target.my_epoch, "waiting for the target to hear of the source's epoch");
        tokio::time::sleep(EPOCH_POLL).await;
    }
}

/// `SETSLOT NODE` on the new owner first, then the old one, then everybody else (best
/// effort: gossip carries it to any node we miss). The new owner first outranks the old one
/// (its epoch strictly higher), or the old one's claims could take the slot back.
pub(crate) async fn finalize(
    slot: Slot,
    owner: &NodeId,
    owner_client: &NodeClient,
    old: Option<&NodeClient>,
    others: &[NodeClient],
) -> Result<(), MigrateError> {
    let state = |source| MigrateError::SlotState { slot, source };
    if let Some(old) = old {
        outrank(old, owner_client, slot, crate::exec::MEET_TIMEOUT).await?;
    }
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
    transfer_keys(src, target, slot, replace_on_busy, opts, None).await
}

/// [`move_keys`]. With `limit` (the fast path of [`move_slots`], which counts the keys left
/// afterwards: the source's MIGRATE queue and its size), each MIGRATE holds a permit of it,
/// and the loop stops after the first batch that comes back shorter than asked instead of
/// paying one more GETKEYSINSLOT to see none. After a timeout or a slow MIGRATE the slot's
/// MIGRATEs hold every permit, so big keys move alone on the source: a retry's time is its
/// own, not the queue's.
async fn transfer_keys(
    src: &NodeClient,
    target: &NodeAddr,
    slot: Slot,
    replace_on_busy: bool,
    opts: &MigrationOptions,
    limit: Option<(&Semaphore, u32)>,
) -> Result<u64, MigrateError> {
    let mut batch = opts.batch_keys.max(1);
    let mut moved = 0u64;
    let mut alone = false;
    loop {
        let keys = src
            .keys_in_slot(slot, batch)
            .await
            .map_err(|source| MigrateError::SlotState { slot, source })?;
        if keys.is_empty() {
            return Ok(moved);
        }
        let n = keys.len() as u64;
        let short = keys.len() < batch;
        let _permit = match limit {
            // The semaphore is never closed.
            Some((sem, all)) => sem.acquire_many(if alone { all } else { 1 }).await.ok(),
            None => None,
        };
        let started = std::time::Instant::now();
        let result = src
            .migrate(target, &keys, opts.migrate_timeout, false)
            .await;
        // Big keys: the rest of this slot runs alone so the other commands queued on the
        // source (and their timeouts) never wait behind several slow MIGRATEs.
        if started.elapsed() > opts.migrate_timeout / SLOW_MIGRATE_FRACTION {
            alone = true;
        }
        match result {
            Ok(MigrateOutcome::Ok | MigrateOutcome::NoKey) => moved += n,
            // Redis wraps the target's BUSYKEY ("Target instance replied with error: ...").
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
                alone = true;
                warn!(slot = %slot, batch, "MIGRATE timed out; retrying alone with a smaller batch");
                continue;
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
        if short && limit.is_some() {
            return Ok(moved);
        }
    }
}

fn is_timeout(e: &AdminError) -> bool {
    matches!(e, AdminError::Timeout { .. })
        || (e.code() == Some("IOERR") && e.detail().contains("timeout"))
}
