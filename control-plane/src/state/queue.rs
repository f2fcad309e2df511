//! Executor task queues: how many tasks an executor holds at once, and the refill that
//! CompleteTasks performs in the same apply.
//!
//! What: an executor runs one task at a time, as upstream, but it may *hold* several: the
//! Running tasks recorded on it (`ExecutorEntry::tasks`), which its agent runs in order. How
//! many is [`depth`]: enough to cover [`DispatchPolicy::window_us`] of work at the session's
//! mean task duration, between 1 and [`DispatchPolicy::max_depth`], and never more queued input
//! than [`DispatchPolicy::max_queued_bytes`]. A refill tops an executor up from its session's
//! lowest Pending ids; CompleteTasks calls it for every executor it reported on, so a finished
//! task and the assignment of its successor are one commit. This module is the policy (pure
//! functions of the state); the rules layer (`state::rules`) carries it out.
//!
//! Why: a no-op task takes far less time than a Raft commit plus a round trip to the agent. With
//! one task per executor and a separate AssignTasks commit, every task cost two commits in
//! sequence and executors idled between them. A queue lets the agent go straight on to the next
//! task while the leader commits the previous result; sizing it by measured duration keeps
//! upstream's behaviour for anything slower than the window (depth 1), where prefetching would
//! only unbalance executors.
//!
//! Caveats:
//! - A queued task is already Running (it has been handed to an executor); it is not cancelled
//!   by CloseSession and counts as running there, exactly like the task at the head.
//! - When the executor is lost, only the head (the task that may have started) is charged a
//!   retry; the rest go back to Pending uncharged.
//! - The mean duration is the agents' measurement, an integer EWMA (weight 1/8) computed in
//!   apply from the reported values, so every member computes the same depth. A session with no
//!   measurement yet gets depth 1.
//! - The policy travels in the command (the leader's configuration), not in member config.

use super::command::TaskRef;
use super::model::{ExecutorEntry, SessionEntry, State};
use flame_proto::model::{ExecutorState, NodeState};

pub use super::command::DispatchPolicy;

/// How many tasks an executor of a session whose tasks take `mean_task_us` on average may hold
/// under `policy`: `window / mean`, clamped to `1..=max_depth`; 1 while the mean is unknown (0).
pub fn depth(mean_task_us: u64, policy: &DispatchPolicy) -> usize {
    if mean_task_us == 0 {
        return 1;
    }
    let by_window = policy.window_us / mean_task_us;
    let depth = by_window.clamp(1, u64::from(policy.max_depth.max(1)));
    usize::try_from(depth).unwrap_or(1)
}

/// The session's new mean task duration after one more measurement of `duration_us`
/// (0 = not measured, ignored).
pub(crate) fn learn(entry: &mut SessionEntry, duration_us: u64) {
    if duration_us == 0 {
        return;
    }
    entry.mean_task_us = match entry.mean_task_us {
        0 => duration_us,
        mean => mean.saturating_mul(7).saturating_add(duration_us) / 8,
    };
}

/// True when an executor holding `held` tasks with `held_bytes` of input may take one more of
/// `size` bytes under `policy` (its first task always fits).
pub fn fits(held: usize, held_bytes: u64, size: u64, policy: &DispatchPolicy) -> bool {
    held == 0 || held_bytes.saturating_add(size) <= policy.max_queued_bytes
}

/// The input size of task `id` of `entry` (0 without input).
pub fn input_size(entry: &SessionEntry, id: u64) -> u64 {
    entry
        .task(id)
        .and_then(|t| t.task.input.as_ref())
        .map_or(0, |b| b.len() as u64)
}

/// The lowest Pending ids of `entry` an executor holding `held` tasks with `held_bytes` of
/// queued input may take under `policy`.
pub(crate) fn next_tasks(
    entry: &SessionEntry,
    held: usize,
    held_bytes: u64,
    policy: &DispatchPolicy,
) -> Vec<u64> {
    let room = depth(entry.mean_task_us, policy).saturating_sub(held);
    let (mut count, mut bytes) = (held, held_bytes);
    let mut out = Vec::new();
    for id in entry.pending_ids().take(room) {
        let size = input_size(entry, id);
        if !fits(count, bytes, size, policy) {
            break;
        }
        count += 1;
        bytes = bytes.saturating_add(size);
        out.push(id);
    }
    out
}

/// The input bytes of the tasks `held` by an executor of session `entry`.
pub fn held_bytes(entry: &SessionEntry, held: &[TaskRef]) -> u64 {
    held.iter()
        .filter_map(|t| entry.task(t.task_id))
        .filter_map(|t| t.task.input.as_ref())
        .map(|b| b.len() as u64)
        .sum()
}

/// A Bound executor on a Ready node that may take more tasks: its id, how many tasks it holds
/// and their input bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room<'a> {
    /// The executor.
    pub id: &'a str,
    /// Tasks it holds.
    pub held: usize,
    /// Input bytes of the tasks it holds.
    pub bytes: u64,
}

/// The session and the room of executor `e`, if it is Bound (and not yielding) on a Ready node
/// and holds fewer tasks than its session's depth under `policy`.
pub fn room_of<'a>(
    state: &'a State,
    e: &'a ExecutorEntry,
    policy: &DispatchPolicy,
) -> Option<(&'a str, Room<'a>)> {
    let executor = &e.executor;
    let session_id = executor.session_id.as_deref()?;
    let ready = state
        .node(&executor.spec.node)
        .is_some_and(|n| n.state == NodeState::Ready);
    if executor.state != ExecutorState::Bound || e.yielding || !ready {
        return None;
    }
    let entry = state.session_entry(session_id)?;
    if e.tasks.len() >= depth(entry.mean_task_us, policy) {
        return None;
    }
    let room = Room {
        id: &executor.id,
        held: e.tasks.len(),
        bytes: held_bytes(entry, &e.tasks),
    };
    Some((session_id, room))
}

/// Deals the lowest Pending tasks of `entry` to `rooms` (its executors with room, in order)
/// round-robin: every executor gets one before any gets another, until each is as deep as the
/// session allows under `policy` or no task is left. Returns `(executor, task)` pairs in
/// dealing order.
pub fn deal<'a>(
    entry: &SessionEntry,
    rooms: &mut [Room<'a>],
    policy: &DispatchPolicy,
) -> Vec<(&'a str, u64)> {
    let target = depth(entry.mean_task_us, policy);
    let mut pending = entry.pending_ids().peekable();
    let mut out = Vec::new();
    // Each round gives every executor with room at most one task; bounded by `target`.
    for _ in 0..target {
        let mut progress = false;
        for room in rooms.iter_mut().filter(|r| r.held < target) {
            let Some(&task_id) = pending.peek() else {
                return out;
            };
            let size = input_size(entry, task_id);
            if !fits(room.held, room.bytes, size, policy) {
                continue;
            }
            pending.next();
            room.held += 1;
            room.bytes = room.bytes.saturating_add(size);
            out.push((room.id, task_id));
            progress = true;
        }
        if !progress {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_covers_the_window_within_bounds() {
        let policy = DispatchPolicy {
            window_us: 20_000,
            max_depth: 128,
            max_queued_bytes: 1 << 20,
        };
        assert_eq!(depth(0, &policy), 1, "unknown duration: one at a time");
        assert_eq!(depth(100, &policy), 128, "capped");
        assert_eq!(depth(1_000, &policy), 20);
        assert_eq!(depth(50_000, &policy), 1, "slow tasks: upstream behaviour");
        assert_eq!(depth(100, &DispatchPolicy::ONE_AT_A_TIME), 1);
    }
}
