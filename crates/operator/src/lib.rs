//! The kredis controller: observe pods + Redis -> engine plan -> execute -> status/events.
//!
//! Modules by reconcile step (each opens with its contract and whether it touches the network):
//! - [`topology`] (pure): pods -> engine members, which pods to create or delete;
//! - [`pod`] (pure): the pod of one Redis node;
//! - [`rollout`] (pure plan; Redis for live settings): changes without downtime;
//! - [`status`] (pure): the KRedis status from pods and the engine's view;
//! - [`auth`] (API server): the password Secret;
//! - [`rotation`] (API server + Redis): moving every node to a changed password, live;
//! - [`tls`] (API server), [`renewal`] (Redis): the TLS Secret, and renewed certificates
//!   reloaded on every node, live;
//! - [`services`] (API server): per-cluster Services and PodDisruptionBudgets;
//! - [`hook`] (API server, Events): the engine step hook (deletion stop, progress, Events);
//! - [`reconcile`] (API server + Redis): one pass, observe -> validate -> plan -> execute -> report;
//! - [`controller`]: the kube-runtime Controller and the HTTP API, until shutdown;
//! - [`leader`] (API server): Lease-based leader election;
//! - [`http`], [`metrics`]: the read-only API and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod auth;
pub mod context;
pub mod controller;
pub mod error;
pub mod hook;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pod;
pub mod reconcile;
pub mod renewal;
pub mod rollout;
pub mod rotation;
pub mod services;
pub mod status;
pub mod tls;
pub mod topology;

pub use context::OperatorConfig;
pub use controller::{run, serve, RunError, RunOptions};
pub use error::Error;
