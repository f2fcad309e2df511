//! [`Cycle`]: the working view of one scheduling cycle, derived from the replicated state once
//! and updated as the plan grows, so every step sees the decisions of the steps before it.
//!
//! What it holds:
//! - the Ready nodes with what their executors already hold (every executor not Released),
//!   and the total allocatable of Ready nodes (the DRF denominator);
//! - one [`Demand`] per Open session whose application exists: desired and current instances,
//!   the resources its executors hold, what this plan gave it and dispatched to it;
//! - the free executors (Idle or Void, no session, on a Ready node), by size and shim;
//! - the executors that got a task in this plan and the executor ids this plan created.
//!
//! Why: one pass over the executors instead of a scan per decision, and a single place where
//! "what the plan adds" is accounted (capacity, instances, shares).
//!
//! Caveat: sessions of unknown applications (which the state machine does not allow to exist
//! while Open) are ignored.

use super::resources::Res;
use super::{PlanStats, SchedulerConfig, WarmTimers};
use crate::state::{ExecutorEntry, SessionEntry, State};
use flame_proto::model::{ExecutorState, NodeState, ResourceRequirement, SessionState, Shim};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// What identifies interchangeable executors: exact size and shim.
pub(super) type Fit = (ResourceRequirement, Shim);

/// A Ready node and what is placed on it.
#[derive(Debug, Clone)]
pub(super) struct NodeRoom {
    /// The node's allocatable resources.
    pub allocatable: Res,
    /// Sum of the sizes of its executors (every state but Released), plus this plan's.
    pub used: Res,
    /// Its executors (every state but Released), plus this plan's.
    pub executors: u32,
}

/// What one Open session wants and has.
#[derive(Debug, Clone)]
pub(super) struct Demand<'s> {
    /// The session with its tasks.
    pub entry: &'s SessionEntry,
    /// The shim of the session's application.
    pub shim: Shim,
    /// The application's `delay_release` in milliseconds (never negative).
    pub delay_release_ms: i64,
    /// `clamp(pending + running, min_instances, max_instances)`.
    pub desired: u32,
    /// Binding and Bound executors, plus those this plan bound, minus those it unbound.
    pub instances: u32,
    /// Executors this plan bound to the session.
    pub granted: u32,
    /// Sum of the sizes of executors holding the session (any state), plus this plan's.
    pub allocated: Res,
    /// Below the bind retry limit: may get new executors.
    pub schedulable: bool,
    /// Tasks of the session this plan assigned.
    pub dispatched: u32,
    /// Since when the session has been waiting for executors, per the leader's timers.
    pub waiting_since: Option<i64>,
}

impl Demand<'_> {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.entry.session.id
    }

    /// The size of every executor of the session.
    pub fn resreq(&self) -> ResourceRequirement {
        self.entry.session.spec.resreq
    }

    /// True while the session may get more executors in this plan.
    pub fn needs_more(&self) -> bool {
        self.schedulable && self.instances < self.desired
    }

    /// Pending tasks left after this plan's dispatch.
    pub fn pending_after_dispatch(&self) -> u32 {
        self.entry
            .session
            .counters
            .pending
            .saturating_sub(self.dispatched)
    }

    /// Records one more executor bound to the session by this plan.
    pub fn record_grant(&mut self) {
        self.instances = self.instances.saturating_add(1);
        self.granted = self.granted.saturating_add(1);
        self.allocated = self.allocated.plus(Res::of(&self.resreq()));
    }
}

/// `clamp(pending + running, min_instances, min(session max_instances, application max))`;
/// when `min_instances` exceeds the maximum, the maximum wins.
pub(super) fn desired_instances(entry: &SessionEntry, application_max: u32) -> u32 {
    let spec = &entry.session.spec;
    let counters = &entry.session.counters;
    let cap = spec
        .max_instances
        .map_or(application_max, |m| m.min(application_max));
    let demand = u64::from(counters.pending) + u64::from(counters.running);
    let want = demand
        .max(u64::from(spec.min_instances))
        .min(u64::from(cap));
    u32::try_from(want).unwrap_or(cap)
}

/// The working view of one cycle; see the module docs.
#[derive(Debug)]
pub(super) struct Cycle<'s> {
    /// The replicated state the plan is made from.
    pub state: &'s State,
    /// The scheduler's settings.
    pub config: &'s SchedulerConfig,
    /// Total allocatable of Ready nodes.
    pub total: Res,
    /// Ready nodes by name.
    pub nodes: BTreeMap<&'s str, NodeRoom>,
    /// Demands of Open sessions, by session id.
    pub sessions: Vec<Demand<'s>>,
    /// Index into `sessions` by session id.
    pub index: BTreeMap<&'s str, usize>,
    /// Free executors not yet used by the plan, by fit, lowest id first.
    pub free: HashMap<Fit, VecDeque<&'s str>>,
    /// Every free executor not yet used by the plan, with its fit, by id.
    pub free_left: BTreeMap<&'s str, Fit>,
    /// The application each free executor last served (per [`WarmTimers`]), by id.
    pub free_app: HashMap<&'s str, String>,
    /// Executors this plan assigned a task to.
    pub busy: BTreeSet<&'s str>,
    /// Executor ids this plan created.
    pub created: BTreeSet<String>,
    /// Bound executors this plan unbound (step 4a).
    pub unbound: BTreeSet<&'s str>,
    /// What the plan decided, counted.
    pub stats: PlanStats,
}

impl<'s> Cycle<'s> {
    /// Derives the view of `state`, with the waits `timers` observed.
    pub fn new(state: &'s State, config: &'s SchedulerConfig, timers: &WarmTimers) -> Self {
        let nodes: BTreeMap<&str, NodeRoom> = state
            .nodes()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| {
                let room = NodeRoom {
                    allocatable: Res::of(&n.allocatable),
                    used: Res::default(),
                    executors: 0,
                };
                (n.name.as_str(), room)
            })
            .collect();
        let total = nodes
            .values()
            .fold(Res::default(), |t, n| t.plus(n.allocatable));
        let sessions = demands(state, config, timers);
        let index = sessions
            .iter()
            .enumerate()
            .map(|(i, d)| (d.entry.session.id.as_str(), i))
            .collect();
        let mut cycle = Cycle {
            state,
            config,
            total,
            nodes,
            sessions,
            index,
            free: HashMap::new(),
            free_left: BTreeMap::new(),
            free_app: HashMap::new(),
            busy: BTreeSet::new(),
            created: BTreeSet::new(),
            unbound: BTreeSet::new(),
            stats: PlanStats::default(),
        };
        for e in state.executor_entries() {
            cycle.account(e);
        }
        for id in cycle.free_left.keys() {
            if let Some(app) = timers.last_application(id) {
                cycle.free_app.insert(id, app.to_owned());
            }
        }
        cycle
    }

    /// Adds one existing executor to the node, session and free-pool accounting.
    fn account(&mut self, e: &'s ExecutorEntry) {
        let executor = &e.executor;
        if executor.state == ExecutorState::Released {
            return;
        }
        let size = Res::of(&executor.spec.resreq);
        let node = self.nodes.get_mut(executor.spec.node.as_str());
        let on_ready_node = node.is_some();
        if let Some(node) = node {
            node.used = node.used.plus(size);
            node.executors = node.executors.saturating_add(1);
        }
        match executor.session_id.as_deref() {
            Some(session_id) => {
                let Some(d) = self.demand_mut(session_id) else {
                    return;
                };
                d.allocated = d.allocated.plus(size);
                if matches!(
                    executor.state,
                    ExecutorState::Binding | ExecutorState::Bound
                ) {
                    d.instances = d.instances.saturating_add(1);
                }
            }
            None if on_ready_node
                && matches!(executor.state, ExecutorState::Idle | ExecutorState::Void) =>
            {
                let fit = (executor.spec.resreq, executor.spec.shim);
                self.free.entry(fit).or_default().push_back(&executor.id);
                self.free_left.insert(&executor.id, fit);
            }
            None => {}
        }
    }

    /// The demand of session `id`, if it is Open.
    pub fn demand_mut(&mut self, id: &str) -> Option<&mut Demand<'s>> {
        let i = *self.index.get(id)?;
        self.sessions.get_mut(i)
    }

    /// The demand of session `id`, if it is Open.
    pub fn demand(&self, id: &str) -> Option<&Demand<'s>> {
        self.sessions.get(*self.index.get(id)?)
    }

    /// True when `node` is Ready.
    pub fn is_ready(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }
}

/// One demand per Open session whose application exists, by session id.
fn demands<'s>(state: &'s State, config: &SchedulerConfig, timers: &WarmTimers) -> Vec<Demand<'s>> {
    state
        .session_entries()
        .filter(|s| s.session.state == SessionState::Open)
        .filter_map(|entry| {
            let app = state.application(&entry.session.spec.application)?;
            Some(Demand {
                entry,
                shim: app.spec.shim,
                delay_release_ms: app.spec.delay_release_secs.max(0).saturating_mul(1000),
                desired: desired_instances(entry, app.spec.max_instances),
                instances: 0,
                granted: 0,
                allocated: Res::default(),
                schedulable: entry.is_schedulable(config.bind_retry_limit),
                dispatched: 0,
                waiting_since: timers.waiting_since(&entry.session.id),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::model::{Session, SessionSpec, TaskCounters};

    fn entry(pending: u32, running: u32, min: u32, max: Option<u32>) -> SessionEntry {
        let spec = SessionSpec {
            application: "app".into(),
            common_data: None,
            min_instances: min,
            max_instances: max,
            priority: 0,
            resreq: ResourceRequirement::default(),
        };
        let mut entry = SessionEntry::new(Session {
            id: "s".into(),
            spec,
            state: SessionState::Open,
            creation_time_ms: 0,
            completion_time_ms: None,
            counters: TaskCounters::default(),
            events: Vec::new(),
        });
        entry.session.counters.pending = pending;
        entry.session.counters.running = running;
        entry
    }

    #[test]
    fn desired_is_pending_plus_running_clamped_to_the_instance_limits() {
        assert_eq!(desired_instances(&entry(3, 2, 0, None), 100), 5);
        assert_eq!(desired_instances(&entry(0, 0, 2, None), 100), 2);
        assert_eq!(desired_instances(&entry(9, 0, 0, Some(4)), 100), 4);
        assert_eq!(desired_instances(&entry(9, 0, 0, Some(40)), 3), 3);
        assert_eq!(desired_instances(&entry(0, 0, 5, Some(2)), 100), 2);
        let huge = entry(u32::MAX, u32::MAX, 0, None);
        assert_eq!(desired_instances(&huge, u32::MAX), u32::MAX);
    }
}
