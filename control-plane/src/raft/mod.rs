//! The Raft transport between members over tonic (in progress).
