//! Sessions and tasks: [`SessionSpec`], [`Session`], [`TaskCounters`] and [`Task`] (spec sections
//! 3.3, 5.3 and 5.4).
//!
//! Caveats: `batch_size` is not stored, because the server always answers 1. The resource
//! request is stored resolved (explicit value, else cluster default, else
//! [`ResourceRequirement::default`]), so comparisons in OpenSession see the resolved value.
//! Session counters are maintained by the control plane as tasks change state; the
//! [`TaskCounters`] helpers keep them consistent.

use super::{Event, ResourceRequirement, SessionId, SessionState, TaskId, TaskState};
use crate::error::FlameError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a session asks for; compared field by field by OpenSession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Name of the application the session runs.
    pub application: String,
    /// Opaque data handed to every instance in OnSessionEnter; `None` when the client sent none
    /// (an empty value counts as present).
    pub common_data: Option<Bytes>,
    /// Executors the scheduler keeps for the session even when it has no pending tasks.
    pub min_instances: u32,
    /// Most executors the session may hold; `None` means unlimited.
    pub max_instances: Option<u32>,
    /// Scheduling priority; 0 is the lowest.
    pub priority: u32,
    /// Resources of each executor, already resolved against the cluster default.
    pub resreq: ResourceRequirement,
}

fn or_unlimited(v: Option<u32>) -> String {
    v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

impl SessionSpec {
    /// The first field in which `given` differs from `self`, in the order of spec section 5.3
    /// (application, resreq, min_instances, max_instances, priority), as
    /// `(field, expected, got)`. `common_data` is not compared.
    pub fn first_difference(&self, given: &SessionSpec) -> Option<(&'static str, String, String)> {
        if self.application != given.application {
            let (a, b) = (self.application.clone(), given.application.clone());
            return Some(("application", a, b));
        }
        if self.resreq != given.resreq {
            return Some(("resreq", self.resreq.to_string(), given.resreq.to_string()));
        }
        if self.min_instances != given.min_instances {
            let (a, b) = (self.min_instances, given.min_instances);
            return Some(("min_instances", a.to_string(), b.to_string()));
        }
        if self.max_instances != given.max_instances {
            let (a, b) = (self.max_instances, given.max_instances);
            return Some(("max_instances", or_unlimited(a), or_unlimited(b)));
        }
        if self.priority != given.priority {
            let (a, b) = (self.priority, given.priority);
            return Some(("priority", a.to_string(), b.to_string()));
        }
        None
    }

    /// OpenSession's spec check: `Ok` when `given` matches, else `InvalidState` with
    /// `session <ID> spec mismatch: <field> differs (expected <stored>, got <given>)`.
    pub fn check_matches(&self, session_id: &str, given: &SessionSpec) -> Result<(), FlameError> {
        match self.first_difference(given) {
            None => Ok(()),
            Some((field, expected, got)) => Err(FlameError::InvalidState(format!(
                "session {session_id} spec mismatch: {field} differs \
                 (expected {expected}, got {got})"
            ))),
        }
    }
}

/// How many of a session's tasks are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskCounters {
    /// Tasks waiting for an executor.
    pub pending: u32,
    /// Tasks handed to an executor.
    pub running: u32,
    /// Tasks that succeeded.
    pub succeed: u32,
    /// Tasks that failed.
    pub failed: u32,
    /// Tasks cancelled by CloseSession.
    pub cancelled: u32,
}

impl TaskCounters {
    /// The counter of `state`.
    pub fn get(&self, state: TaskState) -> u32 {
        match state {
            TaskState::Pending => self.pending,
            TaskState::Running => self.running,
            TaskState::Succeed => self.succeed,
            TaskState::Failed => self.failed,
            TaskState::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, state: TaskState) -> &mut u32 {
        match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Running => &mut self.running,
            TaskState::Succeed => &mut self.succeed,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }

    /// Counts a new task in `state`.
    pub fn add(&mut self, state: TaskState) {
        let slot = self.slot(state);
        *slot = slot.saturating_add(1);
    }

    /// Uncounts a task in `state` (a removed task); never goes below zero.
    pub fn remove(&mut self, state: TaskState) {
        let slot = self.slot(state);
        *slot = slot.saturating_sub(1);
    }

    /// Moves one task from `from` to `to`.
    pub fn transition(&mut self, from: TaskState, to: TaskState) {
        self.remove(from);
        self.add(to);
    }

    /// The number of tasks counted in all states.
    pub fn total(&self) -> u64 {
        TaskState::ALL.iter().map(|s| u64::from(self.get(*s))).sum()
    }
}

/// A session: a client's conversation with one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Client-chosen id, unique in the cluster.
    pub id: SessionId,
    /// What the session asked for, with resolved defaults.
    pub spec: SessionSpec,
    /// Open until CloseSession.
    pub state: SessionState,
    /// When the session was created, in Unix milliseconds.
    pub creation_time_ms: i64,
    /// When the session was first closed, in Unix milliseconds; `None` while Open.
    pub completion_time_ms: Option<i64>,
    /// Tasks per state.
    pub counters: TaskCounters,
    /// Session-level events only (codes 1001 and 1002), oldest first.
    pub events: Vec<Event>,
}

/// A task: one invocation of the session's application with opaque input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Per-session sequence number; the first task is 1 and ids are never reused.
    pub id: TaskId,
    /// The owning session.
    pub session_id: SessionId,
    /// Input bytes; `None` when the client sent none (an empty value counts as present).
    pub input: Option<Bytes>,
    /// Output bytes the instance returned; `None` until then, or when it returned none.
    pub output: Option<Bytes>,
    /// Current state.
    pub state: TaskState,
    /// When the task was created, in Unix milliseconds.
    pub creation_time_ms: i64,
    /// When the task reached a terminal state, in Unix milliseconds.
    pub completion_time_ms: Option<i64>,
    /// The task's events, oldest first.
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        SessionSpec {
            application: "flmrun".into(),
            common_data: Some(Bytes::from_static(b"ctx")),
            min_instances: 1,
            max_instances: None,
            priority: 0,
            resreq: ResourceRequirement::default(),
        }
    }

    #[test]
    fn matching_specs_ignore_common_data() {
        let stored = spec();
        let given = SessionSpec {
            common_data: None,
            ..spec()
        };
        assert_eq!(stored.check_matches("s1", &given), Ok(()));
    }

    #[test]
    fn mismatch_names_the_first_differing_field_in_spec_order() {
        let stored = spec();
        let given = SessionSpec {
            max_instances: Some(2),
            priority: 9,
            ..spec()
        };
        let err = stored.check_matches("s1", &given).unwrap_err();
        assert_eq!(
            err,
            FlameError::InvalidState(
                "session s1 spec mismatch: max_instances differs (expected unlimited, got 2)"
                    .into()
            )
        );
        let given = SessionSpec {
            application: "other".into(),
            resreq: ResourceRequirement {
                cpu: 2,
                ..ResourceRequirement::default()
            },
            ..spec()
        };
        let (field, _, _) = stored.first_difference(&given).unwrap();
        assert_eq!(field, "application");
        let given = SessionSpec {
            resreq: ResourceRequirement {
                cpu: 2,
                ..ResourceRequirement::default()
            },
            min_instances: 3,
            ..spec()
        };
        assert_eq!(
            stored.first_difference(&given),
            Some((
                "resreq",
                "cpu=1,mem=1g,gpu=0".into(),
                "cpu=2,mem=1g,gpu=0".into()
            ))
        );
    }

    #[test]
    fn counters_follow_transitions_and_never_underflow() {
        let mut c = TaskCounters::default();
        c.add(TaskState::Pending);
        c.add(TaskState::Pending);
        c.transition(TaskState::Pending, TaskState::Running);
        c.transition(TaskState::Running, TaskState::Succeed);
        c.remove(TaskState::Failed);
        assert_eq!((c.pending, c.running, c.succeed, c.failed), (1, 0, 1, 0));
        assert_eq!(c.total(), 2);
    }
}
