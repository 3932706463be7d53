//! The operator's engine hook, called before every step of a plan: stops an operation whose
//! KRedis is being deleted (at a step boundary, so the cluster is left consistent), records
//! the running step for `status.operation`, publishes an Event for each step that changes the
//! topology, and counts failovers and migrated slots. Touches the API server (Events only).

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use kredis_api::KRedis;
use kredis_engine::admin::FailoverMode;
use kredis_engine::exec::StepHook;
use kredis_engine::migrate::Progress;
use kredis_engine::plan::Step;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use tracing::warn;

use crate::context::Context;
use crate::metrics::{ClusterLabels, Delta, FailoverLabels};

/// Shared between the hook and the status reporter of one reconcile.
#[derive(Default)]
pub struct Running {
    /// The step running now (its Display).
    pub step: Mutex<Option<String>>,
    slots: Delta,
    keys: Delta,
}

/// The hook of one reconcile of one cluster.
pub struct Hook {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The KRedis (for Events and the deletion check).
    pub kredis: Arc<KRedis>,
    /// What runs now.
    pub running: Arc<Running>,
    /// The executor's progress counters.
    pub progress: Progress,
}

impl Hook {
    fn labels(&self) -> ClusterLabels {
        ClusterLabels {
            namespace: self.kredis.meta().namespace.clone().unwrap_or_default(),
            name: self.kredis.meta().name.clone().unwrap_or_default(),
        }
    }

    /// Adds migration progress since the last call to the metrics (the executor resets its
    /// counters at every plan; a step boundary always sees the previous plan's last values).
    pub fn count_progress(&self) {
        let l = self.labels();
        let slots = self.running.slots.take(self.progress.slots_done());
        let keys = self.running.keys.take(self.progress.keys_moved());
        self.ctx
            .metrics
            .slots_migrated
            .get_or_create(&l)
            .inc_by(slots);
        self.ctx
            .metrics
            .keys_migrated
            .get_or_create(&l)
            .inc_by(keys);
    }

    fn deleting(&self) -> bool {
        let key = ObjectRef::from_obj(self.kredis.as_ref());
        self.ctx
            .store
            .get(&key)
            .is_some_and(|k| k.meta().deletion_timestamp.is_some())
    }
}

/// The Event reason of steps that change the topology (others, like waits, publish none).
fn event_reason(step: &Step) -> Option<&'static str> {
    Some(match step {
        Step::Failover { .. } => "Failover",
        Step::MoveSlots { .. } => "MoveSlots",
        Step::Detach { .. } => "DetachNode",
        Step::Forget { .. } => "ForgetNode",
        Step::Meet { .. } => "JoinNode",
        Step::Replicate { .. } => "AttachReplica",
        Step::RecoverSlots { .. } => "RecoverSlots",
        Step::FixOpenSlot { .. } => "FixOpenSlot",
        Step::AddSlots { .. } => "AssignSlots",
        _ => return None,
    })
}

impl StepHook for Hook {
    fn before_step<'a>(
        &'a self,
        _index: usize,
        step: &'a Step,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.count_progress();
            if !self.ctx.may_act() {
                return Err("this operator replica lost the leader lease: stopping".into());
            }
            if self.deleting() {
                return Err("the KRedis is being deleted: stopping the operation".into());
            }
            *self.running.step.lock().unwrap_or_else(|e| e.into_inner()) = Some(step.to_string());
            if let Step::Failover { mode, .. } = step {
                let mode = match mode {
                    FailoverMode::Graceful => "graceful",
                    FailoverMode::Force => "force",
                    FailoverMode::Takeover => "takeover",
                };
                let l = self.labels();
                self.ctx
                    .metrics
                    .failovers
                    .get_or_create(&FailoverLabels {
                        namespace: l.namespace,
                        name: l.name,
                        mode: mode.into(),
                    })
                    .inc();
            }
            if let Some(reason) = event_reason(step) {
                let event = Event {
                    type_: if matches!(step, Step::Failover { .. } | Step::RecoverSlots { .. }) {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.into(),
                    note: Some(truncate(step.to_string())),
                    action: reason.into(),
                    secondary: None,
                };
                // An Event that cannot be written must not stop the operation.
                if let Err(e) = self
                    .ctx
                    .recorder
                    .publish(&event, &self.kredis.object_ref(&()))
                    .await
                {
                    warn!(error = %e, "failed to publish an Event");
                }
            }
            Ok(())
        })
    }
}

/// Event notes are limited to 1 kB.
pub fn truncate(mut s: String) -> String {
    const MAX: usize = 1000;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
