//! A learner added after the log was purged catches up by a snapshot that crosses the wire in
//! many `InstallSnapshot` chunks, none larger than the configured chunk size.

use crate::transport_support;

use flame_control_plane::raft::TransportConfig;
use raftlog::LogPolicy;
use std::time::Duration;
use transport_support::{
    Member, bind, expected, init_tracing, leader, leader_last_index, start, start_group,
    stop_and_compare, wait_applied, write_range,
};

const POLICY: LogPolicy = LogPolicy {
    snapshot_every: 100,
    keep_after_snapshot: 20,
    snapshot_chunk_bytes: 4096,
};
const N: u64 = 500;

/// Writes `1..=N` and waits until the leader built a snapshot near the end of its log and
/// purged the log below it; returns (last log index, purged index).
async fn fill_and_purge(members: &[Member]) -> anyhow::Result<(u64, u64)> {
    let refs: Vec<&Member> = members.iter().collect();
    write_range(&refs, 1..=N, 32).await?;
    let last = leader_last_index(&refs).await?;
    wait_applied(&refs, last, Duration::from_secs(10)).await?;
    let metrics = leader(&refs, Duration::from_secs(5))
        .await?
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| {
                m.snapshot
                    .is_some_and(|s| s.index + POLICY.snapshot_every > last)
                    && m.purged.is_some_and(|p| p.index > 0)
            },
            "snapshot built and log purged",
        )
        .await?;
    Ok((last, metrics.purged.map(|p| p.index).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_catches_up_by_a_chunked_snapshot() -> anyhow::Result<()> {
    init_tracing();
    let config = TransportConfig::default();
    let tmp = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let dirs: Vec<_> = tmp.iter().map(|d| d.path()).collect();
    let mut members = start_group(&dirs[..2], &config, &POLICY).await?;
    let (last, purged) = fill_and_purge(&members).await?;

    let learner = start(3, dirs[2], bind("127.0.0.1:0").await?, &config, &POLICY).await?;
    let leader_raft = leader(&members.iter().collect::<Vec<_>>(), Duration::from_secs(5))
        .await?
        .raft
        .clone();
    leader_raft.add_learner(3, learner.node(), true).await?;
    learner
        .raft
        .wait(Some(Duration::from_secs(15)))
        .applied_index_at_least(Some(last), "learner caught up")
        .await?;

    let received = learner.raft.metrics().borrow().snapshot.map(|s| s.index);
    assert!(
        received.is_some_and(|i| i >= purged),
        "learner installed snapshot {received:?}, log purged up to {purged}"
    );
    let counts = learner.stats.counts();
    eprintln!("log purged up to {purged} of {last}; learner received {counts:?}");
    assert!(
        counts.snapshot_chunks >= 2,
        "{} chunks",
        counts.snapshot_chunks
    );
    assert!(
        counts.largest_chunk <= POLICY.snapshot_chunk_bytes,
        "{counts:?}"
    );
    assert!(
        counts.snapshot_bytes > POLICY.snapshot_chunk_bytes,
        "{counts:?}"
    );

    drop(leader_raft);
    members.push(learner);
    stop_and_compare(members, &dirs, &expected(1..=N)).await
}
