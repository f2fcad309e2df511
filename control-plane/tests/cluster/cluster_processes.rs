//! Multi-process tests: three `flame-control-plane` members as separate OS processes on
//! 127.0.0.1 form a group with no manual step, elect a new leader when the leader is SIGKILLed,
//! and take the killed member back when it restarts.

use chaos_tests::Cluster;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flame-control-plane");
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_form_a_group_and_survive_losing_the_leader() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Path::new(BIN), "formation", 3)?;
    let leader = match cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await {
        Ok(l) => l,
        Err(e) => anyhow::bail!("{e}\n--- member 1 log:\n{}", cluster.log_tail(1, 40)),
    };
    let status = cluster.status(leader).await.expect("leader answers");
    assert_eq!(status.voters.len(), 3, "all three are voters: {status:?}");
    // The leader registered the built-ins, so the log has entries beyond the membership.
    cluster.wait_applied(leader, 2, DEADLINE).await?;
    let metrics = cluster.metrics(leader).await?;
    for name in [
        "flame_raft_role 3",
        "flame_raft_term",
        "flame_raft_applied_index",
        "flame_proposal_batch_size_count",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    cluster.kill(leader)?;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors, DEADLINE).await?;
    assert_ne!(new_leader, leader);
    let applied = cluster.status(new_leader).await.expect("answers").applied;

    cluster.spawn(leader)?;
    cluster.wait_applied(leader, applied, DEADLINE).await?;
    let back = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    assert_eq!(
        back, new_leader,
        "the restarted member follows the new leader"
    );
    Ok(())
}

/// Review D9, the bootstrap half: the lowest-id member restarted on an empty data directory
/// while the members that hold the group are down does not found a second group. It keeps
/// asking until a majority answers, then rejoins the existing group as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowest_id_member_that_lost_its_disk_does_not_found_a_second_group() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(Path::new(BIN), "amnesia", 3)?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    cluster.wait_applied(leader, 2, DEADLINE).await?;
    for id in [1, 2, 3] {
        cluster.kill(id)?;
    }
    std::fs::remove_dir_all(&cluster.member(1)?.data_dir)?;
    cluster.spawn(1)?;
    let asked_again = "too few initial members answered";
    chaos_tests::poll("member 1 to wait for the others", DEADLINE, || {
        let seen = cluster.log_tail(1, 400).contains(asked_again);
        async move { Ok::<_, anyhow::Error>(seen.then_some(())) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n--- member 1 log:\n{}", cluster.log_tail(1, 40)))?;
    let alone = cluster.status(1).await.expect("member 1 answers");
    assert_eq!(alone.last_log_index, 0, "no group was founded: {alone:?}");
    cluster.spawn(2)?;
    cluster.spawn(3)?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    let applied = cluster
        .status(leader)
        .await
        .expect("the leader answers")
        .applied;
    cluster.wait_applied(1, applied, DEADLINE).await?;
    let log = cluster.log_tail(1, 10_000);
    assert!(
        !log.contains("initialized the group"),
        "member 1 founded a group:\n{log}"
    );
    Ok(())
}
