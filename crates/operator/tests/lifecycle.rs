//! The operator end to end against `kredis dev`: create a 3x1 cluster, scale masters 3 -> 5
//! -> 3 and replicas 1 -> 2 -> 0 -> 1 with keys loaded (every key kept, `redis-cli --cluster
//! check` clean after each step), status as DESIGN.md says, and no status churn.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_keys, start, write_keys};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kredis_api::{KRedisStatus, NodeRole};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::json;

const KEYS: usize = 3000;

/// Every replica's master is a master of the status, on another worker node (host network:
/// `host` is the worker's address), and the counts match.
fn assert_shape(status: &KRedisStatus, masters: usize, replicas: usize) {
    let by_id: BTreeMap<&str, &kredis_api::NodeStatus> = status
        .nodes
        .iter()
        .filter_map(|n| Some((n.node_id.as_deref()?, n)))
        .collect();
    let m: Vec<_> = status
        .nodes
        .iter()
        .filter(|n| n.role == Some(NodeRole::Master))
        .collect();
    let r: Vec<_> = status
        .nodes
        .iter()
        .filter(|n| n.role == Some(NodeRole::Replica))
        .collect();
    assert_eq!(m.len(), masters, "masters in {status:#?}");
    assert_eq!(r.len(), masters * replicas, "replicas in {status:#?}");
    assert_eq!(status.ready_masters as usize, masters);
    assert_eq!(status.ready_replicas as usize, masters * replicas);
    assert_eq!(status.slots_assigned, 16384);
    let slots: i32 = m
        .iter()
        .flat_map(|n| n.slots.iter())
        .map(|[a, b]| b - a + 1)
        .sum();
    assert_eq!(slots, 16384);
    // Evenly spread: every master within one slot of 16384/masters.
    for n in &m {
        let own: i32 = n.slots.iter().map(|[a, b]| b - a + 1).sum();
        assert!(
            (own - 16384 / masters as i32).abs() <= 1,
            "{} serves {own} slots",
            n.pod
        );
    }
    for rep in r {
        let master = by_id
            .get(rep.master_id.as_deref().expect("replica has a master id"))
            .expect("replica's master is in the status");
        assert_eq!(master.role, Some(NodeRole::Master));
        assert_ne!(
            master.host, rep.host,
            "replica {} shares a worker with its master {}",
            rep.pod, master.pod
        );
    }
    let desired = masters * (1 + replicas);
    assert_eq!(
        status.ready_display.as_deref(),
        Some(format!("{desired}/{desired}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_scale_masters_and_replicas_keeping_every_key() {
    let h = start(3, true).await;
    h.create(
        "cache",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 11000}),
    )
    .await;
    let status = h.ready("cache").await;
    assert_shape(&status, 3, 1);
    assert_eq!(status.auth_secret.as_deref(), Some("cache-auth"));
    h.check("cache").await;

    // The generated password is owned by the KRedis and required by every node.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let secret = secrets.get("cache-auth").await.expect("auth Secret");
    assert_eq!(secret.owner_references()[0].kind, "KRedis");
    let password = h.password("cache").await.expect("password");
    assert!(password.len() >= 32);
    let first = h.masters("cache").await[0].clone();
    let anonymous = redis::Client::open(format!("redis://{first}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let denied = match anonymous {
        Err(e) => Some(e.to_string()),
        Ok(mut c) => redis::cmd("GET")
            .arg("x")
            .query_async::<Option<String>>(&mut c)
            .await
            .err()
            .map(|e| e.to_string()),
    };
    assert!(
        denied.is_some_and(|e| e.contains("NOAUTH") || e.contains("uthentication")),
        "a node answered without the password"
    );
    // Pods carry the design's labels and the live role.
    for p in h.pods().list(&ListParams::default()).await.unwrap().items {
        let l = p.labels();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "kredis.io/shard",
            "kredis.io/index",
            "kredis.io/node-id",
            "kredis.io/role",
        ] {
            assert!(
                l.contains_key(key),
                "pod {} lacks label {key}",
                p.name_any()
            );
        }
    }

    let mut conn = h.cluster_client("cache").await;
    write_keys(&mut conn, "k", KEYS).await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "default");

    for (masters, replicas) in [(5, 1), (3, 1), (3, 2), (3, 0), (3, 1)] {
        h.patch_spec(
            "cache",
            json!({"masters": masters, "replicasPerMaster": replicas}),
        )
        .await;
        let status = h.ready("cache").await;
        assert_shape(&status, masters, replicas);
        assert_eq!(
            h.pod_names("cache").await.len(),
            masters * (1 + replicas),
            "pods after scaling to {masters}x{replicas}"
        );
        h.check("cache").await;
        let mut conn = h.cluster_client("cache").await;
        assert_keys(&mut conn, "k", KEYS).await;
        // One disruption budget per shard, removed with the shard.
        let pdbs = common::eventually("one PDB per shard", Duration::from_secs(30), || async {
            let list = budgets.list(&ListParams::default()).await.ok()?;
            let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
            names.sort();
            (names.len() == masters).then_some(names)
        })
        .await;
        assert!(
            pdbs.iter().all(|n| n.starts_with("cache-shard-")),
            "{pdbs:?}"
        );
    }
    // Stable names for clients that do not use the HTTP API.
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    for (svc, role) in [
        ("cache", None),
        ("cache-masters", Some("master")),
        ("cache-replicas", Some("replica")),
    ] {
        let s = services.get(svc).await.expect("Service");
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        let selector = spec.selector.expect("selector");
        assert_eq!(selector.get("kredis.io/role").map(String::as_str), role);
    }

    // Slot moves and pod changes were reported as Events.
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["MoveSlots", "CreatePod", "DetachNode", "AttachReplica"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event among {reasons:?}"
        );
    }

    // No churn: a Ready cluster's status is not rewritten (a write would bump the
    // resourceVersion) across several resyncs of its pods and the operator's own requeues.
    let before = h.kredis().get("cache").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = h.kredis().get("cache").await.unwrap();
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "the status of a Ready cluster changed: {:#?} -> {:#?}",
        before.status,
        after.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_cluster_without_auth() {
    let h = start(3, true).await;
    h.create(
        "plain",
        json!({"masters": 3, "replicasPerMaster": 1, "hostNetwork": false,
               "auth": {"enabled": false}, "exporter": {"enabled": false}}),
    )
    .await;
    let status = h.ready("plain").await;
    assert_shape(&status, 3, 1);
    assert_eq!(status.auth_secret, None);
    assert!(status.nodes.iter().all(|n| n.port == 6379));
    h.check("plain").await;
    let mut conn = h.cluster_client("plain").await;
    write_keys(&mut conn, "p", 200).await;
    assert_keys(&mut conn, "p", 200).await;

    // Deleting the KRedis removes its pods (owner references) after the finalizer ran.
    h.kredis()
        .delete("plain", &Default::default())
        .await
        .expect("delete");
    common::eventually("KRedis and pods gone", Duration::from_secs(60), || async {
        let gone = h.kredis().get_opt("plain").await.ok()?.is_none()
            && h.pod_names("plain").await.is_empty();
        gone.then_some(())
    })
    .await;
}
