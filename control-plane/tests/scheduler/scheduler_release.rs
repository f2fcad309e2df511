//! Scenario tests of delayed release and release: a warm executor stays bound for its
//! application's `delay_release`, never below `min_instances`; free executors nobody needs are
//! released, ones a session needs are bound instead; closed sessions are not unbound twice; the
//! warm timers follow executors through work, rebinding and leader change.

use crate::scheduler_support;

use flame_control_plane::scheduler::WarmTimers;
use flame_proto::model::{ExecutorState, Shim, TaskState};
use scheduler_support::{Opts, World, binds, releases, res, unbinds};

/// A world with a node, application `warm` (delay_release 10 s) and session `s` of it with
/// `min` instances and executors `e1`, `e2` bound and idle (no tasks).
fn warm_world(min: u32) -> World {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.app("warm", Shim::Host, 100, 10);
    let opts = Opts {
        min,
        ..Opts::default()
    };
    w.session("s", "warm", opts);
    w.bound("e1", "n1", "s");
    w.now += 1;
    w.bound("e2", "n1", "s");
    w
}

#[test]
fn delayed_release_unbinds_only_after_delay_release() {
    let mut w = warm_world(0);
    assert!(w.plan().is_empty(), "timers start now");
    w.now += 9_999;
    assert!(w.plan().is_empty(), "still warm after 9.999 s");
    w.now += 1;
    let commands = w.step();
    assert_eq!(unbinds(&commands), vec!["e1", "e2"]);
    assert_eq!(w.executors_of("s", ExecutorState::Unbinding), 2);
    assert_eq!(
        (w.last_stats.delayed_releases, w.last_stats.reclaims),
        (2, 0)
    );
}

#[test]
fn the_leader_counts_how_long_each_session_waited_for_its_first_executor() {
    let mut w = warm_world(0);
    w.plan(); // the first observation: `s` was served before this leader, so it is not counted
    assert_eq!(w.timers.take_first_waits(), Vec::<i64>::new());
    w.session("late", "warm", Opts::default());
    w.tasks("late", 1);
    let created = w.now;
    w.step(); // an executor is created and bound for it (Binding)
    assert_eq!(w.timers.waiting_sessions(), 1, "late waits");
    w.now += 250;
    w.agents(&|_| false); // the bind completes
    w.plan();
    assert_eq!(w.timers.take_first_waits(), vec![w.now - created]);
    w.now += 1_000;
    w.plan();
    assert_eq!(
        w.timers.take_first_waits(),
        Vec::<i64>::new(),
        "counted once"
    );
}

#[test]
fn delayed_release_never_goes_below_min_instances() {
    let mut w = warm_world(1);
    w.plan();
    w.now += 60_000;
    let commands = w.step();
    assert_eq!(unbinds(&commands), vec!["e1"], "one instance stays warm");
    w.now += 60_000;
    assert!(unbinds(&w.plan()).is_empty());
}

#[test]
fn work_restarts_the_warm_timer() {
    let mut w = warm_world(0);
    w.plan();
    w.now += 8_000;
    w.tasks("s", 1);
    w.step(); // e1 takes the task
    w.agents(&|_| false); // and finishes it
    w.now += 2_000;
    let commands = w.plan();
    assert_eq!(
        unbinds(&commands),
        vec!["e2"],
        "e1 worked 2 s ago: {commands:?}"
    );
}

#[test]
fn an_executor_dispatched_now_stays_bound_and_its_idle_peer_goes() {
    let mut w = warm_world(0);
    w.plan();
    w.now += 60_000;
    w.tasks("s", 1);
    let commands = w.plan();
    assert_eq!(
        scheduler_support::assignments(&commands),
        vec![("e1".into(), "s".into(), 1)]
    );
    assert_eq!(unbinds(&commands), vec!["e2"], "no task is left for e2");
}

#[test]
fn pending_tasks_keep_idle_executors_bound() {
    let mut w = warm_world(0);
    w.node("n2", res(8, 16, 0));
    w.bound("far", "n2", "s");
    w.disconnect("n2");
    w.plan();
    w.now += 60_000;
    // Three tasks, two executors that can take one: a task stays Pending after dispatch.
    w.tasks("s", 3);
    let commands = w.plan();
    assert_eq!(scheduler_support::assignments(&commands).len(), 2);
    assert!(unbinds(&commands).is_empty(), "{commands:?}");
}

#[test]
fn executors_running_tasks_are_never_unbound() {
    let mut w = warm_world(0);
    w.tasks("s", 2);
    w.assign("e1", "s", 1);
    w.assign("e2", "s", 2);
    w.plan();
    w.now += 60_000;
    assert!(w.plan().is_empty());
}

#[test]
fn idle_executors_nobody_needs_are_released() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.idle("spare", "n1", res(1, 1, 0), Shim::Host);
    w.ok(flame_control_plane::state::Command::CreateExecutor {
        id: "void".into(),
        node: "n1".into(),
        resreq: res(1, 1, 0),
        shim: Shim::Host,
    });
    let commands = w.step();
    assert_eq!(releases(&commands), vec!["spare", "void"]);
}

#[test]
fn idle_executors_a_session_needs_are_bound_not_released() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.idle("spare", "n1", res(1, 1, 0), Shim::Host);
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 1);
    let commands = w.step();
    assert_eq!(binds(&commands), vec![("spare".into(), "s".into())]);
    assert!(releases(&commands).is_empty());
}

#[test]
fn free_executors_on_draining_nodes_are_left_alone() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.idle("spare", "n1", res(1, 1, 0), Shim::Host);
    w.disconnect("n1");
    assert!(w.plan().is_empty());
}

#[test]
fn closed_sessions_are_unbound_by_the_state_machine_not_the_plan() {
    let mut w = warm_world(0);
    w.close("s");
    assert_eq!(w.executors_of("s", ExecutorState::Unbinding), 2);
    w.now += 60_000;
    assert!(unbinds(&w.plan()).is_empty());
    w.agents(&|_| false);
    assert_eq!(releases(&w.step()), vec!["e1", "e2"]);
}

#[test]
fn a_full_cycle_completes_tasks_then_releases_the_executors() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.app("quick", Shim::Host, 100, 1);
    w.session("s", "quick", Opts::default());
    w.tasks("s", 5);
    for _ in 0..8 {
        w.step();
        w.agents(&|_| false);
        w.now += 1_000;
    }
    assert_eq!(w.count("s", TaskState::Succeed), 5);
    assert_eq!(
        w.m.state().executors().count(),
        0,
        "warm executors went back"
    );
}

#[test]
fn warm_timers_follow_idleness_rebinding_and_leader_change() {
    let mut w = warm_world(0);
    // Completing task 1 must leave e1 idle rather than refill it at once.
    w.refill = false;
    let mut timers = WarmTimers::new();
    timers.observe(w.m.state(), 100);
    assert_eq!(timers.len(), 2);
    assert_eq!(timers.idle_since("e1", "s"), Some(100));
    assert_eq!(timers.idle_since("e1", "other"), None);
    timers.observe(w.m.state(), 200);
    assert_eq!(timers.idle_since("e1", "s"), Some(100), "kept while idle");
    w.tasks("s", 2);
    w.assign("e1", "s", 1);
    timers.observe(w.m.state(), 300);
    assert_eq!(timers.idle_since("e1", "s"), None, "busy");
    w.agents(&|_| false);
    timers.observe(w.m.state(), 400);
    assert_eq!(timers.idle_since("e1", "s"), Some(400), "idle again");
    // A task assigned and finished between two observations is seen through the plan.
    let plan =
        flame_control_plane::scheduler::plan(w.m.state(), 450, &timers, &w.config, &mut || {
            "unused".to_owned()
        });
    timers.note_plan(&plan);
    assert_eq!(timers.idle_since("e1", "s"), None, "e1 got task 2");
    w.apply_all(&plan);
    w.agents(&|_| false);
    timers.observe(w.m.state(), 500);
    assert_eq!(timers.idle_since("e1", "s"), Some(500));
    let mut new_leader = WarmTimers::new();
    assert!(new_leader.is_empty());
    new_leader.observe(w.m.state(), 600);
    assert_eq!(
        new_leader.idle_since("e2", "s"),
        Some(600),
        "fresh timers start late"
    );
}

#[test]
fn warm_executors_on_draining_nodes_are_not_unbound() {
    let mut w = warm_world(0);
    w.disconnect("n1");
    w.plan();
    w.now += 60_000;
    assert!(w.plan().is_empty());
}
