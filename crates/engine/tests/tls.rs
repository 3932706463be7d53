//! TLS-only clusters (`port 0`, `tls-port`, `tls-cluster yes`, `tls-replication yes`, a
//! throwaway CA): the engine creates, scales out and in (the nodes' MIGRATE runs over TLS) and
//! heals them with every admin connection over TLS, and a TLS cluster client follows the
//! announced ports; a client without TLS, with another CA or without a client certificate is
//! refused with an error that says why, within the connect timeout.

use std::time::{Duration, Instant};

use kredis_engine::admin::{Admin, AdminConfig, Credentials, TlsConfig, CONNECT_TIMEOUT};
use kredis_engine::local::throwaway_tls;
use kredis_engine::model::NodeAddr;
use redis::AsyncCommands;

use crate::common::{chain, Harness, PASSWORD};

const KEYS: usize = 20_000;

fn tls_of(h: &Harness) -> TlsConfig {
    h.config
        .tls
        .clone()
        .unwrap_or_else(|| panic!("not a TLS harness"))
}

/// What an application does: a cluster client over TLS, seeded with one node.
async fn read_some_keys_as_a_client(h: &Harness, seed: &NodeAddr) {
    let builder = match h.config.tls.clone() {
        None => redis::cluster::ClusterClientBuilder::new(vec![format!(
            "redis://{}:{}",
            seed.host, seed.port
        )]),
        Some(tls) => {
            let (cert, key) = tls.client.unwrap_or_else(|| panic!("no client cert"));
            redis::cluster::ClusterClientBuilder::new(vec![format!(
                "rediss://{}:{}",
                seed.host, seed.port
            )])
            .certs(redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: cert,
                    client_key: key,
                }),
                root_cert: Some(tls.ca_cert),
            })
            .danger_accept_invalid_hostnames(true)
        }
    };
    let client = builder
        .password(PASSWORD)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut con = client
        .get_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cluster client over TLS: {e}"));
    for i in (0..KEYS).step_by(97) {
        let v: Option<String> = con
            .get(format!("k:{i}"))
            .await
            .unwrap_or_else(|e| panic!("GET k:{i} over TLS: {e}"));
        assert_eq!(v.as_deref(), Some(format!("value:{i}").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_is_created_scaled_and_healed_with_every_key() {
    scale_and_heal(Harness::start_tls(6).await).await;
}

/// The same without TLS: the baseline, and the scale-in with replicas of unpinned members that
/// first showed a master detached before its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_cluster_is_created_scaled_and_healed_with_every_key() {
    scale_and_heal(Harness::start(6).await).await;
}

/// 3x1 -> 4x1 -> 3x1 with keys, then a master killed and replaced.
async fn scale_and_heal(mut h: Harness) {
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    h.write_keys("k", KEYS).await;

    // Scale out: slots and keys move between nodes over TLS.
    h.add_node().await;
    h.add_node().await;
    h.converge(4, 1).await;
    h.assert_topology(4, 1).await;
    assert_eq!(h.missing_keys("k", KEYS).await, Vec::<String>::new());
    read_some_keys_as_a_client(&h, &h.addr(0)).await;

    // Scale in: the drained shard's nodes are released.
    let report = h.converge(3, 1).await;
    assert_eq!(report.released.len(), 2, "{:?}", report.released);
    h.remove_released(&report.released).await;
    h.assert_topology(3, 1).await;
    assert_eq!(h.total_keys().await, KEYS as u64);

    // A master dies: its replica (replicating over TLS) takes over, and a new node joins as
    // the replica of the promoted one and syncs over TLS.
    let master = h.master_indexes().await[0];
    h.remove(master).await;
    h.add_node().await;
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    assert_eq!(h.missing_keys("k", KEYS).await, Vec::<String>::new());
    let seed = h.members()[0].addr.clone();
    read_some_keys_as_a_client(&h, &seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_tls_another_ca_or_no_certificate_are_refused_clearly() {
    let h = Harness::start_tls(1).await;
    let addr = h.addr(0);
    let tls = tls_of(&h);
    let attempt = |tls: Option<TlsConfig>| {
        let addr = addr.clone();
        async move {
            let admin = Admin::new(AdminConfig {
                credentials: Credentials::password(PASSWORD),
                tls,
                ..AdminConfig::default()
            });
            let started = Instant::now();
            let r = admin
                .with_node(&addr, |c| async move { c.ping().await })
                .await;
            let took = started.elapsed();
            assert!(
                took < CONNECT_TIMEOUT + Duration::from_secs(1),
                "a refused connection took {took:?}"
            );
            r.map_err(|e| chain(&e))
        }
    };

    // The right CA and certificate: accepted (the harness' own connections prove it too).
    attempt(Some(tls.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Plain TCP to a TLS port.
    let e = attempt(None)
        .await
        .expect_err("plain TCP to a TLS-only node");
    assert!(e.contains(&addr.to_string()), "{e}");

    // A certificate from another CA: rustls refuses the node's certificate.
    let other = throwaway_tls(&["127.0.0.1"]).unwrap_or_else(|e| panic!("{e}"));
    let e = attempt(Some(TlsConfig {
        ca_cert: other.ca_cert.clone(),
        client: tls.client.clone(),
    }))
    .await
    .expect_err("another CA");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // The node requires a client certificate (tls-auth-clients yes, Redis' default).
    let e = attempt(Some(TlsConfig {
        ca_cert: tls.ca_cert.clone(),
        client: None,
    }))
    .await
    .expect_err("no client certificate");
    assert!(e.contains(&addr.to_string()), "{e}");

    // Material that is not PEM is reported before any connection.
    let bad = |ca: &[u8], cert: &[u8], key: &[u8]| TlsConfig {
        ca_cert: ca.to_vec(),
        client: Some((cert.to_vec(), key.to_vec())),
    };
    let (cert, key) = tls
        .client
        .clone()
        .unwrap_or_else(|| panic!("no client cert"));
    assert!(tls.check().is_ok());
    let e = bad(b"not a certificate", &cert, &key)
        .check()
        .expect_err("bad CA");
    assert!(e.contains("CA certificate"), "{e}");
    let e = bad(&tls.ca_cert, b"garbage", &key)
        .check()
        .expect_err("bad cert");
    assert!(e.contains("certificate"), "{e}");
    let e = bad(&tls.ca_cert, &cert, b"garbage")
        .check()
        .expect_err("bad key");
    assert!(e.to_lowercase().contains("private key"), "{e}");
    let (_, other_key) = other
        .client
        .clone()
        .unwrap_or_else(|| panic!("no client cert"));
    let e = bad(&tls.ca_cert, &cert, &other_key)
        .check()
        .expect_err("a key of another certificate");
    assert!(e.contains("certificate and private key"), "{e}");
}

/// The certificate a node presents, as the operator reads it after a renewal: the node's own
/// leaf with the right CA; a clear, bounded failure with another CA, on a plain-TCP port, or
/// on a port where nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presented_certificate_is_read_or_refused_clearly() {
    use kredis_engine::admin::{leaf_certificate, served_certificate};
    let h = Harness::start_tls(1).await;
    let tls = tls_of(&h);
    let leaf = leaf_certificate(&tls.client.as_ref().expect("certificate").0);
    let served = served_certificate(&h.addr(0), &tls, CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(Some(served), leaf);

    let other = throwaway_tls(&["127.0.0.1"]).unwrap_or_else(|e| panic!("{e}"));
    let e = served_certificate(&h.addr(0), &other, CONNECT_TIMEOUT)
        .await
        .expect_err("another CA");
    assert_eq!(e.category(), "tls");
    assert!(
        chain(&e).to_lowercase().contains("certificate"),
        "{}",
        chain(&e)
    );

    let plain = Harness::start(1).await;
    let started = Instant::now();
    let e = served_certificate(&plain.addr(0), &tls, Duration::from_secs(1))
        .await
        .expect_err("a plain-TCP node");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        chain(&e).contains(&plain.addr(0).to_string()),
        "{}",
        chain(&e)
    );

    let closed = kredis_engine::model::NodeAddr::new("127.0.0.1", 1);
    let e = served_certificate(&closed, &tls, CONNECT_TIMEOUT)
        .await
        .expect_err("nothing listens");
    assert!(e.is_connection_error(), "{}", chain(&e));
}
