//! Property tests of the state machine: random command sequences, including invalid and
//! out-of-order ones, checked after every step.
//!
//! Properties: nothing panics; session counters equal the task states; task ids are exactly
//! `1..=n`; no task runs on two executors and every Running task has one; a refused command
//! changes nothing; apply is deterministic (two machines fed the same commands agree on every
//! response and state).

mod state_support;

use flame_control_plane::state::{Command, Dirty, Outcome, StateConfig, StateMachine};
use proptest::prelude::*;
use state_support::strategy::{check_invariants, commands};

fn config() -> StateConfig {
    StateConfig {
        bind_retry_limit: 2,
        task_retry_limit: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_apply_is_deterministic(
        commands in commands(30)
    ) {
        let mut a = StateMachine::new(config());
        let mut b = StateMachine::new(config());
        a.apply(Command::EnsureBuiltins { now_ms: 0 });
        b.apply(Command::EnsureBuiltins { now_ms: 0 });
        for command in commands {
            let before = a.state().clone();
            let ra = a.apply(command.clone());
            let rb = b.apply(command.clone());
            prop_assert_eq!(&ra, &rb);
            prop_assert_eq!(a.state(), b.state());
            check_invariants(a.state());
            if ra.outcome.error().is_some() && matches!(command, Command::Once { .. }) {
                // A refused client write changes nothing but the record of its answer.
                let others = Dirty { requests: Default::default(), ..a.dirty().clone() };
                prop_assert!(others.is_empty(), "refused {:?} changed {:?}", command, others);
                prop_assert!(ra.effects.is_empty());
            } else if ra.outcome.error().is_some() {
                prop_assert_eq!(a.state(), &before, "refused {:?} changed the state", command);
                prop_assert!(ra.effects.is_empty());
                prop_assert!(a.dirty().is_empty());
            }
            if let Outcome::TaskUpdates(items) = &ra.outcome
                && items.iter().all(Result::is_err)
            {
                prop_assert_eq!(a.state(), &before, "refused {:?} changed the state", command);
            }
        }
    }
}

/// The random sequences reach the interesting states (running, finished, failed, cancelled
/// and requeued tasks, bound and unbinding executors, failed binds, object drops, a cluster
/// CA), so the properties above are not vacuous.
#[test]
fn random_sequences_reach_deep_states() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = commands(30);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let commands = strategy.new_tree(&mut runner).expect("tree").current();
        let mut m = StateMachine::new(config());
        m.apply(Command::EnsureBuiltins { now_ms: 0 });
        for command in commands {
            m.apply(command);
            let state = m.state();
            for s in state.session_entries() {
                seen.extend(s.tasks().map(|t| format!("task {:?}", t.task.state)));
                if s.tasks().any(|t| t.requeues > 0) {
                    seen.insert("requeued".to_owned());
                }
                if s.bind_failures > 0 {
                    seen.insert("bind failed".to_owned());
                }
            }
            seen.extend(state.executors().map(|e| format!("executor {:?}", e.state)));
            if state.object_drop_range().1 > 0 {
                seen.insert("object drop".to_owned());
            }
            if state.cluster_ca().is_some() {
                seen.insert("cluster CA".to_owned());
            }
        }
    }
    for wanted in [
        "task Running",
        "task Succeed",
        "task Failed",
        "task Cancelled",
        "requeued",
        "bind failed",
        "executor Bound",
        "executor Unbinding",
        "executor Releasing",
        "object drop",
        "cluster CA",
    ] {
        assert!(seen.contains(wanted), "never reached {wanted}: {seen:?}");
    }
}
