//! Changes to a running cluster without downtime. Settings Redis takes live (`maxmemory`,
//! `maxmemory-policy`, `cluster-node-timeout`, and every `config` directive not on
//! [`RESTART_DIRECTIVES`]) are applied with `CONFIG SET` on every node ([`apply_live`], which
//! touches Redis). Everything else shapes the pod and is tracked by the pod's restart hash;
//! [`plan`] (pure) replaces stale pods one at a time: replicas first; a master only once a
//! replica of its shard runs the new spec and is in sync, by deleting it (the operator hands
//! it over with a graceful `CLUSTER FAILOVER`); a shard without replicas first gets a
//! temporary extra replica (PITFALLS 26-28).

use std::collections::BTreeMap;

use kredis_api::ValidatedCluster;
use kredis_engine::admin::Admin;
use kredis_engine::model::{ClusterView, Role};
use tracing::{info, warn};

use crate::topology::{PodFacts, PodState};

/// `config` directives Redis 7 cannot change at run time: a change replaces the pods.
pub const RESTART_DIRECTIVES: &[&str] = &[
    "always-show-logo",
    "databases",
    "disable-thp",
    "enable-debug-command",
    "enable-module-command",
    "enable-protected-configs",
    "io-threads",
    "io-threads-do-reads",
    "logfile",
    "pidfile",
    "set-proc-title",
    "syslog-enabled",
    "syslog-facility",
    "syslog-ident",
    "tcp-backlog",
    "unixsocket",
    "unixsocketperm",
];

/// The settings applied live on every node, as (directive, value).
pub fn live_settings(cluster: &ValidatedCluster) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "maxmemory".to_string(),
            cluster.max_memory.clone().unwrap_or_else(|| "0".into()),
        ),
        (
            "maxmemory-policy".to_string(),
            cluster.max_memory_policy.as_redis().to_string(),
        ),
        (
            "cluster-node-timeout".to_string(),
            cluster.cluster_node_timeout.as_millis().to_string(),
        ),
    ];
    out.extend(
        cluster
            .config
            .iter()
            .filter(|(k, _)| !RESTART_DIRECTIVES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// The `config` directives that need new pods.
pub fn restart_config(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    cluster
        .config
        .iter()
        .filter(|(k, _)| RESTART_DIRECTIVES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A Redis memory size in bytes (`1gb`, `100m`, `12345`); Redis' own units.
fn memory_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    let mult = match &s[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1_000_000,
        "mb" => 1024 * 1024,
        "g" => 1_000_000_000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Whether a node's `CONFIG GET` value already equals the wanted one.
fn same(key: &str, have: &str, want: &str) -> bool {
    if key == "maxmemory" {
        return memory_bytes(have).is_some() && memory_bytes(have) == memory_bytes(want);
    }
    have.trim().eq_ignore_ascii_case(want.trim())
}

/// Sets every live setting that differs on every reachable node. Returns the number of
/// `CONFIG SET`s done and the failures (directive, node, error) to report.
pub async fn apply_live(
    admin: &Admin,
    view: &ClusterView,
    settings: &[(String, String)],
) -> (usize, Vec<String>) {
    let mut set = 0;
    let mut failures = Vec::new();
    for obs in view.observed.values() {
        for (key, want) in settings {
            let result = admin
                .with_node(&obs.addr, |c| async move {
                    let mut get = redis::cmd("CONFIG");
                    get.arg("GET").arg(key);
                    let reply: Vec<String> = c.raw("CONFIG GET", get).await?;
                    let have = reply.get(1).cloned().unwrap_or_default();
                    if same(key, &have, want) {
                        return Ok(false);
                    }
                    c.config_set(key, want).await.map(|()| true)
                })
                .await;
            match result {
                Ok(true) => {
                    set += 1;
                    info!(node = %obs.addr, key, "applied a live setting");
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(node = %obs.addr, key, error = %e, "failed to apply a live setting");
                    failures.push(format!("{key} on {}: {e}", obs.addr));
                }
            }
        }
    }
    (set, failures)
}

/// Makes sure every reachable node has the exporter's ACL user with `password` (nodes started
/// without it, or with another password after its Secret was recreated). Returns the number
/// of nodes changed and the failures to report. `ACL GETUSER` first, so a pass that changes
/// nothing writes nothing.
pub async fn apply_exporter_user(
    admin: &Admin,
    view: &ClusterView,
    password: &str,
) -> (usize, Vec<String>) {
    let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
    let want: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut set = 0;
    let mut failures = Vec::new();
    for obs in view.observed.values() {
        let want = &want;
        let result = admin
            .with_node(&obs.addr, |c| async move {
                let mut get = redis::cmd("ACL");
                get.arg("GETUSER").arg(crate::auth::EXPORTER_USER);
                let reply: redis::Value = c.raw("ACL GETUSER", get).await?;
                if exporter_user_matches(&reply, want) {
                    return Ok(false);
                }
                let mut setuser = redis::cmd("ACL");
                setuser
                    .arg("SETUSER")
                    .arg(crate::auth::EXPORTER_USER)
                    .arg("reset");
                for rule in crate::auth::EXPORTER_ACL_RULES.split_whitespace() {
                    setuser.arg(rule);
                }
                setuser.arg(format!(">{password}"));
                c.raw::<redis::Value>("ACL SETUSER", setuser)
                    .await
                    .map(|_| true)
            })
            .await;
        match result {
            Ok(true) => {
                set += 1;
                info!(node = %obs.addr, "set the exporter's ACL user");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(node = %obs.addr, error = %e, "failed to set the exporter's ACL user");
                failures.push(format!(
                    "ACL user {} on {}: {e}",
                    crate::auth::EXPORTER_USER,
                    obs.addr
                ));
            }
        }
    }
    (set, failures)
}

/// Whether an `ACL GETUSER` reply is an enabled user whose only password has SHA-256 `want`.
fn exporter_user_matches(reply: &redis::Value, want: &str) -> bool {
    let fields: Vec<redis::Value> = match reply {
        redis::Value::Array(items) => items.clone(),
        redis::Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        _ => return false,
    };
    let field = |name: &str| -> Option<Vec<String>> {
        let at = fields.chunks(2).find(|kv| {
            kv.first()
                .and_then(|k| redis::from_redis_value::<String>(k.clone()).ok())
                .is_some_and(|k| k == name)
        })?;
        redis::from_redis_value::<Vec<String>>(at.get(1)?.clone()).ok()
    };
    let on = field("flags").is_some_and(|f| f.iter().any(|x| x == "on"));
    on && field("passwords").is_some_and(|p| p.len() == 1 && p[0] == want)
}

/// What the rollout does in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the current spec.
    Done,
    /// Delete this pod; it is replaced from the current spec.
    Delete {
        /// Pod.
        pod: String,
        /// Why (for the Event).
        why: String,
    },
    /// Create a temporary extra replica for a shard without replicas.
    Surge {
        /// The shard.
        shard: u32,
    },
    /// Nothing to do until the cluster is stable again (the previous pod is starting or
    /// syncing, or a failure is being handled).
    Wait(String),
    /// A pod of the new spec does not start: the rollout stops here until the spec changes.
    Blocked(String),
}

/// The rollout's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// What to do now.
    pub step: Step,
    /// Pods not running the current spec.
    pub stale: usize,
    /// Pods in all.
    pub total: usize,
}

fn node_of<'a>(view: &'a ClusterView, p: &PodFacts) -> Option<&'a kredis_engine::model::ViewNode> {
    p.addr()
        .as_ref()
        .and_then(|a| view.id_at(a))
        .and_then(|id| view.nodes.get(id))
}

/// A replica that has finished its sync with its master.
fn synced_replica(view: &ClusterView, p: &PodFacts) -> bool {
    node_of(view, p).is_some_and(|n| {
        n.role == Role::Replica
            && view
                .observed
                .get(&n.id)
                .is_some_and(|o| o.replication.master_link_up && !o.replication.sync_in_progress)
    })
}

/// Whether a cluster without replicas is renewing a shard through a temporary replica: some
/// pod is stale and a kept shard has more than one pod.
pub fn surging(cluster: &ValidatedCluster, pods: &[PodFacts], hash: &str) -> bool {
    if cluster.replicas_per_master > 0 {
        return false;
    }
    let active = |p: &&PodFacts| matches!(p.state, PodState::Pending | PodState::Running);
    if !pods
        .iter()
        .filter(active)
        .any(|p| p.spec_hash.as_deref() != Some(hash))
    {
        return false;
    }
    let mut per_shard: BTreeMap<u32, usize> = BTreeMap::new();
    for s in pods.iter().filter(active).filter_map(|p| p.shard) {
        *per_shard.entry(s).or_default() += 1;
    }
    per_shard
        .iter()
        .any(|(s, n)| *s < cluster.masters && *n > 1)
}

/// Decides the next rollout step. `hash` is the current spec's restart hash.
pub fn plan(
    cluster: &ValidatedCluster,
    pods: &[PodFacts],
    view: &ClusterView,
    hash: &str,
) -> Rollout {
    let live: Vec<&PodFacts> = pods.iter().filter(|p| p.state != PodState::Gone).collect();
    let stale: Vec<&PodFacts> = live
        .iter()
        .copied()
        .filter(|p| p.spec_hash.as_deref() != Some(hash))
        .collect();
    let mut out = Rollout {
        step: Step::Done,
        stale: stale.len(),
        total: live.len(),
    };
    if stale.is_empty() {
        return out;
    }
    // A stale pod that never started holds nothing: replace it at once (this is how
    // reverting a broken spec rolls back).
    if let Some(p) = stale
        .iter()
        .find(|p| matches!(p.state, PodState::Pending | PodState::FailedToStart))
    {
        out.step = Step::Delete {
            pod: p.name.clone(),
            why: "it never started with the previous spec".into(),
        };
        return out;
    }
    // A new-spec pod that cannot start blocks the rollout.
    if let Some(p) = live
        .iter()
        .find(|p| p.spec_hash.as_deref() == Some(hash) && p.waiting_reason.is_some())
    {
        out.step = Step::Blocked(format!(
            "pod {} of the current spec does not start ({}; see kubectl logs {} -c redis): fix the spec, or revert it to roll back",
            p.name,
            p.waiting_reason.as_deref().unwrap_or_default(),
            p.name
        ));
        return out;
    }
    // One pod at a time, in a stable cluster only: every wanted pod exists (a replaced pod
    // whose successor is not created yet leaves the view converged for a moment, its node not
    // yet flagged by the others) and runs ready.
    let shard_pods = live
        .iter()
        .filter(|p| p.shard.is_some_and(|s| s < cluster.masters))
        .count();
    if shard_pods < cluster.pod_count() as usize {
        out.step = Step::Wait(format!(
            "waiting for {} missing pod(s) to be created",
            cluster.pod_count() as usize - shard_pods
        ));
        return out;
    }
    let unstable = live
        .iter()
        .find(|p| p.state != PodState::Running || !p.ready || node_of(view, p).is_none());
    if let Some(p) = unstable {
        out.step = Step::Wait(format!("waiting for pod {} to be ready", p.name));
        return out;
    }
    if !view.is_converged() {
        out.step = Step::Wait(format!(
            "waiting for the cluster to settle: {}",
            view.problems().join("; ")
        ));
        return out;
    }
    if let Some(p) = live.iter().find(|p| {
        node_of(view, p).is_some_and(|n| n.role == Role::Replica) && !synced_replica(view, p)
    }) {
        out.step = Step::Wait(format!("waiting for replica {} to sync", p.name));
        return out;
    }
    // Replicas first.
    if let Some(p) = stale
        .iter()
        .find(|p| node_of(view, p).is_some_and(|n| n.role == Role::Replica))
    {
        out.step = Step::Delete {
            pod: p.name.clone(),
            why: "replica runs a previous spec".into(),
        };
        return out;
    }
    // Then masters, each once its shard has an in-sync replica of the new spec.
    for m in &stale {
        let Some(shard) = m.shard else { continue };
        let heir = live.iter().any(|p| {
            p.shard == Some(shard)
                && p.name != m.name
                && p.spec_hash.as_deref() == Some(hash)
                && synced_replica(view, p)
        });
        if heir {
            out.step = Step::Delete {
                pod: m.name.clone(),
                why: "master runs a previous spec; an in-sync replica of the new spec takes over"
                    .into(),
            };
            return out;
        }
        // With replicas, replicas were renewed first, so an heir exists once it synced. A
        // shard without replicas gets a temporary one of the new spec.
        if cluster.replicas_per_master == 0 {
            out.step = Step::Surge { shard };
            return out;
        }
    }
    out.step = Step::Wait("waiting for a master's replacement to be placed".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pod_is_taken_while_a_replaced_one_is_missing() {
        use crate::topology::tests::{cluster, facts};
        let c = cluster(2, 1);
        // c-1 was replaced and its successor is not created yet; the others run the old spec.
        let pods: Vec<PodFacts> = [0, 2, 3]
            .into_iter()
            .map(|i| facts(i, i / 2, PodState::Running))
            .collect();
        let plan = plan(&c, &pods, &ClusterView::default(), "new");
        match plan.step {
            Step::Wait(why) => assert!(why.contains("1 missing pod"), "{why}"),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn memory_units_follow_redis() {
        assert_eq!(memory_bytes("1gb"), Some(1 << 30));
        assert_eq!(memory_bytes("256mb"), Some(256 << 20));
        assert_eq!(memory_bytes("1g"), Some(1_000_000_000));
        assert_eq!(memory_bytes("268435456"), Some(256 << 20));
        assert!(same("maxmemory", "268435456", "256mb"));
        assert!(!same("maxmemory", "0", "256mb"));
        assert!(same("maxmemory-policy", "allkeys-lru", "allkeys-lru"));
    }
}
