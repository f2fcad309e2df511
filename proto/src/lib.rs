//! Every wire format Flame speaks, in one crate.
//!
//! - [`v1`]: upstream Flame's `flame.v1` package (shared types, `Frontend`, `Instance`), written
//!   from the compatibility specification so that flamepy 0.6.0 clients and services work
//!   unchanged. Its descriptors are checked against flamepy's in `tests/`.
//! - [`raft`], [`cluster`], [`agent`]: Flame's own versioned packages for the Raft transport
//!   between members, cluster administration and the node-agent protocol.
//! - [`model`]: the domain types the control plane replicates, and the one place where they
//!   convert to and from protobuf.
//! - [`error`]: [`error::FlameError`], the domain error by meaning, and its mapping to and from
//!   `tonic::Status`.
//! - [`deadline`]: the client's deadline of a call, from its `grpc-timeout` header.
//! - [`backoff`] and [`endpoint`]: the client core's retry pauses and endpoint and leader
//!   rules, shared by the SDK, the node agent, `flmctl` and the chaos harness.
//! - [`signal`]: the shutdown future of every binary.
//!
//! Caveat: no other crate may define protobuf conversions or status mappings; add them here.

#![allow(missing_docs)] // Generated code carries no docs; our own modules re-enable the lint.

/// Upstream-compatible `flame.v1`: shared types, `Frontend` and `Instance`.
pub mod v1 {
    tonic::include_proto!("flame.v1");
}

/// `flame.raft.v1`: the Raft transport between control-plane members.
pub mod raft {
    /// Version 1 of the package; nested so generated paths to `flame.v1` resolve.
    pub mod v1 {
        tonic::include_proto!("flame.raft.v1");
    }
    pub use v1::*;
}

/// `flame.cluster.v1`: cluster administration, leader discovery, batch task submission and the
/// object-cache directory.
pub mod cluster {
    /// Version 1 of the package; nested so generated paths to `flame.v1` resolve. Its server
    /// traits have default methods answering UNIMPLEMENTED (see `build.rs`), so fakes outside
    /// this crate need not implement every method.
    pub mod v1 {
        // The default stubs do not use their request argument.
        #![allow(unused_variables)]
        include!(concat!(env!("OUT_DIR"), "/stubbed/flame.cluster.v1.rs"));
    }
    pub use v1::*;
}

/// `flame.agent.v1`: the protocol between node agents and the control-plane leader.
pub mod agent {
    /// Version 1 of the package; nested so generated paths to `flame.v1` resolve.
    pub mod v1 {
        tonic::include_proto!("flame.agent.v1");
    }
    pub use v1::*;
}

/// The encoded `FileDescriptorSet` of every package above, as compiled by protox.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flame_descriptor_set.bin"));

#[warn(missing_docs)]
pub mod backoff;
mod convert;
#[warn(missing_docs)]
pub mod deadline;
#[warn(missing_docs)]
pub mod endpoint;
#[warn(missing_docs)]
pub mod error;
#[warn(missing_docs)]
pub mod model;
#[warn(missing_docs)]
pub mod signal;
