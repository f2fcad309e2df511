//! Scenario tests of where executors come from: exact resreq and shim matching when binding,
//! per-node capacity (cpu, memory, gpu) always enforced, only Ready nodes, the per-node executor
//! limit, several executors per session per cycle, and Wasm sessions never scheduled.

use crate::scheduler_support;

use flame_control_plane::scheduler::{Policy, SchedulerConfig};
use flame_proto::model::{ExecutorState, Shim, TaskState};
use scheduler_support::{Opts, World, binds, creates, releases, res};

fn opts(resreq: flame_proto::model::ResourceRequirement) -> Opts {
    Opts {
        resreq,
        ..Opts::default()
    }
}

#[test]
fn binding_needs_exactly_equal_resreq_and_the_applications_shim() {
    let mut w = World::default_config();
    w.node("n1", res(16, 64, 0));
    w.app("wasm-app", Shim::Wasm, 100, 60);
    w.session("s", "flmping", opts(res(1, 1, 0)));
    w.tasks("s", 1);
    w.session("w", "wasm-app", opts(res(1, 1, 0)));
    w.tasks("w", 1);
    w.idle("bigger", "n1", res(2, 1, 0), Shim::Host);
    w.idle("more-mem", "n1", res(1, 2, 0), Shim::Host);
    w.idle("exact", "n1", res(1, 1, 0), Shim::Host);
    let commands = w.plan();
    assert_eq!(binds(&commands), vec![("exact".into(), "s".into())]);
    assert!(creates(&commands).is_empty(), "{commands:?}");
    assert_eq!(releases(&commands), vec!["bigger", "more-mem"]);
    w.apply_all(&commands);
}

#[test]
fn a_four_cpu_node_holds_at_most_four_one_cpu_executors_across_sessions() {
    let mut w = World::default_config();
    w.node("n1", res(4, 64, 0));
    for s in ["a", "b", "c"] {
        w.session(s, "flmping", Opts::default());
        w.tasks(s, 3);
    }
    let first = w.step();
    assert_eq!(creates(&first).len(), 4, "{first:?}");
    w.agents(&|_| false);
    let second = w.step();
    assert!(creates(&second).is_empty(), "node is full: {second:?}");
    assert_eq!(w.executors_on("n1"), 4);
}

#[test]
fn memory_is_enforced_per_node() {
    let mut w = World::default_config();
    w.node("n1", res(64, 3, 0));
    w.session("s", "flmping", opts(res(1, 2, 0)));
    w.tasks("s", 4);
    let commands = w.step();
    assert_eq!(creates(&commands).len(), 1, "{commands:?}");
}

#[test]
fn gpus_are_enforced_per_node() {
    let mut w = World::default_config();
    w.node("gpu1", res(8, 16, 1));
    w.node("cpu-only", res(8, 16, 0));
    w.session("g", "flmping", opts(res(1, 1, 1)));
    w.tasks("g", 3);
    let commands = w.step();
    assert_eq!(creates(&commands), vec![("x1".into(), "gpu1".into())]);
}

#[test]
fn executors_in_every_state_count_against_capacity() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.session("s", "flmping", Opts::default());
    w.idle("leaving", "n1", res(1, 1, 0), Shim::Host);
    w.ok(flame_control_plane::state::Command::ReleaseExecutor {
        id: "leaving".into(),
    });
    w.tasks("s", 5);
    let commands = w.step();
    assert_eq!(creates(&commands).len(), 1, "{commands:?}");
}

#[test]
fn not_ready_and_draining_nodes_get_nothing_and_add_no_capacity() {
    let mut w = World::default_config();
    w.node("ready", res(1, 16, 0));
    w.node("draining", res(64, 64, 0));
    w.node("gone", res(64, 64, 0));
    w.disconnect("draining");
    w.expire("gone");
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 5);
    let commands = w.step();
    assert_eq!(creates(&commands), vec![("x1".into(), "ready".into())]);
}

#[test]
fn a_session_gets_several_executors_in_one_cycle_when_capacity_allows() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 6);
    let commands = w.step();
    assert_eq!(creates(&commands).len(), 6);
    assert_eq!(binds(&commands).len(), 6);
    assert_eq!(w.executors_of("s", ExecutorState::Binding), 6);
}

#[test]
fn the_per_node_executor_limit_is_enforced() {
    let mut w = World::new(SchedulerConfig {
        policies: vec![Policy::Priority],
        max_executors_per_node: 2,
        ..SchedulerConfig::default()
    });
    w.node("n1", res(64, 64, 0));
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 5);
    let commands = w.step();
    assert_eq!(creates(&commands).len(), 2);
}

#[test]
fn executors_spread_over_equally_loaded_nodes() {
    let mut w = World::default_config();
    w.node("n1", res(4, 16, 0));
    w.node("n2", res(4, 16, 0));
    w.session("s", "flmping", Opts::default());
    w.tasks("s", 4);
    w.step();
    assert_eq!((w.executors_on("n1"), w.executors_on("n2")), (2, 2));
}

#[test]
fn a_session_too_big_for_every_node_gets_nothing() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.session("huge", "flmping", opts(res(4, 1, 0)));
    w.tasks("huge", 1);
    assert!(w.step().is_empty());
}

#[test]
fn wasm_sessions_stay_pending_on_host_only_clusters() {
    let mut w = World::default_config();
    w.node("n1", res(8, 16, 0));
    w.app("wasm-app", Shim::Wasm, 100, 0);
    w.session("w", "wasm-app", Opts::default());
    w.tasks("w", 2);
    w.session("h", "flmping", Opts::default());
    w.tasks("h", 2);
    for _ in 0..10 {
        w.step();
        w.agents(&|_| false);
        w.now += 1_000;
    }
    assert_eq!(w.count("h", TaskState::Succeed), 2);
    assert_eq!(w.count("w", TaskState::Pending), 2);
    assert_eq!(
        w.m.state()
            .executors()
            .filter(|e| e.spec.shim == Shim::Wasm)
            .count(),
        0
    );
}

#[test]
fn a_free_executor_goes_back_to_the_application_it_last_served() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("a", Shim::Host, 100, 60);
    w.app("b", Shim::Host, 100, 60);
    w.session("sb", "b", Opts::default());
    w.session("sa", "a", Opts::default());
    w.bound("e1", "n1", "sb");
    w.bound("e2", "n1", "sa");
    w.plan(); // the leader sees which application each executor serves
    w.close("sa");
    w.close("sb");
    w.agents(&|_| false); // both unbinds complete: e1 and e2 are Idle
    assert_eq!(w.executors_of("sa", ExecutorState::Bound), 0);
    w.session("sa2", "a", Opts::default());
    w.tasks("sa2", 1);
    let commands = w.plan();
    assert_eq!(
        binds(&commands),
        vec![("e2".into(), "sa2".into())],
        "e2 last ran application a, so its process may be kept warm; e1 has the lower id"
    );
}
