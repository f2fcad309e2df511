//! The task lifecycle: CreateTasks, AssignTasks, CompleteTasks, RequeueTasks (spec sections 5.4
//! and 6); cancellation happens in CloseSession.
//!
//! [`task_transition`] decides every change of a task's state:
//!
//! | State | Event | Result | Event recorded |
//! |---|---|---|---|
//! | (new) | CreateTasks | Pending | code 0 `Task was created with state <Pending>` |
//! | Pending | Assign | Running | code 1 `Task state was updated to <Running>` |
//! | Running | Complete, `return_code == 0` | Succeed, output stored | code 2 |
//! | Running | Complete, `return_code != 0` | Failed | code 3, the message verbatim |
//! | Pending | Cancel (CloseSession) | Cancelled | code 4 (Flame addition) |
//! | Running | Requeue, requeues < `task_retry_limit` | Pending, requeues + 1 | code 0 with the reason |
//! | Running | Requeue, requeues ≥ `task_retry_limit` | Failed | code 3 `task exceeded retry limit (N) after executor loss` |
//! | Running | Return (queued behind the head when its executor was lost) | Pending, requeues unchanged | code 0 with the reason |
//! | anything else | | `InvalidState`: `task <s>/<t> is <State>; cannot <event>` | |
//!
//! Succeed, Failed and Cancelled are terminal; every terminal state sets `completion_time`.
//!
//! Rules outside the table:
//! - Task ids are per-session sequential from 1 (`count + 1`), never reused.
//! - A request id already seen in the session returns the original task instead of a new one
//!   (also within one command), in any session state: ids are resolved before the session's
//!   state is checked, so a retry after CloseSession still gets its task. The same id with
//!   another input is `InvalidArgument` and creates nothing. An empty request id counts as none.
//! - AssignTasks needs a Bound executor of the task's session; the executor appends the task to
//!   the tasks it holds and runs them one at a time, in order (the queue module sizes this).
//! - CompleteTasks accepts a result only from an executor that holds the task (Bound or
//!   Unbinding); any other result is stale: it changes nothing and is reported as
//!   `InvalidState` (`stale result ...`) in its slot of the response. After the results it
//!   refills every executor it heard from (the rules layer's top-up), in the same apply.
//! - A lost executor's head task is requeued (charged); the tasks queued behind it are returned
//!   uncharged, because they never started.
//! - Each item of AssignTasks, CompleteTasks and RequeueTasks succeeds or fails alone.
//!
//! This module changes tasks only; the executor side of each change (the tasks an executor
//! holds), the session checks and the refill are in the rules layer (`state::rules`).

use super::command::{NewTask, TaskRef, TaskResult};
use super::model::{TaskEntry, session_not_found};
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::{Event, Task, TaskId, TaskState};

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// An executor takes the task.
    Assign,
    /// The instance returned.
    Complete {
        /// `return_code == 0`.
        ok: bool,
    },
    /// CloseSession cancels the task.
    Cancel,
    /// The task's executor was lost while it may have been running the task.
    Requeue {
        /// Requeues so far.
        requeues: u32,
        /// `task_retry_limit`.
        limit: u32,
    },
    /// The task's executor was lost before it started the task (it was queued).
    Return,
}

impl TaskEvent {
    fn verb(self) -> &'static str {
        match self {
            TaskEvent::Assign => "assign it",
            TaskEvent::Complete { .. } => "complete it",
            TaskEvent::Cancel => "cancel it",
            TaskEvent::Requeue { .. } | TaskEvent::Return => "requeue it",
        }
    }
}

/// The task transition function; see the table in the module docs. `label` names the task
/// (`<session>/<task>`) in the error.
pub fn task_transition(
    label: &str,
    state: TaskState,
    event: TaskEvent,
) -> Result<TaskState, FlameError> {
    use TaskEvent as E;
    use TaskState as S;
    match (state, event) {
        (S::Pending, E::Assign) => Ok(S::Running),
        (S::Running, E::Complete { ok: true }) => Ok(S::Succeed),
        (S::Running, E::Complete { ok: false }) => Ok(S::Failed),
        (S::Pending, E::Cancel) => Ok(S::Cancelled),
        (S::Running, E::Requeue { requeues, limit }) if requeues < limit => Ok(S::Pending),
        (S::Running, E::Requeue { .. }) => Ok(S::Failed),
        (S::Running, E::Return) => Ok(S::Pending),
        (state, event) => Err(FlameError::InvalidState(format!(
            "task {label} is {state:?}; cannot {}",
            event.verb()
        ))),
    }
}

fn label(session_id: &str, task_id: u64) -> String {
    format!("{session_id}/{task_id}")
}

fn task_not_found(session_id: &str, task_id: u64) -> FlameError {
    FlameError::NotFound(format!("task {task_id} not found in session {session_id}"))
}

/// The current state and requeue count of a task.
fn task_state(tx: &Tx<'_>, session_id: &str, task_id: u64) -> Result<(TaskState, u32), FlameError> {
    let entry = tx
        .state
        .session_entry(session_id)
        .ok_or_else(|| session_not_found(session_id))?;
    let task = entry
        .task(task_id)
        .ok_or_else(|| task_not_found(session_id, task_id))?;
    Ok((task.task.state, task.requeues))
}

/// Changes a task with `change` and reports it; returns the task afterwards.
fn change_task(
    tx: &mut Tx<'_>,
    session_id: &str,
    task_id: u64,
    change: impl FnOnce(&mut TaskEntry),
) -> Result<Task, FlameError> {
    let entry = tx
        .state
        .session_mut(session_id)
        .ok_or_else(|| session_not_found(session_id))?;
    let task = entry
        .update_task(task_id, change)
        .map(|t| t.task.clone())
        .ok_or_else(|| task_not_found(session_id, task_id))?;
    tx.log.task_changed(session_id, task_id);
    Ok(task)
}

/// CreateTasks, the tasks' part: one Pending task per new submission of `plan` (see
/// [`plan_submissions`]), or the original task of a repeated request id. The rules layer has
/// checked that the session accepts tasks when the plan creates any.
pub(crate) fn create_planned(
    tx: &mut Tx<'_>,
    session_id: &str,
    plan: Vec<Submission>,
) -> Result<Vec<Task>, FlameError> {
    let now_ms = tx.now_ms;
    let new = new_count(&plan);
    let limit = tx.config.max_tasks_per_session;
    let entry = tx
        .state
        .session_mut(session_id)
        .ok_or_else(|| session_not_found(session_id))?;
    match entry.task_count().checked_add(new as u64) {
        None => {
            return Err(FlameError::Internal(format!(
                "session {session_id} has run out of task ids"
            )));
        }
        Some(total) if total > limit => {
            return Err(FlameError::Exhausted(format!(
                "session {session_id} would hold {total} tasks, over the limit of {limit} \
                 (cluster.limits.max_tasks_per_session); use another session"
            )));
        }
        Some(_) => {}
    }
    let mut out = Vec::with_capacity(plan.len());
    for submission in plan {
        let new = match submission {
            Submission::Original(task) => {
                out.push(task);
                continue;
            }
            Submission::New(new) => new,
        };
        // A request id repeated within this batch names the task its first use created.
        if let Some(id) = new
            .request_id
            .as_deref()
            .and_then(|r| entry.task_for_request(r))
            && let Some(original) = entry.task(id)
        {
            out.push(original.task.clone());
            continue;
        }
        let task = Task {
            id: TaskId(entry.task_count() + 1),
            session_id: session_id.to_owned().into(),
            input: new.input,
            output: None,
            state: TaskState::Pending,
            creation_time_ms: now_ms,
            completion_time_ms: None,
            events: vec![Event::task_created(now_ms)],
        };
        tx.log.task_created(session_id, task.id.into());
        entry.push_task(TaskEntry {
            task: task.clone(),
            request_id: new.request_id,
            requeues: 0,
        });
        out.push(task);
    }
    Ok(out)
}

/// How many submissions of `plan` create a task.
pub(crate) fn new_count(plan: &[Submission]) -> usize {
    plan.iter()
        .filter(|s| matches!(s, Submission::New(_)))
        .count()
}

/// One submission of a CreateTasks, resolved against the session's request ids.
pub(crate) enum Submission {
    /// A repeat of a request id the session has seen: its original task.
    Original(Task),
    /// A task to create (its empty request id, if any, dropped).
    New(NewTask),
}

/// Resolves every submission's request id, in any session state, and refuses a request id used
/// again with another input (against the session's tasks or earlier in the batch).
pub(crate) fn plan_submissions(
    tx: &Tx<'_>,
    session_id: &str,
    tasks: Vec<NewTask>,
) -> Result<Vec<Submission>, FlameError> {
    let entry = tx
        .state
        .session_entry(session_id)
        .ok_or_else(|| session_not_found(session_id))?;
    let mut in_batch: std::collections::HashMap<String, Option<bytes::Bytes>> =
        std::collections::HashMap::new();
    let mut plan = Vec::with_capacity(tasks.len());
    for mut new in tasks {
        new.request_id = new.request_id.filter(|r| !r.is_empty());
        let Some(request_id) = new.request_id.clone() else {
            plan.push(Submission::New(new));
            continue;
        };
        let original = entry
            .task_for_request(&request_id)
            .and_then(|id| entry.task(id));
        let first_input = match original {
            Some(original) => Some(&original.task.input),
            None => in_batch.get(&request_id),
        };
        if let Some(first) = first_input
            && *first != new.input
        {
            return Err(FlameError::InvalidArgument(format!(
                "request id {request_id} was already used in session {session_id} with another \
                 input; use a new request id for a new task"
            )));
        }
        match original {
            Some(original) => plan.push(Submission::Original(original.task.clone())),
            None => {
                in_batch.insert(request_id, new.input.clone());
                plan.push(Submission::New(new));
            }
        }
    }
    Ok(plan)
}

/// AssignTasks, the task's part: Pending → Running with a code-1 event. The rules layer has
/// checked the executor first.
pub(crate) fn assign(tx: &mut Tx<'_>, task: &TaskRef) -> Result<Task, FlameError> {
    let (state, _) = task_state(tx, &task.session_id, task.task_id)?;
    let name = label(&task.session_id, task.task_id);
    let to = task_transition(&name, state, TaskEvent::Assign)?;
    let now_ms = tx.now_ms;
    change_task(tx, &task.session_id, task.task_id, |t| {
        t.task.state = to;
        t.task.events.push(Event::task_running(now_ms));
    })
}

/// CompleteTasks, the task's part: Running → Succeed (output stored) or Failed (the message as
/// the code-3 event). The rules layer has checked that the reporting executor holds the task.
pub(crate) fn complete(tx: &mut Tx<'_>, r: TaskResult) -> Result<Task, FlameError> {
    let (state, _) = task_state(tx, &r.session_id, r.task_id)?;
    let ok = r.return_code == 0;
    let to = task_transition(
        &label(&r.session_id, r.task_id),
        state,
        TaskEvent::Complete { ok },
    )?;
    let now_ms = tx.now_ms;
    let TaskResult {
        output, message, ..
    } = r;
    change_task(tx, &r.session_id, r.task_id, |t| {
        t.task.state = to;
        t.task.completion_time_ms = Some(now_ms);
        if to == TaskState::Succeed {
            t.task.output = output;
            t.task.events.push(Event::task_succeeded(now_ms));
        } else {
            t.task.events.push(Event::task_failed(message, now_ms));
        }
    })
}

/// Sends a Running task back to Pending, or fails it once requeues reach the limit. The rules
/// layer makes the executor that held it forget it.
pub(crate) fn requeue(tx: &mut Tx<'_>, task: &TaskRef, reason: &str) -> Result<Task, FlameError> {
    let (limit, now_ms) = (tx.config.task_retry_limit, tx.now_ms);
    let (state, requeues) = task_state(tx, &task.session_id, task.task_id)?;
    let event = TaskEvent::Requeue { requeues, limit };
    let to = task_transition(&label(&task.session_id, task.task_id), state, event)?;
    change_task(tx, &task.session_id, task.task_id, |t| {
        t.task.state = to;
        if to == TaskState::Pending {
            t.requeues = t.requeues.saturating_add(1);
            t.task.events.push(Event::task_requeued(reason, now_ms));
        } else {
            t.task.completion_time_ms = Some(now_ms);
            t.task
                .events
                .push(Event::task_retry_limit_exceeded(limit, now_ms));
        }
    })
}

/// Sends a Running task that never started (it was queued on a lost executor) back to Pending
/// without charging a retry.
pub(crate) fn give_back(tx: &mut Tx<'_>, task: &TaskRef, reason: &str) -> Result<Task, FlameError> {
    let (state, _) = task_state(tx, &task.session_id, task.task_id)?;
    let to = task_transition(
        &label(&task.session_id, task.task_id),
        state,
        TaskEvent::Return,
    )?;
    let now_ms = tx.now_ms;
    let reason = format!("{reason} before it started the task");
    change_task(tx, &task.session_id, task.task_id, |t| {
        t.task.state = to;
        t.task.events.push(Event::task_requeued(&reason, now_ms));
    })
}

/// CloseSession, the tasks' part: every Pending task of session `session_id` is Cancelled.
pub(crate) fn cancel_pending(tx: &mut Tx<'_>, session_id: &str) {
    let now_ms = tx.now_ms;
    let Some(entry) = tx.state.session_mut(session_id) else {
        return;
    };
    let pending: Vec<u64> = entry.pending_ids().collect();
    for task_id in pending {
        let name = label(session_id, task_id);
        let Ok(to) = task_transition(&name, TaskState::Pending, TaskEvent::Cancel) else {
            continue;
        };
        entry.update_task(task_id, |t| {
            t.task.state = to;
            t.task.completion_time_ms = Some(now_ms);
            t.task.events.push(Event::task_cancelled(now_ms));
        });
        tx.log.task_changed(session_id, task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_is_bounded_by_the_retry_limit() {
        let requeue = |requeues| TaskEvent::Requeue { requeues, limit: 3 };
        assert_eq!(
            task_transition("s/1", TaskState::Running, requeue(2)),
            Ok(TaskState::Pending)
        );
        assert_eq!(
            task_transition("s/1", TaskState::Running, requeue(3)),
            Ok(TaskState::Failed)
        );
    }

    #[test]
    fn terminal_states_accept_nothing() {
        let events = [
            TaskEvent::Assign,
            TaskEvent::Complete { ok: true },
            TaskEvent::Cancel,
            TaskEvent::Requeue {
                requeues: 0,
                limit: 3,
            },
        ];
        for state in [TaskState::Succeed, TaskState::Failed, TaskState::Cancelled] {
            for event in events {
                let err = task_transition("s/1", state, event).unwrap_err();
                assert!(matches!(err, FlameError::InvalidState(m) if m.starts_with("task s/1 is")));
            }
        }
        let err = task_transition("s/2", TaskState::Pending, TaskEvent::Complete { ok: true });
        assert!(err.is_err());
    }
}
