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
//! The queue depth comes from `state::queue::depth` (1 for tasks slower than the dispatch
//! window, which is upstream's one task per executor); CompleteTasks refills executors itself,
//! so this step mostly serves new executors and newly created tasks.
//!
//! Caveat: executors of a session are dealt to in executor-id order.

use super::cycle::Cycle;
use crate::state::Assignment;
use crate::state::queue::{DispatchPolicy, depth, fits, held_bytes, input_size};
use flame_proto::model::ExecutorState;
use std::collections::BTreeMap;

/// An executor with room: its id, how many tasks it holds and their input bytes.
struct Room<'a> {
    id: &'a str,
    held: usize,
    bytes: u64,
}

/// The assignments of this cycle, by session id then round; records them in `cycle`.
pub(super) fn assign(cycle: &mut Cycle<'_>, policy: &DispatchPolicy) -> Vec<Assignment> {
    let state = cycle.state;
    let mut open: BTreeMap<&str, Vec<Room<'_>>> = BTreeMap::new();
    for e in state.executor_entries() {
        let executor = &e.executor;
        let Some(session_id) = executor.session_id.as_deref() else {
            continue;
        };
        if executor.state != ExecutorState::Bound || !cycle.is_ready(&executor.spec.node) {
            continue;
        }
        let Some(entry) = state.session_entry(session_id) else {
            continue;
        };
        if e.tasks.len() < depth(entry.mean_task_us, policy) {
            open.entry(session_id).or_default().push(Room {
                id: &executor.id,
                held: e.tasks.len(),
                bytes: held_bytes(entry, &e.tasks),
            });
        }
    }
    let mut assignments = Vec::new();
    for (session_id, mut rooms) in open {
        let Some(entry) = state.session_entry(session_id) else {
            continue;
        };
        let target = depth(entry.mean_task_us, policy);
        let mut pending = entry.pending_ids().peekable();
        let before = assignments.len();
        // Each round gives every executor with room at most one task; bounded by `target`.
        for _ in 0..target {
            let mut progress = false;
            for room in rooms.iter_mut().filter(|r| r.held < target) {
                let Some(&task_id) = pending.peek() else {
                    break;
                };
                let size = input_size(entry, task_id);
                if !fits(room.held, room.bytes, size, policy) {
                    continue;
                }
                pending.next();
                room.held += 1;
                room.bytes = room.bytes.saturating_add(size);
                cycle.busy.insert(room.id);
                assignments.push(Assignment {
                    executor_id: room.id.to_owned(),
                    session_id: session_id.to_owned(),
                    task_id,
                });
                progress = true;
            }
            if !progress {
                break;
            }
        }
        let count = u32::try_from(assignments.len() - before).unwrap_or(u32::MAX);
        if let Some(d) = cycle.demand_mut(session_id) {
            d.dispatched = count;
        }
    }
    assignments
}
