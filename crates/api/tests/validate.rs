//! validate(): a table of invalid specs with the message each must produce, valid specs, and a
//! property test that validated hostNetwork clusters never share a host port.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kredis_api::{validate, AuthMode, KRedis, KRedisSpec, PortLayout, ValidatedCluster};
use proptest::prelude::*;

fn kredis(name: &str, edit: impl FnOnce(&mut KRedisSpec)) -> KRedis {
    let mut spec = KRedisSpec::default();
    edit(&mut spec);
    let mut k = KRedis::new(name, spec);
    k.metadata.namespace = Some("default".into());
    k
}

/// A KRedis created at `secs` after the epoch.
fn created(mut k: KRedis, secs: i64) -> KRedis {
    k.metadata.creation_timestamp = Some(Time(Timestamp::from_second(secs).expect("timestamp")));
    k
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

type Edit = fn(&mut KRedisSpec);

#[test]
fn invalid_specs_are_rejected_with_what_to_fix() {
    let long = "a".repeat(60);
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        ("masters 0", "cache", |s| s.masters = 0, "spec.masters: 0 is out of range: set a value from 1 to 500"),
        ("masters negative", "cache", |s| s.masters = -3, "spec.masters: -3 is out of range: set a value from 1 to 500"),
        ("masters too many", "cache", |s| s.masters = 501, "spec.masters: 501 is out of range"),
        ("negative replicas", "cache", |s| s.replicas_per_master = -1, "spec.replicasPerMaster: -1 is out of range: set a value from 0 to 5"),
        ("too many replicas", "cache", |s| s.replicas_per_master = 6, "spec.replicasPerMaster: 6 is out of range"),
        ("too many pods", "cache", |s| { s.masters = 300; s.replicas_per_master = 3; s.base_port = 2000 }, "1200 pods exceeds the limit of 1000: lower masters or replicasPerMaster"),
        ("bus port overflow", "cache", |s| s.base_port = 55530, "the highest bus port would be 65536 (> 65535): set basePort to at most 55529"),
        ("bus port overflow by far", "cache", |s| { s.base_port = 55000; s.masters = 500 }, "with 1000 pods (+1 reserved for rolling updates) from basePort 55000 the highest bus port would be 66000 (> 65535): set basePort to at most 54535"),
        ("privileged base port", "cache", |s| s.base_port = 80, "spec.basePort: 80 is a privileged port: set basePort to 1024 or more"),
        ("negative base port", "cache", |s| s.base_port = -1, "spec.basePort: -1 is negative"),
        ("empty image", "cache", |s| s.image = " ".into(), "spec.image: image is empty"),
        ("bad maxMemory", "cache", |s| s.max_memory = Some("1 gigabyte".into()), "spec.maxMemory: \"1 gigabyte\" is not a Redis memory size"),
        ("maxMemory unit only", "cache", |s| s.max_memory = Some("gb".into()), "is not a Redis memory size"),
        ("node timeout too short", "cache", |s| s.cluster_node_timeout_millis = 10, "spec.clusterNodeTimeoutMillis: 10 is out of range: set a value from 500 to 120000"),
        ("secret with auth off", "cache", |s| { s.auth.enabled = false; s.auth.secret_name = Some("pw".into()) }, "secretName \"pw\" is set but auth.enabled is false"),
        ("bad secret name", "cache", |s| s.auth.secret_name = Some("My_Secret".into()), "spec.auth.secretName: \"My_Secret\" is not a valid Secret name"),
        ("empty exporter image", "cache", |s| s.exporter.image = String::new(), "spec.exporter.image: exporter image is empty"),
        ("config cluster-enabled", "cache", |s| s.config = config(&[("cluster-enabled", "no")]), "spec.config.cluster-enabled: directive \"cluster-enabled\" is managed by the operator (the operator always runs Redis in cluster mode): remove it from spec.config"),
        ("config port", "cache", |s| s.config = config(&[("port", "7000")]), "directive \"port\" is managed by the operator"),
        ("config requirepass upper case", "cache", |s| s.config = config(&[("REQUIREPASS", "x")]), "directive \"requirepass\" is managed by the operator (use spec.auth"),
        ("config rename-command", "cache", |s| s.config = config(&[("rename-command", "CONFIG \"\"")]), "directive \"rename-command\" is managed"),
        ("config announce prefix", "cache", |s| s.config = config(&[("cluster-announce-ip", "1.2.3.4")]), "directive \"cluster-announce-ip\" is managed by the operator (the operator announces"),
        ("config dir", "cache", |s| s.config = config(&[("dir", "/data")]), "directive \"dir\" is managed"),
        ("config maxmemory", "cache", |s| s.config = config(&[("maxmemory", "1gb")]), "(use spec.maxMemory)"),
        ("config newline injection", "cache", |s| s.config = config(&[("hz", "10\nrequirepass x")]), "spec.config.hz: value contains a line break"),
        ("config bad key", "cache", |s| s.config = config(&[("hz x", "10")]), "is not a redis.conf directive name"),
        ("config duplicate key", "cache", |s| s.config = config(&[("HZ", "10"), ("hz", "20")]), "is given twice"),
        ("name too long", &long, |_| {}, "is 60 characters: use at most 59 so pod names <name>-<index> stay within 63"),
        ("name with dots", "my.cache", |_| {}, "metadata.name: name \"my.cache\" must consist of lower-case letters, digits and '-'"),
        ("name upper case", "Cache", |_| {}, "must consist of lower-case letters"),
    ];
    assert!(cases.len() >= 20);
    for (what, name, edit, expected) in cases {
        let errors = validate(&kredis(name, edit), &[])
            .expect_err(&format!("{what}: expected a validation error"));
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains(expected)),
            "{what}: expected an error containing {expected:?}, got {text:#?}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let errors = validate(
        &kredis("cache", |s| {
            s.masters = 0;
            s.replicas_per_master = -1;
            s.image = String::new();
        }),
        &[],
    )
    .expect_err("invalid");
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.masters", "spec.replicasPerMaster", "spec.image"]
    );
}

#[test]
fn default_spec_is_valid_and_carries_everything_downstream_needs() {
    let v: ValidatedCluster = validate(&kredis("cache", |_| {}), &[]).expect("valid");
    assert_eq!(
        (v.name.as_str(), v.namespace.as_str()),
        ("cache", "default")
    );
    assert_eq!((v.masters, v.replicas_per_master, v.pod_count()), (3, 1, 6));
    assert_eq!(
        v.ports,
        PortLayout::HostNetwork {
            base: 10000,
            max_pods: 7
        }
    );
    let p = v.ports.ports(5).expect("index 5 in range");
    assert_eq!((p.client, p.exporter, p.bus), (10005, 15005, 20005));
    // Index 6 is the reserved rolling-update index; 7 is outside.
    assert_eq!(v.ports.ports(6).map(|p| p.client), Some(10006));
    assert_eq!(v.ports.ports(7), None);
    assert_eq!(
        v.auth,
        AuthMode::Secret {
            name: "cache-auth".into(),
            managed: true
        }
    );
    assert_eq!(v.image, "redis:7.2");
    assert_eq!(
        v.exporter_image.as_deref(),
        Some("oliver006/redis_exporter:v1.62.0")
    );
    assert_eq!(v.cluster_node_timeout.as_millis(), 5000);
    assert_eq!(v.pod_name(4), "cache-4");
    assert!(v.recover_lost_slots && !v.paused);
    assert!(v.warnings.is_empty());
}

#[test]
fn valid_variants() {
    // Pod network: basePort does not matter, every pod on 6379.
    let v = validate(
        &kredis("pods", |s| {
            s.host_network = false;
            s.base_port = 80
        }),
        &[],
    )
    .expect("valid");
    let p = v.ports.ports(42).expect("any index");
    assert_eq!((p.client, p.bus, p.exporter), (6379, 16379, 9121));
    // Highest allowed bus port is exactly 65535, for the index after the last pod (reserved
    // for the temporary replica of a rolling update).
    let v = validate(&kredis("edge", |s| s.base_port = 55529), &[]).expect("valid");
    assert_eq!(v.ports.ports(6).map(|p| p.bus), Some(65535));
    assert!(validate(&kredis("edge", |s| s.base_port = 55530), &[]).is_err());
    // One master, no replicas, auth off, an existing Secret, extra config, max memory.
    let v = validate(
        &kredis("small", |s| {
            s.masters = 1;
            s.replicas_per_master = 0;
            s.auth.enabled = false;
            s.max_memory = Some("512MB".into());
            s.config = config(&[("Appendonly", "yes"), ("hz", "20")]);
        }),
        &[],
    )
    .expect("valid");
    assert_eq!(v.auth, AuthMode::Disabled);
    assert_eq!(v.config, config(&[("appendonly", "yes"), ("hz", "20")]));
    assert_eq!(v.warnings.len(), 1, "fewer than 3 masters warns");
    let v = validate(
        &kredis("named", |s| s.auth.secret_name = Some("my-secret".into())),
        &[],
    )
    .expect("valid");
    assert_eq!(
        v.auth,
        AuthMode::Secret {
            name: "my-secret".into(),
            managed: false
        }
    );
    // 59 characters is the longest name.
    assert!(validate(&kredis(&"a".repeat(59), |_| {}), &[]).is_ok());
}

#[test]
fn overlapping_host_ports_reject_the_younger_cluster_only() {
    let old = created(kredis("old", |_| {}), 1_000);
    // Exporter range of `old` (15000-15006, six pods and the rolling-update index) is the client
    // range of `new` (PITFALLS 30).
    let new = created(kredis("new", |s| s.base_port = 15000), 2_000);
    let errors = validate(&new, &[old.clone(), new.clone()]).expect_err("overlap");
    let text = errors[0].to_string();
    assert!(
        text.contains(
            "client ports 15000-15006 overlap the exporter ports 15000-15006 of KRedis default/old"
        ),
        "{text}"
    );
    assert!(
        validate(&old, &[old.clone(), new.clone()]).is_ok(),
        "the older cluster stays valid"
    );
    // Bus range of `old` (20000-20006) against client range of a third.
    let bus = created(kredis("bus", |s| s.base_port = 20003), 3_000);
    let text = validate(&bus, std::slice::from_ref(&old)).expect_err("overlap")[0].to_string();
    assert!(text.contains("overlap the bus ports 20000-20006"), "{text}");
    // Other namespaces share the node's ports too; pod-network clusters do not count.
    let mut elsewhere = created(kredis("old", |_| {}), 500);
    elsewhere.metadata.namespace = Some("other".into());
    assert!(validate(&old, &[elsewhere]).is_err());
    let podnet = created(kredis("podnet", |s| s.host_network = false), 1);
    assert!(validate(&old, &[podnet]).is_ok());
    // Adjacent ranges are fine.
    let next = created(kredis("next", |s| s.base_port = 10007), 4_000);
    assert!(validate(&next, &[old]).is_ok());
}

fn host_ports(v: &ValidatedCluster) -> Vec<u16> {
    (0..v.pod_count())
        .flat_map(|i| {
            let p = v.ports.ports(i).expect("index in range");
            [p.client, p.exporter, p.bus]
        })
        .collect()
}

proptest! {
    /// Clusters admitted one after another (each validated against those admitted before)
    /// never share a host port, and every port they use is <= 65535 and unique within a cluster.
    #[test]
    fn validated_clusters_never_share_host_ports(
        specs in proptest::collection::vec((1024i32..60000, 1i32..8, 0i32..3), 1..12)
    ) {
        let mut admitted: Vec<KRedis> = Vec::new();
        let mut used: Vec<(String, u16)> = Vec::new();
        for (i, (base, masters, replicas)) in specs.into_iter().enumerate() {
            let k = created(
                kredis(&format!("c{i}"), |s| {
                    s.base_port = base;
                    s.masters = masters;
                    s.replicas_per_master = replicas;
                }),
                i as i64,
            );
            if let Ok(v) = validate(&k, &admitted) {
                let ports = host_ports(&v);
                let mut unique = ports.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), ports.len(), "ports repeat inside {}", v.name);
                for port in ports {
                    if let Some((owner, _)) = used.iter().find(|(_, p)| *p == port) {
                        prop_assert!(false, "port {} of {} is also used by {}", port, v.name, owner);
                    }
                    used.push((v.name.clone(), port));
                }
                admitted.push(k);
            }
        }
    }
}
