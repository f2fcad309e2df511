//! Step 4, release: warm executors go back after their delay, unneeded free ones are released.
//!
//! | Executor | Condition | Command |
//! |---|---|---|
//! | Bound, no running task, on a Ready node, not dispatched in this plan | its session is Open with no Pending task left after dispatch, it has been idle (per [`WarmTimers`]) for at least the application's `delay_release`, and its session keeps more than `desired` instances; longest idle first | `UnbindExecutor` |
//! | Idle or Void, no session, Ready node, not bound in this plan | no schedulable session that still needs instances has its resreq and shim | `ReleaseExecutor` |
//! | any other | | nothing |
//!
//! Why `desired` as the floor: with no Pending task, `desired` is `max(running, min_instances)`
//! within the maximum, so delayed release never takes a session below `min_instances` and never
//! unbinds the executors of its running tasks.
//!
//! Caveats: executors of Closed sessions are unbound by the state machine itself (CloseSession),
//! so they are not repeated here; executors on Unknown (draining) nodes are neither unbound nor
//! released here (their agent is gone; the node lifecycle deletes them if the node expires).

use super::WarmTimers;
use super::cycle::{Cycle, Fit};
use crate::state::Command;
use flame_proto::model::ExecutorState;
use std::collections::HashSet;

/// Step 4a: unbinds Bound executors that stayed idle past their application's delay.
pub(super) fn unbind_idle(
    cycle: &mut Cycle<'_>,
    timers: &WarmTimers,
    now_ms: i64,
    out: &mut Vec<Command>,
) {
    let mut due: Vec<(i64, &str, &str)> = Vec::new();
    for e in cycle.state.executor_entries() {
        let executor = &e.executor;
        if executor.state != ExecutorState::Bound || !e.tasks.is_empty() {
            continue;
        }
        if cycle.busy.contains(executor.id.as_str()) || !cycle.is_ready(&executor.spec.node) {
            continue;
        }
        let Some(session_id) = executor.session_id.as_deref() else {
            continue;
        };
        let Some(d) = cycle.demand(session_id) else {
            continue;
        };
        let Some(since) = timers.idle_since(&executor.id, session_id) else {
            continue;
        };
        if d.pending_after_dispatch() == 0 && now_ms.saturating_sub(since) >= d.delay_release_ms {
            due.push((since, &executor.id, session_id));
        }
    }
    due.sort_unstable();
    for (_, id, session_id) in due {
        let Some(d) = cycle.demand_mut(session_id) else {
            continue;
        };
        if d.instances > d.desired {
            d.instances -= 1;
            out.push(Command::UnbindExecutor { id: id.to_owned() });
        }
    }
}

/// Step 4b: releases free executors no session that still needs instances can use.
pub(super) fn release_free(cycle: &Cycle<'_>, out: &mut Vec<Command>) {
    let wanted: HashSet<Fit> = cycle
        .sessions
        .iter()
        .filter(|d| d.needs_more())
        .map(|d| (d.resreq(), d.shim))
        .collect();
    for (id, fit) in &cycle.free_left {
        if !wanted.contains(fit) {
            out.push(Command::ReleaseExecutor {
                id: (*id).to_owned(),
            });
        }
    }
}
