//! `flmctl`'s integration tests, in one test binary: one module per former test file, so the
//! area links once. Each test runs the built `flmctl` against its own `local up` on free ports.

mod support;

mod bench;
mod cache;
mod inspect;
mod local_up;
mod local_up_python;
mod membership;
mod runner;
mod verbs;
