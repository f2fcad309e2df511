//! [`WarmTimers`]: the leader-local record of when each Bound executor last became idle, which
//! delayed release (the application's `delay_release`) is decided from.
//!
//! What: for every Bound executor without a running task, the session it is bound to and the
//! time it was first seen idle in that session. [`WarmTimers::observe`] updates the record from
//! a state: a newly idle executor starts its timer at `now_ms`; an executor that runs a task, is
//! no longer Bound, was rebound to another session or is gone loses its timer.
//!
//! Why leader-local: idleness changes with every task, and replicating a timestamp per task
//! completion would double the log traffic of the hot path for a decision only the leader makes.
//!
//! Caveats:
//! - Not replicated: a new leader starts with no timers, so every idle executor's delay starts
//!   again at its first observation. That only keeps executors warm longer, never shorter.
//! - Only what is observed counts: a task assigned and completed between two calls of
//!   `observe` would go unnoticed, and an executor serving a slow trickle of quick tasks would
//!   look idle all along. Every assignment comes from a plan, so the leader passes each plan to
//!   [`WarmTimers::note_plan`], which restarts the timers of the executors it gives a task; the
//!   next observation that finds them idle starts their delay again (at most one cycle after
//!   the task really ended, which errs on the warm side).

use crate::state::{Command, ExecutorEntry, State};
use flame_proto::model::ExecutorState;
use std::collections::BTreeMap;

/// When an executor became idle, and in which session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Idle {
    /// The session the executor was bound to when it became idle.
    session_id: String,
    /// When it was first observed idle in that session, in Unix milliseconds.
    since_ms: i64,
}

/// When each Bound executor last became idle; see the module docs. Not replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmTimers {
    idle: BTreeMap<String, Idle>,
}

/// The session of `e` if it is Bound and runs no task.
fn idle_session(e: &ExecutorEntry) -> Option<&str> {
    if e.executor.state != ExecutorState::Bound || !e.tasks.is_empty() {
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
                let idle = Idle {
                    session_id: session_id.to_owned(),
                    since_ms: now_ms,
                };
                self.idle.insert(e.executor.id.clone(), idle);
            }
        }
    }

    /// Forgets the timers of the executors `commands` (a plan) assign a task to, so their delay
    /// starts again when they are next observed idle. Call it with every plan proposed.
    pub fn note_plan(&mut self, commands: &[Command]) {
        for command in commands {
            if let Command::AssignTasks { assignments, .. } = command {
                for a in assignments {
                    self.idle.remove(&a.executor_id);
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

    /// The number of executors with a running timer.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// True when no executor has a running timer.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}
