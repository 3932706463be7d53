//! Addresses: moved nodes, reused host:port, restarts without nodes.conf, a full restart at
//! new addresses.
use crate::common;

use common::Harness;

/// PITFALLS 4: a node id alive at a new address is re-MEET, never forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_4_moved_node_is_met_not_forgotten() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    let r = h.replica_indexes().await[0];
    let id = h
        .view()
        .await
        .id_at(&h.addr(r))
        .cloned()
        .unwrap_or_else(|| panic!("no id"));
    h.node_mut(r)
        .move_to_new_port()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    h.converge(3, 1).await;
    let view = h.assert_topology(3, 1).await;
    assert_eq!(
        view.id_at(&h.addr(r)),
        Some(&id),
        "the moved node kept its id"
    );
}

/// PITFALLS 31: every node restarted at a new address; the cluster re-forms with every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_31_full_restart_at_new_addresses() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("a", 2000).await;
    // Save the data so the restart keeps it (the test is about addresses, not persistence).
    for i in 0..6 {
        let c = h
            .admin
            .node(&h.addr(i))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _: redis::Value = c
            .raw("SAVE", redis::cmd("SAVE"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for i in 0..6 {
        h.node_mut(i).kill().await;
    }
    for i in 0..6 {
        h.node_mut(i)
            .move_to_new_port()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    assert!(h.missing_keys("a", 2000).await.is_empty());
}

/// PITFALLS 8: a host:port reused by a new node id works once the old id is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_8_reused_address_new_id() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    let r = h.replica_indexes().await[0];
    let old = h
        .view()
        .await
        .id_at(&h.addr(r))
        .cloned()
        .unwrap_or_else(|| panic!("no id"));
    h.node_mut(r)
        .restart(false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    h.converge(3, 1).await;
    let view = h.assert_topology(3, 1).await;
    assert!(!view.nodes.contains_key(&old));
    assert_ne!(view.id_at(&h.addr(r)), Some(&old));
}

/// A master restarted without nodes.conf comes back empty with a new id: its replica is
/// promoted, the old id forgotten, and the new node re-joined as a replica; no key lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restarted_without_nodes_conf_rejoins() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("m", 2000).await;
    let m = h.master_indexes().await[0];
    h.node_mut(m)
        .restart(false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    assert!(h.missing_keys("m", 2000).await.is_empty());
}

/// A MEET to an address where nobody answers leaves a handshake entry; it is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_handshake_is_forgotten() {
    let h = Harness::start(3).await;
    h.converge(3, 0).await;
    let nobody = kredis_engine::local::free_port_pair().unwrap_or_else(|e| panic!("{e}"));
    let c = h
        .admin
        .node(&h.addr(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.meet(
        &kredis_engine::model::NodeAddr::new("127.0.0.1", nobody),
        nobody + 10000,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        h.view().await.nodes.values().any(|n| n.handshake),
        "no handshake entry to repair"
    );
    h.converge(3, 0).await;
    let view = h.assert_topology(3, 0).await;
    assert!(!view.nodes.values().any(|n| n.handshake));
}
