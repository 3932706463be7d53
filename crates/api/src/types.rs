//! The `KRedis` custom resource: spec, status and the CRD derived from them.
//!
//! Doc comments on spec fields become the CRD's field descriptions. Validation that the API
//! server can do on its own (ranges, port arithmetic, immutable fields) lives here as OpenAPI
//! and CEL rules; everything else (other clusters' ports, config deny-list) is in
//! [`crate::validate`]. Pure data: no network.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default Redis image.
pub const DEFAULT_IMAGE: &str = "redis:7.2";
/// Default Prometheus exporter image.
pub const DEFAULT_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.62.0";
/// Default first client port in hostNetwork mode.
pub const DEFAULT_BASE_PORT: i32 = 10000;
/// Default `cluster-node-timeout` in milliseconds.
pub const DEFAULT_CLUSTER_NODE_TIMEOUT_MILLIS: i32 = 5000;

/// A Redis Cluster managed by kredis: `masters` shards, each with `replicasPerMaster` replicas,
/// one pod per Redis node.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kredis.io",
    version = "v1alpha1",
    kind = "KRedis",
    plural = "kredis",
    singular = "kredis",
    shortname = "kr",
    namespaced,
    status = "KRedisStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Masters",
        type_ = "integer",
        description = "Desired number of masters (shards)",
        json_path = ".spec.masters"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Desired replicas per master",
        json_path = ".spec.replicasPerMaster"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Ready Redis nodes of desired nodes",
        json_path = ".status.readyDisplay"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Lifecycle phase",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// The highest port a hostNetwork cluster uses is the bus port of the index after its last pod
// (reserved for the temporary replica of a rolling update). CEL integers are
// 64-bit, so this cannot overflow.
#[x_kube(validation = Rule::new(
    "!self.hostNetwork || self.basePort + self.masters * (1 + self.replicasPerMaster) + 10000 <= 65535"
).message(
    "in hostNetwork mode the highest bus port, basePort + masters*(1+replicasPerMaster) + 10000 (one index is reserved for rolling updates), must be <= 65535: lower basePort or the number of pods"
))]
#[x_kube(validation = Rule::new("has(self.tls) == has(oldSelf.tls)").message(
    "tls can only be set when the cluster is created (TLS and plain nodes cannot talk on the cluster bus): create a new KRedis to turn TLS on or off"
))]
#[serde(rename_all = "camelCase")]
pub struct KRedisSpec {
    /// Number of masters (shards), 1..=500. 3 or more is recommended: with fewer, a single
    /// lost master cannot be failed over by a majority vote.
    #[serde(default = "default_masters")]
    #[schemars(range(min = 1, max = 500))]
    pub masters: i32,

    /// Replicas per master, 0..=5. Total pods masters*(1+replicasPerMaster) must not exceed 1000.
    #[serde(default = "default_replicas_per_master")]
    #[schemars(range(min = 0, max = 5))]
    pub replicas_per_master: i32,

    /// First client port in hostNetwork mode (immutable). Pod index i listens on basePort+i, its
    /// cluster bus on basePort+i+10000 and its exporter on basePort+i+5000. The client, exporter
    /// and bus ranges must not overlap those of any other hostNetwork KRedis. Ignored when
    /// hostNetwork is false.
    #[serde(default = "default_base_port")]
    #[schemars(range(min = 1024, max = 55535))]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "basePort is immutable: create a new KRedis to use other ports"
    ))]
    pub base_port: i32,

    /// Run Redis on the worker node's network with sequential ports from basePort (immutable).
    /// false: every pod uses port 6379 (bus 16379) on its own pod IP.
    #[serde(default = "default_true")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "hostNetwork is immutable: create a new KRedis to change the network mode"
    ))]
    pub host_network: bool,

    /// Redis container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Compute resources (core/v1 ResourceRequirements) of the redis container.
    #[serde(default)]
    pub resources: ResourceRequirements,

    /// Optional `maxmemory` (applied live, no restart), in Redis notation: bytes or a number with unit k, kb, m, mb, g, gb
    /// (for example `1gb`, `512mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+([kKmMgG][bB]?|[bB])?$"))]
    pub max_memory: Option<String>,

    /// `maxmemory-policy`: what Redis evicts when maxMemory is reached.
    #[serde(default)]
    pub max_memory_policy: MaxMemoryPolicy,

    /// `cluster-node-timeout` in milliseconds, 500..=120000.
    #[serde(default = "default_cluster_node_timeout_millis")]
    #[schemars(range(min = 500, max = 120000))]
    pub cluster_node_timeout_millis: i32,

    /// Password authentication for every Redis node and the exporter.
    #[serde(default)]
    pub auth: AuthSpec,

    /// Prometheus exporter sidecar.
    #[serde(default)]
    pub exporter: ExporterSpec,

    /// TLS for client, replication and cluster-bus traffic (set only at creation). Nodes then
    /// listen with TLS only, on the same ports; clients need the CA and, unless
    /// `config: {tls-auth-clients: "no"}`, a certificate it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Extra redis.conf directives (name -> value). Directives the operator owns (ports,
    /// cluster mode, passwords, persistence directory, ...) are rejected. A change is applied
    /// live with CONFIG SET where Redis allows it; directives Redis cannot change at run time
    /// (io-threads, databases, tcp-backlog, ...) replace the pods one at a time.
    #[serde(default)]
    pub config: BTreeMap<String, String>,

    /// true: observe and report only, change nothing.
    #[serde(default)]
    pub paused: bool,

    /// A shard lost with no surviving copy: true serves its slots again, empty (right for a
    /// cache); false stays Degraded until a human acts.
    #[serde(default = "default_true")]
    pub recover_lost_slots: bool,
}

/// Password authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Every node requires a password (default true: host-network ports are reachable by
    /// anything that reaches the worker node). false turns authentication off explicitly.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Optional existing Secret (same namespace) with key `password`. When absent the operator
    /// creates `<name>-auth` with a random password, owned by the KRedis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            secret_name: None,
        }
    }
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret (same namespace) with `tls.crt`, `tls.key` and `ca.crt`, as cert-manager writes
    /// it. The certificate is every node's server and client certificate (for the bus,
    /// replication and MIGRATE), so it must allow both uses; host names are not checked between
    /// nodes or by the operator (nodes are addressed by IP), only the CA. Renewed content of
    /// the Secret (a cert-manager renewal) is reloaded on every node live, without a restart.
    /// To change the CA, first put both CAs in `ca.crt`, then issue from the new CA, then drop
    /// the old one. A new secretName replaces the pods one at a time (its certificate must
    /// come from the same CA, or old and new pods cannot talk).
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// Prometheus exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Run the exporter container in every pod (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Exporter image.
    #[serde(default = "default_exporter_image")]
    pub image: String,
}

impl Default for ExporterSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: default_exporter_image(),
        }
    }
}

/// Redis `maxmemory-policy` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaxMemoryPolicy {
    Noeviction,
    #[default]
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl MaxMemoryPolicy {
    /// The value as written in redis.conf.
    pub fn as_redis(self) -> &'static str {
        match self {
            Self::Noeviction => "noeviction",
            Self::AllkeysLru => "allkeys-lru",
            Self::AllkeysLfu => "allkeys-lfu",
            Self::AllkeysRandom => "allkeys-random",
            Self::VolatileLru => "volatile-lru",
            Self::VolatileLfu => "volatile-lfu",
            Self::VolatileRandom => "volatile-random",
            Self::VolatileTtl => "volatile-ttl",
        }
    }
}

fn default_masters() -> i32 {
    3
}
fn default_replicas_per_master() -> i32 {
    1
}
fn default_base_port() -> i32 {
    DEFAULT_BASE_PORT
}
fn default_true() -> bool {
    true
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_exporter_image() -> String {
    DEFAULT_EXPORTER_IMAGE.to_string()
}
fn default_cluster_node_timeout_millis() -> i32 {
    DEFAULT_CLUSTER_NODE_TIMEOUT_MILLIS
}

impl Default for KRedisSpec {
    /// The spec an empty `spec: {}` becomes after the API server applies the CRD defaults.
    fn default() -> Self {
        Self {
            masters: default_masters(),
            replicas_per_master: default_replicas_per_master(),
            base_port: default_base_port(),
            host_network: true,
            image: default_image(),
            resources: ResourceRequirements::default(),
            max_memory: None,
            max_memory_policy: MaxMemoryPolicy::default(),
            cluster_node_timeout_millis: default_cluster_node_timeout_millis(),
            auth: AuthSpec::default(),
            exporter: ExporterSpec::default(),
            tls: None,
            config: BTreeMap::new(),
            paused: false,
            recover_lost_slots: true,
        }
    }
}

/// Lifecycle phase shown in `kubectl get kredis`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Creating,
    Ready,
    Scaling,
    Healing,
    Degraded,
    Invalid,
    Deleting,
}

/// Observed state, written by the operator only when it changes (no timestamps besides the
/// conditions' lastTransitionTime).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KRedisStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The metadata.generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions: at least Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Masters that are ready and serve slots.
    #[serde(default)]
    pub ready_masters: i32,

    /// Replicas that are ready and replicate a master.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Slots (of 16384) served by some master.
    #[serde(default)]
    pub slots_assigned: i32,

    /// Ready nodes of desired nodes, for the Ready printer column (for example `6/6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_display: Option<String>,

    /// Name of the Secret that holds the password (absent when auth is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,

    /// Every Redis node of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,

    /// The multi-step operation in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
}

impl KRedisStatus {
    /// The Ready printer column text: `ready/desired`.
    pub fn ready_display(ready: u32, desired: u32) -> String {
        format!("{ready}/{desired}")
    }
}

/// Role of a Redis node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Master,
    Replica,
}

/// One Redis node as the operator last observed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name.
    pub pod: String,
    /// Address clients use (the worker node's IP in hostNetwork mode, else the pod IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Client port.
    pub port: i32,
    /// Redis cluster node id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// master or replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<NodeRole>,
    /// For a replica: the node id of its master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_id: Option<String>,
    /// Shard number (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<i32>,
    /// For a master: served slot ranges, inclusive, as `[[start, end], ...]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<[i32; 2]>,
}

/// A multi-step operation in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// What runs, for example ScaleOut, ScaleIn, Failover, ReplaceNode.
    pub kind: String,
    /// The current step, for example `migrate slots to cache-6`.
    pub step: String,
    /// Progress, for example `1200/5461 slots`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}
