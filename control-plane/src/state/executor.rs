//! The executor lifecycle, control-plane side (spec section 9.2, adapted to Flame's
//! level-triggered agent protocol): the scheduler creates, binds, unbinds and releases executors;
//! the agent reports what happened.
//!
//! [`executor_transition`] decides every event:
//!
//! | State | Event (command) | Result |
//! |---|---|---|
//! | (new) | CreateExecutor, on a Ready node | Void |
//! | Void, Idle | Register (RegisterExecutor: the agent holds the slot) | Idle |
//! | Void, Idle | Bind (BindExecutor), session Open and not paused | Binding |
//! | Binding | BindSucceeded (BindCompleted ok) | Bound; the session's failure count resets |
//! | Binding | BindFailed (BindCompleted failure) | Unbinding; session event 1001, count + 1, event 1002 at the limit |
//! | Binding, Bound | Unbind (UnbindExecutor) | Unbinding |
//! | Bound | Yield (YieldExecutor) | Bound, yielding: no new task; the scheduler unbinds it once it holds none |
//! | Binding, Bound, Unbinding | SessionClosed (CloseSession, session removal) | Unbinding |
//! | Binding, Unbinding | UnbindCompleted | Idle, session cleared; tasks still held are requeued (head) or given back (queued) |
//! | Void, Idle | Release (ReleaseExecutor) | Releasing |
//! | any | Released (ExecutorReleased, node NotReady) | deleted; tasks still held are requeued (head) or given back (queued) |
//! | Bound | StartTask (AssignTasks, refill) | Bound, appends the task to those it holds |
//! | Bound, Unbinding | FinishTask (CompleteTasks) | unchanged, forgets that task |
//! | anything else | | `InvalidState`: `Executor is <State>: cannot ...` |
//!
//! Leaving Bound clears the yielding mark, so a rebound executor starts unmarked.
//!
//! Rules outside the table: an unknown executor is `NotFound` (`executor <id> not found`); a
//! duplicate id is `AlreadyExists`; a BindCompleted for another session than the executor's is
//! stale (`InvalidState`). A session is paused (gets no new executors) while its bind failures
//! are at or above `bind_retry_limit`; a successful bind resets the count (the specification's
//! recommended improvement), and the count is replicated, so it survives failover.
//!
//! Caveat: resource matching (exact resreq, shim, node capacity) is the scheduler's policy and
//! is not re-checked here.

use super::BindResult;
use super::command::TaskRef;
use super::model::{ExecutorEntry, session_not_found};
use super::session::{self, SessionEvent};
use super::task;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::{
    Event, Executor, ExecutorSpec, ExecutorState, NodeState, ResourceRequirement, Shim,
};
use std::sync::Arc;

/// Something that happens to an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorEvent {
    /// The agent holds the slot.
    Register,
    /// The scheduler binds the executor to a session.
    Bind,
    /// The agent bound the session.
    BindSucceeded,
    /// The agent failed to bind the session.
    BindFailed,
    /// The scheduler unbinds the executor.
    Unbind,
    /// The scheduler asks the executor to give its session up after its current task.
    Yield,
    /// The executor's session closed or went away.
    SessionClosed,
    /// The agent left the session.
    UnbindCompleted,
    /// The scheduler releases the executor.
    Release,
    /// The agent gave the slot back, or the node was lost.
    Released,
    /// A task is assigned to the executor.
    StartTask,
    /// The executor's task finished.
    FinishTask,
}

impl ExecutorEvent {
    fn verb(self) -> &'static str {
        use ExecutorEvent as E;
        match self {
            E::Register => "register",
            E::Bind => "bind",
            E::BindSucceeded | E::BindFailed => "complete the bind of",
            E::Unbind | E::SessionClosed => "unbind",
            E::Yield => "rotate",
            E::UnbindCompleted => "complete the unbind of",
            E::Release => "release",
            E::Released => "drop",
            E::StartTask => "assign a task to",
            E::FinishTask => "complete a task on",
        }
    }
}

/// The executor transition function; see the table in the module docs.
pub fn executor_transition(
    id: &str,
    state: ExecutorState,
    event: ExecutorEvent,
) -> Result<ExecutorState, FlameError> {
    use ExecutorEvent as E;
    use ExecutorState as S;
    match (state, event) {
        (S::Void | S::Idle, E::Register) => Ok(S::Idle),
        (S::Void | S::Idle, E::Bind) => Ok(S::Binding),
        (S::Binding, E::BindSucceeded) => Ok(S::Bound),
        (S::Binding, E::BindFailed) => Ok(S::Unbinding),
        (S::Binding | S::Bound, E::Unbind) => Ok(S::Unbinding),
        (S::Bound, E::Yield) => Ok(S::Bound),
        (S::Binding | S::Bound | S::Unbinding, E::SessionClosed) => Ok(S::Unbinding),
        (S::Binding | S::Unbinding, E::UnbindCompleted) => Ok(S::Idle),
        (S::Void | S::Idle, E::Release) => Ok(S::Releasing),
        (_, E::Released) => Ok(S::Released),
        (S::Bound, E::StartTask) => Ok(S::Bound),
        (S::Bound | S::Unbinding, E::FinishTask) => Ok(state),
        (state, event) => Err(FlameError::InvalidState(format!(
            "Executor is {state:?}: cannot {} executor {id}",
            event.verb()
        ))),
    }
}

/// `NotFound("executor <id> not found")`.
pub(crate) fn executor_not_found(id: &str) -> FlameError {
    FlameError::NotFound(format!("executor {id} not found"))
}

fn entry<'t>(tx: &'t Tx<'_>, id: &str) -> Result<&'t ExecutorEntry, FlameError> {
    tx.state
        .executor_entry(id)
        .ok_or_else(|| executor_not_found(id))
}

/// Runs `event` for executor `id`, then lets `update` adjust the entry; returns the executor.
fn step(
    tx: &mut Tx<'_>,
    id: &str,
    event: ExecutorEvent,
    update: impl FnOnce(&mut ExecutorEntry),
) -> Result<Executor, FlameError> {
    let to = executor_transition(id, entry(tx, id)?.executor.state, event)?;
    let entry = tx
        .state
        .executor_mut(id)
        .ok_or_else(|| executor_not_found(id))?;
    let before = entry.clone();
    entry.executor.state = to;
    entry.yielding &= to == ExecutorState::Bound;
    update(entry);
    let executor = entry.executor.clone();
    if *entry != before {
        tx.log.executor_changed(id, &executor.spec.node);
    }
    Ok(executor)
}

/// CreateExecutor: a Void executor on a Ready node.
pub(crate) fn create(
    tx: &mut Tx<'_>,
    id: String,
    node: String,
    resreq: ResourceRequirement,
    shim: Shim,
    now_ms: i64,
) -> Result<Executor, FlameError> {
    if id.is_empty() {
        return Err(FlameError::InvalidArgument(
            "executor id must not be empty".into(),
        ));
    }
    if tx.state.executor_entry(&id).is_some() {
        return Err(FlameError::AlreadyExists(format!(
            "executor {id} already exists"
        )));
    }
    let host = tx
        .state
        .node(&node)
        .ok_or_else(|| FlameError::NotFound(format!("node {node} not found")))?;
    if host.state != NodeState::Ready {
        return Err(FlameError::InvalidState(format!(
            "node {node} is {:?}; executors are placed only on Ready nodes",
            host.state
        )));
    }
    let executor = Executor {
        id: id.clone(),
        spec: ExecutorSpec { node, resreq, shim },
        state: ExecutorState::Void,
        session_id: None,
    };
    tx.log.executor_changed(&id, &executor.spec.node);
    let entry = ExecutorEntry {
        executor: executor.clone(),
        tasks: Vec::new(),
        creation_time_ms: now_ms,
        yielding: false,
    };
    tx.state.executors.insert(id, Arc::new(entry));
    Ok(executor)
}

/// RegisterExecutor: Void → Idle.
pub(crate) fn register(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Register, |_| {})
}

/// BindExecutor: binds an executor to an Open, unpaused session.
pub(crate) fn bind(tx: &mut Tx<'_>, id: &str, session_id: &str) -> Result<Executor, FlameError> {
    entry(tx, id)?;
    session::check(tx, session_id, SessionEvent::Bind)?;
    let limit = tx.config.bind_retry_limit;
    let session = tx
        .state
        .session_entry(session_id)
        .ok_or_else(|| session_not_found(session_id))?;
    if !session.is_schedulable(limit) {
        return Err(FlameError::InvalidState(format!(
            "session {session_id} is paused after {} failed binds; no new executors are assigned",
            session.bind_failures
        )));
    }
    step(tx, id, ExecutorEvent::Bind, |e| {
        e.executor.session_id = Some(session_id.to_owned());
    })
}

/// BindCompleted: Bound on success; Unbinding with session events 1001/1002 on failure.
pub(crate) fn bind_completed(
    tx: &mut Tx<'_>,
    id: &str,
    session_id: &str,
    result: BindResult,
    now_ms: i64,
) -> Result<Executor, FlameError> {
    if entry(tx, id)?.executor.session_id.as_deref() != Some(session_id) {
        return Err(FlameError::InvalidState(format!(
            "stale bind report: executor {id} is not binding session {session_id}"
        )));
    }
    let event = match result {
        BindResult::Ok => ExecutorEvent::BindSucceeded,
        BindResult::Failed { .. } => ExecutorEvent::BindFailed,
    };
    let executor = step(tx, id, event, |_| {})?;
    record_bind(tx, &executor, session_id, result, now_ms);
    Ok(executor)
}

/// Updates the session's bind-failure count and events after a bind ended.
fn record_bind(
    tx: &mut Tx<'_>,
    executor: &Executor,
    session_id: &str,
    result: BindResult,
    now_ms: i64,
) {
    let limit = tx.config.bind_retry_limit;
    let Some(session) = tx.state.session_mut(session_id) else {
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
    tx.log.session_row_changed(session_id);
}

/// UnbindExecutor: Binding or Bound → Unbinding.
pub(crate) fn unbind(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Unbind, |_| {})
}

/// YieldExecutor: a Bound executor gets no new task and is unbound at its next task boundary.
pub(crate) fn yield_session(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Yield, |e| e.yielding = true)
}

/// UnbindCompleted: → Idle without a session; tasks still held are requeued.
pub(crate) fn unbind_completed(
    tx: &mut Tx<'_>,
    id: &str,
    now_ms: i64,
) -> Result<Executor, FlameError> {
    let held = entry(tx, id)?.tasks.clone();
    let executor = step(tx, id, ExecutorEvent::UnbindCompleted, |e| {
        e.executor.session_id = None;
    })?;
    let reason = format!("executor {id} left the session");
    requeue_lost(tx, &held, &reason, now_ms);
    Ok(executor)
}

/// ReleaseExecutor: Void or Idle → Releasing.
pub(crate) fn release(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Release, |_| {})
}

/// ExecutorReleased: deletes the executor; tasks it still held are requeued.
pub(crate) fn released(tx: &mut Tx<'_>, id: &str, now_ms: i64) -> Result<Executor, FlameError> {
    let reason = format!("executor {id} was released");
    drop_executor(tx, id, &reason, now_ms)
}

/// Deletes executor `id` (the Released transition) and requeues the task it ran with `reason`.
pub(crate) fn drop_executor(
    tx: &mut Tx<'_>,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<Executor, FlameError> {
    let current = entry(tx, id)?;
    let to = executor_transition(id, current.executor.state, ExecutorEvent::Released)?;
    let held = current.tasks.clone();
    let Some(removed) = tx.state.executors.remove(id) else {
        return Err(executor_not_found(id));
    };
    let mut executor = removed.executor.clone();
    executor.state = to;
    tx.log.executor_removed(id, &executor.spec.node);
    requeue_lost(tx, &held, reason, now_ms);
    Ok(executor)
}

/// Requeues the tasks a lost executor held: the head (which may have started) is charged a
/// retry, the queued rest are given back uncharged. A task no longer Running is left alone.
fn requeue_lost(tx: &mut Tx<'_>, held: &[TaskRef], reason: &str, now_ms: i64) {
    let Some((head, queued)) = held.split_first() else {
        return;
    };
    // An Err means the task already left Running (or its session is gone): nothing to do.
    let _ = task::requeue(tx, head, reason, now_ms);
    for task in queued {
        let _ = task::give_back(tx, task, reason, now_ms);
    }
}

/// The session closed or went away: its Binding and Bound executors start unbinding.
pub(crate) fn session_closed(tx: &mut Tx<'_>, session_id: &str) {
    let bound: Vec<(String, ExecutorState)> = tx
        .state
        .executor_entries()
        .filter(|e| e.executor.session_id.as_deref() == Some(session_id))
        .map(|e| (e.executor.id.clone(), e.executor.state))
        .collect();
    for (id, state) in bound {
        if matches!(state, ExecutorState::Binding | ExecutorState::Bound) {
            let _ = step(tx, &id, ExecutorEvent::SessionClosed, |_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExecutorState as S;

    #[test]
    fn the_happy_path_follows_the_table() {
        let path = [
            (S::Void, ExecutorEvent::Register, S::Idle),
            (S::Idle, ExecutorEvent::Bind, S::Binding),
            (S::Binding, ExecutorEvent::BindSucceeded, S::Bound),
            (S::Bound, ExecutorEvent::Unbind, S::Unbinding),
            (S::Unbinding, ExecutorEvent::UnbindCompleted, S::Idle),
            (S::Idle, ExecutorEvent::Release, S::Releasing),
            (S::Releasing, ExecutorEvent::Released, S::Released),
        ];
        for (from, event, to) in path {
            assert_eq!(
                executor_transition("e", from, event),
                Ok(to),
                "{from:?} {event:?}"
            );
        }
    }

    #[test]
    fn other_calls_say_executor_is_state() {
        let err = executor_transition("e1", S::Idle, ExecutorEvent::StartTask).unwrap_err();
        assert!(matches!(&err, FlameError::InvalidState(m) if m.starts_with("Executor is Idle")));
        assert!(executor_transition("e1", S::Releasing, ExecutorEvent::Bind).is_err());
        assert!(executor_transition("e1", S::Bound, ExecutorEvent::BindSucceeded).is_err());
    }
}
