//! The control plane's scheduler integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../scheduler_support/mod.rs"]
mod scheduler_support;

mod scheduler_dispatch;
mod scheduler_explain;
mod scheduler_ordering;
mod scheduler_placement;
mod scheduler_properties;
mod scheduler_reclaim;
mod scheduler_release;
mod scheduler_rotation;
