//! The control plane's frontend integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../frontend_support/mod.rs"]
mod frontend_support;

mod frontend_api;
mod frontend_errors;
mod frontend_failover;
mod frontend_flamepy;
mod frontend_lost_replies;
mod frontend_shutdown;
