//! Task commands and their executor side: CreateTasks (with dispatch), AssignTasks,
//! CompleteTasks (with refill) and RequeueTasks. See the table in the rules module.
//!
//! Every item checks the executor before the task, so the error a refused item reports is the
//! same as it always was; each item of a batch succeeds or fails alone.

use crate::state::command::{Assignment, DispatchPolicy, NewTask, TaskRef, TaskResult};
use crate::state::model::State;
use crate::state::queue::{self, Room};
use crate::state::tx::Tx;
use crate::state::{executor, session, task};
use flame_proto::error::FlameError;
use flame_proto::model::Task;

/// CreateTasks: request ids are resolved first (in any session state), the session is checked
/// only when a task is new, then the tasks are created and, with a `dispatch` policy, dealt to
/// the session's executors with room at once.
pub(crate) fn create(
    tx: &mut Tx<'_>,
    session_id: &str,
    tasks: Vec<NewTask>,
    dispatch: Option<DispatchPolicy>,
) -> Result<Vec<Task>, FlameError> {
    let plan = task::plan_submissions(tx, session_id, tasks)?;
    if task::new_count(&plan) > 0 {
        session::check(tx, session_id, session::SessionEvent::AddTasks)?;
    }
    let created = task::create_planned(tx, session_id, plan)?;
    if let Some(policy) = dispatch {
        dispatch_session(tx, session_id, &policy);
    }
    Ok(created)
}

/// AssignTasks: each assignment succeeds or fails alone.
pub(crate) fn assign_all(
    tx: &mut Tx<'_>,
    assignments: Vec<Assignment>,
) -> Vec<Result<Task, FlameError>> {
    assignments.iter().map(|a| assign(tx, a)).collect()
}

/// Assigns one Pending task to a Bound executor of its session, behind the tasks it holds.
pub(crate) fn assign(tx: &mut Tx<'_>, a: &Assignment) -> Result<Task, FlameError> {
    executor::check_start(tx, a)?;
    let held = TaskRef {
        session_id: a.session_id.clone(),
        task_id: a.task_id,
    };
    let task = task::assign(tx, &held)?;
    executor::hold(tx, &a.executor_id, held);
    Ok(task)
}

/// CompleteTasks: each result succeeds or is reported stale alone; then, with a `refill`
/// policy, every executor an accepted result came from is refilled, in order of first mention.
/// A command whose results are all stale changes nothing.
pub(crate) fn complete_all(
    tx: &mut Tx<'_>,
    results: Vec<TaskResult>,
    refill: Option<&DispatchPolicy>,
) -> Vec<Result<Task, FlameError>> {
    let mut executors: Vec<String> = Vec::new();
    let out = results
        .into_iter()
        .map(|r| {
            let executor_id = r.executor_id.clone();
            let result = complete(tx, r);
            if result.is_ok() && !executors.contains(&executor_id) {
                executors.push(executor_id);
            }
            result
        })
        .collect();
    if let Some(policy) = refill {
        for executor_id in executors {
            top_up(tx, &executor_id, policy);
        }
    }
    out
}

/// One result: the executor must hold the task; the task finishes, the session learns the
/// measured duration, and the executor forgets the task.
fn complete(tx: &mut Tx<'_>, r: TaskResult) -> Result<Task, FlameError> {
    let held = TaskRef {
        session_id: r.session_id.clone(),
        task_id: r.task_id,
    };
    executor::check_finish(tx, &r.executor_id, &held)?;
    let (executor_id, duration_us) = (r.executor_id.clone(), r.duration_us);
    let task = task::complete(tx, r)?;
    session::learn_duration(tx, &held.session_id, duration_us);
    executor::forget(tx, &executor_id, &held);
    Ok(task)
}

/// RequeueTasks: each task is requeued (or failed at the retry limit) alone.
pub(crate) fn requeue_all(
    tx: &mut Tx<'_>,
    tasks: Vec<TaskRef>,
    reason: &str,
) -> Vec<Result<Task, FlameError>> {
    tasks.iter().map(|t| requeue(tx, t, reason)).collect()
}

/// Sends a Running task back to Pending (or fails it at the retry limit); the executor that
/// held it, if any, forgets it.
pub(crate) fn requeue(tx: &mut Tx<'_>, held: &TaskRef, reason: &str) -> Result<Task, FlameError> {
    let task = task::requeue(tx, held, reason)?;
    executor::forget_task(tx, held);
    Ok(task)
}

/// Requeues the tasks a lost executor held: the head (which may have started) is charged a
/// retry, the queued rest are given back uncharged. A task no longer Running is left alone.
pub(crate) fn requeue_lost(tx: &mut Tx<'_>, held: &[TaskRef], reason: &str) {
    let Some((head, queued)) = held.split_first() else {
        return;
    };
    // An Err means the task already left Running (or its session is gone): nothing to do.
    let _ = requeue(tx, head, reason);
    for task in queued {
        if task::give_back(tx, task, reason).is_ok() {
            executor::forget_task(tx, task);
        }
    }
}

/// Assigns the tasks `queue::deal` picks for session `session_id` to its executors with room
/// (CreateTasks, so new tasks need no scheduling round).
fn dispatch_session(tx: &mut Tx<'_>, session_id: &str, policy: &DispatchPolicy) {
    let state: &State = &*tx.state;
    let Some(entry) = state.session_entry(session_id) else {
        return;
    };
    let mut rooms: Vec<Room<'_>> = state
        .executor_entries()
        .filter_map(|e| queue::room_of(state, e, policy))
        .filter(|(s, _)| *s == session_id)
        .map(|(_, room)| room)
        .collect();
    let dealt: Vec<Assignment> = queue::deal(entry, &mut rooms, policy)
        .into_iter()
        .map(|(executor_id, task_id)| Assignment {
            executor_id: executor_id.to_owned(),
            session_id: session_id.to_owned(),
            task_id,
        })
        .collect();
    for assignment in &dealt {
        // Checked again by assign; a refusal leaves the task for the scheduler.
        let _ = assign(tx, assignment);
    }
}

/// Tops executor `executor_id` up from its session's Pending tasks under `policy`, if it is
/// Bound on a Ready node (the refill of CompleteTasks).
fn top_up(tx: &mut Tx<'_>, executor_id: &str, policy: &DispatchPolicy) {
    let state: &State = &*tx.state;
    let Some(entry) = state.executor_entry(executor_id) else {
        return;
    };
    let Some((session_id, room)) = queue::room_of(state, entry, policy) else {
        return;
    };
    let Some(session) = state.session_entry(session_id) else {
        return;
    };
    let session_id = session_id.to_owned();
    let ids = queue::next_tasks(session, room.held, room.bytes, policy);
    for task_id in ids {
        let assignment = Assignment {
            executor_id: executor_id.to_owned(),
            session_id: session_id.clone(),
            task_id,
        };
        // Each assignment re-checks the executor and the task; a refusal ends the refill.
        if assign(tx, &assignment).is_err() {
            return;
        }
    }
}
