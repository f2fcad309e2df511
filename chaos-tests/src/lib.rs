//! Chaos and multi-process tests of a whole Flame cluster.
//!
//! This crate will hold the harness that starts control-plane members and node agents as
//! separate OS processes on loopback (or in network namespaces), kills, partitions and restarts
//! them, and checks that nothing acknowledged to a client is lost.
//!
//! Caveat: nothing is implemented here yet; the control-plane and node-agent issues fill it in.
