//! `x-kubernetes-validations`: the CEL rules of a custom resource schema, run the way
//! kube-apiserver runs them after the structural schema has passed (defaults filled).
//!
//! Faithful to the real server in what operators rely on:
//! - `self` is the value at the rule's schema node; a rule is run only where that value is
//!   present. Integers are CEL `int`, numbers `double`, objects maps.
//! - A rule that mentions `oldSelf` is a transition rule: run only on update, and only where
//!   the old object has a value at the same path (object properties and
//!   `additionalProperties` keys correlate; list items do not, as for atomic and set lists).
//! - Ratcheting (CRDValidationRatcheting, on by default since 1.30): on update, a rule that
//!   does not mention `oldSelf` is skipped where the value is unchanged.
//! - A failed rule becomes a cause at the node's path (plus `fieldPath`), of its `reason`
//!   (default `FieldValueInvalid`, message `Invalid value: "<type>": <message>`), with
//!   `messageExpression` evaluated when it gives a string, else `message`, else
//!   `failed rule: <rule>`. An evaluation error is reported the same way with its text.
//! - Rules that do not compile are refused when the CRD is written ([`compile_errors`]).
//!
//! Not implemented: the static type check against the schema (a wrong field name is found at
//! evaluation, not at CRD creation), cost limits, `optionalOldSelf`, list-map correlation, and
//! the Kubernetes CEL library beyond the CEL standard functions (`quantity`, `url`, `ip`, ...).

use std::collections::HashMap;

use cel::{Context, Program};
use serde_json::Value;

use crate::error::Cause;

/// The causes of every failing rule of `obj` (an old version `old` on update) under `schema`.
pub fn validate(obj: &Value, old: Option<&Value>, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (Some(props), Some(m)) = (
        schema.get("properties").and_then(Value::as_object),
        obj.as_object(),
    ) else {
        return causes;
    };
    // The root's own rules could see metadata; operators put theirs on spec and below.
    rules(obj, old, schema, "", &mut causes);
    for (k, s) in props {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(v) = m.get(k) {
            walk(v, old.and_then(|o| o.get(k)), s, k, &mut causes);
        }
    }
    causes
}

fn walk(v: &Value, old: Option<&Value>, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        return;
    }
    rules(v, old, s, path, causes);
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (k, ps) in props {
                    if let Some(child) = m.get(k) {
                        walk(
                            child,
                            old.and_then(|o| o.get(k)),
                            ps,
                            &join(path, k),
                            causes,
                        );
                    }
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m {
                    if props.is_some_and(|p| p.contains_key(k)) {
                        continue;
                    }
                    walk(
                        child,
                        old.and_then(|o| o.get(k)),
                        ap,
                        &join(path, k),
                        causes,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, None, is, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Runs the rules attached to one schema node on its value.
fn rules(v: &Value, old: Option<&Value>, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(list) = s.get("x-kubernetes-validations").and_then(Value::as_array) else {
        return;
    };
    for r in list {
        let Some(rule) = r.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let transition = mentions_old_self(rule);
        let old = match (transition, old) {
            (true, None) => continue,
            (false, Some(o)) if o == v => continue,
            (true, Some(o)) => Some(o),
            (false, _) => None,
        };
        let failure = match eval(rule, v, old) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => {
                message(r, v, old).unwrap_or_else(|| format!("failed rule: {}", rule.trim()))
            }
            Ok(other) => {
                format!("rule did not evaluate to a bool: {}", rule.trim())
                    + &format!(" (got {:?})", other.type_of())
            }
            Err(e) => e,
        };
        let field = match r.get("fieldPath").and_then(Value::as_str) {
            Some(fp) if fp.starts_with('.') => format!("{path}{fp}"),
            _ => path.to_owned(),
        };
        let reason = r
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("FieldValueInvalid");
        let text = match reason {
            "FieldValueForbidden" => format!("Forbidden: {failure}"),
            "FieldValueRequired" => format!("Required value: {failure}"),
            "FieldValueDuplicate" => format!("Duplicate value: {failure}"),
            _ => format!("Invalid value: \"{}\": {failure}", type_name(v)),
        };
        causes.push(Cause {
            reason: reason.into(),
            message: text,
            field,
        });
    }
}

/// The rule's message: `messageExpression` when it evaluates to a non-empty string, else
/// `message`.
fn message(r: &Value, v: &Value, old: Option<&Value>) -> Option<String> {
    if let Some(expr) = r.get("messageExpression").and_then(Value::as_str) {
        if let Ok(cel::Value::String(s)) = eval(expr, v, old) {
            if !s.trim().is_empty() {
                return Some(s.to_string());
            }
        }
    }
    r.get("message").and_then(Value::as_str).map(str::to_owned)
}

fn eval(rule: &str, v: &Value, old: Option<&Value>) -> Result<cel::Value, String> {
    let program = Program::compile(rule).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = Context::default();
    ctx.add_variable_from_value("self", to_cel(v));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o));
    }
    program
        .execute(&ctx)
        .map_err(|e| format!("rule evaluation error: {e}: {}", rule.trim()))
}

/// JSON to CEL as kube-apiserver types it: whole numbers are `int`, others `double`.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(a) => cel::Value::List(a.iter().map(to_cel).collect::<Vec<_>>().into()),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<HashMap<String, cel::Value>>()
            .into(),
    }
}

/// Whether `rule` uses the identifier `oldSelf` (not as part of a longer name).
fn mentions_old_self(rule: &str) -> bool {
    rule.match_indices("oldSelf").any(|(i, _)| {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let before = rule[..i].chars().next_back();
        let after = rule[i + "oldSelf".len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
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

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

/// Causes for every rule (and `messageExpression`) in `schema` that does not compile; `at` is
/// the schema's own field path in the CRD, e.g.
/// `spec.versions[0].schema.openAPIV3Schema`.
pub fn compile_errors(schema: &Value, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    compile_walk(schema, at, &mut causes);
    causes
}

fn compile_walk(s: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else { return };
    if let Some(list) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
        for (i, r) in list.iter().enumerate() {
            let here = format!("{at}.x-kubernetes-validations[{i}]");
            match r.get("rule").and_then(Value::as_str) {
                None => causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: format!("{here}.rule"),
                }),
                Some(rule) => {
                    if let Err(e) = Program::compile(rule) {
                        causes.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: {:?}: compilation failed: {e}", rule),
                            field: format!("{here}.rule"),
                        });
                    }
                }
            }
            if let Some(expr) = r.get("messageExpression").and_then(Value::as_str) {
                if let Err(e) = Program::compile(expr) {
                    causes.push(Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!("Invalid value: {expr:?}: compilation failed: {e}"),
                        field: format!("{here}.messageExpression"),
                    });
                }
            }
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            compile_walk(p, &format!("{at}.properties[{k}]"), causes);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = m.get(key).filter(|c| c.is_object()) {
            compile_walk(child, &format!("{at}.{key}"), causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [{
                "rule": "!self.hostNetwork || self.basePort + self.pods <= 65535",
                "message": "ports overflow",
            }, {
                "rule": "self.pods >= 1",
                "messageExpression": "'pods is ' + string(self.pods) + ', must be >= 1'",
            }],
            "properties": {
                "basePort": {"type": "integer", "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "basePort is immutable"}]},
                "hostNetwork": {"type": "boolean"},
                "pods": {"type": "integer"},
                "labels": {"type": "object", "additionalProperties": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self.size() <= 3", "reason": "FieldValueForbidden", "fieldPath": ".x"}]}},
            },
        }}})
    }

    fn obj(base: i64, pods: i64) -> Value {
        json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"basePort": base, "hostNetwork": true, "pods": pods}})
    }

    #[test]
    fn rules_fail_with_their_messages_at_their_paths() {
        assert!(validate(&obj(60000, 3), None, &schema()).is_empty());
        let causes = validate(&obj(65000, 600), None, &schema());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"object\": ports overflow"
        );
        let causes = validate(&obj(6000, 0), None, &schema());
        assert_eq!(
            causes[0].message,
            "Invalid value: \"object\": pods is 0, must be >= 1"
        );
        let mut o = obj(6000, 1);
        o["spec"]["labels"] = json!({"ok": "abc", "bad": "abcd"});
        let causes = validate(&o, None, &schema());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.labels.bad.x");
        assert_eq!(causes[0].reason, "FieldValueForbidden");
        assert!(causes[0]
            .message
            .starts_with("Forbidden: failed rule: self.size() <= 3"));
    }

    #[test]
    fn transition_rules_run_on_update_only_and_unchanged_values_ratchet() {
        let old = obj(6000, 3);
        let causes = validate(&obj(7000, 3), Some(&old), &schema());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.basePort");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"integer\": basePort is immutable"
        );
        assert!(validate(&obj(6000, 4), Some(&old), &schema()).is_empty());
        // An object stored before a rule existed may be updated elsewhere as long as the
        // offending value is unchanged.
        let bad_old = obj(65000, 600);
        let mut edit = bad_old.clone();
        edit["spec"]["labels"] = json!({"a": "b"});
        assert_eq!(validate(&edit, Some(&bad_old), &schema()).len(), 1);
        assert!(validate(&bad_old, Some(&bad_old), &schema()).is_empty());
    }

    #[test]
    fn evaluation_errors_are_causes_and_bad_rules_are_refused_at_crd_time() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.missing > 1"}]}}});
        let causes = validate(&json!({"spec": {}}), None, &s);
        assert_eq!(causes.len(), 1);
        assert!(
            causes[0].message.contains("rule evaluation error"),
            "{causes:?}"
        );
        assert!(compile_errors(&s, "root").is_empty());
        let bad = json!({"properties": {"spec": {"x-kubernetes-validations": [
            {"rule": "self.a +"}, {"message": "no rule"}]}}});
        let causes = compile_errors(&bad, "root");
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "root.properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(causes[0].message.contains("compilation failed"));
        assert_eq!(
            causes[1].field,
            "root.properties[spec].x-kubernetes-validations[1].rule"
        );
    }

    #[test]
    fn old_self_is_found_as_a_whole_identifier() {
        assert!(mentions_old_self("self == oldSelf"));
        assert!(mentions_old_self("oldSelf.a < self.a"));
        assert!(!mentions_old_self("self.oldSelfish == 1"));
        assert!(!mentions_old_self("self.a == 1"));
    }
}
