//! Resource handlers: get, list, watch (delegated), create, update, patch (merge, JSON,
//! strategic, apply), delete, deletecollection, and the pod subresources `status`, `log`,
//! `eviction` and `binding`. Translates HTTP into store operations; no other I/O except
//! reading pod log files.

use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{json_response, AppState, Req};
use crate::apply;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::patch;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, Subresource, WriteOptions};
use crate::table::{self, Representation};

/// A resolved resource request.
pub(crate) struct Target<'a> {
    pub info: Arc<ResourceInfo>,
    /// The resource whose storage holds these objects (differs for events.k8s.io Events).
    pub store_info: Arc<ResourceInfo>,
    pub version: &'a str,
    pub ns: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Option<&'a str>,
}

pub(crate) async fn handle(
    state: &AppState,
    r: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<Response> {
    let (force_watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail, ["status" | "finalize"]) =>
        {
            (Some(*ns), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let info = state
        .store
        .registry
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if !info.namespaced && ns.is_some() {
        return Err(ApiError::no_route());
    }
    if info.namespaced && ns.is_none() && (name.is_some() || r.method == Method::POST) {
        return Err(ApiError::no_route());
    }
    let store_info = state
        .store
        .registry
        .by_key(&info.key())
        .unwrap_or_else(|| info.clone());
    let t = Target {
        info,
        store_info,
        version,
        ns,
        name,
        sub,
    };
    match (t.sub, &r.method) {
        (None, _) => {}
        (Some("status"), m)
            if t.info.status_subresource
                && [Method::GET, Method::PUT, Method::PATCH].contains(m) => {}
        (Some("finalize"), &Method::PUT) if t.info.key() == "namespaces" => {}
        (Some("log"), &Method::GET) if t.info.key() == "pods" => return pod_log(state, r, &t),
        (Some("eviction"), &Method::POST) if t.info.key() == "pods" => return evict(state, r, &t),
        (Some("binding"), &Method::POST) if t.info.key() == "pods" => return bind(state, r, &t),
        _ => return Err(ApiError::no_route()),
    }
    let watch = force_watch || r.q_bool("watch");
    match (&r.method, t.name) {
        (&Method::GET, Some(name)) => {
            let obj = state.store.get(&t.store_info, t.ns.unwrap_or(""), name)?;
            Ok(respond_one(r, &t, StatusCode::OK, &obj))
        }
        (&Method::GET, None) if watch => super::watch::watch(state, r, &t),
        (&Method::GET, None) => list(state, r, &t),
        (&Method::POST, None) => create(state, r, &t),
        (&Method::PUT, Some(name)) => update(state, r, &t, name),
        (&Method::PATCH, Some(name)) => patch(state, r, &t, name),
        (&Method::DELETE, Some(name)) => delete(state, r, &t, name),
        (&Method::DELETE, None) => delete_collection(state, r, &t),
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// Sets the served apiVersion (custom resources may be requested in any served version).
pub(crate) fn with_version(info: &ResourceInfo, version: &str, obj: &Value) -> Value {
    let mut o = crate::convert::from_storage(info, obj);
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version(version)));
        m.entry("kind").or_insert(json!(info.kind));
    }
    o
}

fn respond_one(r: &Req, t: &Target<'_>, code: StatusCode, obj: &Value) -> Response {
    let obj = with_version(&t.info, t.version, obj);
    let repr = Representation::from_accept(r.header(header::ACCEPT));
    let v = match repr {
        Representation::Full => obj,
        Representation::Metadata => table::partial(&obj),
        Representation::Table => {
            let rv = meta::meta_str(&obj, "resourceVersion").to_owned();
            table::table(
                &t.info,
                &[obj],
                &rv,
                None,
                r.q("includeObject").unwrap_or("Metadata"),
            )
        }
    };
    json_response(code, &v)
}

pub(crate) fn selectors(r: &Req, info: &ResourceInfo) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {}", e.0)))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), &info.field_selectors())
        .map_err(|e| ApiError::bad_request(e.0))?
        .map_fields(|f| crate::convert::field_path(info, f));
    Ok((labels, fields))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "ns": ns, "name": name}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> ApiResult<(u64, String, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?,
        v.get("ns").and_then(Value::as_str).unwrap_or("").to_owned(),
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    ))
}

fn list(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let (labels, fields) = selectors(r, &t.info)?;
    let (objs, rv) = state.store.snapshot(&t.info.key(), t.ns);
    let limit: usize = match r.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let (list_rv, after) = match r.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (crv, ns, name) = decode_continue(c)?;
            // Like etcd-backed lists: a token from before a compaction has expired.
            if state.store.check_watch_rv(crv).is_err() {
                return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
            }
            (crv, Some((ns, name)))
        }
        None => (rv, None),
    };
    let mut items = Vec::new();
    let mut cont = None;
    let mut remaining = 0usize;
    for o in objs.iter() {
        if let Some((ns, name)) = &after {
            if (meta::namespace(o), meta::name(o)) <= (ns.as_str(), name.as_str()) {
                continue;
            }
        }
        if !labels.matches(o) || !fields.matches(o) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            remaining += 1;
            continue;
        }
        items.push(with_version(&t.info, t.version, o));
    }
    if remaining > 0 {
        if let Some(last) = items.last() {
            cont = Some(encode_continue(
                list_rv,
                meta::namespace(last),
                meta::name(last),
            ));
        }
    }
    let repr = Representation::from_accept(r.header(header::ACCEPT));
    let rv_s = list_rv.to_string();
    let v = match repr {
        Representation::Table => table::table(
            &t.info,
            &items,
            &rv_s,
            cont.as_deref(),
            r.q("includeObject").unwrap_or("Metadata"),
        ),
        Representation::Metadata | Representation::Full => {
            let items: Vec<Value> = if repr == Representation::Metadata {
                items.iter().map(table::partial).collect()
            } else {
                items
            };
            let mut md = json!({"resourceVersion": rv_s});
            if let Some(c) = &cont {
                md["continue"] = json!(c);
                md["remainingItemCount"] = json!(remaining);
            }
            let (kind, api_version) = if repr == Representation::Metadata {
                (
                    "PartialObjectMetadataList".to_owned(),
                    "meta.k8s.io/v1".to_owned(),
                )
            } else {
                (t.info.list_kind(), t.info.api_version(t.version))
            };
            json!({"kind": kind, "apiVersion": api_version, "metadata": md, "items": items})
        }
    };
    Ok(json_response(StatusCode::OK, &v))
}

fn write_opts(r: &Req, sub: Option<&str>) -> WriteOptions {
    WriteOptions {
        manager: r.manager(),
        operation: "Update",
        applied: None,
        dry_run: r.q("dryRun") == Some("All"),
        sub: if sub == Some("status") {
            Subresource::Status
        } else {
            Subresource::Main
        },
        strict: r.q("fieldValidation") == Some("Strict"),
    }
}

fn create(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let mut obj = r.body_value()?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!(t.info.api_version(t.version));
    }
    let obj = crate::convert::to_storage(&t.info, obj);
    let created =
        state
            .store
            .create(&t.store_info, t.ns.unwrap_or(""), obj, &write_opts(r, None))?;
    Ok(respond_one(r, t, StatusCode::CREATED, &created))
}

fn update(state: &AppState, r: &Req, t: &Target<'_>, name: &str) -> ApiResult<Response> {
    let mut obj = r.body_value()?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let body_name = meta::name(&obj);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(ns) = t.ns {
        let body_ns = meta::namespace(&obj);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    if t.info.custom && meta::meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::invalid_field(
            &t.info.group,
            &t.info.kind,
            name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
        ));
    }
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!(t.info.api_version(t.version));
    }
    let opts = write_opts(r, t.sub);
    let updated = state
        .store
        .mutate(&t.store_info, t.ns.unwrap_or(""), name, &opts, |_| {
            Ok(crate::convert::to_storage(&t.info, obj))
        })?;
    Ok(respond_one(r, t, StatusCode::OK, &updated))
}

fn patch(state: &AppState, r: &Req, t: &Target<'_>, name: &str) -> ApiResult<Response> {
    let ct = r.content_type();
    let body = r.body_value()?;
    let ns = t.ns.unwrap_or("");
    let mut opts = write_opts(r, t.sub);
    if ct == "application/apply-patch+yaml" {
        return server_side_apply(state, r, t, name, body, opts);
    }
    let info = t.info.clone();
    let version = t.version.to_owned();
    let updated = state
        .store
        .mutate(&t.store_info, ns, name, &opts.clone(), move |old| {
            let old = with_version(&info, &version, old);
            let patched = match ct.as_str() {
                "application/merge-patch+json" => {
                    if !body.is_object() {
                        return Err(ApiError::bad_request("merge patch must be a JSON object"));
                    }
                    Ok(patch::merge_patch(&old, &body))
                }
                "application/json-patch+json" => patch::json_patch(&old, &body),
                "application/strategic-merge-patch+json" if !info.custom => {
                    if !body.is_object() {
                        return Err(ApiError::bad_request(
                            "strategic merge patch must be a JSON object",
                        ));
                    }
                    patch::strategic_merge(&old, &body)
                }
                "application/strategic-merge-patch+json" => Err(ApiError::unsupported_media(
                    "application/strategic-merge-patch+json is not supported for custom resources",
                )),
                other => Err(ApiError::unsupported_media(other)),
            }?;
            Ok(crate::convert::to_storage(&info, patched))
        })?;
    opts.dry_run = false;
    Ok(respond_one(r, t, StatusCode::OK, &updated))
}

fn server_side_apply(
    state: &AppState,
    r: &Req,
    t: &Target<'_>,
    name: &str,
    body: Value,
    mut opts: WriteOptions,
) -> ApiResult<Response> {
    if r.q("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("PATCH /apply requires fieldManager"));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let mut body = body;
    // Like the real server, an apply body without a name takes the URL's (controller-rs style
    // status applies carry only apiVersion, kind and status).
    if meta::name(&body).is_empty() {
        meta::metadata_mut(&mut body).insert("name".into(), json!(name));
    }
    let body_name = meta::name(&body);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let force = r.q_bool("force");
    let ns = t.ns.unwrap_or("");
    let builtin = !t.info.custom;
    opts.operation = "Apply";
    let manager = opts.manager.clone();
    let existing = state.store.get(&t.store_info, ns, name);
    match existing {
        Err(e) if e.code == 404 => {
            if t.sub == Some("status") {
                return Err(e);
            }
            let applied = apply::apply(
                &t.info.group,
                &t.info.plural,
                builtin,
                None,
                &body,
                &manager,
                force,
            )?;
            opts.applied = Some(applied.fields);
            let object = crate::convert::to_storage(&t.info, applied.object);
            let created = state.store.create(&t.store_info, ns, object, &opts)?;
            Ok(respond_one(r, t, StatusCode::CREATED, &created))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let info = t.info.clone();
            let version = t.version.to_owned();
            let updated = state
                .store
                .mutate_with(&t.store_info, ns, name, &opts, |old| {
                    let old = with_version(&info, &version, old);
                    let applied = apply::apply(
                        &info.group,
                        &info.plural,
                        builtin,
                        Some(&old),
                        &body,
                        &manager,
                        force,
                    )?;
                    Ok((
                        crate::convert::to_storage(&info, applied.object),
                        Some(applied.fields),
                    ))
                })?;
            Ok(respond_one(r, t, StatusCode::OK, &updated))
        }
    }
}

fn delete_options(r: &Req) -> ApiResult<DeleteOptions> {
    let body = if r.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        super::parse_body(&r.content_type(), &r.body)?
    };
    let mut o = DeleteOptions {
        grace: body.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation: body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run: r.q("dryRun") == Some("All")
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(&json!("All"))),
    };
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        o.propagation = Some("Orphan".into());
    }
    if let Some(g) = r.q("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request("invalid gracePeriodSeconds"))?,
        );
    }
    if let Some(p) = r.q("propagationPolicy") {
        o.propagation = Some(p.to_owned());
    }
    Ok(o)
}

fn delete(state: &AppState, r: &Req, t: &Target<'_>, name: &str) -> ApiResult<Response> {
    let opts = delete_options(r)?;
    let (obj, removed) = state
        .store
        .delete(&t.store_info, t.ns.unwrap_or(""), name, &opts)?;
    let code = if removed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(respond_one(r, t, code, &obj))
}

fn delete_collection(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let opts = delete_options(r)?;
    let (labels, fields) = selectors(r, &t.info)?;
    let (objs, rv) = state.store.snapshot(&t.info.key(), t.ns);
    let mut items = Vec::new();
    for o in objs
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        match state
            .store
            .delete(&t.store_info, meta::namespace(o), meta::name(o), &opts)
        {
            Ok((obj, _)) => items.push(with_version(&t.info, t.version, &obj)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let v = json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version(t.version), "metadata": {"resourceVersion": rv.to_string()}, "items": items});
    Ok(json_response(StatusCode::OK, &v))
}

fn pod_log(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let (ns, name) = (t.ns.unwrap_or(""), t.name.unwrap_or(""));
    let pod = state.store.get(&t.store_info, ns, name)?;
    let container = match r.q("container") {
        Some(c) => c.to_owned(),
        None => pod
            .pointer("/spec/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    };
    // Only this pod's containers: the name becomes part of a file path.
    let known = ["containers", "initContainers"].iter().any(|list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
            })
    });
    if !known {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let dir = state
        .config
        .state_dir
        .clone()
        .ok_or_else(|| ApiError::bad_request("logs are not kept by this server"))?;
    let path = crate::node::pod_dir(&dir, &pod).join(format!("{container}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match r.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut s = lines[start..].join("\n");
            s.push('\n');
            s
        }
        None => text,
    };
    if !r.q_bool("follow") {
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response());
    }
    // follow=true: stream what is appended until the pod goes away or the client leaves.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let store = state.store.clone();
    let uid = meta::uid(&pod).to_owned();
    let (ns, name) = (ns.to_owned(), name.to_owned());
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tokio::spawn(async move {
        if tx.send(bytes::Bytes::from(text)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(LOG_POLL) => {}
            }
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len > offset {
                let chunk = read_from(&path, offset);
                offset = len;
                if tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            let alive = store
                .get_key("pods", &ns, &name)
                .is_some_and(|p| meta::uid(&p) == uid);
            if !alive {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<bytes::Bytes, std::convert::Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// How often a followed log is checked for new output.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    buf
}

fn evict(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let body = r.body_value().unwrap_or_else(|_| json!({}));
    let mut opts = DeleteOptions::default();
    if let Some(d) = body.get("deleteOptions") {
        opts.grace = d.get("gracePeriodSeconds").and_then(Value::as_i64);
    }
    state.store.delete(
        &t.store_info,
        t.ns.unwrap_or(""),
        t.name.unwrap_or(""),
        &opts,
    )?;
    let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &v))
}

fn bind(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let body = r.body_value()?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::invalid_field(
            "",
            "Binding",
            t.name.unwrap_or(""),
            "target.name",
            "Required value",
        ));
    }
    let name = t.name.unwrap_or("").to_owned();
    state.store.mutate(
        &t.store_info,
        t.ns.unwrap_or(""),
        &name,
        &WriteOptions::internal("kube-scheduler"),
        |old| {
            if old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "pod is already assigned to a node",
                ));
            }
            let mut o = old.clone();
            o["spec"]["nodeName"] = json!(node);
            Ok(o)
        },
    )?;
    let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &v))
}
