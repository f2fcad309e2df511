//! Exactly-once client writes: the replicated table of request ids and what each write answered.
//!
//! What: every client write ([`Command::is_client_write`]) reaches the log wrapped in
//! [`Command::Once`] with a request id, attached by the member that took the call. Applying a
//! `Once` whose id is in the table changes nothing and answers what the first apply answered;
//! otherwise the write is applied and its answer recorded. So the member may send a write again
//! whenever its fate is unknown (the leader died after receiving it, the connection broke, the
//! leader stepped down before committing it) and the client still sees one effect and one answer.
//!
//! Why in the state machine: which attempt came first is only known in log order, and every
//! member must give the same answer to a repeat, including a member that restored the table from
//! a snapshot. The lookup happens before any state check, so a CloseSession or
//! RegisterApplication that is repeated answers as the first attempt did, not with "already
//! closed" or "already exists" (review finding D6).
//!
//! Bounds, decided by leader time only (the `now_ms` of the entry's `Proposal`), never by a
//! local clock:
//! - a record lives [`REQUEST_TTL_MS`] (long enough for a member to hold and re-send a write
//!   across a failover, and for an SDK to retry within its deadline);
//! - at most [`MAX_REQUESTS`] records are kept; the oldest go first;
//! - one apply removes at most [`MAX_EXPIRED_PER_APPLY`] expired records, so a burst of expiry
//!   never makes one entry slow; the table still shrinks faster than it grows.
//!
//! Records are kept small: a recorded answer drops task inputs and outputs and session common
//! data (megabytes each, and already stored with their objects), and is kept postcard-encoded.
//! A repeat decodes it and refills the bulk bytes from the state while the object exists.
//!
//! Caveats:
//! - A repeat after its record expired is applied again. Member-attached ids are only re-sent
//!   within the member's write deadline (seconds), far inside the TTL.
//! - Leader clocks may disagree after a leader change; a record stamped by a fast clock just
//!   lives longer, bounded by [`MAX_REQUESTS`].

use super::command::{Command, Outcome};
use super::tx::Tx;
use bytes::Bytes;
use flame_proto::error::FlameError;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How long a request id is remembered, in leader milliseconds.
pub const REQUEST_TTL_MS: i64 = 120_000;
/// Most request ids remembered at once.
pub const MAX_REQUESTS: usize = 300_000;
/// Most records one apply removes.
pub const MAX_EXPIRED_PER_APPLY: usize = 256;
/// Longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What the table remembers of one applied write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Leader time of the first apply.
    pub time_ms: i64,
    /// Its answer without bulk bytes, postcard-encoded: a record is read only for a repeat,
    /// which is rare, and encoded it takes a fraction of the memory. Empty if it could not be
    /// encoded.
    pub answer: Bytes,
}

impl RequestRecord {
    /// Records `outcome` (already without bulk bytes) at `time_ms`.
    fn new(time_ms: i64, outcome: &Outcome) -> Self {
        // Encoding fails the same way on every member, so an empty answer is deterministic.
        let answer = postcard::to_stdvec(outcome).map_or_else(|_| Bytes::new(), Bytes::from);
        RequestRecord { time_ms, answer }
    }

    /// The recorded answer.
    pub fn outcome(&self) -> Outcome {
        postcard::from_bytes(&self.answer).unwrap_or_else(|e| {
            Outcome::Done(Err(FlameError::Internal(format!(
                "the write was applied, but its answer could not be recorded: {e}"
            ))))
        })
    }
}

/// The request ids applied recently and their answers, with an index by time for expiry. An
/// id's text is allocated once and shared by both maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestTable {
    records: OrdMap<Arc<str>, RequestRecord>,
    by_time: OrdSet<(i64, Arc<str>)>,
}

impl RequestTable {
    /// The record of `id`, if remembered.
    pub fn get(&self, id: &str) -> Option<&RequestRecord> {
        self.records.get(id)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record, by id (persistence and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RequestRecord)> {
        self.records.iter().map(|(id, r)| (id.as_ref(), r))
    }

    /// Remembers `record` under `id` (replacing any record of `id`).
    pub(crate) fn insert(&mut self, id: &str, record: RequestRecord) {
        let id: Arc<str> = Arc::from(id);
        if let Some(old) = self.records.get(&id) {
            self.by_time.remove(&(old.time_ms, id.clone()));
        }
        self.by_time.insert((record.time_ms, id.clone()));
        self.records.insert(id, record);
    }

    /// Removes up to [`MAX_EXPIRED_PER_APPLY`] records older than the TTL at `now_ms`, or beyond
    /// [`MAX_REQUESTS`], oldest first; returns their ids.
    fn expire(&mut self, now_ms: i64) -> Vec<Arc<str>> {
        let cutoff = now_ms.saturating_sub(REQUEST_TTL_MS);
        let mut removed = Vec::new();
        while removed.len() < MAX_EXPIRED_PER_APPLY {
            let Some(oldest) = self.by_time.get_min().cloned() else {
                break;
            };
            if oldest.0 >= cutoff && self.records.len() < MAX_REQUESTS {
                break;
            }
            self.by_time.remove(&oldest);
            self.records.remove(&oldest.1);
            removed.push(oldest.1);
        }
        removed
    }
}

/// Applies `command` with `apply` (the apply path) once per `request_id`; see the module docs.
pub(crate) fn apply_once(
    tx: &mut Tx<'_>,
    request_id: String,
    command: Command,
    apply: fn(&mut Tx<'_>, Command) -> Outcome,
) -> Outcome {
    let now_ms = tx.now_ms;
    for expired in tx.state.requests.expire(now_ms) {
        tx.log.request_changed(&expired);
    }
    if let Some(record) = tx.state.requests.get(&request_id) {
        return replay(tx, record.outcome());
    }
    if let Err(e) = check(&request_id, &command) {
        return Outcome::Done(Err(e));
    }
    let outcome = apply(tx, command);
    let record = RequestRecord::new(now_ms, &slim(outcome.clone()));
    tx.state.requests.insert(&request_id, record);
    tx.log.request_changed(&request_id);
    outcome
}

/// Refuses what no member builds: an empty or oversized id, or a command that is not a client
/// write (internal commands are idempotent and need no record).
fn check(request_id: &str, command: &Command) -> Result<(), FlameError> {
    if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(FlameError::InvalidArgument(format!(
            "a request id must have 1 to {MAX_REQUEST_ID_LEN} bytes, not {}",
            request_id.len()
        )));
    }
    if !command.is_client_write() {
        return Err(FlameError::InvalidArgument(format!(
            "only client writes are deduplicated, not {}",
            command.kind()
        )));
    }
    Ok(())
}

/// The answer without bulk bytes.
fn slim(mut outcome: Outcome) -> Outcome {
    match &mut outcome {
        Outcome::Tasks(Ok(tasks)) => {
            for task in tasks {
                task.input = None;
                task.output = None;
            }
        }
        Outcome::Session(Ok(session)) => session.spec.common_data = None,
        _ => {}
    }
    outcome
}

/// A recorded answer with its bulk bytes refilled from the state where the object still exists
/// (inputs and common data never change, so they are what the first answer carried).
fn replay(tx: &Tx<'_>, mut outcome: Outcome) -> Outcome {
    match &mut outcome {
        Outcome::Tasks(Ok(tasks)) => {
            for task in tasks {
                if let Some(stored) = tx.state.task(&task.session_id, task.id.into())
                    && stored.creation_time_ms == task.creation_time_ms
                {
                    task.input = stored.input.clone();
                }
            }
        }
        Outcome::Session(Ok(session)) => {
            if let Some(stored) = tx.state.session(&session.id)
                && stored.creation_time_ms == session.creation_time_ms
            {
                session.spec.common_data = stored.spec.common_data.clone();
            }
        }
        _ => {}
    }
    outcome
}
