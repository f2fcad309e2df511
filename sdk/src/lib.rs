//! The Flame Rust SDK.
//!
//! This crate will hold the client side (connections from a list of endpoints with leader
//! discovery, sessions, exactly-once task submission, watches that survive failover) and the
//! service side (a trait with `on_session_enter`, `on_task_invoke` and `on_session_leave`,
//! served on `FLAME_INSTANCE_ENDPOINT`).
//!
//! Caveat: nothing is implemented here yet; the SDK issue fills it in.
