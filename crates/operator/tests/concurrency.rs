//! One queue per KRedis (MISSION 2): while one cluster migrates slots, another cluster's
//! master crash is failed over at once, not after the migration.

use crate::common;

use std::time::{Duration, Instant};

use common::{start, Harness};
use futures::StreamExt;
use kredis_api::NodeRole;
use redis::AsyncCommands;
use serde_json::json;

/// Keys (of VALUE bytes) loaded into the migrating cluster: enough that its scale-out takes
/// seconds even on a fast machine (moves of different sources run at once).
const KEYS: usize = 400_000;
const VALUE: usize = 200;

async fn load(h: &Harness, name: &str) {
    let conn = h.cluster_client(name).await;
    let value = "x".repeat(VALUE);
    futures::stream::iter(0..KEYS)
        .map(|i| {
            let mut c = conn.clone();
            let v = value.clone();
            async move { c.set::<_, _, ()>(format!("big:{i}"), v).await.expect("SET") }
        })
        .buffer_unordered(128)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_of_one_cluster_is_not_delayed_by_another_clusters_migration() {
    let h = start(3, true).await;
    h.create(
        "busy",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 17000}),
    )
    .await;
    h.create(
        "urgent",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 17100}),
    )
    .await;
    h.ready("busy").await;
    let urgent = h.ready("urgent").await;
    load(&h, "busy").await;

    // The crash victim: a master of "urgent", and the replica that should take over.
    let master = urgent
        .nodes
        .iter()
        .find(|n| n.role == Some(NodeRole::Master))
        .expect("master")
        .clone();
    let replica = urgent
        .nodes
        .iter()
        .find(|n| n.master_id == master.node_id)
        .expect("its replica")
        .clone();
    let password = h.password("urgent").await.expect("password");
    let url = format!(
        "redis://:{password}@{}:{}",
        replica.host.as_deref().unwrap(),
        replica.port
    );
    let replica_conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    h.patch_spec("busy", json!({"masters": 6})).await;
    common::eventually("busy migrating", Duration::from_secs(60), || async {
        let op = h.kredis().get("busy").await.ok()?.status?.operation?;
        op.step.starts_with("move slots").then_some(())
    })
    .await;

    let crashed = Instant::now();
    let host = master.host.clone().unwrap();
    let killed = tokio::process::Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("redis-server {host}:{} ", master.port),
        ])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let promoted_after =
        common::eventually("replica promoted", Duration::from_secs(60), || async {
            let mut c = replica_conn.clone();
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
            let first = match role.first()? {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
                redis::Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            (first == "master").then(|| crashed.elapsed())
        })
        .await;
    let busy = h.kredis().get("busy").await.unwrap().status.unwrap();
    println!(
        "urgent's replica promoted {promoted_after:?} after the crash; busy still migrating: {:?}",
        busy.operation
    );
    assert!(
        busy.operation.is_some(),
        "busy finished its migration before urgent was failed over: the test proves nothing (load more keys)"
    );
    let mut conn = h.cluster_client("urgent").await;
    let _: () = conn
        .set("after", "crash")
        .await
        .expect("urgent serves writes");
    // Ready again only once the status no longer lists the dead node (the replacement joined).
    common::eventually("urgent healed", common::READY, || async {
        let s = h.kredis().get("urgent").await.ok()?.status?;
        let gone = !s.nodes.iter().any(|n| n.node_id == master.node_id);
        (gone && s.phase == Some(kredis_api::Phase::Ready)).then_some(())
    })
    .await;
    h.ready("busy").await;
    h.check("busy").await;
    h.check("urgent").await;
    let busy = h.kredis().get("busy").await.unwrap().status.unwrap();
    assert_eq!(busy.ready_masters, 6);
}
