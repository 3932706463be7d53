//! Label keys and values on kredis pods (DESIGN.md "Pods"). Pure: no network.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`; always [`APP_NAME`] on kredis pods.
pub const NAME: &str = "app.kubernetes.io/name";
/// Value of [`NAME`].
pub const APP_NAME: &str = "kredis";
/// `app.kubernetes.io/instance`: the KRedis name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `kredis.io/shard`: the shard number (0-based).
pub const SHARD: &str = "kredis.io/shard";
/// `kredis.io/index`: the pod index, which fixes its ports.
pub const INDEX: &str = "kredis.io/index";
/// `kredis.io/node-id`: the Redis node id, set once the node has one.
pub const NODE_ID: &str = "kredis.io/node-id";
/// `kredis.io/role`: `master` or `replica`, kept equal to the live cluster's word by the
/// operator (for Services and humans; the operator never reads roles from labels).
pub const ROLE: &str = "kredis.io/role";
/// `app.kubernetes.io/managed-by`: value [`MANAGED_BY`].
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_KEY`].
pub const MANAGED_BY: &str = "kredis-operator";

/// Labels every pod of `cluster` carries; a label selector for all its pods.
pub fn cluster_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), APP_NAME.to_string()),
        (INSTANCE.to_string(), cluster.to_string()),
    ])
}

/// The selector as a string for list calls: `app.kubernetes.io/name=kredis,app.kubernetes.io/instance=<cluster>`.
pub fn cluster_selector_string(cluster: &str) -> String {
    format!("{NAME}={APP_NAME},{INSTANCE}={cluster}")
}

/// Labels of one pod; `node_id` once Redis has given the node an id.
pub fn pod_labels(
    cluster: &str,
    shard: u32,
    index: u32,
    node_id: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = cluster_selector(cluster);
    labels.insert(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string());
    labels.insert(SHARD.to_string(), shard.to_string());
    labels.insert(INDEX.to_string(), index.to_string());
    if let Some(id) = node_id {
        labels.insert(NODE_ID.to_string(), id.to_string());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_carry_design_keys() {
        let labels = pod_labels("cache", 2, 7, Some("abc"));
        assert_eq!(labels[NAME], "kredis");
        assert_eq!(labels[INSTANCE], "cache");
        assert_eq!(labels[SHARD], "2");
        assert_eq!(labels[INDEX], "7");
        assert_eq!(labels[NODE_ID], "abc");
        assert!(!pod_labels("cache", 0, 0, None).contains_key(NODE_ID));
        assert_eq!(
            cluster_selector_string("cache"),
            "app.kubernetes.io/name=kredis,app.kubernetes.io/instance=cache"
        );
    }
}
