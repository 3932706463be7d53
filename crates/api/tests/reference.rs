//! `docs/reference.md` lists every field of the KRedis spec and status with the description
//! the CRD carries (from the Rust doc comments). The table is generated from the CRD; this
//! test fails when it is stale. Regenerate with
//! `KREDIS_BLESS=1 cargo test -p kredis-api --test suite reference::`.

use serde_json::Value;

const BEGIN: &str =
    "<!-- BEGIN GENERATED FIELDS (cargo test -p kredis-api --test suite reference::) -->";
const END: &str = "<!-- END GENERATED FIELDS -->";

fn kind(schema: &Value) -> String {
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = schema.get("items").map(kind).unwrap_or_default();
            format!("[]{items}")
        }
        Some(t) => t.to_string(),
        None if schema.get("properties").is_some() => "object".into(),
        None => "any".into(),
    }
}

fn walk(prefix: &str, schema: &Value, rows: &mut Vec<String>, depth: usize) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let path = format!("{prefix}.{name}");
        let description = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let default = prop
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        rows.push(format!(
            "| `{path}` | {} | {default} | {description} |",
            kind(prop)
        ));
        // Core Kubernetes types (resources, conditions) are documented upstream.
        if depth < 3 && !matches!(name.as_str(), "resources" | "conditions") {
            let inner = match prop.get("type").and_then(Value::as_str) {
                Some("array") => prop.get("items").cloned().unwrap_or(Value::Null),
                _ => prop.clone(),
            };
            let child = if prop.get("type").and_then(Value::as_str) == Some("array") {
                format!("{path}[]")
            } else {
                path
            };
            walk(&child, &inner, rows, depth + 1);
        }
    }
}

fn generated() -> String {
    let crd = serde_json::to_value(kredis_api::crd()).expect("CRD as JSON");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut rows = vec![
        "| field | type | default | description |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for top in ["spec", "status"] {
        walk(top, &schema[top], &mut rows, 0);
    }
    rows.join("\n")
}

#[test]
fn reference_lists_every_field_as_the_crd_describes_it() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference.md");
    let doc = std::fs::read_to_string(path).expect("docs/reference.md");
    let (head, rest) = doc.split_once(BEGIN).expect("BEGIN marker");
    let (_, tail) = rest.split_once(END).expect("END marker");
    let fresh = format!("{head}{BEGIN}\n{}\n{END}{tail}", generated());
    if std::env::var_os("KREDIS_BLESS").is_some() {
        std::fs::write(path, &fresh).expect("write docs/reference.md");
        return;
    }
    assert!(
        doc == fresh,
        "docs/reference.md is stale: run KREDIS_BLESS=1 cargo test -p kredis-api --test suite reference::"
    );
}
