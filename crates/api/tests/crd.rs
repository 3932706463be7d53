//! The committed `deploy/crd.yaml` is exactly what `kredis crd` prints.

const REGENERATE: &str = "cargo run -p kredis -- crd > deploy/crd.yaml";

#[test]
fn committed_crd_matches_generated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crd.yaml");
    let generated = serde_saphyr::to_string(&kredis_api::crd()).expect("CRD serializes");
    // Same bytes as `kredis crd`; lets the file be refreshed without building the binary.
    if std::env::var_os("KREDIS_UPDATE_CRD").is_some() {
        std::fs::write(path, &generated).expect("write deploy/crd.yaml");
        return;
    }
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("failed to read {path}: {err}; run `{REGENERATE}`"));
    assert!(
        committed == generated,
        "deploy/crd.yaml is out of date with the KRedis types; regenerate it with `{REGENERATE}`"
    );
}

#[test]
fn crd_has_design_names_columns_and_rules() {
    let crd = kredis_api::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("kredis.kredis.io"));
    let spec = &crd.spec;
    assert_eq!(spec.group, "kredis.io");
    assert_eq!(spec.scope, "Namespaced");
    assert_eq!(spec.names.kind, "KRedis");
    assert_eq!(spec.names.plural, "kredis");
    assert_eq!(spec.names.singular.as_deref(), Some("kredis"));
    assert_eq!(spec.names.short_names, Some(vec!["kr".to_string()]));
    let version = &spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version
        .subresources
        .as_ref()
        .is_some_and(|s| s.status.is_some()));
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Masters", "Replicas", "Ready", "Phase", "Age"]);
    let json = serde_json::to_string(&crd).expect("CRD serializes");
    for needle in [
        r#""rule":"self == oldSelf""#,
        "basePort is immutable",
        "hostNetwork is immutable",
        "highest bus port",
        r#""minimum":1"#,
        "allkeys-lru",
    ] {
        assert!(json.contains(needle), "CRD lacks {needle}");
    }
}
