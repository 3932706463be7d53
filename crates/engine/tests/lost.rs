//! Losing masters: a shard with no surviving copy (policy decides), quorum lost, and the
//! guards that keep data from being reset away.
use crate::common;

use common::Harness;
use kredis_engine::exec::{Ctx, Executor, StepError};
use kredis_engine::model::Role;
use kredis_engine::plan::{Desired, NodeRef, Note, Policy, Step};
use kredis_engine::reconcile::converge;

/// PITFALLS 6: a shard lost with every copy is served again, empty, by a fresh node whose
/// epoch is raised above the cluster's, when the policy allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_6_lost_shard_recovered_with_higher_epoch() {
    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    h.write_keys("l", 3000).await;
    let victim = h.master_indexes().await[0];
    let before = h.view().await;
    let dead = before
        .nodes
        .values()
        .find(|n| n.addr.as_ref() == Some(&h.addr(victim)))
        .cloned()
        .unwrap_or_else(|| panic!("victim not in view"));
    let lost_slots = dead.slots.clone();
    h.remove(victim).await;
    h.add_node().await;
    h.converge(3, 0).await;
    let view = h.assert_topology(3, 0).await;
    let new = view
        .nodes
        .values()
        .find(|n| n.slots == lost_slots)
        .unwrap_or_else(|| panic!("lost slots not served as one shard"));
    // Its claim must beat any stale gossip about the dead owner.
    assert!(
        new.config_epoch > dead.config_epoch,
        "the rebuilt shard must win with a higher epoch than the dead owner's ({} <= {})",
        new.config_epoch,
        dead.config_epoch
    );
    // Keys of the surviving shards are all there; the lost shard's are gone (no copy existed).
    let missing = h.missing_keys("l", 3000).await;
    assert!(!missing.is_empty() && missing.len() < 3000);
}

/// With `recoverLostSlots: false` the slots stay uncovered and the plan says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_slots_stay_uncovered_when_policy_forbids() {
    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    let victim = h.master_indexes().await[0];
    h.remove(victim).await;
    h.add_node().await;
    // The cluster cannot converge without those slots; do not wait the full minute for it.
    h.options.converge_timeout = std::time::Duration::from_secs(5);
    let policy = Policy {
        recover_lost_slots: false,
    };
    let desired = Desired {
        masters: 3,
        replicas_per_master: 0,
    };
    let _ = converge(&h.admin, &h.options, &desired, &h.members(), &policy).await;
    let view = h.view().await;
    assert!(
        !view.uncovered_slots().is_empty(),
        "slots must not be served empty against the policy"
    );
    let p = kredis_engine::plan::plan(&desired, &h.members(), &view, &policy)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.notes.iter().any(|n| matches!(n, Note::LostSlots { .. })),
        "{:?}",
        p.notes
    );
}

/// PITFALLS 15: with half or more of the masters gone, FORCE cannot win a vote; TAKEOVER
/// promotes the replicas and every slot is served again with no key lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_15_quorum_lost_uses_takeover() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("q", 2000).await;
    let masters = h.master_indexes().await;
    h.remove(masters[0]).await;
    h.remove(masters[1]).await;
    h.converge_members(
        Desired {
            masters: 3,
            replicas_per_master: 1,
        },
        &h.members(),
    )
    .await;
    let view = h.view().await;
    assert!(view.uncovered_slots().is_empty());
    assert_eq!(
        view.nodes
            .values()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
            .count(),
        3
    );
    assert!(h.missing_keys("q", 2000).await.is_empty());
}

/// PITFALLS 5, 23: detaching a master that still holds slots or keys is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_5_detach_refuses_a_master_with_data() {
    let h = Harness::start(3).await;
    h.converge(3, 0).await;
    let view = h.view().await;
    let m = view
        .nodes
        .values()
        .next()
        .unwrap_or_else(|| panic!("no node"));
    let node = NodeRef {
        id: m.id.clone(),
        addr: m.addr.clone().unwrap_or_else(|| panic!("no addr")),
        bus_port: 0,
    };
    let scope: Vec<NodeRef> = view
        .observed
        .iter()
        .map(|(id, o)| NodeRef {
            id: id.clone(),
            addr: o.addr.clone(),
            bus_port: 0,
        })
        .collect();
    let ctx = Ctx::new(
        h.admin.clone(),
        scope,
        h.options.clone(),
        Default::default(),
    );
    let err = Executor::run_step(&ctx, &Step::Detach { node })
        .await
        .err()
        .unwrap_or_else(|| panic!("must refuse"));
    assert!(matches!(err, StepError::Refused { .. }), "{err}");
    h.assert_topology(3, 0).await;
}

/// PITFALLS 20: a big key (a hash of 100,000 fields) moves intact during a scale-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_20_big_key_moves_intact() {
    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    let view = h.view().await;
    // A key in the highest slots of a master: the ones a scale-out moves.
    let key = (0..100_000)
        .map(|i| format!("big:{i}"))
        .find(|k| {
            let slot = kredis_engine::model::Slot::for_key(k.as_bytes());
            view.nodes.values().any(|n| {
                n.slots
                    .ranges()
                    .last()
                    .is_some_and(|r| slot.get() + 200 > r.end().get() && n.slots.contains(slot))
            })
        })
        .unwrap_or_else(|| panic!("no key in a moving slot"));
    let owner = view
        .owner_of(kredis_engine::model::Slot::for_key(key.as_bytes()))
        .and_then(|id| view.nodes[id].addr.clone())
        .unwrap_or_else(|| panic!("no owner"));
    let c = h.admin.node(&owner).await.unwrap_or_else(|e| panic!("{e}"));
    for chunk in 0..100 {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key);
        for f in 0..1000 {
            cmd.arg(format!("f{}", chunk * 1000 + f))
                .arg("0123456789abcdef0123456789abcdef");
        }
        c.raw::<redis::Value>("HSET", cmd)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    h.add_node().await;
    h.converge(4, 0).await;
    h.assert_topology(4, 0).await;
    let view = h.view().await;
    let owner = view
        .owner_of(kredis_engine::model::Slot::for_key(key.as_bytes()))
        .and_then(|id| view.nodes[id].addr.clone())
        .unwrap_or_else(|| panic!("no owner"));
    let c = h.admin.node(&owner).await.unwrap_or_else(|e| panic!("{e}"));
    let mut hlen = redis::cmd("HLEN");
    hlen.arg(&key);
    let n: u64 = c.raw("HLEN", hlen).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 100_000);
}
