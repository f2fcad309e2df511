//! Scenario tests of which sessions get executors: priority first, then DRF dominant share,
//! then creation time; fair round-robin within a cycle; `min_instances` pre-starts executors;
//! `max_instances` (session and application) caps them; paused and closed sessions get none.

use crate::scheduler_support;

use flame_control_plane::scheduler::{Policy, SchedulerConfig};
use flame_control_plane::state::Command;
use flame_proto::model::{ExecutorState, Shim, TaskState};
use scheduler_support::{Opts, World, binds, binds_per_session, creates, releases, res};
use std::collections::BTreeMap;

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

fn prio(priority: u32) -> Opts {
    Opts {
        priority,
        ..Opts::default()
    }
}

#[test]
fn higher_priority_sessions_are_served_first() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.session("low", "flmping", prio(0));
    w.tasks("low", 2);
    w.now += 1;
    w.session("high", "flmping", prio(5));
    w.tasks("high", 2);
    let commands = w.step();
    assert_eq!(binds_per_session(&commands), counts(&[("high", 2)]));
}

#[test]
fn equal_priorities_go_to_the_lowest_dominant_share_first() {
    let mut w = World::default_config();
    w.node("n1", res(4, 64, 0));
    w.session("a", "flmping", Opts::default());
    w.tasks("a", 6);
    w.bound("a1", "n1", "a");
    w.bound("a2", "n1", "a");
    w.now += 1;
    w.session("b", "flmping", Opts::default());
    w.tasks("b", 4);
    let commands = w.step();
    // a holds half the cluster; b catches up before a gets more, and then the node is full.
    assert_eq!(binds_per_session(&commands), counts(&[("b", 2)]));
}

/// Binds a new executor of size `size` on `node` to `session` (left Binding).
fn holding(w: &mut World, id: &str, session: &str, size: flame_proto::model::ResourceRequirement) {
    w.ok(Command::CreateExecutor {
        id: id.into(),
        node: "n1".into(),
        resreq: size,
        shim: Shim::Host,
    });
    w.ok(Command::BindExecutor {
        id: id.into(),
        session_id: session.into(),
    });
}

#[test]
fn drf_compares_the_dominant_resource() {
    let mut w = World::default_config();
    w.node("n1", res(10, 10, 0));
    w.session("mem-heavy", "flmping", Opts::default());
    w.tasks("mem-heavy", 5);
    // cpu share 0.1, memory share 0.5: dominant 0.5.
    holding(&mut w, "m1", "mem-heavy", res(1, 5, 0));
    w.now += 1;
    w.session("cpu-heavy", "flmping", Opts::default());
    w.tasks("cpu-heavy", 2);
    // cpu share 0.3, memory share 0.1: dominant 0.3.
    holding(&mut w, "c1", "cpu-heavy", res(3, 1, 0));
    w.now += 1;
    w.session("newest", "flmping", Opts::default());
    w.tasks("newest", 1);
    let commands = w.step();
    let order: Vec<String> = binds(&commands).into_iter().map(|(_, s)| s).collect();
    // By cpu alone mem-heavy (0.1) would precede cpu-heavy (0.3); by dominant share it follows.
    // Memory then runs out after two more executors for mem-heavy.
    assert_eq!(order, ["newest", "cpu-heavy", "mem-heavy", "mem-heavy"]);
}

#[test]
fn creation_time_breaks_ties_between_equal_sessions() {
    let mut w = World::default_config();
    w.node("n1", res(1, 16, 0));
    w.session("young", "flmping", Opts::default());
    w.now -= 500;
    w.session("old", "flmping", Opts::default());
    w.tasks("young", 1);
    w.tasks("old", 1);
    assert_eq!(binds_per_session(&w.step()), counts(&[("old", 1)]));
}

#[test]
fn one_big_session_cannot_starve_others_within_a_cycle() {
    let mut w = World::default_config();
    w.node("n1", res(4, 64, 0));
    for s in ["big", "s2", "s3"] {
        w.session(s, "flmping", Opts::default());
        w.now += 1;
    }
    w.tasks("big", 100);
    w.tasks("s2", 100);
    w.tasks("s3", 100);
    let got = binds_per_session(&w.step());
    assert_eq!(got, counts(&[("big", 2), ("s2", 1), ("s3", 1)]));
}

#[test]
fn without_drf_sessions_still_take_turns() {
    let mut w = World::new(SchedulerConfig {
        policies: vec![Policy::Priority],
        ..SchedulerConfig::default()
    });
    w.node("n1", res(3, 64, 0));
    w.session("a", "flmping", Opts::default());
    w.now += 1;
    w.session("b", "flmping", Opts::default());
    w.tasks("a", 5);
    w.tasks("b", 5);
    assert_eq!(binds_per_session(&w.step()), counts(&[("a", 2), ("b", 1)]));
}

#[test]
fn min_instances_pre_starts_executors_without_tasks() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    let opts = Opts {
        min: 2,
        ..Opts::default()
    };
    w.session("warm", "flmping", opts);
    let commands = w.step();
    assert_eq!(creates(&commands).len(), 2);
    assert_eq!(w.executors_of("warm", ExecutorState::Binding), 2);
    w.agents(&|_| false);
    assert!(w.step().is_empty(), "two instances are enough");
}

#[test]
fn session_max_instances_caps_executors() {
    let mut w = World::default_config();
    w.node("n1", res(16, 64, 0));
    let opts = Opts {
        max: Some(2),
        min: 5,
        ..Opts::default()
    };
    w.session("s", "flmping", opts);
    w.tasks("s", 10);
    assert_eq!(creates(&w.step()).len(), 2);
}

#[test]
fn application_max_instances_caps_executors() {
    let mut w = World::default_config();
    w.node("n1", res(16, 64, 0));
    w.app("capped", Shim::Host, 3, 60);
    w.session("s", "capped", Opts::default());
    w.tasks("s", 10);
    assert_eq!(creates(&w.step()).len(), 3);
    w.agents(&|_| false);
    assert!(creates(&w.step()).is_empty());
}

#[test]
fn a_paused_session_gets_no_executors() {
    let mut w = World::new(SchedulerConfig {
        bind_retry_limit: 2,
        ..SchedulerConfig::default()
    });
    w.node("n1", res(8, 16, 0));
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 3);
    assert_eq!(creates(&w.step()).len(), 3);
    w.agents(&|_| true); // every bind fails: Unbinding, 3 failures
    w.agents(&|_| true); // unbinds complete: Idle
    let entry = w.m.state().session_entry("s").expect("session");
    assert!(!entry.is_schedulable(2), "the session is paused");
    let commands = w.step();
    assert!(binds(&commands).is_empty(), "{commands:?}");
    assert!(creates(&commands).is_empty(), "{commands:?}");
    // Its idle executors are of no use to anyone and go back.
    assert_eq!(releases(&commands).len(), 3, "{commands:?}");
    assert_eq!(w.count("s", TaskState::Pending), 3);
}

#[test]
fn closed_sessions_get_nothing() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    let opts = Opts {
        min: 2,
        ..Opts::default()
    };
    w.session("s", "flmping", opts);
    w.tasks("s", 2);
    w.close("s");
    assert!(w.step().is_empty());
}
