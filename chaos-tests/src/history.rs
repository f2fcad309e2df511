//! The recorded history of a chaos run: every client operation with the time it was invoked,
//! the time it completed, and what it returned.
//!
//! Why: "it recovered" is not evidence. The checkers ([`crate::checker`]) judge the history
//! after the faults stop: nothing acknowledged lost, nothing created twice, reads linearizable.
//!
//! Each workload client owns its own `Vec<Op>` and hands it back when it stops, so recording
//! needs no lock; [`History::merge`] joins them. Times are nanoseconds since the run's start
//! on one monotonic clock, so invoke and completion times of different clients compare.
//!
//! Outcomes are three-valued, as a client sees them: [`Outcome::Ok`] (acknowledged),
//! [`Outcome::Failed`] (a definite refusal: the operation did not happen), and
//! [`Outcome::Unknown`] (a timeout or a lost connection: it may or may not have happened, now
//! or later). The checkers treat an unknown write as one that may take effect at any time
//! after its invocation, or never.

use std::time::Instant;

pub use flame_proto::model::TaskState;

/// The task state a v1 `TaskState` number names (the model's states are in wire order).
pub fn task_state_from_v1(state: i32) -> Option<TaskState> {
    usize::try_from(state)
        .ok()
        .and_then(|i| TaskState::ALL.get(i).copied())
}

/// Session states as a client reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Accepting tasks.
    Open,
    /// Closed.
    Closed,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `CreateSession(session)`.
    CreateSession {
        /// The session id the client chose.
        session: String,
    },
    /// `CloseSession(session)`.
    CloseSession {
        /// The session.
        session: String,
    },
    /// `GetSession(session)`.
    GetSession {
        /// The session.
        session: String,
    },
    /// `CreateTask(session)` with an input carrying the unique `tag`.
    CreateTask {
        /// The session.
        session: String,
        /// The tag in the task's input, unique over the run: how a task is found again even
        /// when the create's answer was lost.
        tag: String,
    },
    /// `GetTask(session, id)` of the task created with `tag`.
    GetTask {
        /// The session.
        session: String,
        /// The task's tag.
        tag: String,
        /// The task id the create returned.
        id: String,
    },
    /// `ListTask(session)`.
    ListTask {
        /// The session.
        session: String,
    },
    /// `WatchTask(session, id)`: the first state the stream delivers.
    WatchTask {
        /// The session.
        session: String,
        /// The task's tag.
        tag: String,
        /// The task id.
        id: String,
    },
    /// `RegisterApplication(name)`.
    RegisterApplication {
        /// The application's name.
        name: String,
    },
    /// `UnregisterApplication(name)`.
    UnregisterApplication {
        /// The application's name.
        name: String,
    },
}

impl Call {
    /// Whether the call changes state (a write).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Call::CreateSession { .. }
                | Call::CloseSession { .. }
                | Call::CreateTask { .. }
                | Call::RegisterApplication { .. }
                | Call::UnregisterApplication { .. }
        )
    }
}

/// What an acknowledged call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A write's acknowledgement with nothing to read.
    Done,
    /// `CreateTask`'s new task id.
    Created(String),
    /// The session's state (`GetSession`).
    Session(SessionState),
    /// A task's state (`GetTask`, `WatchTask`).
    Task(TaskState),
    /// Every task of a session as `(id, tag, state)` (`ListTask`).
    Tasks(Vec<(String, String, TaskState)>),
    /// The object does not exist (`NOT_FOUND`).
    NotFound,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged with this reply.
    Ok(Reply),
    /// Refused for certain (it did not happen), with the status message.
    Failed(String),
    /// Timed out or lost: it may have happened, may yet happen, or may never.
    Unknown(String),
}

/// One recorded client operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// The client that made it.
    pub client: u64,
    /// The member it was sent to.
    pub member: u64,
    /// When it was invoked, ns since the run started.
    pub invoke: u64,
    /// When its answer arrived, ns since the run started.
    pub complete: u64,
    /// What was asked.
    pub call: Call,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// Whether the call was acknowledged.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

/// The clock of one run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Every operation of a run, ordered by invocation.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// Joins the clients' own records.
    pub fn merge(parts: impl IntoIterator<Item = Vec<Op>>) -> History {
        let mut ops: Vec<Op> = parts.into_iter().flatten().collect();
        ops.sort_by_key(|o| (o.invoke, o.client));
        History { ops }
    }

    /// Acknowledged operations.
    pub fn acknowledged(&self) -> usize {
        self.ops.iter().filter(|o| o.is_ok()).count()
    }

    /// Operations whose fate is unknown.
    pub fn unknown(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Unknown(_)))
            .count()
    }

    /// The longest time, in ns, between two consecutive acknowledged writes (from the first
    /// invocation to the first acknowledged write, and from the last acknowledged write to the
    /// last completion, count too): how long the cluster took no writes at its worst.
    pub fn longest_write_gap(&self) -> u64 {
        let start = self.ops.iter().map(|o| o.invoke).min().unwrap_or(0);
        let end = self.ops.iter().map(|o| o.complete).max().unwrap_or(start);
        let mut acks: Vec<u64> = self
            .ops
            .iter()
            .filter(|o| o.call.is_write() && o.is_ok())
            .map(|o| o.complete)
            .collect();
        acks.sort_unstable();
        let mut gap = 0;
        let mut last = start;
        for t in acks.into_iter().chain(std::iter::once(end)) {
            gap = gap.max(t.saturating_sub(last));
            last = t;
        }
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(invoke: u64, complete: u64, call: Call, outcome: Outcome) -> Op {
        Op {
            client: 0,
            member: 1,
            invoke,
            complete,
            call,
            outcome,
        }
    }

    fn create(session: &str) -> Call {
        Call::CreateSession {
            session: session.into(),
        }
    }

    #[test]
    fn the_write_gap_spans_from_start_to_first_ack_between_acks_and_to_the_end() {
        let history = History::merge([vec![
            op(0, 10, create("a"), Outcome::Ok(Reply::Done)),
            op(5, 100, create("b"), Outcome::Unknown("timeout".into())),
            op(20, 40, create("c"), Outcome::Ok(Reply::Done)),
            op(
                50,
                60,
                Call::GetSession {
                    session: "a".into(),
                },
                Outcome::Ok(Reply::Session(SessionState::Open)),
            ),
            op(70, 75, create("d"), Outcome::Failed("exists".into())),
        ]]);
        // Acks at 10 and 40; the run ends at 100: the last gap (60) is the longest.
        assert_eq!(history.longest_write_gap(), 60);
        assert_eq!(history.acknowledged(), 3);
        assert_eq!(history.unknown(), 1);
    }
}
