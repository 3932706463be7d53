//! Creating clusters from empty redis-server processes.
use crate::common;

use common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_3x0() {
    let h = Harness::start(3).await;
    h.converge(3, 0).await;
    let view = h.assert_topology(3, 0).await;
    // Even contiguous ranges, like redis-cli --cluster create.
    let mut ranges: Vec<String> = view.nodes.values().map(|n| n.slots.to_string()).collect();
    ranges.sort();
    assert_eq!(ranges, vec!["{0-5460}", "{10923-16383}", "{5461-10922}"]);
    // A converged cluster plans nothing.
    let again = h.converge(3, 0).await;
    assert_eq!(again.rounds, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_3x1() {
    let h = Harness::start(6).await;
    h.converge(3, 1).await;
    let view = h.assert_topology(3, 1).await;
    // Replicas on another worker than their master whenever possible.
    let members = h.members();
    let worker_of = |id: &kredis_engine::model::NodeId| {
        let addr = view.nodes[id].addr.clone();
        members
            .iter()
            .find(|m| Some(&m.addr) == addr.as_ref())
            .map(|m| m.worker.clone())
    };
    for n in view.nodes.values() {
        if let Some(m) = &n.master {
            assert_ne!(
                worker_of(&n.id),
                worker_of(m),
                "replica shares its master's worker"
            );
        }
    }
    h.write_keys("k", 2000).await;
    assert!(h.missing_keys("k", 2000).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_5x2() {
    let h = Harness::start(15).await;
    h.converge(5, 2).await;
    h.assert_topology(5, 2).await;
}
