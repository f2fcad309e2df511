//! The node agent's instance tests, in one test binary: one module per former test file, so the
//! area links once.

#[path = "../common/mod.rs"]
mod common;

mod instance_bind_failures;
mod instance_install;
mod instance_lifecycle;
