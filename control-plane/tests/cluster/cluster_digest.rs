//! `Cluster.StateDigest` against three control-plane processes.
//!
//! Claim: after some writes, every member that reaches the same applied index reports the same
//! digest of its applied state, over a non-empty state. The three digests are asked of each
//! member in turn; a round whose members answered at different applied indexes (one was still
//! applying) proves nothing and is asked again, until the deadline.

use crate::frontend_support::{app_spec, channel, eventually, frontend, session_spec, start};
use anyhow::ensure;
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{StateDigestReply, StateDigestRequest};
use flame_proto::v1;

const APP: &str = "digest-app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_report_equal_state_digests_at_the_same_applied_index() -> anyhow::Result<()> {
    let run = start("cluster-state-digest").await?;
    let mut c = frontend(&run.cluster, run.leader)?;
    let registered = c
        .register_application(v1::RegisterApplicationRequest {
            name: APP.into(),
            application: Some(app_spec()),
        })
        .await?
        .into_inner();
    ensure!(registered.return_code == 0, "register: {registered:?}");
    c.create_session(v1::CreateSessionRequest {
        session_id: "digest-session".into(),
        session: Some(session_spec(APP)),
    })
    .await?;

    let cluster = &run.cluster;
    let digests = eventually("all three members at one applied index", || async move {
        let mut round = Vec::new();
        for id in [1, 2, 3] {
            let mut client = ClusterClient::new(channel(cluster, id)?);
            round.push(
                client
                    .state_digest(StateDigestRequest {})
                    .await?
                    .into_inner(),
            );
        }
        let index = round[0].applied_index;
        Ok(round
            .iter()
            .all(|d| d.applied_index == index)
            .then_some(round))
    })
    .await?;

    let first: &StateDigestReply = &digests[0];
    ensure!(first.rows > 0, "the state is not empty: {first:?}");
    ensure!(first.digest.len() == 32, "a BLAKE3 digest: {first:?}");
    for (id, d) in (1..).zip(&digests) {
        ensure!(
            d == first,
            "member {id} differs at applied index {}: {d:?} vs {first:?}",
            first.applied_index
        );
    }
    Ok(())
}
