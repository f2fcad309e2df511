//! Helpers shared by the state-machine tests: building commands and unwrapping outcomes.
//!
//! Caveat: the unwrapping helpers panic with the unexpected outcome; they are for tests only.

#![allow(dead_code)]

pub mod strategy;

use bytes::Bytes;
use flame_control_plane::state::{
    Assignment, BindResult, Command, NewTask, Outcome, Response, StateConfig, StateMachine,
    TaskResult,
};
use flame_proto::error::FlameError;
use flame_proto::model::{
    Executor, Node, NodeState, ResourceRequirement, Session, SessionSpec, Shim, Task,
};

/// The limits the property and scenario tests use: small, so the limits are reached (a session
/// pauses after 2 failed binds; a task fails when it loses its executor a second time; a third
/// open session and a ninth task of a session are refused).
pub fn small_limits() -> StateConfig {
    StateConfig {
        bind_retry_limit: 2,
        task_retry_limit: 1,
        max_open_sessions: 2,
        max_tasks_per_session: 8,
    }
}

/// A state machine with the default config and the built-in applications.
pub fn machine() -> StateMachine {
    let mut m = StateMachine::new(StateConfig::default());
    m.apply(1, Command::EnsureBuiltins);
    m
}

/// A session spec for `app` with the default resources.
pub fn spec(app: &str) -> SessionSpec {
    SessionSpec {
        application: app.into(),
        common_data: None,
        min_instances: 0,
        max_instances: None,
        priority: 0,
        resreq: ResourceRequirement::default(),
    }
}

/// A node description as an agent would send it.
pub fn node(name: &str) -> Node {
    let capacity = ResourceRequirement {
        cpu: 8,
        memory: 16 << 30,
        gpu: 0,
    };
    Node {
        name: name.into(),
        hostname: name.into(),
        state: NodeState::Unknown,
        capacity,
        allocatable: capacity,
        arch: "x86_64".into(),
        os: "linux".into(),
        addresses: Vec::new(),
        last_heartbeat_ms: 0,
        cache: None,
    }
}

/// Creates an Open session `id` of `app`.
pub fn create_session(m: &mut StateMachine, id: &str, app: &str) -> Session {
    let r = m.apply(
        10,
        Command::CreateSession {
            id: id.into(),
            spec: spec(app),
        },
    );
    session(r)
}

/// Creates `n` tasks with inputs `0`, `1`, ... in session `id`.
pub fn create_tasks(m: &mut StateMachine, id: &str, n: usize) -> Vec<Task> {
    let tasks = (0..n)
        .map(|i| NewTask {
            input: Some(Bytes::from(i.to_string())),
            request_id: None,
        })
        .collect();
    let r = m.apply(
        20,
        Command::CreateTasks {
            session_id: id.into(),
            tasks,
            dispatch: None,
        },
    );
    match r.outcome {
        Outcome::Tasks(Ok(tasks)) => tasks,
        other => panic!("expected tasks, got {other:?}"),
    }
}

/// Registers node `name` (if needed) and an executor `id` on it, bound to `session_id`.
pub fn bound_executor(m: &mut StateMachine, id: &str, node_name: &str, session_id: &str) {
    if m.state().node(node_name).is_none() {
        let r = m.apply(
            5,
            Command::RegisterNode {
                node: node(node_name),
                agent_id: format!("agent-{node_name}"),
            },
        );
        assert!(matches!(r.outcome, Outcome::Node(Ok(_))), "{r:?}");
    }
    let steps = [
        (
            6,
            Command::CreateExecutor {
                id: id.into(),
                node: node_name.into(),
                resreq: ResourceRequirement::default(),
                shim: Shim::Host,
            },
        ),
        (6, Command::RegisterExecutor { id: id.into() }),
        (
            6,
            Command::BindExecutor {
                id: id.into(),
                session_id: session_id.into(),
            },
        ),
        (
            7,
            Command::BindCompleted {
                id: id.into(),
                session_id: session_id.into(),
                result: BindResult::Ok,
            },
        ),
    ];
    for (now, command) in steps {
        executor(m.apply(now, command));
    }
}

/// Assigns task `task_id` of `session_id` to executor `executor_id`; returns the item's result.
pub fn assign(
    m: &mut StateMachine,
    executor_id: &str,
    session_id: &str,
    task_id: u64,
) -> Result<Task, FlameError> {
    let r = m.apply(
        30,
        Command::AssignTasks {
            assignments: vec![Assignment {
                executor_id: executor_id.into(),
                session_id: session_id.into(),
                task_id,
            }],
        },
    );
    single_update(r)
}

/// Completes task `task_id` on `executor_id` with `return_code`, `output` and `message`.
pub fn complete(
    m: &mut StateMachine,
    executor_id: &str,
    session_id: &str,
    task_id: u64,
    return_code: i32,
    output: Option<&'static [u8]>,
    message: Option<&str>,
) -> Result<Task, FlameError> {
    let r = m.apply(
        40,
        Command::CompleteTasks {
            results: vec![TaskResult {
                executor_id: executor_id.into(),
                session_id: session_id.into(),
                task_id,
                return_code,
                output: output.map(Bytes::from_static),
                message: message.map(Into::into),
                duration_us: 0,
            }],
            refill: None,
        },
    );
    single_update(r)
}

/// The one item of a TaskUpdates outcome.
pub fn single_update(r: Response) -> Result<Task, FlameError> {
    match r.outcome {
        Outcome::TaskUpdates(mut items) if items.len() == 1 => items.remove(0),
        other => panic!("expected one task update, got {other:?}"),
    }
}

/// The session of a successful session outcome.
pub fn session(r: Response) -> Session {
    match r.outcome {
        Outcome::Session(Ok(s)) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

/// The executor of a successful executor outcome.
pub fn executor(r: Response) -> Executor {
    match r.outcome {
        Outcome::Executor(Ok(e)) => e,
        other => panic!("expected an executor, got {other:?}"),
    }
}

/// The error of a failed single-result outcome.
pub fn error(r: Response) -> FlameError {
    match r.outcome.error() {
        Some(e) => e.clone(),
        None => panic!("expected an error, got {:?}", r.outcome),
    }
}
