//! The seed's rollback: a step of a multi-step operation fails on a real fault; the undo
//! stack restores the previous topology; the next plan converges.
use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{chain, Harness};
use futures::future::BoxFuture;
use kredis_engine::exec::{Executor, StepHook};
use kredis_engine::model::NodeAddr;
use kredis_engine::plan::{Desired, Policy, Step};
use kredis_engine::reconcile::{converge_with, ConvergeError};

/// Kills (SIGKILL) the node a chosen REPLICATE targets, right before that step runs: the
/// seed's example of a REPLICAOF hitting a network error mid-scale-out.
struct KillBeforeReplicate {
    nth: usize,
    seen: AtomicUsize,
    pids: BTreeMap<NodeAddr, u32>,
    killed: std::sync::Mutex<Option<NodeAddr>>,
}

impl StepHook for KillBeforeReplicate {
    fn before_step<'a>(
        &'a self,
        _index: usize,
        step: &'a Step,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if let Step::Replicate { node, .. } = step {
                if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
                    let pid = self.pids.get(&node.addr).ok_or("no pid")?;
                    std::process::Command::new("kill")
                        .arg("-9")
                        .arg(pid.to_string())
                        .status()
                        .map_err(|e| e.to_string())?;
                    if let Ok(mut k) = self.killed.lock() {
                        *k = Some(node.addr.clone());
                    }
                }
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replica_scale_out_rolls_back() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("rb", 1000).await;
    let before = h.view_of(&[0, 1, 2, 3, 4, 5]).await;
    for _ in 0..3 {
        h.add_node().await;
    }
    let pids = (0..9)
        .filter_map(|i| h.node(i).pid().map(|p| (h.addr(i), p)))
        .collect();
    let hook = Arc::new(KillBeforeReplicate {
        nth: 2,
        seen: AtomicUsize::new(0),
        pids,
        killed: Default::default(),
    });
    let executor = Executor::new(h.admin.clone(), h.options.clone()).with_hook(hook.clone());
    let desired = Desired {
        masters: 3,
        replicas_per_master: 2,
    };
    let err = converge_with(
        &executor,
        &h.admin,
        &desired,
        &h.members(),
        &Policy::default(),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("the injected fault must fail the plan"));
    let ConvergeError::Exec(exec) = &err else {
        panic!("unexpected error: {}", chain(&err))
    };
    assert_eq!(exec.step.kind(), "Replicate", "{}", chain(&err));
    assert!(!exec.rollback.undone.is_empty(), "nothing was undone");

    // The original six nodes are back to exactly their previous topology.
    let after = h.view_of(&[0, 1, 2, 3, 4, 5]).await;
    assert!(after.is_converged(), "{:?}", after.problems());
    let shape = |v: &kredis_engine::model::ClusterView| {
        v.nodes
            .values()
            .map(|n| (n.id.clone(), n.role, n.master.clone(), n.slots.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&after), shape(&before));
    assert!(h.missing_keys("rb", 1000).await.is_empty());

    // The next plan, without the dead node, completes the scale-out.
    let killed = hook
        .killed
        .lock()
        .ok()
        .and_then(|k| k.clone())
        .unwrap_or_else(|| panic!("nothing killed"));
    let dead = h.index_of(&killed);
    h.remove(dead).await;
    h.add_node().await;
    h.converge(3, 2).await;
    h.assert_topology(3, 2).await;
}
