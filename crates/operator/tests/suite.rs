//! Every integration test of this crate, in one binary: one compile and one link of the
//! harness and its dependencies instead of one per file (the suite's build time on the 2-core
//! CI machine was dominated by those), and tests of different files share the test threads.
//! Run one file's tests with a filter on its module, e.g.
//! `cargo test -p kredis-operator --test suite bad_input::`.

mod common;

mod bad_input;
mod chaos;
mod concurrency;
mod failover;
mod http_api;
mod leader;
mod lifecycle;
mod monitoring;
mod rbac;
mod restart;
mod rollout;
mod tls;
