//! Crash-safety at every step boundary (the reliability issue): for create, scale-out,
//! scale-in and failover handling, the engine is stopped dead before step k of its run, for
//! every k the run has (the future is dropped while a hook holds it at the boundary: no undo
//! runs, connections close, exactly what killing the operator does). A fresh engine (new
//! admin connections, nothing remembered) then converges, and the cluster must be clean:
//! converged, `redis-cli --cluster check` OK, the expected topology, no key lost or
//! duplicated. Each case prints how many boundaries it covered.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{chain, Harness};
use futures::future::BoxFuture;
use kredis_engine::admin::{Admin, AdminConfig, Credentials};
use kredis_engine::exec::{Executor, StepHook};
use kredis_engine::plan::{Desired, Member, Policy, Step};
use kredis_engine::reconcile::converge_with;
use tokio::sync::watch;

/// Holds the run at boundary `at` (counted over every step of the run, all plan rounds) and
/// says so; every earlier step passes.
struct StopAt {
    at: usize,
    seen: AtomicUsize,
    reached: watch::Sender<bool>,
}

impl StepHook for StopAt {
    fn before_step<'a>(
        &'a self,
        _index: usize,
        _step: &'a Step,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.seen.fetch_add(1, Ordering::SeqCst) == self.at {
                let _ = self.reached.send(true);
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

/// Runs a converge that is killed at boundary `at`. Returns false when the run finished
/// before reaching it (every boundary is covered).
async fn killed_at(h: &Harness, at: usize, desired: Desired, members: &[Member]) -> bool {
    let (tx, mut rx) = watch::channel(false);
    let hook = Arc::new(StopAt {
        at,
        seen: AtomicUsize::new(0),
        reached: tx,
    });
    // A process of its own: its own connections, dropped with it.
    let admin = Admin::new(h.admin.config().clone());
    let executor = Executor::new(admin.clone(), h.options.clone()).with_hook(hook);
    let policy = Policy::default();
    let run = converge_with(&executor, &admin, &desired, members, &policy);
    tokio::select! {
        r = run => {
            if let Err(e) = r {
                panic!("boundary {at}: the run failed before being killed: {}", chain(&e));
            }
            false
        }
        _ = rx.wait_for(|r| *r) => true,
    }
}

/// A fresh engine finishes the job; the cluster must be clean with every key.
async fn recovers(
    h: &Harness,
    case: &str,
    at: usize,
    desired: Desired,
    members: &[Member],
    keys: usize,
) {
    let admin = Admin::new(AdminConfig {
        credentials: Credentials {
            username: None,
            password: h.admin.config().credentials.password.clone(),
        },
        ..AdminConfig::default()
    });
    let executor = Executor::new(admin.clone(), h.options.clone());
    if let Err(e) = converge_with(&executor, &admin, &desired, members, &Policy::default()).await {
        panic!(
            "{case}, killed before step {at}: recovery failed: {}",
            chain(&e)
        );
    }
    let idx: Vec<usize> = members.iter().map(|m| h.index_of(&m.addr)).collect();
    let view = h.view_of(&idx).await;
    assert!(
        view.is_converged(),
        "{case}, killed before step {at}: {:?}",
        view.problems()
    );
    if keys > 0 {
        let missing = h.missing_keys("c", keys).await;
        assert!(
            missing.is_empty(),
            "{case}, killed before step {at}: {} keys missing, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        assert_eq!(
            h.total_keys().await,
            keys as u64,
            "{case}, killed before step {at}: keys duplicated"
        );
    }
}

fn desired(masters: usize, replicas_per_master: usize) -> Desired {
    Desired {
        masters,
        replicas_per_master,
    }
}

/// Create: six fresh nodes to 3 x 1, killed before every step of the bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_killed_at_every_step_boundary_recovers() {
    let mut at = 0;
    loop {
        let h = Harness::start(6).await;
        let members = h.members();
        if !killed_at(&h, at, desired(3, 1), &members).await {
            break;
        }
        recovers(&h, "create", at, desired(3, 1), &members, 0).await;
        h.assert_topology(3, 1).await;
        at += 1;
    }
    println!("create 3x1: killed at each of {at} step boundaries, recovered every time");
    assert!(at > 3, "create ran only {at} steps");
}

/// Scale-out 3 -> 4 and scale-in 4 -> 3 masters with keys, killed before every step of each
/// direction; each recovery is the starting point of the other direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_killed_at_every_step_boundary_loses_no_key() {
    let h = Harness::start(4).await;
    let three: Vec<Member> = h.members().into_iter().take(3).collect();
    h.converge_members(desired(3, 0), &three).await;
    let keys = 3_000;
    h.write_keys("c", keys).await;
    let four = h.members();
    let (mut out_done, mut in_done) = (None, None);
    let mut at = 0;
    while out_done.is_none() || in_done.is_none() {
        if out_done.is_none() && !killed_at(&h, at, desired(4, 0), &four).await {
            out_done = Some(at);
        }
        recovers(&h, "scale-out 3->4", at, desired(4, 0), &four, keys).await;
        if in_done.is_none() && !killed_at(&h, at, desired(3, 0), &three).await {
            in_done = Some(at);
        }
        recovers(&h, "scale-in 4->3", at, desired(3, 0), &three, keys).await;
        at += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "scale-out 3->4: killed at each of {} step boundaries; scale-in 4->3: each of {}; {keys} keys kept every time",
        out_done.unwrap_or(0),
        in_done.unwrap_or(0)
    );
}

/// Failover handling: a master dies; the run that promotes its replica, forgets it and
/// attaches a fresh node is killed before every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_handling_killed_at_every_step_boundary_recovers() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    let keys = 2_000;
    h.write_keys("c", keys).await;
    let mut at = 0;
    loop {
        // Replicas in sync, then a master dies and a fresh node stands by.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = h.master_indexes().await[0];
        h.remove(victim).await;
        h.add_node().await;
        let members = h.members();
        let killed = killed_at(&h, at, desired(3, 1), &members).await;
        recovers(&h, "failover", at, desired(3, 1), &members, keys).await;
        h.assert_topology(3, 1).await;
        if !killed {
            break;
        }
        at += 1;
    }
    println!("failover 3x1: killed at each of {at} step boundaries, recovered every time");
    assert!(at > 1, "failover handling ran only {at} steps");
}
