//! The Flame control plane.
//!
//! This crate will hold the replicated state machine (applications, sessions, tasks, executors,
//! nodes and events), the leader-only scheduler, the Raft transport over tonic, and the
//! `flame.v1.Frontend` service that every member serves. The durable storage under it is the
//! `raftlog` crate; every wire format it speaks is defined in `flame-proto`.
//!
//! Caveat: nothing is implemented here yet; the control-plane issue fills it in.
