//! Scenario tests of the state machine: tasks, executors, nodes and retention, walking the
//! items of the specification's checklist (section 14) that the state machine decides.

use crate::state_support;

use bytes::Bytes;
use flame_control_plane::state::{
    Assignment, BindResult, Command, Effect, NewTask, Outcome, StateConfig, StateMachine, TaskRef,
    closed_sessions_to_purge,
};
use flame_proto::error::FlameError;
use flame_proto::model::{ExecutorState, NodeState, ResourceRequirement, Shim, TaskState};
use state_support::*;

/// Checklist 23 and 24: ids are 1, 2, ... per session; new tasks are Pending with a code-0
/// event and keep their input's presence.
#[test]
fn task_ids_are_sequential_per_session() {
    let mut m = machine();
    create_session(&mut m, "a", "flmrun");
    create_session(&mut m, "b", "flmrun");
    let first = create_tasks(&mut m, "a", 3);
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(create_tasks(&mut m, "b", 1)[0].id, 1);
    let r = m.apply(
        21,
        Command::CreateTasks {
            session_id: "a".into(),
            tasks: vec![
                NewTask {
                    input: None,
                    request_id: None,
                },
                NewTask {
                    input: Some(Bytes::new()),
                    request_id: None,
                },
            ],
            dispatch: None,
        },
    );
    let tasks = match r.outcome {
        Outcome::Tasks(Ok(tasks)) => tasks,
        other => panic!("{other:?}"),
    };
    assert_eq!((tasks[0].id.get(), tasks[1].id.get()), (4, 5));
    assert_eq!(
        (tasks[0].input.clone(), tasks[1].input.clone()),
        (None, Some(Bytes::new()))
    );
    let task = m.state().task("a", 4).expect("task 4");
    assert_eq!(
        (task.state, task.creation_time_ms),
        (TaskState::Pending, 21)
    );
    assert_eq!(task.events.len(), 1);
    assert_eq!(task.events[0].code, 0);
    assert_eq!(m.state().session("a").expect("a").counters.pending, 5);
    let ids: Vec<u64> = m
        .state()
        .tasks("a")
        .expect("a")
        .map(|t| t.id.get())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// A request id seen before in the session returns the original task, also within one command
/// (the same id with another input is refused: `state_requests.rs`).
#[test]
fn repeated_request_ids_return_the_original_task() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let submit = |m: &mut StateMachine, rid: &str, input: &'static [u8]| {
        let r = m.apply(
            20,
            Command::CreateTasks {
                session_id: "s".into(),
                tasks: vec![
                    NewTask {
                        input: Some(Bytes::from_static(input)),
                        request_id: Some(rid.into()),
                    },
                    NewTask {
                        input: Some(Bytes::from_static(input)),
                        request_id: Some(rid.into()),
                    },
                ],
                dispatch: None,
            },
        );
        match r.outcome {
            Outcome::Tasks(Ok(tasks)) => tasks,
            other => panic!("{other:?}"),
        }
    };
    let first = submit(&mut m, "r1", b"one");
    assert_eq!(first[0], first[1]);
    assert_eq!(first[0].id, 1);
    let again = submit(&mut m, "r1", b"one");
    assert_eq!(again[0], first[0]);
    let second = submit(&mut m, "r2", b"two");
    assert_eq!(second[0].id, 2);
    assert_eq!(m.state().session_entry("s").expect("s").task_count(), 2);
}

/// Checklist 29 and unknown sessions.
#[test]
fn create_task_on_closed_or_unknown_session_fails() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    session(m.apply(5, Command::CloseSession { id: "s".into() }));
    let r = m.apply(
        6,
        Command::CreateTasks {
            session_id: "s".into(),
            tasks: vec![NewTask {
                input: None,
                request_id: None,
            }],
            dispatch: None,
        },
    );
    let err = error(r);
    assert!(matches!(&err, FlameError::InvalidState(m)
        if m.contains("Cannot create task in closed session")));
    let r = m.apply(
        6,
        Command::CreateTasks {
            session_id: "nope".into(),
            tasks: vec![],
            dispatch: None,
        },
    );
    assert!(matches!(error(r), FlameError::NotFound(m) if m.contains("not found")));
}

/// Checklist 19, 24, 25, 26, 30 and 31: running, success with output, failure with the
/// message verbatim, counters, and a session that keeps going after failures.
#[test]
fn tasks_run_succeed_and_fail_with_counters_in_step() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 8);
    bound_executor(&mut m, "e1", "n1", "s");
    for id in 1..=8 {
        let running = assign(&mut m, "e1", "s", id).expect("assign");
        assert_eq!(running.state, TaskState::Running);
        assert_eq!(running.events.last().map(|e| e.code), Some(1));
        let done = match id {
            2 => complete(&mut m, "e1", "s", id, 1, None, Some("ValueError: boom")),
            3 => complete(&mut m, "e1", "s", id, 7, None, None),
            4 => complete(&mut m, "e1", "s", id, 0, None, None),
            _ => complete(&mut m, "e1", "s", id, 0, Some(b"out"), None),
        }
        .expect("complete");
        assert_eq!(done.completion_time_ms, Some(40));
    }
    let get = |id| m.state().task("s", id).expect("task").clone();
    let ok = get(1);
    assert_eq!(
        (ok.state, ok.output.as_deref()),
        (TaskState::Succeed, Some(&b"out"[..]))
    );
    assert_eq!(
        ok.events.iter().map(|e| e.code).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let failed = get(2);
    assert_eq!(failed.state, TaskState::Failed);
    let last = failed.events.last().expect("event");
    assert_eq!(
        (last.code, last.message.as_deref()),
        (3, Some("ValueError: boom"))
    );
    let default = get(3).events.last().and_then(|e| e.message.clone());
    assert_eq!(default.as_deref(), Some("Task failed with state <Failed>"));
    assert_eq!((get(4).state, get(4).output), (TaskState::Succeed, None));
    let counters = m.state().session("s").expect("s").counters;
    assert_eq!(
        (counters.succeed, counters.failed, counters.pending),
        (6, 2, 0)
    );
    let listed: Vec<_> = m.state().tasks("s").expect("s").map(|t| t.id).collect();
    assert_eq!(listed, (1..=8).collect::<Vec<_>>());
    assert!(m.state().tasks("s").expect("s").all(|t| t.input.is_some()));
}

/// An executor holds its assigned tasks in assignment order (it runs them one at a time);
/// assignments need a Bound executor of the session and a Pending task; each item fails alone.
#[test]
fn assignments_are_checked_one_by_one() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_session(&mut m, "t", "flmrun");
    create_tasks(&mut m, "s", 3);
    create_tasks(&mut m, "t", 1);
    bound_executor(&mut m, "e1", "n1", "s");
    let r = m.apply(
        30,
        Command::AssignTasks {
            assignments: vec![
                Assignment {
                    executor_id: "e1".into(),
                    session_id: "s".into(),
                    task_id: 1,
                },
                Assignment {
                    executor_id: "e1".into(),
                    session_id: "s".into(),
                    task_id: 2,
                },
                Assignment {
                    executor_id: "e1".into(),
                    session_id: "t".into(),
                    task_id: 1,
                },
                Assignment {
                    executor_id: "ghost".into(),
                    session_id: "s".into(),
                    task_id: 3,
                },
            ],
        },
    );
    let Outcome::TaskUpdates(items) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(items[0].is_ok());
    assert!(items[1].is_ok(), "a second task queues behind the first");
    assert!(matches!(&items[2], Err(FlameError::InvalidState(m)) if m.contains("not bound")));
    assert!(matches!(&items[3], Err(FlameError::NotFound(_))));
    let held = |id| TaskRef {
        session_id: "s".into(),
        task_id: id,
    };
    let e1 = m.state().executor_entry("e1").expect("e1");
    assert_eq!(e1.tasks, vec![held(1), held(2)]);
    complete(&mut m, "e1", "s", 1, 0, None, None).expect("done");
    let e1 = m.state().executor_entry("e1").expect("e1");
    assert_eq!(e1.tasks, vec![held(2)], "one-at-a-time policy: no refill");
    let again = assign(&mut m, "e1", "s", 1);
    assert!(matches!(again, Err(FlameError::InvalidState(m)) if m.contains("Succeed")));
}

/// Stale results (task not Running on that executor) change nothing and are reported.
#[test]
fn stale_results_are_ignored_and_reported() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 2);
    bound_executor(&mut m, "e1", "n1", "s");
    bound_executor(&mut m, "e2", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    let before = m.state().clone();
    for (executor, task) in [("e2", 1), ("e1", 2), ("zz", 1)] {
        let r = complete(&mut m, executor, "s", task, 0, None, None);
        assert!(matches!(r, Err(FlameError::InvalidState(m)) if m.contains("stale")));
    }
    assert_eq!(m.state(), &before);
    complete(&mut m, "e1", "s", 1, 0, None, None).expect("the real result");
    let late = complete(&mut m, "e1", "s", 1, 0, None, None);
    assert!(late.is_err());
}

/// Requeue is bounded: after `task_retry_limit` requeues the next loss fails the task with the
/// specification's code-3 text.
#[test]
fn requeue_is_bounded_by_the_task_retry_limit() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 1);
    bound_executor(&mut m, "e1", "n1", "s");
    let task = TaskRef {
        session_id: "s".into(),
        task_id: 1,
    };
    for round in 0..4 {
        assign(&mut m, "e1", "s", 1).expect("assign");
        let r = m.apply(
            60,
            Command::RequeueTasks {
                tasks: vec![task.clone()],
                reason: "executor e1 was lost".into(),
            },
        );
        let after = single_update(r).expect("requeue");
        assert!(m.state().executor_entry("e1").expect("e1").tasks.is_empty());
        if round < 3 {
            assert_eq!(after.state, TaskState::Pending);
            let text = after
                .events
                .last()
                .and_then(|e| e.message.clone())
                .unwrap_or_default();
            assert!(text.contains("executor e1 was lost"), "{text}");
        } else {
            assert_eq!(after.state, TaskState::Failed);
            let last = after.events.last().expect("event");
            assert_eq!(last.code, 3);
            assert_eq!(
                last.message.as_deref(),
                Some("task exceeded retry limit (3) after executor loss")
            );
            assert_eq!(after.completion_time_ms, Some(60));
        }
    }
    let r = m.apply(
        61,
        Command::RequeueTasks {
            tasks: vec![task],
            reason: "x".into(),
        },
    );
    assert!(single_update(r).is_err());
}

/// Creates executor `id` on `n1`, binds it to session `s`, and reports a failed bind.
fn fail_bind(m: &mut StateMachine, id: &str) -> flame_control_plane::state::Response {
    executor(m.apply(
        3,
        Command::CreateExecutor {
            id: id.into(),
            node: "n1".into(),
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        },
    ));
    executor(m.apply(
        0,
        Command::BindExecutor {
            id: id.into(),
            session_id: "s".into(),
        },
    ));
    m.apply(
        4,
        Command::BindCompleted {
            id: id.into(),
            session_id: "s".into(),
            result: BindResult::Failed {
                code: 12,
                message: "on_session_enter failed: ImportError: nope".into(),
            },
        },
    )
}

/// Checklist 21: bind failures record 1001 events; at the limit 1002 appears and no new
/// executor is bound; a success resets the count.
#[test]
fn bind_failures_pause_the_session_at_the_retry_limit() {
    let mut m = StateMachine::new(StateConfig {
        bind_retry_limit: 2,
        ..StateConfig::default()
    });
    m.apply(1, Command::EnsureBuiltins);
    create_session(&mut m, "s", "flmrun");
    m.apply(
        2,
        Command::RegisterNode {
            node: node("n1"),
            agent_id: "a1".into(),
        },
    );
    let first = fail_bind(&mut m, "e1");
    assert!(first.effects.contains(&Effect::SessionChanged {
        session_id: "s".into()
    }));
    assert_eq!(executor(first).state, ExecutorState::Unbinding);
    let entry = m.state().session_entry("s").expect("s");
    assert_eq!(entry.bind_failures, 1);
    let text = entry.session.events[0].message.clone().unwrap_or_default();
    assert_eq!(entry.session.events[0].code, 1001);
    assert!(text.contains("failed to bind session") && text.contains("ImportError: nope"));
    fail_bind(&mut m, "e2");
    let codes: Vec<i32> = m
        .state()
        .session("s")
        .expect("s")
        .events
        .iter()
        .map(|e| e.code)
        .collect();
    assert_eq!(codes, [1001, 1001, 1002]);
    assert_eq!(
        m.state().session("s").expect("s").state,
        flame_proto::model::SessionState::Open
    );
    executor(m.apply(
        5,
        Command::CreateExecutor {
            id: "e3".into(),
            node: "n1".into(),
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        },
    ));
    let refused = m.apply(
        0,
        Command::BindExecutor {
            id: "e3".into(),
            session_id: "s".into(),
        },
    );
    assert!(matches!(error(refused), FlameError::InvalidState(m) if m.contains("paused")));
}

#[test]
fn a_successful_bind_resets_the_failure_count() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    bound_executor(&mut m, "e1", "n1", "s");
    executor(m.apply(0, Command::UnbindExecutor { id: "e1".into() }));
    executor(m.apply(8, Command::UnbindCompleted { id: "e1".into() }));
    executor(m.apply(
        0,
        Command::BindExecutor {
            id: "e1".into(),
            session_id: "s".into(),
        },
    ));
    m.apply(
        9,
        Command::BindCompleted {
            id: "e1".into(),
            session_id: "s".into(),
            result: BindResult::Failed {
                code: 10,
                message: "application installation failed: x".into(),
            },
        },
    );
    assert_eq!(m.state().session_entry("s").expect("s").bind_failures, 1);
    executor(m.apply(10, Command::UnbindCompleted { id: "e1".into() }));
    executor(m.apply(
        0,
        Command::BindExecutor {
            id: "e1".into(),
            session_id: "s".into(),
        },
    ));
    let stale = m.apply(
        11,
        Command::BindCompleted {
            id: "e1".into(),
            session_id: "other".into(),
            result: BindResult::Ok,
        },
    );
    assert!(matches!(error(stale), FlameError::InvalidState(m) if m.contains("stale")));
    executor(m.apply(
        11,
        Command::BindCompleted {
            id: "e1".into(),
            session_id: "s".into(),
            result: BindResult::Ok,
        },
    ));
    assert_eq!(m.state().session_entry("s").expect("s").bind_failures, 0);
}

/// Invalid executor transitions give `Executor is <state>`.
#[test]
fn executor_calls_out_of_order_are_refused() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    bound_executor(&mut m, "e1", "n1", "s");
    let r = m.apply(0, Command::ReleaseExecutor { id: "e1".into() });
    assert!(matches!(error(r), FlameError::InvalidState(m) if m.starts_with("Executor is Bound")));
    let r = m.apply(0, Command::RegisterExecutor { id: "nope".into() });
    assert!(matches!(error(r), FlameError::NotFound(_)));
    let dup = m.apply(
        1,
        Command::CreateExecutor {
            id: "e1".into(),
            node: "n1".into(),
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        },
    );
    assert!(matches!(error(dup), FlameError::AlreadyExists(_)));
    let r = m.apply(9, Command::ExecutorReleased { id: "e1".into() });
    assert!(r.effects.contains(&Effect::ExecutorRemoved {
        executor_id: "e1".into(),
        node: "n1".into()
    }));
    assert!(m.state().executor("e1").is_none());
}

/// Nodes: a second agent is refused while the node lives; heartbeats are stored; NotReady
/// removes the node's executors and requeues their tasks; executors go only to Ready nodes.
#[test]
fn node_loss_requeues_running_tasks() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 2);
    bound_executor(&mut m, "e1", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    let other = m.apply(
        9,
        Command::RegisterNode {
            node: node("n1"),
            agent_id: "intruder".into(),
        },
    );
    assert!(matches!(error(other), FlameError::AlreadyExists(_)));
    let r = m.apply(77, Command::Heartbeat { node: "n1".into() });
    assert!(matches!(r.outcome, Outcome::Node(Ok(ref n)) if n.last_heartbeat_ms == 77));
    m.apply(0, Command::NodeDisconnected { node: "n1".into() });
    assert_eq!(m.state().node("n1").expect("n1").state, NodeState::Unknown);
    let r = m.apply(80, Command::MarkNodeNotReady { node: "n1".into() });
    assert!(r.effects.contains(&Effect::ExecutorRemoved {
        executor_id: "e1".into(),
        node: "n1".into()
    }));
    assert!(r.effects.contains(&Effect::TaskChanged {
        session_id: "s".into(),
        task_id: 1
    }));
    assert_eq!(m.state().node("n1").expect("n1").state, NodeState::NotReady);
    assert_eq!(m.state().executors().count(), 0);
    assert_eq!(m.state().task("s", 1).expect("t").state, TaskState::Pending);
    assert_eq!(
        m.state()
            .session_entry("s")
            .expect("s")
            .task(1)
            .expect("t")
            .requeues,
        1
    );
    let placed = m.apply(
        81,
        Command::CreateExecutor {
            id: "e2".into(),
            node: "n1".into(),
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        },
    );
    assert!(matches!(error(placed), FlameError::InvalidState(_)));
    let hb = m.apply(82, Command::Heartbeat { node: "n1".into() });
    assert!(matches!(error(hb), FlameError::InvalidState(m) if m.contains("register it again")));
    let back = m.apply(
        83,
        Command::RegisterNode {
            node: node("n1"),
            agent_id: "intruder".into(),
        },
    );
    assert!(matches!(back.outcome, Outcome::Node(Ok(ref n)) if n.state == NodeState::Ready));
}

/// Retention: the policy picks the oldest closed sessions; PurgeSessions removes only Closed.
#[test]
fn retention_purges_the_oldest_closed_sessions() {
    let mut m = machine();
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        create_session(&mut m, id, "flmrun");
        create_tasks(&mut m, id, 2);
        if id != "d" {
            session(m.apply(100 + i as i64, Command::CloseSession { id: id.into() }));
        }
    }
    let state = m.state();
    assert_eq!(
        closed_sessions_to_purge(state, None, None, 1000),
        Vec::<String>::new()
    );
    assert_eq!(
        closed_sessions_to_purge(state, Some(1), None, 1000),
        ["a", "b"]
    );
    assert_eq!(
        closed_sessions_to_purge(state, None, Some(899), 1000),
        ["a"]
    );
    assert_eq!(
        closed_sessions_to_purge(state, Some(2), Some(899), 1000),
        ["a"]
    );
    assert_eq!(
        closed_sessions_to_purge(state, Some(0), None, 1000),
        ["a", "b", "c"]
    );
    let r = m.apply(
        0,
        Command::PurgeSessions {
            ids: vec!["a".into(), "d".into(), "zz".into()],
        },
    );
    assert_eq!(r.outcome, Outcome::Purged(vec!["a".into()]));
    assert!(m.state().session("a").is_none());
    assert!(m.state().session("d").is_some());
}

/// Review R3: a session holds at most the policy's tasks; a batch that would pass the cap is
/// refused whole, naming the key, and creates nothing.
#[test]
fn a_batch_past_the_tasks_per_session_cap_is_refused_whole() {
    let mut m = StateMachine::new(StateConfig {
        max_tasks_per_session: 5,
        ..StateConfig::default()
    });
    m.apply(1, Command::EnsureBuiltins);
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 3);
    let three = (0..3)
        .map(|i| NewTask {
            input: Some(Bytes::from(format!("more {i}"))),
            request_id: None,
        })
        .collect();
    let r = m.apply(
        30,
        Command::CreateTasks {
            session_id: "s".into(),
            tasks: three,
            dispatch: None,
        },
    );
    assert!(
        matches!(&r.outcome, Outcome::Tasks(Err(FlameError::Exhausted(m))) if m.contains("max_tasks_per_session")),
        "{:?}",
        r.outcome
    );
    assert_eq!(m.state().session("s").expect("s").counters.pending, 3);
    assert_eq!(create_tasks(&mut m, "s", 2).len(), 2);
}
