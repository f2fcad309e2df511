//! The Raft transport between control-plane members over tonic (`flame.raft.v1`).
//!
//! - [`Network`] (client): openraft's network factory. One lazily connected HTTP/2 channel per
//!   peer, shared by every RPC to it; deadlines on every call; snapshots in chunks; oversized
//!   append batches split. [`Network::forward`] sends a client write to the leader over the
//!   same channel.
//! - [`RaftService`] (server): checks the cluster id, decodes, calls the local
//!   [`openraft::Raft`] and encodes the verdict; [`RaftService::into_server`] gives the tonic
//!   service to mount on the peer listener. `Forward` is served by a [`ForwardHandler`].
//! - [`TransportConfig`]: heartbeat, election and transport timings (tuned for fast failover)
//!   and the builder of the matching [`openraft::Config`].
//!
//! The transport is generic over any [`raftlog::FlameRaft`] type configuration whose node type
//! says where its peer listener is ([`PeerAddress`]), so it serves the control plane's own
//! configuration and raftlog's key-value test application alike.
//!
//! Wiring, for a member `id` of cluster `cid`:
//!
//! ```ignore
//! let network = Network::new(id, cid, config.clone());
//! let raft = Raft::new(id, Arc::new(config.openraft_config(cid, &policy)?), network, log, sm).await?;
//! let service = RaftService::new(raft.clone(), cid, &config).into_server();
//! config.server_builder().add_service(service).serve_with_incoming_shutdown(incoming, stop);
//! ```
//!
//! Caveat: openraft's request and error types are postcard-encoded, so every member must run the
//! same openraft version and type configuration.

mod codec;
mod config;
mod network;
mod service;

pub use codec::TransportError;
pub use config::{DEFAULT_MAX_MESSAGE_BYTES, TransportConfig};
pub use network::{Network, PeerClient};
pub use service::{ForwardHandler, RaftService, ServiceCounts, ServiceStats};

/// A member description that knows where the member's Raft peer listener is.
pub trait PeerAddress {
    /// The peer listener's address: `host:port`, or a URI such as `http://host:port`.
    fn raft_addr(&self) -> &str;
}

impl PeerAddress for openraft::BasicNode {
    fn raft_addr(&self) -> &str {
        &self.addr
    }
}
