//! One `Sync` stream on the leader: heartbeats in, assignment snapshots out, reports proposed.
//!
//! Lifecycle (docs/agent-protocol.md, "The `Sync` stream"):
//! 1. [`start`] refuses the call on a member that is not the leader (NotLeader with the hint);
//!    otherwise it answers at once with the response stream and serves it on its own task, so an
//!    agent may send its first heartbeat before or after the response headers arrive.
//! 2. The first message must be a `Heartbeat` naming a registered, not NotReady node (else the
//!    stream ends with `InvalidState`: "register the node first"). It is checked against a
//!    linearizable read, so a new leader serves nothing from a state older than what the old one
//!    committed. The stream then claims the node ([`super::registry`]).
//! 3. Every heartbeat is acknowledged at once (`HeartbeatAck` with the leader's clock);
//!    `Command::Heartbeat` is proposed at most once per heartbeat interval, less a quarter of
//!    slack: an agent heartbeating on schedule, with timer and network jitter, is never skipped
//!    (skipping every other one would double the silence the node timer sees), and a chattier
//!    agent costs at most one write per three quarters of an interval.
//! 4. `Assignments` go out right away and then whenever a published view changes the node's
//!    snapshot: a view is only looked at when its effects touch the node's executors, their
//!    sessions, tasks or applications, or when views were skipped (a revision gap) or the state
//!    was replaced (`Restored`); the snapshot is sent only when it differs from the last one
//!    sent. The revision is the Raft log index the snapshot reflects (never decreasing), which
//!    also orders snapshots across leaders.
//! 5. `Report`s go to the stream's worker ([`super::report`]), which proposes them in order.
//! 6. The stream ends when the agent closes it or goes away (then queued reports are still
//!    proposed and `NodeDisconnected` follows), when a newer stream claims the node, when the
//!    node is NotReady (the agent must register again), when this member stops leading (status
//!    NotLeader with the new leader's hint, so the agent reconnects there) or shuts down.
//!
//! Caveats:
//! - Queues are bounded: a slow agent slows its own stream (its reports wait for the worker,
//!   its snapshots for the agent to read), never the member.
//! - The last snapshot sent is kept for comparison, so a stream holds one copy of its node's
//!   bindings' common data and running tasks' inputs.

use super::registry::{Claim, Streams};
use super::report::{self, Work};
use super::snapshot::{Interest, must_register, snapshot};
use crate::member::handle::MemberHandle;
use crate::member::proposer::now_ms;
use crate::state::{Command, StateView};
use flame_proto::agent::{
    AgentMessage, Assignments, ExecutorAssignment, HeartbeatAck, LeaderMessage, agent_message,
    leader_message,
};
use flame_proto::error::{FlameError, LeaderHint};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

/// Leader messages buffered for a slow agent before the stream waits.
const OUTBOUND_BUFFER: usize = 16;
/// Reports and heartbeats queued for the worker before the stream waits.
const WORK_QUEUE: usize = 256;
/// How long a new stream may take to send its first heartbeat.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ending stream lets its worker propose what was queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ending stream waits to deliver its final status.
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// The fraction of the heartbeat interval that must pass between two recorded heartbeats.
const HEARTBEAT_SLACK: f64 = 0.75;
/// How long a former leader waits to learn the new leader for its NotLeader hint.
const HINT_WAIT: Duration = Duration::from_secs(2);

/// The response stream of `Sync`.
pub type SyncStream = ReceiverStream<Result<LeaderMessage, Status>>;

type Outbound = mpsc::Sender<Result<LeaderMessage, Status>>;

/// What every stream of a member shares.
#[derive(Clone)]
pub struct Context {
    /// The member.
    pub handle: MemberHandle,
    /// Which stream speaks for which node.
    pub streams: Arc<Streams>,
    /// The heartbeat interval agents are told to use.
    pub heartbeat_interval: Duration,
    /// Turns true when the member shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// The term this member leads in, if it is the leader.
pub fn leading_term(handle: &MemberHandle) -> Option<u64> {
    let metrics = handle.raft.metrics();
    let m = metrics.borrow();
    (m.state == ServerState::Leader).then_some(m.current_term)
}

/// `NotLeader` with the hint this member has.
pub fn not_leader(handle: &MemberHandle) -> FlameError {
    FlameError::NotLeader {
        leader: handle.leader_hint(),
    }
}

/// Starts serving a `Sync` call; refuses it with NotLeader on a member that is not the leader.
pub fn start(ctx: Context, inbound: Streaming<AgentMessage>) -> Result<SyncStream, FlameError> {
    let term = leading_term(&ctx.handle).ok_or_else(|| not_leader(&ctx.handle))?;
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    let span = info_span!("agent_stream", term, node = field::Empty);
    tokio::spawn(serve(ctx, term, inbound, tx).instrument(span));
    Ok(ReceiverStream::new(rx))
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    /// The agent closed its side.
    ClientClosed,
    /// The agent's side failed (connection reset, agent killed).
    ClientFailed(Status),
    /// The agent dropped the response stream.
    ClientGone,
    /// A newer stream claimed the node.
    Superseded,
    /// This member no longer leads in the stream's term.
    LostLeadership,
    /// The member is shutting down.
    Shutdown,
    /// The stream must end with this error (protocol violation, node NotReady).
    Refused(FlameError),
}

/// A stream after its first heartbeat.
struct Session {
    ctx: Context,
    term: u64,
    node: String,
    tx: Outbound,
    work: mpsc::Sender<Work>,
    claim: Claim,
    /// The last snapshot sent.
    sent: Option<Vec<ExecutorAssignment>>,
    /// What that snapshot depends on.
    interest: Interest,
    /// The newest view looked at.
    last_revision: u64,
    /// The revision of the last snapshot sent.
    sent_revision: u64,
    /// When a heartbeat was last queued for proposal.
    last_heartbeat: Option<Instant>,
}

async fn serve(ctx: Context, term: u64, mut inbound: Streaming<AgentMessage>, tx: Outbound) {
    let (node, view) = match first_heartbeat(&ctx, &mut inbound, &tx).await {
        Ok(found) => found,
        Err(Some(error)) => {
            debug!(%error, "Sync stream refused");
            let _ = tx.send(Err(Status::from(error))).await;
            return;
        }
        Err(None) => return,
    };
    Span::current().record("node", node.as_str());
    info!("agent stream opened");
    let claim = ctx.streams.claim(&node);
    let (work, work_rx) = mpsc::channel(WORK_QUEUE);
    let worker = tokio::spawn(
        report::run(ctx.handle.clone(), node.clone(), work_rx).instrument(Span::current()),
    );
    let mut session = Session {
        ctx,
        term,
        node,
        tx,
        work,
        claim,
        sent: None,
        interest: Interest::default(),
        last_revision: view.revision,
        sent_revision: 0,
        last_heartbeat: None,
    };
    let started = match session.on_heartbeat().await {
        Ok(()) => session.send_snapshot(&view).await,
        Err(end) => Err(end),
    };
    let end = match started {
        Ok(()) => session.run(inbound).await,
        Err(end) => end,
    };
    session.finish(end, worker).await;
}

/// Reads and checks the first message; `Err(None)` when the agent went away first.
async fn first_heartbeat(
    ctx: &Context,
    inbound: &mut Streaming<AgentMessage>,
    tx: &Outbound,
) -> Result<(String, Arc<StateView>), Option<FlameError>> {
    let first = tokio::select! {
        m = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()) => m,
        _ = tx.closed() => return Err(None),
    };
    let message = match first {
        Err(_) => {
            return Err(Some(FlameError::DeadlineExceeded(format!(
                "no heartbeat within {FIRST_MESSAGE_TIMEOUT:?} of opening the Sync stream"
            ))));
        }
        Ok(Err(status)) => {
            debug!(%status, "agent stream failed before its first message");
            return Err(None);
        }
        Ok(Ok(None)) => return Err(None),
        Ok(Ok(Some(message))) => message,
    };
    let Some(agent_message::Message::Heartbeat(heartbeat)) = message.message else {
        return Err(Some(FlameError::InvalidState(
            "the first message of a Sync stream must be a Heartbeat naming the node; \
             register the node first"
                .into(),
        )));
    };
    let view = ctx.handle.read().await.map_err(Some)?;
    let name = heartbeat.node_name;
    match view.state.node(&name) {
        None => Err(Some(FlameError::InvalidState(format!(
            "node '{name}' is not registered; register the node first"
        )))),
        Some(_) if must_register(&view.state, &name) => Err(Some(FlameError::InvalidState(
            format!("node '{name}' is NotReady; register the node again first"),
        ))),
        Some(_) => Ok((name, view)),
    }
}

impl Session {
    /// Serves the stream until it must end; returns why.
    async fn run(&mut self, mut inbound: Streaming<AgentMessage>) -> End {
        let mut reader = self.ctx.handle.reader.clone();
        let mut metrics = self.ctx.handle.raft.metrics();
        let mut shutdown = self.ctx.shutdown.clone();
        // Bounded by the agent's connection, this member's leadership and its shutdown.
        loop {
            let step = tokio::select! {
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => Err(End::Shutdown),
                _ = &mut self.claim.superseded => Err(End::Superseded),
                changed = metrics.changed() => {
                    let m = metrics.borrow_and_update();
                    let leading = m.state == ServerState::Leader && m.current_term == self.term;
                    if changed.is_ok() && leading { Ok(()) } else { Err(End::LostLeadership) }
                }
                message = inbound.message() => self.on_message(message).await,
                view = reader.changed() => match view {
                    Some(view) => self.on_view(&view).await,
                    None => Err(End::Shutdown),
                },
                _ = self.tx.closed() => Err(End::ClientGone),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn send(&self, message: leader_message::Message) -> Result<(), End> {
        let message = LeaderMessage {
            message: Some(message),
        };
        self.tx.send(Ok(message)).await.map_err(|_| End::ClientGone)
    }

    async fn on_message(
        &mut self,
        message: Result<Option<AgentMessage>, Status>,
    ) -> Result<(), End> {
        let message = match message {
            Err(status) => return Err(End::ClientFailed(status)),
            Ok(None) => return Err(End::ClientClosed),
            Ok(Some(m)) => m.message,
        };
        match message {
            Some(agent_message::Message::Heartbeat(heartbeat)) => {
                if heartbeat.node_name != self.node {
                    return Err(End::Refused(FlameError::InvalidArgument(format!(
                        "this Sync stream belongs to node '{}', not '{}'",
                        self.node, heartbeat.node_name
                    ))));
                }
                self.on_heartbeat().await
            }
            Some(agent_message::Message::Pull(pull)) => {
                debug!(
                    acked_revision = pull.acked_revision,
                    "agent acted on assignments"
                );
                Ok(())
            }
            Some(agent_message::Message::Report(report)) => {
                let dead = || End::Refused(FlameError::Internal("the report worker died".into()));
                self.work
                    .send(Work::Report(report))
                    .await
                    .map_err(|_| dead())
            }
            None => {
                debug!("empty agent message ignored");
                Ok(())
            }
        }
    }

    /// Acknowledges a heartbeat and queues its proposal if one is due.
    async fn on_heartbeat(&mut self) -> Result<(), End> {
        let ack = HeartbeatAck {
            timestamp_ms: now_ms(),
        };
        self.send(leader_message::Message::Ack(ack)).await?;
        let interval = self.ctx.heartbeat_interval.mul_f64(HEARTBEAT_SLACK);
        let due = self
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= interval);
        // A full queue skips this one; the next heartbeat tries again.
        if due && self.work.try_send(Work::Heartbeat).is_ok() {
            self.last_heartbeat = Some(Instant::now());
        }
        Ok(())
    }

    /// Looks at a newly published view; sends a snapshot if the node's desired state changed.
    async fn on_view(&mut self, view: &StateView) -> Result<(), End> {
        if view.revision <= self.last_revision {
            return Ok(());
        }
        let gap = view.revision != self.last_revision.saturating_add(1);
        self.last_revision = view.revision;
        if !gap && !self.interest.touched_by(&view.effects) {
            return Ok(());
        }
        if must_register(&view.state, &self.node) {
            return Err(End::Refused(FlameError::InvalidState(format!(
                "node '{}' is NotReady; register it again",
                self.node
            ))));
        }
        self.send_snapshot(view).await
    }

    /// Sends the node's snapshot in `view` unless it equals the last one sent.
    async fn send_snapshot(&mut self, view: &StateView) -> Result<(), End> {
        let (executors, interest) = snapshot(&view.state, &self.node);
        self.interest = interest;
        if self.sent.as_ref() == Some(&executors) {
            return Ok(());
        }
        let applied = applied_index(&self.ctx.handle);
        let revision = view.applied_index.max(applied).max(self.sent_revision);
        let count = executors.len();
        let assignments = Assignments {
            revision,
            executors: executors.clone(),
        };
        self.send(leader_message::Message::Assignments(assignments))
            .await?;
        debug!(revision, executors = count, "assignments sent");
        self.sent_revision = revision;
        self.sent = Some(executors);
        Ok(())
    }

    /// Ends the stream: tells the agent why, lets the worker finish or stops it, and proposes
    /// `NodeDisconnected` when the agent went away from the current leader.
    async fn finish(self, end: End, worker: JoinHandle<()>) {
        let (status, drain, disconnect) = match end {
            End::ClientClosed | End::ClientGone => (None, true, true),
            End::ClientFailed(status) => {
                debug!(%status, "agent stream failed");
                (None, true, true)
            }
            End::Refused(error) => (Some(Status::from(error)), true, true),
            End::Superseded => {
                let error = FlameError::Unavailable(format!(
                    "a newer Sync stream for node '{}' replaced this one",
                    self.node
                ));
                (Some(Status::from(error)), true, false)
            }
            End::LostLeadership => {
                let error = FlameError::NotLeader {
                    leader: new_leader_hint(&self.ctx.handle).await,
                };
                (Some(Status::from(error)), false, false)
            }
            End::Shutdown => {
                let error = FlameError::Unavailable(
                    "this member is shutting down; reconnect to the leader".into(),
                );
                (Some(Status::from(error)), false, false)
            }
        };
        info!(reason = ?status.as_ref().map(Status::message), "agent stream ended");
        if let Some(status) = status {
            let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, self.tx.send(Err(status))).await;
        }
        drop(self.work);
        if drain {
            if tokio::time::timeout(DRAIN_TIMEOUT, worker).await.is_err() {
                warn!("queued agent reports were not all proposed in time");
            }
        } else {
            worker.abort();
        }
        let leading = leading_term(&self.ctx.handle) == Some(self.term);
        if disconnect && leading && self.claim.is_current() {
            let command = Command::NodeDisconnected {
                node: self.node.clone(),
            };
            match self.ctx.handle.write(command).await {
                Ok(r) => match r.outcome.error() {
                    Some(error) => debug!(%error, "NodeDisconnected refused"),
                    None => info!("node disconnected; it drains until its agent returns"),
                },
                Err(error) => warn!(%error, "could not propose NodeDisconnected"),
            }
        }
    }
}

/// The last log index this member applied (openraft's count, which survives restarts).
fn applied_index(handle: &MemberHandle) -> u64 {
    let metrics = handle.raft.metrics();
    let m = metrics.borrow();
    m.last_applied.map_or(0, |l| l.index)
}

/// The new leader's hint, waiting up to [`HINT_WAIT`] for another member to lead; `None` if
/// none does in time.
async fn new_leader_hint(handle: &MemberHandle) -> Option<LeaderHint> {
    let deadline = Instant::now() + HINT_WAIT;
    let mut metrics = handle.raft.metrics();
    // Bounded by the deadline.
    loop {
        if let Some(hint) = handle.leader_hint().filter(|h| h.id != handle.id) {
            return Some(hint);
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}
