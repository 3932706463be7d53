//! The read-only HTTP API (DESIGN.md "The HTTP API"), served by every operator replica from
//! its watch cache, so a standby keeps answering while the leader is down. Serves node
//! addresses, never passwords. Listens on the network; reads no other service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kredis_api::{KRedis, NodeRole, Phase};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Every KRedis, from the controller's watch cache.
    pub store: Store<KRedis>,
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once the watch cache has its first full list.
    pub ready: Arc<AtomicBool>,
}

/// One entry of `GET /v1/clusters`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Phase, when the operator has reported one.
    pub phase: Option<Phase>,
    /// Desired masters.
    pub masters: i32,
    /// Desired replicas per master.
    pub replicas_per_master: i32,
    /// Nodes speak TLS only (connect with `rediss://`, the cluster's CA and, unless
    /// `tls-auth-clients` is off, a client certificate).
    #[serde(default)]
    pub tls: bool,
}

/// A master in `GET .../nodes`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MasterNode {
    /// Client address.
    pub host: String,
    /// Client port.
    pub port: i32,
    /// Redis node id.
    pub node_id: String,
    /// Pod name.
    pub pod: String,
    /// Slot ranges, inclusive.
    pub slots: Vec<[i32; 2]>,
}

/// A replica in `GET .../nodes`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaNode {
    /// Client address.
    pub host: String,
    /// Client port.
    pub port: i32,
    /// Redis node id.
    pub node_id: String,
    /// Pod name.
    pub pod: String,
    /// Node id of its master.
    pub master_id: Option<String>,
}

/// `GET .../nodes`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Nodes {
    /// Masters.
    pub masters: Vec<MasterNode>,
    /// Replicas.
    pub replicas: Vec<ReplicaNode>,
    /// The nodes speak TLS only (see [`ClusterSummary::tls`]).
    #[serde(default)]
    pub tls: bool,
}

#[derive(Deserialize)]
struct NodesQuery {
    role: Option<String>,
}

/// The router; any method but GET answers 405.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/clusters", get(clusters))
        .route("/v1/namespaces/{ns}/clusters/{name}/nodes", get(nodes))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": message.into(), "code": status.as_u16()})),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: see /v1/clusters and /v1/namespaces/{ns}/clusters/{name}/nodes",
    )
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the watch cache is not filled yet",
        )
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn clusters(State(state): State<ApiState>) -> Json<Vec<ClusterSummary>> {
    let mut out: Vec<ClusterSummary> = state
        .store
        .state()
        .iter()
        .map(|k| ClusterSummary {
            namespace: k.namespace().unwrap_or_default(),
            name: k.name_any(),
            phase: k.status.as_ref().and_then(|s| s.phase),
            masters: k.spec.masters,
            replicas_per_master: k.spec.replicas_per_master,
            tls: k.spec.tls.is_some(),
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Json(out)
}

/// The nodes of one cluster from its status.
pub fn cluster_nodes(kredis: &KRedis) -> Nodes {
    let mut out = Nodes {
        tls: kredis.spec.tls.is_some(),
        ..Nodes::default()
    };
    for n in kredis.status.iter().flat_map(|s| s.nodes.iter()) {
        let (Some(host), Some(node_id), Some(role)) = (&n.host, &n.node_id, n.role) else {
            continue;
        };
        match role {
            NodeRole::Master => out.masters.push(MasterNode {
                host: host.clone(),
                port: n.port,
                node_id: node_id.clone(),
                pod: n.pod.clone(),
                slots: n.slots.clone(),
            }),
            NodeRole::Replica => out.replicas.push(ReplicaNode {
                host: host.clone(),
                port: n.port,
                node_id: node_id.clone(),
                pod: n.pod.clone(),
                master_id: n.master_id.clone(),
            }),
        }
    }
    out
}

async fn nodes(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    // Taken as a Result: axum's own rejection of a malformed query (`?role=a&role=b`) is a
    // text/plain 400, and every error of this API is JSON (found by tests/http_api.rs).
    query: Result<Query<NodesQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(kredis) = state.store.get(&ObjectRef::new(&name).within(&ns)) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("KRedis {ns}/{name} not found"),
        );
    };
    let mut nodes = cluster_nodes(&kredis);
    match query.role.as_deref() {
        None => {}
        Some("master") => nodes.replicas.clear(),
        Some("replica") => nodes.masters.clear(),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("role must be master or replica, not {other:?}"),
            )
        }
    }
    let plain = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/plain") && !v.contains("application/json"));
    if plain {
        let seeds: Vec<String> = nodes
            .masters
            .iter()
            .map(|m| format!("{}:{}", m.host, m.port))
            .chain(
                nodes
                    .replicas
                    .iter()
                    .map(|r| format!("{}:{}", r.host, r.port)),
            )
            .collect();
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            seeds.join(","),
        )
            .into_response();
    }
    Json(nodes).into_response()
}
