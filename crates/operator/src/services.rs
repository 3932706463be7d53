//! Stable names for clients that cannot call the HTTP API, and disruption budgets (DESIGN.md,
//! MISSION "the address API must not be the only way in"): a headless Service per KRedis
//! (every node), `<name>-masters` and `<name>-replicas` (by the live role label the operator
//! keeps on each pod), and one PodDisruptionBudget per shard so a voluntary eviction (node
//! drain) never takes a master and its replicas together. Builders are pure; [`apply`] writes
//! them with server-side apply (a no-op when nothing changed).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kredis_api::{labels, ValidatedCluster};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;

use crate::error::Error;
use crate::pod::{owner_reference, CLIENT_PORT_NAME};

/// Field manager of the operator's server-side applies.
pub const MANAGER: &str = "kredis-operator";
/// Label on PDBs naming their shard, so removed shards' budgets can be found and deleted.
const PDB_SHARD: &str = labels::SHARD;

fn meta(cluster: &ValidatedCluster, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut l = labels::cluster_selector(&cluster.name);
    l.insert(labels::MANAGED_BY_KEY.into(), labels::MANAGED_BY.into());
    for (k, v) in extra {
        l.insert((*k).into(), (*v).into());
    }
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(l),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The three Services of a cluster: all nodes, masters, replicas. Headless: a Redis Cluster
/// client needs every node's own address, and the named target port resolves to each pod's
/// own port (host network pods listen on basePort+index).
pub fn build_services(cluster: &ValidatedCluster) -> Vec<Service> {
    let variants: [(String, Option<&str>); 3] = [
        (cluster.name.clone(), None),
        (format!("{}-masters", cluster.name), Some("master")),
        (format!("{}-replicas", cluster.name), Some("replica")),
    ];
    variants
        .into_iter()
        .map(|(name, role)| {
            let mut selector = labels::cluster_selector(&cluster.name);
            if let Some(r) = role {
                selector.insert(labels::ROLE.into(), r.into());
            }
            Service {
                metadata: meta(cluster, name, &[]),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("None".into()),
                    selector: Some(selector),
                    publish_not_ready_addresses: Some(false),
                    ports: Some(vec![ServicePort {
                        name: Some(CLIENT_PORT_NAME.into()),
                        port: 6379,
                        target_port: Some(IntOrString::String(CLIENT_PORT_NAME.into())),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// One budget per shard: at most one of its pods may be evicted at a time.
pub fn build_budgets(cluster: &ValidatedCluster) -> Vec<PodDisruptionBudget> {
    (0..cluster.masters)
        .map(|shard| {
            let s = shard.to_string();
            let mut selector = labels::cluster_selector(&cluster.name);
            selector.insert(labels::SHARD.into(), s.clone());
            PodDisruptionBudget {
                metadata: meta(
                    cluster,
                    format!("{}-shard-{shard}", cluster.name),
                    &[(PDB_SHARD, &s)],
                ),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(selector),
                        ..LabelSelector::default()
                    }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// Applies the Services and budgets; deletes the budgets of shards the spec no longer has
/// once none of their pods is left (`shards_with_pods`).
pub async fn apply(
    client: &kube::Client,
    cluster: &ValidatedCluster,
    shards_with_pods: &BTreeMap<u32, usize>,
) -> Result<(), Error> {
    let params = PatchParams::apply(MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), &cluster.namespace);
    for svc in build_services(cluster) {
        let name = svc.name_any();
        services
            .patch(&name, &params, &Patch::Apply(&svc))
            .await
            .map_err(Error::kube(format!(
                "apply Service {}/{name}",
                cluster.namespace
            )))?;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &cluster.namespace);
    for pdb in build_budgets(cluster) {
        let name = pdb.name_any();
        budgets
            .patch(&name, &params, &Patch::Apply(&pdb))
            .await
            .map_err(Error::kube(format!(
                "apply PodDisruptionBudget {}/{name}",
                cluster.namespace
            )))?;
    }
    let selector = labels::cluster_selector_string(&cluster.name);
    let existing = budgets
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "list the PodDisruptionBudgets of {}/{}",
            cluster.namespace, cluster.name
        )))?;
    for pdb in existing.items {
        let Some(shard) = pdb
            .labels()
            .get(PDB_SHARD)
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if shard >= cluster.masters && !shards_with_pods.contains_key(&shard) {
            let name = pdb.name_any();
            match budgets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(Error::kube(format!(
                        "delete PodDisruptionBudget {}/{name}",
                        cluster.namespace
                    ))(e))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kredis_api::{validate, KRedis, KRedisSpec};

    #[test]
    fn services_select_by_role_and_budgets_by_shard() {
        let mut kr = KRedis::new("cache", KRedisSpec::default());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.uid = Some("u".into());
        let c = validate(&kr, &[]).unwrap();
        let svcs = build_services(&c);
        let names: Vec<_> = svcs.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["cache", "cache-masters", "cache-replicas"]);
        let sel = svcs[1].spec.as_ref().unwrap().selector.as_ref().unwrap();
        assert_eq!(sel[labels::ROLE], "master");
        assert_eq!(
            svcs[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        let pdbs = build_budgets(&c);
        assert_eq!(pdbs.len(), 3);
        let spec = pdbs[2].spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[labels::SHARD],
            "2"
        );
    }
}
