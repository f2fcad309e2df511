//! Scenario tests of fair-share rotation (issue 13 item 2): a session with work that waits
//! while another holds more than it gets an executor at a task boundary once it has waited
//! `cluster.rotation_wait_ms`; never below `min_instances`, never against priority, never
//! before the executor served its hold (which weighs the observed cold start), and never when
//! moving an executor would only swap who is behind.

use crate::scheduler_support;

use flame_control_plane::scheduler::{
    COLD_START_FACTOR, DEFAULT_ROTATION_WAIT_MS, SchedulerConfig,
};
use flame_control_plane::state::Command;
use flame_control_plane::state::queue::DispatchPolicy;
use flame_proto::model::{ExecutorState, Shim};
use scheduler_support::{Opts, World, binds, res, unbinds, yields};

const WAIT: i64 = DEFAULT_ROTATION_WAIT_MS;

/// A node with `slots` cpus; session `a` (with `a_opts`) holds `e1` running task 1 and has
/// more work; session `b` (with `b_opts`) has 5 Pending tasks and no executor.
fn contended(slots: u64, a_opts: Opts, b_opts: Opts) -> World {
    let mut w = World::default_config();
    w.node("n1", res(slots, 16, 0));
    w.app("svc", Shim::Host, 100, 60);
    w.session("a", "svc", a_opts);
    w.tasks("a", 20);
    w.bound("e1", "n1", "a");
    w.assign("e1", "a", 1);
    w.session("b", "svc", b_opts);
    w.tasks("b", 5);
    w
}

#[test]
fn the_only_slot_changes_hands_at_a_task_boundary_after_the_rotation_wait() {
    let mut w = contended(1, Opts::default(), Opts::default());
    assert!(yields(&w.plan()).is_empty(), "b starts waiting now");
    w.now += WAIT - 1;
    assert!(yields(&w.plan()).is_empty(), "within the wait");
    w.now += 1;
    assert_eq!(yields(&w.step()), vec!["e1"]);
    assert_eq!(w.last_stats.rotations, 1, "counted as a rotation");
    let e1 = |w: &World| w.m.state().executor_entry("e1").cloned().expect("e1");
    assert!(e1(&w).yielding);
    assert_eq!(e1(&w).tasks.len(), 1, "its current task runs on");
    w.agents(&|_| false); // task 1 completes; the refill skips the yielding executor
    assert!(
        e1(&w).tasks.is_empty(),
        "no new task for a yielding executor"
    );
    assert_eq!(unbinds(&w.step()), vec!["e1"]);
    assert!(!e1(&w).yielding, "the mark goes with Bound");
    w.agents(&|_| false);
    assert_eq!(binds(&w.step()), vec![("e1".into(), "b".into())]);
}

#[test]
fn a_session_at_its_min_instances_never_yields() {
    let at_min = Opts {
        min: 1,
        ..Opts::default()
    };
    let mut w = contended(1, at_min, Opts::default());
    w.plan();
    w.now += 60 * WAIT;
    assert!(yields(&w.plan()).is_empty());
}

#[test]
fn priority_decides_who_yields() {
    let high = Opts {
        priority: 5,
        ..Opts::default()
    };
    let mut w = contended(1, high.clone(), Opts::default());
    w.plan();
    w.now += 60 * WAIT;
    assert!(yields(&w.plan()).is_empty(), "a lower priority waits");
    let mut w = contended(1, Opts::default(), high);
    w.plan();
    w.now += WAIT;
    assert_eq!(yields(&w.plan()), vec!["e1"], "a higher priority is served");
}

#[test]
fn sessions_that_both_hold_executors_do_not_swap_places() {
    let mut w = contended(3, Opts::default(), Opts::default());
    w.bound("e2", "n1", "a");
    w.bound("e3", "n1", "b");
    w.plan();
    w.now += 60 * WAIT;
    assert!(yields(&w.plan()).is_empty(), "a would keep 1, b has 1");
}

#[test]
fn the_hold_is_ten_cold_starts_when_binds_are_slow() {
    let mut w = World::default_config();
    w.node("n1", res(1, 16, 0));
    w.app("svc", Shim::Host, 100, 60);
    w.session("a", "svc", Opts::default());
    w.tasks("a", 20);
    w.idle("e1", "n1", res(1, 1, 0), Shim::Host);
    assert_eq!(binds(&w.step()), vec![("e1".into(), "a".into())]);
    w.plan(); // observed Binding now
    let cold_start = 700;
    w.now += cold_start;
    w.ok(Command::BindCompleted {
        id: "e1".into(),
        session_id: "a".into(),
        result: flame_control_plane::state::BindResult::Ok,
    });
    w.session("b", "svc", Opts::default());
    w.tasks("b", 5);
    w.step(); // observed Bound: the bind took 700 ms; e1 gets a's tasks
    let hold = COLD_START_FACTOR * cold_start;
    w.now += hold - 1;
    assert!(
        yields(&w.plan()).is_empty(),
        "b waited, but e1 serves its hold"
    );
    w.now += 1;
    assert_eq!(yields(&w.plan()), vec!["e1"]);
}

#[test]
fn a_zero_rotation_wait_turns_rotation_off() {
    let mut w = contended(1, Opts::default(), Opts::default());
    w.config = SchedulerConfig {
        rotation_wait_ms: 0,
        ..SchedulerConfig::default()
    };
    w.plan();
    w.now += 3_600_000;
    assert!(yields(&w.plan()).is_empty());
    assert_eq!(w.executors_of("a", ExecutorState::Bound), 1);
}

/// Rounds of `w`: observe, plan, apply, the agents report, a second passes. Returns the plan.
fn round(w: &mut World) -> Vec<Command> {
    let commands = w.step();
    w.agents(&|_| false);
    w.now += 1_000;
    commands
}

/// Binding or Bound executors of `session`.
fn held(w: &World, session: &str) -> u32 {
    w.executors_of(session, ExecutorState::Binding) as u32
        + w.executors_of(session, ExecutorState::Bound) as u32
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// More sessions with endless work than slots: every session gets an executor within a
    /// bound number of cycles, the one with `min_instances` keeps it, and all work completes.
    #[test]
    fn sessions_with_endless_work_take_turns_on_too_few_slots(
        sessions in 2usize..=6,
        slots in 1u64..=3,
        tasks in 15usize..=40,
    ) {
        // One task per executor, so a round (where an agent finishes one task each) is a task
        // boundary; real queues hold at most the dispatch window (20 ms) of work.
        let mut w = World::new(SchedulerConfig {
            dispatch: DispatchPolicy::ONE_AT_A_TIME,
            ..SchedulerConfig::default()
        });
        w.node("n1", res(slots, 16, 0));
        w.app("svc", Shim::Host, 100, 60);
        let names: Vec<String> = (0..sessions).map(|i| format!("s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let min = u32::from(i == 0 && slots >= 2);
            w.session(name, "svc", Opts { min, ..Opts::default() });
            w.tasks(name, tasks);
        }
        // A turn is the hold (one round here), the task boundary, the unbind and the bind;
        // s0's minimum keeps one slot out of the turns when there are two or more.
        let turning = slots as usize - usize::from(slots >= 2);
        let bound = 4 * sessions.div_ceil(turning) + 4;
        let mut starved = vec![0usize; sessions];
        let budget = 20 * sessions * tasks;
        let mut rounds = 0;
        while names.iter().any(|s| w.count(s, flame_proto::model::TaskState::Succeed) < tasks)
            && rounds < budget
        {
            let before: Vec<u32> = names.iter().map(|s| held(&w, s)).collect();
            let commands = round(&mut w);
            for id in yields(&commands) {
                let owner = w.m.state().executor(&id).and_then(|e| e.session_id.clone());
                let i = names.iter().position(|s| owner.as_deref() == Some(s.as_str())).expect("owner");
                proptest::prop_assert!(i != 0 || slots < 2 || before[0] > 1,
                    "s0 yielded its min_instances executor");
            }
            for (i, s) in names.iter().enumerate() {
                let waiting = w.count(s, flame_proto::model::TaskState::Pending) > 0;
                starved[i] = if waiting && held(&w, s) == 0 { starved[i] + 1 } else { 0 };
                proptest::prop_assert!(starved[i] <= bound,
                    "{} waited {} rounds for an executor (bound {})", s, starved[i], bound);
            }
            rounds += 1;
        }
        for s in &names {
            proptest::prop_assert_eq!(
                w.count(s, flame_proto::model::TaskState::Succeed), tasks, "{} unfinished", s
            );
        }
    }
}
