//! Server half of the transport: the `flame.raft.v1.Raft` service.
//!
//! [`RaftService`] admits a request only when it carries this member's cluster id (otherwise
//! FAILED_PRECONDITION naming both ids), decodes openraft's request, hands it to the local
//! [`openraft::Raft`] and encodes the result: openraft's response in `RaftReply.ok`, its error in
//! `RaftReply.raft_error`. A payload that does not decode is answered INVALID_ARGUMENT; nothing a
//! peer sends can panic the member.
//!
//! Snapshot chunks go to `Raft::install_snapshot`, which writes each chunk at its offset into the
//! file raftlog handed out for receiving and installs it after the last one, so a snapshot is
//! never whole in memory here either.
//!
//! `Forward` carries client writes from followers to the leader. The control plane supplies a
//! [`ForwardHandler`] with [`RaftService::with_forward`]; without one the RPC is UNIMPLEMENTED.
//!
//! Caveat: the service trusts any peer that knows the cluster id; authenticate peers with TLS on
//! the listener.

use super::codec::{TransportError, check_cluster, decode, encode};
use super::config::TransportConfig;
use flame_proto::raft::raft_reply::Result as Reply;
use flame_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use flame_proto::raft::{ForwardReply, ForwardRequest, RaftReply, RaftRequest, SnapshotChunk};
use futures::future::BoxFuture;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Raft, SnapshotMeta, Vote};
use raftlog::FlameRaft;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// Handles client writes forwarded by followers: takes the sender's member id and the encoded
/// request, returns the encoded response or the status to relay.
pub trait ForwardHandler: Send + Sync + 'static {
    /// Handles one forwarded request.
    fn forward(&self, from: u64, request: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, Status>>;
}

impl<F, Fut> ForwardHandler for F
where
    F: Fn(u64, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    fn forward(&self, from: u64, request: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, Status>> {
        Box::pin(self(from, request))
    }
}

/// Counters of what the service received, for tests and metrics.
#[derive(Debug, Default)]
pub struct ServiceStats {
    append_entries: AtomicU64,
    votes: AtomicU64,
    snapshot_chunks: AtomicU64,
    snapshot_bytes: AtomicU64,
    largest_chunk: AtomicU64,
    forwards: AtomicU64,
    rejected: AtomicU64,
}

/// A point-in-time copy of [`ServiceStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Append-entries calls admitted (heartbeats included).
    pub append_entries: u64,
    /// Vote calls admitted.
    pub votes: u64,
    /// Snapshot chunks admitted.
    pub snapshot_chunks: u64,
    /// Snapshot data bytes admitted.
    pub snapshot_bytes: u64,
    /// Data bytes of the largest snapshot chunk.
    pub largest_chunk: u64,
    /// Forward calls admitted.
    pub forwards: u64,
    /// Calls rejected for a wrong cluster id or an undecodable payload.
    pub rejected: u64,
}

impl ServiceStats {
    /// The current counts.
    pub fn counts(&self) -> ServiceCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServiceCounts {
            append_entries: get(&self.append_entries),
            votes: get(&self.votes),
            snapshot_chunks: get(&self.snapshot_chunks),
            snapshot_bytes: get(&self.snapshot_bytes),
            largest_chunk: get(&self.largest_chunk),
            forwards: get(&self.forwards),
            rejected: get(&self.rejected),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The `flame.raft.v1.Raft` service of one member; see the module docs.
pub struct RaftService<C: FlameRaft> {
    raft: Raft<C>,
    cluster_id: String,
    max_message_bytes: usize,
    forward: Option<Arc<dyn ForwardHandler>>,
    stats: Arc<ServiceStats>,
}

impl<C: FlameRaft> RaftService<C> {
    /// The service serving `raft`, a member of `cluster_id`, with `config`'s size limits.
    pub fn new(raft: Raft<C>, cluster_id: impl Into<String>, config: &TransportConfig) -> Self {
        RaftService {
            raft,
            cluster_id: cluster_id.into(),
            max_message_bytes: config.max_message_bytes,
            forward: None,
            stats: Arc::default(),
        }
    }

    /// Serves `Forward` with `handler`.
    pub fn with_forward(mut self, handler: Arc<dyn ForwardHandler>) -> Self {
        self.forward = Some(handler);
        self
    }

    /// The service's counters (shared; they keep counting after [`Self::into_server`]).
    pub fn stats(&self) -> Arc<ServiceStats> {
        self.stats.clone()
    }

    /// The tonic service, with the message-size limits applied, to mount on the peer listener.
    pub fn into_server(self) -> RaftServer<Self> {
        let max = self.max_message_bytes;
        RaftServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Checks the cluster id, counting and logging a rejection.
    fn admit(&self, rpc: &'static str, cluster_id: &str, from: u64) -> Result<(), Status> {
        check_cluster(&self.cluster_id, cluster_id, from).map_err(|e| self.reject(rpc, from, e))
    }

    fn reject(&self, rpc: &'static str, from: u64, e: TransportError) -> Status {
        bump(&self.stats.rejected);
        warn!(rpc, from, error = %e, "rejected raft request");
        Status::from(e)
    }

    /// Decodes a request payload, turning garbage into INVALID_ARGUMENT.
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        rpc: &'static str,
        from: u64,
        bytes: &[u8],
    ) -> Result<T, Status> {
        decode(rpc, bytes).map_err(|e| self.reject(rpc, from, e))
    }
}

/// Encodes openraft's verdict as a reply.
fn reply<T: Serialize, E: std::error::Error + Serialize>(
    what: &'static str,
    result: Result<T, RaftError<u64, E>>,
) -> Result<Response<RaftReply>, Status> {
    let result = match result {
        Ok(resp) => Reply::Ok(encode(what, &resp)?),
        Err(e) => {
            debug!(rpc = what, error = %e, "raft refused request");
            Reply::RaftError(encode("RaftError", &e)?)
        }
    };
    Ok(Response::new(RaftReply {
        result: Some(result),
    }))
}

#[tonic::async_trait]
impl<C: FlameRaft> RaftRpc for RaftService<C> {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.admit("AppendEntries", &req.cluster_id, req.from)?;
        let rpc: AppendEntriesRequest<C> =
            self.decode("AppendEntriesRequest", req.from, &req.payload)?;
        drop(req);
        bump(&self.stats.append_entries);
        reply("AppendEntriesResponse", self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.admit("Vote", &req.cluster_id, req.from)?;
        let rpc: VoteRequest<u64> = self.decode("VoteRequest", req.from, &req.payload)?;
        bump(&self.stats.votes);
        reply("VoteResponse", self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<SnapshotChunk>,
    ) -> Result<Response<RaftReply>, Status> {
        let chunk = request.into_inner();
        self.admit("InstallSnapshot", &chunk.cluster_id, chunk.from)?;
        let (vote, meta): (Vote<u64>, SnapshotMeta<u64, C::Node>) =
            self.decode("snapshot header", chunk.from, &chunk.header)?;
        let len = chunk.data.len() as u64;
        bump(&self.stats.snapshot_chunks);
        self.stats.snapshot_bytes.fetch_add(len, Ordering::Relaxed);
        self.stats.largest_chunk.fetch_max(len, Ordering::Relaxed);
        debug!(
            from = chunk.from,
            offset = chunk.offset,
            len,
            done = chunk.done,
            "snapshot chunk"
        );
        let rpc = InstallSnapshotRequest {
            vote,
            meta,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        reply(
            "InstallSnapshotResponse",
            self.raft.install_snapshot(rpc).await,
        )
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let req = request.into_inner();
        self.admit("Forward", &req.cluster_id, req.from)?;
        let Some(handler) = &self.forward else {
            return Err(Status::unimplemented(
                "this member does not accept forwarded writes",
            ));
        };
        bump(&self.stats.forwards);
        let response = handler.forward(req.from, req.request).await?;
        Ok(Response::new(ForwardReply { response }))
    }
}
