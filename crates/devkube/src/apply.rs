//! Server-side apply: conflicts against other field managers, the merge of the applied
//! configuration into the live object, and removal of fields the applier stopped managing.
//! Pure; no network.

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::{self, FieldSet};
use crate::patch;

/// The outcome of an apply: the object to store and the fields the applier now owns.
#[derive(Debug)]
pub struct Applied {
    /// The merged object.
    pub object: Value,
    /// The applier's field set.
    pub fields: FieldSet,
}

/// Applies `applied` for `manager` onto `current` (None when creating).
pub fn apply(
    group: &str,
    plural: &str,
    builtin: bool,
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> ApiResult<Applied> {
    let applied_set = fields::field_set(applied, builtin);
    let Some(current) = current else {
        return Ok(Applied {
            object: applied.clone(),
            fields: applied_set,
        });
    };
    let entries = fields::entries(current);
    let mut conflicts: Vec<(String, String, Vec<String>)> = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager) {
        for p in applied_set.intersection(&e.fields) {
            if fields::lookup(current, p) != fields::lookup(applied, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let name = current
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, v, p)| format!("conflict with {m:?} using {v}: {}", fields::display(p)))
            .collect();
        let n = conflicts.len();
        let mut err = ApiError::conflict(
            group,
            plural,
            name,
            &format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                list.join("\n")
            ),
        );
        err.message = format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            list.join("\n")
        );
        err.causes = conflicts
            .iter()
            .map(|(m, v, p)| Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {m:?} using {v}"),
                field: fields::display(p),
            })
            .collect();
        return Err(err);
    }
    let mut merged = patch::apply_merge(current, applied, builtin)?;
    // Fields this manager applied before but no longer does, and nobody else owns, go away.
    let previously: FieldSet = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| e.manager != manager)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previously.difference(&applied_set) {
        if others.contains(p) {
            continue;
        }
        fields::remove(&mut merged, p);
        cleanup(&mut merged, p, &others, &applied_set);
    }
    Ok(Applied {
        object: merged,
        fields: applied_set,
    })
}

/// After removing a leaf, removes now-empty parents (maps, keyed items holding only their keys)
/// that no remaining manager owns anything under.
fn cleanup(obj: &mut Value, path: &[String], others: &FieldSet, applied: &FieldSet) {
    for depth in (1..path.len()).rev() {
        let prefix = &path[..depth];
        let owned = |set: &FieldSet| {
            set.iter()
                .any(|p| p.len() > prefix.len() && p.starts_with(prefix))
        };
        if owned(others) || owned(applied) {
            return;
        }
        let Some(v) = fields::lookup(obj, prefix) else {
            return;
        };
        let empty = match (prefix.last(), v) {
            (Some(seg), Value::Object(m)) if seg.starts_with("k:") => {
                let keys: serde_json::Map<String, Value> =
                    serde_json::from_str(&seg[2..]).unwrap_or_default();
                m.keys().all(|k| keys.contains_key(k))
            }
            (_, Value::Object(m)) => m.is_empty(),
            (_, Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty {
            return;
        }
        fields::remove(obj, prefix);
    }
    let _ = json!(null);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Subresource, WriteOptions};

    fn record(old: Option<&Value>, new: &mut Value, manager: &str, applied: Option<FieldSet>) {
        let opts = WriteOptions {
            manager: manager.into(),
            operation: if applied.is_some() { "Apply" } else { "Update" },
            applied,
            dry_run: false,
            sub: Subresource::Main,
            strict: false,
        };
        fields::record(old, new, &opts);
    }

    #[test]
    fn conflicts_force_and_removal() {
        let a1 = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"1","y":"1"}});
        let r = apply("", "configmaps", true, None, &a1, "a", false).unwrap();
        let mut obj = r.object;
        record(None, &mut obj, "a", Some(r.fields));
        // Another manager changes x with an update: it now owns x.
        let mut upd = obj.clone();
        upd["data"]["x"] = json!("2");
        record(Some(&obj), &mut upd, "b", None);
        let obj = upd;
        // a re-applies x=1: conflict.
        let err = apply("", "configmaps", true, Some(&obj), &a1, "a", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".data.x"), "{}", err.message);
        // a applies without y and with force: y removed, x forced back.
        let a2 =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"1"}});
        let r = apply("", "configmaps", true, Some(&obj), &a2, "a", true).unwrap();
        assert_eq!(r.object["data"], json!({"x":"1"}));
    }
}
