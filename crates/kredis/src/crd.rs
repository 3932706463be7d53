//! `kredis crd`: print the KRedis CustomResourceDefinition as YAML. No network.

use anyhow::Context;

/// Print the CRD to stdout (`cargo run -p kredis -- crd > deploy/crd.yaml`).
pub fn run() -> anyhow::Result<()> {
    let yaml =
        serde_saphyr::to_string(&kredis_api::crd()).context("failed to serialize the CRD")?;
    print!("{yaml}");
    Ok(())
}
