//! Scaling replicas, failover and replacement against real redis-server processes.
use crate::common;

use common::Harness;
use kredis_engine::model::Role;
use kredis_engine::plan::Desired;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_1_2_0_1() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("r", 3000).await;
    for _ in 0..3 {
        h.add_node().await;
    }
    h.converge(3, 2).await;
    h.assert_topology(3, 2).await;

    let report = h.converge(3, 0).await;
    assert_eq!(report.released.len(), 6, "released: {:?}", report.released);
    h.remove_released(&report.released).await;
    h.assert_topology(3, 0).await;

    for _ in 0..3 {
        h.add_node().await;
    }
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    assert!(h.missing_keys("r", 3000).await.is_empty());
}

/// PITFALLS 10: a master that is gone is replaced with FORCE at once; the dead id is
/// forgotten everywhere only after the promotion is confirmed (PITFALLS 1, 2); a fresh node
/// joins as a replica of the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_10_dead_master_forced_then_replaced() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("f", 3000).await;
    let victim = h.master_indexes().await[0];
    let victim_id = h
        .view()
        .await
        .id_at(&h.addr(victim))
        .cloned()
        .unwrap_or_else(|| panic!("no id"));
    h.remove(victim).await;
    let started = std::time::Instant::now();
    h.converge(3, 1).await;
    let took = started.elapsed();
    let view = h.view().await;
    assert!(!view.nodes.contains_key(&victim_id), "dead id still known");
    assert_eq!(
        view.nodes
            .values()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
            .count(),
        3
    );
    assert!(view.uncovered_slots().is_empty());
    // Well under the node timeout-driven path plus convergence margin.
    assert!(took.as_secs() < 30, "took {took:?}");
    assert!(h.missing_keys("f", 3000).await.is_empty());
    h.add_node().await;
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
}

/// A terminating master that still answers hands over with a graceful failover: no key lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_master_fails_over_gracefully() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("g", 3000).await;
    let victim = h.master_indexes().await[0];
    let mut members = h.members();
    for m in &mut members {
        if m.addr == h.addr(victim) {
            m.terminating = true;
        }
    }
    let report = h
        .converge_members(
            Desired {
                masters: 3,
                replicas_per_master: 1,
            },
            &members,
        )
        .await;
    assert_eq!(report.released, vec![format!("n{victim}")]);
    h.remove(victim).await;
    assert!(h.missing_keys("g", 3000).await.is_empty());
    h.add_node().await;
    h.converge(3, 1).await;
    h.assert_topology(3, 1).await;
    assert!(h.missing_keys("g", 3000).await.is_empty());
}
