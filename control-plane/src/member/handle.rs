//! [`MemberHandle`]: what every service of a member uses to write and read replicated state.
//!
//! - Writes go to the leader: through this member's [`Proposer`] when it leads, else forwarded
//!   over the peer channel (`flame.raft.v1.Forward`) to the leader's proposer. A write the
//!   leader never saw (no leader yet, or a stale leader hint) is retried against the new leader
//!   within a deadline; a write whose fate is unknown (a forward that timed out) is not retried.
//! - Linearizable reads: the leader confirms it still leads (openraft's read index); a follower
//!   asks the leader for the read index, waits until it has applied that far, and answers from
//!   its own state.
//! - Local reads and watches use the member's own applied state, so they keep working on a
//!   follower through a leader change.
//!
//! Caveat: a forwarded write costs one extra round trip between members.

use super::proposer::Proposer;
use crate::raft::Network;
use crate::state::{Command, FlameTypeConfig, Member, Response, StateReader, StateView};
use flame_proto::error::{FlameError, LeaderHint};
use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a write or read waits for a leader to exist before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Most attempts of one linearizable read.
pub const READ_ATTEMPTS: u32 = 5;
/// A failed read attempt is retried only while the read has taken less than this.
pub const READ_RETRY_WINDOW: Duration = Duration::from_secs(2);
/// Deadline of one forwarded call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A request a follower sends to the leader over `Forward`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose this command.
    Propose(Box<Command>),
    /// Confirm leadership and return the index a linearizable read must wait for.
    ReadIndex,
}

/// The leader's answer to a [`ForwardRequest`]; failures travel as gRPC status.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The command's response.
    Response(Box<Response>),
    /// The read index.
    ReadIndex(u64),
}

/// The shared handle of one member; cheap to clone.
#[derive(Clone)]
pub struct MemberHandle {
    /// This member's id.
    pub id: u64,
    /// The Raft instance.
    pub raft: Raft<FlameTypeConfig>,
    /// The applied state of this member.
    pub reader: StateReader,
    /// The write path.
    pub proposer: Proposer,
    /// The peer transport (for forwarding).
    pub network: Network,
    /// Request limits and defaults.
    pub limits: Arc<crate::member::Limits>,
}

impl MemberHandle {
    /// The current leader's id and description, waiting up to `wait` for one to exist.
    pub async fn leader(&self, wait: Duration) -> Result<(u64, Member), FlameError> {
        let deadline = Instant::now() + wait;
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(id) = m.current_leader
                    && let Some(node) = m.membership_config.membership().get_node(&id)
                {
                    return Ok((id, node.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(FlameError::Unavailable("the member stopped".into())),
                Err(_) => {
                    return Err(FlameError::Unavailable(format!(
                        "no leader elected within {wait:?}; is a majority of members up?"
                    )));
                }
            }
        }
    }

    /// The leader hint for errors, if a leader is known.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some(LeaderHint {
            id,
            addr: node.api_addr.clone(),
        })
    }

    /// Replicates `command` through the leader and returns its response.
    pub async fn write(&self, command: Command) -> Result<Response, FlameError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let (leader, node) = self.leader(LEADER_WAIT).await?;
            let result = if leader == self.id {
                self.proposer.propose(command.clone()).await
            } else {
                match self
                    .forward(
                        leader,
                        &node,
                        ForwardRequest::Propose(Box::new(command.clone())),
                    )
                    .await
                {
                    Ok(ForwardReply::Response(r)) => Ok(*r),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                }
            };
            match result {
                // The leader we tried never saw the command: safe to try the new one.
                Err(FlameError::NotLeader { .. }) if Instant::now() < deadline => {
                    self.await_leader_change(leader, deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Waits (until `deadline`) for the leader to be someone other than `stale`.
    async fn await_leader_change(&self, stale: u64, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        while metrics.borrow_and_update().current_leader == Some(stale) {
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Sends `request` to the leader over the peer channel.
    async fn forward(
        &self,
        leader: u64,
        node: &Member,
        request: ForwardRequest,
    ) -> Result<ForwardReply, FlameError> {
        let bytes = postcard::to_stdvec(&request)
            .map_err(|e| FlameError::Internal(format!("cannot encode a forward: {e}")))?;
        let reply = self
            .network
            .forward(leader, node, bytes, FORWARD_TIMEOUT)
            .await
            .map_err(|status| forward_failure(leader, status))?;
        postcard::from_bytes(&reply)
            .map_err(|e| FlameError::Internal(format!("cannot decode the leader's reply: {e}")))
    }

    /// Serves a request forwarded by a follower (this member should be the leader).
    pub async fn serve_forward(&self, request: ForwardRequest) -> Result<ForwardReply, FlameError> {
        match request {
            ForwardRequest::Propose(command) => self
                .proposer
                .propose(*command)
                .await
                .map(|r| ForwardReply::Response(Box::new(r))),
            ForwardRequest::ReadIndex => {
                self.confirm_leadership().await.map(ForwardReply::ReadIndex)
            }
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the read index, once applied.
    async fn confirm_leadership(&self) -> Result<u64, FlameError> {
        match self.raft.ensure_linearizable().await {
            Ok(read) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(FlameError::NotLeader {
                    leader: self.leader_hint(),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => Err(
                FlameError::Unavailable(format!("no quorum confirms the leader: {e}")),
            ),
            Err(RaftError::Fatal(e)) => {
                Err(FlameError::Unavailable(format!("the member stopped: {e}")))
            }
        }
    }

    /// A linearizable view: every write acknowledged before this call is visible in it.
    ///
    /// The leader confirms a read index with one heartbeat round whose per-peer deadline is
    /// short (tuned for fast failover); on a loaded machine one slow round fails with
    /// `Unavailable` although the group is healthy. A read changes nothing, so a quick failure
    /// is retried (at most [`READ_ATTEMPTS`] times within [`READ_RETRY_WINDOW`]); each attempt
    /// is a fresh confirmation round, so no pause is needed between them.
    pub async fn read(&self) -> Result<Arc<StateView>, FlameError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match self.read_once().await {
                Err(FlameError::Unavailable(reason))
                    if attempt < READ_ATTEMPTS && started.elapsed() < READ_RETRY_WINDOW =>
                {
                    tracing::debug!(attempt, %reason, "read barrier failed; trying again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn read_once(&self) -> Result<Arc<StateView>, FlameError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let (leader, node) = self.leader(LEADER_WAIT).await?;
            let index = if leader == self.id {
                self.confirm_leadership().await
            } else {
                match self.forward(leader, &node, ForwardRequest::ReadIndex).await {
                    Ok(ForwardReply::ReadIndex(i)) => Ok(i),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                }
            };
            match index {
                Ok(index) => {
                    self.wait_applied(index, deadline).await?;
                    return Ok(self.reader.current());
                }
                Err(FlameError::NotLeader { .. }) if Instant::now() < deadline => {
                    self.await_leader_change(leader, deadline).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until this member has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), FlameError> {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics
                .borrow_and_update()
                .last_applied
                .map_or(0, |l| l.index)
                >= index
            {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(FlameError::Unavailable(format!(
                        "this member did not catch up to index {index} in time"
                    )));
                }
            }
        }
    }

    /// This member's own applied state (no read barrier).
    pub fn local(&self) -> Arc<StateView> {
        self.reader.current()
    }
}

/// A failed forward as the client should see it. The leader's own answer (it carries Flame's
/// error kind) stands. A failure of the call itself (the leader died, the connection broke or
/// the forward timed out) leaves the write's fate unknown: it becomes UNAVAILABLE, which says
/// "retry", and is safe to retry only with a request id, which the SDK always sends.
fn forward_failure(leader: u64, status: tonic::Status) -> FlameError {
    if flame_proto::error::is_flame_answer(&status) {
        return FlameError::from(status);
    }
    FlameError::Unavailable(format!(
        "the write forwarded to leader {leader} got no answer, so it may or may not have been \
         applied: {}",
        status.message()
    ))
}

fn unexpected(reply: &ForwardReply) -> FlameError {
    FlameError::Internal(format!("the leader answered with an unexpected {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_that_got_no_answer_is_unavailable_and_the_leaders_own_answer_stands() {
        for lost in [
            tonic::Status::cancelled("operation was canceled"),
            tonic::Status::deadline_exceeded("forward to member 1 timed out after 10s"),
            tonic::Status::unknown("transport error"),
        ] {
            let error = forward_failure(1, lost.clone());
            assert!(
                matches!(&error, FlameError::Unavailable(m) if m.contains("may or may not")),
                "{lost:?} became {error:?}"
            );
        }
        let answer = tonic::Status::from(FlameError::NotFound("session s not found".into()));
        assert_eq!(
            forward_failure(1, answer),
            FlameError::NotFound("session s not found".into())
        );
        let moved = tonic::Status::from(FlameError::NotLeader { leader: None });
        assert!(matches!(
            forward_failure(1, moved),
            FlameError::NotLeader { .. }
        ));
    }
}
