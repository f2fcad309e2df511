//! Step 1, dispatch (issue 4 item 3): Pending tasks go to Bound executors of their session
//! that have room in their queue, all in one batch.
//!
//! | Executor | Gets |
//! |---|---|
//! | Bound on a Ready node, holding fewer tasks than its session's queue depth, session has Pending tasks | the lowest-id Pending tasks of its session not yet assigned in this plan, dealt round-robin among the session's executors until each is full or none is left |
//! | Bound on an Unknown (draining) node | nothing: its agent is gone and the tasks would only be requeued |
//! | any other | nothing |
//!
//! Why one batch: one replicated `AssignTasks` command assigns many tasks, which is what makes
//! dispatch cheap at high task rates. Why round-robin: when a session has fewer Pending tasks
//! than queue room, every executor gets some before any gets a second, so slow tasks spread.
//! The queue depth and the dealing come from `state::queue` (depth 1 for tasks slower than the
//! dispatch window, which is upstream's one task per executor); CompleteTasks refills executors
//! and CreateTasks deals new tasks themselves, so this step mostly serves newly bound
//! executors and tasks requeued or left over.
//!
//! Caveat: executors of a session are dealt to in executor-id order.

use super::cycle::Cycle;
use crate::state::Assignment;
use crate::state::queue::{DispatchPolicy, Room, deal, room_of};
use std::collections::BTreeMap;

/// The assignments of this cycle, by session id then dealing order; records them in `cycle`.
pub(super) fn assign(cycle: &mut Cycle<'_>, policy: &DispatchPolicy) -> Vec<Assignment> {
    let state = cycle.state;
    let mut open: BTreeMap<&str, Vec<Room<'_>>> = BTreeMap::new();
    for e in state.executor_entries() {
        if let Some((session_id, room)) = room_of(state, e, policy) {
            open.entry(session_id).or_default().push(room);
        }
    }
    let mut assignments = Vec::new();
    for (session_id, mut rooms) in open {
        let Some(entry) = state.session_entry(session_id) else {
            continue;
        };
        let dealt = deal(entry, &mut rooms, policy);
        let count = u32::try_from(dealt.len()).unwrap_or(u32::MAX);
        for (executor_id, task_id) in dealt {
            cycle.busy.insert(executor_id);
            assignments.push(Assignment {
                executor_id: executor_id.to_owned(),
                session_id: session_id.to_owned(),
                task_id,
            });
        }
        if let Some(d) = cycle.demand_mut(session_id) {
            d.dispatched = count;
        }
    }
    assignments
}
