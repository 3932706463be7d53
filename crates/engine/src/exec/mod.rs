//! The executor: runs a `Plan` step by step against real nodes. Every completed step pushes
//! its inverse on an undo stack; when a step fails, the inverses run newest first (the
//! seed's rollback) and the error reports what failed and what was undone. Irreversible
//! steps (a forced failover, a FORGET) are barriers: rollback stops there, and the next plan
//! continues from the state reached. Touches the network.
//!
//! One file per operation behind the `Step` dispatch in [`Executor::run_step`].

mod ctx;
mod failover;
mod forget;
mod membership;
mod open_slot;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::{info, instrument, warn};

pub use ctx::Ctx;

use crate::admin::{Admin, AdminError};
use crate::migrate::{MigrateError, MigrationOptions, Move, Progress};
use crate::model::NodeAddr;
use crate::plan::{NodeRef, Plan, Step};

/// How long nodes may take to agree on the slot map after a plan, like `redis-cli --cluster
/// create` waits for the join. Gossip converges in a few node-timeout/2 ticks; 60 s covers a
/// loaded machine without hiding a real partition for long.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a MEET may take to complete the handshake in both directions.
pub const MEET_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a replica may take to be promoted after `CLUSTER FAILOVER` (the vote needs a
/// round trip to a majority; a manual failover times out after 5 s in Redis itself).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for clients to stop being redirected by a drained master before it is reset
/// (`membership::detach`): clients refresh their slot map on the first MOVED, so under load
/// this ends within a few hundred milliseconds; the bound keeps an idle-but-connected client
/// from holding a scale-in for long.
pub const DETACH_GRACE: Duration = Duration::from_secs(5);

/// Rounds of FORGET-everywhere-then-recheck before giving up (PITFALLS 2).
pub const FORGET_ROUNDS: usize = 10;

/// Executor settings.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Bound for WaitConverged.
    pub converge_timeout: Duration,
    /// Bound for MEET handshakes and "node known" waits.
    pub meet_timeout: Duration,
    /// Bound for a failover to be confirmed.
    pub failover_timeout: Duration,
    /// Slot migration settings.
    pub migration: MigrationOptions,
    /// Run consecutive MoveSlots steps of a plan concurrently (see [`Executor::execute`]).
    pub concurrent_moves: bool,
    /// Longest wait, before a drained master is reset, for clients with a stale slot map to
    /// stop being redirected by it (zero: reset at once). See `membership::detach`.
    pub detach_grace: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            converge_timeout: CONVERGE_TIMEOUT,
            meet_timeout: MEET_TIMEOUT,
            failover_timeout: FAILOVER_TIMEOUT,
            migration: MigrationOptions::default(),
            concurrent_moves: true,
            detach_grace: DETACH_GRACE,
        }
    }
}

/// Called before every step; a test uses it to inject a real fault (kill a node) at a chosen
/// point, and an operator to check it still holds its lease.
pub trait StepHook: Send + Sync {
    /// Runs before step `index`. An error fails the step (and triggers rollback).
    fn before_step<'a>(&'a self, index: usize, step: &'a Step)
        -> BoxFuture<'a, Result<(), String>>;
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A Redis command failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A slot migration failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// A wait did not finish in time.
    #[error("timed out after {after:?} waiting for {what}: {detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Bound.
        after: Duration,
        /// What was still wrong (names the nodes).
        detail: String,
    },
    /// The step would lose data or break the cluster, so it refused.
    #[error("refused to act on {node}: {reason}")]
    Refused {
        /// The node concerned.
        node: NodeAddr,
        /// Why.
        reason: String,
    },
    /// The step hook failed the step.
    #[error("step hook failed the step: {0}")]
    Hook(String),
}

impl StepError {
    /// A stable category for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            StepError::Admin(e) => e.category(),
            StepError::Migrate(_) => "migration",
            StepError::Timeout { .. } => "timeout",
            StepError::Refused { .. } => "refused",
            StepError::Hook(_) => "hook",
        }
    }
}

/// What rollback did.
#[derive(Debug, Default)]
pub struct Rollback {
    /// Inverse steps that ran, in the order they ran.
    pub undone: Vec<Step>,
    /// Inverse steps that failed (rollback went on with the rest).
    pub failed: Vec<(Step, String)>,
    /// The irreversible step where rollback stopped, if any.
    pub stopped_at: Option<Step>,
}

/// A plan that failed.
#[derive(Debug, thiserror::Error)]
#[error("failed at step {index} ({step}){}; rolled back {} step(s){}", also(also_failed), rollback.undone.len(), if rollback.failed.is_empty() { String::new() } else { format!(", {} undo step(s) failed", rollback.failed.len()) })]
pub struct ExecError {
    /// Index of the failed step in the plan.
    pub index: usize,
    /// The failed step.
    pub step: Step,
    /// Why it failed.
    #[source]
    pub source: StepError,
    /// Other steps of the same concurrent group that failed or stopped early (index, step,
    /// error), in plan order.
    pub also_failed: Vec<(usize, Step, String)>,
    /// What rollback did.
    pub rollback: Rollback,
}

fn also(others: &[(usize, Step, String)]) -> String {
    match others {
        [] => String::new(),
        _ => format!(
            " (concurrently, also step(s) {})",
            others
                .iter()
                .map(|(i, _, e)| format!("{i}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// What an executed step leaves on the undo stack.
#[derive(Debug)]
pub enum Undo {
    /// Nothing to undo (no change, or a wait).
    Nothing,
    /// Run these steps, in order, to undo.
    Steps(Vec<Step>),
    /// Cannot be undone: rollback stops here.
    Barrier,
}

/// Runs plans.
#[derive(Clone)]
pub struct Executor {
    admin: Admin,
    options: ExecOptions,
    hook: Option<Arc<dyn StepHook>>,
    progress: Progress,
}

impl Executor {
    /// An executor using `admin`'s connections.
    pub fn new(admin: Admin, options: ExecOptions) -> Self {
        Executor {
            admin,
            options,
            hook: None,
            progress: Progress::default(),
        }
    }

    /// Installs a hook called before every step.
    pub fn with_hook(mut self, hook: Arc<dyn StepHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Live progress counters (slots and keys moved), shared with whoever holds a clone.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Runs every step in order. On the first failure, undoes what it can and returns the
    /// error with the rollback report.
    #[instrument(skip_all, fields(steps = plan.steps.len()))]
    pub async fn execute(&self, plan: &Plan) -> Result<(), ExecError> {
        let ctx = Ctx::new(
            self.admin.clone(),
            plan.scope.clone(),
            self.options.clone(),
            self.progress.clone(),
        );
        self.progress.set_total(plan);
        let mut undo_stack: Vec<(Step, Undo)> = Vec::new();
        let mut index = 0;
        while index < plan.steps.len() {
            let group = if self.options.concurrent_moves {
                concurrent_group(&plan.steps[index..])
            } else {
                1
            };
            let steps = &plan.steps[index..index + group];
            let failures = if group == 1 {
                match self.hook_then_run(&ctx, index, &steps[0]).await {
                    Ok(undo) => {
                        info!(index, step = %steps[0], "step done");
                        undo_stack.push((steps[0].clone(), undo));
                        Vec::new()
                    }
                    Err(e) => vec![(index, steps[0].clone(), e)],
                }
            } else {
                self.run_group(&ctx, index, steps, &mut undo_stack).await
            };
            let mut failures = failures.into_iter();
            if let Some((failed, step, source)) = failures.next() {
                warn!(index = failed, step = %step, error = %source, "step failed; rolling back");
                let also_failed = failures.map(|(i, s, e)| (i, s, format!("{e:#}"))).collect();
                let rollback = Self::rollback(&ctx, undo_stack).await;
                return Err(ExecError {
                    index: failed,
                    step,
                    source,
                    also_failed,
                    rollback,
                });
            }
            index += group;
        }
        Ok(())
    }

    /// The hook, then the step.
    async fn hook_then_run(&self, ctx: &Ctx, index: usize, step: &Step) -> Result<Undo, StepError> {
        if let Some(h) = &self.hook {
            h.before_step(index, step).await.map_err(StepError::Hook)?;
        }
        Self::run_step(ctx, step).await
    }

    /// Runs `steps` (plan indexes from `first`) concurrently, as if in plan order: the hook
    /// runs for each before any starts (a hook failure starts none from there on); the
    /// first failure makes the others stop at their next wave boundary; every step that
    /// completed pushes its undo, in plan order, so a rollback undoes them newest first.
    /// Returns the failures in plan order, the steps a failure stopped early included.
    async fn run_group(
        &self,
        ctx: &Ctx,
        first: usize,
        steps: &[Step],
        undo_stack: &mut Vec<(Step, Undo)>,
    ) -> Vec<(usize, Step, StepError)> {
        let mut failures = Vec::new();
        let mut runnable = steps.len();
        if let Some(h) = &self.hook {
            for (k, step) in steps.iter().enumerate() {
                if let Err(e) = h.before_step(first + k, step).await {
                    failures.push((first + k, step.clone(), StepError::Hook(e)));
                    runnable = k;
                    break;
                }
            }
        }
        let moves: Vec<Move<'_>> = steps[..runnable]
            .iter()
            .filter_map(|step| match step {
                Step::MoveSlots { from, to, slots } => Some(Move { from, to, slots }),
                _ => None,
            })
            .collect();
        let results = if moves.is_empty() {
            Vec::new()
        } else {
            crate::migrate::move_slots_group(ctx, &moves).await
        };
        let mut failed = Vec::new();
        for (k, ((step, m), result)) in steps.iter().zip(&moves).zip(results).enumerate() {
            match result {
                Ok(()) => {
                    info!(index = first + k, step = %step, "step done (concurrently)");
                    undo_stack.push((step.clone(), move_back(m.from, m.to, m.slots)));
                }
                Err(e) => failed.push((first + k, step.clone(), StepError::from(e))),
            }
        }
        // A step stopped because another failed is reported after the real causes.
        failed.sort_by_key(|(i, _, e)| (is_stopped(e), *i));
        failed.extend(failures);
        failed
    }

    async fn rollback(ctx: &Ctx, mut stack: Vec<(Step, Undo)>) -> Rollback {
        let mut report = Rollback::default();
        while let Some((done, undo)) = stack.pop() {
            match undo {
                Undo::Nothing => {}
                Undo::Barrier => {
                    report.stopped_at = Some(done);
                    break;
                }
                Undo::Steps(steps) => {
                    for inverse in steps {
                        match Self::run_step(ctx, &inverse).await {
                            Ok(_) => report.undone.push(inverse),
                            Err(e) => {
                                warn!(step = %inverse, error = %e, "undo step failed");
                                report.failed.push((inverse, format!("{e:#}")));
                            }
                        }
                    }
                }
            }
        }
        report
    }

    /// Dispatches one step to its operation.
    #[instrument(skip_all, fields(step = step.kind()))]
    pub async fn run_step(ctx: &Ctx, step: &Step) -> Result<Undo, StepError> {
        match step {
            Step::FixOpenSlot {
                slot,
                owner,
                involved,
            } => open_slot::fix(ctx, *slot, owner, involved).await,
            Step::SetConfigEpoch { node, epoch } => {
                slots::set_config_epoch(ctx, node, *epoch).await
            }
            Step::AddSlots { node, slots } => slots::add(ctx, node, slots).await,
            Step::DelSlots { node, slots } => slots::del(ctx, node, slots).await,
            Step::Meet { node, via } => membership::meet(ctx, node, via).await,
            Step::Replicate { node, master } => membership::replicate(ctx, node, master).await,
            Step::Failover { node, of, mode } => failover::run(ctx, node, of, *mode).await,
            Step::MoveSlots { from, to, slots } => {
                crate::migrate::move_slots(ctx, from, to, slots).await?;
                Ok(move_back(from, to, slots))
            }
            Step::Detach { node } => membership::detach(ctx, node).await,
            Step::Forget { id } => forget::everywhere(ctx, id, None)
                .await
                .map(|()| Undo::Barrier),
            Step::RecoverSlots {
                slots,
                fallback,
                allow_empty,
            } => slots::recover(ctx, slots, fallback, *allow_empty).await,
            Step::WaitConverged => ctx.wait_converged().await.map(|()| Undo::Nothing),
        }
    }
}

/// How many steps from the start of `steps` run as one concurrent group: consecutive
/// MoveSlots steps whose slots are disjoint (a plan moves each slot once, straight to its
/// final owner). 1 when the first step is anything else.
fn concurrent_group(steps: &[Step]) -> usize {
    let mut seen = crate::model::SlotSet::new();
    let mut n = 0;
    for step in steps {
        let Step::MoveSlots { slots, .. } = step else {
            break;
        };
        let set = crate::model::SlotSet::from(slots.clone());
        if !seen.intersection(&set).is_empty() {
            break;
        }
        seen.union_with(&set);
        n += 1;
    }
    n.max(1)
}

/// The undo of a completed move: the same slots moved back.
fn move_back(from: &NodeRef, to: &NodeRef, slots: &[crate::model::SlotRange]) -> Undo {
    Undo::Steps(vec![Step::MoveSlots {
        from: to.clone(),
        to: from.clone(),
        slots: slots.to_vec(),
    }])
}

fn is_stopped(e: &StepError) -> bool {
    matches!(e, StepError::Migrate(MigrateError::Stopped { .. }))
}

/// Convenience: find the ref of a node id in a scope.
pub(crate) fn find_ref<'a>(scope: &'a [NodeRef], id: &crate::model::NodeId) -> Option<&'a NodeRef> {
    scope.iter().find(|r| &r.id == id)
}
