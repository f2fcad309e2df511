//! Step 4, release: warm executors go back after their delay, unneeded free ones are released.
//!
//! | Executor | Condition | Command |
//! |---|---|---|
//! | Bound, no running task, on a Ready node, not dispatched in this plan | its session is Open with no Pending task left after dispatch, it has been idle (per [`WarmTimers`]) for at least the application's `delay_release`, and its session keeps more than `desired` instances; longest idle first | `UnbindExecutor` |
//! | the same, idle for less than `delay_release` but at least the reclaim grace | a schedulable session still needs instances after steps 2 and 3 (no free executor fits it and no node has room) and its executors fit some Ready node; at most as many as such sessions still need, longest idle first | `UnbindExecutor` (a reclaim) |
//! | Bound, yielding (a rotation, step 4c), no task, on a Ready node | always | `UnbindExecutor` |
//! | Idle or Void, no session, Ready node, not bound in this plan | no schedulable session that still needs instances has its resreq and shim | `ReleaseExecutor` |
//! | any other | | nothing |
//!
//! Why reclaim: `delay_release` saves a cold start for a session that might send more tasks;
//! it must never be paid by a session that is already waiting. The unbound executor becomes
//! free and the next cycle binds it to the waiting session (same size and shim) or releases it
//! to make room for one of the waiting session's size.
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
use super::resources::Res;
use crate::state::Command;
use flame_proto::model::ExecutorState;
use std::collections::HashSet;

/// Step 4a: unbinds Bound executors that stayed idle past their application's delay, or past
/// the reclaim grace while another session waits for capacity.
pub(super) fn unbind_idle(
    cycle: &mut Cycle<'_>,
    timers: &WarmTimers,
    now_ms: i64,
    out: &mut Vec<Command>,
) {
    let mut reclaims = waiting_instances(cycle);
    let grace_ms = if reclaims > 0 {
        cycle.config.reclaim_grace_ms
    } else {
        i64::MAX
    };
    let mut due: Vec<(i64, &str, &str, bool)> = Vec::new();
    for e in cycle.state.executor_entries() {
        let executor = &e.executor;
        if executor.state != ExecutorState::Bound || !e.tasks.is_empty() {
            continue;
        }
        if cycle.busy.contains(executor.id.as_str()) || !cycle.is_ready(&executor.spec.node) {
            continue;
        }
        if e.yielding {
            // A rotation's task boundary: its floor and hold were checked when it was marked.
            cycle.unbound.insert(&executor.id);
            out.push(Command::UnbindExecutor {
                id: executor.id.clone().into(),
            });
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
        let idle_ms = now_ms.saturating_sub(since);
        if d.pending_after_dispatch() == 0 && idle_ms >= d.delay_release_ms.min(grace_ms) {
            due.push((
                since,
                &executor.id,
                session_id,
                idle_ms < d.delay_release_ms,
            ));
        }
    }
    due.sort_unstable();
    for (_, id, session_id, reclaim) in due {
        if reclaim && reclaims == 0 {
            continue;
        }
        let Some(d) = cycle.demand_mut(session_id) else {
            continue;
        };
        if d.instances > d.desired {
            d.instances -= 1;
            if reclaim {
                reclaims -= 1;
                cycle.stats.reclaims += 1;
            } else {
                cycle.stats.delayed_releases += 1;
            }
            cycle.unbound.insert(id);
            out.push(Command::UnbindExecutor { id: id.to_owned() });
        }
    }
}

/// How many instances schedulable sessions still need after this plan's binds and
/// allocations (so no free executor and no node room fits them), counting only sessions whose
/// executors fit some Ready node once room is made.
fn waiting_instances(cycle: &Cycle<'_>) -> u32 {
    cycle
        .sessions
        .iter()
        .filter(|d| d.needs_more())
        .filter(|d| {
            let size = Res::of(&d.resreq());
            cycle.nodes.values().any(|n| size.within(n.allocatable))
        })
        .map(|d| d.desired.saturating_sub(d.instances))
        .fold(0, u32::saturating_add)
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
