//! Leader election with a coordination.k8s.io/v1 Lease, so that of several operator replicas
//! exactly one reconciles (`--leader-elect`). Touches the API server.
//!
//! The usual client-go protocol: a candidate takes the Lease when it is free or its holder
//! has not renewed it for `lease_duration`; the holder renews every `renew_every`; updates
//! carry the resourceVersion they read, so two candidates never both win. A holder that could
//! not renew for `renew_deadline` (< `lease_duration`) considers itself deposed before anyone
//! else may take over, so two replicas never reconcile at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Timings of the election.
#[derive(Clone, Debug)]
pub struct LeaseTimings {
    /// How long a Lease stays valid after its last renewal (client-go default: 15 s).
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long stops acting (client-go default: 10 s).
    pub renew_deadline: Duration,
    /// How often the holder renews and a candidate retries (client-go default: 2 s).
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// Timings.
    pub timings: LeaseTimings,
}

/// Runs the election forever; `tx` carries whether this replica leads right now.
pub async fn run(client: kube::Client, election: LeaderElection, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut last_renewal: Option<Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &election).await {
            Ok(true) => {
                if !*tx.borrow() {
                    info!(
                        identity = election.identity,
                        lease = election.name,
                        "became the leader"
                    );
                }
                last_renewal = Some(Instant::now());
                tx.send_replace(true);
            }
            Ok(false) => {
                if *tx.borrow() {
                    warn!(
                        identity = election.identity,
                        "lost the lease to another replica"
                    );
                }
                last_renewal = None;
                tx.send_replace(false);
            }
            Err(e) => {
                warn!(error = %e, "failed to read or write the lease");
                // Keep leading only within the renew deadline of the last success.
                if last_renewal.is_some_and(|t| t.elapsed() >= election.timings.renew_deadline) {
                    warn!(
                        identity = election.identity,
                        "could not renew the lease in time: stepping down"
                    );
                    last_renewal = None;
                    tx.send_replace(false);
                }
            }
        }
        tokio::time::sleep(election.timings.retry_period).await;
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One attempt; `Ok(true)` when we hold the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, e: &LeaderElection) -> Result<bool, kube::Error> {
    let duration = i32::try_from(e.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(e.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => {
            let age = Timestamp::now().duration_since(renewed.0);
            age.as_secs() >= i64::from(secs)
        }
        _ => true,
    };
    if !ours && !expired && spec.holder_identity.is_some() {
        return Ok(false);
    }
    if !ours {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(now());
        spec.holder_identity = Some(e.identity.clone());
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration);
    // The resourceVersion read above makes this a compare-and-swap.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
