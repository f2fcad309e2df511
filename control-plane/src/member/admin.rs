//! The `flame.cluster.v1.Cluster` service: per-member status and group administration.
//!
//! `Status` answers from this member's own view, so any member tells a client who leads.
//! Membership changes must run on the leader; a follower answers `NotLeader` with the leader's
//! id and address so the caller can retry there. `TransferLeader` asks the target member to
//! campaign (openraft 0.9 has no transfer primitive): it calls elections until it wins or a
//! deadline passes, since a single one loses whenever its log briefly trails the leader's.
//! `TriggerSnapshot` snapshots the member it reaches.
//!
//! The object cache's calls are answered by any member from its own applied view, without the
//! leader, so they keep working on a follower through a leader change: `CacheDirectory` lists
//! every node that registered a cache and a page of the object-drop log
//! ([`cache_directory_reply`]); `IssueCacheCertificate` signs a peer certificate with the
//! replicated cluster CA ([`super::cache_ca`]). A follower's view may trail the leader's by the
//! entries in flight, so a directory read just after a write may not show it yet.
//!
//! `ExplainSession` says why a session waits for executors ([`explain_reply`], from
//! [`crate::scheduler::explain`]), from this member's applied state and the scheduler settings
//! every member shares.
//!
//! `StateDigest` hashes this member's own applied state ([`state_digest`], from
//! [`raftlog::digest`]): any member answers, leader or not, with the applied log position the
//! hash was taken at. Members apply the same log, so two members' digests must be equal when
//! their applied indexes are; digests at different applied indexes are not comparable. The chaos
//! suite uses it to check that a group's members ended with the same state.
//!
//! Caveat: openraft 0.9 does not publish the commit index; `committed` reports the applied
//! index, which trails it by at most the entries in flight.

use super::cache_ca;
use super::handle::MemberHandle;
use crate::scheduler::{SchedulerConfig, explain};
use crate::state::{Member, State};
use flame_proto::cluster::cluster_server::{Cluster, ClusterServer};
use flame_proto::cluster::{
    AddLearnerRequest, CacheDirectoryReply, CacheDirectoryRequest, ChangeMembershipRequest,
    ExplainSessionReply, ExplainSessionRequest, IssueCacheCertificateReply,
    IssueCacheCertificateRequest, Member as WireMember, MemberStatus, MembershipReply, ObjectDrop,
    Replication, Role, StateDigestReply, StateDigestRequest, StatusRequest, TransferLeaderReply,
    TransferLeaderRequest, TriggerSnapshotReply, TriggerSnapshotRequest,
};
use flame_proto::error::FlameError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState, StoredMembership};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};
use tonic::{Request, Response, Status};
use tracing::info;

/// The `ExplainSession` answer from `state`: `NotFound` for an unknown session.
pub fn explain_reply(
    state: &State,
    scheduler: &SchedulerConfig,
    session_id: &str,
) -> Result<ExplainSessionReply, FlameError> {
    if state.session(session_id).is_none() {
        return Err(FlameError::NotFound(format!(
            "session {} not found",
            crate::frontend::request::shown(session_id)
        )));
    }
    Ok(match explain(state, scheduler, session_id) {
        Some((reason, instances, desired)) => ExplainSessionReply {
            waiting: true,
            reason: reason.name().to_owned(),
            detail: reason.to_string(),
            instances,
            desired,
        },
        None => ExplainSessionReply::default(),
    })
}

/// Most object drops one `CacheDirectory` reply carries (also the default).
pub const MAX_DROPS_PER_REPLY: usize = 4096;

/// The `CacheDirectory` answer from `state`: every node with a cache (any state, by name) and
/// the drops after `drops_after`, at most `max_drops` (0 or more than
/// [`MAX_DROPS_PER_REPLY`]: that many).
pub fn cache_directory_reply(
    state: &State,
    drops_after: u64,
    max_drops: u32,
) -> CacheDirectoryReply {
    let max = match usize::try_from(max_drops) {
        Ok(0) | Err(_) => MAX_DROPS_PER_REPLY,
        Ok(n) => n.min(MAX_DROPS_PER_REPLY),
    };
    let page = state.object_drops(drops_after, max);
    CacheDirectoryReply {
        members: state.nodes().filter_map(|n| n.cache_member()).collect(),
        drops: page.drops.iter().map(ObjectDrop::from).collect(),
        first_seq: page.first_seq,
        last_seq: page.last_seq,
    }
}

/// The `StateDigest` answer: the digest of the state `handle` hashes, computed on a blocking
/// thread (it reads every row).
pub async fn state_digest(handle: raftlog::DigestHandle) -> Result<StateDigestReply, FlameError> {
    let digest = tokio::task::spawn_blocking(move || handle.digest())
        .await
        .map_err(|e| FlameError::Internal(format!("the state digest task failed: {e}")))?
        .map_err(digest_error)?;
    Ok(StateDigestReply {
        applied_index: digest.applied.map_or(0, |l| l.index),
        applied_term: digest.applied.map_or(0, |l| l.leader_id.term),
        rows: digest.rows,
        digest: digest.digest.to_vec(),
    })
}

/// A failed digest by meaning: the storage failing (I/O, the storage engine) may pass, so the
/// caller can retry; damaged or unreadable data is this member's fault.
fn digest_error(e: raftlog::Error) -> FlameError {
    let text = format!("state digest: {e}");
    match e {
        raftlog::Error::Io { .. } | raftlog::Error::Db(_) => FlameError::Unavailable(text),
        _ => FlameError::Internal(text),
    }
}

/// How long a member keeps campaigning to take over leadership. It stays below the SDK's
/// 10 s attempt limit, with room for the forwarding member to see the result.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(6);

/// Campaigns until this member leads or `deadline` passes. One election rarely suffices:
/// followers refuse votes while the leader's lease holds, and the leader refuses a candidate
/// whose log trails its own, which a busy group's log always briefly does. Each attempt waits
/// a few election timeouts for the outcome, then a jittered pause lets the log catch up.
async fn campaign(handle: &MemberHandle, deadline: Duration) -> Result<(), FlameError> {
    let me = handle.id;
    let until = Instant::now() + deadline;
    let timeout = Duration::from_millis(handle.raft.config().election_timeout_max);
    let mut attempts = 0u32;
    while Instant::now() < until {
        if handle.raft.metrics().borrow().current_leader == Some(me) {
            return Ok(());
        }
        attempts += 1;
        handle
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| FlameError::Unavailable(e.to_string()))?;
        let won = handle
            .raft
            .wait(Some(timeout * 3))
            .metrics(|m| m.current_leader == Some(me), "won the election")
            .await
            .is_ok();
        if won {
            info!(attempts, "took over leadership on request");
            return Ok(());
        }
        let pause = rand::random_range(timeout / 2..=timeout);
        tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
    }
    Err(FlameError::Unavailable(format!(
        "member {me} did not win an election in {attempts} attempts within {deadline:?}; \
         the leader kept a longer log or the group is unstable, try again"
    )))
}

/// The admin service of a member.
pub struct Admin {
    handle: MemberHandle,
    cluster_name: String,
    /// The scheduler's settings (the same on every member), for `ExplainSession`.
    scheduler: SchedulerConfig,
}

/// The tonic server for the admin service.
pub fn server(
    handle: MemberHandle,
    cluster_name: String,
    scheduler: SchedulerConfig,
) -> ClusterServer<Admin> {
    ClusterServer::new(Admin {
        handle,
        cluster_name,
        scheduler,
    })
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Learner => Role::Learner,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Leader => Role::Leader,
        ServerState::Shutdown => Role::Shutdown,
    }
}

fn members(m: &StoredMembership<u64, Member>) -> (Vec<WireMember>, Vec<WireMember>) {
    let wire = |(id, node): (&u64, &Member)| WireMember {
        id: *id,
        raft_addr: node.raft_addr.clone(),
        api_addr: node.api_addr.clone(),
    };
    let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
    let (v, l): (Vec<_>, Vec<_>) = m
        .membership()
        .nodes()
        .partition(|(id, _)| voters.contains(id));
    (
        v.into_iter().map(wire).collect(),
        l.into_iter().map(wire).collect(),
    )
}

/// Builds a member's status from its openraft metrics.
pub fn status_of(m: &RaftMetrics<u64, Member>, cluster_name: &str) -> MemberStatus {
    let (voters, learners) = members(&m.membership_config);
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map_or(0, |l| l.index);
    let replication = m
        .replication
        .iter()
        .flatten()
        .map(|(id, matched)| Replication {
            member_id: *id,
            matched: matched.map(|l| l.index),
            lag: last.saturating_sub(matched.map_or(0, |l| l.index)),
        })
        .collect();
    let leader_api_addr = m
        .current_leader
        .and_then(|id| m.membership_config.membership().get_node(&id))
        .map(|n| n.api_addr.clone());
    MemberStatus {
        id: m.id,
        cluster_name: cluster_name.to_owned(),
        role: role(m.state).into(),
        term: m.current_term,
        leader_id: m.current_leader,
        leader_api_addr,
        last_log_index: last,
        committed: applied,
        applied,
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged: m.purged.map_or(0, |l| l.index),
        voters,
        learners,
        replication,
    }
}

impl Admin {
    fn membership_reply(&self, log_index: u64) -> MembershipReply {
        let m = self.handle.raft.metrics().borrow().clone();
        let (voters, learners) = members(&m.membership_config);
        MembershipReply {
            voters,
            learners,
            log_index,
        }
    }

    fn change_error(&self, e: RaftError<u64, ClientWriteError<u64, Member>>) -> Status {
        super::proposer::write_error(e).into()
    }
}

#[tonic::async_trait]
impl Cluster for Admin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<MemberStatus>, Status> {
        let m = self.handle.raft.metrics().borrow().clone();
        Ok(Response::new(status_of(&m, &self.cluster_name)))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        let member = r
            .member
            .ok_or_else(|| FlameError::InvalidArgument("member is required".into()))?;
        if member.id == 0 || member.raft_addr.is_empty() || member.api_addr.is_empty() {
            return Err(FlameError::InvalidArgument(
                "a member needs a non-zero id, a raft_addr and an api_addr".into(),
            )
            .into());
        }
        let node = Member {
            raft_addr: member.raft_addr,
            api_addr: member.api_addr,
        };
        let resp = self
            .handle
            .raft
            .add_learner(member.id, node, r.blocking)
            .await
            .map_err(|e| self.change_error(e))?;
        Ok(Response::new(self.membership_reply(resp.log_id.index)))
    }

    async fn change_membership(
        &self,
        request: Request<ChangeMembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let r = request.into_inner();
        if r.voters.is_empty() {
            return Err(FlameError::InvalidArgument("voters must not be empty".into()).into());
        }
        let voters: BTreeSet<u64> = r.voters.into_iter().collect();
        let resp = self
            .handle
            .raft
            .change_membership(voters, r.retain)
            .await
            .map_err(|e| self.change_error(e))?;
        Ok(Response::new(self.membership_reply(resp.log_id.index)))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        let to = request.into_inner().to;
        let started = Instant::now();
        if to == self.handle.id {
            campaign(&self.handle, TRANSFER_DEADLINE).await?;
        } else {
            let m = self.handle.raft.metrics().borrow().clone();
            let node = m
                .membership_config
                .membership()
                .get_node(&to)
                .cloned()
                .ok_or_else(|| FlameError::NotFound(format!("member {to} not found")))?;
            let url = format!("http://{}", node.api_addr.trim_start_matches("http://"));
            let channel = tonic::transport::Endpoint::from_shared(url)
                .map_err(|e| FlameError::InvalidArgument(e.to_string()))?
                .connect_timeout(Duration::from_secs(1))
                .connect()
                .await
                .map_err(|e| FlameError::Unavailable(format!("member {to}: {e}")))?;
            flame_proto::cluster::cluster_client::ClusterClient::new(channel)
                .transfer_leader(TransferLeaderRequest { to })
                .await?;
        }
        // The target has won; this member learns it from the next heartbeat.
        let left = (TRANSFER_DEADLINE + Duration::from_secs(2)).saturating_sub(started.elapsed());
        let leader = self
            .handle
            .raft
            .wait(Some(left.max(Duration::from_millis(500))))
            .metrics(|m| m.current_leader == Some(to), "leadership moved")
            .await
            .ok()
            .and_then(|m| m.current_leader);
        Ok(Response::new(TransferLeaderReply { leader_id: leader }))
    }

    async fn cache_directory(
        &self,
        request: Request<CacheDirectoryRequest>,
    ) -> Result<Response<CacheDirectoryReply>, Status> {
        let r = request.into_inner();
        let view = self.handle.local();
        let reply = cache_directory_reply(&view.state, r.drops_after, r.max_drops);
        Ok(Response::new(reply))
    }

    async fn explain_session(
        &self,
        request: Request<ExplainSessionRequest>,
    ) -> Result<Response<ExplainSessionReply>, Status> {
        let session_id = request.into_inner().session_id;
        let view = self.handle.local();
        Ok(Response::new(explain_reply(
            &view.state,
            &self.scheduler,
            &session_id,
        )?))
    }

    async fn issue_cache_certificate(
        &self,
        request: Request<IssueCacheCertificateRequest>,
    ) -> Result<Response<IssueCacheCertificateReply>, Status> {
        let r = request.into_inner();
        let view = self.handle.local();
        let ca = view.state.cluster_ca();
        let cert_pem =
            cache_ca::issue_peer_certificate(ca, &r.node, &r.csr_pem, SystemTime::now())?;
        info!(node = %r.node, "issued a cache peer certificate");
        Ok(Response::new(IssueCacheCertificateReply {
            cert_pem,
            ca_pem: ca.map(|c| c.cert_pem.clone()).unwrap_or_default(),
        }))
    }

    async fn state_digest(
        &self,
        _: Request<StateDigestRequest>,
    ) -> Result<Response<StateDigestReply>, Status> {
        Ok(Response::new(
            state_digest(self.handle.digest.clone()).await?,
        ))
    }

    async fn trigger_snapshot(
        &self,
        _: Request<TriggerSnapshotRequest>,
    ) -> Result<Response<TriggerSnapshotReply>, Status> {
        let raft = &self.handle.raft;
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| FlameError::Unavailable(e.to_string()))?;
        let m = raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await
            .map_err(|e| FlameError::Unavailable(e.to_string()))?;
        Ok(Response::new(TriggerSnapshotReply {
            snapshot_index: m.snapshot.map_or(0, |s| s.index),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explaining_an_unknown_session_is_not_found_naming_it() {
        let err = explain_reply(&State::default(), &SchedulerConfig::default(), "ghost")
            .expect_err("no such session");
        assert_eq!(err, FlameError::NotFound("session ghost not found".into()));
    }
}
