//! The control plane's cluster integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../agents_support/mod.rs"]
mod agents_support;
#[path = "../frontend_support/mod.rs"]
mod frontend_support;

mod cluster_cache;
mod cluster_digest;
mod cluster_membership;
mod cluster_processes;
