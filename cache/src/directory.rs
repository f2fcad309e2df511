//! The cache's link to the control plane: the directory of caches, the object drops, and the
//! peer certificate.
//!
//! What:
//! - [`ControlPlane`]: a client of the members' `flame.cluster.v1.Cluster` service. These calls
//!   are answered by any member from its own applied state, so it sticks to one member and
//!   moves to the next when that one fails.
//! - [`poll`]: every `directory_interval`, asks for the caches of the cluster (every node that
//!   reported a cache, with its state) and the object drops after the last one applied; publishes
//!   a new [`Directory`] when the caches changed, applies the drops in order through
//!   [`CacheNode::apply_drop`], and records the last applied drop in the storage directory
//!   (`drops.cursor`) so a restart resumes there.
//! - [`issue_identity`]: a fresh key and a certificate for it from the cluster CA, retried until
//!   the control plane answers.
//!
//! Why polling: the reply is small, any member answers it, and a cache that was away simply
//! resumes from its cursor; there is no stream to re-establish across leader changes.
//!
//! Caveats:
//! - A node is a placement target unless it is NotReady (Unknown means its agent's stream
//!   dropped a moment ago; its cache is most likely still up).
//! - When the drops a cache missed were trimmed from the control plane's log, it logs a
//!   warning; objects of those sessions stay until deleted by name.

use crate::ca;
use crate::error::{CacheError, CacheResult};
use crate::node::CacheNode;
use crate::peer::tls::PeerIdentity;
use crate::placement::{Directory, Member};
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{
    CacheDirectoryReply, CacheDirectoryRequest, IssueCacheCertificateRequest,
};
use flame_proto::v1::NodeState;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// A client of the control plane's members; see the module docs.
#[derive(Debug)]
pub struct ControlPlane {
    endpoints: Vec<String>,
    current: usize,
    channel: Option<Channel>,
}

impl ControlPlane {
    /// A client of `endpoints` (`http://host:port` or `host:port`).
    pub fn new(endpoints: Vec<String>) -> ControlPlane {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                if e.contains("://") {
                    e
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        ControlPlane {
            endpoints,
            current: 0,
            channel: None,
        }
    }

    async fn client(&mut self) -> CacheResult<ClusterClient<Channel>> {
        if let Some(channel) = &self.channel {
            return Ok(ClusterClient::new(channel.clone()));
        }
        {
            let url = self
                .endpoints
                .get(self.current)
                .cloned()
                .unwrap_or_default();
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|e| CacheError::Config(format!("control-plane endpoint {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| {
                    CacheError::Unavailable(format!("control plane {url} is unreachable: {e}"))
                })?;
            self.channel = Some(channel.clone());
            Ok(ClusterClient::new(channel))
        }
    }

    fn next(&mut self) {
        self.channel = None;
        self.current = (self.current + 1) % self.endpoints.len().max(1);
    }

    /// The cache directory and the drops after `drops_after`.
    pub async fn directory(&mut self, drops_after: u64) -> CacheResult<CacheDirectoryReply> {
        let request = CacheDirectoryRequest {
            drops_after,
            max_drops: 0,
        };
        let result = self.client().await?.cache_directory(request).await;
        result.map(|r| r.into_inner()).map_err(|s| {
            self.next();
            CacheError::Unavailable(format!(
                "the control plane's cache directory: {}",
                s.message()
            ))
        })
    }

    /// A certificate for `node`'s public key in `csr_pem`: `(cert_pem, ca_pem)`.
    pub async fn certificate(
        &mut self,
        node: &str,
        csr_pem: &str,
    ) -> CacheResult<(String, String)> {
        let request = IssueCacheCertificateRequest {
            node: node.to_owned(),
            csr_pem: csr_pem.to_owned(),
        };
        match self.client().await?.issue_cache_certificate(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                Ok((reply.cert_pem, reply.ca_pem))
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Err(CacheError::from(status))
            }
            Err(status) => {
                self.next();
                Err(CacheError::Unavailable(format!(
                    "the control plane could not issue a certificate: {}",
                    status.message()
                )))
            }
        }
    }
}

/// A fresh key and a certificate from the cluster CA for `node`, retried (every second, after
/// a warning) until it arrives. Only a refused request fails.
pub async fn issue_identity(control: &mut ControlPlane, node: &str) -> CacheResult<PeerIdentity> {
    let (key_pem, csr_pem) = ca::peer_request()?;
    let mut attempts = 0_u32;
    loop {
        match control.certificate(node, &csr_pem).await {
            Ok((cert_pem, ca_pem)) => {
                info!(node, "got a peer certificate from the cluster CA");
                return PeerIdentity::from_pem(&cert_pem, &key_pem, &ca_pem);
            }
            Err(e @ CacheError::Server(_)) => return Err(e),
            Err(e) => {
                attempts += 1;
                if attempts % 10 == 1 {
                    warn!(node, error = %e, "waiting for the control plane to issue a peer certificate");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The members a directory reply lists.
fn members(reply: &CacheDirectoryReply) -> Vec<Member> {
    reply
        .members
        .iter()
        .filter_map(|m| {
            let endpoint = m.endpoint.as_ref()?;
            Some(Member {
                node: m.node.clone(),
                flight_endpoint: endpoint.flight_endpoint.clone(),
                peer_addr: endpoint.peer_addr.clone(),
                ready: m.state != NodeState::NotReady as i32,
            })
        })
        .collect()
}

/// Where the last applied drop is recorded.
fn cursor_file(node: &CacheNode) -> Option<PathBuf> {
    node.store().dir().map(|d| d.join("drops.cursor"))
}

fn read_cursor(file: Option<&PathBuf>) -> u64 {
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(file: Option<&PathBuf>, seq: u64) {
    if let Some(file) = file {
        let tmp = file.with_extension("tmp");
        if let Err(e) =
            std::fs::write(&tmp, seq.to_string()).and_then(|()| std::fs::rename(&tmp, file))
        {
            warn!(error = %e, "cannot record the last applied object drop");
        }
    }
}

/// Polls the control plane until the task is dropped; see the module docs.
pub async fn poll(
    mut control: ControlPlane,
    node: Arc<CacheNode>,
    me: Member,
    directory: watch::Sender<Arc<Directory>>,
    interval: Duration,
) {
    let cursor = cursor_file(&node);
    let mut applied = read_cursor(cursor.as_ref());
    let mut failures = 0_u32;
    loop {
        match control.directory(applied).await {
            Ok(reply) => {
                failures = 0;
                let next = Arc::new(Directory::new(me.clone(), members(&reply)));
                directory.send_if_modified(|current| {
                    let changed = **current != *next;
                    if changed {
                        info!(
                            caches = next.members().len(),
                            ready = next.ready_count(),
                            "the cache directory changed"
                        );
                        *current = next.clone();
                    }
                    changed
                });
                if reply.first_seq > applied + 1 && applied > 0 {
                    warn!(
                        missed_from = applied + 1,
                        missed_to = reply.first_seq - 1,
                        "object drops were trimmed before this cache saw them"
                    );
                }
                for drop in &reply.drops {
                    match node.apply_drop(&drop.prefix, drop.at_ms).await {
                        Ok(n) if n > 0 => {
                            info!(prefix = %drop.prefix, deleted = n, "applied an object drop")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(prefix = %drop.prefix, error = %e, "cannot apply an object drop")
                        }
                    }
                    applied = applied.max(drop.seq);
                }
                if !reply.drops.is_empty() {
                    write_cursor(cursor.as_ref(), applied);
                }
            }
            Err(e) => {
                failures += 1;
                if failures % 10 == 1 {
                    warn!(error = %e, "cannot read the cache directory; keeping the last one");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
