//! One reconcile of one KRedis: observe (pods, Secret, the Redis cluster) → validate → plan
//! (pods: [`crate::topology`]; Redis: the engine's planner) → execute (pod writes; the
//! engine's executor with its undo stack) → report (status, Events, metrics). Touches the API
//! server and Redis.
//!
//! Reconcile never branches on why it was triggered: every pass recomputes everything from
//! the API server and the live cluster (PITFALLS 33), so a pass cut short anywhere (operator
//! killed, step failed) is finished by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kredis_api::{
    labels, validate, KRedis, KRedisStatus, OperationStatus, Phase, ValidatedCluster,
};
use kredis_engine::admin::Admin;
use kredis_engine::exec::Executor;
use kredis_engine::model::{ClusterView, NodeAddr, Role};
use kredis_engine::observe::observe;
use kredis_engine::plan::{Desired, Note, Policy};
use kredis_engine::reconcile::{converge_with, ConvergeError, Report};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tracing::{info, instrument, warn};

use crate::auth::{self, Password};
use crate::context::Context;
use crate::error::{chain, Error};
use crate::hook::{truncate, Hook, Running};
use crate::pod::{self, build_pod};
use crate::renewal;
use crate::rollout;
use crate::rotation::{self, Rotation};
use crate::services;
use crate::status::{self, Outcome};
use crate::tls::{self, Tls};
use crate::topology::{self, PodFacts, PodState};

/// The finalizer that lets the operator stop an in-flight operation before the KRedis goes.
pub const FINALIZER: &str = "kredis.io/cleanup";
/// How often `status.operation` is refreshed while the engine works.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Requeue of a KRedis whose named Secret is missing or unusable. The Secrets a KRedis names
/// are watched (`controller.rs`), so this is only the safety net for a missed event.
const SECRET_RETRY: Duration = Duration::from_secs(10);

fn key(kredis: &KRedis) -> String {
    format!(
        "{}/{}",
        kredis.namespace().unwrap_or_default(),
        kredis.name_any()
    )
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The controller's reconcile function.
#[instrument(skip(kredis, ctx), fields(namespace = kredis.namespace().unwrap_or_default(), name = kredis.name_any()))]
pub async fn reconcile(kredis: Arc<KRedis>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile_runs.inc();
    let started = Instant::now();
    let ns = kredis
        .namespace()
        .ok_or_else(|| Error::Unstored(kredis.name_any()))?;
    let api: Api<KRedis> = Api::namespaced(ctx.client.clone(), &ns);
    let k = key(&kredis);
    let result = finalizer(&api, FINALIZER, kredis, |event| async {
        match event {
            // Boxed: the whole pass is a large future (and keeps the type checker's depth low).
            Finalizer::Apply(kredis) => Box::pin(apply(kredis, &ctx)).await,
            Finalizer::Cleanup(kredis) => cleanup(kredis, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    use kube::runtime::finalizer::Error as F;
    let result = result.map_err(|e| match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        F::AddFinalizer(source) => Error::Kube {
            action: format!("add the finalizer to KRedis {k}"),
            source,
        },
        F::RemoveFinalizer(source) => Error::Kube {
            action: format!("remove the finalizer from KRedis {k}"),
            source,
        },
        other => Error::Finalizer {
            cluster: k.clone(),
            message: other.to_string(),
        },
    });
    if result.is_ok() {
        ctx.succeeded(&k);
    }
    result
}

/// Transient errors requeue with a per-cluster exponential backoff.
pub fn error_policy(kredis: Arc<KRedis>, err: &Error, ctx: Arc<Context>) -> Action {
    let category = err.category();
    ctx.metrics
        .reconcile_failures
        .get_or_create(&crate::metrics::FailureLabels {
            category: category.into(),
        })
        .inc();
    let delay = ctx.backoff(&key(&kredis));
    warn!(cluster = key(&kredis), category, error = %chain(err), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn cleanup(kredis: Arc<KRedis>, ctx: &Context) -> Result<Action, Error> {
    let k = key(&kredis);
    info!(
        cluster = k,
        "KRedis deleted: its pods and Secret go with their owner references"
    );
    publish(
        ctx,
        &kredis,
        EventType::Normal,
        "Deleting",
        "the cluster is being deleted; pods are removed by garbage collection".into(),
    )
    .await;
    // Best effort: the object is on its way out, and a failed write must not block that.
    let api: Api<KRedis> =
        Api::namespaced(ctx.client.clone(), &kredis.namespace().unwrap_or_default());
    let patch = json!({"status": {"phase": Phase::Deleting, "operation": null}});
    if let Err(e) = api
        .patch_status(
            &kredis.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(error = %e, "failed to report phase Deleting");
    }
    ctx.forget(&k);
    ctx.metrics
        .forget_cluster(&kredis.namespace().unwrap_or_default(), &kredis.name_any());
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, kredis: &KRedis, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note)),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &kredis.object_ref(&())).await {
        warn!(error = %e, reason, "failed to publish an Event");
    }
}

/// Every step of the reconcile proper.
async fn apply(kredis: Arc<KRedis>, ctx: &Arc<Context>) -> Result<Action, Error> {
    // Port overlap is judged against every KRedis: wait for the first full list.
    let _ = ctx.store.wait_until_ready().await;
    let others: Vec<KRedis> = ctx.store.state().iter().map(|k| (**k).clone()).collect();
    let cluster = match validate(&kredis, &others) {
        Ok(c) => c,
        Err(errors) => {
            let errors = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
            return report_invalid(&kredis, ctx, &errors, None).await;
        }
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &cluster.namespace);
    let facts = list_facts(ctx, &pods_api, &cluster).await?;
    let immutable = topology::immutable_field_errors(&cluster, &facts);
    if !immutable.is_empty() {
        return report_invalid(&kredis, ctx, &immutable, None).await;
    }
    let password = match auth::password(&ctx.client, &cluster).await? {
        Password::Ready(p) => p,
        Password::Invalid(message) => {
            return report_invalid(&kredis, ctx, &[message], Some(SECRET_RETRY)).await;
        }
    };
    // Before any pod is created: pods read the exporter's password from its Secret.
    let exporter_password = auth::exporter_password(&ctx.client, &cluster).await?;
    let tls = match tls::material(&ctx.client, &cluster).await? {
        Tls::Ready(t) => t,
        Tls::Invalid(message) => {
            return report_invalid(&kredis, ctx, &[message], Some(SECRET_RETRY)).await;
        }
    };
    let first_of_generation =
        kredis.status.as_ref().and_then(|s| s.observed_generation) != cluster.generation;
    if first_of_generation {
        for w in &cluster.warnings {
            publish(ctx, &kredis, EventType::Warning, "SpecWarning", w.clone()).await;
        }
    }
    let admin = ctx.admin(&key(&kredis), password.as_deref(), tls);

    if cluster.paused {
        let view = observe_pods(&admin, &facts).await;
        let status = status::build(
            &status::Inputs {
                cluster: &cluster,
                pods: &facts,
                view: &view,
                outcome: &Outcome::Paused,
                operation: None,
                previous: kredis.status.as_ref(),
                healing: false,
            },
            &now(),
        );
        write_status(ctx, &kredis, &cluster, status, false).await?;
        return Ok(Action::requeue(ctx.config.resync));
    }

    // A changed password first: a node still on the old one would look unreachable below.
    let mut rotating = None;
    if let Some(desired) = password.as_deref() {
        match rotation::ensure(&ctx.client, &cluster, &facts, &admin, desired).await? {
            Rotation::Settled => {}
            Rotation::Partial(why) => rotating = Some(why),
            Rotation::Blocked(why) => {
                publish(
                    ctx,
                    &kredis,
                    EventType::Warning,
                    "PasswordRejected",
                    why.clone(),
                )
                .await;
                let view = observe_pods(&admin, &facts).await;
                let status = status::build(
                    &status::Inputs {
                        cluster: &cluster,
                        pods: &facts,
                        view: &view,
                        outcome: &Outcome::Failed {
                            category: "PasswordRejected".into(),
                            message: why,
                        },
                        operation: None,
                        previous: kredis.status.as_ref(),
                        healing: false,
                    },
                    &now(),
                );
                write_status(ctx, &kredis, &cluster, status, false).await?;
                return Ok(Action::requeue(SECRET_RETRY));
            }
        }
    }

    // Observe, then get rid of pods whose process is gone for good.
    let view = observe_pods(&admin, &facts).await;
    let ghosts = topology::ghost_ports(&view, &facts);
    let pod_plan = topology::plan_pods(&cluster, &facts, &ghosts);
    // Healing: a node died, a pod's process is gone, or a member is being deleted (a pod
    // detached by a scale-in and now terminating is none of these).
    let mut healing = !ghosts.is_empty()
        || facts.iter().any(|p| {
            p.state == PodState::Gone
                || (p.state == PodState::Terminating && topology::is_member(p, &view))
        });
    if healing {
        // Say so before acting: failing over and replacing a pod takes seconds, and a status
        // still reading Ready while a replacement pod already exists misleads every reader.
        let status = status::build(
            &status::Inputs {
                cluster: &cluster,
                pods: &facts,
                view: &view,
                outcome: &Outcome::Waiting("handling a failed node".into()),
                operation: None,
                previous: kredis.status.as_ref(),
                healing,
            },
            &now(),
        );
        write_status(ctx, &kredis, &cluster, status, false).await?;
    }
    // The final write below compares against the status this pass started from; after the
    // interim write above it must not skip a write that merely restores that status.
    let interim_written = healing;
    for name in &pod_plan.delete {
        delete_pod(ctx, &kredis, &pods_api, name, true).await?;
    }
    let created = create_pods(ctx, &kredis, &cluster, &pods_api, &pod_plan.create).await?;

    // Converge the Redis cluster, unless it is healthy and only waits for pods to start
    // (joining half of a scale-out would rebalance twice).
    let starting = facts
        .iter()
        .filter(|p| p.state == PodState::Pending)
        .count()
        + created;
    let no_slots = view.nodes.values().all(|n| n.slots.is_empty());
    let healthy = ghosts.is_empty() && !healing && (view.uncovered_slots().is_empty() || no_slots);
    let live: Vec<PodFacts> = facts
        .iter()
        .filter(|p| !pod_plan.delete.contains(&p.name))
        .cloned()
        .collect();
    // A rolling update of a cluster without replicas keeps one temporary replica per shard
    // being renewed; the engine must attach it, not release it.
    let engine_replicas = cluster.replicas_per_master
        + u32::from(rollout::surging(&cluster, &live, &pod::spec_hash(&cluster)));
    let members = topology::members(&live, &view, &cluster, engine_replicas);
    let mut failure = None;
    let mut outcome = if starting > 0 && healthy {
        Outcome::Waiting(format!("waiting for {starting} pod(s) to start"))
    } else if members.is_empty() {
        Outcome::Waiting("no Redis pod runs yet".into())
    } else {
        let (kind, phase) = operation_kind(&cluster, &view, healing, kredis.status.as_ref());
        match Box::pin(run_engine(
            ctx,
            &kredis,
            &cluster,
            &admin,
            &members,
            engine_replicas,
            (kind, phase),
        ))
        .await
        {
            Ok(report) => {
                for name in &report.released {
                    delete_pod(ctx, &kredis, &pods_api, name, false).await?;
                }
                report_notes(ctx, &kredis, &report).await;
                Outcome::Converged
            }
            Err(ConvergeError::Waiting(w)) => Outcome::Waiting(w),
            Err(e) => {
                let err = Error::Converge {
                    cluster: key(&kredis),
                    source: Box::new(e),
                };
                let message = chain(&err);
                publish(
                    ctx,
                    &kredis,
                    EventType::Warning,
                    err.category(),
                    message.clone(),
                )
                .await;
                let category = err.category().to_string();
                failure = Some(err);
                Outcome::Failed { category, message }
            }
        }
    };

    // Report from a fresh look: pods again (some were created or deleted), the cluster again.
    let facts = list_facts(ctx, &pods_api, &cluster).await?;
    let view = observe_pods(&admin, &facts).await;
    let ghosts = topology::ghost_ports(&view, &facts);
    healing |= !ghosts.is_empty();
    let pod_plan = topology::plan_pods(&cluster, &facts, &ghosts);
    // Replacements whose old node id the engine just forgot can start right away.
    let created = create_pods(ctx, &kredis, &cluster, &pods_api, &pod_plan.create).await?;
    label_pods(ctx, &pods_api, &facts, &view).await?;
    let mut shards_with_pods: BTreeMap<u32, usize> = BTreeMap::new();
    for s in facts.iter().filter_map(|p| p.shard) {
        *shards_with_pods.entry(s).or_default() += 1;
    }
    services::apply(&ctx.client, &cluster, &shards_with_pods).await?;
    let pending = facts
        .iter()
        .filter(|p| p.state == PodState::Pending)
        .count();
    let mut operation = (created + pending > 0).then(|| OperationStatus {
        kind: if healing { "ReplacePods" } else { "CreatePods" }.into(),
        step: format!("waiting for {} pod(s) to start", created + pending),
        progress: Some(format!(
            "{}/{} pods running",
            facts
                .iter()
                .filter(|p| p.state == PodState::Running)
                .count(),
            cluster.pod_count()
        )),
    });
    // Rolling changes, once no failure is being handled, and never in a pass that just created
    // a pod (`facts` does not show it yet: the rollout would think the cluster stable and take
    // the next pod, two at a time).
    if !healing && created == 0 && !matches!(outcome, Outcome::Failed { .. }) {
        if let Some((op, o)) = roll(
            ctx,
            &kredis,
            &cluster,
            &admin,
            &pods_api,
            &facts,
            &view,
            &ghosts,
            exporter_password.as_deref(),
        )
        .await?
        {
            operation = Some(op);
            outcome = o;
        }
    }
    if let (Outcome::Converged, Some(op)) = (&outcome, &operation) {
        outcome = Outcome::Waiting(op.step.clone());
    }
    if let (Some(why), Outcome::Converged) = (rotating, &outcome) {
        outcome = Outcome::Waiting(why);
    }
    if !pod_plan.waiting.is_empty() && matches!(outcome, Outcome::Converged) {
        outcome = Outcome::Waiting(pod_plan.waiting.join("; "));
    }
    let status = status::build(
        &status::Inputs {
            cluster: &cluster,
            pods: &facts,
            view: &view,
            outcome: &outcome,
            operation,
            previous: kredis.status.as_ref(),
            healing,
        },
        &now(),
    );
    let ready = status.phase == Some(Phase::Ready);
    write_status(ctx, &kredis, &cluster, status, interim_written).await?;
    if let Some(err) = failure {
        return Err(err);
    }
    let mut requeue = if ready {
        ctx.config.resync
    } else {
        ctx.config.busy_requeue
    };
    if ctx.renewals.settling(&key(&kredis)) {
        // Reload again once the kubelet has surely updated the Secret's volumes.
        requeue = requeue.min((ctx.config.secret_volume_sync / 4).max(ctx.config.busy_requeue));
    }
    Ok(Action::requeue(requeue))
}

/// One step of a rolling change (see [`rollout`]): live settings first, then at most one
/// pod replaced. Returns the operation to report and the outcome, when something is under way.
#[allow(clippy::too_many_arguments)]
async fn roll(
    ctx: &Context,
    kredis: &KRedis,
    cluster: &ValidatedCluster,
    admin: &Admin,
    pods_api: &Api<Pod>,
    facts: &[PodFacts],
    view: &ClusterView,
    ghosts: &BTreeSet<u16>,
    exporter_password: Option<&str>,
) -> Result<Option<(OperationStatus, Outcome)>, Error> {
    let (_, mut failures) =
        rollout::apply_live(admin, view, &rollout::live_settings(cluster)).await;
    if let Some(password) = exporter_password {
        failures.extend(rollout::apply_exporter_user(admin, view, password).await.1);
    }
    let mut renewing = None;
    if let Some(tls) = admin.config().tls.as_ref() {
        let found = renewal::ensure(
            &ctx.renewals,
            &key(kredis),
            admin,
            view,
            tls,
            ctx.config.secret_volume_sync,
        )
        .await;
        failures.extend(found.failures);
        if !found.reloaded.is_empty() {
            let nodes = addresses(&found.reloaded);
            publish(
                ctx,
                kredis,
                EventType::Normal,
                "CertificateReloaded",
                format!("reloaded the renewed TLS certificate live on {nodes}"),
            )
            .await;
        }
        if found.overdue {
            renewing = Some(format!(
                "renewing the TLS certificate: {} still present(s) the previous one after a reload; their pods do not see the updated Secret {} yet",
                addresses(&found.stale),
                cluster.tls.as_deref().unwrap_or_default(),
            ));
        }
    }
    if !failures.is_empty() {
        let message = format!(
            "failed to apply settings live (CONFIG SET): {}",
            failures.join("; ")
        );
        publish(
            ctx,
            kredis,
            EventType::Warning,
            "LiveConfigFailed",
            message.clone(),
        )
        .await;
        let op = OperationStatus {
            kind: "LiveConfig".into(),
            step: message.clone(),
            progress: None,
        };
        let category = "live-config".to_string();
        return Ok(Some((op, Outcome::Failed { category, message })));
    }
    let plan = rollout::plan(cluster, facts, view, &pod::spec_hash(cluster));
    let progress = Some(format!(
        "{}/{} pods updated",
        plan.total - plan.stale,
        plan.total
    ));
    let op = |step: String| OperationStatus {
        kind: "RollingUpdate".into(),
        step,
        progress: progress.clone(),
    };
    Ok(match plan.step {
        rollout::Step::Done => renewing.map(|step| {
            let op = OperationStatus {
                kind: "CertificateRenewal".into(),
                step: step.clone(),
                progress: None,
            };
            (op, Outcome::Waiting(step))
        }),
        rollout::Step::Delete { pod, why } => {
            let step = format!("replacing pod {pod}: {why}");
            publish(
                ctx,
                kredis,
                EventType::Normal,
                "RollingUpdate",
                step.clone(),
            )
            .await;
            delete_pod(ctx, kredis, pods_api, &pod, false).await?;
            Some((op(step.clone()), Outcome::Waiting(step)))
        }
        rollout::Step::Surge { shard } => {
            let Some(index) = topology::surge_index(cluster, facts, ghosts) else {
                let w = "waiting for a free index for a temporary replica".to_string();
                return Ok(Some((op(w.clone()), Outcome::Waiting(w))));
            };
            let step = format!(
                "adding a temporary replica to shard {shard} so its master can be failed over"
            );
            publish(
                ctx,
                kredis,
                EventType::Normal,
                "RollingUpdate",
                step.clone(),
            )
            .await;
            create_pods(ctx, kredis, cluster, pods_api, &[(index, shard)]).await?;
            Some((op(step.clone()), Outcome::Waiting(step)))
        }
        rollout::Step::Wait(w) => Some((op(w.clone()), Outcome::Waiting(w))),
        rollout::Step::Blocked(message) => {
            let already = kredis.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == status::DEGRADED && c.reason == "RolloutBlocked")
            });
            if !already {
                publish(
                    ctx,
                    kredis,
                    EventType::Warning,
                    "RolloutBlocked",
                    message.clone(),
                )
                .await;
            }
            let category = "RolloutBlocked".to_string();
            Some((op(message.clone()), Outcome::Failed { category, message }))
        }
    })
}

fn addresses(nodes: &[NodeAddr]) -> String {
    nodes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What kind of operation this pass runs, for `status.operation` and the phase.
fn operation_kind(
    cluster: &ValidatedCluster,
    view: &ClusterView,
    healing: bool,
    previous: Option<&KRedisStatus>,
) -> (&'static str, Phase) {
    let masters = view
        .nodes
        .values()
        .filter(|n| n.role == Role::Master && !n.slots.is_empty())
        .count();
    let phase = status::working_phase(healing, cluster.generation, &previous);
    if masters == 0 {
        ("Create", Phase::Creating)
    } else if healing {
        ("Heal", Phase::Healing)
    } else if masters < cluster.masters as usize {
        ("ScaleOut", phase)
    } else if masters > cluster.masters as usize {
        ("ScaleIn", phase)
    } else {
        ("Reconcile", phase)
    }
}

/// Runs the engine's converge loop with the operator's hook, refreshing `status.operation`
/// while it works.
async fn run_engine(
    ctx: &Arc<Context>,
    kredis: &Arc<KRedis>,
    cluster: &ValidatedCluster,
    admin: &Admin,
    members: &[kredis_engine::plan::Member],
    replicas: u32,
    (kind, phase): (&'static str, Phase),
) -> Result<Report, ConvergeError> {
    let running = Arc::new(Running::default());
    let executor = Executor::new(admin.clone(), ctx.config.exec.clone());
    let hook = Arc::new(Hook {
        ctx: ctx.clone(),
        kredis: kredis.clone(),
        running: running.clone(),
        progress: executor.progress().clone(),
    });
    let executor = executor.with_hook(hook.clone());
    let desired = Desired {
        masters: cluster.masters as usize,
        replicas_per_master: replicas as usize,
    };
    let policy = Policy {
        recover_lost_slots: cluster.recover_lost_slots,
    };
    let started = Instant::now();
    let work = converge_with(&executor, admin, &desired, members, &policy);
    let report = report_progress(ctx, kredis, &running, executor.progress(), kind, phase);
    let result = tokio::select! {
        r = work => r,
        _ = report => unreachable!("the progress reporter never ends"),
    };
    hook.count_progress();
    if result.as_ref().is_ok_and(|r| r.steps > 0) {
        ctx.metrics
            .operation_duration
            .get_or_create(&crate::metrics::ClusterLabels {
                namespace: cluster.namespace.clone(),
                name: cluster.name.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

/// Patches `status.phase` and `status.operation` whenever the running step or the migration
/// progress changes. Never returns; dropped when the engine finishes.
async fn report_progress(
    ctx: &Context,
    kredis: &KRedis,
    running: &Running,
    progress: &kredis_engine::migrate::Progress,
    kind: &'static str,
    phase: Phase,
) {
    let api: Api<KRedis> =
        Api::namespaced(ctx.client.clone(), &kredis.namespace().unwrap_or_default());
    let mut last: Option<OperationStatus> = None;
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let step = running
            .step
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(step) = step else { continue };
        let total = progress.slots_total();
        let op = OperationStatus {
            kind: kind.into(),
            step,
            progress: (total > 0).then(|| {
                format!(
                    "{}/{total} slots, {} keys moved",
                    progress.slots_done(),
                    progress.keys_moved()
                )
            }),
        };
        if last.as_ref() == Some(&op) {
            continue;
        }
        let patch = json!({"status": {"phase": phase, "operation": op}});
        match api
            .patch_status(
                &kredis.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => last = Some(op),
            Err(e) => warn!(error = %e, "failed to report progress"),
        }
    }
}

/// Publishes the engine's notes that a human should see.
async fn report_notes(ctx: &Context, kredis: &KRedis, report: &Report) {
    for note in &report.notes {
        let (reason, text) = match note {
            Note::AntiAffinityUnmet {
                replica,
                master,
                worker,
            } => (
                "AntiAffinityUnmet",
                format!("replica {replica} shares worker {worker} with its master {master}: add worker nodes"),
            ),
            Note::ForeignNode { member, reason } => (
                "ForeignNode",
                format!("pod {member} is left alone: {reason}"),
            ),
            Note::LostSlots { slots } => (
                "LostSlots",
                format!(
                    "slots {} lost every copy and stay unserved (spec.recoverLostSlots is false): set it to true to serve them again, empty",
                    slots.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                ),
            ),
            Note::ShardWithoutMaster { shard } => (
                "ShardWithoutMaster",
                format!("shard {shard} has no node that can serve as its master yet"),
            ),
            Note::Unreachable { .. } | Note::Waiting { .. } => continue,
        };
        publish(ctx, kredis, EventType::Warning, reason, text).await;
    }
}

async fn report_invalid(
    kredis: &KRedis,
    ctx: &Context,
    errors: &[String],
    retry: Option<Duration>,
) -> Result<Action, Error> {
    let status = status::invalid(
        kredis.metadata.generation,
        errors,
        kredis.status.as_ref(),
        &now(),
    );
    let ns = kredis.namespace().unwrap_or_default();
    ctx.metrics
        .set_phase(&ns, &kredis.name_any(), Some(Phase::Invalid));
    if kredis.status.as_ref() != Some(&status) {
        publish(
            ctx,
            kredis,
            EventType::Warning,
            "InvalidSpec",
            errors.join("; "),
        )
        .await;
        patch_status(ctx, kredis, &status).await?;
    }
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

async fn write_status(
    ctx: &Context,
    kredis: &KRedis,
    cluster: &ValidatedCluster,
    status: KRedisStatus,
    force: bool,
) -> Result<(), Error> {
    ctx.metrics.record_status(
        &cluster.namespace,
        &cluster.name,
        &status,
        cluster.masters,
        cluster.replicas_per_master,
    );
    if force || kredis.status.as_ref() != Some(&status) {
        patch_status(ctx, kredis, &status).await?;
    }
    Ok(())
}

/// Writes the whole status with a merge patch; fields that are now absent are removed
/// explicitly (a merge patch keeps what it does not mention).
async fn patch_status(ctx: &Context, kredis: &KRedis, status: &KRedisStatus) -> Result<(), Error> {
    let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        for field in [
            "phase",
            "observedGeneration",
            "conditions",
            "readyDisplay",
            "authSecret",
            "nodes",
            "operation",
        ] {
            map.entry(field).or_insert(Value::Null);
        }
    }
    let api: Api<KRedis> =
        Api::namespaced(ctx.client.clone(), &kredis.namespace().unwrap_or_default());
    api.patch_status(
        &kredis.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": body })),
    )
    .await
    .map_err(Error::kube(format!(
        "write the status of KRedis {}",
        key(kredis)
    )))?;
    Ok(())
}

/// The cluster's pods, read with the worker nodes that exist.
async fn list_facts(
    ctx: &Context,
    pods: &Api<Pod>,
    cluster: &ValidatedCluster,
) -> Result<Vec<PodFacts>, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node_names: BTreeSet<String> = nodes
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("list nodes"))?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let selector = labels::cluster_selector_string(&cluster.name);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "list the pods of KRedis {}/{}",
            cluster.namespace, cluster.name
        )))?;
    Ok(list
        .items
        .iter()
        // Only pods this KRedis controls: a look-alike pod of somebody else's is never touched.
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == cluster.uid.as_ref())
        })
        .map(|p| PodFacts::from_pod(p, &node_names))
        .collect())
}

async fn observe_pods(admin: &Admin, facts: &[PodFacts]) -> ClusterView {
    let seeds: Vec<NodeAddr> = facts
        .iter()
        .filter(|p| matches!(p.state, PodState::Running | PodState::Terminating))
        .filter_map(PodFacts::addr)
        .collect();
    if seeds.is_empty() {
        return ClusterView::default();
    }
    observe(admin, &seeds).await
}

async fn create_pods(
    ctx: &Context,
    kredis: &KRedis,
    cluster: &ValidatedCluster,
    pods: &Api<Pod>,
    create: &[(u32, u32)],
) -> Result<usize, Error> {
    let mut created = 0;
    for &(index, shard) in create {
        let pod = build_pod(cluster, index, shard)?;
        let name = cluster.pod_name(index);
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                created += 1;
                info!(pod = name, index, shard, "created pod");
                publish(
                    ctx,
                    kredis,
                    EventType::Normal,
                    "CreatePod",
                    format!("created pod {name} (index {index}, shard {shard})"),
                )
                .await;
            }
            // Still there from an earlier pass (its deletion not finished): next pass.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("create pod {name}"))(e)),
        }
    }
    Ok(created)
}

async fn delete_pod(
    ctx: &Context,
    kredis: &KRedis,
    pods: &Api<Pod>,
    name: &str,
    gone: bool,
) -> Result<(), Error> {
    // A gone pod's process is dead: nothing to wait for. A released pod was detached from
    // the cluster: its preStop hook ends at once.
    let params = if gone {
        DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        }
    } else {
        DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(Error::kube(format!("delete pod {name}"))(e)),
    }
    let (type_, reason, note) = if gone {
        (
            EventType::Warning,
            "ReplacePod",
            format!("pod {name} is gone (process exited or worker node lost): deleted, a replacement follows once its node id is forgotten"),
        )
    } else {
        (
            EventType::Normal,
            "DeletePod",
            format!("pod {name} left the cluster: deleted"),
        )
    };
    info!(pod = name, gone, "deleted pod");
    publish(ctx, kredis, type_, reason, note).await;
    Ok(())
}

/// Keeps `kredis.io/node-id` and `kredis.io/role` on each pod equal to the live cluster's
/// word (the labels are for humans, Services and selectors; roles are never read back).
async fn label_pods(
    _ctx: &Context,
    pods: &Api<Pod>,
    facts: &[PodFacts],
    view: &ClusterView,
) -> Result<(), Error> {
    for p in facts.iter().filter(|p| p.state == PodState::Running) {
        let Some(node) = p
            .addr()
            .as_ref()
            .and_then(|a| view.id_at(a))
            .and_then(|id| view.nodes.get(id))
        else {
            continue;
        };
        let role = match node.role {
            Role::Master => "master",
            Role::Replica => "replica",
        };
        let want = BTreeMap::from([
            (labels::NODE_ID, node.id.to_string()),
            (labels::ROLE, role.to_string()),
        ]);
        if want
            .iter()
            .all(|(k, v)| p.labels.get(*k).is_some_and(|have| have == v))
        {
            continue;
        }
        let patch = json!({"metadata": {"labels": want}});
        match pods
            .patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("label pod {}", p.name))(e)),
        }
    }
    Ok(())
}
