//! How long one `ClusterView::build` takes (the operator builds a few per reconcile pass, and
//! an idle operator with many clusters spends most of its CPU there).
//!
//! ```sh
//! cargo run --release -p kredis-engine --example view_bench            # 3 masters x 1 replica
//! cargo run --release -p kredis-engine --example view_bench -- 10 2    # 10 masters x 2 replicas
//! ```
//!
//! Prints microseconds per build for a settled cluster (every node agrees) and for one in which
//! a replica holds a stale slot map (the disagreement path).

use std::collections::BTreeMap;
use std::time::Instant;

use kredis_engine::model::{
    parse_cluster_nodes, ClusterView, NodeAddr, NodeObservation, ReplicationInfo, SLOT_COUNT,
};

fn id(i: usize) -> String {
    format!("{i:040x}")
}

/// `CLUSTER NODES` as node `me` would print it; `shift` moves slot boundaries (a stale map).
fn nodes_text(masters: usize, replicas: usize, me: usize, shift: u16) -> String {
    let per = SLOT_COUNT / u16::try_from(masters).unwrap_or(1);
    let mut out = String::new();
    for m in 0..masters {
        let mu = u16::try_from(m).unwrap_or(0);
        let start = (per * mu).saturating_sub(if m > 0 { shift } else { 0 });
        let end = if m + 1 == masters {
            SLOT_COUNT - 1
        } else {
            (per * (mu + 1) - 1).saturating_sub(shift)
        };
        let myself = if me == m { "myself," } else { "" };
        out.push_str(&format!(
            "{} 127.0.0.1:{}@{} {myself}master - 0 0 {} connected {start}-{end}\n",
            id(m),
            7000 + m,
            17000 + m,
            m + 1
        ));
        for r in 0..replicas {
            let n = masters + m * replicas + r;
            let myself = if me == n { "myself," } else { "" };
            out.push_str(&format!(
                "{} 127.0.0.1:{}@{} {myself}slave {} 0 0 {} connected\n",
                id(n),
                7000 + n,
                17000 + n,
                id(m),
                m + 1
            ));
        }
    }
    out
}

fn observations(masters: usize, replicas: usize, stale: bool) -> Vec<NodeObservation> {
    let total = masters * (1 + replicas);
    (0..total)
        .map(|me| {
            let shift = if stale && me == total - 1 { 100 } else { 0 };
            let text = nodes_text(masters, replicas, me, shift);
            NodeObservation {
                addr: NodeAddr::new("127.0.0.1", u16::try_from(7000 + me).unwrap_or(0)),
                entries: parse_cluster_nodes(&text).expect("parse"),
                keys: 0,
                replication: ReplicationInfo::default(),
                cluster_state_ok: true,
                current_epoch: u64::try_from(masters).unwrap_or(0),
            }
        })
        .collect()
}

fn time(label: &str, obs: &[NodeObservation]) {
    let rounds = 2000;
    let mut disagreements = 0;
    let started = Instant::now();
    for _ in 0..rounds {
        let view = ClusterView::build(obs.to_vec(), BTreeMap::new());
        disagreements = view.disagreements.len();
    }
    let per = started.elapsed() / rounds;
    println!("{label:>10}: {per:>10.1?} per build ({disagreements} disagreement(s))");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let masters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let replicas: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    println!("ClusterView::build, {masters} masters x {replicas} replica(s)");
    time("settled", &observations(masters, replicas, false));
    time("stale map", &observations(masters, replicas, true));
}
