//! Invalid KRedis objects end to end against `kredis dev`. Each case is either refused by the
//! API server at create time (devkube enforces the CRD's OpenAPI schema: types, ranges, enums,
//! unknown fields under `fieldValidation=Strict`; it runs no CEL rules and no regex patterns),
//! or accepted and then reported by the operator: phase Invalid, Ready False with reason
//! InvalidSpec and a message naming the field and what to fix, a Warning Event InvalidSpec, and
//! no pods. Cases that need a running Redis cluster (port overlap with a live cluster, an
//! immutable-field edit, pausing, a Secret created late, a scale-out into a neighbour's ports)
//! share as few clusters as possible: one 3x1, two 3x0 and one 1x0, one control plane each
//! test function.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::Request;
use common::{eventually, start, Harness, READY};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kredis_api::{KRedis, KRedisStatus, NodeRole, Phase};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

/// How long the operator may take to report a spec as Invalid (one reconcile, no Redis).
const INVALID: Duration = Duration::from_secs(30);
/// How long a paused cluster is watched for pods the operator must not create.
const PAUSE_WATCH: Duration = Duration::from_secs(8);

/// A case the API server must refuse at create time.
struct Rejected {
    name: &'static str,
    spec: Value,
    /// Send `fieldValidation=Strict` (kubectl's default), so undeclared fields are refused.
    strict: bool,
    /// Expected HTTP status code.
    code: u16,
    /// Substrings of the API server's message: the field and what is wrong.
    needles: &'static [&'static str],
}

/// A case the API server accepts and the operator must report Invalid.
struct Invalid {
    name: String,
    spec: Value,
    /// The field the first (and only) error names.
    field: &'static str,
    /// Further substrings of the message: what is wrong and what to do.
    needles: &'static [&'static str],
}

/// Creates a KRedis from raw JSON over the API, bypassing the typed client (which could not
/// even serialize a wrong type); `strict` adds `fieldValidation=Strict`.
async fn post_raw(
    h: &Harness,
    name: &str,
    spec: &Value,
    strict: bool,
) -> Result<Value, kube::Error> {
    let body = json!({
        "apiVersion": "kredis.io/v1alpha1",
        "kind": "KRedis",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    });
    let mut uri = "/apis/kredis.io/v1alpha1/namespaces/default/kredis".to_string();
    if strict {
        uri.push_str("?fieldValidation=Strict");
    }
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .expect("request");
    h.client.request::<Value>(request).await
}

async fn assert_rejected(h: &Harness, case: &Rejected) {
    match post_raw(h, case.name, &case.spec, case.strict).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(
                s.code, case.code,
                "case {}: expected HTTP {}, got {s:?}",
                case.name, case.code
            );
            for needle in case.needles {
                assert!(
                    s.message.contains(needle),
                    "case {}: the API server's message should contain {needle:?}: {}",
                    case.name,
                    s.message
                );
            }
        }
        Err(e) => panic!("case {}: expected an API error, got {e}", case.name),
        Ok(obj) => panic!(
            "case {}: the API server accepted an invalid KRedis: {obj:#}",
            case.name
        ),
    }
    assert!(
        h.kredis().get_opt(case.name).await.expect("get").is_none(),
        "case {}: a refused KRedis was stored",
        case.name
    );
}

/// The `Ready` condition of a status.
fn ready_condition(
    s: &KRedisStatus,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == "Ready")
}

/// Waits until the operator reports `name` Invalid for its current generation, then checks
/// the Ready condition, the Warning Event and that the cluster has no pods. Returns the
/// Ready message.
async fn assert_invalid(h: &Harness, name: &str, field: &str, needles: &[&str]) -> String {
    let api = h.kredis();
    let k: KRedis = eventually(&format!("{name} to be reported Invalid"), INVALID, || {
        let api = api.clone();
        async move {
            let k = api.get(name).await.ok()?;
            let s = k.status.as_ref()?;
            (s.phase == Some(Phase::Invalid) && s.observed_generation == k.metadata.generation)
                .then_some(k)
        }
    })
    .await;
    let status = k.status.as_ref().expect("status");
    let ready = ready_condition(status).expect("a Ready condition");
    assert_eq!(ready.status, "False", "{name}: {ready:?}");
    assert_eq!(ready.reason, "InvalidSpec", "{name}: {ready:?}");
    // Exactly the expected error (a case must not pass because of some other mistake).
    assert!(
        ready.message.starts_with(&format!("{field}: ")),
        "{name}: the message should name {field} first: {}",
        ready.message
    );
    for needle in needles {
        assert!(
            ready.message.contains(needle),
            "{name}: the message should contain {needle:?}: {}",
            ready.message
        );
    }
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(
        &format!("a Warning Event InvalidSpec about {name}"),
        INVALID,
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                            && e.reason.as_deref() == Some("InvalidSpec")
                            && e.type_.as_deref() == Some("Warning")
                            && e.note.as_deref().is_some_and(|n| n.contains(field))
                    })
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        h.pod_names(name).await,
        Vec::<String>::new(),
        "{name}: an invalid KRedis got pods"
    );
    ready.message.clone()
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A 3x1 spec whose host ports (base..base+5, +5000, +10000) overlap no other case's.
fn spec_at(base: u16, extra: Value) -> Value {
    let mut spec = json!({"masters": 3, "replicasPerMaster": 1, "basePort": base});
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    spec
}

/// Every case that needs no Redis, on one control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_or_reported_without_pods() {
    let started = Instant::now();
    let h = start(3, true).await;
    // A healthy cluster next to every bad one: none of them may touch it.
    h.create(
        "bystander",
        json!({"masters": 1, "replicasPerMaster": 0, "basePort": 13000}),
    )
    .await;
    let bystander = h.ready("bystander").await;
    let bystander_pods = pod_uids(&h, "bystander").await;

    // (a) Refused by the API server's schema check.
    let rejected = [
        Rejected {
            name: "zero-masters",
            spec: json!({"masters": 0}),
            strict: false,
            code: 422,
            needles: &["spec.masters", "greater than or equal to 1"],
        },
        Rejected {
            name: "negative-replicas",
            spec: json!({"replicasPerMaster": -1}),
            strict: false,
            code: 422,
            needles: &["spec.replicasPerMaster", "greater than or equal to 0"],
        },
        Rejected {
            name: "too-many-masters",
            spec: json!({"masters": 600}),
            strict: false,
            code: 422,
            needles: &["spec.masters", "less than or equal to 500"],
        },
        Rejected {
            name: "too-many-replicas",
            spec: json!({"replicasPerMaster": 6}),
            strict: false,
            code: 422,
            needles: &["spec.replicasPerMaster", "less than or equal to 5"],
        },
        Rejected {
            name: "privileged-port",
            spec: json!({"basePort": 80}),
            strict: false,
            code: 422,
            needles: &["spec.basePort", "greater than or equal to 1024"],
        },
        Rejected {
            name: "masters-as-string",
            spec: json!({"masters": "three"}),
            strict: false,
            code: 422,
            needles: &["spec.masters", "must be of type integer"],
        },
        Rejected {
            name: "short-node-timeout",
            spec: json!({"clusterNodeTimeoutMillis": 100}),
            strict: false,
            code: 422,
            needles: &[
                "spec.clusterNodeTimeoutMillis",
                "greater than or equal to 500",
            ],
        },
        Rejected {
            name: "unknown-policy",
            spec: json!({"maxMemoryPolicy": "evict-whatever"}),
            strict: false,
            code: 422,
            needles: &["spec.maxMemoryPolicy", "Unsupported value"],
        },
        Rejected {
            name: "misspelled-field",
            spec: json!({"mastres": 3}),
            strict: true,
            code: 400,
            needles: &["strict decoding error", "unknown field \"spec.mastres\""],
        },
        Rejected {
            name: "misspelled-nested-field",
            spec: json!({"auth": {"passwrd": "hunter2"}}),
            strict: true,
            code: 400,
            needles: &["unknown field \"spec.auth.passwrd\""],
        },
        Rejected {
            name: "fractional-masters",
            spec: json!({"masters": 3.5}),
            strict: false,
            code: 422,
            needles: &["spec.masters", "must be of type integer"],
        },
        Rejected {
            name: "huge-masters",
            spec: json!({"masters": 10_000_000_000_i64}),
            strict: false,
            code: 422,
            needles: &["spec.masters", "less than or equal to 500"],
        },
        Rejected {
            name: "port-beyond-range",
            spec: json!({"basePort": 70000}),
            strict: false,
            code: 422,
            needles: &["spec.basePort", "less than or equal to 55535"],
        },
        Rejected {
            name: "spec-as-string",
            spec: json!("three masters please"),
            strict: false,
            code: 422,
            needles: &["spec", "must be of type object"],
        },
        Rejected {
            name: "host-network-as-string",
            spec: json!({"hostNetwork": "yes"}),
            strict: false,
            code: 422,
            needles: &["spec.hostNetwork", "must be of type boolean"],
        },
        Rejected {
            name: "config-as-list",
            spec: json!({"config": ["maxmemory-samples 5"]}),
            strict: false,
            code: 422,
            needles: &["spec.config", "must be of type object"],
        },
        Rejected {
            name: "config-value-as-number",
            spec: json!({"config": {"maxmemory-samples": 5}}),
            strict: false,
            code: 422,
            needles: &["maxmemory-samples", "must be of type string"],
        },
        Rejected {
            name: "auth-enabled-as-string",
            spec: json!({"auth": {"enabled": "yes"}}),
            strict: false,
            code: 422,
            needles: &["spec.auth.enabled", "must be of type boolean"],
        },
        Rejected {
            name: "exporter-as-boolean",
            spec: json!({"exporter": true}),
            strict: false,
            code: 422,
            needles: &["spec.exporter", "must be of type object"],
        },
        Rejected {
            name: "paused-as-number",
            spec: json!({"paused": 1}),
            strict: false,
            code: 422,
            needles: &["spec.paused", "must be of type boolean"],
        },
        Rejected {
            // The CRD's CEL rule: 600 pods (+1 reserved) from 55000 put the highest bus port
            // at 65600. The operator's validate() says the same for servers without CEL.
            name: "bus-overflow",
            spec: json!({"masters": 100, "replicasPerMaster": 5, "basePort": 55000}),
            strict: false,
            code: 422,
            needles: &[
                "spec: Invalid value: \"object\": in hostNetwork mode the highest bus port",
                "must be <= 65535: lower basePort or the number of pods",
            ],
        },
        Rejected {
            // A wrong type stops the CEL rules from running (as in kube-apiserver), and the
            // message says so: the port rule would also fail here.
            name: "type-error-before-cel",
            spec: json!({"masters": 100, "replicasPerMaster": 5, "basePort": 55000, "config": 7}),
            strict: false,
            code: 422,
            needles: &[
                "spec.config",
                "must be of type object",
                "some validation rules were not checked",
            ],
        },
    ];
    for case in &rejected {
        assert_rejected(&h, case).await;
    }

    // (b) Accepted by the API server (the checks need other clusters, Secrets or more than a
    // schema can say), reported Invalid by the operator.
    // Each case gets its own basePort so that its only error is the one under test.
    let long_name = format!("a{}", "b".repeat(59));
    assert_eq!(long_name.len(), 60);
    let invalid = vec![
        Invalid {
            // Within the schema's ranges, but 200*(1+5) = 1200 pods.
            name: "too-many-pods".into(),
            spec: json!({"masters": 200, "replicasPerMaster": 5, "basePort": 40000}),
            field: "spec.masters",
            needles: &["1200 pods exceeds the limit of 1000"],
        },
        Invalid {
            name: "not-cluster-mode".into(),
            spec: spec_at(20000, json!({"config": {"cluster-enabled": "no"}})),
            field: "spec.config.cluster-enabled",
            needles: &["managed by the operator", "remove it from spec.config"],
        },
        Invalid {
            name: "renamed-command".into(),
            spec: spec_at(20100, json!({"config": {"rename-command": "CLUSTER \"\""}})),
            field: "spec.config.rename-command",
            needles: &["CLUSTER, CONFIG and MIGRATE", "remove it from spec.config"],
        },
        Invalid {
            name: "own-port".into(),
            spec: spec_at(20200, json!({"config": {"port": "6380"}})),
            field: "spec.config.port",
            needles: &["spec.basePort", "remove it from spec.config"],
        },
        Invalid {
            // Directive names are case-insensitive in redis.conf.
            name: "upper-case-directive".into(),
            spec: spec_at(20300, json!({"config": {"RequirePass": "x"}})),
            field: "spec.config.RequirePass",
            needles: &["spec.auth", "remove it from spec.config"],
        },
        Invalid {
            // A line break would smuggle a denied directive into redis.conf.
            name: "smuggled-directive".into(),
            spec: spec_at(
                20400,
                json!({"config": {"maxmemory-samples": "5\nrename-command CONFIG \"\""}}),
            ),
            field: "spec.config.maxmemory-samples",
            needles: &["line break", "single-line value"],
        },
        Invalid {
            name: "lots-of-memory".into(),
            spec: spec_at(20500, json!({"maxMemory": "lots"})),
            field: "spec.maxMemory",
            needles: &["\"lots\"", "such as 1gb"],
        },
        Invalid {
            name: long_name.clone(),
            spec: spec_at(20600, json!({})),
            field: "metadata.name",
            needles: &["60 characters", "at most 59"],
        },
        Invalid {
            name: "secret-without-auth".into(),
            spec: spec_at(
                20700,
                json!({"auth": {"enabled": false, "secretName": "some-secret"}}),
            ),
            field: "spec.auth.secretName",
            needles: &["auth.enabled is false"],
        },
        Invalid {
            name: "missing-secret".into(),
            spec: spec_at(20800, json!({"auth": {"secretName": "nope"}})),
            field: "spec.auth.secretName",
            needles: &[
                "Secret nope does not exist",
                "create it with a key `password`",
            ],
        },
        Invalid {
            name: "empty-image".into(),
            spec: spec_at(21000, json!({"image": " "})),
            field: "spec.image",
            needles: &["image is empty", "such as redis:7.2"],
        },
        Invalid {
            name: "empty-exporter-image".into(),
            spec: spec_at(21100, json!({"exporter": {"enabled": true, "image": ""}})),
            field: "spec.exporter.image",
            needles: &["exporter image is empty", "exporter.enabled: false"],
        },
        Invalid {
            // Hostile: read a file of the node into the config.
            name: "include-file".into(),
            spec: spec_at(21200, json!({"config": {"include": "/etc/passwd"}})),
            field: "spec.config.include",
            needles: &["extra files are not mounted", "remove it from spec.config"],
        },
        Invalid {
            name: "load-module".into(),
            spec: spec_at(21300, json!({"config": {"loadmodule": "/tmp/evil.so"}})),
            field: "spec.config.loadmodule",
            needles: &["modules are not mounted"],
        },
        Invalid {
            // Hostile: a second superuser, or a default user the operator cannot log in as.
            name: "acl-user".into(),
            spec: spec_at(21400, json!({"config": {"user": "default off"}})),
            field: "spec.config.user",
            needles: &["ACL users"],
        },
        Invalid {
            name: "daemonize".into(),
            spec: spec_at(21500, json!({"config": {"daemonize": "yes"}})),
            field: "spec.config.daemonize",
            needles: &["foreground"],
        },
        Invalid {
            name: "announce-other-ip".into(),
            spec: spec_at(
                21600,
                json!({"config": {"cluster-announce-ip": "10.9.9.9"}}),
            ),
            field: "spec.config.cluster-announce-ip",
            needles: &["announces the pod's address"],
        },
        Invalid {
            name: "replicate-elsewhere".into(),
            spec: spec_at(21700, json!({"config": {"replicaof": "10.9.9.9 6379"}})),
            field: "spec.config.replicaof",
            needles: &["decides which node replicates which"],
        },
        Invalid {
            name: "directive-with-space".into(),
            spec: spec_at(21800, json!({"config": {"maxmemory samples": "5"}})),
            field: "spec.config.maxmemory samples",
            needles: &["not a redis.conf directive name"],
        },
        Invalid {
            // Keys are case-insensitive: two spellings of one directive.
            name: "directive-twice".into(),
            spec: spec_at(
                21900,
                json!({"config": {"MAXMEMORY-SAMPLES": "6", "maxmemory-samples": "5"}}),
            ),
            field: "spec.config.maxmemory-samples",
            needles: &["given twice"],
        },
        Invalid {
            name: "negative-memory".into(),
            spec: spec_at(22000, json!({"maxMemory": "-1gb"})),
            field: "spec.maxMemory",
            needles: &["\"-1gb\""],
        },
        Invalid {
            name: "tls-port".into(),
            spec: spec_at(22100, json!({"config": {"tls-port": "6390"}})),
            field: "spec.config.tls-port",
            needles: &["needs TLS: set spec.tls.secretName"],
        },
        Invalid {
            name: "tls-file-with-tls".into(),
            spec: spec_at(
                22300,
                json!({"tls": {"secretName": "some-tls"}, "config": {"tls-cert-file": "/x.crt"}}),
            ),
            field: "spec.config.tls-cert-file",
            needles: &["managed by the operator", "settable are tls-auth-clients"],
        },
        Invalid {
            name: "tls-secret-bad-name".into(),
            spec: spec_at(22400, json!({"tls": {"secretName": "Not_A_Name"}})),
            field: "spec.tls.secretName",
            needles: &["not a valid Secret name"],
        },
        Invalid {
            name: "tls-secret-missing".into(),
            spec: spec_at(22500, json!({"tls": {"secretName": "no-such-tls"}})),
            field: "spec.tls.secretName",
            needles: &[
                "Secret no-such-tls does not exist",
                "tls.crt, tls.key and ca.crt",
            ],
        },
        Invalid {
            name: "working-dir".into(),
            spec: spec_at(22200, json!({"config": {"dir": "/"}})),
            field: "spec.config.dir",
            needles: &["emptyDir"],
        },
        Invalid {
            name: "secret-without-password".into(),
            spec: spec_at(20900, json!({"auth": {"secretName": "no-password-key"}})),
            field: "spec.auth.secretName",
            needles: &["Secret no-password-key has no", "key `password`"],
        },
    ];
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &secret("no-password-key", &[("pass", "hunter2")]),
        )
        .await
        .expect("create a Secret without a password key");
    for case in &invalid {
        h.create(&case.name, case.spec.clone()).await;
    }
    for case in &invalid {
        assert_invalid(&h, &case.name, case.field, case.needles).await;
    }
    // No later reconcile changed its mind: still no pod anywhere in the namespace but the
    // bystander's, and no KRedis left Invalid.
    let pods = h
        .pods()
        .list(&ListParams::default().labels("app.kubernetes.io/instance!=bystander"))
        .await
        .expect("list pods");
    assert!(
        pods.items.is_empty(),
        "pods exist: {:?}",
        pods.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
    for case in &invalid {
        let k = h.kredis().get(&case.name).await.expect("get");
        assert_eq!(
            k.status.and_then(|s| s.phase),
            Some(Phase::Invalid),
            "{}",
            case.name
        );
    }
    // The bystander: same pods, same node ids, still Ready.
    assert_eq!(pod_uids(&h, "bystander").await, bystander_pods);
    let after = h.ready("bystander").await;
    assert_eq!(node_ids(&after), node_ids(&bystander));
    eprintln!(
        "invalid_specs_are_refused_or_reported_without_pods: {} refused, {} reported Invalid, bystander untouched, {:?}",
        rejected.len(),
        invalid.len(),
        started.elapsed()
    );
}

/// Pod name -> uid of a cluster's live pods.
async fn pod_uids(h: &Harness, name: &str) -> BTreeMap<String, String> {
    let list = h
        .pods()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .expect("list pods");
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

/// Pod name -> node id from a status.
fn node_ids(s: &KRedisStatus) -> BTreeMap<String, String> {
    s.nodes
        .iter()
        .map(|n| (n.pod.clone(), n.node_id.clone().unwrap_or_default()))
        .collect()
}

/// The live-cluster cases on one 3x1 cluster: a newcomer whose ports overlap it, an edit of
/// the immutable basePort, and pausing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_survives_bad_edits_and_pauses() {
    let started = Instant::now();
    let h = start(3, true).await;
    h.create("first", spec_at(20000, json!({}))).await;
    let before = h.ready("first").await;
    let uids = pod_uids(&h, "first").await;
    assert_eq!(uids.len(), 6, "{uids:?}");
    let ids = node_ids(&before);
    assert!(ids.values().all(|id| !id.is_empty()), "{ids:?}");
    eprintln!("first Ready after {:?}", started.elapsed());

    // Newcomers whose client, exporter or bus ports overlap first's: Invalid, first untouched.
    let newcomers: [(&str, u16, &[&str]); 3] = [
        (
            "second",
            20003,
            &["client ports 20003-20009 overlap the client ports 20000-20006 of KRedis default/first"],
        ),
        (
            "bus-clash",
            10002,
            &["bus ports 20002-20008 overlap the client ports 20000-20006 of KRedis default/first"],
        ),
        (
            "exporter-clash",
            25003,
            &[
                "client ports 25003-25009 overlap the exporter ports 25000-25006 of KRedis default/first",
                "exporter ports 30003-30009 overlap the bus ports 30000-30006 of KRedis default/first",
            ],
        ),
    ];
    for (name, base, _) in &newcomers {
        h.create(name, spec_at(*base, json!({}))).await;
    }
    for (name, _, needles) in &newcomers {
        let message = assert_invalid(&h, name, "spec.basePort", needles).await;
        assert!(message.contains("choose a basePort"), "{message}");
    }
    let first = h.kredis().get("first").await.expect("get first");
    let status = first.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Ready), "first: {status:#?}");
    assert_eq!(node_ids(&status), ids, "first's node ids changed");
    assert_eq!(pod_uids(&h, "first").await, uids, "first's pods changed");
    // Gone, so none can become valid behind the later steps' backs.
    for (name, _, _) in &newcomers {
        h.kredis()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete a newcomer");
    }
    eventually("the newcomers to be deleted", READY, || async {
        for (name, _, _) in &newcomers {
            if h.kredis().get_opt(name).await.ok()?.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;

    // basePort and hostNetwork are immutable: the CRD's transition rules refuse the edit (the
    // operator would report Invalid on a server without CEL; topology.rs tests that), and the
    // same patch with an allowed change in it is refused whole.
    let generation = h
        .kredis()
        .get("first")
        .await
        .expect("get")
        .metadata
        .generation;
    for (edit, needle) in [
        (
            json!({"basePort": 20100}),
            "spec.basePort: Invalid value: \"integer\": basePort is immutable: create a new KRedis",
        ),
        (
            json!({"hostNetwork": false, "masters": 4}),
            "spec.hostNetwork: Invalid value: \"boolean\": hostNetwork is immutable",
        ),
        (
            json!({"tls": {"secretName": "first-tls"}}),
            "tls can only be set when the cluster is created",
        ),
    ] {
        match h
            .kredis()
            .patch(
                "first",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": edit })),
            )
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(s.message.contains(needle), "{needle:?} in {}", s.message);
            }
            other => panic!("an immutable edit {edit} was not refused: {other:?}"),
        }
    }
    let k = h.kredis().get("first").await.expect("get");
    assert_eq!(
        k.metadata.generation, generation,
        "a refused edit was stored"
    );
    assert_eq!(k.spec.base_port, 20000);
    assert_eq!(k.spec.masters, 3);
    let after = h.ready("first").await;
    assert_eq!(
        node_ids(&after),
        ids,
        "node ids changed across the bad edit"
    );
    assert_eq!(
        pod_uids(&h, "first").await,
        uids,
        "pods changed across the bad edit"
    );
    h.check("first").await;
    eprintln!("immutable edit done after {:?}", started.elapsed());

    // Paused: a pod that goes is not replaced until the cluster is unpaused.
    h.patch_spec("first", json!({"paused": true})).await;
    let api = h.kredis();
    eventually("the pause to be observed", READY, || async {
        let k = api.get("first").await.ok()?;
        let s = k.status?;
        let progressing = s.conditions.iter().find(|c| c.type_ == "Progressing")?;
        (s.observed_generation == k.metadata.generation
            && progressing.message.contains("spec.paused is true"))
        .then_some(())
    })
    .await;
    let victim = after
        .nodes
        .iter()
        .find(|n| n.role == Some(NodeRole::Master))
        .expect("a master")
        .pod
        .clone();
    // Like a crash: no grace period, so no preStop wait and no graceful failover.
    h.pods()
        .delete(
            &victim,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete a master pod");
    // The operator has seen the loss (it reports it) ...
    eventually("the paused status to show the lost pod", READY, || async {
        let s = api.get("first").await.ok()?.status?;
        (!s.nodes.iter().any(|n| n.pod == victim) && s.ready_display.as_deref() == Some("5/6"))
            .then_some(())
    })
    .await;
    // ... and changes nothing while paused.
    let watch_until = Instant::now() + PAUSE_WATCH;
    while Instant::now() < watch_until {
        let names = h.pod_names("first").await;
        assert!(
            !names.contains(&victim) && names.len() == 5,
            "a paused cluster got a pod: {names:?}"
        );
        let pods: Api<Pod> = h.pods();
        assert!(
            pods.get_opt(&victim).await.expect("get pod").is_none(),
            "{victim} was recreated while paused"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let paused = api.get("first").await.expect("get").status.expect("status");
    assert_ne!(paused.phase, Some(Phase::Ready), "{paused:#?}");
    h.patch_spec("first", json!({"paused": false})).await;
    let healed = h.ready("first").await;
    let now = pod_uids(&h, "first").await;
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        uids.keys().collect::<Vec<_>>(),
        "the replacement should reuse the freed index"
    );
    assert_ne!(now[&victim], uids[&victim], "{victim} was not replaced");
    assert_eq!(healed.nodes.len(), 6);
    h.check("first").await;
    eprintln!(
        "a_running_cluster_survives_bad_edits_and_pauses: {:?}",
        started.elapsed()
    );
}

/// After a bad edit of a running cluster: Invalid (Ready False, InvalidSpec, a Warning Event
/// with the same text), the last observation kept and no pod touched. Returns the message.
async fn assert_invalid_keeping(
    h: &Harness,
    name: &str,
    uids: &BTreeMap<String, String>,
) -> String {
    let api = h.kredis();
    let k: KRedis = eventually("the bad edit to be reported Invalid", INVALID, || async {
        let k = api.get(name).await.ok()?;
        let s = k.status.as_ref()?;
        (s.phase == Some(Phase::Invalid) && s.observed_generation == k.metadata.generation)
            .then_some(k)
    })
    .await;
    let status = k.status.expect("status");
    let ready = ready_condition(&status).expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec"),
        "{name}: {ready:?}"
    );
    // The last observation is kept, not wiped.
    assert_eq!(status.nodes.len(), uids.len(), "{status:#?}");
    let message = ready.message.clone();
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually("a Warning Event about the bad edit", INVALID, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some("InvalidSpec")
                    && e.type_.as_deref() == Some("Warning")
                    // Event notes are cut at 1 kB.
                    && e.note.as_deref().is_some_and(|n| {
                        !n.is_empty() && message.starts_with(n.trim_end_matches('…'))
                    })
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        &pod_uids(h, name).await,
        uids,
        "{name}: pods changed after a bad edit"
    );
    message
}

/// A named auth Secret that does not exist yet: Invalid, then Ready once it is created (the
/// operator does not watch Secrets it does not own, so it retries on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_then_picked_up() {
    let started = Instant::now();
    let h = start(3, true).await;
    h.create(
        "late",
        json!({"masters": 3, "replicasPerMaster": 0, "basePort": 21000, "auth": {"secretName": "nope"}}),
    )
    .await;
    assert_invalid(
        &h,
        "late",
        "spec.auth.secretName",
        &["Secret nope does not exist in namespace default"],
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &secret("nope", &[("password", "s3cret-enough")]),
        )
        .await
        .expect("create the Secret");
    let status = h.ready("late").await;
    assert_eq!(status.auth_secret.as_deref(), Some("nope"));
    assert_eq!(h.password("late").await.as_deref(), Some("s3cret-enough"));
    // The nodes really require that password.
    h.check("late").await;
    let first = h
        .masters("late")
        .await
        .into_iter()
        .next()
        .expect("a master");
    let (host, port) = first.rsplit_once(':').expect("host:port");
    let out = tokio::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "PING"])
        .env_remove("REDISCLI_AUTH")
        .output()
        .await
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOAUTH"), "PING without a password: {text}");
    eprintln!(
        "a_missing_secret_is_reported_then_picked_up: {:?}",
        started.elapsed()
    );
}

/// Host ports belong to the cluster that holds them: a newcomer created right after a cluster
/// with the same ports is refused even when both share a creationTimestamp second (the name
/// would otherwise decide), and an edit that scales a cluster into a neighbour's ranges is
/// refused instead of turning the untouched neighbour Invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_stay_with_the_cluster_that_holds_them() {
    let started = Instant::now();
    let h = start(3, true).await;
    let api = h.kredis();
    // "zz-old" sorts after "aa-new": by name alone the newcomer would win a same-second tie.
    let spec = json!({"masters": 3, "replicasPerMaster": 0, "basePort": 22000});
    h.create("zz-old", spec.clone()).await;
    let old = eventually("zz-old's first status", READY, || async {
        let k = api.get("zz-old").await.ok()?;
        let s = k.status.as_ref()?;
        (s.phase.is_some() && s.observed_generation == k.metadata.generation).then_some(k)
    })
    .await;
    let new = h.create("aa-new", spec).await;
    eprintln!(
        "same creationTimestamp second: {}",
        old.metadata.creation_timestamp == new.metadata.creation_timestamp
    );
    assert_invalid(
        &h,
        "aa-new",
        "spec.basePort",
        &["client ports 22000-22003 overlap the client ports 22000-22003 of KRedis default/zz-old"],
    )
    .await;
    let ready = h.ready("zz-old").await;
    let uids = pod_uids(&h, "zz-old").await;
    assert_eq!(uids.len(), 3, "{uids:?}");
    let ids = node_ids(&ready);
    api.delete("aa-new", &DeleteParams::default())
        .await
        .expect("delete aa-new");
    eventually("aa-new to be deleted", READY, || async {
        api.get_opt("aa-new").await.ok()?.is_none().then_some(())
    })
    .await;

    // A neighbour right after zz-old's reserved ports (3 pods + the rolling-update index),
    // then zz-old scaled into it.
    h.create(
        "right",
        json!({"masters": 1, "replicasPerMaster": 0, "basePort": 22004}),
    )
    .await;
    h.ready("right").await;
    h.patch_spec("zz-old", json!({"masters": 4})).await;
    let message = assert_invalid_keeping(&h, "zz-old", &uids).await;
    for needle in [
        "spec.basePort: client ports 22000-22004 overlap the client ports 22004-22005 of KRedis default/right",
        "fewer masters or replicasPerMaster",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    // The neighbour is validated again (a stale status makes the operator reconcile it and
    // write the truth back) and keeps its ports.
    api.patch_status(
        "right",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({"status": {"phase": "Pending"}})),
    )
    .await
    .expect("patch right's status");
    let right = eventually("right to be reconciled", READY, || async {
        let s = api.get("right").await.ok()?.status?;
        (s.phase != Some(Phase::Pending)).then_some(s)
    })
    .await;
    assert_eq!(right.phase, Some(Phase::Ready), "right: {right:#?}");
    h.check("right").await;

    h.patch_spec("zz-old", json!({"masters": 3})).await;
    let after = h.ready("zz-old").await;
    assert_eq!(node_ids(&after), ids, "zz-old's node ids changed");
    assert_eq!(pod_uids(&h, "zz-old").await, uids, "zz-old's pods changed");
    eprintln!(
        "ports_stay_with_the_cluster_that_holds_them: {:?}",
        started.elapsed()
    );
}
