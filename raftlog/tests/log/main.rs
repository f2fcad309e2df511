//! raftlog's integration tests, in one test binary: one module per former test file, so the
//! crate's tests link once.

mod crash;
mod digest;
mod install_order;
mod open_errors;
mod replication;
mod suite;
mod support;
