//! Forming the group on first start, with no manual step.
//!
//! Every member is started with the same initial member list. Exactly one of them, the one with
//! the lowest id, initializes the group, and only when its own log is empty, no other member
//! reports an existing group, and a majority of the initial members (itself included) have
//! answered that they have none. The others wait to be contacted by the leader. Racing starts
//! are therefore safe: no two members ever initialize, and a restarted member (whose log is not
//! empty) never does.
//!
//! Why a majority must answer (review D9): a lowest-id member that lost its disk starts with an
//! empty log; if it counted silence as "no group", it would initialize a second group whenever
//! the members that hold the real one were down or cut off. A formed group lives on at least a
//! majority of the initial members, so once a majority answers "none" no group can exist; until
//! then the member asks again every [`RETRY`].
//!
//! Caveats: if the lowest-id member never starts, or a majority of the initial members never
//! answers, the group does not form until they do (or an operator initializes another member
//! through the admin API). A member that lost its disk still rejoins as the same voter with a
//! forgotten vote once the group exists; that half of D9 is not fixed.

use super::handle::MemberHandle;
use crate::config::Config;
use crate::state::Member;
use flame_proto::cluster::StatusRequest;
use flame_proto::cluster::cluster_client::ClusterClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// Initializes the group if this member is the one that should; see the module docs.
pub async fn form_group(handle: MemberHandle, config: Config) {
    let members = initial_members(&config);
    if members.keys().next() != Some(&handle.id) {
        return;
    }
    match handle.raft.is_initialized().await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => {
            warn!(error = %e, "cannot tell whether the group exists");
            return;
        }
    }
    let majority = members.len() / 2 + 1;
    loop {
        match survey(&handle, &members).await {
            Survey::GroupExists(peer) => {
                info!(
                    peer,
                    "another member already belongs to a group; not initializing"
                );
                return;
            }
            Survey::NoGroup { answered } if answered + 1 >= majority => break,
            Survey::NoGroup { answered } => info!(
                answered,
                needed = majority - 1,
                "too few initial members answered to be sure no group exists; asking again"
            ),
        }
        tokio::time::sleep(RETRY).await;
        if handle.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
    }
    match handle.raft.initialize(members.clone()).await {
        Ok(()) => info!(members = ?members.keys().collect::<Vec<_>>(), "initialized the group"),
        Err(e) => info!(error = %e, "did not initialize the group"),
    }
}

/// The initial members by id: the configured list, or this member alone.
fn initial_members(config: &Config) -> BTreeMap<u64, Member> {
    if config.raft.members.is_empty() {
        return BTreeMap::from([(
            config.raft.id,
            Member {
                raft_addr: config.raft.raft_addr.clone(),
                api_addr: config.raft.api_addr.clone(),
            },
        )]);
    }
    config
        .raft
        .members
        .iter()
        .map(|m| {
            let member = Member {
                raft_addr: m.raft_addr.clone(),
                api_addr: m.api_addr.clone(),
            };
            (m.id, member)
        })
        .collect()
}

/// How long the lowest-id member waits before asking the other initial members again.
const RETRY: Duration = Duration::from_secs(1);

/// What the other initial members said about an existing group.
enum Survey {
    /// This member has a log or a leader.
    GroupExists(u64),
    /// None has; `answered` of them said so (the rest did not answer).
    NoGroup {
        /// How many answered.
        answered: usize,
    },
}

/// Asks every initial member but this one whether it belongs to a group.
async fn survey(handle: &MemberHandle, members: &BTreeMap<u64, Member>) -> Survey {
    let mut answered = 0;
    for (id, member) in members.iter().filter(|(id, _)| **id != handle.id) {
        match peer_has_group(&member.api_addr).await {
            Some(true) => return Survey::GroupExists(*id),
            Some(false) => answered += 1,
            None => {}
        }
    }
    Survey::NoGroup { answered }
}

/// Whether the member at `api_addr` has a log or a leader; `None` when it does not answer.
async fn peer_has_group(api_addr: &str) -> Option<bool> {
    let url = if api_addr.contains("://") {
        api_addr.to_owned()
    } else {
        format!("http://{api_addr}")
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url) else {
        return None;
    };
    let probe = async {
        let channel = endpoint
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        let status = ClusterClient::new(channel)
            .status(StatusRequest {})
            .await
            .ok()?
            .into_inner();
        Some(status.last_log_index > 0 || status.leader_id.is_some())
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
}
