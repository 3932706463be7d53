//! kube-rs conformance of the API server: CRUD semantics and error reasons, CRDs created at
//! runtime, schemas, subresources, patches, server-side apply, selectors, pagination, tables,
//! watches (selectors, bookmarks, compaction, timeouts) and garbage collection.

use crate::common;

use std::time::Duration;

use common::{eventually, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// A test custom resource with defaults, bounds and a status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.kredis.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
#[kube(printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#)]
#[kube(printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#)]
pub struct WidgetSpec {
    #[schemars(range(min = 1, max = 10))]
    pub size: i64,
    #[serde(default = "default_color")]
    #[schemars(default = "default_color")]
    pub color: String,
}

fn default_color() -> String {
    "blue".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    pub phase: Option<String>,
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "t"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn install_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("create CRD");
}

#[tokio::test]
async fn crud_semantics_and_error_reasons() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    assert!(created.uid().is_some());
    let rv1 = created.resource_version().unwrap();

    let err = cms
        .create(&PostParams::default(), &cm("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "AlreadyExists" && s.code == 409),
        "{err:?}"
    );

    // A no-op replace does not bump the resourceVersion.
    let same = cms
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(same.resource_version().unwrap(), rv1);

    // A change does; the old version is now stale.
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(updated.resource_version().unwrap(), rv1);
    let err = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "Conflict" && s.code == 409),
        "{err:?}"
    );

    let err = cms.get("missing").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "NotFound" && s.code == 404),
        "{err:?}"
    );

    let err = cms
        .create(&PostParams::default(), &cm("Not_A_Name"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "Invalid" && s.code == 422 && s.message.contains("metadata.name")),
        "{err:?}"
    );

    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = elsewhere
        .create(&PostParams::default(), &cm("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "NotFound"),
        "{err:?}"
    );

    // Merge patch, JSON patch (with a `test` of a missing path), strategic merge.
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().get("x").map(String::as_str), Some("1"));
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]}
    ]))
    .unwrap();
    let p = cms
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(jp.clone()))
        .await
        .unwrap();
    assert_eq!(p.finalizers(), ["example.com/f"]);
    let err = cms
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );

    // Finalizers hold deletion; new finalizers are refused while deleting.
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let deleting = cms.get("a").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let err = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/f", "other"]}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());

    // Immutable ConfigMaps refuse data changes.
    let mut frozen = cm("frozen");
    frozen.immutable = Some(true);
    cms.create(&PostParams::default(), &frozen).await.unwrap();
    let err = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "Invalid"),
        "{err:?}"
    );

    // Pod spec is immutable beyond images; strategic merge on pods merges containers by name.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "1000"]}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}),
            ),
        )
        .await
        .unwrap();
    let c = &p.spec.unwrap().containers[0];
    assert_eq!(
        (c.image.as_deref(), c.command.as_ref().map(Vec::len)),
        (Some("busybox:2"), Some(2))
    );
    let err = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.reason == "Invalid"),
        "{err:?}"
    );
}

#[tokio::test]
async fn selectors_pagination_tables_and_metadata() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let mut c = cm(&format!("c{i}"));
        c.metadata.labels = Some(
            [(
                "tier".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let even = cms
        .list(&ListParams::default().labels("tier in (even),!missing"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    let named = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    let err = cms
        .list(&ListParams::default().labels("tier in even"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400),
        "{err:?}"
    );

    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 7);
    // A continue token from before a compaction has expired (410), as with etcd.
    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    cms.create(&PostParams::default(), &cm("later"))
        .await
        .unwrap();
    h.cluster.compact();
    let token = first.metadata.continue_.unwrap();
    let err = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );

    let metas = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metas.items.len(), 8);
    assert!(metas.items.iter().all(|m| m.metadata.name.is_some()));

    // Table for kubectl-style printing with CRD printer columns.
    install_crd(&client).await;
    let widgets: Api<Widget> = eventually("crd served", WAIT, || {
        let client = client.clone();
        async move {
            let api: Api<Widget> = Api::namespaced(client, "default");
            api.list(&ListParams::default()).await.ok().map(|_| api)
        }
    })
    .await;
    widgets
        .create(
            &PostParams::default(),
            &Widget::new(
                "w",
                WidgetSpec {
                    size: 3,
                    color: "red".into(),
                },
            ),
        )
        .await
        .unwrap();
    let req = http::Request::get(format!(
        "{}/apis/test.kredis.io/v1/namespaces/default/widgets",
        h.cluster.url()
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Size", "Phase", "Age"]);
    assert_eq!(table["rows"][0]["cells"][1], 3);
}

#[tokio::test]
async fn crd_at_runtime_schema_status_and_generation() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let dynamic_gvk = GroupVersionKind::gvk("test.kredis.io", "v1", "Widget");
    let (ar, _) = (kube::discovery::ApiResource::from_gvk(&dynamic_gvk), ());
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let err = raw.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );

    install_crd(&client).await;
    let disc = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(disc.has_group("test.kredis.io"));

    // Unknown fields pruned, defaults filled.
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "test.kredis.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2, "bogus": true}, "junk": 1})).unwrap();
    let created = raw.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"], json!({"size": 2, "color": "blue"}));
    assert!(created.data.get("junk").is_none());

    // Invalid objects are rejected naming the field.
    let bad: DynamicObject = serde_json::from_value(json!({"apiVersion": "test.kredis.io/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 11}})).unwrap();
    let err = raw.create(&PostParams::default(), &bad).await.unwrap_err();
    match &err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.size"), "{}", s.message);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Status writes never bump generation; spec writes do; status is ignored on the main resource.
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let w = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert_eq!(w.status.unwrap().phase.as_deref(), Some("Ready"));
    let w = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}, "status": {"phase": "Ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    assert_eq!(w.status.unwrap().phase.as_deref(), Some("Ready"));

    // Custom resources require a resourceVersion on update.
    let mut no_rv = widgets.get("w").await.unwrap();
    no_rv.metadata.resource_version = None;
    let err = widgets
        .replace("w", &PostParams::default(), &no_rv)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );

    // A CEL rule that does not compile is refused with the CRD, naming the rule.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut broken = serde_json::to_value(Widget::crd()).unwrap();
    broken["metadata"]["name"] = json!("gadgets.test.kredis.io");
    broken["spec"]["names"] = json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget"});
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([{"rule": "self.size >"}]);
    let broken: CustomResourceDefinition = serde_json::from_value(broken).unwrap();
    match crds.create(&PostParams::default(), &broken).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message
                    .contains("openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule")
                    && s.message.contains("compilation failed"),
                "{}",
                s.message
            );
        }
        other => panic!("a CRD with a broken rule was accepted: {other:?}"),
    }

    // Deleting the CRD stops serving the resource.
    crds.delete("widgets.test.kredis.io", &DeleteParams::default())
        .await
        .unwrap();
    let err = raw.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_side_apply_field_managers() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1", "y": "1"}});
    let out = cms
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a))
        .await
        .unwrap();
    assert_eq!(out.data.as_ref().unwrap().len(), 2);
    assert_eq!(out.managed_fields()[0].manager.as_deref(), Some("alice"));
    // Bob applies a different value for x: conflict, unless forced.
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "2"}});
    let err = cms
        .patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict" && s.message.contains(".data.x")),
        "{err:?}"
    );
    cms.patch("s", &PatchParams::apply("bob").force(), &Patch::Apply(&b))
        .await
        .unwrap();
    // Alice stops managing y: it goes; x now belongs to bob and stays.
    let a2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {}});
    let out = cms
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a2))
        .await
        .unwrap();
    assert_eq!(
        out.data.unwrap(),
        [("x".to_string(), "2".to_string())].into()
    );
}

#[tokio::test]
async fn watches_selectors_bookmarks_compaction_and_timeouts() {
    let h = start(0, false, |o| {
        o.bookmark_interval = Duration::from_millis(200);
        o.max_watch = Duration::from_secs(1);
    })
    .await;
    let client = h.cluster.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms.create(&PostParams::default(), &cm("w0")).await.unwrap();
    let rv0 = first.resource_version().unwrap();

    // A selector watch sees an object enter (ADDED) and leave (DELETED) the selection.
    let mut stream = cms
        .watch(&WatchParams::default().labels("sel=yes").timeout(5), &rv0)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "w0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "w0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(_)) => kinds.push("ADDED"),
            Some(WatchEvent::Deleted(_)) => kinds.push("DELETED"),
            Some(WatchEvent::Modified(_)) => kinds.push("MODIFIED"),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);

    // Bookmarks arrive and carry a resourceVersion.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv0)
        .await
        .unwrap()
        .boxed();
    let bookmark = tokio::time::timeout(WAIT, async {
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Bookmark(b))) => return b,
                Ok(Some(_)) => continue,
                other => panic!("watch ended before a bookmark: {other:?}"),
            }
        }
    })
    .await
    .expect("a bookmark within the deadline");
    assert!(!bookmark.metadata.resource_version.is_empty());

    // After compaction an old version answers 410 Expired in-stream.
    h.cluster.compact();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // A kube-runtime watcher survives compaction (relist) and server-side timeouts (1s here).
    let (reader, writer) = kube::runtime::reflector::store();
    let rf = kube::runtime::reflector(
        writer,
        kube::runtime::watcher(cms.clone(), Default::default()),
    );
    let task = tokio::spawn(rf.for_each(|_| async {}));
    for i in 1..4 {
        cms.create(&PostParams::default(), &cm(&format!("w{i}")))
            .await
            .unwrap();
    }
    h.cluster.compact();
    tokio::time::sleep(Duration::from_millis(1500)).await; // let at least one watch time out
    for i in 4..7 {
        cms.create(&PostParams::default(), &cm(&format!("w{i}")))
            .await
            .unwrap();
        h.cluster.compact();
    }
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    eventually("reflector converges", WAIT, || {
        let n = reader.state().len();
        let has_w1 = reader.state().iter().any(|c| c.name_any() == "w1");
        async move { (n == 6 && !has_w1).then_some(()) }
    })
    .await;
    task.abort();

    // Streaming lists (sendInitialEvents + initial-events-end bookmark) and metadata watches.
    let cfg = kube::runtime::watcher::Config::default().streaming_lists();
    let (reader, writer) = kube::runtime::reflector::store();
    let rf = kube::runtime::reflector(writer, kube::runtime::watcher(cms.clone(), cfg));
    let streaming = tokio::spawn(rf.for_each(|_| async {}));
    let (meta_reader, meta_writer) = kube::runtime::reflector::store();
    let mf = kube::runtime::reflector(
        meta_writer,
        kube::runtime::watcher(
            Api::<kube::core::PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), "default"),
            Default::default(),
        ),
    );
    let meta_task = tokio::spawn(mf.for_each(|_| async {}));
    eventually("streaming and metadata reflectors", WAIT, || {
        let (a, b) = (reader.state().len(), meta_reader.state().len());
        async move { (a == 6 && b == 6).then_some(()) }
    })
    .await;
    streaming.abort();
    meta_task.abort();
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owned = |name: &str, owner: &ConfigMap| -> ConfigMap {
        let mut c = cm(name);
        c.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.name_any(),
                uid: owner.uid().unwrap(),
                block_owner_deletion: Some(true),
                ..Default::default()
            },
        ]);
        c
    };
    for (owner, policy) in [
        ("bg", DeleteParams::background()),
        ("fg", DeleteParams::foreground()),
        ("or", DeleteParams::orphan()),
    ] {
        let o = cms
            .create(&PostParams::default(), &cm(owner))
            .await
            .unwrap();
        cms.create(
            &PostParams::default(),
            &owned(&format!("{owner}-child"), &o),
        )
        .await
        .unwrap();
        cms.delete(owner, &policy).await.unwrap();
    }
    eventually("owners gone, orphan kept", WAIT, || {
        let cms = cms.clone();
        async move {
            let names: Vec<String> = cms
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|c| c.name_any())
                .collect();
            (names == ["or-child"]).then_some(())
        }
    })
    .await;
    let orphan = cms.get("or-child").await.unwrap();
    assert!(orphan.owner_references().is_empty());

    // Deleting a namespace deletes its content, then the namespace.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &cm("x")).await.unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    eventually("namespace gone", WAIT, || {
        let nss = nss.clone();
        async move { nss.get_opt("tmp").await.ok()?.is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_the_real_status_codes() {
    let h = start(0, false, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let send = |method: &str, path: &str, ct: &str, body: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", h.cluster.url()))
            .header("Content-Type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let client = client.clone();
        async move {
            match client.request::<serde_json::Value>(req).await {
                Ok(_) => (200, String::new()),
                Err(kube::Error::Api(s)) => (s.code, s.reason),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    assert_eq!(
        send("POST", cms, "application/json", "{not json").await,
        (400, "BadRequest".into())
    );
    assert_eq!(
        send("POST", cms, "application/vnd.kubernetes.protobuf", "x").await,
        (415, "UnsupportedMediaType".into())
    );
    assert_eq!(
        send("GET", "/api/v1/frobnicators", "application/json", "").await,
        (404, "NotFound".into())
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/json",
            r#"{"metadata":{"name":"Bad_Name"}}"#
        )
        .await,
        (422, "Invalid".into())
    );
    assert_eq!(
        send(
            "POST",
            cms,
            "application/yaml",
            "metadata:\n  name: ok\ndata:\n  a: b\n"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            "PATCH",
            &format!("{cms}/ok"),
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/nope/x","value":1}]"#
        )
        .await,
        (422, "Invalid".into())
    );
    assert_eq!(
        send(
            "PATCH",
            &format!("{cms}/ok"),
            "application/json-patch+json",
            r#"{"op":"add"}"#
        )
        .await,
        (400, "BadRequest".into())
    );
    assert_eq!(
        send("PATCH", &format!("{cms}/ok"), "text/plain", "x").await,
        (415, "UnsupportedMediaType".into())
    );
    assert_eq!(
        send(
            "PUT",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "{}"
        )
        .await
        .0,
        405
    );
    assert_eq!(
        send(
            "GET",
            &format!("{cms}?labelSelector=a%20in%20b"),
            "application/json",
            ""
        )
        .await,
        (400, "BadRequest".into())
    );
    assert_eq!(
        send(
            "GET",
            "/api/v1/pods?fieldSelector=spec.bogus%3D1",
            "application/json",
            ""
        )
        .await,
        (400, "BadRequest".into())
    );
    // A huge grace period and a path-like container name are refused or clamped, not fatal.
    let pods = "/api/v1/namespaces/default/pods";
    let pod = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(send("POST", pods, "application/json", pod).await.0, 200);
    assert_eq!(
        send(
            "GET",
            &format!("{pods}/p/log?container=..%2F..%2Fetc%2Fpasswd"),
            "application/json",
            ""
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            "DELETE",
            &format!("{pods}/p?gracePeriodSeconds=9223372036854775807"),
            "application/json",
            ""
        )
        .await
        .0,
        200
    );
    // The server is still fine.
    assert_eq!(send("GET", cms, "application/json", "").await.0, 200);
}
