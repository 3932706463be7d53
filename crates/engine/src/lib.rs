//! kredis-engine: a Redis Cluster engine with no Kubernetes dependency.
#![forbid(unsafe_code)]
pub mod admin;
pub mod exec;
pub mod local;
pub mod migrate;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reconcile;
