//! Property tests of the state machine: random command sequences, including invalid and
//! out-of-order ones, checked after every step.
//!
//! Properties: nothing panics; session counters equal the task states; task ids are exactly
//! `1..=n`; no task runs on two executors and every Running task has one; a refused command
//! changes nothing; apply is deterministic (two machines fed the same commands agree on every
//! response and state).

use crate::state_support;

use flame_control_plane::state::{Command, Dirty, Outcome, Proposal, StateMachine};
use proptest::prelude::*;
use state_support::small_limits;
use state_support::strategy::{check_invariants, commands};

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_apply_is_deterministic(
        commands in commands(30)
    ) {
        let mut a = StateMachine::new(small_limits());
        let mut b = StateMachine::new(small_limits());
        a.apply(0, Command::EnsureBuiltins );
        b.apply(0, Command::EnsureBuiltins );
        for (now, command) in commands {
            let before = a.state().clone();
            let ra = a.apply(now, command.clone());
            let rb = b.apply(now, command.clone());
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
        let mut m = StateMachine::new(small_limits());
        m.apply(0, Command::EnsureBuiltins);
        for (now, command) in commands {
            m.apply(now, command);
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

/// Every time the state records, with where it was found: creation and completion times,
/// events, heartbeats, executor creation, object drops and request records.
fn timestamps(state: &flame_control_plane::state::State) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for a in state.applications() {
        out.push((format!("application {}", a.name), a.creation_time_ms));
    }
    for entry in state.session_entries() {
        let s = &entry.session;
        out.push((format!("session {} created", s.id), s.creation_time_ms));
        out.extend(
            s.completion_time_ms
                .map(|t| (format!("session {} closed", s.id), t)),
        );
        out.extend(
            s.events
                .iter()
                .map(|e| (format!("session {} event", s.id), e.creation_time_ms)),
        );
        for t in entry.tasks().map(|t| &t.task) {
            let name = format!("task {}/{}", s.id, t.id);
            out.push((format!("{name} created"), t.creation_time_ms));
            out.extend(
                t.completion_time_ms
                    .map(|c| (format!("{name} completed"), c)),
            );
            out.extend(
                t.events
                    .iter()
                    .map(|e| (format!("{name} event"), e.creation_time_ms)),
            );
        }
    }
    for e in state.executor_entries() {
        out.push((format!("executor {}", e.executor.id), e.creation_time_ms));
    }
    for n in state.nodes() {
        out.push((format!("node {} heartbeat", n.name), n.last_heartbeat_ms));
    }
    let (first, last) = state.object_drop_range();
    for seq in first..=last {
        out.extend(
            state
                .object_drop(seq)
                .map(|d| (format!("drop {seq}"), d.at_ms)),
        );
    }
    for (id, record) in state.requests().iter() {
        out.push((format!("request {id}"), record.time_ms));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// The leader's time travels on the `Proposal`: applied to two machines, one proposal at
    /// time T (all the commands a random sequence holds, in one entry) records T and nothing
    /// else in every timestamp it creates, on both.
    #[test]
    fn one_proposal_at_time_t_stamps_every_timestamp_with_t_on_two_machines(
        commands in commands(30),
        t in 1_000i64..1_000_000_000,
    ) {
        let proposal = Proposal {
            now_ms: t,
            policy: small_limits(),
            commands: std::iter::once(Command::EnsureBuiltins)
                .chain(commands.into_iter().map(|(_, command)| command))
                .collect(),
        };
        let mut a = StateMachine::new(small_limits());
        let mut b = StateMachine::new(small_limits());
        for command in &proposal.commands {
            let ra = a.apply(proposal.now_ms, command.clone());
            prop_assert_eq!(ra, b.apply(proposal.now_ms, command.clone()));
        }
        prop_assert_eq!(a.state(), b.state());
        let stamped = timestamps(a.state());
        prop_assert!(!stamped.is_empty());
        for (what, at) in stamped {
            prop_assert_eq!(at, t, "{} was stamped {} instead of the proposal's time", what, at);
        }
    }
}
