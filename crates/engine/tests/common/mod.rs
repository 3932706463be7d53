//! Test harness: real redis-server processes on free loopback ports, killed on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kredis_engine::admin::{Admin, AdminConfig, Credentials};
use kredis_engine::exec::ExecOptions;
use kredis_engine::local::{throwaway_tls, LocalNode, LocalNodeConfig};
use kredis_engine::model::{ClusterView, NodeAddr, Role, Slot};
use kredis_engine::observe::observe;
use kredis_engine::plan::{Desired, Member, Policy};
use kredis_engine::reconcile::{converge, ConvergeError, Report};

pub const PASSWORD: &str = "s3cret-test-pass";

/// Logs go to the test's captured output, which is printed only when it fails: by default the
/// engine's and operator's decisions (info), so a failure in CI shows what they did.
/// `RUST_LOG` overrides.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kredis_engine=info,kredis_operator=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A set of local nodes; index = member name `n<i>`, worker `w<i % workers>`.
pub struct Harness {
    pub nodes: Vec<Option<LocalNode>>,
    pub admin: Admin,
    pub config: LocalNodeConfig,
    pub workers: usize,
    pub options: ExecOptions,
}

impl Harness {
    pub async fn start(n: usize) -> Harness {
        Self::start_with(n, Some(PASSWORD)).await
    }

    pub async fn start_with(n: usize, password: Option<&str>) -> Harness {
        Self::start_config(
            n,
            LocalNodeConfig {
                password: password.map(str::to_owned),
                ..LocalNodeConfig::default()
            },
        )
        .await
    }

    /// `n` TLS-only nodes (with the password), certificates from a throwaway CA.
    pub async fn start_tls(n: usize) -> Harness {
        let tls = throwaway_tls(&["127.0.0.1"]).unwrap_or_else(|e| panic!("{e}"));
        Self::start_config(
            n,
            LocalNodeConfig {
                password: Some(PASSWORD.into()),
                tls: Some(tls),
                ..LocalNodeConfig::default()
            },
        )
        .await
    }

    pub async fn start_config(n: usize, config: LocalNodeConfig) -> Harness {
        init_tracing();
        let admin = Admin::new(AdminConfig {
            credentials: Credentials {
                username: None,
                password: config.password.clone(),
            },
            tls: config.tls.clone(),
            ..AdminConfig::default()
        });
        let mut h = Harness {
            nodes: Vec::new(),
            admin,
            config,
            workers: 3,
            options: ExecOptions::default(),
        };
        for _ in 0..n {
            h.add_node().await;
        }
        h
    }

    pub async fn add_node(&mut self) -> usize {
        let node = LocalNode::start(self.config.clone())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    pub fn node(&self, i: usize) -> &LocalNode {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} was removed"))
    }

    pub fn addr(&self, i: usize) -> NodeAddr {
        self.node(i).addr().clone()
    }

    pub fn member(&self, i: usize) -> Member {
        let n = self.node(i);
        Member {
            name: format!("n{i}"),
            addr: n.addr().clone(),
            bus_port: n.bus_port(),
            worker: format!("w{}", i % self.workers),
            shard: None,
            terminating: false,
        }
    }

    /// Members for every live node.
    pub fn members(&self) -> Vec<Member> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .map(|i| self.member(i))
            .collect()
    }

    pub async fn converge_members(&self, desired: Desired, members: &[Member]) -> Report {
        match converge(
            &self.admin,
            &self.options,
            &desired,
            members,
            &Policy::default(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => panic!("converge failed: {}", chain(&e)),
        }
    }

    pub async fn try_converge(
        &self,
        desired: Desired,
        members: &[Member],
    ) -> Result<Report, ConvergeError> {
        converge(
            &self.admin,
            &self.options,
            &desired,
            members,
            &Policy::default(),
        )
        .await
    }

    pub async fn converge(&self, masters: usize, replicas: usize) -> Report {
        let members = self.members();
        self.converge_members(
            Desired {
                masters,
                replicas_per_master: replicas,
            },
            &members,
        )
        .await
    }

    pub async fn view(&self) -> ClusterView {
        let seeds: Vec<NodeAddr> = self.members().into_iter().map(|m| m.addr).collect();
        observe(&self.admin, &seeds).await
    }

    /// Kills node `i` and removes it from the members (like a pod that is gone).
    pub async fn remove(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Asserts the topology: `masters` masters each with all slots spread, `replicas` each.
    pub async fn assert_topology(&self, masters: usize, replicas: usize) -> ClusterView {
        let view = self.view().await;
        assert!(view.is_converged(), "not converged: {:?}", view.problems());
        let ms: Vec<_> = view
            .nodes
            .values()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
            .collect();
        assert_eq!(ms.len(), masters, "masters: {view:#?}");
        for m in &ms {
            let reps = view
                .nodes
                .values()
                .filter(|n| n.master.as_ref() == Some(&m.id))
                .count();
            assert_eq!(reps, replicas, "replicas of {}", m.id.short());
            let fair = 16384 / masters;
            assert!(
                m.slots.len() == fair || m.slots.len() == fair + 1,
                "master {} holds {} slots",
                m.id.short(),
                m.slots.len()
            );
        }
        assert_eq!(
            view.nodes.len(),
            masters * (1 + replicas),
            "extra nodes: {:?}",
            view.nodes.keys().collect::<Vec<_>>()
        );
        for obs in view.observed.values() {
            assert!(obs.cluster_state_ok);
        }
        self.redis_cli_check().await;
        view
    }

    /// `redis-cli --cluster check` must report OK with no warning or error.
    pub async fn redis_cli_check(&self) {
        let addr = self
            .members()
            .into_iter()
            .next()
            .map(|m| m.addr)
            .unwrap_or_else(|| panic!("no members"));
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("check").arg(addr.to_string());
        if let Some(pw) = &self.config.password {
            cmd.arg("-a").arg(pw).arg("--no-auth-warning");
        }
        if self.config.tls.is_some() {
            // The node wrote its certificate files into its directory.
            let dir = self.node(self.index_of(&addr)).dir().to_path_buf();
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(dir.join("ca.crt"))
                .arg("--cert")
                .arg(dir.join("tls.crt"))
                .arg("--key")
                .arg(dir.join("tls.key"));
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("redis-cli: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "redis-cli --cluster check failed:\n{text}"
        );
        assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERR]"),
            "{text}"
        );
    }

    /// Writes `n` string keys `key:<i>` = `value:<i>` through the owners of their slots.
    pub async fn write_keys(&self, prefix: &str, n: usize) {
        let view = self.view().await;
        let mut by_owner: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let key = format!("{prefix}:{i}");
            let owner = view
                .owner_of(Slot::for_key(key.as_bytes()))
                .unwrap_or_else(|| panic!("no owner for {key}"));
            let addr = view.nodes[owner]
                .addr
                .clone()
                .unwrap_or_else(|| panic!("owner has no address"));
            by_owner.entry(addr).or_default().push(i);
        }
        for (addr, keys) in by_owner {
            let c = self
                .admin
                .node(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for chunk in keys.chunks(1000) {
                // One SET per key, all in flight on the multiplexed connection: MSET would be
                // refused across slots in cluster mode.
                let futs = chunk.iter().map(|&i| {
                    let mut set = redis::cmd("SET");
                    set.arg(format!("{prefix}:{i}")).arg(format!("value:{i}"));
                    c.raw::<redis::Value>("SET", set)
                });
                for r in futures::future::join_all(futs).await {
                    r.unwrap_or_else(|e| panic!("SET failed: {e:#}"));
                }
            }
            // Let replicas catch up before the test injects faults.
            let mut wait = redis::cmd("WAIT");
            wait.arg(1).arg(1000);
            let _ = c.raw::<redis::Value>("WAIT", wait).await;
        }
    }

    /// Index of the member whose node is at `addr`.
    pub fn index_of(&self, addr: &NodeAddr) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].as_ref().is_some_and(|n| n.addr() == addr))
            .unwrap_or_else(|| panic!("no node at {addr}"))
    }

    /// Member indexes of the slot-owning masters.
    pub async fn master_indexes(&self) -> Vec<usize> {
        let view = self.view().await;
        view.nodes
            .values()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty() && n.reachable)
            .filter_map(|n| n.addr.as_ref().map(|a| self.index_of(a)))
            .collect()
    }

    /// Kills members the report released (like an operator deleting their pods).
    pub async fn remove_released(&mut self, released: &[String]) {
        for name in released {
            let i: usize = name
                .trim_start_matches('n')
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            self.remove(i).await;
        }
    }

    /// Reads every key back from the owner of its slot; returns the ones missing or wrong.
    pub async fn missing_keys(&self, prefix: &str, n: usize) -> Vec<String> {
        let view = self.view().await;
        let mut missing = Vec::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let futs = chunk.iter().map(|&i| {
                let key = format!("{prefix}:{i}");
                let view = &view;
                async move {
                    let owner = view.owner_of(Slot::for_key(key.as_bytes()))?;
                    let addr = view.nodes[owner].addr.clone()?;
                    let c = self.admin.node(&addr).await.ok()?;
                    let mut get = redis::cmd("GET");
                    get.arg(&key);
                    let v: Option<String> = c.raw("GET", get).await.ok()?;
                    (v == Some(format!("value:{i}"))).then_some(())
                }
            });
            for (k, r) in chunk.iter().zip(futures::future::join_all(futs).await) {
                if r.is_none() {
                    missing.push(format!("{prefix}:{k}"));
                }
            }
        }
        missing
    }

    pub async fn total_keys(&self) -> u64 {
        let view = self.view().await;
        view.observed
            .values()
            .filter(|o| !o.replication.is_replica)
            .map(|o| o.keys)
            .sum()
    }
}

/// The full error chain, for panics.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Harness {
    /// A view read from the given member indexes only.
    pub async fn view_of(&self, idx: &[usize]) -> ClusterView {
        let seeds: Vec<NodeAddr> = idx.iter().map(|&i| self.addr(i)).collect();
        observe(&self.admin, &seeds).await
    }

    pub fn node_mut(&mut self, i: usize) -> &mut LocalNode {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} was removed"))
    }

    /// Member indexes of replicas.
    pub async fn replica_indexes(&self) -> Vec<usize> {
        let view = self.view().await;
        view.nodes
            .values()
            .filter(|n| n.role == Role::Replica && n.reachable)
            .filter_map(|n| n.addr.as_ref().map(|a| self.index_of(a)))
            .collect()
    }
}
