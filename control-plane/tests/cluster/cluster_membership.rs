//! Online membership changes through the admin API, against member processes: add a learner,
//! promote it, replace a dead member, remove a member.

use chaos_tests::Cluster;
use flame_proto::cluster::{AddLearnerRequest, ChangeMembershipRequest, Member};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flame-control-plane");
const DEADLINE: Duration = Duration::from_secs(20);

fn wire(cluster: &Cluster, id: u64) -> anyhow::Result<Member> {
    let m = cluster.member(id)?;
    Ok(Member {
        id,
        raft_addr: m.raft_addr.to_string(),
        api_addr: m.api_addr.to_string(),
    })
}

fn voter_ids(reply: &flame_proto::cluster::MembershipReply) -> Vec<u64> {
    reply.voters.iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_are_promoted_and_dead_members_replaced_online() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Path::new(BIN), "membership", 3)?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    let mut admin = cluster.admin(leader)?;

    // Add member 4 as a learner; it catches up before the call returns.
    let four = cluster.add_member()?;
    let reply = admin
        .add_learner(AddLearnerRequest {
            member: Some(wire(&cluster, four)?),
            blocking: true,
        })
        .await?
        .into_inner();
    assert_eq!(
        reply.learners.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![four]
    );
    // Its own view catches up with the membership a moment after the leader's reply.
    let learner = flame_proto::cluster::Role::Learner;
    chaos_tests::poll("member 4 to see itself a learner", DEADLINE, || async {
        let role = cluster.status(four).await.map(|s| s.role());
        Ok::<_, anyhow::Error>((role == Some(learner)).then_some(()))
    })
    .await?;

    // Promote it.
    let reply = admin
        .change_membership(ChangeMembershipRequest {
            voters: vec![1, 2, 3, four],
            retain: false,
        })
        .await?
        .into_inner();
    assert_eq!(voter_ids(&reply), vec![1, 2, 3, four]);

    // A voter dies; replace it by removing it from the voters.
    let dead = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.kill(dead)?;
    let survivors: Vec<u64> = [1, 2, 3, four]
        .into_iter()
        .filter(|id| *id != dead)
        .collect();
    let reply = admin
        .change_membership(ChangeMembershipRequest {
            voters: survivors.clone(),
            retain: false,
        })
        .await?
        .into_inner();
    assert_eq!(voter_ids(&reply), survivors);
    assert!(
        reply.learners.is_empty(),
        "the dead member is gone: {reply:?}"
    );

    // The group still elects and agrees without it, and the leader can step down to member 4.
    let reply = admin
        .transfer_leader(flame_proto::cluster::TransferLeaderRequest { to: four })
        .await?
        .into_inner();
    assert_eq!(
        reply.leader_id,
        Some(four),
        "leadership moved to the promoted member"
    );
    let agreed = cluster.wait_for_leader(&survivors, DEADLINE).await?;
    assert_eq!(agreed, four);

    // Followers refuse membership changes with a hint to the leader.
    let follower = survivors
        .iter()
        .copied()
        .find(|id| *id != four)
        .expect("a follower");
    let err = cluster
        .admin(follower)?
        .change_membership(ChangeMembershipRequest {
            voters: vec![four],
            retain: false,
        })
        .await
        .expect_err("only the leader changes membership");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("flame-leader-id")
            .and_then(|v| v.to_str().ok()),
        Some(four.to_string().as_str())
    );
    Ok(())
}
