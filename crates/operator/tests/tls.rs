//! A TLS cluster end to end: Invalid until its TLS Secret exists, then created, scaled out
//! and in (MIGRATE over TLS), healed after a master pod is deleted, every key kept, with
//! clients, `redis-cli --cluster check`, replication and the operator all on TLS, and no
//! plain-TCP port anywhere.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kredis_api::{NodeRole, Phase};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::common::*;

const KEYS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_is_created_scaled_and_healed_over_tls_only() {
    let h = start(3, true).await;
    h.create(
        "secure",
        serde_json::json!({
            "masters": 3, "replicasPerMaster": 1, "basePort": 17000,
            "tls": {"secretName": "secure-tls"},
        }),
    )
    .await;

    // No Secret yet: Invalid with what to create, and no pod.
    eventually(
        "Invalid for the missing TLS Secret",
        Duration::from_secs(30),
        || async {
            let s = h.kredis().get("secure").await.ok()?.status?;
            let message = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .message
                .clone();
            (s.phase == Some(Phase::Invalid)
                && message.contains("Secret secure-tls does not exist")
                && message.contains("tls.crt, tls.key and ca.crt"))
            .then_some(())
        },
    )
    .await;
    assert!(h.pod_names("secure").await.is_empty());

    // The Secret as cert-manager writes it: the operator picks it up on its own.
    let tls = kredis_engine::local::throwaway_tls(&["127.0.0.1", "localhost"])
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = tls.client.clone().expect("certificate");
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("secure-tls".into()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(
                    [
                        ("ca.crt", &tls.ca_cert),
                        ("tls.crt", &cert),
                        ("tls.key", &key),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                    .collect(),
                ),
                ..Secret::default()
            },
        )
        .await
        .expect("create the TLS Secret");
    h.ready("secure").await;
    h.check("secure").await;
    // The HTTP API tells clients to use TLS.
    let k = h.kredis().get("secure").await.expect("get");
    let nodes = kredis_operator::http::cluster_nodes(&k);
    assert!(nodes.tls && nodes.masters.len() == 3, "{nodes:?}");

    // TLS only: a plain client gets no answer from any node.
    for m in h.masters("secure").await {
        let plain = async {
            let mut c = redis::Client::open(format!("redis://{m}"))
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), plain)
            .await
            .ok()
            .flatten();
        assert_eq!(answer, None, "{m} answered plain TCP");
    }

    let mut conn = h.cluster_client("secure").await;
    write_keys(&mut conn, "k", KEYS).await;
    for (masters, replicas) in [(4, 1), (3, 1)] {
        h.patch_spec(
            "secure",
            serde_json::json!({"masters": masters, "replicasPerMaster": replicas}),
        )
        .await;
        let status = h.ready("secure").await;
        let count = |role| status.nodes.iter().filter(|n| n.role == Some(role)).count();
        assert_eq!(
            (count(NodeRole::Master), count(NodeRole::Replica)),
            (masters, masters * replicas)
        );
        h.check("secure").await;
        let mut conn = h.cluster_client("secure").await;
        assert_keys(&mut conn, "k", KEYS).await;
    }

    // A master pod deleted: its replica (in sync over TLS) takes over, a new pod joins.
    replicate_all(&h, "secure").await;
    let before = h
        .kredis()
        .get("secure")
        .await
        .expect("get")
        .status
        .expect("status");
    let master = before
        .nodes
        .iter()
        .find(|n| n.role == Some(NodeRole::Master))
        .expect("a master")
        .pod
        .clone();
    h.pods()
        .delete(&master, &DeleteParams::default())
        .await
        .expect("delete a master pod");
    eventually("the master pod to be replaced", READY, || async {
        let k = h.kredis().get("secure").await.ok()?;
        let s = k.status?;
        let gone = !s
            .nodes
            .iter()
            .any(|n| n.pod == master && n.role == Some(NodeRole::Master));
        (gone && s.phase == Some(Phase::Ready) && s.ready_replicas == 3).then_some(())
    })
    .await;
    h.check("secure").await;
    let mut conn = h.cluster_client("secure").await;
    assert_keys(&mut conn, "k", KEYS).await;
}
