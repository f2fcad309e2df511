//! Losing the leader: the survivors elect a new leader within a deadline over the tonic
//! transport, accept writes, lose no acknowledged write, and the old leader rejoins on its old
//! address through the survivors' existing channels.

use crate::transport_support;

use flame_control_plane::raft::TransportConfig;
use openraft::ServerState;
use raftlog::LogPolicy;
use std::time::{Duration, Instant};
use transport_support::{
    Member, assert_one_channel_per_peer, bind, expected, init_tracing, leader, leader_last_index,
    start, start_group, stop_and_compare, wait_applied, write_range,
};

/// Writes acknowledged before the leader is lost.
const BEFORE: u64 = 300;
/// Writes acknowledged in all.
const AFTER: u64 = 600;
/// Failover must complete within this.
const ELECTION_DEADLINE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_is_elected_and_no_acknowledged_write_is_lost() -> anyhow::Result<()> {
    init_tracing();
    let (config, policy) = (TransportConfig::default(), LogPolicy::default());
    let tmp = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let dirs: Vec<_> = tmp.iter().map(|d| d.path()).collect();
    let mut members = start_group(&dirs, &config, &policy).await?;
    write_range(&members.iter().collect::<Vec<_>>(), 1..=BEFORE, 32).await?;

    // Lose the leader: its listener drains and closes, then its Raft stops.
    let old = members
        .iter()
        .position(Member::is_leader)
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let mut lost = members.remove(old);
    let lost_at = Instant::now();
    lost.stop().await?;
    let survivors: Vec<&Member> = members.iter().collect();
    let new_leader = leader(&survivors, ELECTION_DEADLINE).await?;
    eprintln!(
        "member {} lost; member {} leads term {} {:?} later",
        lost.id,
        new_leader.id,
        new_leader.raft.metrics().borrow().current_term,
        lost_at.elapsed()
    );
    assert_ne!(new_leader.id, lost.id);
    write_range(&survivors, BEFORE + 1..=BEFORE + 1, 1).await?;
    eprintln!(
        "first write acknowledged {:?} after the loss",
        lost_at.elapsed()
    );
    write_range(&survivors, BEFORE + 2..=AFTER, 32).await?;
    let last = leader_last_index(&survivors).await?;
    wait_applied(&survivors, last, Duration::from_secs(10)).await?;

    // The old leader restarts on its old address and catches up; the leader reaches it through
    // the channel it already had for that address.
    let (id, dir, addr) = (lost.id, lost.dir.clone(), lost.addr.clone());
    drop(lost);
    let restarted_at = Instant::now();
    let rejoined = start(id, &dir, bind(&addr).await?, &config, &policy).await?;
    rejoined
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(last), "old leader caught up")
        .await?;
    let state = rejoined.raft.metrics().borrow().state;
    eprintln!(
        "member {id} rejoined as {state:?}, caught up in {:?}",
        restarted_at.elapsed()
    );
    assert_ne!(state, ServerState::Leader);
    let leader_id = leader(&survivors, ELECTION_DEADLINE).await?.id;
    assert_one_channel_per_peer(&members, 2, leader_id);

    members.push(rejoined);
    stop_and_compare(members, &dirs, &expected(1..=AFTER)).await
}
