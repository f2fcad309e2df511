//! Why a session waits for executors: the scheduler's own accounting turned into one reason,
//! for `flmctl view -s` (through `Cluster.ExplainSession`) and for operators reading it.
//!
//! What: [`explain`] builds the same [`Cycle`] a plan starts from and classifies an Open
//! session that has Pending tasks and fewer executors than it desires, first match wins:
//!
//! | # | Condition | Reason |
//! |---|---|---|
//! | 1 | its binds failed `bind_retry_limit` times | [`WaitReason::RetryLimit`] |
//! | 2 | its application's shim is not one nodes run (Wasm) | [`WaitReason::NoShim`] |
//! | 3 | an executor is Binding to it (launch and `OnSessionEnter` under way) | [`WaitReason::Binding`] |
//! | 4 | no Ready node is large enough for its resreq, even empty | [`WaitReason::FitsNoNode`] |
//! | 5 | a free executor fits it, or a Ready node has room | [`WaitReason::Scheduling`] (the next cycle grants it) |
//! | 6 | a session of equal or lower priority holds more executors than it | [`WaitReason::BelowShare`] (reclaim or rotation brings one) |
//! | 7 | otherwise: capacity is held by higher-priority sessions or by sessions with no more than its share | [`WaitReason::NoCapacity`] |
//!
//! Why from the applied state: any member can answer, and the answer follows the rules the
//! leader plans by, because it is computed by the same code.
//!
//! Caveat: the leader's timers (how long it has waited, how long an executor has idled) are not
//! replicated, so the reason says what will bring an executor, not when.

use super::cycle::{Cycle, Demand};
use super::resources::Res;
use super::{SchedulerConfig, WarmTimers};
use crate::state::State;
use flame_proto::model::{ExecutorState, ResourceRequirement, Shim};
use std::fmt;

/// Why a session is waiting; see the module docs for the order of the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Its binds failed `failures` times, the retry limit: it gets no new executors.
    RetryLimit {
        /// Failed binds.
        failures: u32,
    },
    /// No node runs instances of this shim.
    NoShim {
        /// The application's shim.
        shim: Shim,
    },
    /// Executors are starting for it (launch and `OnSessionEnter`).
    Binding {
        /// How many are Binding.
        starting: u32,
    },
    /// No Ready node is large enough for one executor of its size.
    FitsNoNode {
        /// The session's executor size.
        needs: ResourceRequirement,
    },
    /// Capacity is free; the next scheduling cycle grants an executor.
    Scheduling,
    /// A session of equal or lower priority holds more executors; one is reclaimed when idle,
    /// or rotated at a task boundary.
    BelowShare {
        /// Executors the session holds.
        holds: u32,
        /// The session holding the most executors among those of equal or lower priority.
        holder: String,
        /// How many that session holds.
        holder_holds: u32,
        /// Whether rotation is on (`cluster.rotation_wait_ms` > 0).
        rotation: bool,
    },
    /// Every executor that could serve it is held by higher-priority sessions or by sessions
    /// holding no more than it does.
    NoCapacity {
        /// The session's executor size.
        needs: ResourceRequirement,
    },
}

impl WaitReason {
    /// The reason's short name, as `flmctl` shows it in JSON: `retry limit`, `no shim`,
    /// `binding`, `fits no node`, `scheduling`, `below its share` or `no capacity`.
    pub fn name(&self) -> &'static str {
        match self {
            WaitReason::RetryLimit { .. } => "retry limit",
            WaitReason::NoShim { .. } => "no shim",
            WaitReason::Binding { .. } => "binding",
            WaitReason::FitsNoNode { .. } => "fits no node",
            WaitReason::Scheduling => "scheduling",
            WaitReason::BelowShare { .. } => "below its share",
            WaitReason::NoCapacity { .. } => "no capacity",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            WaitReason::RetryLimit { failures } => write!(
                f,
                "{name}: {failures} binds failed, so it gets no new executors (see its events)"
            ),
            WaitReason::NoShim { shim } => write!(f, "{name}: no node runs {shim:?} instances"),
            WaitReason::Binding { starting } => write!(
                f,
                "{name}: {starting} executor(s) starting for it (launch and OnSessionEnter)"
            ),
            WaitReason::FitsNoNode { needs } => write!(
                f,
                "{name}: it needs {needs} per executor and no Ready node is that large"
            ),
            WaitReason::Scheduling => {
                write!(
                    f,
                    "{name}: capacity is free; the next cycle grants an executor"
                )
            }
            WaitReason::BelowShare {
                holds,
                holder,
                holder_holds,
                rotation,
            } => {
                write!(
                    f,
                    "{name}: it holds {holds} executor(s) while session {holder} of equal or \
                     lower priority holds {holder_holds}; one comes to it when idle"
                )?;
                if *rotation {
                    write!(f, ", or at a task boundary after cluster.rotation_wait_ms")?;
                }
                Ok(())
            }
            WaitReason::NoCapacity { needs } => write!(
                f,
                "{name}: no room for {needs} and every executor is held by a session of higher \
                 priority or with no more than its share"
            ),
        }
    }
}

/// Why session `session_id` waits for executors, with how many it has and wants; `None` when
/// it does not wait (not Open, no Pending task, or every executor it wants is bound) or does
/// not exist.
pub fn explain(
    state: &State,
    config: &SchedulerConfig,
    session_id: &str,
) -> Option<(WaitReason, u32, u32)> {
    let cycle = Cycle::new(state, config, &WarmTimers::new());
    let d = cycle.demand(session_id)?;
    let starting = starting(state, session_id);
    if d.entry.session.counters.pending == 0 || d.instances >= d.desired && starting == 0 {
        return None;
    }
    let reason = reason(&cycle, d, starting);
    Some((reason, d.instances, d.desired))
}

/// Executors Binding to `session_id`.
fn starting(state: &State, session_id: &str) -> u32 {
    let count = state
        .executor_entries()
        .filter(|e| e.executor.state == ExecutorState::Binding)
        .filter(|e| e.executor.session_id.as_deref() == Some(session_id))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The first matching row of the module's table for waiting session `d`, which has
/// `starting` executors Binding.
fn reason(cycle: &Cycle<'_>, d: &Demand<'_>, starting: u32) -> WaitReason {
    let session_id = d.id();
    let needs = d.resreq();
    let size = Res::of(&needs);
    if !d.schedulable {
        let failures = d.entry.bind_failures;
        return WaitReason::RetryLimit { failures };
    }
    if d.shim != Shim::Host {
        return WaitReason::NoShim { shim: d.shim };
    }
    if starting > 0 {
        return WaitReason::Binding { starting };
    }
    if !cycle.nodes.values().any(|n| size.within(n.allocatable)) {
        return WaitReason::FitsNoNode { needs };
    }
    let max = cycle.config.max_executors_per_node;
    let room = cycle
        .nodes
        .values()
        .any(|n| n.executors < max && n.used.plus(size).within(n.allocatable));
    if room
        || cycle
            .free
            .get(&(needs, d.shim))
            .is_some_and(|q| !q.is_empty())
    {
        return WaitReason::Scheduling;
    }
    let priority = d.entry.session.spec.priority;
    let holder = cycle
        .sessions
        .iter()
        .filter(|o| o.id() != session_id && o.entry.session.spec.priority <= priority)
        .filter(|o| o.instances > d.instances)
        .max_by_key(|o| (o.instances, std::cmp::Reverse(o.id())));
    match holder {
        Some(o) => WaitReason::BelowShare {
            holds: d.instances,
            holder: o.id().to_owned(),
            holder_holds: o.instances,
            rotation: cycle.config.rotation_wait_ms > 0,
        },
        None => WaitReason::NoCapacity { needs },
    }
}
