//! Every integration test of this crate, in one binary: one compile and one link of the
//! harness and its dependencies instead of one per file (the suite's build time on the 2-core
//! CI machine was dominated by those), and tests of different files share the test threads.
//! Run one file's tests with a filter on its module, e.g.
//! `cargo test -p kredis-engine --test suite addresses::`.

mod common;

mod addresses;
mod crash_safety;
mod create;
mod faults;
mod heal;
mod lost;
mod migration;
mod open_slots;
mod planner_props;
mod rollback;
mod send;
mod tls;
