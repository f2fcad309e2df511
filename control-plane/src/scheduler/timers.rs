//! [`WarmTimers`]: the leader-local record of when each executor and session last changed in
//! ways the scheduler times: when a Bound executor became idle (delayed release, reclaim), when
//! it was bound (the least time it serves before a rotation), how long binds of each
//! application took (the cold-start cost a rotation pays) and since when a session has been
//! waiting for executors (the order and the bound of rotations).
//!
//! What [`WarmTimers::observe`] updates from a state:
//! - idle: every Bound executor without a running task, with its session and the time it was
//!   first seen idle there; a busy, unbound, rebound or gone executor loses its timer;
//! - bound: every Binding or Bound executor, with its session and the time it was first seen
//!   Bound there; the time from its first sighting as Binding to its first as Bound is the
//!   latest bind cost of its session's application;
//! - last application: the application of the session each existing executor was last seen
//!   Binding or Bound to (so a free executor goes back to its application, whose process an
//!   agent may have kept for a warm switch);
//! - first executor: the first time an Open session is seen with a Bound executor, how long
//!   after its creation that was ([`WarmTimers::take_first_waits`], for the leader's metrics);
//! - waiting: every Open session with Pending tasks and fewer Binding or Bound executors than it
//!   desires, with the time it was first seen so with its current count of them (a change of
//!   the count restarts the wait); it leaves the record once it has them all.
//!
//! Why leader-local: idleness changes with every task, and replicating a timestamp per task
//! completion would double the log traffic of the hot path for decisions only the leader makes.
//!
//! Caveats:
//! - First-executor waits count sessions this leader saw get their first executor: sessions
//!   already served when a leader starts (its first observation) are not counted, and a session
//!   that lost every executor before a leader change is counted again when it gets one.
//! - Not replicated: a new leader starts with no timers, so every delay, hold and wait starts
//!   again at its first observation. That only keeps executors warm and bound longer.
//! - Only what is observed counts: a task assigned and completed between two calls of
//!   `observe` would go unnoticed, and an executor serving a slow trickle of quick tasks would
//!   look idle all along. Every assignment comes from a plan, so the leader passes each plan to
//!   [`WarmTimers::note_plan`], which restarts the timers of the executors it gives a task; the
//!   next observation that finds them idle starts their delay again (at most one cycle after
//!   the task really ended, which errs on the warm side). Bind costs are as coarse as the
//!   observations (one scheduling cycle).

use super::cycle::desired_instances;
use crate::state::{Command, ExecutorEntry, State};
use flame_proto::model::{ExecutorId, ExecutorState, Session, SessionId, SessionState};
use std::collections::{BTreeMap, BTreeSet};

/// Since when an executor has been in some condition, and in which session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Since {
    /// The session the executor was bound to when the condition began.
    session_id: String,
    /// When it was first observed so in that session, in Unix milliseconds.
    since_ms: i64,
}

/// The bind of an executor to a session, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    /// The session.
    session_id: String,
    /// When the executor was first observed Binding to the session, if it was.
    binding_ms: Option<i64>,
    /// When it was first observed Bound to the session, once it was.
    bound_ms: Option<i64>,
}

/// The scheduler's leader-local timers; see the module docs. Not replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmTimers {
    /// Idle Bound executors, by id.
    idle: BTreeMap<ExecutorId, Since>,
    /// Binding and Bound executors, by id.
    held: BTreeMap<ExecutorId, Held>,
    /// The latest observed bind time of each application, in milliseconds.
    bind_cost: BTreeMap<String, i64>,
    /// The application each executor was last observed held for, by executor id.
    last_app: BTreeMap<ExecutorId, String>,
    /// Open sessions observed with a Bound executor at least once.
    served: BTreeSet<SessionId>,
    /// Whether anything was observed yet (the first observation counts no first executor).
    primed: bool,
    /// Milliseconds from creation to first Bound executor, of sessions served since the last
    /// [`WarmTimers::take_first_waits`].
    first_waits: Vec<i64>,
    /// Sessions waiting for executors: how many they held when last observed, and since
    /// when they have waited with that many.
    waiting: BTreeMap<SessionId, (u32, i64)>,
}

/// The session of `e` if it is Bound and runs no task.
fn idle_session(e: &ExecutorEntry) -> Option<&str> {
    if e.executor.state != ExecutorState::Bound || !e.tasks.is_empty() {
        return None;
    }
    e.executor.session_id.as_deref()
}

/// The session of `e` if it is Binding or Bound.
fn held_session(e: &ExecutorEntry) -> Option<&str> {
    if !matches!(
        e.executor.state,
        ExecutorState::Binding | ExecutorState::Bound
    ) {
        return None;
    }
    e.executor.session_id.as_deref()
}

impl WarmTimers {
    /// No timers (what a new leader starts with).
    pub fn new() -> Self {
        WarmTimers::default()
    }

    /// Updates the timers from `state` observed at `now_ms`: starts a timer for every newly
    /// idle Bound executor and drops the timers of executors that are busy, not Bound, bound
    /// to another session or gone.
    pub fn observe(&mut self, state: &State, now_ms: i64) {
        self.observe_idle(state, now_ms);
        self.observe_held(state, now_ms);
        self.observe_waiting(state, now_ms);
    }

    fn observe_idle(&mut self, state: &State, now_ms: i64) {
        self.idle.retain(|id, idle| {
            state
                .executor_entry(id)
                .and_then(idle_session)
                .is_some_and(|s| s == idle.session_id)
        });
        for e in state.executor_entries() {
            let Some(session_id) = idle_session(e) else {
                continue;
            };
            if !self.idle.contains_key(&e.executor.id) {
                let idle = Since {
                    session_id: session_id.to_owned(),
                    since_ms: now_ms,
                };
                self.idle.insert(e.executor.id.clone(), idle);
            }
        }
    }

    /// One pass over the Binding and Bound executors: hold times, bind costs, last
    /// applications and first executors.
    fn observe_held(&mut self, state: &State, now_ms: i64) {
        self.held.retain(|id, held| {
            state
                .executor_entry(id)
                .and_then(held_session)
                .is_some_and(|s| s == held.session_id)
        });
        self.last_app
            .retain(|id, _| state.executor_entry(id).is_some());
        self.served.retain(|id| {
            state
                .session(id)
                .is_some_and(|s| s.state == SessionState::Open)
        });
        for e in state.executor_entries() {
            let Some(session_id) = held_session(e) else {
                continue;
            };
            let session = state.session(session_id);
            if let Some(session) = session {
                let app = &session.spec.application;
                if self.last_app.get(&e.executor.id) != Some(app) {
                    self.last_app.insert(e.executor.id.clone(), app.clone());
                }
                if e.executor.state == ExecutorState::Bound {
                    self.note_served(session, now_ms);
                }
            }
            let held = self.held.entry(e.executor.id.clone()).or_insert(Held {
                session_id: session_id.to_owned(),
                binding_ms: None,
                bound_ms: None,
            });
            match e.executor.state {
                ExecutorState::Binding => {
                    held.binding_ms.get_or_insert(now_ms);
                }
                _ if held.bound_ms.is_none() => {
                    held.bound_ms = Some(now_ms);
                    let application = session.map(|s| s.spec.application.clone());
                    if let (Some(start), Some(app)) = (held.binding_ms, application) {
                        self.bind_cost.insert(app, now_ms.saturating_sub(start));
                    }
                }
                _ => {}
            }
        }
        self.primed = true;
    }

    /// Records `session` (seen with a Bound executor) as served; the first time, after the
    /// first observation, its wait since creation is a first-executor wait.
    fn note_served(&mut self, session: &Session, now_ms: i64) {
        if session.state != SessionState::Open || self.served.contains(&session.id) {
            return;
        }
        self.served.insert(session.id.clone());
        if self.primed {
            let waited = now_ms.saturating_sub(session.creation_time_ms).max(0);
            self.first_waits.push(waited);
        }
    }

    fn observe_waiting(&mut self, state: &State, now_ms: i64) {
        let mut instances: BTreeMap<&str, u32> = BTreeMap::new();
        for e in state.executor_entries() {
            if let Some(session_id) = held_session(e) {
                *instances.entry(session_id).or_default() += 1;
            }
        }
        let mut waiting = BTreeMap::new();
        for entry in state.session_entries() {
            let session = &entry.session;
            if session.state != SessionState::Open || session.counters.pending == 0 {
                continue;
            }
            let Some(app) = state.application(&session.spec.application) else {
                continue;
            };
            let have = instances.get(session.id.as_str()).copied().unwrap_or(0);
            if have < desired_instances(entry, app.spec.max_instances) {
                waiting.insert(session.id.as_str(), have);
            }
        }
        self.waiting
            .retain(|id, _| waiting.contains_key(id.as_str()));
        for (id, have) in waiting {
            let wait = self
                .waiting
                .entry(id.to_owned().into())
                .or_insert((have, now_ms));
            if wait.0 != have {
                *wait = (have, now_ms);
            }
        }
    }

    /// Forgets the timers of the executors `commands` (a plan) assign a task to, so their delay
    /// starts again when they are next observed idle. Call it with every plan proposed.
    pub fn note_plan(&mut self, commands: &[Command]) {
        for command in commands {
            if let Command::AssignTasks { assignments, .. } = command {
                for a in assignments {
                    self.idle.remove(a.executor_id.as_str());
                }
            }
        }
    }

    /// When executor `executor_id` became idle while bound to `session_id`, if it is idle in
    /// that session as of the last observation.
    pub fn idle_since(&self, executor_id: &str, session_id: &str) -> Option<i64> {
        self.idle
            .get(executor_id)
            .filter(|idle| idle.session_id == session_id)
            .map(|idle| idle.since_ms)
    }

    /// When executor `executor_id` was first observed Bound to `session_id`, if it still is.
    pub fn bound_since(&self, executor_id: &str, session_id: &str) -> Option<i64> {
        self.held
            .get(executor_id)
            .filter(|held| held.session_id == session_id)
            .and_then(|held| held.bound_ms)
    }

    /// How long the latest observed bind of an executor to a session of `application` took,
    /// in milliseconds (the cold start a rotation costs), if one was observed.
    pub fn bind_cost_ms(&self, application: &str) -> Option<i64> {
        self.bind_cost.get(application).copied()
    }

    /// The application of the session executor `executor_id` was last observed held for.
    pub fn last_application(&self, executor_id: &str) -> Option<&str> {
        self.last_app.get(executor_id).map(String::as_str)
    }

    /// Since when session `session_id` has been waiting for executors (Open, Pending tasks,
    /// fewer executors than it desires) holding as many as it holds now, if it is: a session
    /// that gains or loses an executor starts waiting afresh, so one just served ranks after
    /// one that was not, and one that just gave an executor up waits its turn again.
    pub fn waiting_since(&self, session_id: &str) -> Option<i64> {
        self.waiting.get(session_id).map(|&(_, since)| since)
    }

    /// How many sessions are waiting for executors (Open, Pending tasks, fewer executors than
    /// they desire) as of the last observation.
    pub fn waiting_sessions(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the first-executor waits (milliseconds from creation to the first Bound executor)
    /// of sessions first observed served since the last call.
    pub fn take_first_waits(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.first_waits)
    }

    /// The number of idle executors with a running timer.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// True when no idle executor has a running timer.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}
