//! A real kube-runtime Controller against the emulator: `owns()` re-triggers on child changes,
//! the `finalizer()` helper (JSON patch with `test`), server-side apply of children,
//! `patch_status`, and `Recorder` events (events.k8s.io/v1).

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, start};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const FINALIZER: &str = "test.kredis.io/cleanup";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.kredis.io",
    version = "v1",
    kind = "Gadget",
    namespaced,
    status = "GadgetStatus"
)]
pub struct GadgetSpec {
    pub size: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct GadgetStatus {
    pub observed_size: Option<i64>,
}

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

async fn apply(g: Arc<Gadget>, ctx: &Ctx) -> Result<Action, Error> {
    let ns = g.namespace().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = g.controller_owner_ref(&()).expect("gadget has a uid");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{}-child", g.name_any()), "ownerReferences": [owner]},
        "data": {"size": g.spec.size.to_string()}});
    cms.patch(
        &format!("{}-child", g.name_any()),
        &PatchParams::apply("gadget-controller").force(),
        &Patch::Apply(&cm),
    )
    .await?;
    let gadgets: Api<Gadget> = Api::namespaced(ctx.client.clone(), &ns);
    let status = json!({"apiVersion": "test.kredis.io/v1", "kind": "Gadget", "status": {"observed_size": g.spec.size}});
    gadgets
        .patch_status(
            &g.name_any(),
            &PatchParams::apply("gadget-controller").force(),
            &Patch::Apply(&status),
        )
        .await?;
    ctx.recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "Reconciled".into(),
                note: Some(format!("size {}", g.spec.size)),
                action: "Reconcile".into(),
                secondary: None,
            },
            &g.object_ref(&()),
        )
        .await?;
    Ok(Action::await_change())
}

async fn reconcile(
    g: Arc<Gadget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<Error>> {
    let api: Api<Gadget> = Api::namespaced(ctx.client.clone(), &g.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, g, |event| async {
        match event {
            Finalizer::Apply(g) => apply(g, &ctx).await,
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _g: Arc<Gadget>,
    _e: &kube::runtime::finalizer::Error<Error>,
    _ctx: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_with_owns_finalizer_recorder_and_server_side_apply() {
    let h = start(0, false, |o| o.max_watch = Duration::from_secs(3)).await;
    let client = h.cluster.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Gadget::crd())
        .await
        .unwrap();

    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "gadget-controller".into(),
                instance: Some("test".into()),
            },
        ),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(gadgets.clone(), Default::default())
        .owns(cms.clone(), Default::default())
        // No `shutdown_on_signal()`: signals are process-wide and foreground.rs raises SIGTERM
        // in this test binary, which would stop this controller mid-test.
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g", GadgetSpec { size: 3 }),
        )
        .await
        .unwrap();
    eventually("child, status, finalizer, event", WAIT, || async {
        let cm = cms.get_opt("g-child").await.ok()??;
        let g = gadgets.get("g").await.ok()?;
        let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
        let evs = events.list(&ListParams::default()).await.ok()?;
        let ok = cm.data.as_ref()?.get("size").map(String::as_str) == Some("3")
            && g.status.as_ref()?.observed_size == Some(3)
            && g.finalizers().iter().any(|f| f == FINALIZER)
            && evs
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Reconciled"));
        ok.then_some(())
    })
    .await;
    let g = gadgets.get("g").await.unwrap();
    assert_eq!(
        g.metadata.generation,
        Some(1),
        "status writes must not bump generation"
    );

    // owns(): deleting the child re-triggers the owner, which recreates it.
    cms.delete("g-child", &DeleteParams::default())
        .await
        .unwrap();
    eventually("child recreated", WAIT, || async {
        cms.get_opt("g-child").await.ok()?.map(|_| ())
    })
    .await;

    // A spec change flows through to the child; watches survive compaction meanwhile.
    h.cluster.compact();
    gadgets
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    eventually("child updated", WAIT, || async {
        let cm = cms.get_opt("g-child").await.ok()??;
        (cm.data?.get("size")? == "5").then_some(())
    })
    .await;

    // Deletion runs the cleanup through the finalizer, then garbage collection takes the child.
    gadgets.delete("g", &DeleteParams::default()).await.unwrap();
    eventually("owner and child gone", WAIT, || async {
        let gone = gadgets.get_opt("g").await.ok()?.is_none()
            && cms.get_opt("g-child").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    task.abort();
}
