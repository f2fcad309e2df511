//! The scheduler's pure core: what the leader proposes every `schedule_interval` (and after
//! relevant effects) to turn pending tasks into running ones (spec section 10, with every
//! recommended improvement; issue 4 items 2 and 3).
//!
//! What: [`plan`] reads the replicated [`State`] plus small leader-local inputs and returns the
//! [`Command`]s to propose, in the order they must be applied. It never reads a clock or an RNG:
//! `now_ms` and the executor-id generator come in as arguments, so the same inputs always give
//! the same plan, and every decision becomes a replicated command.
//!
//! Decisions, in order (a session *needs instances* while `bound + binding < desired`, where
//! `desired = clamp(pending + running, min_instances, min(session max_instances, application
//! max_instances))`; only Open sessions below the bind retry limit are *schedulable*):
//!
//! | # | Step | Applies to | Decision | Command |
//! |---|---|---|---|---|
//! | 1 | Dispatch | Bound executor on a Ready node holding fewer tasks than its session's queue depth (`state::queue`), its session has Pending tasks | the lowest-id Pending tasks of its session not yet assigned in this plan, dealt round-robin | one `AssignTasks` for all |
//! | 2 | Bind | Idle or Void executor without a session on a Ready node | bound to a schedulable session that needs instances, whose resreq equals the executor's exactly and whose application's shim equals the executor's; among equals, one that last served the session's application first (its agent may keep the process for a warm switch) | `BindExecutor` |
//! | 3 | Allocate | schedulable session still needing instances, application shim run by nodes (Host) | a new executor sized like the session's resreq on the Ready node with room that is least loaded after placement (cpu, memory, gpu within allocatable, counting every executor on the node; fewer than `max_executors_per_node` executors) | `CreateExecutor`, then `BindExecutor` |
//! | 4a | Delayed release | Bound executor holding no task, on a Ready node, not dispatched now, its session has no Pending task left | unbound once idle (per [`WarmTimers`]) for the application's `delay_release`, longest idle first, while its session keeps `desired` instances (so never below `min_instances`) | `UnbindExecutor` |
//! | 4a' | Reclaim | the same, while a schedulable session still needs instances after steps 2 and 3 and fits some Ready node | unbound once idle for the reclaim grace (`cluster.reclaim_grace_ms`, default 50 ms) instead of `delay_release`, longest idle first, at most as many as the waiting sessions still need, with the same floor | `UnbindExecutor` |
//! | 4c | Rotate | Bound executor of another session's size and shim, served its hold | for a session with Pending tasks waiting (per [`WarmTimers`]) at least `cluster.rotation_wait_ms` while a session of equal or lower priority holds more than it (or it holds none), kept above `min_instances`; see the `rotate` module | `YieldExecutor` (4a unbinds it once it holds no task) |
//! | 4b | Release | Idle or Void executor without a session on a Ready node, not bound in step 2 | released unless a session that still needs instances could use it | `ReleaseExecutor` |
//!
//! Cold starts: a rotation (4c) only takes an executor that has served ten times the latest
//! observed bind of its application ([`COLD_START_FACTOR`]), so rotation never costs more than a
//! tenth of the time in starts. Applications that opt in to warm switches
//! (`flame.warm-switch=true`, honoured by the node agent) bind in the time of one
//! `OnSessionEnter`, so their observed cost, and their hold, shrink with it.
//!
//! Order among sessions (steps 2 and 3): the configured [`Policy`]s in order, where `priority`
//! puts higher priorities first and `drf` lower dominant shares first (dominant share: the
//! largest of cpu, memory and gpu held by the session's executors over the total allocatable of
//! Ready nodes); then fewer grants in this plan, longer waiting (per [`WarmTimers`]), older
//! sessions, and session id. Grants are made
//! one executor at a time and the session's rank is recomputed after each (progressive
//! filling), so a session can get several executors per cycle, but one big session cannot
//! starve equal-priority sessions within a cycle.
//!
//! Why: the upstream scheduler grows a session by one executor per cycle, ignores per-node
//! capacity without `drf`, places executors on NotReady nodes and ignores `min_instances`
//! without `priority`; this one enforces capacity and node readiness always, honours
//! `min_instances` in every configuration and grows as fast as capacity allows.
//!
//! Caveats:
//! - Nodes run Host instances only, so Wasm sessions never get executors and stay Pending.
//! - Executors on Unknown (draining) nodes are left alone: they get no task, no session, no
//!   unbind and no release, and still count as their session's instances until the node comes
//!   back or expires (then the state machine deletes them and requeues their tasks). NotReady
//!   nodes have no executors and count toward no capacity.
//! - Sessions that close are unbound by the state machine (CloseSession moves their executors
//!   to Unbinding); the plan does not repeat it.
//! - A plan is computed from one state; if the state changes before it is applied, some
//!   commands may be refused. That is harmless: the next cycle plans again.
//! - Placement spreads executors (least loaded node first); it does not reserve GPU nodes for
//!   GPU sessions.
//! - [`WarmTimers`] is leader-local and not replicated: a new leader starts every timer afresh,
//!   which only keeps executors warm longer. The leader's loop per cycle is
//!   `timers.observe(state, now)`, `plan(...)`, `timers.note_plan(&commands)`, propose.

mod cycle;
mod dispatch;
mod explain;
mod grant;
mod release;
mod resources;
mod rotate;
mod timers;

pub use explain::{WaitReason, explain};
pub use rotate::COLD_START_FACTOR;
pub use timers::WarmTimers;

use crate::config::Config;
use crate::state::queue::DispatchPolicy;
use crate::state::{Command, DEFAULT_BIND_RETRY_LIMIT, State};
use cycle::Cycle;

/// Default of `cluster.reclaim_grace_ms`: an executor idle this long is taken for a waiting
/// session. Long enough to skip the gap between a client's result and its next task.
pub const DEFAULT_RECLAIM_GRACE_MS: i64 = 50;

/// Default of `cluster.rotation_wait_ms`: a session with work waits this long for an executor
/// before one held by a session with more is rotated to it at a task boundary.
pub const DEFAULT_ROTATION_WAIT_MS: i64 = 1_000;

/// A scheduling policy of `cluster.policies`; the configured order is the order of comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Higher session priority first.
    Priority,
    /// Lower dominant resource share first (dominant resource fairness).
    Drf,
}

impl Policy {
    /// The policy called `name` in `cluster.policies` (`priority` or `drf`).
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "priority" => Some(Policy::Priority),
            "drf" => Some(Policy::Drf),
            _ => None,
        }
    }
}

/// What the scheduler is configured with; the same on every member, like [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How sessions are ordered, first policy first; a repeated policy counts once. Capacity
    /// and node readiness are enforced whatever this says.
    pub policies: Vec<Policy>,
    /// Bind failures after which a session gets no new executors (must equal the state
    /// machine's `bind_retry_limit`).
    pub bind_retry_limit: u32,
    /// Most executors (in any state) one node may hold (`cluster.limits.max_executors`).
    pub max_executors_per_node: u32,
    /// How deep executor queues may be (`cluster.dispatch`).
    pub dispatch: DispatchPolicy,
    /// How long a bound executor must have been idle before it is taken for a session that
    /// waits for capacity (`cluster.reclaim_grace_ms`), in milliseconds.
    pub reclaim_grace_ms: i64,
    /// How long a session with work waits for executors before a fairer share is rotated to
    /// it, and the least time an executor serves before it may be rotated
    /// (`cluster.rotation_wait_ms`), in milliseconds; 0 turns rotation off.
    pub rotation_wait_ms: i64,
}

impl Default for SchedulerConfig {
    /// The specification's defaults: `[priority, drf]`, 5 bind failures, 128 executors a node;
    /// and a 50 ms reclaim grace.
    fn default() -> Self {
        SchedulerConfig {
            policies: vec![Policy::Priority, Policy::Drf],
            bind_retry_limit: DEFAULT_BIND_RETRY_LIMIT,
            max_executors_per_node: 128,
            dispatch: DispatchPolicy::default(),
            reclaim_grace_ms: DEFAULT_RECLAIM_GRACE_MS,
            rotation_wait_ms: DEFAULT_ROTATION_WAIT_MS,
        }
    }
}

impl SchedulerConfig {
    /// The scheduler settings of a (validated) configuration file. Unknown policy names, which
    /// validation refuses, are skipped.
    pub fn from_config(config: &Config) -> Self {
        let cluster = &config.cluster;
        SchedulerConfig {
            policies: cluster
                .policies
                .iter()
                .filter_map(|p| Policy::from_name(p))
                .collect(),
            bind_retry_limit: cluster.recovery.session.retry_limits,
            max_executors_per_node: cluster.limits.max_executors,
            dispatch: cluster.dispatch.policy(),
            reclaim_grace_ms: i64::try_from(cluster.reclaim_grace_ms).unwrap_or(i64::MAX),
            rotation_wait_ms: i64::try_from(cluster.rotation_wait_ms).unwrap_or(i64::MAX),
        }
    }
}

/// What a plan decided besides its commands' order, for the leader's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Idle executors unbound for a waiting session before their `delay_release` (step 4a').
    pub reclaims: u32,
    /// Idle executors unbound after their application's `delay_release` (step 4a).
    pub delayed_releases: u32,
    /// Executors marked to yield to a waiting session at their next task boundary (step 4c).
    pub rotations: u32,
}

/// The commands to propose now, in the order they must be applied; empty when nothing is to be
/// done. See the module docs for the decisions.
///
/// `now_ms` is the leader's clock (warm timers, waits); the commands carry no time, their entry
/// is dated when it is proposed;
/// `timers` must have observed the state being planned, and the leader passes the plan to
/// [`WarmTimers::note_plan`] before proposing it (see [`WarmTimers`]); `new_id` yields a fresh executor id per call (the leader passes UUIDv4s). An id that is
/// empty or already used is skipped; after a few such ids in a row the executor is not created.
pub fn plan(
    state: &State,
    now_ms: i64,
    timers: &WarmTimers,
    config: &SchedulerConfig,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Command> {
    plan_with_stats(state, now_ms, timers, config, new_id).0
}

/// [`plan`], with what it decided counted.
pub fn plan_with_stats(
    state: &State,
    now_ms: i64,
    timers: &WarmTimers,
    config: &SchedulerConfig,
    new_id: &mut dyn FnMut() -> String,
) -> (Vec<Command>, PlanStats) {
    let mut cycle = Cycle::new(state, config, timers);
    let mut out = Vec::new();
    let assignments = dispatch::assign(&mut cycle, &config.dispatch);
    if !assignments.is_empty() {
        out.push(Command::AssignTasks { assignments });
    }
    grant::bind(&mut cycle, &mut out);
    grant::allocate(&mut cycle, new_id, &mut out);
    release::unbind_idle(&mut cycle, timers, now_ms, &mut out);
    let before = out.len();
    rotate::rotate(&cycle, timers, now_ms, &mut out);
    let rotations = out.len().saturating_sub(before);
    cycle.stats.rotations = u32::try_from(rotations).unwrap_or(u32::MAX);
    release::release_free(&cycle, &mut out);
    (out, cycle.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_come_from_the_configuration_in_order() {
        let mut config = Config::default();
        config.cluster.policies = vec!["drf".into(), "priority".into(), "gang".into()];
        config.cluster.limits.max_executors = 7;
        config.cluster.recovery.session.retry_limits = 2;
        let s = SchedulerConfig::from_config(&config);
        assert_eq!(s.policies, vec![Policy::Drf, Policy::Priority]);
        assert_eq!((s.bind_retry_limit, s.max_executors_per_node), (2, 7));
        assert_eq!(
            SchedulerConfig::from_config(&Config::default()),
            SchedulerConfig::default()
        );
    }

    #[test]
    fn an_empty_state_needs_no_commands() {
        let mut ids = || "x".to_owned();
        let commands = plan(
            &State::default(),
            0,
            &WarmTimers::new(),
            &SchedulerConfig::default(),
            &mut ids,
        );
        assert!(commands.is_empty());
    }
}
