//! The replicated state machine of the control plane: applications, sessions, tasks, executors
//! and nodes, with upstream Flame's semantics (compatibility spec sections 4, 5, 6, 9.2 and 10).
//!
//! What:
//! - [`Proposal`]: one Raft entry, the leader's time (`now_ms`) and the [`Command`]s it batched.
//!   The leader decides that time, every executor id and every other choice before it
//!   proposes; commands carry no time of their own. Task ids are assigned here, per session,
//!   sequentially from 1.
//! - [`StateMachine::apply`]: the one deterministic apply path, `(now, command) -> Response`,
//!   where the
//!   [`Response`] carries the business [`Outcome`] (`Result<_, FlameError>` by command kind) and
//!   the side effects as data ([`Effect`]), for the runtime to execute (wake watchers, push
//!   assignments). `apply` never reads a clock or an RNG and never panics on any input.
//! - One transition function per lifecycle, each with its table in its module's docs:
//!   [`session::session_transition`], [`task::task_transition`],
//!   [`executor::executor_transition`] and [`node::node_transition`].
//!
//! Layers, each importing only those below it (CI checks the entity files with
//! `scripts/check-state-layers.py`):
//! 1. `command` (the types) and `model`, `tx` (the state and the record of one apply);
//! 2. the entities: `application`, `session`, `task`, `executor`, `node`, and `cache` (the
//!    object-drop log and the CA), plus the pure policies `queue` and `retention`; no entity
//!    imports another;
//! 3. `rules`: what a command does to more than one entity, with every such rule in the table
//!    at the head of its module;
//! 4. `apply`: one exhaustive `match` from a command to its entity or rule function, and
//!    `requests` (exactly-once) around it.
//!
//! The lifecycle tables and the rules table are walked row by row by the scenario scripts in
//! `control-plane/tests/state/scripts` (goldenscript), so a change to what a table says fails a
//! script with a diff.
//! - [`State`]: the in-memory model with the queries the Frontend and the scheduler need.
//! - [`FlameApp`]: the `raftlog::App` that persists every touched object in the same redb
//!   transaction as the entry, rebuilds [`State`] in `restore`, and publishes an immutable
//!   [`StateView`] after each durable batch through a [`StateReader`].
//! - [`closed_sessions_to_purge`]: the retention policy the leader turns into
//!   [`Command::PurgeSessions`].
//! - [`requests`]: exactly-once client writes: [`Command::Once`] and the bounded table of request
//!   ids with their answers, consulted before any state check.
//! - [`cache`]: what the object cache needs: the bounded, sequenced object-drop log (appended
//!   when a session closes or an application is unregistered) and the cluster CA
//!   ([`Command::SetClusterCa`], first one wins).
//!
//! Why this shape: one pure apply function is what makes the members agree; keeping effects as
//! data makes them testable and keeps wake-ups after the durable commit.
//!
//! Caveats:
//! - Business failures are part of the response and are replicated identically; only I/O
//!   failures are `raftlog::Error` (which stops the member).
//! - The model is built from persistent maps (`imbl`), so publishing a read view after each
//!   batch is a handful of reference-count increments; the model module explains the cost.
//! - [`StateConfig`] (the retry limits) changes what `apply` does, so it is not read from the
//!   member's own configuration: the leader puts its own on every [`Proposal`] and every
//!   member applies the entry under that one (review R2). A member's configured limits matter
//!   only while it leads; a rolling change of them takes effect entry by entry, the same on
//!   every member.

mod application;
mod apply;
pub mod cache;
mod command;
pub mod executor;
mod model;
pub mod node;
mod persist;
pub mod queue;
pub mod requests;
mod retention;
mod rules;
pub mod session;
pub mod task;
mod tx;

pub use application::builtin_applications;
pub use cache::{ClusterCa, MAX_OBJECT_DROPS, ObjectDropPage};
pub use command::{
    Assignment, BindResult, Command, DispatchPolicy, Effect, NewTask, Outcome, Response, TaskRef,
    TaskResult, encoded_len,
};
pub use model::{ExecutorEntry, NodeEntry, SessionEntry, State, TaskEntry};
pub use persist::{FlameApp, StateReader, StateView, TABLES};
pub use requests::{RequestRecord, RequestTable};
pub use retention::closed_sessions_to_purge;
pub use tx::Dirty;

use serde::{Deserialize, Serialize};

/// Bind failures a session may have before it gets event 1002 and no new executors
/// (`cluster.recovery.session.retry_limits`, spec section 6).
pub const DEFAULT_BIND_RETRY_LIMIT: u32 = 5;

/// Times a Running task may be requeued before it fails (spec section 6, recommended 3).
pub const DEFAULT_TASK_RETRY_LIMIT: u32 = 3;

/// Open sessions a group holds at most unless configured otherwise
/// (`cluster.limits.max_open_sessions`).
pub const DEFAULT_MAX_OPEN_SESSIONS: u32 = 10_000;

/// Tasks one session holds at most unless configured otherwise
/// (`cluster.limits.max_tasks_per_session`).
pub const DEFAULT_MAX_TASKS_PER_SESSION: u64 = 1_000_000;

/// The policy that changes what `apply` does: the retry limits and the caps on what clients
/// may make. Replicated, not local: it travels on every [`Proposal`], set from the leader's
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateConfig {
    /// Bind failures after which a session is paused (event 1002).
    pub bind_retry_limit: u32,
    /// Requeues after which a task that loses its executor again is failed.
    pub task_retry_limit: u32,
    /// Open sessions at most; another CreateSession is refused `Exhausted` (review R3: every
    /// member holds all of them in memory).
    pub max_open_sessions: u32,
    /// Tasks in one session at most; a CreateTasks that would pass it is refused `Exhausted`.
    pub max_tasks_per_session: u64,
}

impl Default for StateConfig {
    /// The specification's retry defaults (5 bind failures, 3 requeues) and Flame's caps.
    fn default() -> Self {
        StateConfig {
            bind_retry_limit: DEFAULT_BIND_RETRY_LIMIT,
            task_retry_limit: DEFAULT_TASK_RETRY_LIMIT,
            max_open_sessions: DEFAULT_MAX_OPEN_SESSIONS,
            max_tasks_per_session: DEFAULT_MAX_TASKS_PER_SESSION,
        }
    }
}

/// A control-plane member as recorded in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Address of the member's Raft (peer) endpoint, for example `http://10.0.0.1:9080`.
    pub raft_addr: String,
    /// Address of the member's client API (Frontend), for example `http://10.0.0.1:8080`.
    pub api_addr: String,
}

/// What one Raft entry carries: the leader's time, the leader's policy, and the commands it
/// batched together (group commit). The commands are applied in order, each exactly as if it
/// had its own entry at `now_ms` under `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's wall clock when it proposed the entry, in Unix milliseconds: the one time
    /// every command of the entry records.
    pub now_ms: i64,
    /// The retry limits every member applies the entry's commands under: the leader's.
    pub policy: StateConfig,
    /// The commands, in the order the leader received them.
    pub commands: Vec<Command>,
}

impl Proposal {
    /// A proposal of one command at `now_ms` under the default policy.
    pub fn one(now_ms: i64, command: Command) -> Self {
        Proposal {
            now_ms,
            policy: StateConfig::default(),
            commands: vec![command],
        }
    }
}

openraft::declare_raft_types!(
    /// openraft types of the control plane: [`Proposal`] entries answered by one [`Response`]
    /// per command, `u64` member ids, [`Member`] nodes and snapshots as files (raftlog's format).
    pub FlameTypeConfig:
        D = Proposal,
        R = Vec<Response>,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<FlameTypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The in-memory state machine: the [`State`], the [`StateConfig`] its commands are applied
/// under, and what the last command changed (for persistence).
#[derive(Debug, Clone, Default)]
pub struct StateMachine {
    state: State,
    config: StateConfig,
    dirty: Dirty,
}

impl StateMachine {
    /// An empty state machine with `config`.
    pub fn new(config: StateConfig) -> Self {
        StateMachine {
            state: State::default(),
            config,
            dirty: Dirty::default(),
        }
    }

    /// A state machine holding `state` (for example one rebuilt by `restore`).
    pub fn with_state(config: StateConfig, state: State) -> Self {
        StateMachine {
            state,
            config,
            dirty: Dirty::default(),
        }
    }

    /// Applies one command at the leader's time `now_ms` under the machine's own policy (the
    /// one it was made with): for tests and tools; entries go through
    /// [`StateMachine::apply_under`].
    pub fn apply(&mut self, now_ms: i64, command: Command) -> Response {
        let policy = self.config;
        self.apply_under(&policy, now_ms, command)
    }

    /// Applies one command of an entry: at its leader's time `now_ms`, under its leader's
    /// `policy` (its [`Proposal`]'s): the only way replicated state changes. Deterministic;
    /// never panics.
    pub fn apply_under(&mut self, policy: &StateConfig, now_ms: i64, command: Command) -> Response {
        self.dirty.clear();
        let mut tx = tx::Tx::new(&mut self.state, policy, &mut self.dirty, now_ms);
        let outcome = apply::apply(&mut tx, command);
        let effects = tx.finish();
        Response { outcome, effects }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Replaces the state (after `restore`); forgets pending changes.
    pub fn replace_state(&mut self, state: State) {
        self.state = state;
        self.dirty.clear();
    }

    /// The objects the last [`StateMachine::apply`] created, changed or removed.
    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }
}
