//! Executor task queues in the state machine: CompleteTasks refills the executor it heard from
//! in the same apply, as deep as the session's measured task duration allows, and a lost
//! executor charges a retry only to the task it may have started.

use crate::state_support;

use bytes::Bytes;
use flame_control_plane::state::queue::DispatchPolicy;
use flame_control_plane::state::{Command, NewTask, Outcome, StateMachine, TaskResult};
use flame_proto::model::TaskState;
use state_support::*;

const POLICY: DispatchPolicy = DispatchPolicy {
    window_us: 10_000,
    max_depth: 8,
    max_queued_bytes: 1 << 20,
};

fn held(m: &StateMachine, executor: &str) -> Vec<u64> {
    let entry = m.state().executor_entry(executor).expect("executor");
    entry.tasks.iter().map(|t| t.task_id).collect()
}

/// Completes task `task_id` on `executor`, measured at `duration_us`, refilling under `POLICY`.
fn complete_measured(m: &mut StateMachine, executor: &str, task_id: u64, duration_us: u64) {
    let r = m.apply(
        50,
        Command::CompleteTasks {
            results: vec![TaskResult {
                executor_id: executor.into(),
                session_id: "s".into(),
                task_id,
                return_code: 0,
                output: Some(Bytes::from_static(b"ok")),
                message: None,
                duration_us,
            }],
            refill: Some(POLICY),
        },
    );
    let Outcome::TaskUpdates(items) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(items.iter().all(Result::is_ok), "{items:?}");
}

#[test]
fn completing_a_fast_task_refills_its_executor_to_the_window_in_the_same_apply() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 20);
    bound_executor(&mut m, "e1", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    // 2 ms tasks: a 10 ms window holds 5.
    complete_measured(&mut m, "e1", 1, 2_000);
    assert_eq!(held(&m, "e1"), vec![2, 3, 4, 5, 6]);
    let session = m.state().session_entry("s").expect("s");
    assert_eq!(session.mean_task_us, 2_000);
    let task = m.state().task("s", 2).expect("task 2");
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.events.last().map(|e| e.code), Some(1));
    // 100 µs tasks pull the mean down (EWMA 1/8) and deepen the queue, up to max_depth.
    for id in 2..=6 {
        complete_measured(&mut m, "e1", id, 100);
    }
    assert_eq!(held(&m, "e1").len(), 8, "capped at max_depth");
}

#[test]
fn slow_tasks_keep_one_task_per_executor() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 5);
    bound_executor(&mut m, "e1", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    complete_measured(&mut m, "e1", 1, 50_000);
    assert_eq!(held(&m, "e1"), vec![2], "a slow task gets no company");
}

#[test]
fn a_queue_holds_no_more_input_than_the_byte_budget() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let big = Bytes::from(vec![7u8; 400 << 10]);
    let tasks = (0..6)
        .map(|_| NewTask {
            input: Some(big.clone()),
            request_id: None,
        })
        .collect();
    m.apply(
        20,
        Command::CreateTasks {
            session_id: "s".into(),
            tasks,
            dispatch: None,
        },
    );
    bound_executor(&mut m, "e1", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    complete_measured(&mut m, "e1", 1, 100);
    // 400 KiB inputs, 1 MiB budget: two fit, a third would not.
    assert_eq!(held(&m, "e1"), vec![2, 3]);
}

#[test]
fn a_lost_executor_charges_a_retry_only_to_the_task_it_may_have_started() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 3);
    bound_executor(&mut m, "e1", "n1", "s");
    for id in 1..=3 {
        assign(&mut m, "e1", "s", id).expect("assign");
    }
    m.apply(70, Command::ExecutorReleased { id: "e1".into() });
    let entry = m.state().session_entry("s").expect("s");
    let requeues: Vec<(TaskState, u32)> =
        entry.tasks().map(|t| (t.task.state, t.requeues)).collect();
    assert_eq!(
        requeues,
        vec![
            (TaskState::Pending, 1),
            (TaskState::Pending, 0),
            (TaskState::Pending, 0)
        ]
    );
    let text = m.state().task("s", 2).expect("2").events.last().cloned();
    let text = text.and_then(|e| e.message).unwrap_or_default();
    assert!(text.contains("before it started the task"), "{text}");
}

#[test]
fn a_stale_result_refills_nothing() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    create_tasks(&mut m, "s", 4);
    bound_executor(&mut m, "e1", "n1", "s");
    bound_executor(&mut m, "e2", "n1", "s");
    assign(&mut m, "e1", "s", 1).expect("assign");
    let before = m.state().clone();
    let r = m.apply(
        50,
        Command::CompleteTasks {
            results: vec![TaskResult {
                executor_id: "e2".into(),
                session_id: "s".into(),
                task_id: 1,
                return_code: 0,
                output: None,
                message: None,
                duration_us: 10,
            }],
            refill: Some(POLICY),
        },
    );
    assert!(r.effects.is_empty(), "{:?}", r.effects);
    assert_eq!(m.state(), &before);
}

#[test]
fn tasks_created_for_a_session_with_free_executors_are_dealt_in_the_same_apply() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    bound_executor(&mut m, "e1", "n1", "s");
    bound_executor(&mut m, "e2", "n1", "s");
    let tasks = (0..3)
        .map(|_| NewTask {
            input: None,
            request_id: None,
        })
        .collect();
    let r = m.apply(
        20,
        Command::CreateTasks {
            session_id: "s".into(),
            tasks,
            dispatch: Some(POLICY),
        },
    );
    let Outcome::Tasks(Ok(created)) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    // The response shows the tasks as created; the state has them dealt round-robin, one per
    // executor while the session's task duration is unknown.
    assert!(created.iter().all(|t| t.state == TaskState::Pending));
    assert_eq!(held(&m, "e1"), vec![1]);
    assert_eq!(held(&m, "e2"), vec![2]);
    assert_eq!(
        m.state().task("s", 3).map(|t| t.state),
        Some(TaskState::Pending)
    );
}
