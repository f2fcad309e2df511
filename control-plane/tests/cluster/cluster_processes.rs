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
