//! [`MemberHandle`]: what every service of a member uses to write and read replicated state.
//!
//! - Writes go to the leader: through this member's [`Proposer`] when it leads, else forwarded
//!   over the peer channel (`flame.raft.v1.Forward`) to the leader's proposer.
//! - A leader change is hidden from the writer: a write that arrives while no leader is known
//!   is held until one is (within [`WRITE_WAIT`] or the caller's deadline); a write that did
//!   not get its answer is held until the leader changes or a short pause passes, then sent
//!   again. Client writes travel as [`Command::Once`] with a request id this member attaches,
//!   so a write whose fate is unknown (the leader died after receiving it, the connection
//!   broke, the leader stepped down before committing) is re-sent too, and the state machine
//!   applies it once and answers the repeat as it answered the first. A client write forwarded
//!   to a leader this member then sees replaced (or lost) is given up on the spot and sent to
//!   the next leader, so a stopped or cut-off leader costs an election, not a forward timeout.
//!   Internal commands are idempotent and are re-sent only when the leader certainly never
//!   received them.
//! - A write is held within the client's deadline (its `grpc-timeout`, see
//!   [`MemberHandle::within`]), else [`WRITE_WAIT`]. One that runs out of time fails with
//!   DEADLINE_EXCEEDED when no attempt can have been applied, and with UNAVAILABLE ("may or
//!   may not") when one may have.
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

/// How long a read waits for a leader to exist before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a write may be held across a leader change (no leader, a leader that refuses or
/// cannot be reached) before it fails with DEADLINE_EXCEEDED. flamepy sets no deadline of its
/// own and never retries, so this covers an election with room to spare.
pub const WRITE_WAIT: Duration = Duration::from_secs(10);
/// Longest pause before sending a write the leader never received to the same leader again;
/// a leader change ends the pause at once.
const RESEND_PAUSE: Duration = Duration::from_millis(500);
/// Most attempts of one linearizable read.
pub const READ_ATTEMPTS: u32 = 5;
/// A failed read attempt is retried only while the read has taken less than this.
pub const READ_RETRY_WINDOW: Duration = Duration::from_secs(2);
/// Deadline of one forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest deadline a forward gets, however little of the call's deadline is left.
const MIN_FORWARD_TIMEOUT: Duration = Duration::from_millis(100);
/// Deadline of one read-index request to the leader: a read confirms in one heartbeat round,
/// so a leader that does not answer in this time is unreachable (this member may be cut off).
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest hold a client's own deadline can ask for.
pub const MAX_WRITE_WAIT: Duration = Duration::from_secs(300);
/// A held write gives up this long before the client's deadline (at most), so the client gets
/// the member's answer, which says what happened, rather than its own timeout.
const ANSWER_MARGIN: Duration = Duration::from_millis(200);

tokio::task_local! {
    /// Until when the call being served may hold its writes; see [`MemberHandle::within`].
    static CALL_DEADLINE: Instant;
}

/// How many answers the `forward-reply-lost` fail point dropped (tests read it to know the
/// fault happened).
pub static LOST_REPLIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
    pub limits: Arc<crate::member::limits::Limits>,
    /// The member's metrics (writes sent again).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Hashes this member's applied state (`Cluster.StateDigest`); taken from the state-machine
    /// store before openraft owned it.
    pub digest: raftlog::DigestHandle,
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

    /// Resolves once this member has known no leader for `limit` without a break: it is cut off
    /// from the majority (or a majority is down), so its applied state may be stale for good.
    /// A normal election takes well under a second.
    pub async fn leaderless_for(&self, limit: Duration) {
        let mut metrics = self.raft.metrics();
        loop {
            // Wait for the leader to be unknown.
            while metrics.borrow_and_update().current_leader.is_some() {
                if metrics.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            // Then for one to be known again, within `limit`.
            let found = tokio::time::timeout(limit, async {
                while metrics.borrow_and_update().current_leader.is_none() {
                    if metrics.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            })
            .await;
            if found.is_err() {
                return;
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

    /// Replicates `command` through the leader and returns its response, holding it across a
    /// leader change until the deadline of the call being served ([`MemberHandle::within`]),
    /// or for up to [`WRITE_WAIT`]; see the module docs.
    pub async fn write(&self, command: Command) -> Result<Response, FlameError> {
        let deadline = CALL_DEADLINE
            .try_with(|d| *d)
            .unwrap_or_else(|_| Instant::now() + WRITE_WAIT);
        self.write_until(command, deadline).await
    }

    /// Runs `call` (an RPC handler) with its writes held for at most `timeout`, the client's
    /// `grpc-timeout`, less a margin to answer in time (at most [`MAX_WRITE_WAIT`]); without
    /// one, writes are held for [`WRITE_WAIT`].
    pub async fn within<F: std::future::Future>(timeout: Option<Duration>, call: F) -> F::Output {
        let hold = timeout.map_or(WRITE_WAIT, |t| {
            t.saturating_sub(ANSWER_MARGIN.min(t / 10))
                .min(MAX_WRITE_WAIT)
        });
        CALL_DEADLINE.scope(Instant::now() + hold, call).await
    }

    /// [`MemberHandle::write`] with the hold bounded by `deadline`.
    ///
    /// A client write is wrapped in [`Command::Once`] with a fresh request id, so every attempt
    /// whose fate is unknown can be sent again: the state machine applies it at most once and
    /// answers a repeat as it answered the first. Other commands are idempotent by design and
    /// are re-sent only when the leader certainly did not receive them.
    pub async fn write_until(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<Response, FlameError> {
        let once = command.is_client_write();
        let command = if once {
            Command::Once {
                request_id: uuid::Uuid::new_v4().to_string(),
                command: Box::new(command),
            }
        } else {
            command
        };
        let mut pause = Duration::from_millis(20);
        // Whether some attempt may have been applied: then running out of time must not claim
        // the write was not applied.
        let mut maybe_applied = false;
        loop {
            let (leader, node) = match self
                .leader(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Ok(found) => found,
                Err(e) if Instant::now() >= deadline => {
                    return Err(out_of_time(e, maybe_applied));
                }
                // The member is stopping: not a leader change.
                Err(e) => return Err(e),
            };
            let (why, reason) = match self.send_write(leader, &node, &command, deadline).await {
                Sent::Answered(result) => return *result,
                Sent::NotReceived(why) => (why, "not_received"),
                // Internal commands repeat harmlessly after a NotLeader, as they always have.
                Sent::Unknown(why) if once || matches!(why, FlameError::NotLeader { .. }) => {
                    maybe_applied = true;
                    (why, "unknown_fate")
                }
                Sent::Unknown(why) => return Err(why),
            };
            if Instant::now() >= deadline {
                return Err(out_of_time(why, maybe_applied));
            }
            tracing::debug!(leader, %why, "a write did not get its answer; sending it again");
            self.metrics.observe_resend(reason);
            let _ = tokio::time::timeout(pause, self.await_leader_change(leader, deadline)).await;
            pause = (pause * 2).min(RESEND_PAUSE);
        }
    }

    /// Sends `command` to `leader` once: proposed here when this member leads, else forwarded.
    ///
    /// NotLeader from a proposer does not prove the write was not appended: a leader that steps
    /// down after appending answers NotLeader, and the next leader may still commit the entry.
    async fn send_write(
        &self,
        leader: u64,
        node: &Member,
        command: &Command,
        deadline: Instant,
    ) -> Sent {
        if leader == self.id {
            return match self.proposer.propose(command.clone()).await {
                Err(e @ FlameError::NotLeader { .. }) => Sent::Unknown(e),
                other => Sent::Answered(Box::new(other)),
            };
        }
        let request = ForwardRequest::Propose(Box::new(command.clone()));
        // Within the call's deadline, but long enough to be sent at all.
        let timeout = FORWARD_TIMEOUT
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(MIN_FORWARD_TIMEOUT);
        let forwarded = if matches!(command, Command::Once { .. }) {
            // A write that may be sent again is not left waiting on a leader that is gone: once
            // this member sees another leader (or none), the attempt's fate is unknown and the
            // write goes to the next leader at once, where its request id keeps it applied once.
            // Waiting out the forward's timeout instead held writes for seconds after a paused
            // or cut-off leader had been replaced.
            tokio::select! {
                forwarded = self.forward(leader, node, request, timeout) => forwarded,
                () = self.await_leader_change(leader, deadline) => Err(Forwarded::Unknown(
                    FlameError::Unavailable(format!(
                        "leader {leader} lost its leadership while a write was forwarded to it"
                    )),
                )),
            }
        } else {
            self.forward(leader, node, request, timeout).await
        };
        // Tests: the leader applied the write, but its answer is lost on the way back.
        fail::fail_point!("forward-reply-lost", forwarded.is_ok(), |_| {
            LOST_REPLIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Sent::Unknown(FlameError::Unavailable(
                "fail point forward-reply-lost dropped the leader's answer".into(),
            ))
        });
        match forwarded {
            Ok(ForwardReply::Response(r)) => Sent::Answered(Box::new(Ok(*r))),
            Ok(other) => Sent::Answered(Box::new(Err(unexpected(&other)))),
            Err(Forwarded::Answered(e @ FlameError::NotLeader { .. })) => Sent::Unknown(e),
            Err(Forwarded::Answered(e)) => Sent::Answered(Box::new(Err(e))),
            Err(Forwarded::NotSent(e)) => Sent::NotReceived(e),
            Err(Forwarded::Unknown(e)) => Sent::Unknown(e),
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
        timeout: Duration,
    ) -> Result<ForwardReply, Forwarded> {
        let bytes = postcard::to_stdvec(&request).map_err(|e| {
            Forwarded::Answered(FlameError::Internal(format!(
                "cannot encode a forward: {e}"
            )))
        })?;
        let reply = self
            .network
            .forward(leader, node, bytes, timeout)
            .await
            .map_err(|status| forward_failure(leader, status))?;
        postcard::from_bytes(&reply).map_err(|e| {
            Forwarded::Answered(FlameError::Internal(format!(
                "cannot decode the leader's reply: {e}"
            )))
        })
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
        // Tests: a broken read that skips the read index and answers from this member's own
        // applied state, however stale; the chaos suite shows its checkers catch it.
        fail::fail_point!("stale-reads", |_| Ok(self.reader.current()));
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
                let request = ForwardRequest::ReadIndex;
                match self
                    .forward(leader, &node, request, READ_INDEX_TIMEOUT)
                    .await
                {
                    Ok(ForwardReply::ReadIndex(i)) => Ok(i),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e.into_error()),
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

/// How one attempt of a write ended.
enum Sent {
    /// The leader decided: the command's response or the leader's refusal (boxed: a response
    /// is large and this enum is returned on every attempt).
    Answered(Box<Result<Response, FlameError>>),
    /// The leader we tried certainly did not receive it (the forward was never sent); another
    /// attempt cannot apply it twice.
    NotReceived(FlameError),
    /// It may have been appended (NotLeader after the leader changed, a broken connection, a
    /// forward that timed out); only a [`Command::Once`] may be sent again.
    Unknown(FlameError),
}

/// How a forward failed.
#[derive(Debug)]
enum Forwarded {
    /// The leader's own answer (it carries Flame's error kind).
    Answered(FlameError),
    /// The request never left this member: no connection to the leader could be made.
    NotSent(FlameError),
    /// The call failed after the request may have been sent (the leader died, the connection
    /// broke, the forward timed out): the write's fate is unknown.
    Unknown(FlameError),
}

impl Forwarded {
    fn into_error(self) -> FlameError {
        match self {
            Forwarded::Answered(e) | Forwarded::NotSent(e) | Forwarded::Unknown(e) => e,
        }
    }
}

/// A failed forward as the client should see it. The leader's own answer stands. A connection
/// that could not be made means the leader never saw the request. Any other failure of the call
/// leaves the write's fate unknown: it becomes UNAVAILABLE, which says "retry", and is safe to
/// retry only with a request id, which the SDK always sends.
fn forward_failure(leader: u64, status: tonic::Status) -> Forwarded {
    if flame_proto::error::is_flame_answer(&status) {
        return Forwarded::Answered(FlameError::from(status));
    }
    if never_connected(&status) {
        return Forwarded::NotSent(FlameError::Unavailable(format!(
            "leader {leader} could not be reached, so the write was not sent: {}",
            status.message()
        )));
    }
    Forwarded::Unknown(FlameError::Unavailable(format!(
        "the write forwarded to leader {leader} got no answer, so it may or may not have been \
         applied: {}",
        status.message()
    )))
}

/// Whether `status` comes from a connection attempt that failed, so no request was written:
/// an I/O error of the kinds `connect` returns, found in the status's source chain.
fn never_connected(status: &tonic::Status) -> bool {
    use std::io::ErrorKind::*;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            );
        }
        source = err.source();
    }
    false
}

/// The error of a write held across a leader change until its deadline: DEADLINE_EXCEEDED
/// when no attempt can have been applied, else UNAVAILABLE saying its fate is unknown.
fn out_of_time(why: FlameError, maybe_applied: bool) -> FlameError {
    if maybe_applied {
        FlameError::Unavailable(format!(
            "the write was held for a leader change until its deadline; an attempt may or may \
             not have been applied: {why}"
        ))
    } else {
        FlameError::DeadlineExceeded(format!(
            "the write was held for a leader change and not applied: {why}"
        ))
    }
}

fn unexpected(reply: &ForwardReply) -> FlameError {
    FlameError::Internal(format!("the leader answered with an unexpected {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_that_got_no_answer_has_an_unknown_fate_and_the_leaders_own_answer_stands() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        for lost in [
            tonic::Status::cancelled("operation was canceled"),
            tonic::Status::deadline_exceeded("forward to member 1 timed out after 10s"),
            tonic::Status::unknown("transport error"),
            tonic::Status::from_error(Box::new(reset)),
        ] {
            let error = forward_failure(1, lost.clone());
            assert!(
                matches!(&error, Forwarded::Unknown(FlameError::Unavailable(m)) if m.contains("may or may not")),
                "{lost:?} became {error:?}"
            );
        }
        let answer = tonic::Status::from(FlameError::NotFound("session s not found".into()));
        assert!(matches!(
            forward_failure(1, answer),
            Forwarded::Answered(FlameError::NotFound(m)) if m == "session s not found"
        ));
        let moved = tonic::Status::from(FlameError::NotLeader { leader: None });
        assert!(matches!(
            forward_failure(1, moved),
            Forwarded::Answered(FlameError::NotLeader { .. })
        ));
    }

    #[tokio::test]
    async fn a_forward_to_a_port_nobody_listens_on_was_never_sent() {
        // A port that was free a moment ago: bind, note it, close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let network = Network::new(2, "test", crate::raft::TransportConfig::default());
        let leader = openraft::BasicNode {
            addr: addr.to_string(),
        };
        let status = network
            .forward(1, &leader, Vec::new(), Duration::from_secs(5))
            .await
            .expect_err("nothing listens there");
        let failure = forward_failure(1, status);
        assert!(
            matches!(&failure, Forwarded::NotSent(FlameError::Unavailable(m)) if m.contains("not sent")),
            "{failure:?}"
        );
    }
}
