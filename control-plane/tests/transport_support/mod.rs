//! Shared harness of the transport tests: members of raftlog's key-value application on real
//! tonic listeners on 127.0.0.1, wired with the control plane's Raft transport.
//!
//! Every wait has a deadline; nothing sleeps and then asserts.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use anyhow::{Context, bail};
use flame_control_plane::raft::{Network, RaftService, ServiceStats, TransportConfig};
use openraft::{BasicNode, Raft, ServerState};
use raftlog::kv::{self, KvApp, KvConfig, scripted_put};
use raftlog::{LogPolicy, LogStore, StateMachineStore, Storage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;

/// The cluster id of every test member.
pub const CLUSTER: &str = "transport-test";

/// The key-value state: key → value.
pub type State = Vec<(Vec<u8>, Vec<u8>)>;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running member: Raft, its network factory and its peer listener.
pub struct Member {
    /// Member id.
    pub id: u64,
    /// The peer listener's address.
    pub addr: String,
    /// The member's data directory.
    pub dir: PathBuf,
    /// The Raft instance.
    pub raft: Raft<KvConfig>,
    /// The network factory (a clone of the one openraft owns).
    pub network: Network,
    /// The server's counters.
    pub stats: Arc<ServiceStats>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// Binds a listener on `addr` (`127.0.0.1:0` for a fresh port).
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))
}

/// Opens the stores in `dir`, waiting up to ten seconds for a previous owner (a stopped member
/// whose openraft tasks finish asynchronously) to release them.
async fn open_stores(
    dir: &Path,
) -> anyhow::Result<(LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>)> {
    let storage = Storage::new(dir, CLUSTER);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let opened = LogStore::open_in(&storage)
            .and_then(|log| Ok((log, StateMachineStore::open(&storage, KvApp)?)));
        match opened {
            Ok(stores) => return Ok(stores),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Starts member `id` with its data in `dir`, serving on `listener`.
pub async fn start(
    id: u64,
    dir: &Path,
    listener: TcpListener,
    config: &TransportConfig,
    policy: &LogPolicy,
) -> anyhow::Result<Member> {
    let addr = listener.local_addr()?.to_string();
    let (log, sm) = open_stores(dir).await?;
    let network = Network::new(id, CLUSTER, config.clone());
    let raft_config = Arc::new(config.openraft_config(CLUSTER, policy)?);
    let raft = Raft::new(id, raft_config, network.clone(), log, sm).await?;
    let service = RaftService::new(raft.clone(), CLUSTER, config);
    let stats = service.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        config
            .server_builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    Ok(Member {
        id,
        addr,
        dir: dir.to_owned(),
        raft,
        network,
        stats,
        stop: Some(stop),
        server: Some(server),
    })
}

impl Member {
    /// The member's node description (its peer address).
    pub fn node(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    /// Stops the peer listener (draining connections, at most five seconds) and then Raft.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(joined) => joined??,
                Err(_) => server.abort(),
            }
        }
        self.raft.shutdown().await?;
        Ok(())
    }

    /// Whether this member currently believes it leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }
}

/// The member among `members` that leads, waiting up to `within` for one.
pub async fn leader<'a>(members: &[&'a Member], within: Duration) -> anyhow::Result<&'a Member> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = members.iter().find(|m| m.is_leader()) {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("no leader among {:?} within {within:?}", ids(members));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ids(members: &[&Member]) -> Vec<u64> {
    members.iter().map(|m| m.id).collect()
}

/// Writes `scripted_put(i)` for every `i` in `range`, `concurrency` at a time (at most 64, so
/// concurrent puts touch distinct keys), each acknowledged by the leader of `members`. A put the
/// leader refuses (it lost leadership) is retried on the new leader; puts are idempotent.
pub async fn write_range(
    members: &[&Member],
    range: std::ops::RangeInclusive<u64>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let all: Vec<u64> = range.collect();
    for batch in all.chunks(concurrency.clamp(1, 64)) {
        let writes = batch.iter().map(|&i| write_one(members, i));
        for result in futures::future::join_all(writes).await {
            result?;
        }
    }
    Ok(())
}

async fn write_one(members: &[&Member], i: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = leader(members, Duration::from_secs(5)).await?;
        match leader.raft.client_write(scripted_put(i)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(put = i, leader = leader.id, error = %e, "write refused, retrying");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e).context(format!("put {i}")),
        }
    }
}

/// Waits up to `within` until every member applied at least `index`.
pub async fn wait_applied(members: &[&Member], index: u64, within: Duration) -> anyhow::Result<()> {
    for m in members {
        m.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), format!("member {} applied {index}", m.id))
            .await?;
    }
    Ok(())
}

/// The state after `scripted_put(i)` for every `i` in `range`, in order.
pub fn expected(range: std::ops::RangeInclusive<u64>) -> State {
    let mut state = BTreeMap::new();
    for i in range {
        let put = scripted_put(i);
        state.insert(put.key, put.value);
    }
    state.into_iter().collect()
}

/// Reads a stopped member's state once its files are released, waiting up to ten seconds.
pub async fn dump(dir: &Path) -> anyhow::Result<State> {
    let storage = Storage::new(dir, CLUSTER);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match StateMachineStore::open(&storage, KvApp) {
            Ok(sm) => return Ok(kv::dump(&sm.read()?)?),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Starts one member per directory (ids 1, 2, …) on fresh ports and initializes the group on
/// the first with all of them as voters.
pub async fn start_group(
    dirs: &[&Path],
    config: &TransportConfig,
    policy: &LogPolicy,
) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = bind("127.0.0.1:0").await?;
        members.push(start(i as u64 + 1, dir, listener, config, policy).await?);
    }
    let nodes: BTreeMap<u64, _> = members.iter().map(|m| (m.id, m.node())).collect();
    members[0].raft.initialize(nodes).await?;
    Ok(members)
}

/// Stops every member, then checks that each directory holds exactly `want`.
pub async fn stop_and_compare(
    mut members: Vec<Member>,
    dirs: &[&Path],
    want: &State,
) -> anyhow::Result<()> {
    for m in &mut members {
        m.stop().await?;
    }
    drop(members);
    for dir in dirs {
        assert_eq!(&dump(dir).await?, want, "state in {dir:?}");
    }
    Ok(())
}

/// The last log index of the current leader of `members`.
pub async fn leader_last_index(members: &[&Member]) -> anyhow::Result<u64> {
    let leader = leader(members, Duration::from_secs(5)).await?;
    let last = leader.raft.metrics().borrow().last_log_index;
    Ok(last.unwrap_or_default())
}

/// Asserts that each member created exactly one channel per peer it ever sent to (followers
/// send nothing unless they campaign) and that the leader `leader_id` has one per peer.
pub fn assert_one_channel_per_peer(members: &[Member], peers: u64, leader_id: u64) {
    for m in members {
        let created = m.network.channels_created();
        assert_eq!(created, m.network.channel_count() as u64, "member {}", m.id);
        let want = if m.id == leader_id {
            peers
        } else {
            created.min(peers)
        };
        assert_eq!(created, want, "member {} keeps one channel per peer", m.id);
    }
}
