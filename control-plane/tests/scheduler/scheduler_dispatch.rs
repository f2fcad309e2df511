//! Scenario tests of the scheduler's dispatch step (issue 4 item 3): Pending tasks go to Bound
//! executors of their session with queue room, lowest id first, dealt round-robin, in one
//! `AssignTasks`, never twice.

use crate::scheduler_support;

use flame_control_plane::state::Command;
use flame_proto::model::TaskState;
use scheduler_support::{Opts, World, assignments, res};

fn world_with_session(tasks: usize) -> World {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.session("s", "flmping", Opts::default());
    w.tasks("s", tasks);
    w
}

#[test]
fn dispatch_gives_idle_bound_executors_the_lowest_pending_tasks_in_one_batch() {
    let mut w = world_with_session(5);
    for id in ["e1", "e2", "e3"] {
        w.bound(id, "n1", "s");
    }
    let commands = w.plan();
    assert!(
        matches!(commands.first(), Some(Command::AssignTasks { .. })),
        "dispatch comes first: {commands:?}"
    );
    let expected = [("e1", 1), ("e2", 2), ("e3", 3)]
        .map(|(e, t)| (e.to_owned(), "s".to_owned(), t))
        .to_vec();
    assert_eq!(assignments(&commands), expected);
    w.apply_all(&commands);
    assert_eq!(w.count("s", TaskState::Running), 3);
}

#[test]
fn dispatch_skips_busy_executors_and_never_assigns_a_task_twice() {
    let mut w = world_with_session(4);
    for id in ["e1", "e2", "e3"] {
        w.bound(id, "n1", "s");
    }
    w.assign("e2", "s", 1);
    let first = w.plan();
    let got = assignments(&first);
    assert_eq!(
        got,
        vec![("e1".into(), "s".into(), 2), ("e3".into(), "s".into(), 3)]
    );
    w.apply_all(&first);
    let again = assignments(&w.plan());
    assert!(again.is_empty(), "every executor is busy: {again:?}");
}

#[test]
fn dispatch_uses_only_executors_of_the_tasks_session() {
    let mut w = world_with_session(1);
    w.session("other", "flmping", Opts::default());
    w.bound("e1", "n1", "other");
    w.bound("e2", "n1", "s");
    let got = assignments(&w.plan());
    assert_eq!(got, vec![("e2".into(), "s".into(), 1)]);
}

#[test]
fn dispatch_leaves_extra_executors_idle_when_tasks_run_out() {
    let mut w = world_with_session(2);
    for id in ["e1", "e2", "e3"] {
        w.bound(id, "n1", "s");
    }
    let got = assignments(&w.plan());
    assert_eq!(
        got,
        vec![("e1".into(), "s".into(), 1), ("e2".into(), "s".into(), 2)]
    );
}

#[test]
fn executors_on_draining_nodes_get_no_task() {
    let mut w = world_with_session(2);
    w.node("n2", res(8, 16, 0));
    w.bound("e1", "n2", "s");
    w.disconnect("n2");
    let commands = w.plan();
    assert!(assignments(&commands).is_empty(), "{commands:?}");
}

#[test]
fn requeued_tasks_are_dispatched_again_lowest_id_first() {
    let mut w = world_with_session(3);
    w.node("n2", res(8, 16, 0));
    w.bound("e1", "n2", "s");
    w.assign("e1", "s", 1);
    w.expire("n2");
    assert_eq!(w.count("s", TaskState::Pending), 3);
    w.bound("e2", "n1", "s");
    let got = assignments(&w.plan());
    assert_eq!(got, vec![("e2".into(), "s".into(), 1)]);
}

#[test]
fn fast_tasks_are_queued_dealt_round_robin_so_every_executor_gets_some() {
    let mut w = world_with_session(8);
    for id in ["e1", "e2", "e3"] {
        w.bound(id, "n1", "s");
    }
    w.refill = false;
    w.assign("e1", "s", 1);
    w.agents(&|_| false); // task 1 took 1 ms: the session's queues may now be 20 deep
    let got = assignments(&w.plan());
    let expected = [
        ("e1", 2),
        ("e2", 3),
        ("e3", 4),
        ("e1", 5),
        ("e2", 6),
        ("e3", 7),
        ("e1", 8),
    ]
    .map(|(e, t)| (e.to_owned(), "s".to_owned(), t))
    .to_vec();
    assert_eq!(got, expected);
}
