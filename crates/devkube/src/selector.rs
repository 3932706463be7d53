//! Label and field selectors: the `labelSelector`/`fieldSelector` query syntax and
//! `metav1.LabelSelector` objects (`matchLabels`/`matchExpressions`). Pure; no network.

use serde_json::Value;

use crate::meta;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches when the key is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// A selector that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses the query-string syntax (`a=b,c in (d,e),!f`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    /// Builds from a `metav1.LabelSelector` JSON object. `None` selects nothing (a null selector).
    pub fn from_object(v: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(ml) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in ml {
                reqs.push(Requirement::Equals(
                    k.clone(),
                    val.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let req = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(SelectorError(format!("unknown operator {other:?}"))),
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let get = |k: &str| meta::label(obj, k);
            match r {
                Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
                Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
                Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
                Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
                Requirement::Exists(k) => get(k).is_some(),
                Requirement::DoesNotExist(k) => get(k).is_none(),
            }
        })
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(k: &str, whole: &str) -> Result<String, SelectorError> {
    let k = k.trim();
    let valid = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c));
    if valid {
        Ok(k.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label key {k:?} in {whole:?}"
        )))
    }
}

fn check_value(v: &str, whole: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    let valid = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if valid {
        Ok(v.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label value {v:?} in {whole:?}"
        )))
    }
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected (values) in {whole:?}")))?;
    inner.split(',').map(|v| check_value(v, whole)).collect()
}

fn parse_requirement(p: &str) -> Result<Requirement, SelectorError> {
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(k, p)?));
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Requirement::NotEquals(check_key(k, p)?, check_value(v, p)?));
    }
    if let Some((k, v)) = p.split_once("==") {
        return Ok(Requirement::Equals(check_key(k, p)?, check_value(v, p)?));
    }
    if let Some((k, v)) = p.split_once('=') {
        return Ok(Requirement::Equals(check_key(k, p)?, check_value(v, p)?));
    }
    let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        if let Some(set) = rest.strip_prefix("notin") {
            return Ok(Requirement::NotIn(
                check_key(words[0], p)?,
                parse_set(set, p)?,
            ));
        }
        if let Some(set) = rest.strip_prefix("in") {
            return Ok(Requirement::In(check_key(words[0], p)?, parse_set(set, p)?));
        }
        return Err(SelectorError(p.to_owned()));
    }
    Ok(Requirement::Exists(check_key(p, p)?))
}

/// A field selector: `path=value`, `path==value`, `path!=value`, comma separated.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the query syntax; `allowed` lists the fields this resource supports.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!("invalid field selector {part:?}")));
            };
            let field = field.trim();
            if !allowed.contains(&field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            out.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self(out))
    }

    /// Whether the object satisfies every term (a missing field compares as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let actual = meta::dotted(obj, field)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *eq
        })
    }

    /// Rewrites field paths (e.g. from a served form to the stored form).
    pub fn map_fields(mut self, f: impl Fn(&str) -> String) -> Self {
        for (field, _, _) in &mut self.0 {
            *field = f(field);
        }
        self
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn full_syntax() {
        let s = LabelSelector::parse("a=1,b!=2,c in (x, y),d notin (z),e,!f").unwrap();
        assert_eq!(s.0.len(), 6);
        assert!(s.matches(&obj(json!({"a":"1","c":"y","e":""}))));
        assert!(!s.matches(&obj(json!({"a":"1","c":"y","e":"","f":"1"}))));
        assert!(!s.matches(&obj(json!({"a":"1","c":"y","e":"","d":"z"}))));
        assert!(!s.matches(&obj(json!({"a":"1","b":"2","c":"y","e":""}))));
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn fields() {
        let f = FieldSelector::parse(
            "metadata.name=p,spec.nodeName!=n",
            &["metadata.name", "spec.nodeName"],
        )
        .unwrap();
        assert!(f.matches(&json!({"metadata":{"name":"p"},"spec":{}})));
        assert!(!f.matches(&json!({"metadata":{"name":"p"},"spec":{"nodeName":"n"}})));
        assert!(FieldSelector::parse("spec.x=1", &["metadata.name"]).is_err());
    }
}
