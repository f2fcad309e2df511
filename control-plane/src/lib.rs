//! The Flame control plane.
//!
//! A three-member openraft group that holds the applications, sessions, tasks, executors and
//! nodes of a Flame cluster and serves `flame.v1.Frontend` from every member.
//!
//! - [`state`]: the replicated state machine. One deterministic apply path: commands carry every
//!   timestamp and id the leader decided, and applying returns effects as data.
//! - [`raft`]: the Raft transport between members over tonic (`flame.raft.v1`).
//!
//! Durable storage is the `raftlog` crate; every wire format is defined in `flame-proto`.
//!
//! Caveat: the Frontend service, group formation and the leader-only timers are still to come.

pub mod config;
pub mod member;
pub mod metrics;
pub mod raft;
pub mod state;

pub use member::{Listeners, ServeError, serve};
