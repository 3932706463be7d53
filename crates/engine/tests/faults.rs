//! Bad input and faults: each gets a typed error naming the node, touches nothing it should
//! not, and leaves the cluster recoverable by the next plan.
use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{chain, Harness, PASSWORD};
use kredis_engine::admin::{Admin, AdminConfig, AdminError, Credentials, NodeClient};
use kredis_engine::exec::{ExecOptions, Executor, StepError};
use kredis_engine::local::{LocalNode, LocalNodeConfig};
use kredis_engine::model::NodeAddr;
use kredis_engine::plan::{plan, Desired, Member, Note, Plan, Policy, Step};
use kredis_engine::reconcile::ConvergeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_typed_auth_error() {
    let h = Harness::start(1).await;
    let config = Arc::new(AdminConfig {
        credentials: Credentials::password("hunter2-not-it"),
        ..AdminConfig::default()
    });
    let err = NodeClient::connect(&h.addr(0), config)
        .await
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(matches!(err, AdminError::Auth { .. }), "{err:?}");
    assert_eq!(err.category(), "auth");
    assert!(err.to_string().contains(&h.addr(0).to_string()), "{err}");
    assert!(
        !format!("{err:?}{err:#}").contains("hunter2"),
        "the password must never be printed"
    );
    let none = Arc::new(AdminConfig::default());
    let err = match NodeClient::connect(&h.addr(0), none).await {
        Ok(c) => c
            .cluster_nodes()
            .await
            .err()
            .unwrap_or_else(|| panic!("must fail")),
        Err(e) => e,
    };
    assert!(
        matches!(err, AdminError::Auth { .. }),
        "missing password: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_is_reported_and_waited_for() {
    let mut h = Harness::start(3).await;
    // A member whose process is gone: connection refused, typed, named.
    let dead = h.addr(2);
    h.node_mut(2).kill().await;
    let err = h
        .admin
        .node(&dead)
        .await
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(
        err.is_connection_error() && err.to_string().contains(&dead.to_string()),
        "{err}"
    );
    // The harness still lists the killed node as a member, like a pod whose process died.
    let members = h.members();
    assert!(members.iter().any(|m| m.addr == dead));
    let err = h
        .try_converge(
            Desired {
                masters: 3,
                replicas_per_master: 0,
            },
            &members,
        )
        .await
        .err();
    match err {
        Some(ConvergeError::Waiting(reason)) => assert!(reason.contains("unreachable"), "{reason}"),
        other => panic!("expected to wait for the member, got {other:?}"),
    }
    // Nothing was touched: the reachable nodes are still empty and alone.
    let view = h.view_of(&[0, 1]).await;
    assert!(view.observed.values().all(|o| o.is_alone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_cluster_enabled_is_a_typed_error() {
    let node = LocalNode::start(LocalNodeConfig {
        cluster_enabled: false,
        password: Some(PASSWORD.into()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let admin = Admin::new(AdminConfig {
        credentials: Credentials::password(PASSWORD),
        ..AdminConfig::default()
    });
    let c = admin
        .node(node.addr())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = c
        .cluster_nodes()
        .await
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(
        matches!(err, AdminError::NotClusterEnabled { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not cluster-enabled"), "{err}");
}

/// A node that holds data, or belongs to another cluster, is never joined or reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_nodes_are_left_alone() {
    let h = Harness::start(3).await;
    h.converge(3, 0).await;
    let other = Harness::start(1).await;
    other.converge(1, 0).await;
    other.write_keys("foreign", 50).await;
    let mut members = h.members();
    members.push(Member {
        name: "stranger".into(),
        ..other.member(0)
    });
    let seeds: Vec<NodeAddr> = members.iter().map(|m| m.addr.clone()).collect();
    let view = kredis_engine::observe::observe(&h.admin, &seeds).await;
    let p = kredis_engine::plan::plan(
        &Desired {
            masters: 3,
            replicas_per_master: 1,
        },
        &members,
        &view,
        &Policy::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.notes
            .iter()
            .any(|n| matches!(n, Note::ForeignNode { member, .. } if member == "stranger")),
        "{:?}",
        p.notes
    );
    assert!(
        !p.steps
            .iter()
            .any(|s| s.to_string().contains(&other.addr(0).to_string())),
        "{:?}",
        p.steps
    );
    // The stranger still serves all its slots and keys.
    assert_eq!(other.total_keys().await, 50);
}

/// A node frozen mid-step (SIGSTOP) fails the step with a timeout naming the node; once it
/// thaws, the next plan converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_mid_step_names_the_node_and_recovers() {
    let mut h = Harness::start(4).await;
    h.options = ExecOptions {
        meet_timeout: Duration::from_secs(3),
        ..ExecOptions::default()
    };
    h.converge(3, 0).await;
    let view = h.view().await;
    let members = h.members();
    let p = plan(
        &Desired {
            masters: 3,
            replicas_per_master: 0,
        },
        &members,
        &view,
        &Policy::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The fourth node is surplus for 3x0 and stays alone; make it join as a replica instead.
    let p2 = plan(
        &Desired {
            masters: 3,
            replicas_per_master: 1,
        },
        &members,
        &view,
        &Policy::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(p.steps.is_empty());
    let meet = p2
        .steps
        .iter()
        .find(|s| matches!(s, Step::Meet { .. }))
        .cloned()
        .unwrap_or_else(|| panic!("{:?}", p2.steps));
    let Step::Meet { node, .. } = &meet else {
        unreachable!()
    };
    let frozen = h.index_of(&node.addr);
    assert!(h.node(frozen).signal("STOP"));
    let executor = Executor::new(h.admin.clone(), h.options.clone());
    let only_meet = Plan {
        steps: vec![meet.clone()],
        scope: p2.scope.clone(),
        ..Plan::default()
    };
    let err = executor
        .execute(&only_meet)
        .await
        .err()
        .unwrap_or_else(|| panic!("must time out"));
    let text = chain(&err);
    assert!(
        matches!(
            err.source,
            StepError::Admin(AdminError::Timeout { .. }) | StepError::Timeout { .. }
        ),
        "{text}"
    );
    assert!(text.contains(&node.addr.to_string()), "{text}");
    assert!(h.node(frozen).signal("CONT"));
    h.converge(3, 1).await;
    let view = h.view().await;
    assert!(view.is_converged(), "{:?}", view.problems());
}

/// Fewer workers than a shard needs: the plan is still valid and reports what it could not
/// honour.
#[test]
fn fewer_workers_than_a_shard_needs_is_reported() {
    use kredis_engine::model::ClusterView;
    // Two fresh members on one worker, 1 master x 1 replica: both must share it.
    let members: Vec<Member> = (0..2)
        .map(|i| Member {
            name: format!("m{i}"),
            addr: NodeAddr::new("127.0.0.1", 7000 + i),
            bus_port: 17000 + i,
            worker: "only".into(),
            shard: None,
            terminating: false,
        })
        .collect();
    let view = common_view::fresh(&members);
    let p = plan(
        &Desired {
            masters: 1,
            replicas_per_master: 1,
        },
        &members,
        &view,
        &Policy::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(p.steps.iter().any(|s| matches!(s, Step::Replicate { .. })));
    assert!(
        p.notes
            .iter()
            .any(|n| matches!(n, Note::AntiAffinityUnmet { worker, .. } if worker == "only")),
        "{:?}",
        p.notes
    );
    let _ = ClusterView::default();
}

mod common_view {
    use kredis_engine::model::{
        parse_cluster_nodes, ClusterView, NodeObservation, ReplicationInfo,
    };
    use kredis_engine::plan::Member;

    /// A view of fresh nodes (ids derived from the port).
    pub fn fresh(members: &[Member]) -> ClusterView {
        let obs = members
            .iter()
            .map(|m| {
                let id = format!("{:040x}", m.addr.port);
                let line = format!(
                    "{id} {}:{}@{} myself,master - 0 0 0 connected",
                    m.addr.host, m.addr.port, m.bus_port
                );
                NodeObservation {
                    addr: m.addr.clone(),
                    entries: parse_cluster_nodes(&line).unwrap_or_else(|e| panic!("{e}")),
                    keys: 0,
                    replication: ReplicationInfo::default(),
                    cluster_state_ok: false,
                    current_epoch: 0,
                }
            })
            .collect();
        ClusterView::build(obs, Default::default())
    }
}
