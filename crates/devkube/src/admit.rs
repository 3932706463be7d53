//! Admission: what the API server does to an object before storing it — metadata the server
//! owns (uid, creationTimestamp, generation), names, defaults of the built-in kinds this
//! emulator serves, status-subresource separation, pod spec immutability, finalizer rules and
//! custom resource schemas. Pure functions of (resource, old, new); no network.

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::registry::{Registry, ResourceInfo};
use crate::schema;
use crate::store::Subresource;

fn version_of(obj: &Value) -> String {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    av.rsplit('/').next().unwrap_or(av).to_owned()
}

/// Checks and fills `apiVersion`/`kind`.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}) or kind {k:?} is not {:?}",
                m.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                info.api_version(info.preferred_version()),
                info.kind
            )))
        }
    }
    let av = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let group_ok = match av.split_once('/') {
        Some((g, v)) => g == info.group && info.versions.iter().any(|x| x == v),
        None => info.group.is_empty() && info.versions.contains(&av),
    };
    if av.is_empty() {
        m.insert(
            "apiVersion".into(),
            json!(info.api_version(info.preferred_version())),
        );
    } else if !group_ok {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version(info.preferred_version())
        )));
    }
    Ok(())
}

/// Prepares an object for creation. `ns` is the request's namespace.
pub fn prepare_create(info: &ResourceInfo, ns: &str, mut obj: Value) -> ApiResult<Value> {
    check_type(info, &mut obj)?;
    let m = meta::metadata_mut(&mut obj);
    if info.namespaced {
        match m.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                m.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        m.remove("namespace");
    }
    let mut name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        let prefix = m.get("generateName").and_then(Value::as_str).unwrap_or("");
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        name = format!("{prefix}{}", meta::random_suffix(5));
        m.insert("name".into(), json!(name));
    }
    let check = if matches!(info.key().as_str(), "namespaces" | "services") {
        meta::check_dns_label(&name)
    } else {
        meta::check_dns_subdomain(&name)
    };
    if let Err(msg) = check {
        return Err(ApiError::invalid_field(
            &info.group,
            &info.kind,
            &name,
            "metadata.name",
            msg,
        ));
    }
    m.insert("uid".into(), json!(meta::new_uid()));
    m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        m.remove(k);
    }
    if obj.get("spec").is_some() || info.custom {
        meta::metadata_mut(&mut obj).insert("generation".into(), json!(1));
    } else {
        meta::metadata_mut(&mut obj).remove("generation");
    }
    if info.status_subresource && info.key() != "nodes" {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    defaults(info, &mut obj, None)?;
    validate(info, &mut obj, None)?;
    Ok(obj)
}

/// Prepares an update from `old` to `desired` for the given subresource.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Value,
    mut desired: Value,
    sub: Subresource,
) -> ApiResult<Value> {
    check_type(info, &mut desired)?;
    let name = meta::name(old).to_owned();
    let mut new = match sub {
        Subresource::Status => {
            // Only status changes count on /status.
            let mut n = old.clone();
            match desired.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(v) = desired.get("apiVersion") {
                n["apiVersion"] = v.clone();
            }
            n
        }
        Subresource::Main | Subresource::Internal => {
            if sub == Subresource::Main && info.status_subresource {
                match old.get("status") {
                    Some(s) => desired["status"] = s.clone(),
                    None => {
                        if let Some(m) = desired.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            desired
        }
    };
    // Server-owned metadata is carried over from the stored object.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta::metadata_mut(&mut new);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.get(k) {
            Some(v) => {
                m.insert(k.into(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    if sub != Subresource::Main && sub != Subresource::Internal {
        // Status writes keep metadata (labels, finalizers...) as stored.
        let rv = m.get("resourceVersion").cloned();
        *m = old_meta.as_object().cloned().unwrap_or_default();
        if let Some(rv) = rv {
            m.insert("resourceVersion".into(), rv);
        }
    }
    if meta::is_deleting(old) {
        let before = meta::finalizers(old);
        if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    let m = meta::metadata_mut(&mut new);
    if m.get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        m.remove("finalizers");
    }
    defaults(info, &mut new, Some(old))?;
    if sub == Subresource::Main {
        immutable(info, old, &new)?;
    }
    validate(info, &mut new, Some(old))?;
    // generation follows spec (everything but metadata and status).
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
            o.remove("apiVersion");
        }
        v
    };
    if old.pointer("/metadata/generation").is_some() && strip(old) != strip(&new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta::metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    let _ = version_of(&new);
    Ok(new)
}

fn defaults(info: &ResourceInfo, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    match info.key().as_str() {
        "pods" => {
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return Ok(());
            };
            spec.entry("restartPolicy").or_insert(json!("Always"));
            spec.entry("terminationGracePeriodSeconds")
                .or_insert(json!(30));
            spec.entry("schedulerName")
                .or_insert(json!("default-scheduler"));
            spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
            for list in ["containers", "initContainers"] {
                for c in spec
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_object_mut() {
                        let latest = c
                            .get("image")
                            .and_then(Value::as_str)
                            .is_some_and(|i| !i.contains(':') || i.ends_with(":latest"));
                        c.entry("imagePullPolicy").or_insert(json!(if latest {
                            "Always"
                        } else {
                            "IfNotPresent"
                        }));
                        c.entry("terminationMessagePath")
                            .or_insert(json!("/dev/termination-log"));
                        c.entry("terminationMessagePolicy").or_insert(json!("File"));
                        for p in c
                            .get_mut("ports")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(p) = p.as_object_mut() {
                                p.entry("protocol").or_insert(json!("TCP"));
                            }
                        }
                    }
                }
            }
            if old.is_none() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        "services" => {
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return Ok(());
            };
            spec.entry("type").or_insert(json!("ClusterIP"));
            spec.entry("sessionAffinity").or_insert(json!("None"));
            let keep_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
            match (spec.get("clusterIP").and_then(Value::as_str), keep_ip) {
                (Some(_), _) => {}
                (None, Some(ip)) => {
                    spec.insert("clusterIP".into(), ip);
                }
                (None, None) => {
                    let b: [u8; 2] = rand::random();
                    spec.insert(
                        "clusterIP".into(),
                        json!(format!("10.96.{}.{}", b[0], b[1].max(1))),
                    );
                }
            }
            if let Some(ip) = spec.get("clusterIP").cloned() {
                spec.entry("clusterIPs").or_insert(json!([ip]));
            }
            for p in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = p.as_object_mut() {
                    p.entry("protocol").or_insert(json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        p.entry("targetPort").or_insert(port);
                    }
                }
            }
            if old.is_none() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        "secrets" => {
            let m = obj
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("object expected"))?;
            m.entry("type").or_insert(json!("Opaque"));
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = m.entry("data").or_insert(json!({}));
                if let Some(d) = data.as_object_mut() {
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or("").as_bytes().to_vec();
                        d.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(s)),
                        );
                    }
                }
            }
        }
        "namespaces" => {
            let deleting = meta::is_deleting(obj);
            obj["status"] = json!({"phase": if deleting { "Terminating" } else { "Active" }});
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            let name = meta::name(obj).to_owned();
            let m = meta::metadata_mut(obj);
            let labels = m.entry("labels").or_insert(json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        "nodes" => {
            let name = meta::name(obj).to_owned();
            let m = meta::metadata_mut(obj);
            let labels = m.entry("labels").or_insert(json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.entry("kubernetes.io/hostname").or_insert(json!(name));
                l.entry("kubernetes.io/os").or_insert(json!("linux"));
            }
        }
        "customresourcedefinitions.apiextensions.k8s.io" => {
            let names = obj
                .pointer("/spec/names")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut accepted = names.clone();
            if let Some(a) = accepted.as_object_mut() {
                let kind = names
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                a.entry("singular").or_insert(json!(kind.to_lowercase()));
                a.entry("listKind").or_insert(json!(format!("{kind}List")));
            }
            let now = old
                .and_then(|o| {
                    o.pointer("/status/conditions/0/lastTransitionTime")
                        .cloned()
                })
                .unwrap_or_else(|| json!(meta::now_rfc3339()));
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            obj["status"] = json!({
                "acceptedNames": accepted,
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
            });
            if let Some(m) = obj.pointer_mut("/spec").and_then(Value::as_object_mut) {
                m.entry("conversion").or_insert(json!({"strategy": "None"}));
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate(info: &ResourceInfo, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta::name(obj).to_owned();
    let causes = validate_metadata(obj);
    if !causes.is_empty() {
        return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
    }
    if info.custom {
        let version = version_of(obj);
        if let Some(schema) = info.schemas.get(&version) {
            let mut causes = schema::apply(obj, schema);
            // As kube-apiserver: CEL rules run unless a value has the wrong type.
            if causes.iter().any(|c| c.reason == "FieldValueTypeInvalid") {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
                    field: "<nil>".into(),
                });
            } else {
                causes.extend(crate::cel::validate(obj, old, schema));
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
            }
        }
        return Ok(());
    }
    if info.key() == "customresourcedefinitions.apiextensions.k8s.io" {
        let mut causes = Vec::new();
        let versions = obj.pointer("/spec/versions").and_then(Value::as_array);
        for (i, v) in versions.into_iter().flatten().enumerate() {
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                let at = format!("spec.versions[{i}].schema.openAPIV3Schema");
                causes.extend(crate::cel::compile_errors(s, &at));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
    }
    if info.key() == "pods" {
        let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
        let mut causes = Vec::new();
        match containers {
            None => causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers".into(),
            }),
            Some(cs) if cs.is_empty() => causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers".into(),
            }),
            Some(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
                    if let Err(msg) = meta::check_dns_label(cname) {
                        causes.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: msg,
                            field: format!("spec.containers[{i}].name"),
                        });
                    }
                    if c.get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        causes.push(Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value".into(),
                            field: format!("spec.containers[{i}].image"),
                        });
                    }
                }
            }
        }
        if let Some(rp) = obj.pointer("/spec/restartPolicy").and_then(Value::as_str) {
            if !matches!(rp, "Always" | "OnFailure" | "Never") {
                causes.push(Cause { reason: "FieldValueNotSupported".into(), message: format!("Unsupported value: {rp:?}: supported values: \"Always\", \"OnFailure\", \"Never\""), field: "spec.restartPolicy".into() });
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("", "Pod", &name, causes));
        }
    }
    Ok(())
}

fn immutable(info: &ResourceInfo, old: &Value, new: &Value) -> ApiResult<()> {
    if matches!(info.key().as_str(), "configmaps" | "secrets")
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        for field in ["data", "binaryData", "immutable"] {
            if old.get(field) != new.get(field) {
                return Err(ApiError::invalid(
                    "",
                    &info.kind,
                    meta::name(old),
                    vec![Cause {
                        reason: "FieldValueForbidden".into(),
                        message: "Forbidden: field is immutable when `immutable` is set".into(),
                        field: field.into(),
                    }],
                ));
            }
        }
    }
    if info.key() != "pods" {
        return Ok(());
    }
    // Mutable pod spec fields: container images, activeDeadlineSeconds, tolerations (additions),
    // terminationGracePeriodSeconds, schedulingGates removal.
    let mask = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(o) = s.as_object_mut() {
            for k in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                o.remove(k);
            }
            for list in ["containers", "initContainers"] {
                for c in o
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        s
    };
    if mask(old) != mask(new) {
        return Err(ApiError::invalid(
            "",
            "Pod",
            meta::name(old),
            vec![Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                field: "spec".into(),
            }],
        ));
    }
    Ok(())
}

/// Validates a CRD (names, scope, versions) and that its names do not clash with another
/// resource.
pub fn validate_crd(obj: &Value, registry: &Registry) -> ApiResult<()> {
    let name = meta::name(obj).to_owned();
    let info = ResourceInfo::from_crd(obj).map_err(|(field, msg)| {
        ApiError::invalid_field(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            &field,
            msg,
        )
    })?;
    if let Some(existing) = registry.by_key(&info.key()) {
        if !existing.custom {
            return Err(ApiError::invalid_field(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                "spec.names.plural",
                "Invalid value: conflicts with a built-in resource",
            ));
        }
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// A qualified name (`[prefix/]name`, as label and annotation keys are).
fn is_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty()
        && is_label_value(name)
        && prefix.is_none_or(|p| meta::check_dns_subdomain(p).is_ok())
}

/// Labels, annotations and owner references as the real server validates them.
fn validate_metadata(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let invalid = |field: String, message: String| Cause {
        reason: "FieldValueInvalid".into(),
        message,
        field,
    };
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(invalid("metadata.labels".into(), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => causes.push(invalid("metadata.labels".into(), format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))),
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0usize;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !is_qualified_name(k) {
                causes.push(invalid("metadata.annotations".into(), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            if !v.is_string() {
                causes.push(invalid(
                    "metadata.annotations".into(),
                    format!("Invalid value: {v}: annotation values must be strings"),
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
    for (i, r) in obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: format!("metadata.ownerReferences[{i}].{f}"),
                });
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_validation() {
        let ok = json!({"metadata": {"labels": {"kredis.io/shard": "0", "a": ""}, "annotations": {"prometheus.io/port": "9121"}}});
        assert!(validate_metadata(&ok).is_empty());
        let bad = json!({"metadata": {"labels": {"a": "has space", "Bad Key": "x", "long": "x".repeat(64)}, "ownerReferences": [{"kind": "X"}]}});
        let fields: Vec<String> = validate_metadata(&bad)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields.iter().filter(|f| *f == "metadata.labels").count(), 3);
        assert!(fields.contains(&"metadata.ownerReferences[0].uid".to_string()));
    }
}
