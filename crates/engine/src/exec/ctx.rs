//! Execution context shared by the step operations: connections, the plan's scope of nodes,
//! bounded polling and the convergence wait. Touches the network.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::admin::{Admin, NodeClient};
use crate::migrate::Progress;
use crate::model::{ClusterView, NodeAddr, NodeEntry};
use crate::observe::observe;
use crate::plan::NodeRef;

use super::{ExecOptions, StepError};

/// Interval between polls of a condition. Gossip ticks every 100 ms in Redis, so polling
/// faster gains nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long open slots alone must persist before [`Ctx::wait_converged`] leaves them to the
/// next round (a slot being closed by this plan's last step is seen closed within a poll).
pub const OPEN_SLOT_GRACE: Duration = Duration::from_secs(1);

/// What every step operation gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub(crate) admin: Admin,
    pub(crate) scope: Vec<NodeRef>,
    pub(crate) options: ExecOptions,
    pub(crate) progress: Progress,
}

impl Ctx {
    /// A context for one plan.
    pub fn new(
        admin: Admin,
        scope: Vec<NodeRef>,
        options: ExecOptions,
        progress: Progress,
    ) -> Self {
        Ctx {
            admin,
            scope,
            options,
            progress,
        }
    }

    /// A connection to `addr`.
    pub async fn client(&self, addr: &NodeAddr) -> Result<NodeClient, StepError> {
        Ok(self.admin.node(addr).await?)
    }

    /// `CLUSTER NODES` of `addr`.
    pub async fn entries(&self, addr: &NodeAddr) -> Result<Vec<NodeEntry>, StepError> {
        Ok(self
            .admin
            .with_node(addr, |c| async move { c.cluster_nodes().await })
            .await?)
    }

    /// A fresh view of every node in scope (and every node they know).
    pub async fn view(&self) -> ClusterView {
        let seeds: Vec<NodeAddr> = self.scope.iter().map(|r| r.addr.clone()).collect();
        observe(&self.admin, &seeds).await
    }

    /// Polls `check` until it returns `Ok(None)` ("done"); `Ok(Some(reason))` means "not yet,
    /// because ...". Errors from `check` are treated as "not yet" too, so a node that blinks
    /// does not fail the wait; the last reason is reported on timeout.
    pub async fn poll<F, Fut>(
        &self,
        what: &str,
        bound: Duration,
        mut check: F,
    ) -> Result<(), StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<String>, StepError>>,
    {
        let deadline = Instant::now() + bound;
        loop {
            let reason = match check().await {
                Ok(None) => return Ok(()),
                Ok(Some(reason)) => reason,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    what: what.to_owned(),
                    after: bound,
                    detail: reason,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every node in scope agrees on everything, no slot is open or uncovered,
    /// and every replica's link to its master is up.
    ///
    /// Open slots are the exception: waiting never closes one, because every move of the
    /// plan has finished when this step runs. One left over is stale (found by the
    /// interrupted-migration test: a killed engine's `SETSLOT IMPORTING` reached a busy node
    /// after the next engine had looked). Once open slots are all that is wrong, for
    /// [`OPEN_SLOT_GRACE`], the step ends and the next round of `converge` closes them.
    pub async fn wait_converged(&self) -> Result<(), StepError> {
        // A Mutex, not a Cell: the future must stay Send for the operator's controller.
        let only_open_since: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        self.poll(
            "the cluster to converge",
            self.options.converge_timeout,
            || async {
                let view = self.view().await;
                let mut problems = view.problems();
                for (id, obs) in &view.observed {
                    if obs.replication.is_replica && !obs.replication.master_link_up {
                        problems.push(format!(
                            "replica {} ({}) is not linked to its master yet",
                            id.short(),
                            obs.addr
                        ));
                    }
                }
                if problems.is_empty() {
                    return Ok(None);
                }
                let open = view.open_slots().len();
                let mut since = only_open_since.lock().unwrap_or_else(|e| e.into_inner());
                if open > 0 && problems.len() == open {
                    let first = *since.get_or_insert_with(Instant::now);
                    if first.elapsed() >= OPEN_SLOT_GRACE {
                        tracing::info!(
                            open,
                            "only open slots are left; the next round closes them"
                        );
                        return Ok(None);
                    }
                } else {
                    *since = None;
                }
                Ok(Some(problems.join("; ")))
            },
        )
        .await
    }
}
