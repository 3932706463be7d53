//! Structural schemas of custom resources, applied the way kube-apiserver does on every write:
//! unknown fields pruned (unless `x-kubernetes-preserve-unknown-fields`), non-nullable nulls
//! dropped, defaults filled, then validation (type, required, enum, bounds, lengths, item
//! counts) whose failures become `Invalid` causes naming the field. Pure; no network.
//! Not implemented: `pattern`, `format`, `oneOf`/`anyOf` (beyond int-or-string). CEL rules
//! run after this, in [`crate::cel`].

use serde_json::Value;

use crate::error::Cause;

/// Prunes, defaults and validates `obj` against a CRD's `openAPIV3Schema`.
pub fn apply(obj: &mut Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(m) = obj.as_object_mut() else {
        causes.push(cause("FieldValueInvalid", "", "must be an object"));
        return causes;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    // apiVersion, kind and metadata are always kept; metadata is validated by the server itself.
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if m.get(&k).is_some_and(Value::is_null) && !nullable(s) {
                    m.remove(&k);
                }
            }
            None if preserve => {}
            None => {
                m.remove(&k);
            }
        }
    }
    if let Some(props) = props {
        for (k, s) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if !m.contains_key(k) {
                if let Some(d) = s.get("default") {
                    m.insert(k.clone(), d.clone());
                }
            }
            if let Some(v) = m.get_mut(k) {
                visit(v, s, k, &mut causes);
            }
        }
    }
    required(m, schema, "", &mut causes);
    causes
}

fn nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn cause(reason: &str, field: &str, message: &str) -> Cause {
    Cause {
        reason: reason.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

fn required(m: &serde_json::Map<String, Value>, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.contains_key(r) {
            causes.push(cause(
                "FieldValueRequired",
                &join(path, r),
                "Required value",
            ));
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn visit(v: &mut Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if !nullable(s) {
            causes.push(cause(
                "FieldValueInvalid",
                path,
                &format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    s.get("type").and_then(Value::as_str).unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !matches!(type_name(v), "integer" | "string") {
            causes.push(cause(
                "FieldValueInvalid",
                path,
                &format!("Invalid value: {v}: {path} in body must be of type integer-or-string"),
            ));
        }
        return;
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                &format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            causes.push(cause(
                "FieldValueNotSupported",
                path,
                &format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                ),
            ));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                let excl = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (excl && x == min) {
                    let op = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(cause(
                        "FieldValueInvalid",
                        path,
                        &format!(
                            "Invalid value: {v}: {path} in body should be {op} {}",
                            num(min)
                        ),
                    ));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                let excl = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (excl && x == max) {
                    let op = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(cause(
                        "FieldValueInvalid",
                        path,
                        &format!(
                            "Invalid value: {v}: {path} in body should be {op} {}",
                            num(max)
                        ),
                    ));
                }
            }
        }
        Value::String(st) => {
            let len = st.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    causes.push(cause("FieldValueInvalid", path, &format!("Invalid value: {v}: {path} in body should be at least {min} chars long")));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    causes.push(cause(
                        "TooLong",
                        path,
                        &format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if len < min {
                    causes.push(cause(
                        "FieldValueInvalid",
                        path,
                        &format!(
                            "Invalid value: {len}: {path} in body should have at least {min} items"
                        ),
                    ));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if len > max {
                    causes.push(cause(
                        "TooMany",
                        path,
                        &format!("Too many: {len}: must have at most {max} items"),
                    ));
                }
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    if is.is_object() && is.get("type").and_then(Value::as_str) == Some("object")
                        || is.get("properties").is_some()
                    {
                        prune_object(item, is);
                    }
                    visit(item, is, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(_) => {
            prune_object(v, s);
            if let Value::Object(m) = v {
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (k, ps) in props {
                        if let Some(child) = m.get_mut(k) {
                            visit(child, ps, &join(path, k), causes);
                        }
                    }
                }
                if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    let known = s.get("properties").and_then(Value::as_object);
                    for (k, child) in m.iter_mut() {
                        if known.is_some_and(|p| p.contains_key(k)) {
                            continue;
                        }
                        visit(child, ap, &join(path, k), causes);
                    }
                }
                required(m, s, path, causes);
            }
        }
        _ => {}
    }
}

/// Prunes unknown fields, drops non-nullable nulls and fills defaults of one object level.
fn prune_object(v: &mut Value, s: &Value) {
    let Some(m) = v.as_object_mut() else { return };
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s
        .get("additionalProperties")
        .is_some_and(|a| a.is_object() || a == &Value::Bool(true));
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        match props.and_then(|p| p.get(&k)) {
            Some(ps) => {
                if m.get(&k).is_some_and(Value::is_null) && !nullable(ps) {
                    m.remove(&k);
                }
            }
            None if preserve || additional => {}
            None => {
                m.remove(&k);
            }
        }
    }
    if let Some(props) = props {
        for (k, ps) in props {
            if !m.contains_key(k) {
                if let Some(d) = ps.get("default") {
                    m.insert(k.clone(), d.clone());
                }
            }
        }
    }
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type":"object","properties":{
            "spec":{"type":"object","required":["masters"],"properties":{
                "masters":{"type":"integer","minimum":3},
                "replicasPerMaster":{"type":"integer","default":1},
                "mode":{"type":"string","enum":["a","b"]},
                "extra":{"type":"object","x-kubernetes-preserve-unknown-fields":true}
            }},
            "status":{"type":"object","nullable":true,"properties":{"phase":{"type":"string"}}}
        }})
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut o = json!({"apiVersion":"x/v1","kind":"K","metadata":{"name":"a"},"junk":1,
            "spec":{"masters":3,"unknown":true,"extra":{"kept":1}}});
        assert!(apply(&mut o, &schema()).is_empty());
        assert_eq!(
            o["spec"],
            json!({"masters":3,"replicasPerMaster":1,"extra":{"kept":1}})
        );
        assert!(o.get("junk").is_none());

        let mut bad = json!({"spec":{"masters":2,"mode":"c"}});
        let causes = apply(&mut bad, &schema());
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.masters", "spec.mode"]);
        let mut missing = json!({"spec":{"masters":"x"}});
        assert_eq!(apply(&mut missing, &schema())[0].field, "spec.masters");
    }
}

/// Fields of `obj` the schema does not declare (what `fieldValidation=Strict` refuses), as
/// dotted paths.
pub fn unknown_fields(obj: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema.get("properties").and_then(|p| p.get(k)) {
                Some(s) => walk_unknown(v, s, k, &mut out),
                None if preserves(schema) => {}
                None => out.push(k.clone()),
            }
        }
    }
    out
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn walk_unknown(v: &Value, s: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            for (k, child) in m {
                let p = join(path, k);
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(cs), _) => walk_unknown(child, cs, &p, out),
                    (None, Some(a)) if a.is_object() => walk_unknown(child, a, &p, out),
                    (None, Some(Value::Bool(true))) => {}
                    _ if preserves(s) => {}
                    _ => out.push(p),
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_unknown(item, is, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_undeclared_fields() {
        let s = json!({"type":"object","properties":{"spec":{"type":"object","properties":{"a":{"type":"integer"},
            "m":{"type":"object","additionalProperties":{"type":"string"}},"free":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}}});
        let o = json!({"apiVersion":"x","metadata":{},"spec":{"a":1,"b":2,"m":{"k":"v"},"free":{"z":1}},"top":1});
        assert_eq!(
            unknown_fields(&o, &s),
            vec!["spec.b".to_string(), "top".to_string()]
        );
    }
}
