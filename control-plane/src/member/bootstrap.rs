//! Forming the group on first start, with no manual step.
//!
//! Every member is started with the same initial member list. Exactly one of them, the one with
//! the lowest id, initializes the group, and only when its own log is empty and no other member
//! reports an existing group. The others wait to be contacted by the leader. Racing starts are
//! therefore safe: no two members ever initialize, and a restarted member (whose log is not
//! empty) never does.
//!
//! Caveat: if the lowest-id member never starts, the group does not form until it does (or an
//! operator initializes another member through the admin API).

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
    let members: BTreeMap<u64, Member> = if config.raft.members.is_empty() {
        BTreeMap::from([(
            config.raft.id,
            Member {
                raft_addr: config.raft.raft_addr.clone(),
                api_addr: config.raft.api_addr.clone(),
            },
        )])
    } else {
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
    };
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
    for (id, member) in members.iter().filter(|(id, _)| **id != handle.id) {
        if peer_has_group(&member.api_addr).await {
            info!(
                peer = id,
                "another member already belongs to a group; not initializing"
            );
            return;
        }
    }
    match handle.raft.initialize(members.clone()).await {
        Ok(()) => info!(members = ?members.keys().collect::<Vec<_>>(), "initialized the group"),
        Err(e) => info!(error = %e, "did not initialize the group"),
    }
}

/// Whether the member at `api_addr` answers and already has a log or a leader.
async fn peer_has_group(api_addr: &str) -> bool {
    let url = if api_addr.contains("://") {
        api_addr.to_owned()
    } else {
        format!("http://{api_addr}")
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url) else {
        return false;
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
        .unwrap_or(false)
}
