//! Failure handling end to end (DESIGN.md "Failure handling"): a master pod deleted while it
//! still answers is failed over gracefully (no acknowledged write lost); a master whose
//! process dies is failed over by force at once; a worker node deleted loses no shard. In
//! each case the lost pods are replaced as replicas and the cluster is Ready and clean again.
//! The window during which writes fail is measured and printed (no timing is asserted: speed
//! lives in benchmarks).

use crate::common;

use std::time::Duration;

use common::{assert_keys, lost_acked, replicate_all, start, write_keys, writer, Harness};
use kredis_api::NodeRole;
use serde_json::json;

/// Pod, host and port of the master serving `slot 0`'s shard (any master works).
async fn a_master(h: &Harness, name: &str) -> (String, String, i32) {
    let k = h.kredis().get(name).await.unwrap();
    let n = k
        .status
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.role == Some(NodeRole::Master))
        .expect("a master");
    (n.pod, n.host.expect("host"), n.port)
}

/// The uid of a pod.
async fn uid(h: &Harness, pod: &str) -> String {
    h.pods().get(pod).await.unwrap().metadata.uid.unwrap()
}

/// Waits until `pod` exists again with another uid (its replacement), then until Ready.
async fn healed(h: &Harness, name: &str, pod: &str, old_uid: &str) -> kredis_api::KRedisStatus {
    common::eventually("the replacement pod", common::READY, || async {
        let p = h.pods().get_opt(pod).await.ok()??;
        (p.metadata.uid.as_deref() != Some(old_uid) && p.metadata.deletion_timestamp.is_none())
            .then_some(())
    })
    .await;
    h.ready(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_master_pod_is_failed_over_gracefully_and_replaced() {
    let h = start(3, true).await;
    h.create(
        "ha",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 12000}),
    )
    .await;
    h.ready("ha").await;
    let mut conn = h.cluster_client("ha").await;
    write_keys(&mut conn, "k", 1000).await;
    replicate_all(&h, "ha").await;

    let task = writer(h.cluster_client("ha").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pod, _, _) = a_master(&h, "ha").await;
    let old = uid(&h, &pod).await;
    h.pods()
        .delete(&pod, &Default::default())
        .await
        .expect("delete master pod");
    // The replacement reuses the name; wait for the old pod to go and the cluster to heal.
    let status = healed(&h, "ha", &pod, &old).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = task.finish().await;
    println!(
        "graceful failover of {pod}: {} writes acknowledged, {} failed, write window {:?}",
        writes.acked.len(),
        writes.failed,
        writes.window
    );
    let replaced = status
        .nodes
        .iter()
        .find(|n| n.pod == pod)
        .expect("replacement");
    assert_eq!(
        replaced.role,
        Some(NodeRole::Replica),
        "the replacement joins as a replica"
    );
    h.check("ha").await;
    assert_keys(&mut h.cluster_client("ha").await, "k", 1000).await;
    let lost = lost_acked(&h, "ha", &writes.acked).await;
    assert_eq!(lost, 0, "a graceful failover lost acknowledged writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_master_is_forced_over_and_replaced() {
    let h = start(3, true).await;
    h.create(
        "crash",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 13000}),
    )
    .await;
    h.ready("crash").await;
    let mut conn = h.cluster_client("crash").await;
    write_keys(&mut conn, "k", 1000).await;
    replicate_all(&h, "crash").await;

    let task = writer(h.cluster_client("crash").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pod, host, port) = a_master(&h, "crash").await;
    let old = uid(&h, &pod).await;
    // Redis names its process `redis-server <ip>:<port> [cluster]`.
    let killed = tokio::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("redis-server {host}:{port} ")])
        .status()
        .await
        .unwrap();
    assert!(killed.success(), "no redis-server at {host}:{port}");
    let status = healed(&h, "crash", &pod, &old).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = task.finish().await;
    let lost = lost_acked(&h, "crash", &writes.acked).await;
    println!(
        "forced failover of {pod}: {} writes acknowledged, {} failed, {lost} acknowledged but not replicated (lost), write window {:?}",
        writes.acked.len(),
        writes.failed,
        writes.window
    );
    assert!(
        status
            .nodes
            .iter()
            .any(|n| n.pod == pod && n.role == Some(NodeRole::Replica)),
        "{pod} is not a replica: {status:#?}"
    );
    h.check("crash").await;
    // Everything replicated before the crash survived.
    assert_keys(&mut h.cluster_client("crash").await, "k", 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_worker_node_loses_no_shard() {
    let h = start(3, true).await;
    h.create(
        "zone",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 14000}),
    )
    .await;
    let before = h.ready("zone").await;
    let mut conn = h.cluster_client("zone").await;
    write_keys(&mut conn, "k", 1000).await;
    replicate_all(&h, "zone").await;

    // dev-node-2 hosts one master or replica of several shards.
    let lost_pods: Vec<String> = h
        .pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("dev-node-2"))
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(!lost_pods.is_empty());
    let old = uid(&h, &lost_pods[0]).await;
    h.cluster.delete_node("dev-node-2").expect("delete node");
    healed(&h, "zone", &lost_pods[0], &old).await;
    let after = h.ready("zone").await;
    assert_eq!(after.nodes.len(), before.nodes.len());
    for p in h.pods().list(&Default::default()).await.unwrap().items {
        assert_ne!(
            p.spec.and_then(|s| s.node_name).as_deref(),
            Some("dev-node-2"),
            "a pod runs on the deleted node"
        );
    }
    h.check("zone").await;
    assert_keys(&mut h.cluster_client("zone").await, "k", 1000).await;
    println!("worker node loss: replaced {lost_pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_shard_follows_recover_lost_slots() {
    let h = start(3, true).await;
    h.create(
        "lossy",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 19000}),
    )
    .await;
    h.create(
        "strict",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 19100, "recoverLostSlots": false}),
    )
    .await;
    h.ready("lossy").await;
    h.ready("strict").await;
    for name in ["lossy", "strict"] {
        let (pod, host, port) = a_master(&h, name).await;
        let killed = tokio::process::Command::new("pkill")
            .args(["-KILL", "-f", &format!("redis-server {host}:{port} ")])
            .status()
            .await
            .unwrap();
        assert!(killed.success(), "{name}: no redis-server for {pod}");
    }
    // A cache: the lost shard's slots are served again, empty, and the shard is rebuilt.
    common::eventually(
        "lossy degraded or healing",
        Duration::from_secs(30),
        || async {
            let s = h.kredis().get("lossy").await.ok()?.status?;
            (s.phase != Some(kredis_api::Phase::Ready)).then_some(())
        },
    )
    .await;
    let lossy = h.ready("lossy").await;
    assert_eq!(lossy.slots_assigned, 16384);
    h.check("lossy").await;
    // Strict: the slots stay unserved, the phase says Degraded, nothing is invented.
    let strict = common::eventually("strict degraded", Duration::from_secs(60), || async {
        let s = h.kredis().get("strict").await.ok()?.status?;
        (s.phase == Some(kredis_api::Phase::Degraded) && s.slots_assigned < 16384).then_some(s)
    })
    .await;
    println!("strict: {} slots served", strict.slots_assigned);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = h.kredis().get("strict").await.unwrap().status.unwrap();
    assert_eq!(
        again.slots_assigned, strict.slots_assigned,
        "lost slots were served"
    );
}
