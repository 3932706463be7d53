//! Converge: observe -> plan -> execute, repeated until a plan comes back empty. The loop the
//! operator runs once per reconcile and `kredis local` runs at start. Touches the network.

use tracing::{info, instrument};

use crate::admin::Admin;
use crate::exec::{ExecError, ExecOptions, Executor};
use crate::model::ClusterView;
use crate::observe::observe;
use crate::plan::{plan, Desired, Member, Note, Plan, PlanError, Policy};

/// Rounds of observe/plan/execute before `converge` gives up. A topology change takes one
/// round, a rebalance a second, a check the third; more means something keeps undoing us.
pub const MAX_ROUNDS: usize = 6;

/// Result of a successful convergence.
#[derive(Debug, Default)]
pub struct Report {
    /// Rounds that executed a non-empty plan.
    pub rounds: usize,
    /// Steps executed in total.
    pub steps: usize,
    /// Notes of the last plan (compromises, blockers).
    pub notes: Vec<Note>,
    /// Members released by any round (their processes may be stopped).
    pub released: Vec<String>,
    /// The final view.
    pub view: ClusterView,
}

/// Why convergence failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// The inputs cannot be planned.
    #[error("failed to plan")]
    Plan(#[from] PlanError),
    /// A plan failed (and was rolled back as far as possible).
    #[error("failed to execute a plan")]
    Exec(#[source] Box<ExecError>),
    /// Plans kept coming without end.
    #[error(
        "failed to converge within {rounds} rounds; last plan: {last}; still wrong: {problems}"
    )]
    Endless {
        /// Rounds run.
        rounds: usize,
        /// The last plan's steps.
        last: String,
        /// What the last view found wrong.
        problems: String,
    },
    /// Nothing left to do, but the plan waits for something (e.g. too few members).
    #[error("waiting: {0}")]
    Waiting(String),
}

impl From<ExecError> for ConvergeError {
    fn from(e: ExecError) -> Self {
        ConvergeError::Exec(Box::new(e))
    }
}

/// Runs observe -> plan -> execute until the plan is empty.
#[instrument(skip_all, fields(masters = desired.masters, replicas = desired.replicas_per_master, members = members.len()))]
pub async fn converge(
    admin: &Admin,
    options: &ExecOptions,
    desired: &Desired,
    members: &[Member],
    policy: &Policy,
) -> Result<Report, ConvergeError> {
    let executor = Executor::new(admin.clone(), options.clone());
    converge_with(&executor, admin, desired, members, policy).await
}

/// [`converge`] with a caller-built executor (hooks, shared progress).
pub async fn converge_with(
    executor: &Executor,
    admin: &Admin,
    desired: &Desired,
    members: &[Member],
    policy: &Policy,
) -> Result<Report, ConvergeError> {
    let seeds: Vec<_> = members.iter().map(|m| m.addr.clone()).collect();
    let mut report = Report::default();
    let mut last = Plan::default();
    let mut problems = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let view = observe(admin, &seeds).await;
        problems = view.problems();
        let p = plan(desired, members, &view, policy)?;
        if p.is_empty() {
            if let Some(Note::Waiting { reason }) =
                p.notes.iter().find(|n| matches!(n, Note::Waiting { .. }))
            {
                return Err(ConvergeError::Waiting(reason.clone()));
            }
            report.notes = p.notes;
            report.view = view;
            return Ok(report);
        }
        info!(steps = p.steps.len(), "executing plan");
        executor.execute(&p).await?;
        report.rounds += 1;
        report.steps += p.steps.len();
        report.released.extend(p.released.iter().cloned());
        last = p;
    }
    Err(ConvergeError::Endless {
        rounds: MAX_ROUNDS,
        last: last
            .steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        problems: problems.join("; "),
    })
}
