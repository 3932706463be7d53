//! `kredis dev`: a development Kubernetes — an API server emulator with real HTTP and real
//! watches, plus simulated worker nodes whose kubelets run pods as local processes.
//!
//! Start one in-process with [`DevCluster::start`]; talk to it with [`DevCluster::client`]
//! (kube-rs) or the kubeconfig at [`DevCluster::kubeconfig_path`] (kubectl). Everything is in
//! memory; every process it starts dies with it.
//!
//! Layout: [`store`] holds objects and the event history; [`admit`], [`schema`], [`patch`],
//! [`apply`], [`fields`] implement write semantics; [`api`] is the HTTP layer; [`gc`] the
//! garbage collectors; [`node`] the scheduler, node lifecycle and kubelets; [`cluster`] wires
//! them; [`audit`] records every request for RBAC tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admit;
pub mod api;
pub mod apply;
pub mod audit;
pub mod cel;
pub mod cluster;
pub mod convert;
pub mod error;
pub mod fields;
pub mod foreground;
pub mod gc;
pub mod meta;
pub mod node;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;

pub use audit::AuditEntry;
pub use cluster::{DevCluster, DevClusterOptions};
pub use error::{ApiError, DevError};
pub use foreground::run_until_signal;
