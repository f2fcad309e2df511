//! The session lifecycle: CreateSession, OpenSession, CloseSession, DeleteSession and removal
//! (spec sections 5.3 and 6).
//!
//! A session is `Open → Closed` only and never reopens. [`session_transition`] decides every
//! event; the commands below only look objects up and carry out its answer.
//!
//! | State | Event | Result | Error |
//! |---|---|---|---|
//! | Open | Open (OpenSession), AddTasks, Bind | stay Open | |
//! | Closed | Open, Bind | — | `InvalidState`: `session <id> is not open` |
//! | Closed | AddTasks | — | `InvalidState`: `Cannot create task in closed session <id>` |
//! | Open | Close, no Running task | Closed: Pending tasks → Cancelled, executors unbind, object drop `<app>/<id>` | |
//! | Open | Close, a Running task | — | `Internal`: `Cannot close session with running tasks` |
//! | Closed | Close | stay Closed, first `completion_time` kept, no second drop | |
//! | Open | Delete, Remove | — | `InvalidState`: `session <id> is open ...` |
//! | Closed | Delete, a non-terminal task | — | `InvalidState`: `... unfinished tasks` |
//! | Closed | Delete (all tasks terminal), Remove | removed with tasks, events, request ids | |
//!
//! Outside the table: an unknown id is `NotFound` (`session <id> not found`), a duplicate
//! CreateSession is `AlreadyExists`, an unknown application is `NotFound`, and OpenSession with
//! a differing spec is `InvalidState` from `SessionSpec::check_matches` (`spec mismatch`),
//! checked after the `not open` rule. A session may be Open yet paused: after
//! `bind_retry_limit` bind failures it gets no new executors (see the executor module).

use super::model::{SessionEntry, session_not_found};
use super::task::{TaskEvent, task_transition};
use super::tx::Tx;
use super::{cache, executor};
use flame_proto::error::FlameError;
use flame_proto::model::{
    Event, Session, SessionSpec, SessionState, TaskCounters, TaskState, validate_session_id,
};
use std::sync::Arc;

/// Something that happens to an existing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// OpenSession finds the session.
    Open,
    /// CreateTasks.
    AddTasks,
    /// BindExecutor: the session gets an executor.
    Bind,
    /// CloseSession.
    Close {
        /// Tasks of the session that are Running.
        running: u32,
    },
    /// DeleteSession.
    Delete {
        /// Tasks of the session that are Pending or Running.
        unfinished: u64,
    },
    /// Retention (PurgeSessions) or UnregisterApplication.
    Remove,
}

/// What a [`SessionEvent`] does to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStep {
    /// Nothing changes.
    Stay,
    /// Open → Closed.
    Close,
    /// The session goes away with its tasks.
    Remove,
}

/// The session transition function; see the table in the module docs.
pub fn session_transition(
    id: &str,
    state: SessionState,
    event: SessionEvent,
) -> Result<SessionStep, FlameError> {
    use SessionEvent as E;
    use SessionState as S;
    match (state, event) {
        (S::Open, E::Open | E::AddTasks | E::Bind) => Ok(SessionStep::Stay),
        (S::Closed, E::Open | E::Bind) => Err(FlameError::InvalidState(format!(
            "session {id} is not open"
        ))),
        (S::Closed, E::AddTasks) => Err(FlameError::InvalidState(format!(
            "Cannot create task in closed session {id}"
        ))),
        (S::Open, E::Close { running: 0 }) => Ok(SessionStep::Close),
        (S::Open, E::Close { running }) => Err(FlameError::Internal(format!(
            "Cannot close session with running tasks: session {id} has {running} running"
        ))),
        (S::Closed, E::Close { .. }) => Ok(SessionStep::Stay),
        (S::Open, E::Delete { .. } | E::Remove) => Err(FlameError::InvalidState(format!(
            "session {id} is open; close it before deleting it"
        ))),
        (S::Closed, E::Delete { unfinished: 0 } | E::Remove) => Ok(SessionStep::Remove),
        (S::Closed, E::Delete { unfinished }) => Err(FlameError::InvalidState(format!(
            "session {id} has {unfinished} unfinished tasks; only a closed session whose \
             tasks are all terminal can be deleted"
        ))),
    }
}

/// Runs `event` through the transition function for the existing session `id`.
pub(crate) fn check(tx: &Tx<'_>, id: &str, event: SessionEvent) -> Result<SessionStep, FlameError> {
    let entry = tx
        .state
        .session_entry(id)
        .ok_or_else(|| session_not_found(id))?;
    session_transition(id, entry.session.state, event)
}

fn current(tx: &Tx<'_>, id: &str) -> Result<Session, FlameError> {
    tx.state
        .session(id)
        .cloned()
        .ok_or_else(|| session_not_found(id))
}

/// CreateSession: a new Open session with zero counters.
pub(crate) fn create(
    tx: &mut Tx<'_>,
    id: String,
    spec: SessionSpec,
    now_ms: i64,
) -> Result<Session, FlameError> {
    validate_session_id(&id)?;
    if tx.state.application(&spec.application).is_none() {
        return Err(FlameError::NotFound(format!(
            "application {} not found",
            spec.application
        )));
    }
    if tx.state.session_entry(&id).is_some() {
        return Err(FlameError::AlreadyExists(format!(
            "session {id} already exists"
        )));
    }
    let session = Session {
        id: id.clone(),
        spec,
        state: SessionState::Open,
        creation_time_ms: now_ms,
        completion_time_ms: None,
        counters: TaskCounters::default(),
        events: Vec::new(),
    };
    tx.log.session_row_changed(&id);
    tx.state
        .sessions
        .insert(id.clone(), Arc::new(SessionEntry::new(session)));
    current(tx, &id)
}

/// OpenSession: the get-or-create table of spec section 5.3.
pub(crate) fn open(
    tx: &mut Tx<'_>,
    id: String,
    spec: Option<SessionSpec>,
    now_ms: i64,
) -> Result<Session, FlameError> {
    let Some(entry) = tx.state.session_entry(&id) else {
        return match spec {
            Some(spec) => create(tx, id, spec, now_ms),
            None => Err(session_not_found(&id)),
        };
    };
    session_transition(&id, entry.session.state, SessionEvent::Open)?;
    if let Some(given) = &spec {
        entry.session.spec.check_matches(&id, given)?;
    }
    Ok(entry.session.clone())
}

/// CloseSession: cancels Pending tasks and closes; a repeat close changes nothing.
pub(crate) fn close(tx: &mut Tx<'_>, id: &str, now_ms: i64) -> Result<Session, FlameError> {
    let running = tx
        .state
        .session(id)
        .ok_or_else(|| session_not_found(id))?
        .counters
        .running;
    if check(tx, id, SessionEvent::Close { running })? == SessionStep::Close {
        close_open_session(tx, id, now_ms);
    }
    current(tx, id)
}

fn close_open_session(tx: &mut Tx<'_>, id: &str, now_ms: i64) {
    let Some(entry) = tx.state.session_mut(id) else {
        return;
    };
    entry.session.state = SessionState::Closed;
    entry.session.completion_time_ms = Some(now_ms);
    let prefix = cache::session_prefix(&entry.session.spec.application, id);
    let pending: Vec<u64> = entry.pending_ids().collect();
    for task_id in pending {
        let label = format!("{id}/{task_id}");
        let Ok(to) = task_transition(&label, TaskState::Pending, TaskEvent::Cancel) else {
            continue;
        };
        entry.update_task(task_id, |t| {
            t.task.state = to;
            t.task.completion_time_ms = Some(now_ms);
            t.task.events.push(Event::task_cancelled(now_ms));
        });
        tx.log.task_changed(id, task_id);
    }
    tx.log.session_closed(id);
    executor::session_closed(tx, id);
    cache::record_drop(tx, prefix, now_ms);
}

/// DeleteSession: removes a Closed session whose tasks are all terminal; returns it.
pub(crate) fn delete(tx: &mut Tx<'_>, id: &str) -> Result<Session, FlameError> {
    let session = current(tx, id)?;
    let unfinished = u64::from(session.counters.pending) + u64::from(session.counters.running);
    check(tx, id, SessionEvent::Delete { unfinished })?;
    remove(tx, id);
    Ok(session)
}

/// Removes session `id` with its tasks, events and request ids; executors still bound to it
/// start unbinding. Callers have checked the transition.
pub(crate) fn remove(tx: &mut Tx<'_>, id: &str) {
    executor::session_closed(tx, id);
    if let Some(entry) = tx.state.sessions.remove(id) {
        tx.log.session_removed(id, entry.task_count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sessions_refuse_everything_but_close_and_removal() {
        let closed = SessionState::Closed;
        let err = session_transition("s", closed, SessionEvent::Open).unwrap_err();
        assert_eq!(
            err,
            FlameError::InvalidState("session s is not open".into())
        );
        let err = session_transition("s", closed, SessionEvent::AddTasks).unwrap_err();
        assert!(
            err.to_string()
                .contains("Cannot create task in closed session")
        );
        let step = session_transition("s", closed, SessionEvent::Close { running: 0 });
        assert_eq!(step, Ok(SessionStep::Stay));
        let step = session_transition("s", closed, SessionEvent::Remove);
        assert_eq!(step, Ok(SessionStep::Remove));
    }

    #[test]
    fn open_sessions_close_only_without_running_tasks() {
        let open = SessionState::Open;
        let err = session_transition("s", open, SessionEvent::Close { running: 2 }).unwrap_err();
        assert!(matches!(&err, FlameError::Internal(m)
            if m.contains("Cannot close session with running tasks")));
        let step = session_transition("s", open, SessionEvent::Close { running: 0 });
        assert_eq!(step, Ok(SessionStep::Close));
        let err = session_transition("s", open, SessionEvent::Delete { unfinished: 0 });
        assert!(matches!(err, Err(FlameError::InvalidState(_))));
        let err = session_transition(
            "s",
            SessionState::Closed,
            SessionEvent::Delete { unfinished: 1 },
        );
        assert!(matches!(err, Err(FlameError::InvalidState(m)) if m.contains("unfinished")));
    }
}
