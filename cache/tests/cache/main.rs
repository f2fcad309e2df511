//! The object cache's tests, in one test binary: one module per former test file, so the
//! area links once.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod flight_tls;
mod peers;
mod refusals;
