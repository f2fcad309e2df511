//! The control plane's agents integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../agents_support/mod.rs"]
mod agents_support;
#[path = "../frontend_support/mod.rs"]
mod frontend_support;

mod agents_failover;
mod agents_node_timeout;
mod agents_protocol;
