//! [`State`]: the in-memory model of the control plane and its queries.
//!
//! What: applications, sessions (each with its tasks), executors and nodes, plus the bookkeeping
//! the wire model lacks (request ids and requeue counts of tasks, bind failures of sessions, the
//! task an executor runs, the agent that owns a node), and what the object cache needs (the
//! object-drop log and the cluster CA; their queries are in the cache module).
//!
//! Why persistent maps: readers (Frontend handlers, watchers) get an immutable copy of the state
//! after every durable batch. Every collection here is an `imbl` structure holding `Arc`s, so
//! cloning a [`State`] costs eight reference-count increments, and the first change after a clone
//! copies only the touched path: one session entry (a few strings and small vectors), the
//! 64-slot chunks of its task vector that change, and O(log n) map nodes. A batch that touches
//! k tasks therefore copies O(k + log n) small nodes, independent of the number of tasks held.
//!
//! Caveats:
//! - Task ids of a session are exactly `1..=n`, stored at index `id - 1`; tasks are never
//!   removed one by one, only with their session.
//! - Session counters, the Pending set and the request-id index are maintained incrementally by
//!   [`SessionEntry::update_task`] and [`SessionEntry::push_task`], the only ways a task changes;
//!   `restore` recomputes them from the tasks.
//! - Every map is ordered, so iteration (and therefore apply) is deterministic.

use super::cache::ClusterCa;
use super::command::TaskRef;
use flame_proto::error::FlameError;
use flame_proto::model::{
    Application, Executor, Node, ObjectDrop, Session, Task, TaskCounters, TaskState,
};
use imbl::{OrdMap, OrdSet, Vector};
use std::sync::Arc;

/// A task and the bookkeeping the wire model has no field for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    /// The task as clients see it.
    pub task: Task,
    /// The client's idempotency key, if it sent one.
    pub request_id: Option<String>,
    /// How many times the task went back from Running to Pending.
    pub requeues: u32,
}

/// A session with its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The session as clients see it; its counters always equal its tasks' states.
    pub session: Session,
    /// Bind failures since the last successful bind; at the limit the session is paused.
    pub bind_failures: u32,
    /// Mean task duration the agents measured, in microseconds (an EWMA; 0 = unknown); it
    /// sizes executor queues.
    pub mean_task_us: u64,
    tasks: Vector<Arc<TaskEntry>>,
    pending: OrdSet<u64>,
    request_ids: OrdMap<String, u64>,
}

/// The index of task `id` in the task vector, if `id` can name a task at all.
fn index_of(id: u64) -> Option<usize> {
    id.checked_sub(1).and_then(|i| usize::try_from(i).ok())
}

impl SessionEntry {
    /// A session without tasks; its counters are reset to zero.
    pub fn new(mut session: Session) -> Self {
        session.counters = TaskCounters::default();
        SessionEntry {
            session,
            bind_failures: 0,
            mean_task_us: 0,
            tasks: Vector::new(),
            pending: OrdSet::new(),
            request_ids: OrdMap::new(),
        }
    }

    /// Rebuilds a session from stored parts; the tasks must be exactly ids `1..=n` in order.
    pub fn from_parts(
        session: Session,
        bind_failures: u32,
        tasks: Vec<TaskEntry>,
    ) -> Result<Self, String> {
        let mut entry = SessionEntry::new(session);
        entry.bind_failures = bind_failures;
        for task in tasks {
            let expected = entry.task_count() + 1;
            if task.task.id != expected || task.task.session_id != entry.session.id {
                return Err(format!(
                    "session {} has task {}/{} where task {expected} was expected",
                    entry.session.id, task.task.session_id, task.task.id
                ));
            }
            entry.push_task(task);
        }
        Ok(entry)
    }

    /// The number of tasks, which is also the id of the newest one.
    pub fn task_count(&self) -> u64 {
        self.tasks.len() as u64
    }

    /// The task with id `id`.
    pub fn task(&self, id: u64) -> Option<&TaskEntry> {
        self.tasks.get(index_of(id)?).map(|t| t.as_ref())
    }

    /// Every task, in ascending id order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskEntry> {
        self.tasks.iter().map(|t| t.as_ref())
    }

    /// Ids of the Pending tasks, lowest first (the dispatch order).
    pub fn pending_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.iter().copied()
    }

    /// The task created for request id `request_id`, if any.
    pub fn task_for_request(&self, request_id: &str) -> Option<u64> {
        self.request_ids.get(request_id).copied()
    }

    /// True while bind failures are below `limit`: the session may get new executors.
    pub fn is_schedulable(&self, limit: u32) -> bool {
        self.bind_failures < limit
    }

    /// Appends a task; its id must be `task_count() + 1` (callers assign it so).
    pub(crate) fn push_task(&mut self, entry: TaskEntry) {
        let id = entry.task.id;
        let state = entry.task.state;
        if let Some(request_id) = &entry.request_id {
            self.request_ids.insert(request_id.clone(), id.into());
        }
        self.session.counters.add(state);
        if state == TaskState::Pending {
            self.pending.insert(id.into());
        }
        self.tasks.push_back(Arc::new(entry));
    }

    /// Changes task `id` with `change`, keeping the counters and the Pending set in step.
    /// `change` must not alter the task's id, session or request id.
    pub(crate) fn update_task(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut TaskEntry),
    ) -> Option<&TaskEntry> {
        let index = index_of(id)?;
        let slot = self.tasks.get_mut(index)?;
        let entry = Arc::make_mut(slot);
        let before = entry.task.state;
        change(entry);
        let after = entry.task.state;
        if before != after {
            self.session.counters.transition(before, after);
            if before == TaskState::Pending {
                self.pending.remove(&id);
            }
            if after == TaskState::Pending {
                self.pending.insert(id);
            }
        }
        self.task(id)
    }
}

/// An executor and the tasks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorEntry {
    /// The executor as clients see it.
    pub executor: Executor,
    /// The Running tasks handed to the executor, in the order it runs them: the first is the
    /// one it runs (or is about to), the rest are queued (see the queue module).
    pub tasks: Vec<TaskRef>,
    /// When the scheduler created it, in Unix milliseconds.
    pub creation_time_ms: i64,
    /// The scheduler asked it to give its session up at its next task boundary (a fair-share
    /// rotation): it gets no new task, and the scheduler unbinds it once it holds none.
    /// Cleared when it leaves Bound.
    pub yielding: bool,
}

/// A node and the agent that registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// The node as clients see it.
    pub node: Node,
    /// The agent that owns the node name while the node is live.
    pub agent_id: String,
}

/// The replicated model. Cheap to clone; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub(crate) applications: OrdMap<String, Arc<Application>>,
    pub(crate) sessions: OrdMap<String, Arc<SessionEntry>>,
    pub(crate) executors: OrdMap<String, Arc<ExecutorEntry>>,
    pub(crate) nodes: OrdMap<String, Arc<NodeEntry>>,
    /// The retained object drops, oldest first, with consecutive seqs.
    pub(crate) object_drops: Vector<ObjectDrop>,
    /// The cluster CA, once the first SetClusterCa was applied.
    pub(crate) cluster_ca: Option<Arc<ClusterCa>>,
    /// Request ids of recent client writes and their answers.
    pub(crate) requests: super::requests::RequestTable,
}

/// `NotFound("session <id> not found")`.
pub(crate) fn session_not_found(id: &str) -> FlameError {
    FlameError::NotFound(format!("session {id} not found"))
}

impl State {
    /// The application named `name`.
    pub fn application(&self, name: &str) -> Option<&Application> {
        self.applications.get(name).map(|a| a.as_ref())
    }

    /// Every application, by name.
    pub fn applications(&self) -> impl Iterator<Item = &Application> {
        self.applications.values().map(|a| a.as_ref())
    }

    /// The session `id`, with counters consistent with its tasks.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.session_entry(id).map(|s| &s.session)
    }

    /// The session `id` with its tasks and bookkeeping.
    pub fn session_entry(&self, id: &str) -> Option<&SessionEntry> {
        self.sessions.get(id).map(|s| s.as_ref())
    }

    /// Every session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.session_entries().map(|s| &s.session)
    }

    /// Every session entry, by id.
    pub fn session_entries(&self) -> impl Iterator<Item = &SessionEntry> {
        self.sessions.values().map(|s| s.as_ref())
    }

    /// The task `task_id` of session `session_id`.
    pub fn task(&self, session_id: &str, task_id: u64) -> Option<&Task> {
        Some(&self.session_entry(session_id)?.task(task_id)?.task)
    }

    /// The tasks of a session in ascending id order; `NotFound` for an unknown session.
    pub fn tasks(&self, session_id: &str) -> Result<impl Iterator<Item = &Task>, FlameError> {
        let entry = self
            .session_entry(session_id)
            .ok_or_else(|| session_not_found(session_id))?;
        Ok(entry.tasks().map(|t| &t.task))
    }

    /// The executor `id`.
    pub fn executor(&self, id: &str) -> Option<&Executor> {
        self.executor_entry(id).map(|e| &e.executor)
    }

    /// The executor `id` with the tasks it holds.
    pub fn executor_entry(&self, id: &str) -> Option<&ExecutorEntry> {
        self.executors.get(id).map(|e| e.as_ref())
    }

    /// Every executor, by id.
    pub fn executors(&self) -> impl Iterator<Item = &Executor> {
        self.executor_entries().map(|e| &e.executor)
    }

    /// Every executor entry, by id.
    pub fn executor_entries(&self) -> impl Iterator<Item = &ExecutorEntry> {
        self.executors.values().map(|e| e.as_ref())
    }

    /// The node `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_entry(name).map(|n| &n.node)
    }

    /// The node `name` with its agent.
    pub fn node_entry(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.get(name).map(|n| n.as_ref())
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().map(|n| &n.node)
    }

    /// The number of sessions of application `name` that are Open.
    pub fn open_sessions_of(&self, name: &str) -> usize {
        self.sessions()
            .filter(|s| s.spec.application == name)
            .filter(|s| s.state == flame_proto::model::SessionState::Open)
            .count()
    }

    /// Mutable access to a session (copy-on-write if a reader shares it).
    pub(crate) fn session_mut(&mut self, id: &str) -> Option<&mut SessionEntry> {
        self.sessions.get_mut(id).map(Arc::make_mut)
    }

    /// Mutable access to an executor (copy-on-write if a reader shares it).
    pub(crate) fn executor_mut(&mut self, id: &str) -> Option<&mut ExecutorEntry> {
        self.executors.get_mut(id).map(Arc::make_mut)
    }

    /// Mutable access to a node (copy-on-write if a reader shares it).
    pub(crate) fn node_mut(&mut self, name: &str) -> Option<&mut NodeEntry> {
        self.nodes.get_mut(name).map(Arc::make_mut)
    }

    /// The request ids of recent client writes.
    pub fn requests(&self) -> &super::requests::RequestTable {
        &self.requests
    }

    /// The id of the executor holding `task`, if any.
    pub(crate) fn executor_holding(&self, task: &TaskRef) -> Option<String> {
        self.executor_entries()
            .find(|e| e.tasks.contains(task))
            .map(|e| e.executor.id.clone())
            .map(Into::into)
    }
}
