//! The transport's edges: wrong cluster ids and garbled payloads are rejected with clear
//! statuses (and never take a member down), unreachable and slow peers become openraft's
//! `Unreachable` and `Timeout`, `Forward` is served only with a handler, and the factory keeps
//! one channel per peer.

use crate::transport_support;

use flame_control_plane::raft::{
    ForwardHandler, Network, PeerClient, RaftService, TransportConfig,
};
use flame_proto::raft::raft_client::RaftClient;
use flame_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use flame_proto::raft::{ForwardReply, ForwardRequest, RaftReply, RaftRequest, SnapshotChunk};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use raftlog::LogPolicy;
use raftlog::kv::KvConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use transport_support::{CLUSTER, Member, bind, init_tracing, start};

type Client = PeerClient<KvConfig>;

async fn client(network: &mut Network, target: u64, addr: &str) -> Client {
    RaftNetworkFactory::<KvConfig>::new_client(network, target, &BasicNode::new(addr)).await
}

fn vote() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(1, 99), None)
}

async fn member(dir: &std::path::Path) -> anyhow::Result<Member> {
    let listener = bind("127.0.0.1:0").await?;
    start(
        1,
        dir,
        listener,
        &TransportConfig::default(),
        &LogPolicy::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_id_is_rejected_naming_both_ids() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut m = member(dir.path()).await?;

    let mut raw = RaftClient::connect(format!("http://{}", m.addr)).await?;
    let status = raw
        .vote(RaftRequest {
            cluster_id: "other-cluster".into(),
            from: 7,
            payload: vec![],
        })
        .await
        .expect_err("wrong cluster id accepted");
    assert_eq!(status.code(), Code::FailedPrecondition);
    for needle in ["\"other-cluster\"", &format!("\"{CLUSTER}\""), "member 7"] {
        assert!(status.message().contains(needle), "{needle} in {status:?}");
    }

    // Through the transport, the refusal is a network error carrying the same message.
    let mut foreign = Network::new(7, "other-cluster", TransportConfig::default());
    let err = client(&mut foreign, 1, &m.addr)
        .await
        .vote(vote(), RPCOption::new(Duration::from_secs(2)))
        .await
        .expect_err("wrong cluster id accepted");
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("other-cluster") && text.contains(CLUSTER),
        "{text}"
    );
    assert_eq!(m.stats.counts().rejected, 2);
    assert_eq!(m.stats.counts().votes, 0);
    m.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_payloads_are_invalid_arguments_and_the_member_keeps_serving() -> anyhow::Result<()>
{
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut m = member(dir.path()).await?;
    let mut raw = RaftClient::connect(format!("http://{}", m.addr)).await?;
    let garbage = vec![0xff; 64];
    let request = || RaftRequest {
        cluster_id: CLUSTER.into(),
        from: 2,
        payload: garbage.clone(),
    };
    let statuses = [
        raw.append_entries(request())
            .await
            .expect_err("garbage appended"),
        raw.vote(request()).await.expect_err("garbage voted"),
        raw.install_snapshot(SnapshotChunk {
            cluster_id: CLUSTER.into(),
            from: 2,
            header: garbage.clone(),
            offset: 0,
            data: vec![1, 2, 3],
            done: true,
        })
        .await
        .expect_err("garbage installed"),
    ];
    for status in &statuses {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("cannot decode"), "{status:?}");
    }

    // The member still answers a well-formed vote, on the same connection as before.
    let mut network = Network::new(2, CLUSTER, TransportConfig::default());
    let reply = client(&mut network, 1, &m.addr)
        .await
        .vote(vote(), RPCOption::new(Duration::from_secs(2)))
        .await?;
    assert!(reply.vote_granted, "{reply:?}");
    assert_eq!(m.stats.counts().rejected, 3);
    m.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_needs_a_handler() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut m = member(dir.path()).await?;
    let network = Network::new(2, CLUSTER, TransportConfig::default());
    let node = BasicNode::new(&m.addr);
    let status = network
        .forward(1, &node, b"put".to_vec(), Duration::from_secs(2))
        .await
        .expect_err("forward served without a handler");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    m.stop().await?;

    // A member whose control plane handles forwarded writes.
    let listener = bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let echo = |from: u64, request: Vec<u8>| async move {
        if request.is_empty() {
            return Err(Status::invalid_argument("empty request"));
        }
        Ok([format!("from {from}: ").into_bytes(), request].concat())
    };
    let handler: Arc<dyn ForwardHandler> = Arc::new(echo);
    let raft = m.raft.clone();
    let service =
        RaftService::new(raft, CLUSTER, &TransportConfig::default()).with_forward(handler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    let node = BasicNode::new(&addr);
    let reply = network
        .forward(1, &node, b"put".to_vec(), Duration::from_secs(2))
        .await?;
    assert_eq!(reply, b"from 2: put");
    let status = network
        .forward(1, &node, vec![], Duration::from_secs(2))
        .await
        .expect_err("handler's refusal is relayed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "empty request");
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// A peer that answers every call after a long pause.
struct Slow;

#[tonic::async_trait]
impl RaftRpc for Slow {
    async fn append_entries(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Err(Status::internal("too late"))
    }
    async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Err(Status::internal("too late"))
    }
    async fn install_snapshot(
        &self,
        _: Request<SnapshotChunk>,
    ) -> Result<Response<RaftReply>, Status> {
        Err(Status::internal("not used"))
    }
    async fn forward(&self, _: Request<ForwardRequest>) -> Result<Response<ForwardReply>, Status> {
        Err(Status::internal("not used"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_slow_peers_are_unreachable_and_timeouts() -> anyhow::Result<()> {
    init_tracing();
    let mut network = Network::new(1, CLUSTER, TransportConfig::default());

    // Nothing listens on a port we just released.
    let dead = bind("127.0.0.1:0").await?.local_addr()?.to_string();
    let err = client(&mut network, 2, &dead)
        .await
        .vote(vote(), RPCOption::new(Duration::from_secs(2)))
        .await
        .expect_err("dead peer answered");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // A peer that never answers in time: the call ends near openraft's deadline.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let slow = listener.local_addr()?.to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(Slow))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut peer = client(&mut network, 3, &slow).await;
    let started = Instant::now();
    let err = peer
        .vote(vote(), RPCOption::new(Duration::from_millis(200)))
        .await
        .expect_err("slow peer answered");
    let took = started.elapsed();
    assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
    assert!(took < Duration::from_secs(1), "timed out after {took:?}");

    // A malformed address fails every call instead of panicking.
    let err = client(&mut network, 4, "not a uri at all")
        .await
        .vote(vote(), RPCOption::new(Duration::from_secs(1)))
        .await
        .expect_err("bad address answered");
    assert!(err.to_string().contains("not a uri at all"), "{err}");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_keeps_one_channel_per_peer() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut m = member(dir.path()).await?;
    let mut network = Network::new(2, CLUSTER, TransportConfig::default());
    for _ in 0..50 {
        let mut peer = client(&mut network, 1, &m.addr).await;
        peer.vote(vote(), RPCOption::new(Duration::from_secs(2)))
            .await?;
    }
    assert_eq!(m.stats.counts().votes, 50);
    assert_eq!(network.channels_created(), 1);
    assert_eq!(network.channel_count(), 1);

    // Another peer gets its own channel; a peer whose address changes gets a replacement.
    client(&mut network, 3, "127.0.0.1:1").await;
    assert_eq!(
        (network.channels_created(), network.channel_count()),
        (2, 2)
    );
    client(&mut network, 3, "127.0.0.1:2").await;
    assert_eq!(
        (network.channels_created(), network.channel_count()),
        (3, 2)
    );
    network.forget(3);
    assert_eq!(network.channel_count(), 1);
    m.stop().await
}
