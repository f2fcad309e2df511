//! Three members over real tonic listeners form a group, replicate concurrent client writes and
//! end with the same state, while each member keeps exactly one channel per peer.

use crate::transport_support;

use flame_control_plane::raft::TransportConfig;
use raftlog::LogPolicy;
use std::time::Duration;
use transport_support::{
    Member, assert_one_channel_per_peer, expected, init_tracing, leader, leader_last_index,
    start_group, stop_and_compare, wait_applied, write_range,
};

const N: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_the_same_state_over_one_channel_per_peer() -> anyhow::Result<()> {
    init_tracing();
    let tmp = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let dirs: Vec<_> = tmp.iter().map(|d| d.path()).collect();
    let members = start_group(&dirs, &TransportConfig::default(), &LogPolicy::default()).await?;
    let refs: Vec<&Member> = members.iter().collect();
    let leader_id = leader(&refs, Duration::from_secs(10)).await?.id;

    // Concurrent writers, so append-entries calls carry many entries.
    write_range(&refs, 1..=N, 64).await?;
    let last = leader_last_index(&refs).await?;
    wait_applied(&refs, last, Duration::from_secs(10)).await?;
    assert_eq!(leader(&refs, Duration::from_secs(5)).await?.id, leader_id);

    // Many append-entries calls, all over the leader's two channels.
    assert_one_channel_per_peer(&members, 2, leader_id);
    let appends: Vec<_> = members
        .iter()
        .map(|m| (m.id, m.stats.counts().append_entries))
        .collect();
    eprintln!("member {leader_id} leads; append-entries calls received: {appends:?}");
    for (id, count) in appends.iter().filter(|(id, _)| *id != leader_id) {
        assert!(*count > N / 64, "member {id} received {count} calls");
    }

    stop_and_compare(members, &dirs, &expected(1..=N)).await
}
