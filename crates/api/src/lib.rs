//! KRedis custom resource types (group `kredis.io`, version `v1alpha1`), validation into a
//! `ValidatedCluster`, port layout and labels.
//!
//! Nothing here touches the network: the types describe the resource, `validate` is a pure
//! function of the resource and its peers, and `labels` only names things. The operator reads
//! a `ValidatedCluster`, never the raw spec.
#![forbid(unsafe_code)]

pub mod labels;
pub mod types;
pub mod validate;

pub use types::{
    AuthSpec, ExporterSpec, KRedis, KRedisSpec, KRedisStatus, MaxMemoryPolicy, NodeRole,
    NodeStatus, OperationStatus, Phase, TlsSpec,
};
pub use validate::{
    validate, AuthMode, NodePorts, PortLayout, ValidatedCluster, ValidationError,
    DENIED_CONFIG_DIRECTIVES, MAX_MASTERS, MAX_PODS, MAX_REPLICAS_PER_MASTER, USER_TLS_DIRECTIVES,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The KRedis CustomResourceDefinition, as `kredis crd` prints it and `deploy/crd.yaml` holds it.
pub fn crd() -> CustomResourceDefinition {
    <KRedis as kube::CustomResourceExt>::crd()
}
