//! KRedis custom resource types (group `kredis.io`, version `v1alpha1`), validation into a
//! `ValidatedCluster`, port layout and labels.
//!
//! This crate starts empty on purpose: the operator issue fills it. It exists now so the
//! workspace shows the dependency direction from day one: `engine` <- `api` <- `operator`.
#![forbid(unsafe_code)]
