//! Slot migration with keys: scale masters out and in with every key kept (strings, hashes,
//! sets, TTLs), with a cluster client writing throughout, and interrupted at random points.
use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, PASSWORD};
use kredis_engine::admin::Admin;
use kredis_engine::model::{NodeAddr, Slot};
use kredis_engine::plan::{Desired, Policy};
use kredis_engine::reconcile::converge;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;

/// Writes `n` keys of each kind: strings, hashes, sets and strings with a TTL.
async fn write_mixed(h: &Harness, n: usize) {
    h.write_keys("s", n).await;
    let view = h.view().await;
    for kind in ["h", "set", "ttl"] {
        let mut by_owner: std::collections::BTreeMap<NodeAddr, Vec<usize>> = Default::default();
        for i in 0..n {
            let key = format!("{kind}:{i}");
            let owner = view
                .owner_of(Slot::for_key(key.as_bytes()))
                .unwrap_or_else(|| panic!("no owner"));
            by_owner
                .entry(
                    view.nodes[owner]
                        .addr
                        .clone()
                        .unwrap_or_else(|| panic!("no addr")),
                )
                .or_default()
                .push(i);
        }
        for (addr, idx) in by_owner {
            let c = h.admin.node(&addr).await.unwrap_or_else(|e| panic!("{e}"));
            for chunk in idx.chunks(1000) {
                let futs = chunk.iter().map(|&i| {
                    let key = format!("{kind}:{i}");
                    let mut cmd = match kind {
                        "h" => redis::cmd("HSET"),
                        "set" => redis::cmd("SADD"),
                        _ => redis::cmd("SET"),
                    };
                    match kind {
                        "h" => cmd.arg(&key).arg("a").arg(i).arg("b").arg("x"),
                        "set" => cmd.arg(&key).arg(i).arg("y").arg("z"),
                        _ => cmd.arg(&key).arg(i).arg("EX").arg(3600),
                    };
                    c.raw::<redis::Value>("WRITE", cmd)
                });
                for r in futures::future::join_all(futs).await {
                    r.unwrap_or_else(|e| panic!("{e:#}"));
                }
            }
        }
    }
}

/// Reads every mixed key through a cluster client and checks type, value and TTL.
async fn check_mixed(addr: &NodeAddr, n: usize) {
    let client = cluster_client(addr);
    let mut con = client
        .get_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut bad = Vec::new();
    for i in 0..n {
        let s: Option<String> = con
            .get(format!("s:{i}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if s != Some(format!("value:{i}")) {
            bad.push(format!("s:{i}"));
        }
        let h: Option<String> = con
            .hget(format!("h:{i}"), "a")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if h != Some(i.to_string()) {
            bad.push(format!("h:{i}"));
        }
        let m: bool = con
            .sismember(format!("set:{i}"), i)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if !m {
            bad.push(format!("set:{i}"));
        }
        let ttl: i64 = con
            .ttl(format!("ttl:{i}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if !(1..=3600).contains(&ttl) {
            bad.push(format!("ttl:{i} ttl={ttl}"));
        }
        if bad.len() > 10 {
            break;
        }
    }
    assert!(bad.is_empty(), "missing or wrong: {bad:?}");
}

fn cluster_client(addr: &NodeAddr) -> redis::cluster::ClusterClient {
    redis::cluster::ClusterClientBuilder::new(vec![format!("redis://{}:{}", addr.host, addr.port)])
        .password(PASSWORD)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_3_5_3_keep_every_key() {
    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    let n = 50_000; // x4 kinds = 200,000 keys
    write_mixed(&h, n).await;
    assert_eq!(h.total_keys().await, 4 * n as u64);
    h.add_node().await;
    h.add_node().await;
    h.converge(5, 0).await;
    h.assert_topology(5, 0).await;
    assert_eq!(h.total_keys().await, 4 * n as u64);
    check_mixed(&h.addr(0), n).await;

    let report = h.converge(3, 0).await;
    assert_eq!(report.released.len(), 2, "{:?}", report.released);
    h.remove_released(&report.released).await;
    h.assert_topology(3, 0).await;
    assert_eq!(h.total_keys().await, 4 * n as u64);
    let first = h.members()[0].addr.clone();
    check_mixed(&first, n).await;
}

/// Scale-out while a cluster client writes and reads: no command fails and every
/// acknowledged write is readable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_under_client_load_loses_nothing() {
    let mut h = Harness::start(6).await;
    h.converge(3, 1).await;
    h.write_keys("pre", 20_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let addr = h.addr(0);
    let load = {
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        tokio::spawn(async move {
            let client = cluster_client(&addr);
            let mut con = client
                .get_async_connection()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("live:{i}");
                let r: Result<(), _> = con.set(&key, i).await;
                match r {
                    Ok(()) => acked.store(i + 1, Ordering::Relaxed),
                    Err(e) => errors
                        .lock()
                        .map(|mut v| v.push(format!("SET {key}: {e}")))
                        .unwrap_or(()),
                }
                let g: Result<Option<String>, _> = con.get(format!("pre:{}", i % 20_000)).await;
                if let Err(e) = g {
                    errors
                        .lock()
                        .map(|mut v| v.push(format!("GET: {e}")))
                        .unwrap_or(());
                }
                i += 1;
            }
        })
    };
    for _ in 0..2 {
        h.add_node().await;
    }
    h.converge(4, 1).await;
    h.assert_topology(4, 1).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap_or_else(|e| panic!("{e}"));
    let errors = errors.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let n = acked.load(Ordering::Relaxed);
    assert!(n > 100, "the client made progress ({n} writes)");
    let client = cluster_client(&h.addr(0));
    let mut con = client
        .get_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        let v: Option<u64> = con
            .get(format!("live:{i}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, Some(i), "acknowledged write live:{i} lost");
    }
    assert!(h.missing_keys("pre", 20_000).await.is_empty());
}

/// The migrating task is killed (its future dropped, connections closed) at random points;
/// the next converge finishes or repairs, with no key lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_migrations_resume_without_loss() {
    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    let n = 5_000;
    h.write_keys("int", n).await;
    h.add_node().await;
    let seeds = 20;
    for seed in 0..seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let masters = if seed % 2 == 0 { 4 } else { 3 };
        let members = if masters == 4 {
            h.members()
        } else {
            h.members().into_iter().take(3).collect()
        };
        let desired = Desired {
            masters,
            replicas_per_master: 0,
        };
        // Dropping the future mid-await is what killing the controller does to the engine:
        // in-flight commands are abandoned and connections close. The killed engine has its
        // own connection pool, dropped with it: on the harness' shared pool, redis-rs would
        // go on delivering the commands it had queued (a wave of SETSLOTs, MIGRATEs queued
        // on a source) while the next engine works, which no killed process can do.
        let delay = Duration::from_millis(rng.random_range(20..600));
        let policy = Policy::default();
        let killed = Admin::new(h.admin.config().clone());
        tokio::select! {
            _ = converge(&killed, &h.options, &desired, &members, &policy) => {}
            _ = tokio::time::sleep(delay) => {}
        }
        drop(killed);
        if let Err(e) = h.try_converge(desired, &members).await {
            let v = h.view_of(&[0, 1, 2, 3]).await;
            for (id, o) in &v.observed {
                eprintln!(
                    "OBS {} {} alone={} entries={:?}",
                    id.short(),
                    o.addr,
                    o.is_alone(),
                    o.entries
                        .iter()
                        .map(|e| format!(
                            "{}:{:?}:{:?}:{}",
                            e.id.short(),
                            e.addr,
                            e.flags,
                            e.slots.len()
                        ))
                        .collect::<Vec<_>>()
                );
            }
            eprintln!(
                "members {:?}",
                members
                    .iter()
                    .map(|m| m.addr.to_string())
                    .collect::<Vec<_>>()
            );
            panic!("seed {seed}: {}", common::chain(&e));
        }
        let view = h.view_of(&(0..masters).collect::<Vec<_>>()).await;
        assert!(view.is_converged(), "seed {seed}: {:?}", view.problems());
        let missing = h.missing_keys("int", n).await;
        assert!(
            missing.is_empty(),
            "seed {seed}: {} keys missing, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        assert_eq!(
            h.total_keys().await,
            n as u64,
            "seed {seed}: keys duplicated"
        );
        if masters == 3 {
            // The drained fourth node was detached; it rejoins (under a new id) next time.
            let alone = h.view_of(&[3]).await;
            assert!(
                alone.observed.values().all(|o| o.is_alone() && o.keys == 0),
                "seed {seed}"
            );
        }
    }
}

/// With members pinned to shards (as the operator labels pods), removing a shard drains its
/// master, then detaches and releases every member of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_shard_removed_is_drained_and_released() {
    let mut h = Harness::start(4).await;
    let pinned = |h: &Harness| {
        h.members()
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                m.shard = Some(i);
                m
            })
            .collect::<Vec<_>>()
    };
    h.converge_members(
        Desired {
            masters: 4,
            replicas_per_master: 0,
        },
        &pinned(&h),
    )
    .await;
    h.write_keys("pin", 5000).await;
    let report = h
        .converge_members(
            Desired {
                masters: 3,
                replicas_per_master: 0,
            },
            &pinned(&h),
        )
        .await;
    assert_eq!(report.released, vec!["n3".to_owned()]);
    h.remove(3).await;
    h.assert_topology(3, 0).await;
    assert!(h.missing_keys("pin", 5000).await.is_empty());
}

/// The moves of a plan run concurrently (one queue of waves per source). When one target runs
/// out of memory mid-plan, the move into it fails with OutOfMemory naming it, the other moves
/// stop at a wave boundary or finish (and are rolled back), every key stays on some master,
/// and the next converge repairs the open slots and finishes the scale-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_one_target_out_of_memory() {
    use kredis_engine::exec::{Executor, StepError};
    use kredis_engine::migrate::MigrateError;
    use kredis_engine::plan::{plan, Step};

    let mut h = Harness::start(3).await;
    h.converge(3, 0).await;
    let n = 20_000;
    h.write_keys("oom", n).await;
    h.add_node().await;
    h.add_node().await;
    let desired = Desired {
        masters: 5,
        replicas_per_master: 0,
    };
    let members = h.members();
    let mut options = h.options.clone();
    // Small waves: several per move, so the stop at a wave boundary is exercised.
    options.migration.slots_in_flight = 32;
    let executor = Executor::new(h.admin.clone(), options);
    // Join the new nodes; the plan after that moves slots.
    let moves = loop {
        let view = h.view().await;
        let p =
            plan(&desired, &members, &view, &Policy::default()).unwrap_or_else(|e| panic!("{e}"));
        if p.steps.iter().any(|s| matches!(s, Step::MoveSlots { .. })) {
            break p;
        }
        assert!(!p.is_empty(), "nothing to do before the moves");
        executor
            .execute(&p)
            .await
            .unwrap_or_else(|e| panic!("{}", common::chain(&e)));
    };
    let targets: std::collections::BTreeSet<NodeAddr> = moves
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::MoveSlots { to, .. } => Some(to.addr.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 2, "{:?}", moves.steps);
    let full = targets
        .iter()
        .next_back()
        .cloned()
        .unwrap_or_else(|| panic!("no target"));
    let set_maxmemory = |bytes: &'static str| {
        let admin = h.admin.clone();
        let addr = full.clone();
        async move {
            let c = admin.node(&addr).await.unwrap_or_else(|e| panic!("{e}"));
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("SET").arg("maxmemory").arg(bytes);
            c.raw::<redis::Value>("CONFIG", cmd)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    set_maxmemory("1").await;
    let err = executor
        .execute(&moves)
        .await
        .err()
        .unwrap_or_else(|| panic!("a move into a full target must fail"));
    let text = common::chain(&err);
    assert!(
        matches!(&err.step, Step::MoveSlots { to, .. } if to.addr == full),
        "{text}"
    );
    assert!(
        matches!(
            &err.source,
            StepError::Migrate(MigrateError::OutOfMemory { to, .. }) if to == &full
        ),
        "{text}"
    );
    assert!(
        text.contains(&full.to_string()) && text.contains("out of memory"),
        "{text}"
    );
    for (_, step, _) in &err.also_failed {
        assert!(matches!(step, Step::MoveSlots { .. }), "{text}");
    }
    assert!(
        err.rollback
            .undone
            .iter()
            .all(|s| matches!(s, Step::MoveSlots { .. })),
        "{text}"
    );
    assert!(err.rollback.failed.is_empty(), "{text}");
    assert_eq!(
        h.total_keys().await,
        n as u64,
        "keys lost or duplicated: {text}"
    );
    set_maxmemory("0").await;
    h.converge(5, 0).await;
    h.assert_topology(5, 0).await;
    let missing = h.missing_keys("oom", n).await;
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(h.total_keys().await, n as u64);
}
