//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902, where `test` of a missing path
//! matches `null` as the real API server's json-patch library does), strategic merge patch for
//! built-in kinds (keyed list merge and `$patch`/`$setElementOrder`/`$deleteFromPrimitiveList`
//! directives), and the merge step of server-side apply. Pure; no network.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::fields::{item_key, list_kind, ListKind};

/// Applies a JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> ApiResult<Vec<String>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::unprocessable(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, segs: &[String], path: &str) -> ApiResult<&'a mut Value> {
    let mut cur = doc;
    for s in segs {
        cur = match cur {
            Value::Object(m) => m.get_mut(s),
            Value::Array(a) => s.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| ApiError::unprocessable(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> ApiResult<()> {
    let segs = split_pointer(path)?;
    let Some((last, parents)) = segs.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| {
                        ApiError::unprocessable(format!(
                            "add operation does not apply: index out of bounds: {path:?}"
                        ))
                    })?
            };
            a.insert(idx, value);
        }
        _ => {
            return Err(ApiError::unprocessable(format!(
                "doc is missing path: {path:?}"
            )))
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let segs = split_pointer(path)?;
    let Some((last, parents)) = segs.split_last() else {
        return Ok(std::mem::take(doc));
    };
    let missing = || {
        ApiError::unprocessable(format!(
            "remove operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> ApiResult<Option<&'a Value>> {
    Ok(if path.is_empty() {
        Some(doc)
    } else {
        doc.pointer(path)
    })
}

/// Applies a JSON patch (array of operations).
pub fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::unprocessable(format!("operation missing path: {op}")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::unprocessable(format!("operation missing value: {op}")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::unprocessable(format!("operation missing from: {op}")))
        };
        match kind {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                let v = value()?;
                if get(&doc, path)?.is_none() {
                    return Err(ApiError::unprocessable(format!(
                        "replace operation does not apply: doc is missing key: {path}"
                    )));
                }
                remove(&mut doc, path)?;
                add(&mut doc, path, v)?;
            }
            "move" => {
                let f = from()?;
                let v = remove(&mut doc, f)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let f = from()?;
                let v = get(&doc, f)?.cloned().ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "copy operation does not apply: doc is missing from path: {f}"
                    ))
                })?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                let want = op.get("value").cloned().unwrap_or(Value::Null);
                // evanphx/json-patch (used by kube-apiserver) treats a missing path as null.
                let actual = get(&doc, path)?.cloned().unwrap_or(Value::Null);
                if actual != want {
                    return Err(ApiError::unprocessable(format!("the server rejected our request due to an error in our request: testing value {path} failed: test failed")));
                }
            }
            other => {
                return Err(ApiError::unprocessable(format!(
                    "unexpected kind of operation {other:?}"
                )))
            }
        }
    }
    Ok(doc)
}

/// Applies a strategic merge patch to a built-in kind.
pub fn strategic_merge(target: &Value, patch: &Value) -> ApiResult<Value> {
    merge_with(target, patch, true, true)
}

/// The merge step of server-side apply: like a strategic merge without directives; lists of
/// custom resources are atomic.
pub fn apply_merge(target: &Value, applied: &Value, builtin: bool) -> ApiResult<Value> {
    merge_with(target, applied, builtin, false)
}

fn merge_with(target: &Value, patch: &Value, builtin: bool, directives: bool) -> ApiResult<Value> {
    let (Value::Object(t), Value::Object(p)) = (target, patch) else {
        return Ok(patch.clone());
    };
    let mut out = t.clone();
    if directives && p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        return Ok(Value::Object(p));
    }
    for (k, v) in p {
        if directives {
            if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                continue;
            }
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                if let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(field), v.as_array()) {
                    cur.retain(|x| !del.contains(x));
                }
                continue;
            }
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Object(_)), Value::Object(pm)) => {
                if directives && pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(k);
                    continue;
                }
                merge_with(&out[k], v, builtin, directives)?
            }
            (Some(Value::Array(cur)), Value::Array(items)) => {
                merge_list(k, cur, items, builtin, directives)?
            }
            (_, Value::Object(_)) => {
                merge_with(&Value::Object(Map::new()), v, builtin, directives)?
            }
            (_, Value::Array(items)) => {
                // Strip directive items when there is nothing to merge into.
                let kept: Vec<Value> = items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(|i| strip_directives(i, builtin, directives))
                    .collect::<ApiResult<_>>()?;
                Value::Array(kept)
            }
            (_, other) => other.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(Value::Object(out))
}

fn strip_directives(v: &Value, builtin: bool, directives: bool) -> ApiResult<Value> {
    if v.is_object() {
        merge_with(&Value::Object(Map::new()), v, builtin, directives)
    } else {
        Ok(v.clone())
    }
}

fn merge_list(
    field: &str,
    cur: &[Value],
    items: &[Value],
    builtin: bool,
    directives: bool,
) -> ApiResult<Value> {
    let kind = list_kind(field, if cur.is_empty() { items } else { cur }, builtin);
    match kind {
        ListKind::Atomic => Ok(Value::Array(
            items
                .iter()
                .map(|i| strip_directives(i, builtin, directives))
                .collect::<ApiResult<_>>()?,
        )),
        ListKind::Set => {
            let mut out = cur.to_vec();
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListKind::Map(keys) => {
            let mut out = cur.to_vec();
            for item in items {
                let key = item_key(item, &keys);
                let pos = out.iter().position(|c| item_key(c, &keys) == key);
                let is_delete =
                    directives && item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, is_delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => out[i] = merge_with(&out[i], item, builtin, directives)?,
                    (None, false) => out.push(strip_directives(item, builtin, directives)?),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_test_of_missing_path_matches_null() {
        let doc = json!({"metadata": {}});
        let p = json!([{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["a"]}]);
        assert_eq!(
            json_patch(&doc, &p).unwrap(),
            json!({"metadata":{"finalizers":["a"]}})
        );
        let bad = json!([{"op":"test","path":"/metadata/finalizers","value":["x"]}]);
        assert_eq!(json_patch(&doc, &bad).unwrap_err().code, 422);
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let t = json!({"spec":{"containers":[{"name":"a","image":"1"},{"name":"b","image":"2"}]}});
        let p = json!({"spec":{"containers":[{"name":"b","image":"3"},{"name":"a","$patch":"delete"}],"$setElementOrder/containers":[{"name":"b"}]}});
        assert_eq!(
            strategic_merge(&t, &p).unwrap(),
            json!({"spec":{"containers":[{"name":"b","image":"3"}]}})
        );
    }

    #[test]
    fn merge_patch_removes_nulls() {
        assert_eq!(
            merge_patch(&json!({"a":1,"b":{"c":2}}), &json!({"a":null,"b":{"d":3}})),
            json!({"b":{"c":2,"d":3}})
        );
    }
}
