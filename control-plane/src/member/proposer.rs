//! The write path on the leader: group commit.
//!
//! Every write a member accepts (its own clients' and those forwarded by followers) goes through
//! one [`Proposer`]. It queues commands, and whenever a proposal slot is free it takes everything
//! queued so far and proposes it as **one** Raft entry ([`Proposal`]) dated by the leader's
//! clock. While proposals are in flight, new commands pile up, so a burst of N writes
//! becomes a few entries; each caller still gets its own [`Response`].
//!
//! Caveats:
//! - The proposer runs on every member, but only the leader's `client_write` succeeds; on a
//!   follower every caller gets `NotLeader` with the leader's hint.
//! - If leadership is lost while a proposal is in flight, its outcome is unknown to the caller
//!   (it may still commit under the new leader); callers see `Unavailable` and must not assume
//!   either way. Task creation is made idempotent by client request ids for this reason.

use crate::metrics::Metrics;
use crate::state::{Command, FlameTypeConfig, Member, Proposal, Response, StateConfig};
use flame_proto::error::{FlameError, LeaderHint};
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How the proposer batches.
#[derive(Debug, Clone, Copy)]
pub struct ProposerLimits {
    /// Most commands in one entry.
    pub max_batch: usize,
    /// Most entries proposed and not yet committed at once.
    pub max_in_flight: usize,
    /// Payload bytes above which no further command joins an entry (one command alone may be
    /// larger, up to the client API's own limit), so every entry fits a Raft message.
    pub max_batch_bytes: usize,
}

impl Default for ProposerLimits {
    fn default() -> Self {
        ProposerLimits {
            max_batch: 1024,
            max_in_flight: 8,
            max_batch_bytes: 8 << 20,
        }
    }
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Response, FlameError>>,
}

/// Handle to the group-commit proposer; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

/// The leader's wall clock in Unix milliseconds; the only clock read on the write path.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Proposer {
    /// Starts the proposer task for `raft`; every entry it proposes carries `policy` (this
    /// member's configured retry limits, which every member applies the entry under).
    pub fn spawn(
        raft: Raft<FlameTypeConfig>,
        limits: ProposerLimits,
        policy: StateConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tokio::spawn(run(raft, rx, limits, policy, metrics));
        Proposer { tx }
    }

    /// Proposes `command` (its entry is dated by the proposer) and waits for its response.
    pub async fn propose(&self, command: Command) -> Result<Response, FlameError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { command, reply })
            .await
            .map_err(|_| FlameError::Unavailable("the member is shutting down".into()))?;
        rx.await
            .map_err(|_| FlameError::Unavailable("the member is shutting down".into()))?
    }
}

async fn run(
    raft: Raft<FlameTypeConfig>,
    mut rx: mpsc::Receiver<Pending>,
    limits: ProposerLimits,
    policy: StateConfig,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: whatever queues meanwhile joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.command.payload_bytes();
        let mut batch = vec![first];
        while batch.len() < limits.max_batch && bytes < limits.max_batch_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.command.payload_bytes();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let proposal = Proposal {
            now_ms: now_ms(),
            policy,
            commands,
        };
        metrics.proposals.inc();
        metrics.batch_size.observe(proposal.commands.len() as f64);
        let raft = raft.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = raft.client_write(proposal).await;
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            drop(permit);
            deliver(result.map(|r| r.data), replies);
        });
    }
}

type WriteResult = Result<Vec<Response>, RaftError<u64, ClientWriteError<u64, Member>>>;

fn deliver(result: WriteResult, replies: Vec<oneshot::Sender<Result<Response, FlameError>>>) {
    match result {
        Ok(responses) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(response));
            }
        }
        Ok(responses) => {
            let err = FlameError::Internal(format!(
                "the state machine answered {} commands with {} responses",
                replies.len(),
                responses.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
        Err(e) => {
            let err = write_error(e);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Maps openraft's write errors to what a client can act on.
pub fn write_error(e: RaftError<u64, ClientWriteError<u64, Member>>) -> FlameError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => FlameError::NotLeader {
            leader: f.leader_id.zip(f.leader_node).map(|(id, node)| LeaderHint {
                id,
                addr: node.api_addr,
            }),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            FlameError::InvalidState(e.to_string())
        }
        RaftError::Fatal(e) => FlameError::Unavailable(format!("the member stopped: {e}")),
    }
}
