//! Two operator replicas with `--leader-elect`: only the Lease holder reconciles, the standby
//! serves the HTTP API from its own watch cache, and when the leader dies the standby takes
//! over within the lease duration.

use crate::common;

use std::time::{Duration, Instant};

use common::{eventually, http_get, start, Operator};
use k8s_openapi::api::coordination::v1::Lease;
use kredis_operator::leader::{LeaderElection, LeaseTimings};
use kube::api::Api;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(4);

fn election(identity: &str) -> Option<LeaderElection> {
    Some(LeaderElection {
        namespace: "default".into(),
        name: "kredis-operator".into(),
        identity: identity.into(),
        timings: LeaseTimings {
            lease_duration: LEASE,
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        },
    })
}

/// `kredis_reconcile_runs_total` of an operator.
async fn runs(op: &Operator) -> u64 {
    let (code, body) = http_get(op.http, "/metrics").await;
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("kredis_reconcile_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("kredis_reconcile_runs_total")
}

async fn holder(h: &common::Harness) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "default");
    leases
        .get_opt("kredis-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_the_standby_takes_over() {
    let h = start(3, false).await;
    let a = Operator::start_with(h.client.clone(), election("replica-a")).await;
    eventually("replica-a leads", Duration::from_secs(20), || async {
        (holder(&h).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Operator::start_with(h.client.clone(), election("replica-b")).await;

    h.create(
        "le",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 18000}),
    )
    .await;
    h.ready("le").await;
    assert!(runs(&a).await > 0);
    assert_eq!(runs(&b).await, 0, "the standby reconciled");
    // The standby answers from its own cache.
    let (code, body) = http_get(b.http, "/v1/clusters").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("\"name\":\"le\"") && body.contains("Ready"),
        "{body}"
    );
    let (code, _) = http_get(b.http, "/readyz").await;
    assert_eq!(code, 200);

    // The leader dies without releasing the Lease; the standby takes it once it expires.
    a.kill();
    let killed = Instant::now();
    eventually("replica-b leads", LEASE * 4, || async {
        (holder(&h).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    println!("standby took over {took_over:?} after the leader died (lease {LEASE:?})");
    h.patch_spec("le", json!({"replicasPerMaster": 1})).await;
    let status = h.ready("le").await;
    assert_eq!(status.ready_replicas, 3);
    assert!(runs(&b).await > 0, "the new leader did not reconcile");
    h.check("le").await;
    b.stop().await;
}
