//! The Flame node agent.
//!
//! This crate will hold the per-node agent: it registers its node with the control plane, pulls
//! executor, binding and task assignments from the Raft leader over one long-lived stream, and
//! runs application instances as real processes driven through `flame.v1.Instance` over a Unix
//! socket.
//!
//! Caveat: nothing is implemented here yet; the node-agent issue fills it in.
