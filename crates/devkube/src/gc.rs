//! Garbage collection controllers, run in-process against the store: owner-reference GC
//! (background, foreground via the `foregroundDeletion` finalizer, orphan via the `orphan`
//! finalizer), the namespace controller (empties a terminating namespace, then lets it go) and
//! pod GC (pods bound to a Node that no longer exists are force-deleted). No network.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::meta;
use crate::store::{DeleteOptions, Store, WriteOptions};

/// Resweep at least this often even without writes (cheap: the store is small).
const RESYNC: Duration = Duration::from_millis(500);

/// Runs until the task is aborted.
pub async fn run(store: Arc<Store>) {
    let mut changed = store.subscribe();
    loop {
        changed.borrow_and_update();
        sweep(&store);
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        // Coalesce bursts of writes into one sweep.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delete(store: &Store, key: &str, obj: &Value, opts: &DeleteOptions) {
    let Some(info) = store.registry.by_key(key) else {
        return;
    };
    match store.delete(&info, meta::namespace(obj), meta::name(obj), opts) {
        Ok(_) => tracing::debug!(resource = key, name = meta::name(obj), "garbage collected"),
        Err(e) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(resource = key, name = meta::name(obj), error = %e, "failed to garbage collect")
        }
    }
}

fn drop_finalizer(store: &Store, key: &str, obj: &Value, finalizer: &str) {
    let Some(info) = store.registry.by_key(key) else {
        return;
    };
    let res = store.mutate(
        &info,
        meta::namespace(obj),
        meta::name(obj),
        &WriteOptions::internal("garbage-collector"),
        |o| {
            let mut o = o.clone();
            if let Some(list) = o
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|f| f.as_str() != Some(finalizer));
            }
            Ok(o)
        },
    );
    if let Err(e) = res {
        tracing::debug!(resource = key, name = meta::name(obj), error = %e, "failed to remove finalizer");
    }
}

/// One pass over every object.
pub fn sweep(store: &Store) {
    let all = store.all_objects();
    let by_uid: HashMap<&str, (&str, &Value)> = all
        .iter()
        .map(|(k, o)| (meta::uid(o), (k.as_str(), o.as_ref())))
        .collect();
    let nodes: HashSet<&str> = all
        .iter()
        .filter(|(k, _)| k == "nodes")
        .map(|(_, o)| meta::name(o))
        .collect();
    let namespaces: HashMap<&str, &Value> = all
        .iter()
        .filter(|(k, _)| k == "namespaces")
        .map(|(_, o)| (meta::name(o), o.as_ref()))
        .collect();
    let mut referenced: HashSet<String> = HashSet::new();
    let background = DeleteOptions {
        propagation: Some("Background".into()),
        ..DeleteOptions::default()
    };
    for (key, obj) in &all {
        let owners = meta::owner_uids(obj);
        referenced.extend(owners.iter().cloned());
        let ns = meta::namespace(obj);
        if !ns.is_empty() && key != "namespaces" {
            match namespaces.get(ns) {
                Some(n) if meta::is_deleting(n) => {
                    if !meta::is_deleting(obj) {
                        delete(
                            store,
                            key,
                            obj,
                            &DeleteOptions {
                                grace: Some(0),
                                ..background.clone()
                            },
                        );
                    }
                    continue;
                }
                None => {
                    delete(
                        store,
                        key,
                        obj,
                        &DeleteOptions {
                            grace: Some(0),
                            ..background.clone()
                        },
                    );
                    continue;
                }
                Some(_) => {}
            }
        }
        if key == "pods" {
            let node = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !node.is_empty() && !nodes.contains(node) {
                delete(
                    store,
                    key,
                    obj,
                    &DeleteOptions {
                        grace: Some(0),
                        ..background.clone()
                    },
                );
                continue;
            }
        }
        if owners.is_empty() || meta::is_deleting(obj) {
            continue;
        }
        let live: Vec<&Value> = owners
            .iter()
            .filter_map(|u| by_uid.get(u.as_str()).map(|(_, o)| *o))
            .collect();
        if live.is_empty() {
            delete(store, key, obj, &background);
            continue;
        }
        if live.iter().any(|o| {
            meta::is_deleting(o)
                && meta::finalizers(o)
                    .iter()
                    .any(|f| f == "foregroundDeletion")
        }) {
            delete(store, key, obj, &background);
            continue;
        }
        let orphaning: Vec<String> = live
            .iter()
            .filter(|o| meta::is_deleting(o) && meta::finalizers(o).iter().any(|f| f == "orphan"))
            .map(|o| meta::uid(o).to_owned())
            .collect();
        if !orphaning.is_empty() {
            if let Some(info) = store.registry.by_key(key) {
                let _ = store.mutate(
                    &info,
                    ns,
                    meta::name(obj),
                    &WriteOptions::internal("garbage-collector"),
                    |o| {
                        let mut o = o.clone();
                        if let Some(refs) = o
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| {
                                !orphaning
                                    .iter()
                                    .any(|u| r.get("uid").and_then(Value::as_str) == Some(u))
                            });
                        }
                        Ok(o)
                    },
                );
            }
        }
    }
    for (key, obj) in &all {
        if !meta::is_deleting(obj) {
            continue;
        }
        let fins = meta::finalizers(obj);
        let has_dependents = referenced.contains(meta::uid(obj));
        for f in ["foregroundDeletion", "orphan"] {
            if fins.iter().any(|x| x == f) && !has_dependents {
                drop_finalizer(store, key, obj, f);
            }
        }
        if key == "namespaces" && fins.iter().any(|x| x == "kubernetes") {
            let name = meta::name(obj);
            let empty = !all
                .iter()
                .any(|(k, o)| k != "namespaces" && meta::namespace(o) == name);
            if empty {
                drop_finalizer(store, key, obj, "kubernetes");
            }
        }
    }
}
