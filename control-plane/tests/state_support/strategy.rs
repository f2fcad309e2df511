//! proptest strategies for random command sequences, valid and invalid, over small pools of
//! names so that commands often hit existing objects, plus the invariants every state must hold.

use bytes::Bytes;
use flame_control_plane::state::queue::DispatchPolicy;
use flame_control_plane::state::{
    Assignment, BindResult, Command, MAX_OBJECT_DROPS, NewTask, State, TaskRef, TaskResult,
    requests::MAX_REQUESTS,
};
use flame_proto::model::{
    ApplicationSpec, ExecutorState, ResourceRequirement, SessionSpec, Shim, TaskCounters, TaskState,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const APPS: &[&str] = &["flmrun", "flmrun", "flmping", "app0", "../bad"];
const SESSIONS: &[&str] = &["s0", "s1", "s2"];
const EXECUTORS: &[&str] = &["e0", "e1", "e2"];
const NODES: &[&str] = &["n0", "n1"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(String::from)
}

fn now() -> impl Strategy<Value = i64> {
    0i64..1_000
}

fn task_id() -> impl Strategy<Value = u64> {
    0u64..6
}

fn session_spec() -> impl Strategy<Value = SessionSpec> {
    (pick(APPS), 0u32..2, proptest::option::of(1u32..3)).prop_map(|(app, min, max)| SessionSpec {
        application: app,
        common_data: Some(Bytes::from_static(b"cd")),
        min_instances: min,
        max_instances: max,
        priority: 0,
        resreq: ResourceRequirement::default(),
    })
}

fn new_task() -> impl Strategy<Value = NewTask> {
    let rid = proptest::option::of(proptest::sample::select(&["r0", "r1", ""][..]));
    (proptest::option::of(Just(Bytes::from_static(b"in"))), rid).prop_map(|(input, rid)| NewTask {
        input,
        request_id: rid.map(String::from),
    })
}

fn node_desc() -> impl Strategy<Value = flame_proto::model::Node> {
    pick(NODES).prop_map(|n| super::node(&n))
}

fn app_commands() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::EnsureBuiltins),
        pick(APPS).prop_map(|name| Command::RegisterApplication {
            name,
            spec: ApplicationSpec::default(),
        }),
        pick(APPS).prop_map(|name| Command::UpdateApplication {
            name,
            spec: ApplicationSpec::default(),
        }),
        (pick(APPS)).prop_map(|name| Command::UnregisterApplication { name }),
        cluster_ca(),
    ]
}

/// SetClusterCa with one of two well-formed CAs (the first applied wins) or a malformed one.
fn cluster_ca() -> impl Strategy<Value = Command> {
    let ca = |n: u8| Command::SetClusterCa {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\nK{n}\n-----END PRIVATE KEY-----\n"),
    };
    prop_oneof![
        Just(ca(1)),
        Just(ca(2)),
        Just(Command::SetClusterCa {
            cert_pem: String::new(),
            key_pem: "not a key".into(),
        }),
    ]
}

fn session_commands() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (pick(SESSIONS), session_spec())
            .prop_map(|(id, spec)| Command::CreateSession { id, spec }),
        2 => (pick(SESSIONS), proptest::option::of(session_spec()))
            .prop_map(|(id, spec)| Command::OpenSession { id, spec }),
        2 => pick(SESSIONS).prop_map(|id| Command::CloseSession { id }),
        1 => pick(SESSIONS).prop_map(|id| Command::DeleteSession { id }),
        1 => proptest::collection::vec(pick(SESSIONS), 0..3)
            .prop_map(|ids| Command::PurgeSessions { ids }),
        5 => (
            pick(SESSIONS),
            proptest::collection::vec(new_task(), 0..4),
            refill())
            .prop_map(|(session_id, tasks, dispatch)| Command::CreateTasks {
                session_id,
                tasks,
                dispatch,
            }
        ),
    ]
}

fn node_commands() -> impl Strategy<Value = Command> {
    let agent = proptest::sample::select(&["a0", "a1"][..]).prop_map(String::from);
    prop_oneof![
        3 => (node_desc(), agent).prop_map(|(node, agent_id)| {
            Command::RegisterNode { node, agent_id }
        }),
        1 => pick(NODES).prop_map(|node| Command::Heartbeat { node }),
        1 => pick(NODES).prop_map(|node| Command::NodeDisconnected { node }),
        1 => pick(NODES).prop_map(|node| Command::MarkNodeNotReady {
            node }),
    ]
}

fn bind_result() -> impl Strategy<Value = BindResult> {
    prop_oneof![
        3 => Just(BindResult::Ok),
        1 => Just(BindResult::Failed {
            code: 12,
            message: "on_session_enter failed: boom".into(),
        }),
    ]
}

fn executor_commands() -> impl Strategy<Value = Command> {
    let ex = || pick(EXECUTORS);
    prop_oneof![
        3 => (ex(), pick(NODES)).prop_map(|(id, node)| Command::CreateExecutor {
            id,
            node,
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        }),
        2 => ex().prop_map(|id| Command::RegisterExecutor { id }),
        4 => (ex(), pick(SESSIONS)).prop_map(|(id, session_id)| Command::BindExecutor {
            id,
            session_id
        }),
        4 => (ex(), pick(SESSIONS), bind_result()).prop_map(
            |(id, session_id, result)| Command::BindCompleted {
                id,
                session_id,
                result,
            }
        ),
        1 => ex().prop_map(|id| Command::UnbindExecutor { id }),
        1 => ex().prop_map(|id| Command::UnbindCompleted { id }),
        1 => ex().prop_map(|id| Command::ReleaseExecutor { id }),
        1 => ex().prop_map(|id| Command::ExecutorReleased { id }),
    ]
}

fn task_ref() -> impl Strategy<Value = TaskRef> {
    (pick(SESSIONS), task_id()).prop_map(|(session_id, task_id)| TaskRef {
        session_id,
        task_id,
    })
}

/// No refill, or queue policies from one task per executor to a few, with small byte budgets.
fn refill() -> impl Strategy<Value = Option<DispatchPolicy>> {
    let policy =
        (0u64..10_000, 1u32..5, 0u64..16).prop_map(|(window_us, max_depth, max_queued_bytes)| {
            DispatchPolicy {
                window_us,
                max_depth,
                max_queued_bytes,
            }
        });
    proptest::option::of(policy)
}

fn task_commands() -> impl Strategy<Value = Command> {
    let assignment = (pick(EXECUTORS), pick(SESSIONS), task_id()).prop_map(
        |(executor_id, session_id, task_id)| Assignment {
            executor_id,
            session_id,
            task_id,
        },
    );
    let result = (
        pick(EXECUTORS),
        pick(SESSIONS),
        task_id(),
        0i32..2,
        0u64..3_000,
    )
        .prop_map(
            |(executor_id, session_id, task_id, return_code, duration_us)| TaskResult {
                executor_id,
                session_id,
                task_id,
                return_code,
                output: Some(Bytes::from_static(b"out")),
                message: Some("failed: x".into()),
                duration_us,
            },
        );
    prop_oneof![
        4 => proptest::collection::vec(assignment, 1..4)
            .prop_map(|assignments| Command::AssignTasks { assignments }),
        4 => (proptest::collection::vec(result, 1..3), refill()).prop_map(
            |(results, refill)| Command::CompleteTasks {
                results,
                refill,
            }
        ),
        1 => proptest::collection::vec(task_ref(), 1..3).prop_map(
            |tasks| Command::RequeueTasks {
                tasks,
                reason: "executor lost".into(),
            }
        ),
    ]
}

/// A client write wrapped in `Once` with a request id from a small pool, so repeats (even with
/// another body, which no member sends) and first uses mix; its entry's time spans several
/// request-record lifetimes, so records expire too.
fn once_commands() -> impl Strategy<Value = Timed> {
    let id = proptest::sample::select(&["q0", "q1", "q2", ""][..]).prop_map(String::from);
    (
        id,
        prop_oneof![app_commands(), session_commands()],
        0i64..300_000,
    )
        .prop_map(|(request_id, command, now_ms)| {
            let once = Command::Once {
                request_id,
                command: Box::new(command),
            };
            (now_ms, once)
        })
}

/// A command and the time of the entry (the `Proposal`) that carries it.
pub type Timed = (i64, Command);

/// Any command, valid or not, over small pools of names, at a random time.
pub fn command() -> impl Strategy<Value = Timed> {
    let any = prop_oneof![
        1 => app_commands(),
        4 => session_commands(),
        2 => node_commands(),
        4 => executor_commands(),
        4 => task_commands(),
    ];
    prop_oneof![
        15 => (now(), any),
        2 => once_commands(),
    ]
}

/// Checks every invariant of a state; panics (failing the property) with the broken one.
pub fn check_invariants(state: &State) {
    let running_on = check_executors(state);
    check_sessions(state, &running_on);
    check_object_drops(state);
    assert!(
        state.requests().len() <= MAX_REQUESTS,
        "the request table is bounded"
    );
}

/// The object-drop log holds at most its maximum, with consecutive seqs and well-formed
/// prefixes.
fn check_object_drops(state: &State) {
    let page = state.object_drops(0, usize::MAX);
    assert!(page.drops.len() <= MAX_OBJECT_DROPS);
    for (i, d) in page.drops.iter().enumerate() {
        assert_eq!(
            d.seq,
            page.first_seq + i as u64,
            "drop seqs are consecutive"
        );
        let (app, rest) = d.prefix.split_once('/').expect("<app>/<rest>");
        assert!(!app.is_empty() && !rest.is_empty(), "prefix {}", d.prefix);
    }
    assert_eq!(page.drops.last().map_or(0, |d| d.seq), page.last_seq);
}

/// Executor invariants; returns which executor runs each task.
fn check_executors(state: &State) -> BTreeMap<TaskRef, String> {
    let mut running_on: BTreeMap<TaskRef, String> = BTreeMap::new();
    for e in state.executor_entries() {
        let ex = &e.executor;
        let bound = matches!(
            ex.state,
            ExecutorState::Binding | ExecutorState::Bound | ExecutorState::Unbinding
        );
        assert_eq!(
            ex.session_id.is_some(),
            bound,
            "executor {} session vs state",
            ex.id
        );
        assert!(
            state.node(&ex.spec.node).is_some(),
            "executor {} on unknown node",
            ex.id
        );
        for task in &e.tasks {
            assert!(matches!(
                ex.state,
                ExecutorState::Bound | ExecutorState::Unbinding
            ));
            assert_eq!(ex.session_id.as_deref(), Some(task.session_id.as_str()));
            let t = state
                .task(&task.session_id, task.task_id)
                .expect("executor's task exists");
            assert_eq!(
                t.state,
                TaskState::Running,
                "executor {} task not running",
                ex.id
            );
            let other = running_on.insert(task.clone(), ex.id.clone().into());
            assert!(other.is_none(), "task {task:?} on two executors");
        }
    }
    running_on
}

/// Session and task invariants: counters, ids `1..=n`, the Pending set, request ids, and every
/// Running task on exactly one executor.
fn check_sessions(state: &State, running_on: &BTreeMap<TaskRef, String>) {
    for entry in state.session_entries() {
        let id = &entry.session.id;
        let mut counters = TaskCounters::default();
        let mut pending = Vec::new();
        let mut request_ids = BTreeSet::new();
        for (index, t) in entry.tasks().enumerate() {
            assert_eq!(
                t.task.id,
                index as u64 + 1,
                "task ids of {id} are not 1..=n"
            );
            assert_eq!(&t.task.session_id, id);
            counters.add(t.task.state);
            if t.task.state == TaskState::Pending {
                pending.push(t.task.id.get());
            }
            if t.task.state.is_terminal() {
                assert!(t.task.completion_time_ms.is_some());
            }
            if t.task.state == TaskState::Running {
                let key = TaskRef {
                    session_id: id.clone().into(),
                    task_id: t.task.id.get(),
                };
                assert!(
                    running_on.contains_key(&key),
                    "running task {key:?} has no executor"
                );
            }
            if let Some(rid) = &t.request_id {
                assert!(
                    request_ids.insert(rid.clone()),
                    "request id {rid} used twice"
                );
                assert_eq!(entry.task_for_request(rid), Some(t.task.id.get()));
            }
        }
        assert_eq!(entry.session.counters, counters, "counters of {id}");
        assert_eq!(
            entry.pending_ids().collect::<Vec<_>>(),
            pending,
            "pending set of {id}"
        );
    }
}

/// A coherent chunk that brings an executor up and binds it to a session (each step can still
/// fail if the state does not allow it).
fn bring_up() -> impl Strategy<Value = Vec<Timed>> {
    let parts = (
        pick(EXECUTORS),
        pick(NODES),
        pick(SESSIONS),
        bind_result(),
        now(),
    );
    parts.prop_map(|(id, node, session, result, now)| {
        vec![
            (
                now,
                Command::RegisterNode {
                    node: super::node(&node),
                    agent_id: "a0".into(),
                },
            ),
            (
                now,
                Command::CreateExecutor {
                    id: id.clone(),
                    node,
                    resreq: ResourceRequirement::default(),
                    shim: Shim::Host,
                },
            ),
            (
                now,
                Command::BindExecutor {
                    id: id.clone(),
                    session_id: session.clone(),
                },
            ),
            (
                now,
                Command::BindCompleted {
                    id,
                    session_id: session,
                    result,
                },
            ),
        ]
    })
}

/// A coherent chunk that runs one task on one executor and reports its result.
fn run_task() -> impl Strategy<Value = Vec<Timed>> {
    let parts = (pick(EXECUTORS), pick(SESSIONS), 1u64..5, 0i32..2, now());
    parts.prop_map(|(executor_id, session_id, task_id, return_code, now)| {
        let assign = Command::AssignTasks {
            assignments: vec![Assignment {
                executor_id: executor_id.clone(),
                session_id: session_id.clone(),
                task_id,
            }],
        };
        let complete = Command::CompleteTasks {
            results: vec![TaskResult {
                executor_id,
                session_id,
                task_id,
                return_code,
                output: None,
                message: None,
                duration_us: 100,
            }],
            refill: Some(DispatchPolicy::default()),
        };
        vec![(now, assign), (now, complete)]
    })
}

/// A coherent chunk that opens a session of `flmrun` and submits a few tasks to it.
fn session_up() -> impl Strategy<Value = Vec<Timed>> {
    let tasks = proptest::collection::vec(new_task(), 1..4);
    (pick(SESSIONS), tasks, now()).prop_map(|(id, tasks, now)| {
        let mut spec = super::spec("flmrun");
        spec.common_data = Some(Bytes::from_static(b"cd"));
        let open = Command::OpenSession {
            id: id.clone(),
            spec: Some(spec),
        };
        let create = Command::CreateTasks {
            session_id: id,
            tasks,
            dispatch: None,
        };
        vec![(now, open), (now, create)]
    })
}

/// A coherent chunk: one session, one executor brought up for it, and its first tasks run to
/// completion (success or failure), possibly leaving the last one Running.
fn workflow() -> impl Strategy<Value = Vec<Timed>> {
    let codes = proptest::collection::vec(0i32..2, 1..4);
    (session_up(), bring_up(), codes, any::<bool>()).prop_map(|(open, up, codes, finish)| {
        let session_id = match &open[0].1 {
            Command::OpenSession { id, .. } => id.clone(),
            _ => String::new(),
        };
        let executor_id = match &up[1].1 {
            Command::CreateExecutor { id, .. } => id.clone(),
            _ => String::new(),
        };
        let mut chunk = open;
        for (now, command) in up {
            let command = match command {
                Command::BindExecutor { id, .. } => Command::BindExecutor {
                    id,
                    session_id: session_id.clone(),
                },
                Command::BindCompleted { id, result, .. } => Command::BindCompleted {
                    id,
                    session_id: session_id.clone(),
                    result,
                },
                other => other,
            };
            chunk.push((now, command));
        }
        let last = codes.len();
        for (i, code) in codes.into_iter().enumerate() {
            let task_id = i as u64 + 1;
            let assign = Command::AssignTasks {
                assignments: vec![Assignment {
                    executor_id: executor_id.clone(),
                    session_id: session_id.clone(),
                    task_id,
                }],
            };
            chunk.push((500, assign));
            if finish || i + 1 < last {
                let complete = Command::CompleteTasks {
                    results: vec![TaskResult {
                        executor_id: executor_id.clone(),
                        session_id: session_id.clone(),
                        task_id,
                        return_code: code,
                        output: Some(Bytes::from_static(b"out")),
                        message: Some("ValueError: x".into()),
                        duration_us: 0,
                    }],
                    refill: None,
                };
                chunk.push((600, complete));
            }
        }
        chunk
    })
}

/// Sequences of `steps / 2` to `steps` chunks: random single commands mixed with coherent
/// chunks that open sessions, bring executors up and run tasks, so that deep states (running,
/// finished, requeued tasks; bound, unbinding executors) are reached too.
pub fn commands(steps: usize) -> impl Strategy<Value = Vec<Timed>> {
    let step = prop_oneof![
        10 => command().prop_map(|c| vec![c]),
        2 => session_up(),
        1 => bring_up(),
        2 => run_task(),
        2 => workflow(),
    ];
    proptest::collection::vec(step, steps / 2..steps)
        .prop_map(|chunks| chunks.into_iter().flatten().collect())
}
