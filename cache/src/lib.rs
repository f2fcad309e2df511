//! The Flame object cache.
//!
//! This crate will hold the object cache that moves large task inputs, outputs and session data
//! peer-to-peer between nodes over QUIC (quinn), so they never travel through the Raft log.
//!
//! Caveat: nothing is implemented here yet; a later issue fills it in.
