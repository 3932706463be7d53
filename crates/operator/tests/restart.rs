//! Operator restarts (MISSION 7, PITFALLS 33): at start the operator lists every KRedis and
//! reconciles each, whatever happened while it was down; killed in the middle of a scale-out
//! or scale-in, a new operator finishes or repairs the operation with no key lost.

use crate::common;

use std::time::Duration;

use common::{assert_keys, eventually, replicate_all, start, write_keys, Operator};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_reconciles_every_cluster_before_relying_on_events() {
    let mut h = start(3, false).await;
    // Created while no operator runs: nothing happens to them.
    h.create(
        "one",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 15000}),
    )
    .await;
    h.create(
        "two",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 15100}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.pod_names("one").await.is_empty());

    h.operator = Some(Operator::start(h.client.clone()).await);
    h.ready("one").await;
    h.ready("two").await;
    let mut conn = h.cluster_client("two").await;
    write_keys(&mut conn, "k", 500).await;
    // Replication is asynchronous: a pod killed with no grace may take its last writes along.
    replicate_all(&h, "two").await;

    // Down again; meanwhile a pod is lost and a spec changes. The next operator sees both at
    // start, without any new event arriving after it started.
    h.operator.take().expect("operator").stop().await;
    let victim = h.pod_names("two").await[0].clone();
    h.pods()
        .delete(
            &victim,
            &kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.patch_spec("one", json!({"replicasPerMaster": 1})).await;
    eventually("pod deleted", Duration::from_secs(20), || async {
        (!h.pod_names("two").await.contains(&victim)).then_some(())
    })
    .await;

    h.operator = Some(Operator::start(h.client.clone()).await);
    let one = h.ready("one").await;
    assert_eq!(one.ready_replicas, 3);
    h.ready("two").await;
    eventually("replacement", common::READY, || async {
        h.pod_names("two").await.contains(&victim).then_some(())
    })
    .await;
    let two = h.ready("two").await;
    assert_eq!(two.nodes.len(), 6);
    h.check("one").await;
    h.check("two").await;
    assert_keys(&mut h.cluster_client("two").await, "k", 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_scaling_converges_after_restart() {
    const KEYS: usize = 20_000;
    let mut h = start(3, true).await;
    h.create(
        "mid",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 16000}),
    )
    .await;
    h.ready("mid").await;
    let mut conn = h.cluster_client("mid").await;
    write_keys(&mut conn, "k", KEYS).await;

    // Kill the operator at increasing delays into alternating scale-outs and scale-ins, so it
    // dies creating pods, joining them, moving slots and detaching drained nodes.
    let rounds = [
        (4, 300u64),
        (3, 200),
        (4, 1600),
        (3, 600),
        (4, 3500),
        (3, 1200),
    ];
    for (round, (masters, delay_ms)) in rounds.into_iter().enumerate() {
        h.patch_spec("mid", json!({"masters": masters})).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let seen = h
            .kredis()
            .get("mid")
            .await
            .ok()
            .and_then(|k| k.status)
            .and_then(|s| s.operation)
            .map(|o| o.step);
        h.operator.take().expect("operator").kill();
        println!("round {round}: killed {delay_ms} ms in, during {seen:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.operator = Some(Operator::start(h.client.clone()).await);
        let restarted = std::time::Instant::now();
        let status = h.ready("mid").await;
        println!(
            "round {round}: Ready {:?} after the restart",
            restarted.elapsed()
        );
        assert_eq!(status.ready_masters, masters);
        h.check("mid").await;
        let mut conn = h.cluster_client("mid").await;
        assert_keys(&mut conn, "k", KEYS).await;
    }
}
