//! The member relay: the loopback address the agent gives its instances as `FLAME_ENDPOINT`,
//! forwarding each TCP connection to a live control-plane member.
//!
//! What: [`Relay::start`] listens on `127.0.0.1` (an ephemeral port) and, for each connection
//! an instance opens, connects to the first member of the agent's `endpoints` that accepts,
//! starting from the one that accepted last, then copies bytes both ways until either side
//! closes. The relay ends when it is dropped.
//!
//! Why: an instance that opens nested sessions (a Runner inside a task, an `flmexec` script,
//! `flamepy.service`) builds its client from `FLAME_ENDPOINT`, and flamepy takes one address
//! (spec section 8.1). Handing it one member's address would tie every nested client to that
//! member; any member serves the whole client API, so a relay that picks a live member per
//! connection keeps nested clients working when a member is lost. gRPC clients reconnect on
//! their own, so the next call after a loss opens a new connection through the relay.
//!
//! Caveats:
//! - It relays bytes (layer 4), so an RPC in flight on a connection to the member that was
//!   lost fails, as it would for any client of that member; later calls go to a live member.
//! - A member that accepts TCP connections but does not answer (stopped, partitioned after the
//!   handshake) is not detected here; the client's own deadlines apply.
//! - Only plaintext members (`http://`) are relayed: a TLS client checks the certificate
//!   against the address it dialled, which would be the relay's. With `https://` members the
//!   agent hands instances the first member's URL unless `flame_endpoint` names one (see
//!   [`instance_endpoint`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

/// How long one member gets to accept a relayed connection before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `FLAME_ENDPOINT` instances get: `configured` when set, else `relay`'s URL, else (TLS
/// members, or no relay) the first member's URL.
pub fn instance_endpoint(
    configured: Option<&str>,
    relay: Option<&Relay>,
    members: &[String],
) -> String {
    match (configured, relay) {
        (Some(url), _) => url.to_owned(),
        (None, Some(relay)) => relay.url(),
        (None, None) => members.first().cloned().unwrap_or_default(),
    }
}

/// A running relay; dropping it closes the listener and every relayed connection.
#[derive(Debug)]
pub struct Relay {
    /// Where instances connect.
    local: SocketAddr,
    /// The accept loop, which owns the connections.
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay to `members` (client-API URLs); `Ok(None)` when there is nothing to
    /// relay: no members, or a member behind TLS (see the module caveats).
    pub async fn start(members: &[String]) -> std::io::Result<Option<Relay>> {
        let Some(addrs) = members
            .iter()
            .map(|url| plain_authority(url))
            .collect::<Option<Vec<_>>>()
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let members = Arc::new(Members {
            addrs,
            preferred: AtomicUsize::new(0),
        });
        tracing::info!(%local, members = ?members.addrs, "member relay for instances listening");
        let span = tracing::info_span!("relay", %local);
        let task = tokio::spawn(accept_loop(listener, members).instrument(span));
        Ok(Some(Relay { local, task }))
    }

    /// The URL instances get as `FLAME_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of a plaintext member URL; `None` for TLS or an address without a port.
fn plain_authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    authority.parse::<tonic::transport::Uri>().ok()?.port()?;
    Some(authority.to_owned())
}

/// The members, and which one to try first.
#[derive(Debug)]
struct Members {
    /// `host:port` of each member's client API.
    addrs: Vec<String>,
    /// The index of the member that accepted last.
    preferred: AtomicUsize,
}

impl Members {
    /// A connection to the first member that accepts, from the preferred one on.
    async fn connect(&self) -> Option<(TcpStream, &str)> {
        let first = self.preferred.load(Ordering::Relaxed);
        for step in 0..self.addrs.len() {
            let index = (first + step) % self.addrs.len();
            let addr = &self.addrs[index];
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(stream)) => {
                    if index != first {
                        tracing::info!(member = %addr, "relaying to another member");
                    }
                    self.preferred.store(index, Ordering::Relaxed);
                    return Some((stream, addr));
                }
                Ok(Err(e)) => tracing::debug!(member = %addr, error = %e, "member refused"),
                Err(_) => tracing::debug!(member = %addr, "member did not accept in time"),
            }
        }
        None
    }
}

/// Accepts instance connections until aborted; dropping the set aborts the connections.
async fn accept_loop(listener: TcpListener, members: Arc<Members>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(relay(client, Arc::clone(&members)));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "relay cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Relays one instance connection to a live member.
async fn relay(mut client: TcpStream, members: Arc<Members>) {
    let Some((mut upstream, member)) = members.connect().await else {
        tracing::warn!(members = ?members.addrs, "no member accepts; closing the instance's connection");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            tracing::debug!(member, sent, received, "relayed connection closed")
        }
        Err(e) => tracing::debug!(member, error = %e, "relayed connection ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_plaintext_members_with_ports_are_relayed() {
        assert_eq!(
            plain_authority("http://10.0.0.1:8080").as_deref(),
            Some("10.0.0.1:8080")
        );
        assert_eq!(plain_authority("https://10.0.0.1:8080"), None);
        assert_eq!(plain_authority("http://host"), None);
    }

    #[test]
    fn a_configured_endpoint_wins_over_the_relay() {
        let members = ["http://m1:8080".to_owned()];
        assert_eq!(
            instance_endpoint(Some("http://lb:8080"), None, &members),
            "http://lb:8080"
        );
        assert_eq!(instance_endpoint(None, None, &members), "http://m1:8080");
    }

    /// An echo server that prefixes what it sends back with `tag`.
    async fn tagged_echo(tag: &'static [u8]) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        let _ = s.write_all(tag).await;
                        let _ = s.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(relay: &Relay) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(relay.local).await?;
        s.write_all(b"ping").await?;
        let mut buf = vec![0u8; 6];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn connections_skip_a_dead_member_and_stay_with_a_live_one() -> std::io::Result<()> {
        let dead = TcpListener::bind(("127.0.0.1", 0)).await?.local_addr()?;
        let live = tagged_echo(b"B:").await?;
        let members = [format!("http://{dead}"), format!("http://{live}")];
        let relay = Relay::start(&members)
            .await?
            .ok_or_else(|| std::io::Error::other("plaintext members were not relayed"))?;
        assert!(relay.url().starts_with("http://127.0.0.1:"));
        assert_eq!(round_trip(&relay).await?, b"B:ping");
        assert_eq!(round_trip(&relay).await?, b"B:ping");
        Ok(())
    }

    #[tokio::test]
    async fn tls_members_are_not_relayed() -> std::io::Result<()> {
        let members = ["https://127.0.0.1:1".to_owned()];
        assert!(Relay::start(&members).await?.is_none());
        Ok(())
    }
}
