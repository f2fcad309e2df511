//! The Flame control plane.
//!
//! A three-member openraft group that holds the applications, sessions, tasks, executors and
//! nodes of a Flame cluster and serves `flame.v1.Frontend` from every member.
//!
//! - [`state`]: the replicated state machine. One deterministic apply path: commands carry every
//!   timestamp and id the leader decided, and applying returns effects as data.
//! - [`raft`]: the Raft transport between members over tonic (`flame.raft.v1`).
//! - [`member`]: a member's core: group-commit proposer, forwarding to the leader, linearizable
//!   reads, request limits, group formation, leader duties and the `flame.cluster.v1` admin
//!   service.
//! - [`server`]: the wiring of a running member; [`serve`] is the entry point the binary and
//!   tests call.
//! - [`frontend`]: `flame.v1.Frontend` and the batch `flame.cluster.v1.Tasks` on every member.
//! - [`agents`]: `flame.agent.v1.NodeAgent`: node registration and the leader's assignment
//!   stream to node agents.
//! - [`scheduler`]: the pure planning function the leader's scheduling loop runs.
//! - [`config`]: the YAML configuration with `FLAME_*` and flag overrides.
//! - [`metrics`]: Prometheus `/metrics`.
//!
//! Durable storage is the `raftlog` crate; every wire format is defined in `flame-proto`.
//!
//! Caveat: TLS is not served yet; the node agents themselves (which run the instances) are the
//! `flame-node-agent` crate.

pub mod agents;
pub mod config;
pub mod frontend;
pub mod member;
pub mod metrics;
pub mod raft;
pub mod scheduler;
pub mod server;
pub mod state;

pub use flame_proto::signal::shutdown_signal;
pub use server::{Listeners, ServeError, serve};
