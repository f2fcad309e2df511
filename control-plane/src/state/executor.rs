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
//! This module changes executors only; the session checks, bind-failure counts and requeues
//! that go with some of these events are in the rules layer (`state::rules`).
//!
//! Caveat: resource matching (exact resreq, shim, node capacity) is the scheduler's policy and
//! is not re-checked here.

use super::command::{Assignment, BindResult, TaskRef};
use super::model::ExecutorEntry;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::ExecutorId;
use flame_proto::model::{
    Executor, ExecutorSpec, ExecutorState, NodeState, ResourceRequirement, Shim,
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

/// The entry of executor `id`, or `NotFound`.
pub(crate) fn entry<'t>(tx: &'t Tx<'_>, id: &str) -> Result<&'t ExecutorEntry, FlameError> {
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
        id: id.clone().into(),
        spec: ExecutorSpec {
            node: node.into(),
            resreq,
            shim,
        },
        state: ExecutorState::Void,
        session_id: None,
    };
    tx.log.executor_changed(&id, &executor.spec.node);
    let entry = ExecutorEntry {
        executor: executor.clone(),
        tasks: Vec::new(),
        creation_time_ms: tx.now_ms,
        yielding: false,
    };
    tx.state.executors.insert(id, Arc::new(entry));
    Ok(executor)
}

/// RegisterExecutor: Void → Idle.
pub(crate) fn register(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Register, |_| {})
}

/// BindExecutor, the executor's part: Void or Idle → Binding for `session_id`. The rules
/// layer has checked the session.
pub(crate) fn bind(tx: &mut Tx<'_>, id: &str, session_id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Bind, |e| {
        e.executor.session_id = Some(session_id.to_owned().into());
    })
}

/// BindCompleted, the executor's part: Bound on success, Unbinding on failure. A report for
/// another session than the one the executor binds is stale.
pub(crate) fn bind_completed(
    tx: &mut Tx<'_>,
    id: &str,
    session_id: &str,
    result: &BindResult,
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
    step(tx, id, event, |_| {})
}

/// UnbindExecutor: Binding or Bound → Unbinding.
pub(crate) fn unbind(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Unbind, |_| {})
}

/// YieldExecutor: a Bound executor gets no new task and is unbound at its next task boundary.
pub(crate) fn yield_session(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Yield, |e| e.yielding = true)
}

/// UnbindCompleted, the executor's part: → Idle without a session. Returns it and the tasks it
/// still held, which the rules layer requeues.
pub(crate) fn unbind_completed(
    tx: &mut Tx<'_>,
    id: &str,
) -> Result<(Executor, Vec<TaskRef>), FlameError> {
    let held = entry(tx, id)?.tasks.clone();
    let executor = step(tx, id, ExecutorEvent::UnbindCompleted, |e| {
        e.executor.session_id = None;
    })?;
    Ok((executor, held))
}

/// ReleaseExecutor: Void or Idle → Releasing.
pub(crate) fn release(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    step(tx, id, ExecutorEvent::Release, |_| {})
}

/// The Released transition: deletes executor `id`. Returns it (as Released) and the tasks it
/// still held, which the rules layer requeues.
pub(crate) fn remove(tx: &mut Tx<'_>, id: &str) -> Result<(Executor, Vec<TaskRef>), FlameError> {
    let current = entry(tx, id)?;
    let to = executor_transition(id, current.executor.state, ExecutorEvent::Released)?;
    let Some(removed) = tx.state.executors.remove(id) else {
        return Err(executor_not_found(id));
    };
    let mut executor = removed.executor.clone();
    executor.state = to;
    tx.log.executor_removed(id, &executor.spec.node);
    Ok((executor, removed.tasks.clone()))
}

/// The ids of the executors on node `node`.
pub(crate) fn on_node(tx: &Tx<'_>, node: &str) -> Vec<ExecutorId> {
    tx.state
        .executors()
        .filter(|e| e.spec.node == node)
        .map(|e| e.id.clone())
        .collect()
}

/// The session closed or went away: its Binding and Bound executors start unbinding.
pub(crate) fn session_closed(tx: &mut Tx<'_>, session_id: &str) {
    let bound: Vec<(ExecutorId, ExecutorState)> = tx
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

/// AssignTasks, the executor's part, checked before anything changes: the executor exists, is
/// Bound (StartTask) and is bound to the task's session.
pub(crate) fn check_start(tx: &Tx<'_>, a: &Assignment) -> Result<(), FlameError> {
    let executor = entry(tx, &a.executor_id)?;
    let state = executor.executor.state;
    executor_transition(&a.executor_id, state, ExecutorEvent::StartTask)?;
    if executor.executor.session_id.as_deref() != Some(a.session_id.as_str()) {
        return Err(FlameError::InvalidState(format!(
            "executor {} is not bound to session {}",
            a.executor_id, a.session_id
        )));
    }
    Ok(())
}

/// CompleteTasks, the executor's part, checked before anything changes: executor
/// `executor_id` holds `task` (otherwise the result is stale) and may finish it.
pub(crate) fn check_finish(
    tx: &Tx<'_>,
    executor_id: &str,
    task: &TaskRef,
) -> Result<(), FlameError> {
    let executor = tx
        .state
        .executor_entry(executor_id)
        .filter(|e| e.tasks.contains(task))
        .ok_or_else(|| {
            FlameError::InvalidState(format!(
                "stale result ignored: task {}/{} is not held by executor {executor_id}",
                task.session_id, task.task_id
            ))
        })?;
    let state = executor.executor.state;
    executor_transition(executor_id, state, ExecutorEvent::FinishTask)?;
    Ok(())
}

/// Changes the tasks executor `executor_id` holds with `change` and reports it.
fn change_held(tx: &mut Tx<'_>, executor_id: &str, change: impl FnOnce(&mut Vec<TaskRef>)) {
    if let Some(entry) = tx.state.executor_mut(executor_id) {
        change(&mut entry.tasks);
        let node = entry.executor.spec.node.clone();
        tx.log.executor_changed(executor_id, &node);
    }
}

/// Executor `executor_id` holds `task` behind those it holds already.
pub(crate) fn hold(tx: &mut Tx<'_>, executor_id: &str, task: TaskRef) {
    change_held(tx, executor_id, |tasks| tasks.push(task));
}

/// Executor `executor_id` forgets `task`.
pub(crate) fn forget(tx: &mut Tx<'_>, executor_id: &str, task: &TaskRef) {
    change_held(tx, executor_id, |tasks| tasks.retain(|t| t != task));
}

/// The executor holding `task`, if any, forgets it.
pub(crate) fn forget_task(tx: &mut Tx<'_>, task: &TaskRef) {
    if let Some(executor_id) = tx.state.executor_holding(task) {
        forget(tx, &executor_id, task);
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
