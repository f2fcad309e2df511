//! The replicated commands, their responses and effects: types only (the apply path is in
//! `apply.rs`).
//!
//! What: [`Command`] is the payload of every Raft entry; [`Response`] is what applying it
//! produced: the business [`Outcome`] plus the [`Effect`]s the runtime must execute.
//!
//! Why: commands carry every decision the leader made (times, executor ids), so applying them is
//! a pure function and every member reaches the same state and the same responses.
//!
//! Caveats:
//! - Every type here is postcard-safe (plain derives, `FlameError` included). postcard encodes
//!   variants by position: only ever append variants, and bump raftlog's format version when
//!   changing a command.
//! - [`Outcome`] errors are business outcomes. For RegisterApplication, UpdateApplication and
//!   UnregisterApplication every `Err` is reported in-band by the Frontend as
//!   `Result{-1, message}`: `InvalidArgument` (bad name or spec), `AlreadyExists` (duplicate),
//!   `NotFound` (unknown name) and `InvalidState` (the application has `open sessions`).

use bytes::Bytes;
use flame_proto::error::FlameError;
use flame_proto::model::{
    Application, ApplicationSpec, Executor, Node, ResourceRequirement, Session, SessionSpec, Shim,
    Task,
};
use serde::{Deserialize, Serialize};

/// One task to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Input bytes; `None` when the client sent none.
    pub input: Option<Bytes>,
    /// Client idempotency key: a repeat within the session returns the original task.
    pub request_id: Option<String>,
}

/// How deep executor queues may be; chosen by the leader and carried in the commands that
/// assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchPolicy {
    /// Work, in microseconds at the session's mean task duration, an executor may hold.
    pub window_us: u64,
    /// Most tasks an executor may hold.
    pub max_depth: u32,
    /// Most task input bytes an executor may hold queued (the first task is always allowed).
    pub max_queued_bytes: u64,
}

impl DispatchPolicy {
    /// Upstream's behaviour: one task per executor.
    pub const ONE_AT_A_TIME: DispatchPolicy = DispatchPolicy {
        window_us: 0,
        max_depth: 1,
        max_queued_bytes: 0,
    };
}

impl Default for DispatchPolicy {
    /// 20 ms of work, at most 128 tasks and 4 MiB of queued input.
    fn default() -> Self {
        DispatchPolicy {
            window_us: 20_000,
            max_depth: 128,
            max_queued_bytes: 4 << 20,
        }
    }
}

/// Names one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskRef {
    /// The session.
    pub session_id: String,
    /// The per-session task id.
    pub task_id: u64,
}

/// Hand a Pending task to a Bound executor of its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The executor that will run the task.
    pub executor_id: String,
    /// The task's session (must be the executor's session).
    pub session_id: String,
    /// The task.
    pub task_id: u64,
}

/// What an instance returned for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The executor that ran the task.
    pub executor_id: String,
    /// The task's session.
    pub session_id: String,
    /// The task.
    pub task_id: u64,
    /// 0 is success; anything else is failure.
    pub return_code: i32,
    /// Output bytes (stored only on success).
    pub output: Option<Bytes>,
    /// Error text on failure, recorded verbatim as the code-3 event.
    pub message: Option<String>,
    /// How long the instance took, as the agent measured it, in microseconds (0 = unknown).
    pub duration_us: u64,
}

/// How an agent's attempt to bind an executor to a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindResult {
    /// The instance is up and OnSessionEnter succeeded.
    Ok,
    /// The bind failed (codes of spec section 9.3: 10 install, 11 shim, 12 OnSessionEnter).
    Failed {
        /// The agent's return code.
        code: i32,
        /// The agent's detail text, for example `on_session_enter failed: boom`.
        message: String,
    },
}

/// A change to replicated state, decided by the leader. See the module docs of each lifecycle
/// for what is accepted in which state.
///
/// Commands carry no time: every timestamp a command records (creation and completion times,
/// events, heartbeats, object drops, request records) is the [`super::Proposal`]'s `now_ms`,
/// the leader's clock when it proposed the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers `flmexec`, `flmping` and `flmrun` (spec section 5.2) when absent.
    EnsureBuiltins,
    /// RegisterApplication.
    RegisterApplication {
        /// The application name.
        name: String,
        /// The spec, defaults already resolved.
        spec: ApplicationSpec,
    },
    /// UpdateApplication: replaces every field of the spec; refused with open sessions.
    UpdateApplication {
        /// The application name.
        name: String,
        /// The new spec, defaults already resolved.
        spec: ApplicationSpec,
    },
    /// UnregisterApplication: refused with open sessions; removes the application and all its
    /// sessions, tasks and events, and appends the object drop `<name>/*`.
    UnregisterApplication {
        /// The application name.
        name: String,
    },
    /// CreateSession.
    CreateSession {
        /// Client-chosen session id.
        id: String,
        /// The spec with `resreq` already resolved.
        spec: SessionSpec,
    },
    /// OpenSession: atomic get-or-create (spec section 5.3).
    OpenSession {
        /// Client-chosen session id.
        id: String,
        /// The spec with `resreq` already resolved, if the client sent one.
        spec: Option<SessionSpec>,
    },
    /// CloseSession; an Open session that closes also appends the object drop `<app>/<id>`.
    CloseSession {
        /// The session.
        id: String,
    },
    /// DeleteSession: only a Closed session whose tasks are all terminal.
    DeleteSession {
        /// The session.
        id: String,
    },
    /// CreateTask and the batch CreateTasks.
    CreateTasks {
        /// The session.
        session_id: String,
        /// The tasks, in submission order.
        tasks: Vec<NewTask>,
        /// With a policy, the new tasks are dealt at once to the session's executors with room
        /// (so they need no scheduling round); `None` leaves them to the scheduler.
        dispatch: Option<DispatchPolicy>,
    },
    /// A node agent registers (or re-registers) its node.
    RegisterNode {
        /// The node as the agent describes it.
        node: Node,
        /// Identifies the agent's host; another id for a live node is refused.
        agent_id: String,
    },
    /// A node agent's heartbeat.
    Heartbeat {
        /// The node name.
        node: String,
    },
    /// The node's agent disconnected: the node is Unknown while the drain timer runs.
    NodeDisconnected {
        /// The node name.
        node: String,
    },
    /// The drain or heartbeat timer fired: the node becomes NotReady, its executors are removed
    /// and their Running tasks requeued.
    MarkNodeNotReady {
        /// The node name.
        node: String,
    },
    /// The scheduler creates an executor on a node (state Void).
    CreateExecutor {
        /// Executor id chosen by the leader (a UUIDv4).
        id: String,
        /// The node that hosts it.
        node: String,
        /// Its size.
        resreq: ResourceRequirement,
        /// Its shim.
        shim: Shim,
    },
    /// The agent holds the executor's slot: Void → Idle.
    RegisterExecutor {
        /// The executor.
        id: String,
    },
    /// The scheduler binds an executor to a session: Void or Idle → Binding.
    BindExecutor {
        /// The executor.
        id: String,
        /// The session.
        session_id: String,
    },
    /// The agent reports how binding ended: Binding → Bound or Unbinding.
    BindCompleted {
        /// The executor.
        id: String,
        /// The session the agent bound (a stale report for another session is refused).
        session_id: String,
        /// Success or the failure code and detail.
        result: BindResult,
    },
    /// Unbind an executor from its session: Binding or Bound → Unbinding.
    UnbindExecutor {
        /// The executor.
        id: String,
    },
    /// The agent left the session: Unbinding or Binding → Idle.
    UnbindCompleted {
        /// The executor.
        id: String,
    },
    /// The scheduler releases an executor: Void or Idle → Releasing.
    ReleaseExecutor {
        /// The executor.
        id: String,
    },
    /// The agent gave the slot back (or lost it): the executor is deleted and a task it was
    /// running is requeued.
    ExecutorReleased {
        /// The executor.
        id: String,
    },
    /// Pending → Running on Bound executors, queued behind the tasks each already holds.
    AssignTasks {
        /// The assignments, applied in order, each succeeding or failing alone.
        assignments: Vec<Assignment>,
    },
    /// Results of Running tasks; stale results are ignored and reported. The executors the
    /// results came from are then refilled from their sessions' Pending tasks.
    CompleteTasks {
        /// The results, applied in order, each succeeding or failing alone.
        results: Vec<TaskResult>,
        /// How deep the refill may make executor queues; `None`: no refill (the scheduler's
        /// next AssignTasks serves the executors).
        refill: Option<DispatchPolicy>,
    },
    /// Running → Pending (or Failed once the retry limit is exceeded).
    RequeueTasks {
        /// The tasks.
        tasks: Vec<TaskRef>,
        /// Why, recorded in the requeue event (for example `executor e1 was lost`).
        reason: String,
    },
    /// Retention: removes Closed sessions with their tasks, events and request ids.
    PurgeSessions {
        /// The sessions; open or unknown ones are skipped.
        ids: Vec<String>,
    },
    /// Stores the cluster CA the leader generated, unless one exists (the first one wins).
    SetClusterCa {
        /// The self-signed CA certificate, PEM.
        cert_pem: String,
        /// Its private key, PEM (PKCS#8).
        key_pem: String,
    },
    /// A client write applied at most once per request id: a repeat answers as the first apply
    /// did and changes nothing (the requests module).
    Once {
        /// The id the member that took the call attached (or the client's).
        request_id: String,
        /// The client write ([`Command::is_client_write`]).
        command: Box<Command>,
    },
    /// Rotate a Bound executor out of its session at its next task boundary (a fair-share
    /// rotation): it gets no new task, and the scheduler unbinds it once it holds none.
    YieldExecutor {
        /// The executor.
        id: String,
    },
}

impl Command {
    /// The bytes of opaque payload (task inputs and outputs, common data) the command carries;
    /// the proposer bounds the size of an entry by it.
    pub fn payload_bytes(&self) -> usize {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len());
        match self {
            Command::Once { command, .. } => command.payload_bytes(),
            Command::CreateTasks { tasks, .. } => tasks.iter().map(|t| len(&t.input)).sum(),
            Command::CompleteTasks { results, .. } => results.iter().map(|r| len(&r.output)).sum(),
            Command::CreateSession { spec, .. } => len(&spec.common_data),
            Command::OpenSession { spec, .. } => spec.as_ref().map_or(0, |s| len(&s.common_data)),
            _ => 0,
        }
    }

    /// The command's size as a log entry holds it (postcard), every byte counted: ids, request
    /// ids, names and payloads alike. What bounds an entry against the transport's message
    /// limit (review R1: counting payloads alone let ids push entries past it).
    pub fn encoded_bytes(&self) -> usize {
        encoded_len(self)
    }

    /// Whether this is a write a client asks for, which members wrap in [`Command::Once`] so a
    /// re-send is harmless. The others are the leader's and the agents' own commands, built
    /// to be idempotent (a repeated heartbeat, registration or result changes nothing more).
    pub fn is_client_write(&self) -> bool {
        use Command as C;
        match self {
            C::RegisterApplication { .. }
            | C::UpdateApplication { .. }
            | C::UnregisterApplication { .. }
            | C::CreateSession { .. }
            | C::OpenSession { .. }
            | C::CloseSession { .. }
            | C::DeleteSession { .. }
            | C::CreateTasks { .. } => true,
            C::EnsureBuiltins
            | C::RegisterNode { .. }
            | C::Heartbeat { .. }
            | C::NodeDisconnected { .. }
            | C::MarkNodeNotReady { .. }
            | C::CreateExecutor { .. }
            | C::RegisterExecutor { .. }
            | C::BindExecutor { .. }
            | C::BindCompleted { .. }
            | C::UnbindExecutor { .. }
            | C::YieldExecutor { .. }
            | C::UnbindCompleted { .. }
            | C::ReleaseExecutor { .. }
            | C::ExecutorReleased { .. }
            | C::AssignTasks { .. }
            | C::CompleteTasks { .. }
            | C::RequeueTasks { .. }
            | C::PurgeSessions { .. }
            | C::SetClusterCa { .. }
            | C::Once { .. } => false,
        }
    }

    /// The command's name, for messages.
    pub fn kind(&self) -> &'static str {
        use Command as C;
        match self {
            C::EnsureBuiltins => "EnsureBuiltins",
            C::RegisterApplication { .. } => "RegisterApplication",
            C::UpdateApplication { .. } => "UpdateApplication",
            C::UnregisterApplication { .. } => "UnregisterApplication",
            C::CreateSession { .. } => "CreateSession",
            C::OpenSession { .. } => "OpenSession",
            C::CloseSession { .. } => "CloseSession",
            C::DeleteSession { .. } => "DeleteSession",
            C::CreateTasks { .. } => "CreateTasks",
            C::RegisterNode { .. } => "RegisterNode",
            C::Heartbeat { .. } => "Heartbeat",
            C::NodeDisconnected { .. } => "NodeDisconnected",
            C::MarkNodeNotReady { .. } => "MarkNodeNotReady",
            C::CreateExecutor { .. } => "CreateExecutor",
            C::RegisterExecutor { .. } => "RegisterExecutor",
            C::BindExecutor { .. } => "BindExecutor",
            C::BindCompleted { .. } => "BindCompleted",
            C::UnbindExecutor { .. } => "UnbindExecutor",
            C::YieldExecutor { .. } => "YieldExecutor",
            C::UnbindCompleted { .. } => "UnbindCompleted",
            C::ReleaseExecutor { .. } => "ReleaseExecutor",
            C::ExecutorReleased { .. } => "ExecutorReleased",
            C::AssignTasks { .. } => "AssignTasks",
            C::CompleteTasks { .. } => "CompleteTasks",
            C::RequeueTasks { .. } => "RequeueTasks",
            C::PurgeSessions { .. } => "PurgeSessions",
            C::SetClusterCa { .. } => "SetClusterCa",
            C::Once { .. } => "Once",
        }
    }
}

/// The business result of a command, by command kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Entries without a command (blank, membership).
    Noop,
    /// EnsureBuiltins: the names registered now (empty when all existed).
    Registered(Vec<String>),
    /// RegisterApplication and UpdateApplication: the stored application.
    Application(Result<Application, FlameError>),
    /// UnregisterApplication.
    Done(Result<(), FlameError>),
    /// CreateSession, OpenSession, CloseSession, DeleteSession (the deleted session).
    Session(Result<Session, FlameError>),
    /// CreateTasks: one task per submission, in order (the original for a repeated request id).
    Tasks(Result<Vec<Task>, FlameError>),
    /// Node commands: the node afterwards.
    Node(Result<Node, FlameError>),
    /// Executor commands: the executor afterwards (ExecutorReleased: as it was removed).
    Executor(Result<Executor, FlameError>),
    /// AssignTasks, CompleteTasks, RequeueTasks: one result per item, in order; an `Err` item
    /// (for example a stale result) changed nothing.
    TaskUpdates(Vec<Result<Task, FlameError>>),
    /// PurgeSessions: the sessions removed.
    Purged(Vec<String>),
    /// SetClusterCa: true when this command stored the CA, false when one existed already.
    ClusterCa(Result<bool, FlameError>),
}

impl Outcome {
    /// The error of a single-result outcome, if it failed.
    pub fn error(&self) -> Option<&FlameError> {
        match self {
            Outcome::Application(Err(e))
            | Outcome::Done(Err(e))
            | Outcome::Session(Err(e))
            | Outcome::Tasks(Err(e))
            | Outcome::Node(Err(e))
            | Outcome::Executor(Err(e))
            | Outcome::ClusterCa(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// Something the runtime must do after the entry is durable: wake watchers, push assignments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Effect {
    /// An application was registered or updated.
    ApplicationChanged {
        /// The application.
        name: String,
    },
    /// An application was unregistered.
    ApplicationRemoved {
        /// The application.
        name: String,
    },
    /// A session was created or changed (state, counters, events, bind failures).
    SessionChanged {
        /// The session.
        session_id: String,
    },
    /// A session closed: watchers of its tasks end, its executors unbind.
    SessionClosed {
        /// The session.
        session_id: String,
    },
    /// A session was removed with its tasks.
    SessionRemoved {
        /// The session.
        session_id: String,
    },
    /// A task was created or changed state.
    TaskChanged {
        /// The task's session.
        session_id: String,
        /// The task.
        task_id: u64,
    },
    /// An executor was created or changed (state, session, running task).
    ExecutorChanged {
        /// The executor.
        executor_id: String,
        /// Its node, whose agent must get new assignments.
        node: String,
    },
    /// An executor was removed.
    ExecutorRemoved {
        /// The executor.
        executor_id: String,
        /// Its node.
        node: String,
    },
    /// A node was registered or changed state.
    NodeChanged {
        /// The node.
        node: String,
    },
    /// The whole state was replaced (snapshot install or start-up); readers rescan.
    Restored,
}

/// What applying one command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The business result.
    pub outcome: Outcome,
    /// What the runtime must do, in the order it happened, without duplicates.
    pub effects: Vec<Effect>,
}

impl Response {
    /// The response of an entry without a command.
    pub fn noop() -> Self {
        Response {
            outcome: Outcome::Noop,
            effects: Vec::new(),
        }
    }
}

/// The postcard size of `value`, counted without encoding it anywhere; `usize::MAX` if it
/// cannot be encoded (it could not be proposed either).
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::error::LeaderHint;

    /// Stored log entries name their variant by index, so a new command goes last: these
    /// indices are the storage format (raftlog `FORMAT_VERSION`).
    #[test]
    fn command_variant_indices_are_the_stored_ones() {
        let index = |c: &Command| postcard::to_stdvec(c).expect("encode")[0];
        let id = || "e".to_owned();
        assert_eq!(index(&Command::EnsureBuiltins), 0);
        assert_eq!(index(&Command::UnbindExecutor { id: id() }), 17);
        let completed = Command::UnbindCompleted { id: id() };
        assert_eq!(index(&completed), 18);
        let once = Command::Once {
            request_id: id(),
            command: Box::new(Command::EnsureBuiltins),
        };
        assert_eq!(index(&once), 26);
        assert_eq!(index(&Command::YieldExecutor { id: id() }), 27);
    }

    #[test]
    fn responses_with_every_error_kind_survive_postcard() {
        let errors = vec![
            Err(FlameError::NotFound("session s not found".into())),
            Err(FlameError::NotLeader {
                leader: Some(LeaderHint {
                    id: 2,
                    addr: "http://b:8080".into(),
                }),
            }),
            Err(FlameError::TooLarge {
                what: "task input".into(),
                size: 9,
                limit: 4,
            }),
            Err(FlameError::InvalidState("x".into())),
        ];
        let response = Response {
            outcome: Outcome::TaskUpdates(errors),
            effects: vec![Effect::Restored],
        };
        let bytes = postcard::to_stdvec(&response).expect("encode");
        let back: Response = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, response);
        let done = Response {
            outcome: Outcome::Done(Err(FlameError::Internal("boom".into()))),
            effects: vec![],
        };
        let bytes = postcard::to_stdvec(&done).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Response>(&bytes).expect("decode"),
            done
        );
    }

    #[test]
    fn commands_survive_postcard() {
        let command = Command::CreateTasks {
            session_id: "s1".into(),
            tasks: vec![NewTask {
                input: Some(Bytes::from_static(b"in")),
                request_id: Some("r1".into()),
            }],
            dispatch: Some(DispatchPolicy::default()),
        };
        let bytes = postcard::to_stdvec(&command).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Command>(&bytes).expect("decode"),
            command
        );
    }
}
