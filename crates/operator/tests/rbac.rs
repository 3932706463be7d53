//! The hand-written RBAC of `deploy/operator.yaml` against what the operator really calls
//! (STYLE: "least privilege, and tested to cover every API call the operator makes"): the
//! manifests are applied to `kredis dev`, the operator runs as their ServiceAccount with leader
//! election in `kredis-system`, and drives a KRedis through create, scale out and in, a pod
//! deletion and deletion. Every call it made (from the dev API server's audit log) must be
//! allowed by a rule bound to that ServiceAccount, and every rule must have been used, except
//! the commented exceptions below. The audited call set is printed.
//!
//! Also: the Helm chart (`deploy/helm/kredis`) renders, with its default values, exactly the
//! objects of `deploy/operator.yaml` (Helm's bookkeeping labels aside), and its `crds/` holds
//! `deploy/crd.yaml`. There is no helm binary here, so [`helm`] renders the small template
//! subset the chart uses.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{eventually, start, Operator};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kredis_operator::leader::{LeaderElection, LeaseTimings};
use kube::api::Api;
use serde_json::{json, Value};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const SERVICE_ACCOUNT: &str = "kredis-operator";
const NAMESPACE: &str = "kredis-system";
/// The user a pod of the ServiceAccount authenticates as.
const USER: &str = "system:serviceaccount:kredis-system:kredis-operator";
/// The Lease `kredis operator --leader-elect` takes (`LEASE_NAME` in crates/kredis).
const LEASE: &str = "kredis-operator";

/// Rules granted although the test does not see them used, each with its reason:
/// (verb, group, resource[/subresource]).
const UNUSED_ALLOWED: &[(&str, &str, &str)] = &[
    // Not an API call: the OwnerReferencesPermissionEnforcement admission plugin (OpenShift,
    // hardened clusters) requires it to set blockOwnerDeletion on owned pods, Secrets,
    // Services and budgets. The dev API server runs no admission plugins.
    ("update", "kredis.io", "kredis/finalizers"),
];

fn manifest() -> String {
    std::fs::read_to_string(format!("{ROOT}/deploy/operator.yaml"))
        .expect("read deploy/operator.yaml")
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("valid YAML")
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// One API call as RBAC sees it (the name matters only for `resourceNames` rules).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    verb: String,
    group: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    /// Empty for cluster-scoped and all-namespace calls.
    namespace: String,
    name: String,
}

/// A rule bound to the ServiceAccount, with where it applies.
#[derive(Debug)]
struct Grant {
    /// None: everywhere (a ClusterRoleBinding); Some(ns): only there (a RoleBinding).
    namespace: Option<String>,
    rule: PolicyRule,
    /// `Kind/name` of the role, for messages.
    from: String,
}

impl Grant {
    fn allows(&self, c: &Call) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == v);
        let r = &self.rule;
        self.namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
            && has(r.api_groups.as_deref().unwrap_or_default(), &c.group)
            && has(r.resources.as_deref().unwrap_or_default(), &c.resource)
            && has(&r.verbs, &c.verb)
            && r.resource_names
                .as_deref()
                .is_none_or(|names| names.is_empty() || has(names, &c.name))
    }
}

/// The rules of every role `deploy/operator.yaml` binds to the operator's ServiceAccount.
fn grants(docs: &[Value]) -> Vec<Grant> {
    let ours = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == SERVICE_ACCOUNT
                && s.namespace.as_deref() == Some(NAMESPACE)
        })
    };
    let of = |k: &'static str| docs.iter().filter(move |d| kind(d) == k).cloned();
    let cluster_roles: BTreeMap<String, ClusterRole> = of("ClusterRole")
        .map(|d| serde_json::from_value::<ClusterRole>(d).expect("ClusterRole"))
        .map(|r| (r.metadata.name.clone().unwrap_or_default(), r))
        .collect();
    let roles: BTreeMap<(String, String), Role> = of("Role")
        .map(|d| serde_json::from_value::<Role>(d).expect("Role"))
        .map(|r| {
            let key = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            (key, r)
        })
        .collect();
    let mut out = Vec::new();
    for b in of("ClusterRoleBinding")
        .map(|d| serde_json::from_value::<ClusterRoleBinding>(d).expect("ClusterRoleBinding"))
    {
        if !ours(&b.subjects) {
            continue;
        }
        assert_eq!(b.role_ref.kind, "ClusterRole");
        let role = cluster_roles
            .get(&b.role_ref.name)
            .expect("the bound ClusterRole exists");
        for rule in role.rules.iter().flatten() {
            out.push(Grant {
                namespace: None,
                rule: rule.clone(),
                from: format!("ClusterRole/{}", b.role_ref.name),
            });
        }
    }
    for b in
        of("RoleBinding").map(|d| serde_json::from_value::<RoleBinding>(d).expect("RoleBinding"))
    {
        if !ours(&b.subjects) {
            continue;
        }
        let ns = b
            .metadata
            .namespace
            .clone()
            .expect("a RoleBinding's namespace");
        let rules = match b.role_ref.kind.as_str() {
            "Role" => roles
                .get(&(ns.clone(), b.role_ref.name.clone()))
                .expect("the bound Role exists in the binding's namespace")
                .rules
                .clone(),
            _ => cluster_roles
                .get(&b.role_ref.name)
                .expect("the bound ClusterRole exists")
                .rules
                .clone(),
        };
        for rule in rules.into_iter().flatten() {
            out.push(Grant {
                namespace: Some(ns.clone()),
                rule,
                from: format!("{}/{} in {ns}", b.role_ref.kind, b.role_ref.name),
            });
        }
    }
    // Nothing here handles "*": assert the manifests never use it.
    for g in &out {
        let r = &g.rule;
        let all = r
            .verbs
            .iter()
            .chain(r.api_groups.iter().flatten())
            .chain(r.resources.iter().flatten());
        assert!(
            all.into_iter().all(|v| v != "*"),
            "{}: wildcard rules are not least privilege",
            g.from
        );
        assert!(
            r.non_resource_urls.is_none(),
            "{}: nonResourceURLs are not needed",
            g.from
        );
    }
    out
}

fn election() -> LeaderElection {
    LeaderElection {
        namespace: NAMESPACE.into(),
        name: LEASE.into(),
        identity: "kredis-operator-rbac-test".into(),
        timings: LeaseTimings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_operator_is_allowed_and_every_rule_is_used() {
    let h = start(3, false).await;
    let manifest = manifest();
    let applied = h
        .cluster
        .apply_yaml(&manifest)
        .expect("apply deploy/operator.yaml");
    println!("applied: {applied:?}");
    let client = h
        .cluster
        .client_as(USER)
        .expect("a client as the ServiceAccount");
    let operator = Operator::start_with(client, Some(election())).await;
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), NAMESPACE);
    eventually(
        "the operator takes the Lease",
        Duration::from_secs(30),
        || async {
            let holder = leases.get_opt(LEASE).await.ok()??.spec?.holder_identity?;
            (holder == election().identity).then_some(())
        },
    )
    .await;

    // Create, scale out (new pods, Service updates, a new budget), lose a master pod (graceful
    // failover, replacement), scale in (pods released, the budget of the removed shard deleted),
    // delete (finalizer).
    h.create(
        "rbac",
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 19000}),
    )
    .await;
    h.ready("rbac").await;
    h.patch_spec("rbac", json!({"masters": 4})).await;
    h.ready("rbac").await;
    let pod = h.pods().get("rbac-0").await.expect("pod rbac-0");
    let old_uid = pod.metadata.uid.clone();
    h.pods()
        .delete("rbac-0", &Default::default())
        .await
        .expect("delete pod rbac-0");
    eventually("rbac-0 replaced", common::READY, || async {
        let p = h.pods().get_opt("rbac-0").await.ok()??;
        (p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
    eventually("8 pods again", common::READY, || async {
        (h.pod_names("rbac").await.len() == 8).then_some(())
    })
    .await;
    h.ready("rbac").await;
    h.patch_spec("rbac", json!({"masters": 3})).await;
    h.ready("rbac").await;
    eventually("6 pods after scale-in", common::READY, || async {
        (h.pod_names("rbac").await.len() == 6).then_some(())
    })
    .await;
    h.kredis()
        .delete("rbac", &Default::default())
        .await
        .expect("delete KRedis");
    eventually("KRedis and pods gone", common::READY, || async {
        let gone = h.kredis().get_opt("rbac").await.ok()?.is_none()
            && h.pod_names("rbac").await.is_empty();
        gone.then_some(())
    })
    .await;
    operator.stop().await;

    let audit = h.cluster.audit();
    let ours: Vec<_> = audit.iter().filter(|e| e.user == USER).collect();
    assert!(!ours.is_empty(), "no call was audited as {USER}");
    let non_resource: BTreeSet<_> = ours
        .iter()
        .filter_map(|e| e.non_resource_url.clone())
        .collect();
    assert!(
        non_resource.is_empty(),
        "the operator called non-resource URLs: {non_resource:?}"
    );
    let calls: BTreeSet<Call> = ours
        .iter()
        .map(|e| Call {
            verb: e.verb.clone(),
            group: e.group.clone(),
            resource: if e.subresource.is_empty() {
                e.resource.clone()
            } else {
                format!("{}/{}", e.resource, e.subresource)
            },
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        })
        .collect();
    let mut summary: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for e in &ours {
        let resource = if e.subresource.is_empty() {
            e.resource.clone()
        } else {
            format!("{}/{}", e.resource, e.subresource)
        };
        let group = if e.group.is_empty() {
            "core".to_string()
        } else {
            e.group.clone()
        };
        let ns = if e.namespace.is_empty() {
            "(all)".to_string()
        } else {
            e.namespace.clone()
        };
        *summary
            .entry((group, resource, e.verb.clone(), ns))
            .or_default() += 1;
    }
    println!("API calls of {USER} ({} requests):", ours.len());
    for ((group, resource, verb, ns), n) in &summary {
        println!("  {group:<20} {resource:<28} {verb:<8} {ns:<14} x{n}");
    }

    let grants = grants(&docs(&manifest));
    let denied = denied(&grants, &calls);
    assert!(
        denied.is_empty(),
        "calls deploy/operator.yaml does not allow: {denied:#?}"
    );
    let unused = unused(&grants, &calls, UNUSED_ALLOWED);
    assert!(
        unused.is_empty(),
        "rules the operator never used (remove them, or explain them in UNUSED_ALLOWED): {unused:#?}"
    );
}

/// Calls no grant allows.
fn denied<'a>(grants: &[Grant], calls: &'a BTreeSet<Call>) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| !grants.iter().any(|g| g.allows(c)))
        .collect()
}

/// Least privilege: every (verb, group, resource) of every grant must have allowed a call
/// (in the grant's namespace, for one of its resourceNames), unless `excused`. Panics when an
/// excused permission was used after all, so the exception list cannot go stale.
fn unused(grants: &[Grant], calls: &BTreeSet<Call>, excused: &[(&str, &str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for g in grants {
        let r = &g.rule;
        for group in r.api_groups.iter().flatten() {
            for resource in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    let used = calls.iter().any(|c| {
                        c.verb == *verb
                            && c.group == *group
                            && c.resource == *resource
                            && g.allows(c)
                    });
                    let excuse =
                        excused.contains(&(verb.as_str(), group.as_str(), resource.as_str()));
                    assert!(
                        !(used && excuse),
                        "{verb} {group}/{resource} is used: remove it from UNUSED_ALLOWED"
                    );
                    if !used && !excuse {
                        let group = if group.is_empty() { "core" } else { group };
                        out.push(format!("{}: {verb} {group}/{resource}", g.from));
                    }
                }
            }
        }
    }
    out
}

/// The checks themselves can fail: a call outside a Role's namespace or resourceNames, or of
/// an ungranted verb, is denied; a granted verb nobody used is reported.
#[test]
fn the_checks_catch_missing_and_unused_rules() {
    let yaml = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: c}}
rules:
- {{apiGroups: [""], resources: [pods], verbs: [list, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: c}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: c}}
subjects: [{{kind: ServiceAccount, name: {SERVICE_ACCOUNT}, namespace: {NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: r, namespace: x}}
rules:
- {{apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [l], verbs: [get]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: r, namespace: x}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}}
subjects: [{{kind: ServiceAccount, name: {SERVICE_ACCOUNT}, namespace: {NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: someone-else}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: c}}
subjects: [{{kind: ServiceAccount, name: other, namespace: {NAMESPACE}}}]
"#
    );
    let grants = grants(&docs(&yaml));
    assert_eq!(grants.len(), 2, "only rules bound to the operator count");
    let call = |verb: &str, group: &str, resource: &str, namespace: &str, name: &str| Call {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    let allowed = [
        call("list", "", "pods", "", ""),
        call("list", "", "pods", "default", ""),
        call("get", "coordination.k8s.io", "leases", "x", "l"),
    ];
    let refused = [
        call("create", "", "pods", "default", ""),
        call("get", "", "pods", "default", "p"),
        call("get", "", "pods/log", "default", "p"),
        call("get", "coordination.k8s.io", "leases", "y", "l"),
        call("get", "coordination.k8s.io", "leases", "x", "other"),
    ];
    let calls: BTreeSet<Call> = allowed.iter().chain(&refused).cloned().collect();
    let denied: BTreeSet<Call> = denied(&grants, &calls).into_iter().cloned().collect();
    assert_eq!(denied, refused.iter().cloned().collect());
    let only_allowed: BTreeSet<Call> = allowed.iter().cloned().collect();
    assert_eq!(
        unused(&grants, &only_allowed, &[]),
        ["ClusterRole/c: watch core/pods"]
    );
    assert!(unused(&grants, &only_allowed, &[("watch", "", "pods")]).is_empty());
}

/// The chart's CRD is `deploy/crd.yaml`, byte for byte.
#[test]
fn the_chart_ships_the_generated_crd() {
    let crd =
        std::fs::read_to_string(format!("{ROOT}/deploy/crd.yaml")).expect("read deploy/crd.yaml");
    let chart = std::fs::read_to_string(format!("{ROOT}/deploy/helm/kredis/crds/kredis.yaml"))
        .expect("read deploy/helm/kredis/crds/kredis.yaml");
    assert!(
        crd == chart,
        "deploy/helm/kredis/crds/kredis.yaml differs from deploy/crd.yaml: cp deploy/crd.yaml deploy/helm/kredis/crds/kredis.yaml"
    );
}

/// Helm's bookkeeping labels, the only difference from the plain manifests.
const HELM_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

fn strip_helm_labels(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "labels" {
                    if let Some(labels) = child.as_object_mut() {
                        labels.retain(|l, _| !HELM_LABELS.contains(&l.as_str()));
                    }
                }
                strip_helm_labels(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

/// Renders every template of the chart with its values (merged with `overrides`), as
/// release `kredis` in `kredis-system`: file name -> output.
fn render_chart(overrides: Value) -> BTreeMap<String, String> {
    let dir = format!("{ROOT}/deploy/helm/kredis");
    let read = |p: &str| {
        std::fs::read_to_string(format!("{dir}/{p}")).unwrap_or_else(|e| panic!("read {p}: {e}"))
    };
    let chart: Value = serde_saphyr::from_str(&read("Chart.yaml")).expect("Chart.yaml");
    let mut values: Value = serde_saphyr::from_str(&read("values.yaml")).expect("values.yaml");
    helm::merge(&mut values, overrides);
    let root = json!({
        "Values": values,
        "Release": {"Name": "kredis", "Namespace": NAMESPACE, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    });
    let mut files: Vec<String> = std::fs::read_dir(format!("{dir}/templates"))
        .expect("templates/")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.clone(), read(&format!("templates/{f}"))))
        .collect();
    let mut defines = BTreeMap::new();
    for (f, src) in &sources {
        helm::collect_defines(
            &helm::parse(src).unwrap_or_else(|e| panic!("{f}: {e}")),
            &mut defines,
        );
    }
    sources
        .iter()
        .filter(|(f, _)| !f.starts_with('_'))
        .map(|(f, src)| {
            let tree = helm::parse(src).unwrap_or_else(|e| panic!("{f}: {e}"));
            let out = helm::render(&tree, &root, &defines).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f.clone(), out)
        })
        .collect()
}

#[test]
fn the_chart_renders_the_plain_manifests() {
    let rendered = render_chart(json!({}));
    let mut chart: Vec<Value> = Vec::new();
    for (f, out) in &rendered {
        if f.ends_with(".yaml") {
            let parsed = serde_saphyr::from_multiple::<Value>(out)
                .unwrap_or_else(|e| panic!("{f} renders invalid YAML: {e}\n{out}"));
            chart.extend(parsed.into_iter().filter(Value::is_object));
        }
    }
    assert!(rendered["NOTES.txt"].contains("kredis 0.1.0 is installed in kredis-system"));
    let plain = docs(&manifest());
    let key = |d: &Value| format!("{}/{}", kind(d), name(d));
    // helm install --create-namespace makes the namespace; everything else is in both.
    let want: BTreeMap<String, Value> = plain
        .iter()
        .filter(|d| kind(d) != "Namespace")
        .map(|d| (key(d), d.clone()))
        .collect();
    let mut got = BTreeMap::new();
    for mut d in chart {
        strip_helm_labels(&mut d);
        assert!(
            got.insert(key(&d), d).is_none(),
            "a duplicate object in the chart"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, want) in &want {
        assert_eq!(
            &got[k], want,
            "{k}: the chart's default rendering differs from deploy/operator.yaml"
        );
    }
    // Stated on its own, as the issue asks: the chart grants exactly the same rules.
    assert_eq!(
        got["ClusterRole/kredis-operator"]["rules"],
        want["ClusterRole/kredis-operator"]["rules"]
    );
}

#[test]
fn the_chart_renders_its_options() {
    let rendered = render_chart(json!({
        "watchNamespace": "apps",
        "image": {"tag": "1.2.3"},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "podAnnotations": {"a": "b"},
        "imagePullSecrets": [{"name": "registry"}],
        "podDisruptionBudget": {"enabled": false},
    }));
    let deployment: Value =
        serde_saphyr::from_str(&rendered["deployment.yaml"]).expect("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/kredis/kredis:1.2.3");
    assert_eq!(
        container["args"],
        json!([
            "operator",
            "--leader-elect",
            "--http-addr",
            "0.0.0.0:8080",
            "--namespace",
            "apps"
        ])
    );
    assert_eq!(pod["nodeSelector"], json!({"pool": "system"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"],
        json!({"a": "b"})
    );
    assert!(rendered["poddisruptionbudget.yaml"].trim().is_empty());
}

/// A renderer for the subset of Go templates (Helm) the chart uses: text, `{{ }}` actions with
/// `{{-`/`-}}` trimming and comments, `if`/`else`/`end`, `define`/`include`, pipelines of
/// `toYaml`, `nindent`, `indent`, `quote`, `default`, and `.a.b` field paths. Anything else is
/// an error, so a template outside the subset fails the test instead of rendering wrongly.
mod helm {
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// A parsed template.
    #[derive(Debug, Clone)]
    pub enum Node {
        Text(String),
        Action(String),
        If(String, Vec<Node>, Vec<Node>),
        Define(String, Vec<Node>),
    }

    /// Deep-merges `over` into `base` (maps merge, anything else replaces), like `--set`.
    pub fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }

    /// Splits text and actions, applying trim markers and dropping comments.
    fn lex(src: &str) -> Result<Vec<Node>, String> {
        let mut out = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while !rest.is_empty() {
            let (text, action) = match rest.find("{{") {
                Some(i) => (&rest[..i], Some(&rest[i + 2..])),
                None => (rest, None),
            };
            let mut text = text.to_string();
            if trim_next {
                text = text.trim_start().to_string();
            }
            let Some(after) = action else {
                out.push(Node::Text(text));
                break;
            };
            let end = after.find("}}").ok_or("an unclosed {{")?;
            let mut inner = &after[..end];
            rest = &after[end + 2..];
            if let Some(i) = inner.strip_prefix("- ") {
                text = text.trim_end().to_string();
                inner = i;
            }
            trim_next = false;
            if let Some(i) = inner.strip_suffix(" -") {
                trim_next = true;
                inner = i;
            }
            out.push(Node::Text(text));
            let inner = inner.trim();
            if !(inner.starts_with("/*") && inner.ends_with("*/")) {
                out.push(Node::Action(inner.to_string()));
            }
        }
        Ok(out)
    }

    /// Parses a template into a tree.
    pub fn parse(src: &str) -> Result<Vec<Node>, String> {
        let tokens = lex(src)?;
        let mut it = tokens.into_iter();
        let (nodes, end) = block(&mut it)?;
        match end {
            None => Ok(nodes),
            Some(e) => Err(format!("unexpected {{{{ {e} }}}}")),
        }
    }

    /// Nodes until `end`/`else` (returned) or the end of input (None).
    fn block(it: &mut impl Iterator<Item = Node>) -> Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        while let Some(n) = it.next() {
            match n {
                Node::Action(a) if a == "end" || a == "else" => return Ok((nodes, Some(a))),
                Node::Action(a) if a.starts_with("if ") => {
                    let cond = a["if ".len()..].trim().to_string();
                    let (then, end) = block(it)?;
                    let els = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => match block(it)? {
                            (els, Some(e)) if e == "end" => els,
                            _ => return Err(format!("{{{{ if {cond} }}}} without end")),
                        },
                        _ => return Err(format!("{{{{ if {cond} }}}} without end")),
                    };
                    nodes.push(Node::If(cond, then, els));
                }
                Node::Action(a) if a.starts_with("define ") => {
                    let name = unquote(a["define ".len()..].trim())?;
                    match block(it)? {
                        (body, Some(e)) if e == "end" => nodes.push(Node::Define(name, body)),
                        _ => return Err(format!("define {name} without end")),
                    }
                }
                other => nodes.push(other),
            }
        }
        Ok((nodes, None))
    }

    /// Collects `define` blocks.
    pub fn collect_defines(nodes: &[Node], out: &mut BTreeMap<String, Vec<Node>>) {
        for n in nodes {
            if let Node::Define(name, body) = n {
                out.insert(name.clone(), body.clone());
            }
        }
    }

    /// Renders a tree with `dot` as `.`.
    pub fn render(
        nodes: &[Node],
        dot: &Value,
        defs: &BTreeMap<String, Vec<Node>>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(a) => out.push_str(&print(&pipeline(a, dot, defs)?)),
                Node::If(cond, then, els) => {
                    let branch = if truthy(&pipeline(cond, dot, defs)?) {
                        then
                    } else {
                        els
                    };
                    out.push_str(&render(branch, dot, defs)?);
                }
                Node::Define(..) => {}
            }
        }
        Ok(out)
    }

    fn unquote(s: &str) -> Result<String, String> {
        s.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map(str::to_string)
            .ok_or_else(|| format!("expected a quoted string, got {s}"))
    }

    fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    /// How an action prints its value (a missing value prints nothing, as in Helm).
    fn print(v: &Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Splits on `sep` outside double quotes.
    fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut quoted = false;
        for ch in s.chars() {
            if ch == '"' {
                quoted = !quoted;
            }
            if ch == sep && !quoted {
                parts.push(String::new());
            } else if let Some(last) = parts.last_mut() {
                last.push(ch);
            }
        }
        parts
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }

    fn argument(arg: &str, dot: &Value) -> Result<Value, String> {
        if arg.starts_with('"') {
            return Ok(Value::String(unquote(arg)?));
        }
        if arg == "." {
            return Ok(dot.clone());
        }
        if let Some(path) = arg.strip_prefix('.') {
            let mut v = dot;
            for key in path.split('.') {
                v = v.get(key).unwrap_or(&Value::Null);
            }
            return Ok(v.clone());
        }
        arg.parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("unsupported argument {arg}"))
    }

    fn pipeline(
        expr: &str,
        dot: &Value,
        defs: &BTreeMap<String, Vec<Node>>,
    ) -> Result<Value, String> {
        let mut value: Option<Value> = None;
        for command in split_outside_quotes(expr, '|') {
            let words = split_outside_quotes(&command, ' ');
            let (func, args) = words.split_first().ok_or("an empty command")?;
            let mut args: Vec<Value> = args
                .iter()
                .map(|a| argument(a, dot))
                .collect::<Result<_, _>>()?;
            if let Some(prev) = value.take() {
                args.push(prev);
            }
            value = Some(call(func, args, dot, defs)?);
        }
        value.ok_or_else(|| "an empty action".to_string())
    }

    fn indent(n: usize, s: &str) -> String {
        let pad = " ".repeat(n);
        format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
    }

    fn call(
        func: &str,
        args: Vec<Value>,
        dot: &Value,
        defs: &BTreeMap<String, Vec<Node>>,
    ) -> Result<Value, String> {
        let n = |v: &Value| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or(format!("{func}: expected a number"))
        };
        let s = |v: &Value| print(v);
        match (func, args.as_slice()) {
            (f, []) if f.starts_with('.') || f.starts_with('"') => argument(f, dot),
            (f, [piped]) if f.starts_with('.') => Err(format!("cannot pipe {piped} into {f}")),
            ("include", [name, ctx]) => {
                let name = name.as_str().ok_or("include: expected a template name")?;
                let body = defs
                    .get(name)
                    .ok_or(format!("include: no template {name}"))?;
                render(body, ctx, defs).map(Value::String)
            }
            ("toYaml", [v]) => serde_saphyr::to_string(v)
                .map(|y| Value::String(y.trim_end().to_string()))
                .map_err(|e| e.to_string()),
            ("nindent", [k, v]) => Ok(Value::String(format!("\n{}", indent(n(k)?, &s(v))))),
            ("indent", [k, v]) => Ok(Value::String(indent(n(k)?, &s(v)))),
            ("quote", [v]) => Ok(Value::String(format!("{:?}", s(v)))),
            ("default", [d, v]) => Ok(if truthy(v) { v.clone() } else { d.clone() }),
            _ => Err(format!(
                "unsupported template function {func} with {} arguments",
                args.len()
            )),
        }
    }
}
