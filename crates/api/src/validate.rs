//! Validate a `KRedis` once into a [`ValidatedCluster`]; nothing downstream reads the raw spec.
//!
//! Pure: a function of the resource and the other KRedis objects (for host-port overlap), no
//! network. Checks that need the API server (does the named auth Secret exist and have a
//! `password` key?) belong to the operator's observe step. Every error says what to fix.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::ResourceExt;

use crate::types::{KRedis, KRedisSpec, MaxMemoryPolicy, Phase};

/// Upper bound on masters. Redis Cluster's gossip is designed for about 1000 nodes.
pub const MAX_MASTERS: u32 = 500;
/// Upper bound on replicas per master; more copies than this only cost memory and gossip.
pub const MAX_REPLICAS_PER_MASTER: u32 = 5;
/// Upper bound on pods (Redis nodes) of one cluster. Also keeps a cluster's client, exporter
/// and bus ranges (5000 apart) from overlapping each other, and pod indexes to 3 digits.
pub const MAX_PODS: u32 = 1000;
/// Indexes a cluster reserves beyond its pods: the temporary extra replica a rolling update of
/// a shard without replicas needs (the operator's rollout), so that it never lands on another
/// cluster's ports.
pub const SURGE_PODS: u32 = 1;
/// Offset of the cluster bus port from the client port (fixed by Redis).
pub const BUS_PORT_OFFSET: u32 = 10000;
/// Offset of the exporter port from the client port in hostNetwork mode.
pub const EXPORTER_PORT_OFFSET: u32 = 5000;
/// Client port in pod-network mode.
pub const POD_NETWORK_PORT: u16 = 6379;
/// Exporter port in pod-network mode (redis_exporter's default).
pub const POD_NETWORK_EXPORTER_PORT: u16 = 9121;
/// Longest DNS label (pod names are used as hostnames and label values).
const MAX_DNS_LABEL: usize = 63;
/// Longest cluster name: `<name>-<index>` with an index of up to 3 digits ([`MAX_PODS`] - 1)
/// must stay a DNS label. Checked against the upper bound, not today's pod count, so scaling
/// up never makes an existing name invalid.
pub const MAX_NAME_LEN: usize = MAX_DNS_LABEL - 4;
/// Lowest client port in hostNetwork mode: below 1024 needs privileges.
pub const MIN_BASE_PORT: u32 = 1024;
/// `cluster-node-timeout` bounds in milliseconds: shorter causes false failovers on a busy
/// node, longer leaves a dead master undetected for minutes.
pub const CLUSTER_NODE_TIMEOUT_MILLIS: RangeInclusive<i64> = 500..=120_000;

/// redis.conf directives users may not set in `spec.config`, and why.
pub const DENIED_CONFIG_DIRECTIVES: &[(&str, &str)] = &[
    // Cluster mode and its state file are the operator's: nodes.conf lives in an emptyDir.
    (
        "cluster-enabled",
        "the operator always runs Redis in cluster mode",
    ),
    (
        "cluster-config-file",
        "the operator keeps nodes.conf in the pod's emptyDir",
    ),
    // Ports and addresses follow from basePort/hostNetwork and the pod IP.
    (
        "port",
        "ports follow from spec.basePort and spec.hostNetwork",
    ),
    ("cluster-port", "the bus port is always port+10000"),
    ("bind", "Redis binds to the pod IP set by the operator"),
    // Passwords come from the auth Secret; setting them here would lock the operator out.
    (
        "requirepass",
        "use spec.auth (the password comes from the auth Secret)",
    ),
    (
        "masterauth",
        "use spec.auth (the password comes from the auth Secret)",
    ),
    (
        "masteruser",
        "the operator authenticates replicas with the auth Secret's password",
    ),
    (
        "user",
        "ACL users could change the default user the operator logs in as",
    ),
    (
        "aclfile",
        "ACL users could change the default user the operator logs in as",
    ),
    // Renamed commands break the operator's admin connections (CLUSTER, CONFIG, MIGRATE ...).
    (
        "rename-command",
        "the operator needs the CLUSTER, CONFIG and MIGRATE commands",
    ),
    // Replication is decided by the operator (PITFALLS 16), never by Redis or the user.
    (
        "replicaof",
        "the operator decides which node replicates which",
    ),
    (
        "slaveof",
        "the operator decides which node replicates which",
    ),
    (
        "cluster-replica-validity-factor",
        "the operator always sets 0 so any replica can take over",
    ),
    (
        "cluster-allow-replica-migration",
        "the operator, not Redis, decides where replicas belong",
    ),
    (
        "cluster-migration-barrier",
        "the operator, not Redis, decides where replicas belong",
    ),
    // Filesystem and process layout are fixed by the pod.
    ("dir", "the working directory is the pod's emptyDir"),
    (
        "daemonize",
        "Redis must stay in the foreground as the container's process",
    ),
    (
        "supervised",
        "Redis must stay in the foreground as the container's process",
    ),
    ("include", "extra files are not mounted into the pod"),
    ("loadmodule", "modules are not mounted into the pod"),
    // Dedicated spec fields exist for these.
    ("maxmemory", "use spec.maxMemory"),
    ("maxmemory-policy", "use spec.maxMemoryPolicy"),
    ("cluster-node-timeout", "use spec.clusterNodeTimeoutMillis"),
];

/// Directive prefixes users may not set, and why.
const DENIED_CONFIG_PREFIXES: &[(&str, &str)] = &[
    (
        "cluster-announce-",
        "the operator announces the pod's address and ports",
    ),
    (
        "replica-announce-",
        "the operator announces the pod's address and ports",
    ),
];

/// `tls-*` directives users may set when `spec.tls` is set (all settable live): how clients
/// are checked and which protocols and ciphers are offered. Every other `tls-*` directive
/// (ports, files, cluster and replication modes) follows from `spec.tls`.
pub const USER_TLS_DIRECTIVES: &[&str] = &[
    "tls-auth-clients",
    "tls-protocols",
    "tls-ciphers",
    "tls-ciphersuites",
    "tls-prefer-server-ciphers",
    "tls-session-caching",
    "tls-session-cache-size",
    "tls-session-cache-timeout",
];

/// One thing wrong with a KRedis; the message says exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as a path from the object root (`spec.masters`, `metadata.name`).
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Stable category for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        "InvalidSpec"
    }
}

/// Ports of one Redis node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// Client port (`port`, `cluster-announce-port`).
    pub client: u16,
    /// Cluster bus port (`cluster-announce-bus-port`), client + 10000.
    pub bus: u16,
    /// Exporter port.
    pub exporter: u16,
}

/// How a cluster's pods get their ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortLayout {
    /// Pod index i uses base+i, bus base+i+10000, exporter base+i+5000 on the worker node.
    /// Indexes are `0..max_pods`; validation proved every port of that range fits in u16.
    HostNetwork { base: u16, max_pods: u32 },
    /// Every pod uses 6379/16379/9121 on its own pod IP.
    PodNetwork,
}

impl PortLayout {
    /// Ports of pod `index`; `None` when a hostNetwork index is outside the validated range.
    pub fn ports(&self, index: u32) -> Option<NodePorts> {
        match *self {
            Self::HostNetwork { base, max_pods } => {
                if index >= max_pods {
                    return None;
                }
                let client = u32::from(base) + index;
                Some(NodePorts {
                    client: u16::try_from(client).ok()?,
                    bus: u16::try_from(client + BUS_PORT_OFFSET).ok()?,
                    exporter: u16::try_from(client + EXPORTER_PORT_OFFSET).ok()?,
                })
            }
            Self::PodNetwork => Some(NodePorts {
                client: POD_NETWORK_PORT,
                bus: POD_NETWORK_PORT + BUS_PORT_OFFSET as u16,
                exporter: POD_NETWORK_EXPORTER_PORT,
            }),
        }
    }

    /// Whether ports are host ports (declared as `hostPort`, checked across clusters).
    pub fn host_network(&self) -> bool {
        matches!(self, Self::HostNetwork { .. })
    }

    /// Host port ranges this cluster reserves (client, exporter, bus); empty in pod network.
    /// The exporter range is reserved even when the exporter is disabled, so enabling it later
    /// can never collide with another cluster.
    pub fn host_ranges(&self) -> Vec<(&'static str, RangeInclusive<u32>)> {
        match *self {
            Self::HostNetwork { base, max_pods } => {
                host_ranges(u32::from(base), max_pods).into_iter().collect()
            }
            Self::PodNetwork => Vec::new(),
        }
    }
}

/// Client, exporter and bus ranges of a hostNetwork cluster with `pods` pods from `base`.
fn host_ranges(base: u32, pods: u32) -> [(&'static str, RangeInclusive<u32>); 3] {
    let last = base + pods.max(1) - 1;
    [
        ("client", base..=last),
        (
            "exporter",
            base + EXPORTER_PORT_OFFSET..=last + EXPORTER_PORT_OFFSET,
        ),
        ("bus", base + BUS_PORT_OFFSET..=last + BUS_PORT_OFFSET),
    ]
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `auth.enabled: false`: no password anywhere.
    Disabled,
    /// Password in key `password` of Secret `name`; `managed` when the operator creates it
    /// (`<cluster>-auth`, owned by the KRedis) rather than the user naming an existing one.
    Secret { name: String, managed: bool },
}

impl AuthMode {
    /// The Secret's name, if auth is enabled.
    pub fn secret_name(&self) -> Option<&str> {
        match self {
            Self::Disabled => None,
            Self::Secret { name, .. } => Some(name),
        }
    }
}

/// Everything downstream (pod builder, planner, status) needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    /// `metadata.uid`, for owner references (absent only on objects never stored).
    pub uid: Option<String>,
    /// `metadata.generation`, to report as `status.observedGeneration`.
    pub generation: Option<i64>,
    pub masters: u32,
    pub replicas_per_master: u32,
    pub ports: PortLayout,
    pub image: String,
    pub resources: ResourceRequirements,
    /// `maxmemory` value as given (already checked against Redis' syntax).
    pub max_memory: Option<String>,
    pub max_memory_policy: MaxMemoryPolicy,
    pub cluster_node_timeout: Duration,
    pub auth: AuthMode,
    /// TLS Secret (`tls.crt`, `tls.key`, `ca.crt`) when TLS is on.
    pub tls: Option<String>,
    /// Exporter image when the exporter is enabled.
    pub exporter_image: Option<String>,
    /// Extra redis.conf directives, keys lower-cased, none on the deny-list.
    pub config: BTreeMap<String, String>,
    pub paused: bool,
    pub recover_lost_slots: bool,
    /// Accepted but worth an Event (for example fewer than 3 masters).
    pub warnings: Vec<String>,
}

impl ValidatedCluster {
    /// Desired number of pods: masters * (1 + replicasPerMaster).
    pub fn pod_count(&self) -> u32 {
        self.masters * (1 + self.replicas_per_master)
    }

    /// Name of the pod with `index`.
    pub fn pod_name(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }
}

/// Validate `kredis` against DESIGN.md and against `others` (every other KRedis in the cluster,
/// all namespaces: host ports are shared by the whole node). `others` may include `kredis`
/// itself; it is skipped.
///
/// Overlapping host ports are blamed on the cluster whose current spec the operator has not
/// accepted yet, then on the younger one (by creationTimestamp, then namespace/name), so a
/// running cluster never turns Invalid because a newcomer or a neighbour's edit collides.
pub fn validate(
    kredis: &KRedis,
    others: &[KRedis],
) -> Result<ValidatedCluster, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let spec = &kredis.spec;
    let name = kredis.name_any();
    let namespace = kredis.namespace().unwrap_or_default();

    check_name(&name, &mut errors);

    let masters = check_count("spec.masters", spec.masters, 1, MAX_MASTERS, &mut errors);
    let replicas = check_count(
        "spec.replicasPerMaster",
        spec.replicas_per_master,
        0,
        MAX_REPLICAS_PER_MASTER,
        &mut errors,
    );
    if masters.is_some_and(|m| m < 3) {
        warnings.push(format!(
            "spec.masters is {}: with fewer than 3 masters a lost master cannot be failed over by a majority vote; 3 or more is recommended",
            spec.masters
        ));
    }
    let pods = match (masters, replicas) {
        (Some(m), Some(r)) if m * (1 + r) > MAX_PODS => {
            errors.push(ValidationError::new(
                "spec.masters",
                format!(
                    "masters*(1+replicasPerMaster) = {} pods exceeds the limit of {MAX_PODS}: lower masters or replicasPerMaster",
                    m * (1 + r)
                ),
            ));
            None
        }
        (Some(m), Some(r)) => Some(m * (1 + r)),
        _ => None,
    };

    let ports = if spec.host_network {
        check_host_ports(kredis, spec, pods, others, &mut errors)
    } else {
        Some(PortLayout::PodNetwork)
    };

    if spec.image.trim().is_empty() {
        errors.push(ValidationError::new(
            "spec.image",
            "image is empty: set a Redis image such as redis:7.2",
        ));
    }
    if let Some(max_memory) = &spec.max_memory {
        if !is_redis_memory(max_memory) {
            errors.push(ValidationError::new(
                "spec.maxMemory",
                format!(
                    "{max_memory:?} is not a Redis memory size: use bytes or a number with unit k, kb, m, mb, g or gb, such as 1gb"
                ),
            ));
        }
    }
    let timeout = i64::from(spec.cluster_node_timeout_millis);
    if !CLUSTER_NODE_TIMEOUT_MILLIS.contains(&timeout) {
        errors.push(ValidationError::new(
            "spec.clusterNodeTimeoutMillis",
            format!(
                "{timeout} is out of range: set a value from {} to {} milliseconds",
                CLUSTER_NODE_TIMEOUT_MILLIS.start(),
                CLUSTER_NODE_TIMEOUT_MILLIS.end()
            ),
        ));
    }

    let auth = check_auth(&name, spec, &mut errors);

    let exporter_image = if spec.exporter.enabled {
        if spec.exporter.image.trim().is_empty() {
            errors.push(ValidationError::new(
                "spec.exporter.image",
                "exporter image is empty: set an image such as oliver006/redis_exporter:v1.62.0, or set exporter.enabled: false",
            ));
        }
        Some(spec.exporter.image.clone())
    } else {
        None
    };

    let tls = spec.tls.as_ref().map(|t| t.secret_name.trim().to_owned());
    if let Some(name) = &tls {
        check_secret_name("spec.tls.secretName", name, &mut errors);
    }
    let config = check_config(&spec.config, tls.is_some(), &mut errors);

    match (errors.is_empty(), masters, replicas, ports) {
        (true, Some(masters), Some(replicas_per_master), Some(ports)) => Ok(ValidatedCluster {
            name,
            namespace,
            uid: kredis.metadata.uid.clone(),
            generation: kredis.metadata.generation,
            masters,
            replicas_per_master,
            ports,
            image: spec.image.clone(),
            resources: spec.resources.clone(),
            max_memory: spec.max_memory.clone(),
            max_memory_policy: spec.max_memory_policy,
            cluster_node_timeout: Duration::from_millis(timeout.unsigned_abs()),
            auth,
            tls,
            exporter_image,
            config,
            paused: spec.paused,
            recover_lost_slots: spec.recover_lost_slots,
            warnings,
        }),
        _ => Err(errors),
    }
}

/// The name becomes pod names `<name>-<index>`, hostnames and label values: a DNS label.
fn check_name(name: &str, errors: &mut Vec<ValidationError>) {
    if name.len() > MAX_NAME_LEN {
        errors.push(ValidationError::new(
            "metadata.name",
            format!(
                "name {name:?} is {} characters: use at most {MAX_NAME_LEN} so pod names <name>-<index> stay within 63",
                name.len()
            ),
        ));
    }
    if !is_dns_label(name) {
        errors.push(ValidationError::new(
            "metadata.name",
            format!(
                "name {name:?} must consist of lower-case letters, digits and '-', and start and end with a letter or digit (it becomes pod names and hostnames)"
            ),
        ));
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain (Secret names): lower-case alphanumerics, '-' and '.', at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_count(
    field: &str,
    value: i32,
    min: u32,
    max: u32,
    errors: &mut Vec<ValidationError>,
) -> Option<u32> {
    match u32::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            errors.push(ValidationError::new(
                field,
                format!("{value} is out of range: set a value from {min} to {max}"),
            ));
            None
        }
    }
}

fn check_host_ports(
    kredis: &KRedis,
    spec: &KRedisSpec,
    pods: Option<u32>,
    others: &[KRedis],
    errors: &mut Vec<ValidationError>,
) -> Option<PortLayout> {
    let Ok(base) = u32::try_from(spec.base_port) else {
        errors.push(ValidationError::new(
            "spec.basePort",
            format!(
                "{} is negative: set basePort to a port from {MIN_BASE_PORT}",
                spec.base_port
            ),
        ));
        return None;
    };
    if base < MIN_BASE_PORT {
        errors.push(ValidationError::new(
            "spec.basePort",
            format!("{base} is a privileged port: set basePort to {MIN_BASE_PORT} or more"),
        ));
        return None;
    }
    let pods = pods?;
    // Every index up to `pods` (one past the last pod: the rolling-update surge) must fit.
    let reserved = pods + SURGE_PODS;
    let highest_bus = base + reserved - 1 + BUS_PORT_OFFSET;
    if highest_bus > u32::from(u16::MAX) {
        errors.push(ValidationError::new(
            "spec.basePort",
            format!(
                "with {pods} pods (+{SURGE_PODS} reserved for rolling updates) from basePort {base} the highest bus port would be {highest_bus} (> 65535): set basePort to at most {}",
                u32::from(u16::MAX) + 1 - reserved - BUS_PORT_OFFSET
            ),
        ));
        return None;
    }
    let mine = host_ranges(base, reserved);
    let my_key = age_key(kredis);
    for other in others {
        if other.namespace() == kredis.namespace() && other.name_any() == kredis.name_any() {
            continue;
        }
        // Only clusters created earlier win a collision; see `validate`.
        if !other.spec.host_network || age_key(other) > my_key {
            continue;
        }
        let Some(theirs) = other_ranges(&other.spec) else {
            continue;
        };
        for (my_kind, my_range) in &mine {
            for (their_kind, their_range) in &theirs {
                if my_range.start() <= their_range.end() && their_range.start() <= my_range.end() {
                    errors.push(ValidationError::new(
                        "spec.basePort",
                        format!(
                            "{my_kind} ports {}-{} overlap the {their_kind} ports {}-{} of KRedis {}/{}: choose a basePort whose client (basePort+i), exporter (+5000) and bus (+10000) ranges are all free (basePort is immutable: an existing cluster needs fewer masters or replicasPerMaster)",
                            my_range.start(),
                            my_range.end(),
                            their_range.start(),
                            their_range.end(),
                            other.namespace().unwrap_or_default(),
                            other.name_any(),
                        ),
                    ));
                }
            }
        }
    }
    Some(PortLayout::HostNetwork {
        base: u16::try_from(base).ok()?,
        max_pods: reserved,
    })
}

/// Host ranges another cluster may occupy, computed leniently from its raw spec (it may itself
/// be invalid; out-of-range counts are clamped to what it could at most run).
fn other_ranges(spec: &KRedisSpec) -> Option<[(&'static str, RangeInclusive<u32>); 3]> {
    let base = u32::try_from(spec.base_port).ok()?;
    let masters = u32::try_from(spec.masters).ok()?.clamp(1, MAX_MASTERS);
    let replicas = u32::try_from(spec.replicas_per_master)
        .unwrap_or(0)
        .min(MAX_REPLICAS_PER_MASTER);
    let pods = (masters * (1 + replicas)).min(MAX_PODS);
    Some(host_ranges(base, pods + SURGE_PODS))
}

/// Not accepted, never stored, creationTimestamp, namespace, name.
type Precedence = (
    bool,
    bool,
    Option<k8s_openapi::jiff::Timestamp>,
    String,
    String,
);

/// Precedence in a host-port collision (the greater key is blamed): first whether the current
/// spec was accepted (a status for this generation whose phase is not Invalid), then the order
/// of creation, objects never stored (no timestamp) counting as the youngest.
///
/// Acceptance comes first because creation order alone blamed running clusters (found by
/// `crates/operator/tests/bad_input.rs`): a scale-out of an older cluster into a younger
/// neighbour's ranges was accepted and the untouched neighbour turned Invalid at its next
/// resync; and creationTimestamp has whole seconds, so of two clusters created in the same
/// second the name decided, and a cluster already creating pods could lose to a later one.
fn age_key(k: &KRedis) -> Precedence {
    let accepted = k.status.as_ref().is_some_and(|s| {
        s.observed_generation.is_some()
            && s.observed_generation == k.metadata.generation
            && s.phase.is_some_and(|p| p != Phase::Invalid)
    });
    let ts = k.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        !accepted,
        ts.is_none(),
        ts,
        k.namespace().unwrap_or_default(),
        k.name_any(),
    )
}

fn check_auth(name: &str, spec: &KRedisSpec, errors: &mut Vec<ValidationError>) -> AuthMode {
    match (&spec.auth.enabled, &spec.auth.secret_name) {
        (false, Some(secret)) => {
            errors.push(ValidationError::new(
                "spec.auth.secretName",
                format!(
                    "secretName {secret:?} is set but auth.enabled is false: remove secretName or set auth.enabled: true"
                ),
            ));
            AuthMode::Disabled
        }
        (false, None) => AuthMode::Disabled,
        (true, Some(secret)) => {
            check_secret_name("spec.auth.secretName", secret, errors);
            AuthMode::Secret {
                name: secret.clone(),
                managed: false,
            }
        }
        (true, None) => AuthMode::Secret {
            name: format!("{name}-auth"),
            managed: true,
        },
    }
}

fn check_secret_name(field: &str, secret: &str, errors: &mut Vec<ValidationError>) {
    if !is_dns_subdomain(secret) {
        errors.push(ValidationError::new(
            field,
            format!(
                "{secret:?} is not a valid Secret name: use lower-case letters, digits, '-' and '.'"
            ),
        ));
    }
}

fn check_config(
    config: &BTreeMap<String, String>,
    tls: bool,
    errors: &mut Vec<ValidationError>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in config {
        let directive = key.trim().to_ascii_lowercase();
        let field = format!("spec.config.{key}");
        if directive.is_empty()
            || !directive
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            errors.push(ValidationError::new(
                field,
                format!("{key:?} is not a redis.conf directive name: use letters, digits and '-'"),
            ));
            continue;
        }
        if directive.starts_with("tls-") {
            let message = if !tls {
                Some(format!("directive {directive:?} needs TLS: set spec.tls.secretName (TLS is turned on there, at creation)"))
            } else if !USER_TLS_DIRECTIVES.contains(&directive.as_str()) {
                Some(format!("directive {directive:?} is managed by the operator (TLS ports, files and modes follow from spec.tls): remove it from spec.config; settable are {}", USER_TLS_DIRECTIVES.join(", ")))
            } else {
                None
            };
            if let Some(message) = message {
                errors.push(ValidationError::new(field, message));
                continue;
            }
        }
        let denied = DENIED_CONFIG_DIRECTIVES
            .iter()
            .find(|(d, _)| *d == directive)
            .or_else(|| {
                DENIED_CONFIG_PREFIXES
                    .iter()
                    .find(|(p, _)| directive.starts_with(p))
            });
        if let Some((_, why)) = denied {
            errors.push(ValidationError::new(
                field,
                format!("directive {directive:?} is managed by the operator ({why}): remove it from spec.config"),
            ));
            continue;
        }
        // A line break would smuggle further directives past the deny-list into redis.conf.
        if value.contains(['\n', '\r']) {
            errors.push(ValidationError::new(
                field,
                "value contains a line break: give a single-line value".to_string(),
            ));
            continue;
        }
        if out.insert(directive.clone(), value.clone()).is_some() {
            errors.push(ValidationError::new(
                field,
                format!(
                    "directive {directive:?} is given twice (keys are case-insensitive): keep one"
                ),
            ));
        }
    }
    out
}

/// Redis memory notation: digits, optionally followed by b, k, kb, m, mb, g, gb (any case).
fn is_redis_memory(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let unit = s[digits..].to_ascii_lowercase();
    matches!(
        unit.as_str(),
        "" | "b" | "k" | "kb" | "m" | "mb" | "g" | "gb"
    )
}
