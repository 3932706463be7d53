//! `kredis manifests`: print everything `kubectl apply -f -` needs to install kredis — the
//! KRedis CRD (as `kredis crd` prints it) followed by `deploy/operator.yaml` (embedded at build
//! time), optionally with another operator image. No network.

use anyhow::Context;

/// `deploy/operator.yaml` as committed: namespace, RBAC, Deployment, Service, budget.
const OPERATOR_YAML: &str = include_str!("../../../deploy/operator.yaml");

/// Arguments of `kredis manifests`.
#[derive(Debug, clap::Args)]
pub struct ManifestsArgs {
    /// Operator image to run instead of the one deploy/operator.yaml names (e.g. a mirror).
    #[arg(long)]
    image: Option<String>,
}

/// Prints the manifests to stdout (`kredis manifests | kubectl apply -f -`).
pub fn run(args: ManifestsArgs) -> anyhow::Result<()> {
    print!("{}", render(args.image.as_deref())?);
    Ok(())
}

/// The CRD, `---`, then the operator's objects.
fn render(image: Option<&str>) -> anyhow::Result<String> {
    let crd = serde_saphyr::to_string(&kredis_api::crd()).context("failed to serialize the CRD")?;
    let operator = match image {
        Some(image) => with_image(OPERATOR_YAML, image)?,
        None => OPERATOR_YAML.to_owned(),
    };
    Ok(format!("{crd}---\n{operator}"))
}

/// Replaces the value of the manifest's one `image:` line.
fn with_image(yaml: &str, image: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !image.is_empty() && !image.contains(|c: char| c.is_whitespace() || "\"'#".contains(c)),
        "--image {image:?} is not an image reference"
    );
    let lines: Vec<&str> = yaml.lines().collect();
    let images = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("image: "))
        .count();
    // A second image line would need a decision about which one to replace.
    anyhow::ensure!(
        images == 1,
        "deploy/operator.yaml names {images} images, expected the operator's only"
    );
    let mut out = String::with_capacity(yaml.len());
    for line in lines {
        match line.split_once("image: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                out.push_str(&format!("{indent}image: {image}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn docs(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple::<Value>(yaml)
            .expect("valid YAML")
            .into_iter()
            .filter(Value::is_object)
            .collect()
    }

    fn image(docs: &[Value]) -> &str {
        docs.iter()
            .find(|d| d["kind"] == "Deployment")
            .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].as_str())
            .expect("the operator Deployment's image")
    }

    #[test]
    fn prints_the_crd_then_the_operator_manifest() {
        let out = docs(&render(None).unwrap());
        let crd = serde_json::to_value(kredis_api::crd()).unwrap();
        assert_eq!(out[0], crd);
        assert_eq!(out[1..], docs(OPERATOR_YAML)[..]);
        let kinds: Vec<&str> = out.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in [
            "CustomResourceDefinition",
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
    }

    #[test]
    fn the_manifest_runs_this_version() {
        let docs = docs(OPERATOR_YAML);
        let tag = image(&docs).rsplit_once(':').map(|(_, t)| t);
        assert_eq!(tag, Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn image_replaces_the_operator_image_only() {
        let out = render(Some("registry.example/kredis:dev")).unwrap();
        let docs = docs(&out);
        assert_eq!(image(&docs), "registry.example/kredis:dev");
        let mut plain = super::tests::docs(&render(None).unwrap());
        plain
            .iter_mut()
            .filter(|d| d["kind"] == "Deployment")
            .for_each(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] =
                    "registry.example/kredis:dev".into();
            });
        assert_eq!(docs, plain, "nothing else changes");
        for bad in ["", "a b", "x\"y", "img # comment"] {
            assert!(render(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
