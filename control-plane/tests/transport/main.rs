//! The control plane's transport integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../transport_support/mod.rs"]
mod transport_support;

mod transport_errors;
mod transport_failover;
mod transport_limits;
mod transport_replication;
mod transport_snapshot;
