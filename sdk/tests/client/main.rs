//! The Rust SDK's tests, in one test binary: one module per former test file, so the
//! area links once.

#[path = "../common/mod.rs"]
mod common;

mod a_finished_watch_reads_to_the_end_of_its_stream;
mod a_server_without_the_cluster_service_is_taken_as_the_leader;
mod builtins;
mod client_follows_the_leader_hint_and_retries_with_the_same_request_ids;
mod object_cache;
mod service;
