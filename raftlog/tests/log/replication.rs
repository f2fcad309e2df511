//! raftlog under a real openraft group: snapshots are built and the log purged per
//! [`LogPolicy`], and a member that joins after the purge catches up by a snapshot shipped in
//! many chunks and installed through raftlog's receive path.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Config, Raft};
use raftlog::kv::{self, KvApp, KvConfig, scripted_put};
use raftlog::{LogPolicy, LogStore, StateMachineStore, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

type KvRaft = Raft<KvConfig>;

/// Routes RPCs to in-process Raft instances.
#[derive(Clone, Default)]
struct Router(Arc<RwLock<BTreeMap<u64, KvRaft>>>);

struct Conn {
    router: Router,
    target: u64,
}

impl Router {
    fn get(&self, id: u64) -> KvRaft {
        self.0.read().expect("router lock")[&id].clone()
    }
}

impl RaftNetworkFactory<KvConfig> for Router {
    type Network = Conn;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

fn remote<E: std::error::Error>(
    target: u64,
    e: RaftError<u64, E>,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::RemoteError(RemoteError::new(target, e))
}

impl RaftNetwork<KvConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.router.get(self.target);
        raft.append_entries(rpc)
            .await
            .map_err(|e| remote(self.target, e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.router.get(self.target);
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| remote(self.target, e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.router.get(self.target);
        raft.vote(rpc).await.map_err(|e| remote(self.target, e))
    }
}

const POLICY: LogPolicy = LogPolicy {
    snapshot_every: 100,
    keep_after_snapshot: 20,
    // Small chunks, so a snapshot of a few hundred puts travels in many pieces.
    snapshot_chunk_bytes: 1024,
};

async fn start(id: u64, dir: &std::path::Path, router: &Router) -> anyhow::Result<KvRaft> {
    let mut config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    POLICY.apply_to(&mut config);
    let storage = Storage::new(dir, "replication-cluster");
    let log = LogStore::open_in(&storage)?;
    let sm = StateMachineStore::open(&storage, KvApp)?;
    let raft = Raft::new(id, Arc::new(config.validate()?), router.clone(), log, sm).await?;
    router
        .0
        .write()
        .expect("router lock")
        .insert(id, raft.clone());
    Ok(raft)
}

/// Reads a member's state once openraft's tasks have released its files (they finish
/// asynchronously after shutdown), waiting up to ten seconds.
async fn dump(dir: &std::path::Path) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let storage = Storage::new(dir, "replication-cluster");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match StateMachineStore::open(&storage, KvApp) {
            Ok(sm) => return Ok(kv::dump(&sm.read()?)?),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_log_is_replaced_by_a_chunked_snapshot_for_a_late_learner() -> anyhow::Result<()> {
    let (dir1, dir2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let router = Router::default();
    let leader = start(1, dir1.path(), &router).await?;
    leader.initialize(BTreeSet::from([1])).await?;
    leader
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "node 1 leads")
        .await?;
    const N: u64 = 350;
    for i in 1..=N {
        leader.client_write(scripted_put(i)).await?;
    }
    let last = leader.metrics().borrow().last_log_index.unwrap_or_default();
    let waited = leader.wait(Some(Duration::from_secs(20)));
    waited
        .metrics(
            |m| {
                m.snapshot
                    .is_some_and(|s| s.index + POLICY.snapshot_every > last)
                    && m.purged.is_some_and(|p| p.index > 0)
            },
            "snapshot built and log purged",
        )
        .await?;
    let purged = leader
        .metrics()
        .borrow()
        .purged
        .map(|p| p.index)
        .unwrap_or_default();
    let snap = leader
        .metrics()
        .borrow()
        .snapshot
        .map(|s| s.index)
        .unwrap_or_default();
    assert!(
        purged + POLICY.keep_after_snapshot <= snap + 1,
        "purged {purged}, snapshot {snap}"
    );

    let learner = start(2, dir2.path(), &router).await?;
    leader.add_learner(2, BasicNode::default(), true).await?;
    learner
        .wait(Some(Duration::from_secs(20)))
        .applied_index_at_least(Some(last), "learner caught up")
        .await?;
    let received = learner.metrics().borrow().snapshot.map(|s| s.index);
    assert!(
        received.is_some_and(|i| i >= purged),
        "learner got snapshot {received:?}"
    );

    leader.shutdown().await?;
    learner.shutdown().await?;
    router.0.write().expect("router lock").clear();
    drop((leader, learner));
    let expected: Vec<_> = (N - 63..=N)
        .map(|i| (scripted_put(i).key, scripted_put(i).value))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(dump(dir1.path()).await?, expected, "leader state");
    assert_eq!(dump(dir2.path()).await?, expected, "learner state");
    let mut log = LogStore::<KvConfig>::open_in(&Storage::new(dir1.path(), "replication-cluster"))?;
    let state = log.get_log_state().await?;
    assert_eq!(
        state.last_purged_log_id.map(|p| p.index),
        Some(purged),
        "purge point is durable"
    );
    Ok(())
}
