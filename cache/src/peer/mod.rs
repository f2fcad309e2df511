//! Cache to cache: the QUIC peer protocol that moves objects between nodes.
//!
//! - [`proto`]: messages and framing.
//! - [`tls`]: mutual TLS with the cluster CA, and transport settings.
//! - [`client`]: [`client::Peers`], calls to other caches (ranged parallel fetches, forwarded
//!   writes, replication, deletes, listings, repair offers).
//! - [`server`]: accepts other caches' calls and answers them through a
//!   [`server::PeerService`].
//!
//! Clients of the cache never relay bytes between nodes: a node that lacks an object fetches
//! it from a holder over this protocol, and writes reach their holders the same way.

pub mod client;
pub mod proto;
pub mod server;
pub mod tls;

use crate::error::{CacheError, CacheResult};
use std::net::UdpSocket;
use std::sync::Arc;
use tls::PeerIdentity;

/// A QUIC endpoint on `socket` that serves peers and connects to them with `identity`.
pub fn endpoint(socket: UdpSocket, identity: &PeerIdentity) -> CacheResult<quinn::Endpoint> {
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(identity.server_config()?),
        socket,
        runtime,
    )
    .map_err(|e| CacheError::io("opening the cache's QUIC endpoint", e))?;
    endpoint.set_default_client_config(identity.client_config()?);
    Ok(endpoint)
}
