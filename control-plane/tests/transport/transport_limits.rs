//! Append batches larger than a message-size limit are split, not stuck: over the sender's own
//! limit the batch is never sent, over the receiver's the receiver's OUT_OF_RANGE status is
//! turned into openraft's `PayloadTooLarge`, and either way openraft retries with fewer entries.

use crate::transport_support;

use flame_control_plane::raft::TransportConfig;
use raftlog::LogPolicy;
use std::time::Duration;
use transport_support::{
    Member, bind, expected, init_tracing, leader_last_index, start, start_group, stop_and_compare,
    wait_applied, write_range,
};

/// No snapshots, so the learner catches up by the log alone; small chunks fit small messages.
const POLICY: LogPolicy = LogPolicy {
    snapshot_every: 100_000,
    keep_after_snapshot: 100_000,
    snapshot_chunk_bytes: 4096,
};
/// 600 puts of up to ~220 bytes: a 300-entry batch is about 70 KB.
const N: u64 = 600;
const SMALL: usize = 32 << 10;

/// A single-member group configured with `leader`, filled with `N` puts, then a learner
/// configured with `learner` that must catch up by the log.
async fn catch_up(leader: TransportConfig, learner: TransportConfig) -> anyhow::Result<()> {
    init_tracing();
    let tmp = [tempfile::tempdir()?, tempfile::tempdir()?];
    let dirs: Vec<_> = tmp.iter().map(|d| d.path()).collect();
    let mut members = start_group(&dirs[..1], &leader, &POLICY).await?;
    let last = {
        let refs: Vec<&Member> = members.iter().collect();
        write_range(&refs, 1..=N, 64).await?;
        leader_last_index(&refs).await?
    };
    let late = start(2, dirs[1], bind("127.0.0.1:0").await?, &learner, &POLICY).await?;
    members[0].raft.add_learner(2, late.node(), false).await?;
    members.push(late);
    let refs: Vec<&Member> = members.iter().collect();
    wait_applied(&refs, last, Duration::from_secs(15)).await?;
    let counts = members[1].stats.counts();
    let split = members[0].network.batches_split();
    eprintln!("{split} batches split; learner received {counts:?}");
    assert!(split > 0, "no batch was split");
    assert_eq!(counts.snapshot_chunks, 0, "caught up by the log");
    assert!(counts.append_entries > 2, "{counts:?}");
    stop_and_compare(members, &dirs, &expected(1..=N)).await
}

fn small() -> TransportConfig {
    TransportConfig {
        max_message_bytes: SMALL,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_senders_limit_is_split_before_sending() -> anyhow::Result<()> {
    catch_up(small(), TransportConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_receivers_limit_is_split_and_resent() -> anyhow::Result<()> {
    catch_up(TransportConfig::default(), small()).await
}
