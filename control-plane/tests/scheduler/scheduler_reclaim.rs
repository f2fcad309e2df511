//! Scenario tests of reclaim on demand: a session that waits for capacity takes an executor
//! that another session keeps warm but idle, after the reclaim grace rather than after the
//! application's `delay_release`; never more than the waiting session needs, never below
//! `min_instances`, and never for a session that fits no node.

use crate::scheduler_support;

use flame_control_plane::scheduler::DEFAULT_RECLAIM_GRACE_MS;
use flame_proto::model::{ExecutorState, Shim};
use scheduler_support::{Opts, World, binds, res, unbinds};

/// A 2-cpu node full with `done`'s two idle executors (its application keeps them warm for
/// 60 s), and session `waiting` of the same size with `tasks` Pending tasks.
fn full_world(min: u32, tasks: usize) -> World {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("warm", Shim::Host, 100, 60);
    let done = Opts {
        min,
        ..Opts::default()
    };
    w.session("done", "warm", done);
    w.bound("e1", "n1", "done");
    w.now += 1;
    w.bound("e2", "n1", "done");
    w.session("waiting", "warm", Opts::default());
    w.tasks("waiting", tasks);
    w
}

#[test]
fn a_waiting_session_takes_an_idle_executor_after_the_grace_not_delay_release() {
    let mut w = full_world(0, 1);
    assert!(unbinds(&w.plan()).is_empty(), "idle timers start now");
    w.now += DEFAULT_RECLAIM_GRACE_MS - 1;
    assert!(unbinds(&w.plan()).is_empty(), "within the grace");
    w.now += 1;
    let commands = w.step();
    assert_eq!(
        unbinds(&commands),
        vec!["e1"],
        "the longest idle, and one only"
    );
    assert_eq!(
        (w.last_stats.reclaims, w.last_stats.delayed_releases),
        (1, 0),
        "counted as a reclaim"
    );
    w.agents(&|_| false); // e1 leaves the session
    let commands = w.step();
    assert_eq!(binds(&commands), vec![("e1".into(), "waiting".into())]);
    assert_eq!(
        w.executors_of("done", ExecutorState::Bound),
        1,
        "e2 stays warm"
    );
}

#[test]
fn reclaim_takes_as_many_executors_as_the_waiting_session_needs() {
    let mut w = full_world(0, 5);
    w.plan();
    w.now += DEFAULT_RECLAIM_GRACE_MS;
    assert_eq!(unbinds(&w.plan()), vec!["e1", "e2"]);
}

#[test]
fn reclaim_never_takes_a_session_below_min_instances() {
    let mut w = full_world(2, 5);
    w.plan();
    w.now += 120_000;
    assert!(
        unbinds(&w.plan()).is_empty(),
        "both executors are done's minimum"
    );
}

#[test]
fn an_idle_executor_stays_warm_when_the_waiting_session_fits_no_node() {
    let mut w = full_world(0, 0);
    let huge = Opts {
        resreq: res(64, 1, 0),
        ..Opts::default()
    };
    w.session("huge", "warm", huge);
    w.tasks("huge", 1);
    w.plan();
    w.now += 59_000;
    assert!(unbinds(&w.plan()).is_empty(), "{:?}", w.plan());
    w.now += 1_000;
    assert_eq!(
        unbinds(&w.plan()),
        vec!["e1", "e2"],
        "delay_release as usual"
    );
}
