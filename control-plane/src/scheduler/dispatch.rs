//! Step 1, dispatch (issue 4 item 3): Pending tasks go to idle Bound executors of their
//! session, all in one batch.
//!
//! | Executor | Gets |
//! |---|---|
//! | Bound, no running task, on a Ready node, session has Pending tasks | the lowest-id Pending task of its session not yet assigned in this plan |
//! | Bound on an Unknown (draining) node | nothing: its agent is gone and the task would only be requeued |
//! | any other | nothing |
//!
//! Why one batch: one replicated `AssignTasks` command assigns many tasks, which is what makes
//! dispatch cheap at high task rates. Each executor runs one task at a time, as upstream, and no
//! task is assigned twice because each session's Pending ids are consumed in order.
//!
//! Caveat: executors of a session are served in executor-id order, so when a session has fewer
//! Pending tasks than idle executors, the executors with the highest ids stay idle.

use super::cycle::Cycle;
use crate::state::Assignment;
use flame_proto::model::ExecutorState;
use std::collections::BTreeMap;

/// The assignments of this cycle, by session id then executor id; records them in `cycle`.
pub(super) fn assign(cycle: &mut Cycle<'_>) -> Vec<Assignment> {
    let state = cycle.state;
    let mut idle: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in state.executor_entries() {
        let executor = &e.executor;
        if executor.state != ExecutorState::Bound || e.task.is_some() {
            continue;
        }
        if !cycle.is_ready(&executor.spec.node) {
            continue;
        }
        if let Some(session_id) = executor.session_id.as_deref() {
            idle.entry(session_id).or_default().push(&executor.id);
        }
    }
    let mut assignments = Vec::new();
    for (session_id, executors) in idle {
        let Some(entry) = state.session_entry(session_id) else {
            continue;
        };
        let before = assignments.len();
        for (executor_id, task_id) in executors.into_iter().zip(entry.pending_ids()) {
            cycle.busy.insert(executor_id);
            assignments.push(Assignment {
                executor_id: executor_id.to_owned(),
                session_id: session_id.to_owned(),
                task_id,
            });
        }
        let count = u32::try_from(assignments.len() - before).unwrap_or(u32::MAX);
        if let Some(d) = cycle.demand_mut(session_id) {
            d.dispatched = count;
        }
    }
    assignments
}
