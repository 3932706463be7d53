//! The audit log over real HTTP: kube-rs clients with and without a bearer token, every RBAC
//! verb (list vs get, watch from a real watcher, deletecollection), subresources, cluster- and
//! namespace-scoped calls, kubectl with `--token`; and the stored-only kinds the install
//! manifests need (Deployments, ClusterRoles/Roles and their bindings) through `apply_yaml`,
//! kube-rs and kubectl.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, start};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kredis_devkube::audit::ANONYMOUS;
use kredis_devkube::AuditEntry;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// (verb, group, resource, subresource, namespace) of `user`'s resource requests.
fn calls(audit: &[AuditEntry], user: &str) -> BTreeSet<(String, String, String, String, String)> {
    audit
        .iter()
        .filter(|e| e.user == user && e.non_resource_url.is_none())
        .map(|e| {
            (
                e.verb.clone(),
                e.group.clone(),
                e.resource.clone(),
                e.subresource.clone(),
                e.namespace.clone(),
            )
        })
        .collect()
}

fn call(
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
) -> (String, String, String, String, String) {
    (
        verb.into(),
        group.into(),
        resource.into(),
        sub.into(),
        ns.into(),
    )
}

#[tokio::test]
async fn every_request_is_recorded_with_its_user_and_rbac_verb() {
    let h = start(1, false, |_| {}).await;
    let alice = h.cluster.client_as("alice").expect("client as alice");
    let anonymous = h.cluster.client().expect("client");

    let cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c", "labels": {"a": "b"}}})).unwrap();
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let mut got = cms.get("c").await.expect("get");
    cms.list(&ListParams::default()).await.expect("list");
    got.data = Some([("k".to_string(), "v".to_string())].into());
    cms.replace("c", &PostParams::default(), &got)
        .await
        .expect("update");
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .expect("patch");
    // A real watcher: list, then watch.
    let stream = watcher(cms.clone(), watcher::Config::default()).applied_objects();
    let watching = tokio::spawn(stream.for_each(|_| async {}));
    eventually("the watch to be open", WAIT, || async {
        h.cluster
            .audit()
            .iter()
            .any(|e| e.user == "alice" && e.verb == "watch")
            .then_some(())
    })
    .await;
    watching.abort();
    cms.delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("a=b"),
    )
    .await
    .expect("deletecollection");

    // A server-side apply that creates its object is authorized as patch and create.
    let ssa = PatchParams::apply("audit-test");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}});
    for _ in 0..2 {
        cms.patch("s", &ssa, &Patch::Apply(&applied))
            .await
            .expect("apply");
    }
    let verbs: Vec<(String, u16)> = h
        .cluster
        .audit()
        .into_iter()
        .filter(|e| e.name == "s")
        .map(|e| (e.verb, e.code))
        .collect();
    assert_eq!(
        verbs,
        [
            ("patch".into(), 201),
            ("create".into(), 201),
            ("patch".into(), 200)
        ]
    );

    // Subresources and a missing object (recorded with its 404: authorization comes first).
    let pods: Api<Pod> = Api::namespaced(alice.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"message": "x"}})),
    )
    .await
    .expect("patch status");
    pods.evict("p", &Default::default()).await.expect("evict");
    assert!(pods.get("gone").await.is_err());

    // Cluster-scoped, as a metadata list, and as another user.
    let nodes: Api<Node> = Api::all(alice.clone());
    nodes
        .list_metadata(&ListParams::default())
        .await
        .expect("list nodes");
    let anon_pods: Api<Pod> = Api::all(anonymous);
    anon_pods
        .list(&ListParams::default())
        .await
        .expect("list all pods");

    let audit = h.cluster.audit();
    let got = calls(&audit, "alice");
    let want: BTreeSet<_> = [
        call("create", "", "configmaps", "", "default"),
        call("get", "", "configmaps", "", "default"),
        call("list", "", "configmaps", "", "default"),
        call("update", "", "configmaps", "", "default"),
        call("patch", "", "configmaps", "", "default"),
        call("watch", "", "configmaps", "", "default"),
        call("delete", "", "configmaps", "", "default"),
        call("deletecollection", "", "configmaps", "", "default"),
        call("create", "", "pods", "", "default"),
        call("patch", "", "pods", "status", "default"),
        call("create", "", "pods", "eviction", "default"),
        call("get", "", "pods", "", "default"),
        call("list", "", "nodes", "", ""),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        calls(&audit, ANONYMOUS),
        [call("list", "", "pods", "", "")].into_iter().collect()
    );
    let missing = audit
        .iter()
        .find(|e| e.user == "alice" && e.name == "gone")
        .expect("the failed get is recorded");
    assert_eq!((missing.verb.as_str(), missing.code), ("get", 404));
    assert!(audit
        .iter()
        .filter(|e| e.user == "alice" && e.verb == "create")
        .all(|e| e.code == 201));
    h.cluster.clear_audit();
    assert!(h.cluster.audit().is_empty());
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sys}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects:
- {kind: ServiceAccount, name: app, namespace: sys}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leases, namespace: sys}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leases, namespace: sys}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects:
- {kind: ServiceAccount, name: app, namespace: sys}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: sys}
spec:
  replicas: 2
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      serviceAccountName: app
      containers:
      - name: app
        image: example/app:1
"#;

#[tokio::test]
async fn deployments_and_rbac_objects_are_stored_and_served() {
    let h = start(1, false, |_| {}).await;
    let applied = h.cluster.apply_yaml(MANIFEST).expect("apply");
    assert_eq!(
        applied,
        [
            "namespace/sys",
            "clusterrole/reader",
            "clusterrolebinding/reader",
            "role/leases",
            "rolebinding/leases",
            "deployment/app"
        ]
    );
    // Applying again updates in place.
    h.cluster.apply_yaml(MANIFEST).expect("apply again");
    let client = h.cluster.client().unwrap();
    let role: ClusterRole = Api::all(client.clone())
        .get("reader")
        .await
        .expect("clusterrole");
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules[0].verbs, ["get", "list"]);
    let binding: ClusterRoleBinding = Api::all(client.clone()).get("reader").await.unwrap();
    assert_eq!(binding.role_ref.name, "reader");
    let role: Role = Api::namespaced(client.clone(), "sys")
        .get("leases")
        .await
        .unwrap();
    assert_eq!(
        role.rules.unwrap_or_default()[0].resources.as_deref(),
        Some(&["leases".to_string()][..])
    );
    let rb: RoleBinding = Api::namespaced(client.clone(), "sys")
        .get("leases")
        .await
        .unwrap();
    assert_eq!(rb.subjects.unwrap_or_default()[0].name, "app");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "sys");
    let d = deployments.get("app").await.expect("deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(2));
    // No controller: no pods appear, status stays as written.
    deployments
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 2}})),
        )
        .await
        .expect("status subresource");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sys");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    // Server-side apply works on them like on any built-in kind.
    let patch = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}, "spec": {"replicas": 3}});
    deployments
        .patch(
            "app",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("apply deployment");
    assert_eq!(
        deployments
            .get("app")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas),
        Some(3)
    );
}

/// kubectl never sends a bearer token over plain HTTP (client-go applies user credentials
/// only to TLS transports), so its calls are anonymous here.
#[tokio::test]
async fn kubectl_applies_the_stored_kinds_and_is_audited() {
    let h = start(1, false, |_| {}).await;
    let file = h.dir.path().join("m.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let kubectl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("/usr/bin/kubectl");
        cmd.arg("--kubeconfig")
            .arg(h.cluster.kubeconfig_path())
            .arg("--cache-dir")
            .arg(h.dir.path().join("kcache"))
            .args(args)
            .kill_on_drop(true);
        cmd
    };
    let path = file.display().to_string();
    for args in [
        &["apply", "-f", path.as_str()][..],
        &["apply", "-f", path.as_str()][..],
        &["get", "deployments,roles,rolebindings", "-n", "sys"][..],
        &["get", "clusterroles,clusterrolebindings"][..],
    ] {
        let out = kubectl(args).output().await.expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let audit = h.cluster.audit();
    let got = calls(&audit, ANONYMOUS);
    for want in [
        call(
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "",
        ),
        call("create", "rbac.authorization.k8s.io", "roles", "", "sys"),
        call("create", "apps", "deployments", "", "sys"),
        call("get", "apps", "deployments", "", "sys"),
        call("list", "apps", "deployments", "", "sys"),
    ] {
        assert!(got.contains(&want), "{want:?} not in {got:#?}");
    }
    // Discovery is recorded as non-resource requests.
    assert!(audit
        .iter()
        .any(|e| e.non_resource_url.as_deref() == Some("/apis")));
}
