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
//!
//! This module changes sessions only; what a session's change does to its tasks, executors and
//! the object-drop log (the knock-on effects in the table) is in the rules layer
//! (`state::rules`).

use super::command::BindResult;
use super::model::{SessionEntry, session_not_found};
use super::queue;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::SessionId;
use flame_proto::model::{
    Event, Executor, Session, SessionSpec, SessionState, TaskCounters, validate_session_id,
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

/// The session `id` as it is now.
pub(crate) fn current(tx: &Tx<'_>, id: &str) -> Result<Session, FlameError> {
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
    let limit = tx.config.max_open_sessions;
    let open = tx
        .state
        .sessions
        .values()
        .filter(|s| s.session.state == SessionState::Open)
        .count();
    if open >= limit as usize {
        return Err(FlameError::Exhausted(format!(
            "the cluster holds its limit of {limit} open sessions \
             (cluster.limits.max_open_sessions); close some first"
        )));
    }
    let session = Session {
        id: id.clone().into(),
        spec,
        state: SessionState::Open,
        creation_time_ms: tx.now_ms,
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
) -> Result<Session, FlameError> {
    let Some(entry) = tx.state.session_entry(&id) else {
        return match spec {
            Some(spec) => create(tx, id, spec),
            None => Err(session_not_found(&id)),
        };
    };
    session_transition(&id, entry.session.state, SessionEvent::Open)?;
    if let Some(given) = &spec {
        entry.session.spec.check_matches(&id, given)?;
    }
    Ok(entry.session.clone())
}

/// CloseSession, this session's part: an Open session without Running tasks becomes Closed at
/// the entry's time; a Closed one stays as it is. True when it closed now (the rules layer then
/// cancels its Pending tasks, unbinds its executors and records its object drop).
pub(crate) fn close(tx: &mut Tx<'_>, id: &str) -> Result<bool, FlameError> {
    let running = tx
        .state
        .session(id)
        .ok_or_else(|| session_not_found(id))?
        .counters
        .running;
    if check(tx, id, SessionEvent::Close { running })? != SessionStep::Close {
        return Ok(false);
    }
    let now_ms = tx.now_ms;
    let entry = tx
        .state
        .session_mut(id)
        .ok_or_else(|| session_not_found(id))?;
    entry.session.state = SessionState::Closed;
    entry.session.completion_time_ms = Some(now_ms);
    tx.log.session_closed(id);
    Ok(true)
}

/// DeleteSession, this session's part: the session as it is, if it may be removed (Closed, all
/// its tasks terminal).
pub(crate) fn check_delete(tx: &Tx<'_>, id: &str) -> Result<Session, FlameError> {
    let session = current(tx, id)?;
    let unfinished = u64::from(session.counters.pending) + u64::from(session.counters.running);
    check(tx, id, SessionEvent::Delete { unfinished })?;
    Ok(session)
}

/// Removes session `id` with its tasks, events and request ids. Callers have checked the
/// transition (and unbound its executors).
pub(crate) fn remove(tx: &mut Tx<'_>, id: &str) {
    if let Some(entry) = tx.state.sessions.remove(id) {
        tx.log.session_removed(id, entry.task_count());
    }
}

/// The ids of the sessions of application `name`.
pub(crate) fn of_application(tx: &Tx<'_>, name: &str) -> Vec<SessionId> {
    tx.state
        .sessions()
        .filter(|s| s.spec.application == name)
        .map(|s| s.id.clone())
        .collect()
}

/// BindExecutor, this session's part: the session exists, is Open, and is not paused after
/// `bind_retry_limit` failed binds.
pub(crate) fn check_bindable(tx: &Tx<'_>, id: &str) -> Result<(), FlameError> {
    check(tx, id, SessionEvent::Bind)?;
    let limit = tx.config.bind_retry_limit;
    let session = tx
        .state
        .session_entry(id)
        .ok_or_else(|| session_not_found(id))?;
    if !session.is_schedulable(limit) {
        return Err(FlameError::InvalidState(format!(
            "session {id} is paused after {} failed binds; no new executors are assigned",
            session.bind_failures
        )));
    }
    Ok(())
}

/// Updates the session's bind-failure count and events after `executor`'s bind ended: a
/// success resets the count; a failure records event 1001, and event 1002 when the count
/// reaches `bind_retry_limit`.
pub(crate) fn record_bind(tx: &mut Tx<'_>, id: &str, executor: &Executor, result: BindResult) {
    let (limit, now_ms) = (tx.config.bind_retry_limit, tx.now_ms);
    let Some(session) = tx.state.session_mut(id) else {
        return;
    };
    match result {
        BindResult::Ok if session.bind_failures == 0 => return,
        BindResult::Ok => session.bind_failures = 0,
        BindResult::Failed { code, message } => {
            let node = &executor.spec.node;
            let failed = Event::session_bind_failed(&executor.id, node, code, &message, now_ms);
            session.session.events.push(failed);
            session.bind_failures = session.bind_failures.saturating_add(1);
            if session.bind_failures == limit {
                let paused = Event::session_retry_limit_reached(limit, limit, now_ms);
                session.session.events.push(paused);
            }
        }
    }
    tx.log.session_row_changed(id);
}

/// Folds one measured task duration (0 = not measured) into the session's mean.
pub(crate) fn learn_duration(tx: &mut Tx<'_>, id: &str, duration_us: u64) {
    if duration_us == 0 {
        return;
    }
    if let Some(entry) = tx.state.session_mut(id) {
        queue::learn(entry, duration_us);
        tx.log.session_stats_changed(id);
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
