//! Client half of the transport: openraft's [`RaftNetworkFactory`] and [`RaftNetwork`] over
//! tonic.
//!
//! [`Network`] is the factory openraft owns (clone it to keep a handle). It caches one lazily
//! connected [`Channel`] per peer, keyed by member id and address: every [`PeerClient`] openraft
//! asks for (one per replication stream, per heartbeat round, per election) shares it, so a
//! member keeps one HTTP/2 connection per peer however many RPCs it sends. A peer whose address
//! changes gets a fresh channel; a peer that restarts is reconnected by the same channel.
//!
//! Every call carries the cluster id and the sender's id and has a deadline, enforced locally
//! and sent as `grpc-timeout`: openraft's `hard_ttl` bounded by
//! [`TransportConfig::rpc_timeout_ms`] for append-entries and votes (openraft sets it to the
//! heartbeat interval and the minimum election timeout), and
//! [`TransportConfig::snapshot_chunk_timeout_ms`] (bounded by `hard_ttl`) for a snapshot chunk.
//!
//! An append batch too large for `max_message_bytes` (this member's, or the receiver's, which
//! answers OUT_OF_RANGE) becomes openraft's `PayloadTooLarge` with a smaller entries hint, so
//! openraft resends it in pieces.
//!
//! Snapshots: without openraft's `generic-snapshot-data` feature, openraft reads the snapshot
//! file one chunk at a time (`Config::snapshot_max_chunk_size`) and calls
//! [`RaftNetwork::install_snapshot`] once per chunk; each chunk is one `InstallSnapshot` call, so
//! neither side ever holds more than a chunk of a snapshot in memory.
//!
//! Caveats: an address that is not a valid URI cannot be reported from `new_client` (openraft
//! offers no error there); the client it returns fails every call as unreachable instead. A
//! single log entry larger than a message-size limit cannot be split and keeps failing; the
//! control plane bounds request sizes well below the 64 MiB default.

use super::PeerAddress;
use super::codec::{CallSite, TransportError, decode, encode};
use super::config::TransportConfig;
use flame_proto::raft::raft_client::RaftClient;
use flame_proto::raft::raft_reply::Result as Reply;
use flame_proto::raft::{ForwardRequest, RaftReply, RaftRequest, SnapshotChunk};
use openraft::error::{Infallible, InstallSnapshotError, RPCError, RaftError, RemoteError};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftTypeConfig};
use raftlog::FlameRaft;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::{debug, warn};

/// Room kept in a message for the envelope around an encoded openraft request.
const ENVELOPE_BYTES: usize = 4096;

/// A channel to a peer, or why there is none.
type PeerChannel = Result<Channel, Arc<TransportError>>;

/// The openraft result of a call whose remote verdict is `RaftError<u64, E>`.
type RpcResult<T, N, E> = Result<T, RPCError<u64, N, RaftError<u64, E>>>;

/// The Raft network factory of one member: the per-peer channel cache; see the module docs.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    id: u64,
    cluster_id: String,
    config: TransportConfig,
    peers: Mutex<HashMap<u64, CachedPeer>>,
    created: AtomicU64,
    split: AtomicU64,
}

struct CachedPeer {
    addr: String,
    channel: PeerChannel,
}

impl Network {
    /// The network of member `id` of `cluster_id`.
    pub fn new(id: u64, cluster_id: impl Into<String>, config: TransportConfig) -> Self {
        Network {
            shared: Arc::new(Shared {
                id,
                cluster_id: cluster_id.into(),
                config,
                peers: Mutex::new(HashMap::new()),
                created: AtomicU64::new(0),
                split: AtomicU64::new(0),
            }),
        }
    }

    /// The cluster id this network's messages carry.
    pub fn cluster_id(&self) -> &str {
        &self.shared.cluster_id
    }

    /// How many channels this network has created since it started (one per peer, plus one per
    /// address change).
    pub fn channels_created(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed)
    }

    /// How many append batches were refused as too large for a message-size limit (the
    /// sender's or the receiver's) and handed back to openraft to resend in smaller pieces.
    pub fn batches_split(&self) -> u64 {
        self.shared.split.load(Ordering::Relaxed)
    }

    /// How many peers currently have a cached channel.
    pub fn channel_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Drops the cached channel of a member that left the group; clients still holding it keep
    /// working until openraft drops them.
    pub fn forget(&self, target: u64) {
        self.shared.lock().remove(&target);
    }

    /// Sends a client write to member `target` (the leader) over its peer channel and returns
    /// the leader's encoded response; failures arrive as the leader's gRPC status.
    pub async fn forward(
        &self,
        target: u64,
        node: &impl PeerAddress,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        let channel = self
            .shared
            .channel(target, node.raft_addr())
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = self.shared.client(channel);
        let mut req = tonic::Request::new(ForwardRequest {
            cluster_id: self.shared.cluster_id.clone(),
            from: self.shared.id,
            request,
        });
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.forward(req)).await {
            Ok(reply) => Ok(reply?.into_inner().response),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "forward to member {target} timed out after {timeout:?}"
            ))),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, CachedPeer>> {
        // A panic elsewhere while holding the lock leaves the map consistent; keep using it.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached channel to `target` at `addr`, creating (or replacing) it when needed.
    fn channel(&self, target: u64, addr: &str) -> PeerChannel {
        let mut peers = self.lock();
        if let Some(peer) = peers.get(&target).filter(|p| p.addr == addr) {
            return peer.channel.clone();
        }
        let channel = self.connect_lazy(target, addr);
        let replaced = peers.insert(
            target,
            CachedPeer {
                addr: addr.to_owned(),
                channel: channel.clone(),
            },
        );
        debug!(
            peer = target,
            addr,
            replaced = replaced.map(|p| p.addr),
            "new peer channel"
        );
        channel
    }

    fn connect_lazy(&self, target: u64, addr: &str) -> PeerChannel {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        match self.config.endpoint(&uri) {
            Ok(endpoint) => {
                self.created.fetch_add(1, Ordering::Relaxed);
                Ok(endpoint.connect_lazy())
            }
            Err(source) => {
                let e = TransportError::BadAddress {
                    target,
                    addr: addr.to_owned(),
                    source,
                };
                warn!(peer = target, addr, error = %e, "cannot build a peer channel");
                Err(Arc::new(e))
            }
        }
    }

    fn client(&self, channel: Channel) -> RaftClient<Channel> {
        RaftClient::new(channel)
            .max_decoding_message_size(self.config.max_message_bytes)
            .max_encoding_message_size(self.config.max_message_bytes)
    }
}

impl<C> RaftNetworkFactory<C> for Network
where
    C: FlameRaft,
    C::Node: PeerAddress,
{
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: u64, node: &C::Node) -> PeerClient<C> {
        PeerClient {
            target,
            node: node.clone(),
            channel: self.shared.channel(target, node.raft_addr()),
            shared: self.shared.clone(),
        }
    }
}

/// openraft's connection to one peer; a cheap handle on the peer's shared channel.
pub struct PeerClient<C: RaftTypeConfig> {
    target: u64,
    node: C::Node,
    channel: PeerChannel,
    shared: Arc<Shared>,
}

impl<C: FlameRaft> PeerClient<C>
where
    C::Node: PeerAddress,
{
    fn site(&self, action: RPCTypes, deadline: Duration) -> CallSite {
        CallSite {
            action,
            id: self.shared.id,
            target: self.target,
            deadline,
            entries: 0,
        }
    }

    /// The envelope of an append or vote: cluster id, sender and the encoded request.
    fn envelope(
        &self,
        what: &'static str,
        value: &impl serde::Serialize,
    ) -> Result<RaftRequest, TransportError> {
        Ok(RaftRequest {
            cluster_id: self.shared.cluster_id.clone(),
            from: self.shared.id,
            payload: encode(what, value)?,
        })
    }

    /// Sends one unary call with `site.deadline`, enforced locally and announced to the server
    /// (`grpc-timeout`) so it stops working on a call the sender gave up on.
    async fn call<Req, E, F, Fut>(
        &self,
        site: CallSite,
        message: Req,
        send: F,
    ) -> RpcResult<RaftReply, C::Node, E>
    where
        E: std::error::Error,
        F: FnOnce(RaftClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<RaftReply>, Status>>,
    {
        let channel = self.channel.clone().map_err(|e| site.network(&e))?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(site.deadline);
        match tokio::time::timeout(site.deadline, send(self.shared.client(channel), request)).await
        {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => {
                debug!(peer = self.target, action = %site.action, %status, "raft rpc failed");
                Err(site.status(&status))
            }
            Err(_) => {
                debug!(peer = self.target, action = %site.action, deadline = ?site.deadline, "raft rpc timed out");
                Err(site.timeout())
            }
        }
    }

    /// Decodes a reply into openraft's response, or the remote's error.
    // The error type is openraft's, as large as the trait methods returning it.
    #[allow(clippy::result_large_err)]
    fn decode_reply<T, E>(
        &self,
        site: &CallSite,
        what: &'static str,
        reply: RaftReply,
    ) -> RpcResult<T, C::Node, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match reply.result {
            Some(Reply::Ok(bytes)) => decode(what, &bytes).map_err(|e| site.network(&e)),
            Some(Reply::RaftError(bytes)) => {
                let err: RaftError<u64, E> =
                    decode("RaftError", &bytes).map_err(|e| site.network(&e))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    err,
                )))
            }
            None => Err(site.network(&TransportError::EmptyReply {
                target: self.target,
                action: site.action,
            })),
        }
    }

    /// The deadline of an append or vote: openraft's hard ttl, bounded by the configured one.
    fn unary_deadline(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().min(self.shared.config.rpc_timeout())
    }
}

impl<C: FlameRaft> RaftNetwork<C> for PeerClient<C>
where
    C::Node: PeerAddress,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, C::Node, Infallible> {
        let mut site = self.site(RPCTypes::AppendEntries, self.unary_deadline(&option));
        site.entries = rpc.entries.len() as u64;
        let request = self
            .envelope("AppendEntriesRequest", &rpc)
            .map_err(|e| site.network(&e))?;
        drop(rpc);
        let (size, limit) = (request.payload.len(), self.shared.config.max_message_bytes);
        // Leave room for the envelope; a batch that cannot fit is split before it is sent.
        if size.saturating_add(ENVELOPE_BYTES) > limit && site.entries > 1 {
            let e = TransportError::TooLarge {
                what: "AppendEntriesRequest",
                size,
                limit,
            };
            warn!(peer = self.target, entries = site.entries, error = %e, "splitting append batch");
            let hint = site.entries.saturating_mul(limit as u64 / 2) / size as u64;
            self.shared.split.fetch_add(1, Ordering::Relaxed);
            return Err(site.too_large(hint, &e));
        }
        let sent = self
            .call(site, request, |mut c, r| async move {
                c.append_entries(r).await
            })
            .await;
        if let Err(RPCError::PayloadTooLarge(_)) = &sent {
            self.shared.split.fetch_add(1, Ordering::Relaxed);
        }
        let reply = sent?;
        self.decode_reply(&site, "AppendEntriesResponse", reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, C::Node, InstallSnapshotError> {
        let deadline = self
            .shared
            .config
            .snapshot_chunk_timeout()
            .min(option.hard_ttl());
        let site = self.site(RPCTypes::InstallSnapshot, deadline);
        let header =
            encode("snapshot header", &(&rpc.vote, &rpc.meta)).map_err(|e| site.network(&e))?;
        debug!(
            peer = self.target,
            offset = rpc.offset,
            len = rpc.data.len(),
            done = rpc.done,
            "sending snapshot chunk"
        );
        let chunk = SnapshotChunk {
            cluster_id: self.shared.cluster_id.clone(),
            from: self.shared.id,
            header,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let reply = self
            .call(site, chunk, |mut c, r| async move {
                c.install_snapshot(r).await
            })
            .await?;
        self.decode_reply(&site, "InstallSnapshotResponse", reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, C::Node, Infallible> {
        let site = self.site(RPCTypes::Vote, self.unary_deadline(&option));
        let request = self
            .envelope("VoteRequest", &rpc)
            .map_err(|e| site.network(&e))?;
        let reply = self
            .call(site, request, |mut c, r| async move { c.vote(r).await })
            .await?;
        self.decode_reply(&site, "VoteResponse", reply)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.shared.config.unreachable_backoff()))
    }
}
