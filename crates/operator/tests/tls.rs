//! A TLS cluster end to end: Invalid until its TLS Secret exists, then created, scaled out
//! and in (MIGRATE over TLS), healed after a master pod is deleted, every key kept, with
//! clients, `redis-cli --cluster check`, replication and the operator all on TLS, and no
//! plain-TCP port anywhere. Renewed certificates, and a CA changed through a bundle, are
//! reloaded on every node without a restart.

use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kredis_api::{NodeRole, Phase};
use kredis_engine::admin::{served_certificate, Admin, AdminConfig, Credentials, TlsConfig};
use kredis_engine::local::ThrowawayCa;
use kredis_engine::model::NodeAddr;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

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
    put_tls_secret(&h, "secure-tls", &tls.ca_cert, &cert, &key).await;
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
    let master = delete_a_pod(&h, "secure", NodeRole::Master).await;
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

/// Deletes the pod of a node with `role` (from the status); returns its name.
async fn delete_a_pod(h: &Harness, name: &str, role: NodeRole) -> String {
    let status = h
        .kredis()
        .get(name)
        .await
        .expect("get")
        .status
        .expect("status");
    let pod = status
        .nodes
        .iter()
        .find(|n| n.role == Some(role))
        .unwrap_or_else(|| panic!("no {role:?} in {name}"))
        .pod
        .clone();
    h.pods()
        .delete(&pod, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pod {pod}: {e}"));
    pod
}

/// Creates the TLS Secret `name` as cert-manager writes it, or replaces its keys.
async fn put_tls_secret(h: &Harness, name: &str, ca: &[u8], cert: &[u8], key: &[u8]) {
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let data: BTreeMap<String, ByteString> = [("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
        .collect();
    if secrets
        .get_opt(name)
        .await
        .expect("read the Secret")
        .is_some()
    {
        let patch = serde_json::json!({ "data": data });
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("update the TLS Secret");
        return;
    }
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Secret::default()
            },
        )
        .await
        .expect("create the TLS Secret");
}

/// Every node of the cluster, from its status.
async fn node_addrs(h: &Harness, name: &str) -> Vec<NodeAddr> {
    let status = h
        .kredis()
        .get(name)
        .await
        .expect("get")
        .status
        .expect("status");
    status
        .nodes
        .iter()
        .filter_map(|n| Some(NodeAddr::new(n.host.clone()?, u16::try_from(n.port).ok()?)))
        .collect()
}

/// Waits until every node presents `tls`' certificate.
async fn every_node_presents(h: &Harness, name: &str, tls: &TlsConfig) {
    let want = kredis_engine::admin::leaf_certificate(&tls.client.as_ref().expect("cert").0);
    eventually(
        "every node to present the new certificate",
        Duration::from_secs(60),
        || async {
            for addr in node_addrs(h, name).await {
                let served = served_certificate(&addr, tls, Duration::from_secs(5)).await;
                if served.ok() != want {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Whether every node accepts a client presenting `tls`' certificate (a node checks client
/// certificates against the CA it loaded, so this shows which CA that is). A PING proves it:
/// with TLS 1.3 a refused client certificate only shows after the handshake.
async fn every_node_accepts(h: &Harness, name: &str, tls: &TlsConfig) -> bool {
    let admin = Admin::new(AdminConfig {
        credentials: Credentials {
            username: None,
            password: h.password(name).await,
        },
        tls: Some(tls.clone()),
        ..AdminConfig::default()
    });
    for addr in node_addrs(h, name).await {
        if admin
            .with_node(&addr, |c| async move { c.ping().await })
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

async fn pod_uids(h: &Harness, name: &str) -> Vec<(String, String)> {
    let mut uids = Vec::new();
    for pod in h.pod_names(name).await {
        let p = h.pods().get(&pod).await.expect("get pod");
        uids.push((pod, p.metadata.uid.unwrap_or_default()));
    }
    uids
}

/// cert-manager renews a certificate by writing a new key and certificate into the same
/// Secret. Redis reads its certificate files only at start, so without the operator the
/// nodes would serve the old certificate until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_and_a_changed_ca_are_reloaded_live() {
    let h = start(3, true).await;
    let names = ["127.0.0.1", "localhost"];
    let old_ca = ThrowawayCa::new().unwrap_or_else(|e| panic!("{e}"));
    let issue = |ca: &ThrowawayCa| ca.issue(&names).unwrap_or_else(|e| panic!("{e}"));
    let pair = |tls: &TlsConfig| tls.client.clone().expect("certificate");
    let first = issue(&old_ca);
    let (cert, key) = pair(&first);
    put_tls_secret(&h, "renew-tls", &old_ca.pem(), &cert, &key).await;
    h.create(
        "renew",
        serde_json::json!({
            "masters": 3, "replicasPerMaster": 1, "basePort": 17100,
            "tls": {"secretName": "renew-tls"},
        }),
    )
    .await;
    h.ready("renew").await;
    let mut conn = h.cluster_client("renew").await;
    write_keys(&mut conn, "k", KEYS).await;
    let uids = pod_uids(&h, "renew").await;
    every_node_presents(&h, "renew", &first).await;
    let writes = writer(h.cluster_client("renew").await);

    // A renewal from the same CA: every node presents the new certificate, none restarted,
    // and a client that connected before keeps working throughout.
    let second = issue(&old_ca);
    let (cert, key) = pair(&second);
    put_tls_secret(&h, "renew-tls", &old_ca.pem(), &cert, &key).await;
    every_node_presents(&h, "renew", &second).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writes.finish().await;
    assert_eq!(
        writes.failed, 0,
        "client commands failed during the renewal"
    );
    assert!(!writes.acked.is_empty());
    assert_eq!(pod_uids(&h, "renew").await, uids, "a pod was replaced");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(h.client.clone(), "default");
    eventually(
        "a CertificateReloaded Event",
        Duration::from_secs(30),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("CertificateReloaded"))
                .then_some(())
        },
    )
    .await;
    // New connections use the renewed material: clients, `--cluster check`, and replication.
    let mut conn = h.cluster_client("renew").await;
    assert_keys(&mut conn, "k", KEYS).await;
    assert_eq!(lost_acked(&h, "renew", &writes.acked).await, 0);
    h.check("renew").await;

    // A new CA, the safe way: first every node trusts both CAs (a bundle in ca.crt; no
    // handshake shows it, a client certificate from the new CA does), then certificates
    // from the new CA, then the old CA dropped.
    let new_ca = ThrowawayCa::new().unwrap_or_else(|e| panic!("{e}"));
    let third = issue(&new_ca);
    let bundle = [old_ca.pem(), new_ca.pem()].concat();
    put_tls_secret(&h, "renew-tls", &bundle, &cert, &key).await;
    let new_client = TlsConfig {
        ca_cert: bundle.clone(),
        client: third.client.clone(),
    };
    eventually(
        "every node to trust the new CA",
        Duration::from_secs(60),
        || async {
            every_node_accepts(&h, "renew", &new_client)
                .await
                .then_some(())
        },
    )
    .await;
    let (cert, key) = pair(&third);
    put_tls_secret(&h, "renew-tls", &bundle, &cert, &key).await;
    every_node_presents(&h, "renew", &third).await;
    put_tls_secret(&h, "renew-tls", &new_ca.pem(), &cert, &key).await;
    let old_client = TlsConfig {
        ca_cert: new_ca.pem(),
        client: second.client.clone(),
    };
    eventually(
        "no node to trust the old CA",
        Duration::from_secs(60),
        || async { (!every_node_accepts(&h, "renew", &old_client).await).then_some(()) },
    )
    .await;
    assert!(every_node_accepts(&h, "renew", &third).await);
    assert_eq!(pod_uids(&h, "renew").await, uids, "a pod was replaced");

    // A botched renewal (the key of another certificate) is reported, and no node loads it.
    let (_, wrong_key) = pair(&second);
    put_tls_secret(&h, "renew-tls", &new_ca.pem(), &cert, &wrong_key).await;
    eventually(
        "Invalid for the mismatched key",
        Duration::from_secs(30),
        || async {
            let s = h.kredis().get("renew").await.ok()?.status?;
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (s.phase == Some(Phase::Invalid)
                && ready.message.contains("Secret renew-tls cannot be used"))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    every_node_presents(&h, "renew", &third).await;
    assert!(every_node_accepts(&h, "renew", &third).await);
    put_tls_secret(&h, "renew-tls", &new_ca.pem(), &cert, &key).await;

    // The bus on the new CA: a replica pod replaced now (a new node, new connections to
    // every other node, each checking the other's certificate) joins, and the cluster heals.
    h.ready("renew").await;
    let replica = delete_a_pod(&h, "renew", NodeRole::Replica).await;
    eventually("the replica pod to be replaced", READY, || async {
        let p = h.pods().get_opt(&replica).await.ok()?;
        let replaced =
            p.is_none_or(|p| uids.iter().all(|(_, u)| p.metadata.uid.as_ref() != Some(u)));
        let s = h.kredis().get("renew").await.ok()?.status?;
        (replaced && s.phase == Some(Phase::Ready) && s.ready_replicas == 3).then_some(())
    })
    .await;
    h.check("renew").await;
    replicate_all(&h, "renew").await;
    let mut conn = h.cluster_client("renew").await;
    assert_keys(&mut conn, "k", KEYS).await;
}
