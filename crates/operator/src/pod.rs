//! Pod builder: one Redis node's pod, built purely from a [`ValidatedCluster`], a pod index
//! and a shard (DESIGN.md "Pods"). No network.
//!
//! A pod is one Redis node for its whole life (`restartPolicy: Never`, `nodes.conf` in an
//! emptyDir): a restarted empty master that kept its id would wipe its replicas (PITFALLS 13).
//! Everything Redis is told comes from arguments, so the pod needs no ConfigMap and the
//! operator can see what shaped it from the pod alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ExecAction, LifecycleHandler, ObjectFieldSelector, Pod, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kredis_api::{labels, AuthMode, NodePorts, ValidatedCluster};

/// Name of the Redis container.
pub const REDIS_CONTAINER: &str = "redis";
/// Name of the exporter container.
pub const EXPORTER_CONTAINER: &str = "exporter";
/// Container port names; the operator reads a pod's ports back from them.
pub const CLIENT_PORT_NAME: &str = "redis";
/// Cluster bus port name.
pub const BUS_PORT_NAME: &str = "bus";
/// Exporter port name.
pub const EXPORTER_PORT_NAME: &str = "metrics";
/// Annotation holding [`spec_hash`] of the inputs that shaped the pod (rolling updates compare it).
pub const SPEC_HASH_ANNOTATION: &str = "kredis.io/spec-hash";
/// Key of the password in the auth Secret.
pub const PASSWORD_KEY: &str = "password";
/// Where the emptyDir with `nodes.conf` is mounted.
const DATA_DIR: &str = "/data";
/// Keys of the TLS Secret (`kubernetes.io/tls` plus `ca.crt`, as cert-manager writes it).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Private key of [`TLS_CERT_KEY`].
pub const TLS_KEY_KEY: &str = "tls.key";
/// CA that signed every node's certificate.
pub const TLS_CA_KEY: &str = "ca.crt";
/// Where the TLS Secret is mounted (read-only) in both containers.
const TLS_DIR: &str = "/etc/kredis/tls";
/// Grace period of a pod: covers a graceful `CLUSTER FAILOVER` of a terminating master (the
/// operator starts it within a second of the deletion; Redis' manual failover gives up after
/// 5 s) plus the preStop wait below, with room for a loaded machine.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
/// The preStop hook waits at most this long for the node to stop being a slot-owning master.
const PRESTOP_WAIT_SECONDS: i64 = 25;
/// Kubernetes well-known label of a node's host name: required anti-affinity between the
/// pods of one shard uses it, so a node loss never takes a master and its replicas together.
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
/// Weight of the preferred anti-affinity that spreads a cluster's pods over nodes.
const SPREAD_WEIGHT: i32 = 50;
/// The user and group both containers run as: `redis` (999:999) of the official image. The
/// image's default user is root (its entrypoint drops to 999 with gosu); the pod runs
/// `redis-server` directly, so it sets the user itself. fsGroup makes the emptyDir writable.
const RUN_AS: i64 = 999;

/// Why a pod cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The index has no ports in the cluster's validated layout.
    #[error("failed to build pod {pod}: index {index} is outside the cluster's port range")]
    IndexOutOfRange {
        /// Pod name.
        pod: String,
        /// Index.
        index: u32,
    },
}

/// The ports of pod `index`, or an error naming it.
pub fn ports(cluster: &ValidatedCluster, index: u32) -> Result<NodePorts, BuildError> {
    cluster
        .ports
        .ports(index)
        .ok_or_else(|| BuildError::IndexOutOfRange {
            pod: cluster.pod_name(index),
            index,
        })
}

/// The owner reference every object the operator creates for `cluster` carries.
pub fn owner_reference(cluster: &ValidatedCluster) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "kredis.io/v1alpha1".into(),
        kind: "KRedis".into(),
        name: cluster.name.clone(),
        uid: cluster.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The pod of Redis node `index` in `shard`.
pub fn build_pod(cluster: &ValidatedCluster, index: u32, shard: u32) -> Result<Pod, BuildError> {
    let ports = ports(cluster, index)?;
    let name = cluster.pod_name(index);
    let host_network = cluster.ports.host_network();
    let mut annotations = BTreeMap::from([(SPEC_HASH_ANNOTATION.to_string(), spec_hash(cluster))]);
    if cluster.exporter_image.is_some() {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), ports.exporter.to_string());
    }
    let mut containers = vec![redis_container(cluster, &ports)];
    if let Some(image) = &cluster.exporter_image {
        containers.push(exporter_container(cluster, image, &ports));
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(labels::pod_labels(&cluster.name, shard, index, None)),
            annotations: Some(annotations),
            owner_references: owner_reference(cluster).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            host_network: Some(host_network),
            // Host-network pods still resolve cluster names.
            dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            affinity: Some(affinity(&cluster.name, shard)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            containers,
            volumes: Some(volumes(cluster)),
            ..PodSpec::default()
        }),
        status: None,
    })
}

fn volumes(cluster: &ValidatedCluster) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(secret) = &cluster.tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Readable by the containers' group (fsGroup), not by others.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: "tls".into(),
        mount_path: TLS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// A stable hash (FNV-1a, 64 bit, hex) of every input that needs a new pod to change (not the
/// index or shard): two pods with the same hash run the same spec. Stable across operator
/// builds, so an upgrade alone never marks pods stale.
pub fn spec_hash(cluster: &ValidatedCluster) -> String {
    // Only what needs a new process: settings Redis takes live are applied with CONFIG SET
    // (crate::rollout) and never replace a pod.
    let mut inputs = serde_json::json!({
        "image": cluster.image,
        "resources": cluster.resources,
        "auth": cluster.auth.secret_name(),
        "exporter": cluster.exporter_image,
        "config": crate::rollout::restart_config(cluster),
        "hostNetwork": cluster.ports.host_network(),
    });
    // Only when set, so clusters without TLS keep the hash they had before TLS existed.
    if let Some(tls) = &cluster.tls {
        inputs["tls"] = serde_json::json!(tls);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in inputs.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn affinity(cluster: &str, shard: u32) -> Affinity {
    let shard_selector = LabelSelector {
        match_labels: Some(BTreeMap::from([
            (labels::INSTANCE.to_string(), cluster.to_string()),
            (labels::SHARD.to_string(), shard.to_string()),
        ])),
        ..LabelSelector::default()
    };
    let cluster_selector = LabelSelector {
        match_labels: Some(labels::cluster_selector(cluster)),
        ..LabelSelector::default()
    };
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            // A master and its replicas never share a worker node.
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(shard_selector),
                topology_key: HOSTNAME_TOPOLOGY.into(),
                ..PodAffinityTerm::default()
            }]),
            // Spread the cluster (and so its masters) over nodes where possible. Roles change
            // with every failover, so the spread is by cluster rather than by a role label.
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: SPREAD_WEIGHT,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(cluster_selector),
                        topology_key: HOSTNAME_TOPOLOGY.into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
        }),
        ..Affinity::default()
    }
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn env_secret(name: &str, secret: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: PASSWORD_KEY.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Both containers: no root, nothing written outside the data emptyDir, no privilege
/// escalation, no capabilities (host ports above 1024 need none).
fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

fn port(name: &str, port: u16, host_network: bool) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        // Declared as host ports in hostNetwork mode so the scheduler refuses collisions.
        host_port: host_network.then_some(i32::from(port)),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The redis-server arguments: everything the operator owns, then the user's directives.
pub fn redis_args(cluster: &ValidatedCluster, ports: &NodePorts) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut set = |k: &str, v: String| {
        args.push(format!("--{k}"));
        args.push(v);
    };
    if cluster.tls.is_some() {
        // TLS only, on the same ports: clients, replication, the bus and MIGRATE.
        set("port", "0".into());
        set("tls-port", ports.client.to_string());
        set("tls-cluster", "yes".into());
        set("tls-replication", "yes".into());
        set("tls-cert-file", format!("{TLS_DIR}/{TLS_CERT_KEY}"));
        set("tls-key-file", format!("{TLS_DIR}/{TLS_KEY_KEY}"));
        set("tls-ca-cert-file", format!("{TLS_DIR}/{TLS_CA_KEY}"));
    } else {
        set("port", ports.client.to_string());
    }
    set("bind", "$(POD_IP)".into());
    set("protected-mode", "no".into());
    set("cluster-enabled", "yes".into());
    set("cluster-config-file", format!("{DATA_DIR}/nodes.conf"));
    set("dir", DATA_DIR.into());
    set("cluster-port", ports.bus.to_string());
    // PITFALLS 29: announce the real address and both ports explicitly.
    set("cluster-announce-ip", "$(POD_IP)".into());
    // With tls-cluster the announced client port is the TLS one (and no plain port).
    let announce = if cluster.tls.is_some() {
        "cluster-announce-tls-port"
    } else {
        "cluster-announce-port"
    };
    set(announce, ports.client.to_string());
    set("cluster-announce-bus-port", ports.bus.to_string());
    set(
        "cluster-node-timeout",
        cluster.cluster_node_timeout.as_millis().to_string(),
    );
    // PITFALLS 16: any replica may take over; Redis never moves replicas on its own.
    set("cluster-replica-validity-factor", "0".into());
    set("cluster-allow-replica-migration", "no".into());
    // A cache node: no persistence (a pod is one node for its whole life anyway).
    set("appendonly", "no".into());
    set("save", String::new());
    set(
        "maxmemory-policy",
        cluster.max_memory_policy.as_redis().into(),
    );
    if let Some(m) = &cluster.max_memory {
        set("maxmemory", m.clone());
    }
    if matches!(cluster.auth, AuthMode::Secret { .. }) {
        // Kubernetes expands $(REDIS_PASSWORD) from the Secret-backed env var.
        set("requirepass", "$(REDIS_PASSWORD)".into());
        set("masterauth", "$(REDIS_PASSWORD)".into());
    }
    for (k, v) in &cluster.config {
        set(k, v.clone());
    }
    if crate::auth::exporter_user_enabled(cluster) {
        // The exporter's own user exists from the start (the operator also adds it live to
        // nodes started without it); $(KREDIS_EXPORTER_PASSWORD) comes from its Secret.
        // One argument per ACL word: redis-server quotes an argument with spaces, which
        // would make the whole line the user name.
        args.push("--user".into());
        args.push(crate::auth::EXPORTER_USER.into());
        args.extend(
            crate::auth::EXPORTER_ACL_RULES
                .split_whitespace()
                .map(str::to_owned),
        );
        args.push(">$(KREDIS_EXPORTER_PASSWORD)".into());
    }
    args
}

fn redis_container(cluster: &ValidatedCluster, ports: &NodePorts) -> Container {
    let host_network = cluster.ports.host_network();
    let mut env = vec![env_field("POD_IP", "status.podIP")];
    if let Some(secret) = cluster.auth.secret_name() {
        env.push(env_secret("REDIS_PASSWORD", secret));
        // redis-cli (preStop hook, humans in `kubectl exec`) reads the password from here.
        env.push(env_secret("REDISCLI_AUTH", secret));
    }
    if crate::auth::exporter_user_enabled(cluster) {
        env.push(env_secret(
            "KREDIS_EXPORTER_PASSWORD",
            &crate::auth::exporter_secret_name(cluster),
        ));
    }
    // Wait while this node is a master that still serves slots, so the operator's graceful
    // failover finishes before Redis gets SIGTERM. A master line with slots has more than 8
    // fields; a replica, a drained master or an unanswering node ends the wait at once.
    let tls_flags = if cluster.tls.is_some() {
        format!(" --tls --cacert {TLS_DIR}/{TLS_CA_KEY} --cert {TLS_DIR}/{TLS_CERT_KEY} --key {TLS_DIR}/{TLS_KEY_KEY}")
    } else {
        String::new()
    };
    let pre_stop = format!(
        "i=0; while [ $i -lt {PRESTOP_WAIT_SECONDS} ]; do \
         n=$(redis-cli --no-auth-warning{tls_flags} -h \"$POD_IP\" -p {port} cluster nodes 2>/dev/null | awk '/myself/ && /master/ {{print NF}}'); \
         if [ -z \"$n\" ] || [ \"$n\" -le 8 ]; then exit 0; fi; sleep 1; i=$((i+1)); done",
        port = ports.client
    );
    Container {
        name: REDIS_CONTAINER.into(),
        image: Some(cluster.image.clone()),
        command: Some(vec!["redis-server".into()]),
        args: Some(redis_args(cluster, ports)),
        env: Some(env),
        ports: Some(vec![
            port(CLIENT_PORT_NAME, ports.client, host_network),
            port(BUS_PORT_NAME, ports.bus, host_network),
        ]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(ports.client)),
                host: None,
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sh".into(), "-c".into(), pre_stop]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Default::default()
        }),
        resources: Some(cluster.resources.clone()),
        security_context: Some(hardened()),
        volume_mounts: Some(
            std::iter::once(VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            })
            .chain(cluster.tls.as_ref().map(|_| tls_mount()))
            .collect(),
        ),
        ..Container::default()
    }
}

fn exporter_container(cluster: &ValidatedCluster, image: &str, ports: &NodePorts) -> Container {
    let scheme = if cluster.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    let mut env = vec![
        env_field("POD_IP", "status.podIP"),
        env_value(
            "REDIS_ADDR",
            format!("{scheme}://$(POD_IP):{}", ports.client),
        ),
        env_value(
            "REDIS_EXPORTER_WEB_LISTEN_ADDRESS",
            format!("$(POD_IP):{}", ports.exporter),
        ),
        env_value("REDIS_EXPORTER_IS_CLUSTER", "false"),
    ];
    if crate::auth::exporter_user_enabled(cluster) {
        env.push(env_value("REDIS_USER", crate::auth::EXPORTER_USER));
        env.push(env_secret(
            "REDIS_PASSWORD",
            &crate::auth::exporter_secret_name(cluster),
        ));
    }
    if cluster.tls.is_some() {
        env.extend([
            env_value(
                "REDIS_EXPORTER_TLS_CLIENT_CERT_FILE",
                format!("{TLS_DIR}/{TLS_CERT_KEY}"),
            ),
            env_value(
                "REDIS_EXPORTER_TLS_CLIENT_KEY_FILE",
                format!("{TLS_DIR}/{TLS_KEY_KEY}"),
            ),
            env_value(
                "REDIS_EXPORTER_TLS_CA_CERT_FILE",
                format!("{TLS_DIR}/{TLS_CA_KEY}"),
            ),
            // The exporter scrapes its own pod's node by IP, which the certificate does not
            // name (pod IPs are not known when it is issued); Go cannot check the CA alone.
            env_value("REDIS_EXPORTER_SKIP_TLS_VERIFICATION", "true"),
        ]);
    }
    Container {
        name: EXPORTER_CONTAINER.into(),
        image: Some(image.into()),
        env: Some(env),
        volume_mounts: cluster.tls.as_ref().map(|_| vec![tls_mount()]),
        ports: Some(vec![port(
            EXPORTER_PORT_NAME,
            ports.exporter,
            cluster.ports.host_network(),
        )]),
        security_context: Some(hardened()),
        ..Container::default()
    }
}

/// A container port of `pod` by name (the operator reads ports back from the pod it built).
pub fn pod_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name == REDIS_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kredis_api::{validate, KRedis, KRedisSpec};

    fn cluster(spec: KRedisSpec) -> ValidatedCluster {
        let mut kr = KRedis::new("cache", spec);
        kr.metadata.namespace = Some("default".into());
        kr.metadata.uid = Some("uid-1".into());
        validate(&kr, &[]).expect("valid")
    }

    #[test]
    fn both_containers_are_hardened() {
        let pod = build_pod(&cluster(KRedisSpec::default()), 0, 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(999));
        assert_eq!(psc.fs_group, Some(999));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert_eq!(spec.containers.len(), 2);
        for c in &spec.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
            assert!(caps.add.is_none());
        }
    }

    #[test]
    fn host_network_pod_follows_the_design() {
        let c = cluster(KRedisSpec::default());
        let pod = build_pod(&c, 4, 1).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("cache-4"));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod_port(&pod, CLIENT_PORT_NAME), Some(10004));
        assert_eq!(pod_port(&pod, BUS_PORT_NAME), Some(20004));
        let exporter = &spec.containers[1];
        assert_eq!(exporter.ports.as_ref().unwrap()[0].host_port, Some(15004));
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann["prometheus.io/port"], "15004");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::SHARD], "1");
        assert_eq!(labels[labels::INDEX], "4");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("KRedis", "uid-1")
        );
        let args = spec.containers[0].args.as_ref().unwrap().join(" ");
        for needle in [
            "--port 10004",
            "--cluster-announce-bus-port 20004",
            "--cluster-replica-validity-factor 0",
            "--cluster-allow-replica-migration no",
            "--requirepass $(REDIS_PASSWORD)",
            "--cluster-config-file /data/nodes.conf",
        ] {
            assert!(args.contains(needle), "{needle} missing from {args}");
        }
        let anti = spec
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        let req = &anti
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        let sel = req
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(sel[labels::SHARD], "1");
    }

    #[test]
    fn pod_network_and_no_auth_no_exporter() {
        let mut spec = KRedisSpec {
            host_network: false,
            ..KRedisSpec::default()
        };
        spec.auth.enabled = false;
        spec.exporter.enabled = false;
        let c = cluster(spec);
        let pod = build_pod(&c, 0, 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(pod_port(&pod, CLIENT_PORT_NAME), Some(6379));
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].host_port,
            None
        );
        let args = spec.containers[0].args.as_ref().unwrap().join(" ");
        assert!(!args.contains("requirepass"));
        assert!(!pod
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("prometheus.io/scrape"));
    }

    #[test]
    fn index_outside_the_layout_is_an_error() {
        let c = cluster(KRedisSpec::default());
        // The index after the last pod is reserved for a rolling update's temporary replica.
        assert!(build_pod(&c, c.pod_count(), 0).is_ok());
        assert!(matches!(
            build_pod(&c, c.pod_count() + 1, 0),
            Err(BuildError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn spec_hash_tracks_restart_inputs_not_counts_or_live_settings() {
        let a = cluster(KRedisSpec::default());
        let b = cluster(KRedisSpec {
            masters: 5,
            max_memory: Some("1gb".into()),
            ..KRedisSpec::default()
        });
        let c = cluster(KRedisSpec {
            image: "redis:7.4".into(),
            ..KRedisSpec::default()
        });
        assert_eq!(spec_hash(&a), spec_hash(&b));
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn spec_hash_of_a_cluster_without_tls_is_what_it_was_before_tls() {
        // Computed on the commit before spec.tls existed: an operator upgrade alone must not
        // roll every pod.
        assert_eq!(
            spec_hash(&cluster(KRedisSpec::default())),
            "64ce74362ec4dfb1"
        );
        let tls = cluster(KRedisSpec {
            tls: Some(kredis_api::TlsSpec {
                secret_name: "cache-tls".into(),
            }),
            ..KRedisSpec::default()
        });
        assert_ne!(spec_hash(&tls), "64ce74362ec4dfb1");
    }

    #[test]
    fn tls_pod_listens_with_tls_only_and_mounts_the_secret() {
        let c = cluster(KRedisSpec {
            tls: Some(kredis_api::TlsSpec {
                secret_name: "cache-tls".into(),
            }),
            ..KRedisSpec::default()
        });
        let pod = build_pod(&c, 0, 0).expect("pod");
        let spec = pod.spec.expect("spec");
        let redis = &spec.containers[0];
        let args = redis.args.as_ref().expect("args").join(" ");
        for needle in [
            "--port 0",
            "--tls-port 10000",
            "--tls-cluster yes",
            "--tls-replication yes",
            "--tls-cert-file /etc/kredis/tls/tls.crt",
            "--tls-key-file /etc/kredis/tls/tls.key",
            "--tls-ca-cert-file /etc/kredis/tls/ca.crt",
            "--cluster-announce-tls-port 10000",
            "--cluster-port 20000",
        ] {
            assert!(args.contains(needle), "{needle} missing from {args}");
        }
        assert!(!args.contains("--cluster-announce-port"), "{args}");
        let volume = spec
            .volumes
            .as_ref()
            .and_then(|v| v.iter().find(|v| v.name == "tls"))
            .and_then(|v| v.secret.as_ref())
            .expect("tls volume");
        assert_eq!(volume.secret_name.as_deref(), Some("cache-tls"));
        let pre_stop = serde_json::to_string(&redis.lifecycle).expect("json");
        assert!(
            pre_stop.contains("--tls --cacert /etc/kredis/tls/ca.crt"),
            "{pre_stop}"
        );
        let exporter = &spec.containers[1];
        let env: BTreeMap<String, String> = exporter
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        assert_eq!(env["REDIS_ADDR"], "rediss://$(POD_IP):10000");
        assert_eq!(
            env["REDIS_EXPORTER_TLS_CA_CERT_FILE"],
            "/etc/kredis/tls/ca.crt"
        );
        for c in [redis, exporter] {
            let mounts = c.volume_mounts.as_ref().expect("mounts");
            assert!(
                mounts
                    .iter()
                    .any(|m| m.name == "tls" && m.read_only == Some(true)),
                "{}: {mounts:?}",
                c.name
            );
        }
    }

    #[test]
    fn the_exporter_logs_in_as_its_own_user() {
        let pod = build_pod(&cluster(KRedisSpec::default()), 0, 0).expect("pod");
        let spec = pod.spec.expect("spec");
        let args = spec.containers[0].args.clone().expect("args");
        let at = args.iter().position(|a| a == "--user").expect("--user");
        assert_eq!(args[at + 1], "kredis-exporter");
        assert!(args.contains(&">$(KREDIS_EXPORTER_PASSWORD)".to_string()));
        let exporter = &spec.containers[1];
        let env = exporter.env.as_ref().expect("env");
        let user = env
            .iter()
            .find(|e| e.name == "REDIS_USER")
            .expect("REDIS_USER");
        assert_eq!(user.value.as_deref(), Some("kredis-exporter"));
        let pw = env
            .iter()
            .find(|e| e.name == "REDIS_PASSWORD")
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .expect("REDIS_PASSWORD from a Secret");
        assert_eq!(pw.name, "cache-exporter");

        // No password anywhere: no exporter user either.
        let open = cluster(KRedisSpec {
            auth: kredis_api::AuthSpec {
                enabled: false,
                secret_name: None,
            },
            ..KRedisSpec::default()
        });
        let pod = build_pod(&open, 0, 0).expect("pod");
        let args = pod.spec.expect("spec").containers[0]
            .args
            .clone()
            .expect("args");
        assert!(!args.contains(&"--user".to_string()));
    }
}
