//! Every integration test of this crate, in one binary: one compile and one link of the
//! harness and its dependencies instead of one per file (the suite's build time on the 2-core
//! CI machine was dominated by those), and tests of different files share the test threads.
//! Run one file's tests with a filter on its module, e.g.
//! `cargo test -p kredis-devkube --test suite audit::`.

mod common;

mod audit;
mod controller;
mod foreground;
mod kube_api;
mod kubectl;
mod kubelet;
