//! PITFALLS 17, 19, 21: every open-slot case, created by hand on real nodes, is repaired by
//! the next plan with no key lost and nothing overwritten.
use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{chain, Harness, PASSWORD};
use kredis_engine::admin::NodeClient;
use kredis_engine::model::{NodeAddr, NodeId, Slot};
use kredis_engine::plan::Desired;

const KEYS: usize = 200;

struct Setup {
    h: Harness,
    slot: Slot,
    owner: (NodeId, NodeClient),
    target: (NodeId, NodeClient),
}

fn key(i: usize) -> String {
    format!("{{open}}:{i}")
}

async fn setup() -> Setup {
    let h = Harness::start(3).await;
    h.converge(3, 0).await;
    let slot = Slot::for_key(key(0).as_bytes());
    let view = h.view().await;
    let owner_id = view
        .owner_of(slot)
        .cloned()
        .unwrap_or_else(|| panic!("no owner"));
    let target_id = view
        .nodes
        .keys()
        .find(|id| **id != owner_id)
        .cloned()
        .unwrap_or_else(|| panic!("no target"));
    let addr = |id: &NodeId| {
        view.nodes[id]
            .addr
            .clone()
            .unwrap_or_else(|| panic!("no addr"))
    };
    let owner = h
        .admin
        .node(&addr(&owner_id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let target = h
        .admin
        .node(&addr(&target_id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..KEYS {
        let mut set = redis::cmd("SET");
        set.arg(key(i)).arg(format!("v{i}"));
        owner
            .raw::<redis::Value>("SET", set)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Setup {
        h,
        slot,
        owner: (owner_id, owner),
        target: (target_id, target),
    }
}

impl Setup {
    async fn keys_on(&self, c: &NodeClient) -> Vec<Vec<u8>> {
        c.keys_in_slot(self.slot, 10_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn move_some(&self, n: usize) {
        let keys = self.keys_on(&self.owner.1).await;
        self.owner
            .1
            .migrate(
                self.target.1.addr(),
                &keys[..n],
                std::time::Duration::from_secs(5),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Every key readable from the slot's owner, exactly once across the masters.
    async fn assert_all_keys(&self) {
        let view = self.h.view().await;
        assert!(
            view.open_slots().is_empty(),
            "open slots left: {:?}",
            view.problems()
        );
        let owner = view
            .owner_of(self.slot)
            .unwrap_or_else(|| panic!("slot unowned"));
        let addr = view.nodes[owner]
            .addr
            .clone()
            .unwrap_or_else(|| panic!("no addr"));
        let c = self
            .h
            .admin
            .node(&addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut total = 0;
        for obs in view.observed.values() {
            let n = self
                .h
                .admin
                .node(&obs.addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            total += n
                .count_keys_in_slot(self.slot)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(total, KEYS as u64, "keys duplicated or lost");
        for i in 0..KEYS {
            let mut get = redis::cmd("GET");
            get.arg(key(i));
            let v: Option<String> = c.raw("GET", get).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v, Some(format!("v{i}")), "key {}", key(i));
        }
        self.h.redis_cli_check().await;
    }
}

/// Runs commands on one connection with redis-cli (ASKING must precede the write).
fn redis_cli(addr: &NodeAddr, script: &str) {
    let mut child = Command::new("redis-cli")
        .args([
            "-h",
            &addr.host,
            "-p",
            &addr.port.to_string(),
            "-a",
            PASSWORD,
            "--no-auth-warning",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(child.wait().unwrap_or_else(|e| panic!("{e}")).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_17_interrupted_move_is_finished() {
    let s = setup().await;
    s.target
        .1
        .setslot_importing(s.slot, &s.owner.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.owner
        .1
        .setslot_migrating(s.slot, &s.target.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.move_some(KEYS / 2).await;
    s.h.converge(3, 0).await;
    s.assert_all_keys().await;
}

/// PITFALLS 21: the target lost its IMPORTING state (e.g. it failed over): re-applied, finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitfall_21_migrating_without_importing() {
    let s = setup().await;
    s.target
        .1
        .setslot_importing(s.slot, &s.owner.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.owner
        .1
        .setslot_migrating(s.slot, &s.target.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.move_some(KEYS / 4).await;
    s.target
        .1
        .setslot_stable(s.slot)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.h.converge(3, 0).await;
    s.assert_all_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_without_keys_is_closed() {
    let s = setup().await;
    s.target
        .1
        .setslot_importing(s.slot, &s.owner.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.h.converge(3, 0).await;
    s.assert_all_keys().await;
}

/// Keys written to an importing node (through ASKING) go back to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_with_keys_returns_them_to_the_owner() {
    let s = setup().await;
    // Move some keys there by hand, then leave only the importing marker behind.
    s.target
        .1
        .setslot_importing(s.slot, &s.owner.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.owner
        .1
        .setslot_migrating(s.slot, &s.target.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.move_some(KEYS / 2).await;
    s.owner
        .1
        .setslot_stable(s.slot)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.h.converge(3, 0).await;
    s.assert_all_keys().await;
}

/// PITFALLS 19: a key present on both ends is never overwritten: the repair refuses and says
/// what to resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_copies_are_reported_not_overwritten() {
    let s = setup().await;
    s.target
        .1
        .setslot_importing(s.slot, &s.owner.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    redis_cli(
        s.target.1.addr(),
        &format!("ASKING\nSET {} other\n", key(0)),
    );
    let err =
        s.h.try_converge(
            Desired {
                masters: 3,
                replicas_per_master: 0,
            },
            &s.h.members(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("conflict must not be resolved silently"));
    let text = chain(&err);
    assert!(text.contains("resolve them by hand"), "{text}");
    let mut get = redis::cmd("GET");
    get.arg(key(0));
    let v: Option<String> = s
        .owner
        .1
        .raw("GET", get)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.as_deref(), Some("v0"), "owner's copy untouched");
}
