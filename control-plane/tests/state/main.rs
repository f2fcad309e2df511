//! The control plane's state integration tests, in one test binary: one module per
//! former test file, so the area links once.

#[path = "../state_support/mod.rs"]
mod state_support;

mod scripts;
mod state_cache;
mod state_persistence;
mod state_properties;
mod state_queues;
mod state_requests;
mod state_sessions;
mod state_tasks;
