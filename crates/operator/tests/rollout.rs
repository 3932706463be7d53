//! Rolling changes without downtime (the rolling-update issue): settings Redis takes live are
//! applied with CONFIG SET and restart nothing; a change that needs new pods replaces them one
//! at a time (replicas first, masters after a graceful failover, a temporary replica for
//! shards without one) while a cluster client writes and reads with no failed command and no
//! acknowledged write lost; a broken rollout stops after its first pod and is rolled back by
//! reverting the spec.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, start, writer, Harness};
use kredis_api::Phase;
use kube::api::ListParams;
use kube::ResourceExt;
use redis::AsyncCommands;
use serde_json::json;

/// Pod name -> uid.
async fn uids(h: &Harness, name: &str) -> BTreeMap<String, String> {
    h.pods()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default()))
        .collect()
}

/// `CONFIG GET key` on every node of the status.
async fn config_everywhere(h: &Harness, name: &str, key: &str) -> Vec<String> {
    let k = h.kredis().get(name).await.unwrap();
    let pw = h.password(name).await;
    let mut out = Vec::new();
    for n in k.status.unwrap().nodes {
        let addr = format!("{}:{}", n.host.unwrap(), n.port);
        let url = match &pw {
            Some(p) => format!("redis://:{p}@{addr}"),
            None => format!("redis://{addr}"),
        };
        let mut c = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(v.get(1).cloned().unwrap_or_default());
    }
    out
}

/// Applies `spec` while a client writes and reads; returns when the rollout finished.
async fn roll_under_load(h: &Harness, name: &str, spec: serde_json::Value) {
    let before = uids(h, name).await;
    // Stops on every way out, a failed assertion included (see common::Writer).
    let task = writer(h.cluster_client(name).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch_spec(name, spec).await;
    // Every pod replaced, then Ready; meanwhile never more than one pod out of service
    // (terminating, or not yet ready) at a time.
    // The pods out of service at the worst moment.
    let worst = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let before_ref = &before;
    eventually("every pod replaced", Duration::from_secs(300), || {
        let worst = worst.clone();
        async move {
            let pods = h
                .pods()
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await
                .ok()?
                .items;
            let out: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_some()
                        || !p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .map(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    let gone = p.metadata.deletion_timestamp.is_some();
                    format!("{} (phase {phase:?}, terminating {gone})", p.name_any())
                })
                .collect();
            if let Ok(mut w) = worst.lock() {
                if out.len() > w.len() {
                    *w = out;
                }
            }
            let now = uids(h, name).await;
            (now.len() == before_ref.len()
                && now.values().all(|u| !before_ref.values().any(|b| b == u)))
            .then_some(())
        }
    })
    .await;
    let worst = worst.lock().map(|w| w.clone()).unwrap_or_default();
    assert!(
        worst.len() <= 1,
        "{} pods were out of service at once: {worst:?}",
        worst.len()
    );
    h.ready(name).await;
    let writes = task.finish().await;
    println!(
        "{name}: rolled {} pods with {} writes acknowledged, {} failed commands, window {:?}",
        before.len(),
        writes.acked.len(),
        writes.failed,
        writes.window
    );
    assert_eq!(
        writes.failed, 0,
        "client commands failed during the rollout"
    );
    let mut conn = h.cluster_client(name).await;
    let mut lost = 0;
    for k in &writes.acked {
        let v: Option<String> = conn.get(k).await.unwrap();
        lost += usize::from(v.is_none());
    }
    assert_eq!(lost, 0, "acknowledged writes lost in the rollout");
    h.check(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_settings_restart_nothing_and_restarts_roll_with_replicas() {
    let h = start(3, true).await;
    h.create(
        "roll",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 21000}),
    )
    .await;
    h.ready("roll").await;
    let before = uids(&h, "roll").await;

    h.patch_spec(
        "roll",
        json!({"maxMemory": "64mb", "maxMemoryPolicy": "allkeys-lfu",
               "config": {"slowlog-log-slower-than": "5000"}}),
    )
    .await;
    eventually(
        "live settings on every node",
        Duration::from_secs(60),
        || async {
            let mm = config_everywhere(&h, "roll", "maxmemory").await;
            let pol = config_everywhere(&h, "roll", "maxmemory-policy").await;
            let slow = config_everywhere(&h, "roll", "slowlog-log-slower-than").await;
            (mm.iter().all(|v| v == "67108864")
                && pol.iter().all(|v| v == "allkeys-lfu")
                && slow.iter().all(|v| v == "5000"))
            .then_some(())
        },
    )
    .await;
    h.ready("roll").await;
    assert_eq!(
        uids(&h, "roll").await,
        before,
        "a live setting restarted pods"
    );

    // Resources shape the pod: every pod is replaced, one at a time.
    roll_under_load(
        &h,
        "roll",
        json!({"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}),
    )
    .await;
    let status = h.ready("roll").await;
    assert_eq!((status.ready_masters, status.ready_replicas), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_roll_without_replicas_through_a_temporary_one() {
    let h = start(3, true).await;
    h.create(
        "solo",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 22000}),
    )
    .await;
    h.ready("solo").await;
    roll_under_load(&h, "solo", json!({"config": {"tcp-backlog": "256"}})).await;
    let status = h.ready("solo").await;
    assert_eq!((status.ready_masters, status.ready_replicas), (3, 0));
    assert_eq!(h.pod_names("solo").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rollout_stops_after_one_pod_and_reverting_rolls_back() {
    let h = start(3, true).await;
    h.create(
        "oops",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 23000}),
    )
    .await;
    h.ready("oops").await;
    let before = uids(&h, "oops").await;
    // A setting that needs new pods and that redis-server refuses at start: the first
    // replacement exits at once.
    h.patch_spec("oops", json!({"config": {"io-threads": "not-a-number"}}))
        .await;
    let blocked = eventually("rollout blocked", Duration::from_secs(90), || async {
        let s = h.kredis().get("oops").await.ok()?.status?;
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.reason == "RolloutBlocked")?
            .clone();
        Some((s, c))
    })
    .await;
    println!("blocked: {}", blocked.1.message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = uids(&h, "oops").await;
    let kept = before
        .iter()
        .filter(|(n, u)| during.get(*n) == Some(u))
        .count();
    assert_eq!(kept, before.len() - 1, "more than one pod was replaced");
    // The cluster kept serving every slot with the old pods.
    let s = h.kredis().get("oops").await.unwrap().status.unwrap();
    assert_eq!(s.slots_assigned, 16384);
    assert_ne!(s.phase, Some(Phase::Ready));

    // Revert: the broken pod goes, the cluster is whole again on the old spec.
    h.patch_spec("oops", json!({"config": null})).await;
    let status = h.ready("oops").await;
    assert_eq!((status.ready_masters, status.ready_replicas), (3, 3));
    h.check("oops").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_stops_a_rollout_between_pods() {
    let h = start(3, true).await;
    h.create(
        "halt",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 26000}),
    )
    .await;
    h.ready("halt").await;
    let before = uids(&h, "halt").await;
    h.patch_spec("halt", json!({"config": {"tcp-backlog": "256"}}))
        .await;
    // Pause as soon as the first pod was replaced.
    eventually("a first pod replaced", Duration::from_secs(60), || async {
        let now = uids(&h, "halt").await;
        now.iter()
            .any(|(n, u)| before.get(n).is_some_and(|b| b != u))
            .then_some(())
    })
    .await;
    h.patch_spec("halt", json!({"paused": true})).await;
    // Let a pod being replaced finish its replacement, then nothing more may change.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let frozen = uids(&h, "halt").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(uids(&h, "halt").await, frozen, "pods replaced while paused");
    let renewed = frozen
        .iter()
        .filter(|(n, u)| before.get(*n) != Some(u))
        .count();
    assert!(
        renewed < before.len(),
        "the rollout finished despite the pause"
    );
    h.patch_spec("halt", json!({"paused": false})).await;
    eventually("rollout finished", Duration::from_secs(180), || async {
        let now = uids(&h, "halt").await;
        (now.len() == before.len() && now.iter().all(|(n, u)| before.get(n) != Some(u)))
            .then_some(())
    })
    .await;
    h.ready("halt").await;
    h.check("halt").await;
}

/// Whether the node at `addr` accepts `password` for the default user.
async fn accepts(addr: &str, password: &str) -> bool {
    accepts_user(addr, "default", password).await
}

/// Whether the node at `addr` accepts `password` for `user` (a PING answers).
async fn accepts_user(addr: &str, user: &str, password: &str) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://{user}:{password}@{addr}")) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// The user and password a pod's exporter container logs in with (its env, its Secret).
async fn exporter_credentials(h: &Harness, name: &str) -> (String, String) {
    let pod = h.pods().get(&format!("{name}-0")).await.expect("pod");
    let exporter = pod
        .spec
        .expect("spec")
        .containers
        .into_iter()
        .find(|c| c.name == "exporter")
        .expect("an exporter container");
    let env = exporter.env.unwrap_or_default();
    let user = env
        .iter()
        .find(|e| e.name == "REDIS_USER")
        .and_then(|e| e.value.clone())
        .expect("REDIS_USER");
    let secret = env
        .iter()
        .find(|e| e.name == "REDIS_PASSWORD")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .expect("REDIS_PASSWORD from a Secret");
    assert_eq!(secret.0, format!("{name}-exporter"));
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client.clone(), "default");
    let data = secrets
        .get(&secret.0)
        .await
        .expect("exporter Secret")
        .data
        .expect("data");
    let pw = String::from_utf8(data[&secret.1].0.clone()).expect("UTF-8");
    (user, pw)
}

/// INFO and CLUSTER INFO work; keys and configuration are out of reach.
async fn exporter_can_scrape_only(addr: &str, user: &str, password: &str) {
    let mut c = redis::Client::open(format!("redis://{user}:{password}@{addr}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the exporter user cannot log in on {addr}: {e}"));
    let info: String = redis::cmd("INFO").query_async(&mut c).await.expect("INFO");
    assert!(info.contains("redis_version"));
    let cluster: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut c)
        .await
        .expect("CLUSTER INFO");
    assert!(cluster.contains("cluster_state"));
    for (what, cmd) in [
        ("GET", redis::cmd("GET").arg("k:1").clone()),
        ("SET", redis::cmd("SET").arg("x").arg("y").clone()),
        (
            "CONFIG SET",
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg("1")
                .clone(),
        ),
        ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
    ] {
        let e = cmd
            .query_async::<redis::Value>(&mut c)
            .await
            .expect_err(what);
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{what} on {addr}: {e}"
        );
    }
}

async fn node_addrs(h: &Harness, name: &str) -> Vec<String> {
    let s = h.kredis().get(name).await.unwrap().status.unwrap();
    s.nodes
        .iter()
        .map(|n| format!("{}:{}", n.host.clone().unwrap(), n.port))
        .collect()
}

async fn set_password(h: &Harness, secret: &str, password: &str) {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client.clone(), "default");
    secrets
        .patch(
            secret,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"password": password}})),
        )
        .await
        .expect("change the password");
}

async fn stop_operator(h: &mut Harness) {
    if let Some(op) = h.operator.take() {
        op.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_is_applied_live_even_across_an_operator_restart() {
    let mut h = start(3, true).await;
    h.create(
        "pw",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 27000}),
    )
    .await;
    h.ready("pw").await;
    let old = h.password("pw").await.expect("a password");
    let mut conn = h.cluster_client("pw").await;
    common::write_keys(&mut conn, "k", 1000).await;
    let before = uids(&h, "pw").await;
    let addrs = node_addrs(&h, "pw").await;
    // A client that logged in with the old password keeps working through the switch.
    let writes = common::writer(h.cluster_client("pw").await);

    // The Secret changes while no operator runs: the new one must learn the old password from
    // the record the first one left.
    let new = "rotated-Password-1";
    stop_operator(&mut h).await;
    set_password(&h, "pw-auth", new).await;
    h.operator = Some(common::Operator::start(h.client.clone()).await);
    eventually(
        "every node on the new password only",
        Duration::from_secs(60),
        || async {
            for a in &addrs {
                if !accepts(a, new).await || accepts(a, &old).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert_eq!(
        config_everywhere(&h, "pw", "masterauth").await,
        vec![new.to_string(); addrs.len()],
        "replicas would not re-sync"
    );
    // Replication links re-authenticate with the new masterauth.
    for a in &addrs {
        let mut c = redis::Client::open(format!("redis://:{new}@{a}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    eventually(
        "replication links up again",
        Duration::from_secs(60),
        || async {
            for a in &addrs {
                let mut c = redis::Client::open(format!("redis://:{new}@{a}"))
                    .ok()?
                    .get_multiplexed_async_connection()
                    .await
                    .ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
                    .ok()?;
                if info.contains("role:slave") && !info.contains("master_link_status:up") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    h.ready("pw").await;
    let writes = writes.finish().await;
    assert_eq!(
        writes.failed, 0,
        "commands of a client on the old password failed"
    );
    assert!(!writes.acked.is_empty());
    assert_eq!(common::lost_acked(&h, "pw", &writes.acked).await, 0);
    assert_eq!(uids(&h, "pw").await, before, "the rotation restarted pods");
    common::assert_keys(&mut h.cluster_client("pw").await, "k", 1000).await;
    h.check("pw").await;

    // The exporter has its own user, which the rotation left alone: what its container is
    // given still logs in on every node, and may read server state only.
    let (user, exporter_pw) = exporter_credentials(&h, "pw").await;
    assert_eq!(user, "kredis-exporter");
    for a in &addrs {
        exporter_can_scrape_only(a, &user, &exporter_pw).await;
    }
    // A node without the user (one an older operator started, say) gets it back live.
    let mut c = redis::Client::open(format!("redis://:{new}@{}", addrs[0]))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut c)
        .await
        .unwrap();
    stop_operator(&mut h).await;
    h.operator = Some(common::Operator::start(h.client.clone()).await);
    eventually(
        "the exporter user back on the node",
        Duration::from_secs(60),
        || async {
            accepts_user(&addrs[0], &user, &exporter_pw)
                .await
                .then_some(())
        },
    )
    .await;
    exporter_can_scrape_only(&addrs[0], &user, &exporter_pw).await;

    // Bad input: the record is gone and the Secret names a password no node knows. The
    // operator says so and touches nothing; putting the nodes' password back recovers.
    stop_operator(&mut h).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client.clone(), "default");
    secrets
        .delete("pw-auth-applied", &Default::default())
        .await
        .expect("delete the record");
    set_password(&h, "pw-auth", "nobody-knows-this-one").await;
    h.operator = Some(common::Operator::start(h.client.clone()).await);
    let why = eventually("PasswordRejected", Duration::from_secs(60), || async {
        let s = h.kredis().get("pw").await.ok()?.status?;
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.reason == "PasswordRejected")
            .map(|c| c.message.clone())
    })
    .await;
    println!("rejected: {why}");
    assert!(why.contains("pw-auth"), "{why}");
    assert!(!why.contains("nobody-knows"), "the password leaked: {why}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(uids(&h, "pw").await, before, "pods touched while blocked");
    set_password(&h, "pw-auth", new).await;
    h.ready("pw").await;
    common::assert_keys(&mut h.cluster_client("pw").await, "k", 1000).await;
}
