//! Administration on a [`Connection`]: applications, nodes, executors and the Raft group.
//!
//! What: `register_application`, `update_application`, `get_application`,
//! `list_applications`, `unregister_application`, `list_nodes`, `get_node`, `list_executors`
//! (the `flame.v1.Frontend` RPCs), and `member_status`, `cluster_status`, `add_learner`,
//! `change_membership`, `promote`, `remove_member`, `transfer_leader`, `trigger_snapshot`
//! (`flame.cluster.v1.Cluster`).
//!
//! Where each call goes and why a retry is harmless (every call here goes through
//! `Connection::call`, which retries on NotLeader, UNAVAILABLE and broken connections):
//!
//! | Call | Member | Retry |
//! |---|---|---|
//! | register | leader | a retry after a lost reply finds the name taken; when the stored spec is the one sent, that is success, otherwise the duplicate error stands |
//! | update | leader | replaces every field with the same spec: idempotent |
//! | unregister | leader | a retry after a lost reply finds the name gone: success |
//! | get / list, nodes, executors | any | reads |
//! | `member_status` | the one named | one attempt, no retry: the caller asked about that member |
//! | `cluster_status` | any (membership), then every member | reads; a silent member is reported, not an error |
//! | `add_learner` | leader | re-adding the same id with the same addresses changes nothing |
//! | `change_membership`, `promote`, `remove_member` | leader | the request carries the complete voter set, computed once before the first attempt, so a retry asks for the same set again |
//! | `transfer_leader` | any (the server forwards to the target) | asking the leader-to-be to lead again is harmless; the cached leader is dropped afterwards |
//! | `trigger_snapshot` | leader | a second snapshot at the same index is harmless |
//!
//! Business failures of the application RPCs arrive as gRPC OK with `Result.return_code != 0`
//! (spec section 14, item 5); they become [`ClientError::Refused`] with the server's message.
//!
//! Caveats: `get_application` and `get_node` return `Ok(None)` for an unknown name (NOT_FOUND),
//! as flamepy does. `promote` and `remove_member` read the voters from the leader first; a
//! membership change made by someone else between that read and the write is overwritten.
//! Removing a learner is not expressible in `ChangeMembership` (it sets voters only), so
//! `remove_member` of a learner is refused client-side.

use super::ClientError;
use super::connection::{Connection, Target};
use super::endpoints::normalise;
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{
    AddLearnerRequest, ChangeMembershipRequest, Member, MemberStatus, MembershipReply, Role,
    StatusRequest, TransferLeaderRequest, TriggerSnapshotRequest,
};
use flame_proto::error::FlameError;
use flame_proto::v1::frontend_client::FrontendClient;
use flame_proto::v1::{self, Application, ApplicationSpec, Executor, Node};
use futures::future::join_all;
use std::collections::BTreeSet;
use tonic::Status;

/// What one member said when asked for its status.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberView {
    /// The member answered with its own view of the group.
    Answered(MemberStatus),
    /// The member did not answer within the attempt timeout, or failed; the reason.
    Unreachable(String),
}

/// One member of the group in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct MemberReport {
    /// The member's Raft id.
    pub id: u64,
    /// The member's client-API URL, as the membership names it (normalised).
    pub url: String,
    /// Whether the member votes (else it is a learner).
    pub voter: bool,
    /// Its answer.
    pub view: MemberView,
}

/// Every member of the group, as each one sees itself; see [`Connection::cluster_status`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// Voters then learners, each by id.
    pub members: Vec<MemberReport>,
}

impl ClusterStatus {
    /// The answer of the member that says it leads, with the highest term if several do.
    pub fn leader(&self) -> Option<&MemberStatus> {
        self.answered()
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
    }

    /// Every answer received.
    pub fn answered(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().filter_map(|m| match &m.view {
            MemberView::Answered(s) => Some(s),
            MemberView::Unreachable(_) => None,
        })
    }

    /// The members that did not answer.
    pub fn unreachable(&self) -> impl Iterator<Item = &MemberReport> {
        self.members
            .iter()
            .filter(|m| matches!(m.view, MemberView::Unreachable(_)))
    }

    /// How far member `id` trails the leader's log, by the leader's replication view (0 for
    /// the leader itself); `None` without a leader or a replication entry for `id`.
    pub fn lag_of(&self, id: u64) -> Option<u64> {
        let leader = self.leader()?;
        if leader.id == id {
            return Some(0);
        }
        leader
            .replication
            .iter()
            .find(|r| r.member_id == id)
            .map(|r| r.lag)
    }
}

/// The outcome of an in-band `Result`: `Ok` for 0, else [`ClientError::Refused`].
fn in_band(operation: &str, result: &v1::Result) -> Result<(), ClientError> {
    if result.return_code == 0 {
        return Ok(());
    }
    Err(ClientError::Refused {
        operation: operation.to_owned(),
        code: result.return_code,
        message: result
            .message
            .clone()
            .unwrap_or_else(|| format!("return code {}", result.return_code)),
    })
}

/// `Ok(None)` for a NOT_FOUND answer, the value otherwise.
fn found<T>(result: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ClientError::Flame(FlameError::NotFound(_))) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `stored` is what registering `sent` produces: the server fills `max_instances` and
/// `delay_release` with defaults when absent, so those compare only when they were sent.
fn same_application(sent: &ApplicationSpec, stored: &ApplicationSpec) -> bool {
    let mut expected = sent.clone();
    expected.max_instances = sent.max_instances.or(stored.max_instances);
    expected.delay_release = sent.delay_release.or(stored.delay_release);
    &expected == stored
}

impl Connection {
    /// Registers application `name` with `spec` on the leader. A duplicate or malformed name is
    /// [`ClientError::Refused`]; a malformed spec is [`FlameError::InvalidArgument`].
    pub async fn register_application(
        &self,
        name: &str,
        spec: &ApplicationSpec,
    ) -> Result<(), ClientError> {
        let (result, attempt) = self
            .call(Target::Leader, |ch, attempt| {
                let req = v1::RegisterApplicationRequest {
                    name: name.to_owned(),
                    application: Some(spec.clone()),
                };
                async move {
                    let reply = FrontendClient::new(ch).register_application(req).await?;
                    Ok((reply.into_inner(), attempt))
                }
            })
            .await?;
        let outcome = in_band("RegisterApplication", &result);
        if outcome.is_err() && attempt > 0 {
            // The first attempt may have registered it before its reply was lost.
            if let Some(stored) = self.get_application(name).await?
                && stored
                    .spec
                    .as_ref()
                    .is_some_and(|s| same_application(spec, s))
            {
                return Ok(());
            }
        }
        outcome
    }

    /// Replaces every field of application `name` with `spec`, on the leader; refused
    /// ([`ClientError::Refused`]) for an unknown name or while it has open sessions.
    pub async fn update_application(
        &self,
        name: &str,
        spec: &ApplicationSpec,
    ) -> Result<(), ClientError> {
        let result = self
            .call(Target::Leader, |ch, _| {
                let req = v1::UpdateApplicationRequest {
                    name: name.to_owned(),
                    application: Some(spec.clone()),
                };
                async move {
                    let reply = FrontendClient::new(ch).update_application(req).await?;
                    Ok(reply.into_inner())
                }
            })
            .await?;
        in_band("UpdateApplication", &result)
    }

    /// Application `name` from any member; `None` when no such application exists.
    pub async fn get_application(&self, name: &str) -> Result<Option<Application>, ClientError> {
        found(
            self.call(Target::Any, |ch, _| {
                let req = v1::GetApplicationRequest {
                    name: name.to_owned(),
                };
                async move {
                    let reply = FrontendClient::new(ch).get_application(req).await?;
                    Ok(reply.into_inner())
                }
            })
            .await,
        )
    }

    /// Every application (built-ins included), by name, from any member.
    pub async fn list_applications(&self) -> Result<Vec<Application>, ClientError> {
        let list = self
            .call(Target::Any, |ch, _| async move {
                let req = v1::ListApplicationRequest {};
                let reply = FrontendClient::new(ch).list_application(req).await?;
                Ok(reply.into_inner())
            })
            .await?;
        Ok(list.applications)
    }

    /// Unregisters application `name` on the leader; refused ([`ClientError::Refused`], the
    /// message containing `open sessions`) while it has an open session, or for an unknown name.
    pub async fn unregister_application(&self, name: &str) -> Result<(), ClientError> {
        let (result, attempt) = self
            .call(Target::Leader, |ch, attempt| {
                let req = v1::UnregisterApplicationRequest {
                    name: name.to_owned(),
                };
                async move {
                    let reply = FrontendClient::new(ch).unregister_application(req).await?;
                    Ok((reply.into_inner(), attempt))
                }
            })
            .await?;
        let outcome = in_band("UnregisterApplication", &result);
        let gone = result
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not found"));
        if outcome.is_err() && attempt > 0 && gone {
            // The first attempt removed it before its reply was lost.
            return Ok(());
        }
        outcome
    }

    /// Every node, by name, from any member.
    pub async fn list_nodes(&self) -> Result<Vec<Node>, ClientError> {
        let list = self
            .call(Target::Any, |ch, _| async move {
                let reply = FrontendClient::new(ch)
                    .list_nodes(v1::ListNodesRequest {})
                    .await?;
                Ok(reply.into_inner())
            })
            .await?;
        Ok(list.nodes)
    }

    /// Node `name` from any member; `None` when no such node is known.
    pub async fn get_node(&self, name: &str) -> Result<Option<Node>, ClientError> {
        let reply = found(
            self.call(Target::Any, |ch, _| {
                let req = v1::GetNodeRequest {
                    name: name.to_owned(),
                };
                async move { Ok(FrontendClient::new(ch).get_node(req).await?.into_inner()) }
            })
            .await,
        )?;
        match reply {
            None => Ok(None),
            Some(v1::GetNodeResponse { node: Some(node) }) => Ok(Some(node)),
            Some(_) => Err(ClientError::Protocol(format!(
                "GetNode {name} answered without a node"
            ))),
        }
    }

    /// Every executor, by id, from any member.
    pub async fn list_executors(&self) -> Result<Vec<Executor>, ClientError> {
        let list = self
            .call(Target::Any, |ch, _| async move {
                let reply = FrontendClient::new(ch)
                    .list_executor(v1::ListExecutorRequest {})
                    .await?;
                Ok(reply.into_inner())
            })
            .await?;
        Ok(list.executors)
    }

    /// The status of the one member at `url` (a URL or `host:port`), one attempt bounded by
    /// [`super::ConnectOptions::attempt_timeout`]: the caller asked about that member, so no
    /// other member may answer instead.
    pub async fn member_status(&self, url: &str) -> Result<MemberStatus, ClientError> {
        let url = normalise(url)?;
        let channel = self.channel(&url)?;
        let limit = self.options().attempt_timeout;
        let mut client = ClusterClient::new(channel);
        match tokio::time::timeout(limit, client.status(StatusRequest {})).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(single_member_error(&url, &status)),
            Err(_) => Err(ClientError::NoMember {
                tried: vec![url],
                deadline: limit,
                last: "no answer".into(),
            }),
        }
    }

    /// Every voter and learner of the group, each asked for its own status: the membership
    /// comes from any member (retried until the deadline), then every member's `api_addr` is
    /// asked at once. A member that does not answer is [`MemberView::Unreachable`], not an
    /// error; the call fails only when no member answers at all.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let first = self.status_of(Target::Any).await?;
        let listed = first
            .voters
            .iter()
            .map(|m| (m, true))
            .chain(first.learners.iter().map(|m| (m, false)));
        let asks = listed.map(|(member, voter)| self.report(member, voter));
        Ok(ClusterStatus {
            members: join_all(asks).await,
        })
    }

    /// Asks `member` for its status; a failure becomes [`MemberView::Unreachable`].
    async fn report(&self, member: &Member, voter: bool) -> MemberReport {
        let url = normalise(&member.api_addr).unwrap_or_else(|_| member.api_addr.clone());
        let view = match self.member_status(&url).await {
            Ok(status) => MemberView::Answered(status),
            Err(e) => MemberView::Unreachable(e.to_string()),
        };
        MemberReport {
            id: member.id,
            url,
            voter,
            view,
        }
    }

    /// `Cluster/Status` of `target`, retried; on [`Target::Leader`] an answer from a member
    /// that no longer leads is retried after rediscovery.
    async fn status_of(&self, target: Target) -> Result<MemberStatus, ClientError> {
        self.call(target, |ch, _| async move {
            let status = ClusterClient::new(ch)
                .status(StatusRequest {})
                .await?
                .into_inner();
            if target == Target::Leader && status.role != Role::Leader as i32 {
                return Err(Status::unavailable("the cached leader no longer leads"));
            }
            Ok(status)
        })
        .await
    }

    /// Adds member `id` as a non-voting learner, on the leader; with `blocking` the reply waits
    /// until it has caught up.
    pub async fn add_learner(
        &self,
        id: u64,
        raft_addr: &str,
        api_addr: &str,
        blocking: bool,
    ) -> Result<MembershipReply, ClientError> {
        let req = AddLearnerRequest {
            member: Some(Member {
                id,
                raft_addr: raft_addr.to_owned(),
                api_addr: api_addr.to_owned(),
            }),
            blocking,
        };
        self.call(Target::Leader, |ch, _| {
            let req = req.clone();
            async move { Ok(ClusterClient::new(ch).add_learner(req).await?.into_inner()) }
        })
        .await
    }

    /// Sets the complete voter set to `voters`, on the leader; with `retain` removed voters
    /// stay as learners.
    pub async fn change_membership(
        &self,
        voters: &[u64],
        retain: bool,
    ) -> Result<MembershipReply, ClientError> {
        if voters.is_empty() {
            return Err(ClientError::Invalid(
                "the voter set must not be empty".into(),
            ));
        }
        let req = ChangeMembershipRequest {
            voters: voters.to_vec(),
            retain,
        };
        self.call(Target::Leader, |ch, _| {
            let req = req.clone();
            async move {
                let reply = ClusterClient::new(ch).change_membership(req).await?;
                Ok(reply.into_inner())
            }
        })
        .await
    }

    /// Makes learner `id` a voter: voters := the leader's current voters + `id`.
    pub async fn promote(&self, id: u64) -> Result<MembershipReply, ClientError> {
        let status = self.status_of(Target::Leader).await?;
        if !status
            .learners
            .iter()
            .chain(&status.voters)
            .any(|m| m.id == id)
        {
            return Err(ClientError::Invalid(format!(
                "member {id} is not in the group; add it as a learner first"
            )));
        }
        let mut voters: BTreeSet<u64> = status.voters.iter().map(|m| m.id).collect();
        voters.insert(id);
        let voters: Vec<u64> = voters.into_iter().collect();
        self.change_membership(&voters, true).await
    }

    /// Removes voter `id` from the group: voters := the leader's current voters − `id`.
    pub async fn remove_member(&self, id: u64) -> Result<MembershipReply, ClientError> {
        let status = self.status_of(Target::Leader).await?;
        if !status.voters.iter().any(|m| m.id == id) {
            let what = if status.learners.iter().any(|m| m.id == id) {
                "a learner; ChangeMembership can only remove voters"
            } else {
                "not in the group"
            };
            return Err(ClientError::Invalid(format!("member {id} is {what}")));
        }
        let voters: Vec<u64> = status
            .voters
            .iter()
            .map(|m| m.id)
            .filter(|v| *v != id)
            .collect();
        self.change_membership(&voters, false).await
    }

    /// Asks voter `to` to take over leadership; returns the leader the answering member saw
    /// afterwards (it waits up to 5 s for `to`). Any member accepts the request and forwards
    /// it to `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<Option<u64>, ClientError> {
        let reply = self
            .call(Target::Any, |ch, _| async move {
                let req = TransferLeaderRequest { to };
                Ok(ClusterClient::new(ch)
                    .transfer_leader(req)
                    .await?
                    .into_inner())
            })
            .await;
        // Whatever happened, the cached leader may be stale now.
        self.forget_leader();
        Ok(reply?.leader_id)
    }

    /// Builds a snapshot on the leader now; returns the last log index it includes.
    pub async fn trigger_snapshot(&self) -> Result<u64, ClientError> {
        let reply = self
            .call(Target::Leader, |ch, _| async move {
                let req = TriggerSnapshotRequest {};
                Ok(ClusterClient::new(ch)
                    .trigger_snapshot(req)
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(reply.snapshot_index)
    }
}

/// The error of a single-member call that failed with `status`.
fn single_member_error(url: &str, status: &Status) -> ClientError {
    if super::connection::retriable(status) {
        ClientError::NoMember {
            tried: vec![url.to_owned()],
            deadline: std::time::Duration::ZERO,
            last: format!("{url}: {}", status.message()),
        }
    } else {
        FlameError::from(status.clone()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::cluster::Replication;

    #[test]
    fn a_non_zero_return_code_is_refused_with_the_server_message() {
        let ok = v1::Result {
            return_code: 0,
            message: None,
        };
        assert_eq!(in_band("RegisterApplication", &ok), Ok(()));
        let dup = v1::Result {
            return_code: -1,
            message: Some("application pi already exists".into()),
        };
        let err = in_band("RegisterApplication", &dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RegisterApplication refused: application pi already exists"
        );
        let bare = v1::Result {
            return_code: 7,
            message: None,
        };
        assert!(in_band("X", &bare).unwrap_err().to_string().contains("7"));
    }

    #[test]
    fn not_found_is_none_and_other_errors_stay_errors() {
        let missing: Result<u8, _> = Err(FlameError::NotFound("x".into()).into());
        assert_eq!(found(missing), Ok(None));
        assert_eq!(found(Ok(3u8)), Ok(Some(3)));
        let bad: Result<u8, _> = Err(FlameError::Internal("x".into()).into());
        assert!(found(bad).is_err());
    }

    #[test]
    fn a_stored_spec_with_server_defaults_matches_the_spec_sent() {
        let sent = ApplicationSpec {
            command: Some("/bin/pi".into()),
            ..ApplicationSpec::default()
        };
        let stored = ApplicationSpec {
            max_instances: Some(1_000_000),
            delay_release: Some(60),
            ..sent.clone()
        };
        assert!(same_application(&sent, &stored));
        let other = ApplicationSpec {
            command: Some("/bin/other".into()),
            ..stored.clone()
        };
        assert!(!same_application(&sent, &other));
        let explicit = ApplicationSpec {
            max_instances: Some(4),
            ..sent
        };
        assert!(!same_application(&explicit, &stored));
    }

    fn status(id: u64, role: Role, term: u64) -> MemberStatus {
        MemberStatus {
            id,
            role: role as i32,
            term,
            ..MemberStatus::default()
        }
    }

    #[test]
    fn the_leader_and_lags_come_from_the_leaders_answer() {
        let mut leader = status(1, Role::Leader, 3);
        leader.replication = vec![Replication {
            member_id: 2,
            matched: Some(9),
            lag: 1,
        }];
        let report = |id, view| MemberReport {
            id,
            url: format!("http://m{id}"),
            voter: true,
            view,
        };
        let group = ClusterStatus {
            members: vec![
                report(1, MemberView::Answered(leader)),
                report(2, MemberView::Answered(status(2, Role::Follower, 3))),
                report(3, MemberView::Unreachable("no answer".into())),
            ],
        };
        assert_eq!(group.leader().map(|s| s.id), Some(1));
        assert_eq!(group.lag_of(1), Some(0));
        assert_eq!(group.lag_of(2), Some(1));
        assert_eq!(group.lag_of(3), None);
        let down: Vec<u64> = group.unreachable().map(|m| m.id).collect();
        assert_eq!(down, vec![3]);
    }
}
