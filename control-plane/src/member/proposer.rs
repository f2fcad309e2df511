//! The write path on the leader: group commit.
//!
//! Every write a member accepts (its own clients' and those forwarded by followers) goes through
//! one [`Proposer`]. It queues commands, and whenever a proposal slot is free it takes everything
//! queued so far and proposes it as **one** Raft entry ([`Proposal`]) dated by the leader's
//! clock. While proposals are in flight, new commands pile up, so a burst of N writes
//! becomes a few entries; each caller still gets its own [`Response`].
//!
//! An entry is bounded by its encoded size, every byte of every command counted
//! ([`Command::encoded_bytes`]), at [`ProposerLimits::max_entry_bytes`] (the transport's message
//! limit less an envelope): an entry that could not be sent in one message would never
//! replicate and would stall every write behind it (review R1). A command that does not fit the
//! current entry waits for the next; a command larger than an entry can be is refused with
//! `TooLarge` before it is proposed.
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
    /// Most encoded bytes in one entry (its commands, every byte counted, plus the entry's own
    /// fields): the transport's `max_message_bytes` less [`ENTRY_ENVELOPE_BYTES`].
    pub max_entry_bytes: usize,
}

/// What a Raft message carries besides one entry's commands: the append request's ids and
/// terms, the entry's log id, time and policy, and their framing.
pub const ENTRY_ENVELOPE_BYTES: usize = 16 << 10;

impl ProposerLimits {
    /// The limits for a transport whose messages may be `max_message_bytes` long.
    pub fn for_messages(max_message_bytes: usize) -> Self {
        ProposerLimits {
            max_entry_bytes: max_message_bytes.saturating_sub(ENTRY_ENVELOPE_BYTES),
            ..ProposerLimits::default()
        }
    }
}

impl Default for ProposerLimits {
    fn default() -> Self {
        ProposerLimits {
            max_batch: 1024,
            max_in_flight: 8,
            max_entry_bytes: crate::raft::DEFAULT_MAX_MESSAGE_BYTES - ENTRY_ENVELOPE_BYTES,
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
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(p) => sized(p),
                None => return,
            },
        };
        // Wait for a free slot first: whatever queues meanwhile joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (batch, next) = take_batch(first, || rx.try_recv().ok().map(sized), &limits);
        carried = next;
        let (commands, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .filter_map(|(p, bytes)| refuse_oversized(p, bytes, &limits))
            .map(|p| (p.command, p.reply))
            .unzip();
        if commands.is_empty() {
            continue;
        }
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

/// Something with its encoded size.
type WithSize<T> = (T, usize);

/// A queued command with its encoded size.
type Queued = WithSize<Pending>;

fn sized(p: Pending) -> Queued {
    let bytes = p.command.encoded_bytes();
    (p, bytes)
}

/// One entry's commands: `first`, then what `next` yields while the entry stays within
/// `limits` (count and encoded bytes); the command that did not fit is returned to start the
/// next entry. `first` is taken even when it alone is over the limit ([`refuse_oversized`]
/// answers it).
fn take_batch<T>(
    first: WithSize<T>,
    mut next: impl FnMut() -> Option<WithSize<T>>,
    limits: &ProposerLimits,
) -> (Vec<WithSize<T>>, Option<WithSize<T>>) {
    let mut bytes = first.1;
    let mut batch = vec![first];
    while batch.len() < limits.max_batch {
        let Some(candidate) = next() else {
            return (batch, None);
        };
        if bytes.saturating_add(candidate.1) > limits.max_entry_bytes {
            return (batch, Some(candidate));
        }
        bytes += candidate.1;
        batch.push(candidate);
    }
    (batch, None)
}

/// `p`, or `None` after answering it `TooLarge` when it alone exceeds an entry.
fn refuse_oversized(p: Pending, bytes: usize, limits: &ProposerLimits) -> Option<Pending> {
    if bytes <= limits.max_entry_bytes {
        return Some(p);
    }
    let _ = p.reply.send(Err(FlameError::TooLarge {
        what: "the write, encoded as a Raft entry,".into(),
        size: bytes,
        limit: limits.max_entry_bytes,
    }));
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewTask;

    /// A CreateTasks of `tasks` empty tasks with 256-byte request ids: mostly ids, which a
    /// payload count would miss.
    fn ids_only(n: usize, tasks: usize) -> Command {
        Command::CreateTasks {
            session_id: format!("s{n}"),
            tasks: (0..tasks)
                .map(|t| NewTask {
                    input: None,
                    request_id: Some(format!("{n:08}-{t:08}-{}", "r".repeat(238))),
                })
                .collect(),
            dispatch: None,
        }
    }

    /// Splits `queue` into entries the way the proposer does.
    fn entries(queue: Vec<Command>, limits: &ProposerLimits) -> Vec<Vec<(Command, usize)>> {
        let mut queue = queue
            .into_iter()
            .map(|c| {
                let bytes = c.encoded_bytes();
                (c, bytes)
            })
            .collect::<std::collections::VecDeque<_>>();
        let mut out = Vec::new();
        let mut carried = None;
        while let Some(first) = carried.take().or_else(|| queue.pop_front()) {
            let (batch, next) = take_batch(first, || queue.pop_front(), limits);
            carried = next;
            out.push(batch);
        }
        out
    }

    #[test]
    fn every_entry_of_id_heavy_task_batches_encodes_within_the_limit() {
        let limits = ProposerLimits {
            max_entry_bytes: 1 << 20,
            ..ProposerLimits::default()
        };
        let queue: Vec<Command> = (0..64).map(|n| ids_only(n, 1_000)).collect();
        let entries = entries(queue.clone(), &limits);
        for entry in &entries {
            let commands: Vec<Command> = entry.iter().map(|(c, _)| c.clone()).collect();
            let encoded = crate::state::encoded_len(&commands);
            assert!(encoded <= limits.max_entry_bytes, "{encoded} bytes");
            assert_eq!(
                encoded,
                entry.iter().map(|(_, b)| b).sum::<usize>() + 1,
                "sizes add up"
            );
        }
        let order: Vec<Command> = entries.into_iter().flatten().map(|(c, _)| c).collect();
        assert_eq!(order, queue, "every command once, in order");
    }

    #[test]
    fn a_command_over_the_limit_is_taken_alone_and_refused_too_large() {
        let limits = ProposerLimits {
            max_entry_bytes: 64 << 10,
            ..ProposerLimits::default()
        };
        let queue = vec![ids_only(0, 10), ids_only(1, 1_000), ids_only(2, 10)];
        let entries = entries(queue, &limits);
        assert_eq!(
            entries.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        let (reply, mut answer) = oneshot::channel();
        let big = ids_only(1, 1_000);
        let bytes = big.encoded_bytes();
        let pending = Pending {
            command: big,
            reply,
        };
        assert!(refuse_oversized(pending, bytes, &limits).is_none());
        match answer.try_recv() {
            Ok(Err(FlameError::TooLarge { size, limit, .. })) => {
                assert_eq!((size, limit), (bytes, limits.max_entry_bytes));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
