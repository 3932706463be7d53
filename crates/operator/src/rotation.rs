//! Live password rotation. When the password Secret changes (new content, or `secretName`
//! naming another Secret), every node is moved to the new password without a restart, in three
//! sweeps over all nodes so that no replication link ever meets a password it lacks:
//!
//! 1. `ACL SETUSER default >new` on every node: the default user accepts old and new;
//! 2. `CONFIG SET masterauth new` everywhere: replicas use the new one on their next sync;
//! 3. `CONFIG SET requirepass new` everywhere: only the new one is accepted from now on.
//!
//! Sweep 1 needs the old password, which the Secret no longer holds: the operator records the
//! password the nodes run with in the Secret `<name>-auth-applied` (owned by the KRedis), once
//! every running node is on it. A restarted operator, or the other replica after a leader
//! change, reads it from there. Each sweep is idempotent, so a pass interrupted anywhere is
//! finished by the next one. Connections already authenticated (clients', the exporter's)
//! stay authenticated; new ones need the new password.
//!
//! Touches the API server (the record) and Redis.

use kredis_api::ValidatedCluster;
use kredis_engine::admin::{Admin, AdminConfig, AdminError, Credentials};
use kredis_engine::model::NodeAddr;
use tracing::{info, instrument, warn};

use crate::auth;
use crate::error::Error;
use crate::topology::{PodFacts, PodState};

/// Where the rotation stands after this pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Every running node is on the Secret's password, and that is recorded.
    Settled,
    /// Some node rejects the Secret's password and cannot be moved to it: the engine must not
    /// run (it would take that node for an unreachable one). Says why and what to do.
    Blocked(String),
    /// Moved as far as the reachable nodes allow; the rest is finished in a later pass.
    Partial(String),
}

/// Moves every running node of the cluster to `desired` (see the module docs). `admin`
/// authenticates with `desired`.
#[instrument(skip_all, fields(cluster = %cluster.name))]
pub async fn ensure(
    client: &kube::Client,
    cluster: &ValidatedCluster,
    pods: &[PodFacts],
    admin: &Admin,
    desired: &str,
) -> Result<Rotation, Error> {
    let addrs: Vec<NodeAddr> = pods
        .iter()
        .filter(|p| p.state == PodState::Running)
        .filter_map(PodFacts::addr)
        .collect();
    if addrs.is_empty() {
        return Ok(Rotation::Settled);
    }
    let recorded = auth::applied(client, cluster).await?;
    let previous = recorded.as_deref().filter(|p| *p != desired);
    let old_admin = previous.map(|p| {
        Admin::new(AdminConfig {
            credentials: Credentials::password(p),
            ..admin.config().clone()
        })
    });

    // Sweep 1: every node accepts the new password.
    let mut rejected = Vec::new();
    let mut unreachable = Vec::new();
    let mut added = 0;
    for addr in &addrs {
        match admin
            .with_node(addr, |c| async move { c.ping().await })
            .await
        {
            Ok(()) => continue,
            Err(AdminError::Auth { .. }) => {}
            Err(e) => {
                unreachable.push(format!("{addr}: {e}"));
                continue;
            }
        }
        let Some(old) = &old_admin else {
            rejected.push(addr.to_string());
            continue;
        };
        let add = old
            .with_node(addr, |c| async move {
                let mut cmd = redis::cmd("ACL");
                cmd.arg("SETUSER").arg("default").arg(format!(">{desired}"));
                c.raw::<redis::Value>("ACL SETUSER", cmd).await
            })
            .await;
        match add {
            Ok(_) => {
                added += 1;
                info!(node = %addr, "node accepts the new password");
            }
            Err(AdminError::Auth { .. }) => rejected.push(addr.to_string()),
            Err(e) => unreachable.push(format!("{addr}: {e}")),
        }
    }
    let secret = cluster.auth.secret_name().unwrap_or_default();
    if !rejected.is_empty() {
        let known = if previous.is_some() {
            "nor the password recorded as applied"
        } else {
            "and the operator has no record of another one"
        };
        return Ok(Rotation::Blocked(format!(
            "node(s) {} accept neither the password in Secret {secret} {known}: put back the password the nodes run with, or restart those pods",
            rejected.join(", ")
        )));
    }
    if !unreachable.is_empty() {
        return Ok(Rotation::Partial(format!(
            "rotating the password: waiting for {}",
            unreachable.join("; ")
        )));
    }
    if recorded.as_deref() == Some(desired) && added == 0 {
        return Ok(Rotation::Settled);
    }

    // Sweeps 2 and 3: replication uses it, then it is the only one.
    for key in ["masterauth", "requirepass"] {
        for addr in &addrs {
            let set = admin
                .with_node(addr, |c| async move {
                    let mut get = redis::cmd("CONFIG");
                    get.arg("GET").arg(key);
                    let reply: Vec<String> = c.raw("CONFIG GET", get).await?;
                    if reply.get(1).map(String::as_str) == Some(desired) {
                        return Ok(false);
                    }
                    c.config_set(key, desired).await.map(|()| true)
                })
                .await;
            match set {
                Ok(true) => info!(node = %addr, key, "moved to the new password"),
                Ok(false) => {}
                Err(e) => {
                    warn!(node = %addr, key, error = %e, "password rotation step failed");
                    return Ok(Rotation::Partial(format!(
                        "rotating the password: {key} on {addr}: {e}"
                    )));
                }
            }
        }
    }
    auth::record_applied(client, cluster, desired).await?;
    Ok(Rotation::Settled)
}
