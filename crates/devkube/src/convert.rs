//! Conversion between `events.k8s.io/v1` Events and core `v1` Events, which share one storage
//! (as in kube-apiserver), so `kubectl get events`/`describe` show what kube-rs's `Recorder`
//! publishes. Every other resource is stored as served. Pure; no network.

use serde_json::{json, Map, Value};

use crate::registry::ResourceInfo;

/// Registry id of the events.k8s.io resource.
pub const NEW_EVENTS: &str = "events.events.k8s.io";

/// (events.k8s.io field, core field) pairs that only change name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: &Value, from_new: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMES.iter().find_map(|(new, core)| {
            if from_new && k == new {
                Some(*core)
            } else if !from_new && k == core {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(k).to_owned(), v.clone());
    }
    Value::Object(out)
}

/// A body as received for `info` → the stored form.
pub fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    if info.id() != NEW_EVENTS {
        return obj;
    }
    let mut o = rename(&obj, true);
    o["apiVersion"] = json!("v1");
    o["kind"] = json!("Event");
    // Core consumers (kubectl describe) read source.component.
    if o.get("source").is_none() {
        if let Some(c) = o.get("reportingComponent").cloned() {
            o["source"] = json!({"component": c});
        }
    }
    o
}

/// A stored object → the form served for `info`.
pub fn from_storage(info: &ResourceInfo, obj: &Value) -> Value {
    if info.id() != NEW_EVENTS {
        return obj.clone();
    }
    let mut o = rename(obj, false);
    o["apiVersion"] = json!("events.k8s.io/v1");
    o["kind"] = json!("Event");
    o
}

/// A field-selector path of `info` → the stored object's path.
pub fn field_path(info: &ResourceInfo, path: &str) -> String {
    if info.id() != NEW_EVENTS {
        return path.to_owned();
    }
    for (new, core) in RENAMES {
        if path == *new {
            return (*core).to_owned();
        }
        if let Some(rest) = path.strip_prefix(&format!("{new}.")) {
            return format!("{core}.{rest}");
        }
    }
    path.to_owned()
}
