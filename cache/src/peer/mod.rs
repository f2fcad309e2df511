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
pub mod treehash;

use crate::error::{CacheError, CacheResult};
use std::net::UdpSocket;
use std::sync::Arc;
use tls::PeerIdentity;
use tracing::{debug, warn};

/// Socket buffer size wanted in each direction. Loopback and LAN transfers run at hundreds of
/// MiB/s in bursts; Linux's default 208 KiB receive buffer overflows under them (counted as
/// `RcvbufErrors` in `/proc/net/snmp`), and every overflow is a loss that halves the congestion
/// window. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A QUIC endpoint on `socket` that serves peers and connects to them with `identity`.
pub fn endpoint(socket: UdpSocket, identity: &PeerIdentity) -> CacheResult<quinn::Endpoint> {
    let socket = grow_buffers(socket);
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

/// Asks for [`SOCKET_BUFFER`] in both directions; a smaller grant only costs speed, so it is
/// logged with the setting that raises it rather than refused.
fn grow_buffers(socket: UdpSocket) -> UdpSocket {
    let socket = socket2::Socket::from(socket);
    // Linux reports twice what was granted (the other half is its bookkeeping).
    let granted = |size: std::io::Result<usize>| size.map(|s| s / 2).unwrap_or(0);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let (recv, send) = (
        granted(socket.recv_buffer_size()),
        granted(socket.send_buffer_size()),
    );
    if recv < SOCKET_BUFFER || send < SOCKET_BUFFER {
        warn!(
            recv,
            send,
            wanted = SOCKET_BUFFER,
            "the kernel capped the cache's QUIC socket buffers; raise net.core.rmem_max and \
             net.core.wmem_max for full peer transfer speed"
        );
    } else {
        debug!(recv, send, "cache QUIC socket buffers");
    }
    socket.into()
}
