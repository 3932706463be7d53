//! The kredis controller: observe pods + Redis -> engine plan -> execute -> status/events.
//!
//! Not built yet (see the operator issue); the crate exists so the layout and dependency
//! direction are visible: it depends on `kredis-api` and `kredis-engine`, never the reverse.
#![forbid(unsafe_code)]
