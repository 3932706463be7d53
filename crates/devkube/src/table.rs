//! Server-side printing: `meta.k8s.io/v1 Table` responses (what `kubectl get` renders, with CRD
//! printer columns) and `PartialObjectMetadata`. Includes the small JSONPath subset printer
//! columns use (`.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`, escaped dots). Pure; no network.

use serde_json::{json, Value};

use crate::meta;
use crate::registry::{Column, ColumnSource, ResourceInfo};

/// What representation the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves.
    Full,
    /// `as=Table`.
    Table,
    /// `as=PartialObjectMetadata` (or the list form).
    Metadata,
}

impl Representation {
    /// Parses an `Accept` header (first acceptable alternative wins).
    pub fn from_accept(accept: &str) -> Self {
        for alt in accept.split(',') {
            let alt = alt.trim();
            if alt.contains("as=Table") {
                return Self::Table;
            }
            if alt.contains("as=PartialObjectMetadata") {
                return Self::Metadata;
            }
            if alt.starts_with("application/json")
                || alt.starts_with("*/*")
                || alt.starts_with("application/yaml")
            {
                return Self::Full;
            }
        }
        Self::Full
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// Column definitions of a table.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    info.columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() }, "format": format, "description": "", "priority": c.priority})
        })
        .collect()
}

/// One table row for an object (`includeObject` decides what `object` holds).
pub fn row(info: &ResourceInfo, obj: &Value, include: &str) -> Value {
    let cells: Vec<Value> = info.columns.iter().map(|c| cell(c, obj)).collect();
    let object = match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => partial(obj),
    };
    json!({"cells": cells, "object": object})
}

/// A full Table for a list of objects.
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    rv: &str,
    cont: Option<&str>,
    include: &str,
) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(info, o, include)).collect();
    let mut md = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "columnDefinitions": column_definitions(info), "rows": rows})
}

fn cell(c: &Column, obj: &Value) -> Value {
    match &c.source {
        ColumnSource::Name => json!(meta::name(obj)),
        ColumnSource::Age => json!(meta::age(meta::meta_str(obj, "creationTimestamp"))),
        ColumnSource::JsonPath(p) => {
            let vals = jsonpath(obj, p);
            match vals.as_slice() {
                [] => Value::Null,
                [one] if c.type_ == "date" => match one.as_str() {
                    Some(ts) => json!(meta::age(ts)),
                    None => one.clone(),
                },
                [one] => match one {
                    Value::Object(_) | Value::Array(_) => json!(one.to_string()),
                    other => other.clone(),
                },
                many => json!(many
                    .iter()
                    .map(|v| v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")),
            }
        }
        ColumnSource::PodReady => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            json!(format!("{ready}/{total}"))
        }
        ColumnSource::PodStatus => {
            if meta::is_deleting(obj) {
                return json!("Terminating");
            }
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let reason = statuses.into_iter().flatten().find_map(|c| {
                c.pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .filter(|r| *r != "NotRunnableLocally")
                    .or_else(|| {
                        c.pointer("/state/terminated/reason")
                            .and_then(Value::as_str)
                    })
            });
            let phase = obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending");
            json!(match reason {
                Some(r) if phase != "Succeeded" && phase != "Failed" => r,
                _ => obj
                    .pointer("/status/reason")
                    .and_then(Value::as_str)
                    .unwrap_or(phase),
            })
        }
        ColumnSource::PodRestarts => {
            let n: i64 = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |s| {
                    s.iter()
                        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                        .sum()
                });
            json!(n)
        }
        ColumnSource::NodeStatus => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True");
            let mut s = if ready {
                "Ready".to_owned()
            } else {
                "NotReady".to_owned()
            };
            if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                s.push_str(",SchedulingDisabled");
            }
            json!(s)
        }
        ColumnSource::NodeRoles => {
            let roles: Vec<&str> = meta::labels(obj)
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            json!(if roles.is_empty() {
                "<none>".to_owned()
            } else {
                roles.join(",")
            })
        }
        ColumnSource::DataCount => json!(
            obj.get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
        ),
        ColumnSource::ServicePorts => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.get("port").map(Value::to_string).unwrap_or_default(),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    )
                })
                .collect();
            json!(if ports.is_empty() {
                "<none>".to_owned()
            } else {
                ports.join(",")
            })
        }
        ColumnSource::EventObject => json!(format!(
            "{}/{}",
            obj.pointer("/involvedObject/kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase(),
            obj.pointer("/involvedObject/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        )),
    }
}

fn split_path(path: &str) -> Vec<String> {
    // Splits on '.' outside brackets, honouring `\.` escapes.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                cur.push('.');
                chars.next();
            }
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            '.' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Evaluates the JSONPath subset used by printer columns.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = vec![obj.clone()];
    for seg in split_path(path) {
        let (field, filters) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg.as_str(), ""),
        };
        if !field.is_empty() {
            cur = cur.iter().filter_map(|v| v.get(field).cloned()).collect();
        }
        let mut rest = filters;
        while let Some(end) = rest.find(']') {
            let inner = rest.get(1..end).unwrap_or("");
            rest = &rest[end + 1..];
            cur = cur
                .into_iter()
                .flat_map(|v| {
                    let arr = v.as_array().cloned().unwrap_or_default();
                    if inner == "*" {
                        arr
                    } else if let Ok(i) = inner.parse::<usize>() {
                        arr.get(i).cloned().into_iter().collect()
                    } else if let Some(f) =
                        inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                    {
                        let (k, want) = f.split_once("==").unwrap_or((f, ""));
                        let want = want.trim().trim_matches('"').trim_matches('\'');
                        arr.into_iter()
                            .filter(|item| {
                                item.get(k.trim()).is_some_and(|x| {
                                    x.as_str().map_or_else(
                                        || x.to_string().as_str() == want,
                                        |s| s == want,
                                    )
                                })
                            })
                            .collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect();
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"X","status":"False"}]},"metadata":{"labels":{"a.b/c":"v"}}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[1].type"), vec![json!("X")]);
        assert_eq!(jsonpath(&o, ".metadata.labels.a\\.b/c"), vec![json!("v")]);
        assert!(jsonpath(&o, ".spec.x").is_empty());
    }
}
