//! Step 4c, rotate (fair shares, issue 13 item 2): when sessions with pending work wait while
//! others hold more than them, executors change hands at task boundaries.
//!
//! | Who | Condition | Command |
//! |---|---|---|
//! | a waiting session W, in rank order | schedulable, Pending tasks, fewer executors than it desires after steps 2 to 4a', waiting (per [`WarmTimers`]) for at least `cluster.rotation_wait_ms`, and no executor of its size and shim already on its way free (yielding, Unbinding, or reclaimed in this plan) | one victim below, at most one per W per cycle |
//! | victim: a Bound executor of W's size and shim on a Ready node, not yielding, bound to another session V | bound to V for at least the hold, `max(rotation_wait_ms, 10 × the latest bind time of V's application)`; V keeps at least `min_instances`; and V ranks after W: a lower priority (with the `priority` policy), or the same priority with V's dominant share after giving one up still above W's, or W holding none | `YieldExecutor`: it takes no new task |
//! | a yielding executor | holds no task | `UnbindExecutor` (step 4a) |
//!
//! Among victims: the lowest priority (with `priority`), then the largest share, then the
//! fewest tasks held, then the longest bound, then the executor id.
//!
//! Why at task boundaries: unbinding a busy executor would cancel its task. A yielding executor
//! finishes what it holds (its current task and its queue, at most the dispatch window of
//! work: tasks handed to an agent are not taken back); its session's other executors keep dispatching, and its freed slot is
//! bound in a later cycle to the session that waited longest (the rank's wait key).
//!
//! Why the hold: a rotation costs the next session a cold start (hundreds of ms for a Python
//! service). An executor serves at least `rotation_wait_ms`, and at least ten times its
//! application's observed bind time, so at most about a tenth of a rotating executor's time goes
//! to starting instances, and turns among many waiting sessions come in that rhythm instead of
//! thrashing.
//!
//! Why "W holds none" beats the share test: with more waiting sessions than slots, no session
//! can reach its share and the only fair schedule is to take turns; with some executors each,
//! moving one must not simply swap who is behind, so V must stay ahead after giving it up.
//!
//! Caveats:
//! - Only executors of W's exact size and shim are rotated; a session of another size waits for
//!   reclaim, release or a task boundary of its own kind.
//! - Hold and wait come from leader-local timers: after a leader change they start afresh, which
//!   only delays rotations.
//! - With `cluster.rotation_wait_ms: 0` no executor is ever rotated.

use super::Policy;
use super::WarmTimers;
use super::cycle::{Cycle, Demand, Fit};
use super::grant::rank;
use super::resources::Res;
use crate::state::{Command, ExecutorEntry};
use flame_proto::model::ExecutorState;
use std::collections::{BTreeSet, HashMap};

/// A rotating executor serves at least this many times its application's observed bind time.
pub const COLD_START_FACTOR: i64 = 10;

/// A session's holding as the rotations of this plan change it.
#[derive(Debug, Clone, Copy)]
struct Holding {
    /// Resources of its executors.
    allocated: Res,
    /// Its Binding and Bound executors.
    instances: u32,
}

/// Step 4c: marks executors to yield to waiting sessions; see the module docs.
pub(super) fn rotate(cycle: &Cycle<'_>, timers: &WarmTimers, now_ms: i64, out: &mut Vec<Command>) {
    let wait_ms = cycle.config.rotation_wait_ms;
    if wait_ms <= 0 {
        return;
    }
    let mut waiting: Vec<usize> = (0..cycle.sessions.len())
        .filter(|&i| is_waiting(&cycle.sessions[i], now_ms, wait_ms))
        .collect();
    if waiting.is_empty() {
        return;
    }
    waiting.sort_by_cached_key(|&i| rank(cycle, &cycle.sessions[i]));
    let mut supply = on_their_way(cycle);
    let mut holdings: Vec<Holding> = cycle
        .sessions
        .iter()
        .map(|d| Holding {
            allocated: d.allocated,
            instances: d.instances,
        })
        .collect();
    let mut taken = BTreeSet::new();
    for w in waiting {
        let d = &cycle.sessions[w];
        let fit = (d.resreq(), d.shim);
        if let Some(n) = supply.get_mut(&fit).filter(|n| **n > 0) {
            *n -= 1;
            continue;
        }
        let Some((id, v)) = victim(cycle, timers, &holdings, w, now_ms, &taken) else {
            continue;
        };
        let size = Res::of(&d.resreq());
        holdings[v].allocated = holdings[v].allocated.minus(size);
        holdings[v].instances = holdings[v].instances.saturating_sub(1);
        holdings[w].allocated = holdings[w].allocated.plus(size);
        holdings[w].instances = holdings[w].instances.saturating_add(1);
        taken.insert(id);
        out.push(Command::YieldExecutor { id: id.to_owned() });
    }
}

/// True when `d` has waited for executors, with work to run, for at least `wait_ms`.
fn is_waiting(d: &Demand<'_>, now_ms: i64, wait_ms: i64) -> bool {
    d.needs_more()
        && d.pending_after_dispatch() > 0
        && d.waiting_since
            .is_some_and(|since| now_ms.saturating_sub(since) >= wait_ms)
}

/// Executors that will become free without another rotation, by fit: yielding or Unbinding
/// ones, and those this plan reclaimed.
fn on_their_way(cycle: &Cycle<'_>) -> HashMap<Fit, u32> {
    let mut supply: HashMap<Fit, u32> = HashMap::new();
    for e in cycle.state.executor_entries() {
        let executor = &e.executor;
        let leaving = executor.state == ExecutorState::Unbinding
            || (executor.state == ExecutorState::Bound && e.yielding)
            || cycle.unbound.contains(executor.id.as_str());
        if leaving {
            let fit = (executor.spec.resreq, executor.spec.shim);
            *supply.entry(fit).or_default() += 1;
        }
    }
    supply
}

/// The executor to yield to waiting session `w` and the index of its session, if any may.
fn victim<'s>(
    cycle: &Cycle<'s>,
    timers: &WarmTimers,
    holdings: &[Holding],
    w: usize,
    now_ms: i64,
    taken: &BTreeSet<&str>,
) -> Option<(&'s str, usize)> {
    let wd = &cycle.sessions[w];
    let fit = (wd.resreq(), wd.shim);
    let by_priority = cycle.config.policies.contains(&Policy::Priority);
    let mut best = None;
    for e in cycle.state.executor_entries() {
        if !rotatable(cycle, e, fit, taken) {
            continue;
        }
        let executor = &e.executor;
        let Some(v_id) = executor.session_id.as_deref() else {
            continue;
        };
        let Some(&v) = cycle.index.get(v_id).filter(|&&v| v != w) else {
            continue;
        };
        let vd = &cycle.sessions[v];
        let Some(bound_ms) = timers.bound_since(&executor.id, v_id) else {
            continue;
        };
        if now_ms.saturating_sub(bound_ms) < hold_ms(cycle, timers, vd)
            || holdings[v].instances <= vd.entry.session.spec.min_instances
            || !behind(cycle, holdings, w, v)
        {
            continue;
        }
        let v_share = holdings[v].allocated.dominant_share(cycle.total);
        let key = (
            if by_priority {
                vd.entry.session.spec.priority
            } else {
                0
            },
            std::cmp::Reverse(v_share.to_bits()),
            e.tasks.len(),
            bound_ms,
            executor.id.as_str(),
        );
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            best = Some((key, executor.id.as_str(), v));
        }
    }
    best.map(|(_, id, v)| (id, v))
}

/// Whether executor `e` may be rotated at all in this plan: Bound, not yielding, of `fit`, on
/// a Ready node, and neither unbound nor already taken by this plan.
fn rotatable(cycle: &Cycle<'_>, e: &ExecutorEntry, fit: Fit, taken: &BTreeSet<&str>) -> bool {
    let executor = &e.executor;
    executor.state == ExecutorState::Bound
        && !e.yielding
        && (executor.spec.resreq, executor.spec.shim) == fit
        && cycle.is_ready(&executor.spec.node)
        && !cycle.unbound.contains(executor.id.as_str())
        && !taken.contains(executor.id.as_str())
}

/// Whether waiting session `w` is behind session `v`: of lower priority when priorities
/// differ and count, else holding nothing or a smaller dominant share than `v` would keep
/// after giving one executor up.
fn behind(cycle: &Cycle<'_>, holdings: &[Holding], w: usize, v: usize) -> bool {
    let (wd, vd) = (&cycle.sessions[w], &cycle.sessions[v]);
    let (vp, wp) = (
        vd.entry.session.spec.priority,
        wd.entry.session.spec.priority,
    );
    if cycle.config.policies.contains(&Policy::Priority) && vp != wp {
        return vp < wp;
    }
    let share_after = holdings[v]
        .allocated
        .minus(Res::of(&vd.resreq()))
        .dominant_share(cycle.total);
    holdings[w].instances == 0 || share_after > holdings[w].allocated.dominant_share(cycle.total)
}

/// The least time an executor of session `d` serves before it may be rotated.
fn hold_ms(cycle: &Cycle<'_>, timers: &WarmTimers, d: &Demand<'_>) -> i64 {
    let application = &d.entry.session.spec.application;
    let cold_start = timers
        .bind_cost_ms(application)
        .unwrap_or(0)
        .saturating_mul(COLD_START_FACTOR);
    cycle.config.rotation_wait_ms.max(cold_start)
}
