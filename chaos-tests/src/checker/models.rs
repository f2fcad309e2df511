//! The sequential models of sessions and tasks that the linearizability checker holds a run's
//! reads to, and the per-key histories built from a [`History`].
//!
//! A task is a register the cluster moves along `Pending → Running → {Succeed, Failed,
//! Cancelled}`, with `Running → Pending` when an executor is lost; clients only create it and
//! read it. So a read may see any state reachable from the last one linearized, but never a
//! task that was not created, a task that vanished, or a state out of a terminal one. That is
//! what a stale read shows: a member answering from state older than an acknowledged write or
//! an earlier read.
//!
//! Reads come from `GetTask`, the first message of `WatchTask`, and `ListTask` (a listing is a
//! read of every task it shows, and a `NOT_FOUND` read of every task of that session whose
//! create was invoked before the listing ended and which it does not show).
//!
//! A session is a register `absent → Open → Closed` written by `CreateSession` and
//! `CloseSession` and read by `GetSession`.
//!
//! Refused operations (`Outcome::Failed`) did not happen and are left out; operations whose
//! fate is unknown are indeterminate; reads without an answer constrain nothing and are left out.

use super::linearizability::{Model, Operation, Verdict, check_partitioned};
use crate::history::{Call, History, Op, Outcome, Reply, SessionState, TaskState};
use std::collections::BTreeMap;

/// What a client did to a task or a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Created it.
    Create,
    /// Closed it (sessions only).
    Close,
    /// Read it.
    Read,
}

/// What a client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The write was acknowledged.
    Done,
    /// A task in this state.
    Task(TaskState),
    /// A session in this state.
    Session(SessionState),
    /// Not there.
    NotFound,
}

/// Tasks: created once, then moved by the cluster along their lifecycle; with `purge`
/// (retention on), a terminal task may also vanish with its purged session.
pub struct TaskModel {
    /// Whether terminal tasks may be purged.
    pub purge: bool,
}

impl Model for TaskModel {
    type State = Option<TaskState>;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> Option<TaskState> {
        None
    }

    fn step(
        &self,
        state: &Option<TaskState>,
        input: &Input,
        output: Option<&Output>,
    ) -> Option<Option<TaskState>> {
        match (input, output, state) {
            (Input::Create, _, None) => Some(Some(TaskState::Pending)),
            (Input::Read, Some(Output::NotFound), None) => Some(None),
            (Input::Read, Some(Output::Task(seen)), Some(now)) if reachable(*now, *seen) => {
                Some(Some(*seen))
            }
            (Input::Read, Some(Output::NotFound), Some(now)) if self.purge && now.is_terminal() => {
                Some(None)
            }
            _ => None,
        }
    }
}

/// Whether the cluster can move a task from `from` to `to` (in any number of steps).
fn reachable(from: TaskState, to: TaskState) -> bool {
    from == to || !from.is_terminal()
}

/// Sessions: created, then closed; with `purge` (retention on), a closed session may vanish.
pub struct SessionModel {
    /// Whether closed sessions may be purged.
    pub purge: bool,
}

impl Model for SessionModel {
    type State = Option<SessionState>;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> Option<SessionState> {
        None
    }

    fn step(
        &self,
        state: &Option<SessionState>,
        input: &Input,
        output: Option<&Output>,
    ) -> Option<Option<SessionState>> {
        match (input, output, state) {
            (Input::Create, _, None) => Some(Some(SessionState::Open)),
            (Input::Close, _, Some(SessionState::Open)) => Some(Some(SessionState::Closed)),
            (Input::Read, Some(Output::NotFound), None) => Some(None),
            (Input::Read, Some(Output::Session(seen)), Some(now)) if seen == now => Some(*state),
            (Input::Read, Some(Output::NotFound), Some(SessionState::Closed)) if self.purge => {
                Some(None)
            }
            _ => None,
        }
    }
}

type Keyed = (String, Operation<Input, Output>);

/// The non-linearizable keys of `history` (`task <tag>` or `session <id>`), each with the
/// checker's explanation; `budget` bounds the search per key; `purge` says retention may
/// remove closed sessions and their terminal tasks.
pub fn violations(history: &History, budget: u64, purge: bool) -> Vec<String> {
    let (tasks, sessions) = keyed(history);
    let explain = |kind: &str, (key, verdict): (String, Verdict)| match verdict {
        Verdict::Violation { detail } => format!("{kind} {key}: {detail}"),
        Verdict::Unknown { explored } => {
            format!("{kind} {key}: undecided after {explored} steps")
        }
        Verdict::Linearizable => format!("{kind} {key}: linearizable"),
    };
    let mut found: Vec<String> = check_partitioned(&TaskModel { purge }, tasks, budget)
        .into_iter()
        .map(|v| explain("task", v))
        .collect();
    found.extend(
        check_partitioned(&SessionModel { purge }, sessions, budget)
            .into_iter()
            .map(|v| explain("session", v)),
    );
    found
}

/// Per-key operations: tasks by tag, sessions by id.
fn keyed(history: &History) -> (Vec<Keyed>, Vec<Keyed>) {
    // A session's task tags with the invocation time of their create.
    let mut created: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for op in &history.ops {
        if let (Call::CreateTask { session, tag }, false) =
            (&op.call, matches!(op.outcome, Outcome::Failed(_)))
        {
            created.entry(session).or_default().push((tag, op.invoke));
        }
    }
    let (mut tasks, mut sessions) = (Vec::new(), Vec::new());
    for op in &history.ops {
        if matches!(op.outcome, Outcome::Failed(_)) {
            continue;
        }
        match &op.call {
            Call::CreateSession { session } => {
                sessions.push((session.clone(), write(op, Input::Create)))
            }
            Call::CloseSession { session } => {
                sessions.push((session.clone(), write(op, Input::Close)))
            }
            Call::GetSession { session } => sessions.extend(read(op).map(|r| (session.clone(), r))),
            Call::CreateTask { tag, .. } => tasks.push((tag.clone(), write(op, Input::Create))),
            Call::GetTask { tag, .. } | Call::WatchTask { tag, .. } => {
                tasks.extend(read(op).map(|r| (tag.clone(), r)))
            }
            Call::ListTask { session } => tasks.extend(listing(op, created.get(session.as_str()))),
            Call::RegisterApplication { .. } | Call::UnregisterApplication { .. } => {}
        }
    }
    (tasks, sessions)
}

/// A write: acknowledged at its completion, or indeterminate.
fn write(op: &Op, input: Input) -> Operation<Input, Output> {
    let done = op.is_ok();
    Operation {
        client: op.client,
        invoke: op.invoke,
        complete: done.then_some(op.complete),
        input,
        output: done.then_some(Output::Done),
    }
}

fn read_op(op: &Op, output: Output) -> Operation<Input, Output> {
    Operation {
        client: op.client,
        invoke: op.invoke,
        complete: Some(op.complete),
        input: Input::Read,
        output: Some(output),
    }
}

/// A single-object read with an answer.
fn read(op: &Op) -> Option<Operation<Input, Output>> {
    let output = match &op.outcome {
        Outcome::Ok(Reply::Task(s)) => Output::Task(*s),
        Outcome::Ok(Reply::Session(s)) => Output::Session(*s),
        Outcome::Ok(Reply::NotFound) => Output::NotFound,
        _ => return None,
    };
    Some(read_op(op, output))
}

/// A listing as reads of every task of its session: what it shows, and `NOT_FOUND` for every
/// task created before it ended that it does not show.
fn listing(op: &Op, created: Option<&Vec<(&str, u64)>>) -> Vec<Keyed> {
    let Outcome::Ok(Reply::Tasks(rows)) = &op.outcome else {
        return Vec::new();
    };
    let mut reads: Vec<Keyed> = rows
        .iter()
        .filter(|(_, tag, _)| !tag.is_empty())
        .map(|(_, tag, state)| (tag.clone(), read_op(op, Output::Task(*state))))
        .collect();
    for (tag, invoked) in created.into_iter().flatten() {
        if *invoked < op.complete && !rows.iter().any(|r| r.1 == *tag) {
            reads.push(((*tag).to_owned(), read_op(op, Output::NotFound)));
        }
    }
    reads
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

    fn create(tag: &str) -> Call {
        Call::CreateTask {
            session: "s".into(),
            tag: tag.into(),
        }
    }

    fn get(tag: &str) -> Call {
        Call::GetTask {
            session: "s".into(),
            tag: tag.into(),
            id: "1".into(),
        }
    }

    fn list() -> Call {
        Call::ListTask {
            session: "s".into(),
        }
    }

    fn rows(state: Option<TaskState>) -> Outcome {
        let rows = state.map(|s| ("1".to_owned(), "a".to_owned(), s));
        Outcome::Ok(Reply::Tasks(rows.into_iter().collect()))
    }

    #[test]
    fn reads_that_follow_the_lifecycle_are_linearizable() {
        let history = History::merge([vec![
            op(0, 10, create("a"), Outcome::Ok(Reply::Created("1".into()))),
            op(
                11,
                12,
                get("a"),
                Outcome::Ok(Reply::Task(TaskState::Running)),
            ),
            op(13, 14, list(), rows(Some(TaskState::Pending))),
            op(
                15,
                16,
                get("a"),
                Outcome::Ok(Reply::Task(TaskState::Succeed)),
            ),
        ]]);
        assert!(violations(&history, 10_000, false).is_empty());
    }

    #[test]
    fn a_listing_without_an_acknowledged_task_is_a_stale_read() {
        let history = History::merge([vec![
            op(0, 10, create("a"), Outcome::Ok(Reply::Created("1".into()))),
            op(20, 30, list(), rows(None)),
        ]]);
        let found = violations(&history, 10_000, false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("task a"), "{found:?}");
    }

    #[test]
    fn a_task_read_running_after_it_was_read_succeeded_is_a_stale_read() {
        let history = History::merge([vec![
            op(0, 10, create("a"), Outcome::Ok(Reply::Created("1".into()))),
            op(
                11,
                12,
                get("a"),
                Outcome::Ok(Reply::Task(TaskState::Succeed)),
            ),
            op(
                13,
                14,
                get("a"),
                Outcome::Ok(Reply::Task(TaskState::Running)),
            ),
        ]]);
        assert_eq!(violations(&history, 10_000, false).len(), 1);
    }

    #[test]
    fn a_listing_may_miss_a_task_whose_create_never_answered() {
        let history = History::merge([vec![
            op(0, 10, create("a"), Outcome::Unknown("timeout".into())),
            op(20, 30, list(), rows(None)),
            op(40, 50, list(), rows(Some(TaskState::Succeed))),
        ]]);
        assert!(violations(&history, 10_000, false).is_empty());
    }

    #[test]
    fn a_session_read_open_after_its_close_was_acknowledged_is_a_stale_read() {
        let s = || "s".to_string();
        let history = History::merge([vec![
            op(
                0,
                1,
                Call::CreateSession { session: s() },
                Outcome::Ok(Reply::Done),
            ),
            op(
                2,
                3,
                Call::CloseSession { session: s() },
                Outcome::Ok(Reply::Done),
            ),
            op(
                4,
                5,
                Call::GetSession { session: s() },
                Outcome::Ok(Reply::Session(SessionState::Open)),
            ),
        ]]);
        let found = violations(&history, 10_000, false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("session s"), "{found:?}");
    }

    #[test]
    fn with_retention_a_terminal_task_may_vanish_but_a_running_one_may_not() {
        let ended = |state| {
            History::merge([vec![
                op(0, 10, create("a"), Outcome::Ok(Reply::Created("1".into()))),
                op(11, 12, get("a"), Outcome::Ok(Reply::Task(state))),
                op(13, 14, list(), rows(None)),
            ]])
        };
        assert!(violations(&ended(TaskState::Succeed), 10_000, true).is_empty());
        assert_eq!(
            violations(&ended(TaskState::Succeed), 10_000, false).len(),
            1
        );
        assert_eq!(
            violations(&ended(TaskState::Running), 10_000, true).len(),
            1
        );
    }
}
