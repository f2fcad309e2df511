//! Tests of the linearizability checker: hand-made histories with known verdicts, and
//! property tests over histories of a real atomic register.

use super::*;
use proptest::prelude::*;

/// A read/write register holding a number, 0 at first.
struct Register;

#[derive(Debug, Clone)]
enum RegisterOp {
    Write(u64),
    Read,
}

#[derive(Debug, Clone, PartialEq)]
enum RegisterAnswer {
    Written,
    Value(u64),
}

impl Model for Register {
    type State = u64;
    type Input = RegisterOp;
    type Output = RegisterAnswer;

    fn init(&self) -> u64 {
        0
    }

    fn step(
        &self,
        state: &u64,
        input: &RegisterOp,
        output: Option<&RegisterAnswer>,
    ) -> Option<u64> {
        match (input, output) {
            (RegisterOp::Write(v), None | Some(RegisterAnswer::Written)) => Some(*v),
            (RegisterOp::Read, None) => Some(*state),
            (RegisterOp::Read, Some(RegisterAnswer::Value(v))) => (v == state).then_some(*state),
            _ => None,
        }
    }
}

/// A compare-and-set register: `(expected, new)` answered with whether it swapped.
struct CasRegister;

impl Model for CasRegister {
    type State = u64;
    type Input = (u64, u64);
    type Output = bool;

    fn init(&self) -> u64 {
        0
    }

    fn step(&self, state: &u64, input: &(u64, u64), output: Option<&bool>) -> Option<u64> {
        let swaps = *state == input.0;
        match output {
            Some(&answer) if answer != swaps => None,
            _ => Some(if swaps { input.1 } else { *state }),
        }
    }
}

type Op = Operation<RegisterOp, RegisterAnswer>;

fn write(client: u64, invoke: u64, complete: u64, v: u64) -> Op {
    Operation {
        client,
        invoke,
        complete: Some(complete),
        input: RegisterOp::Write(v),
        output: Some(RegisterAnswer::Written),
    }
}

fn read(client: u64, invoke: u64, complete: u64, v: u64) -> Op {
    Operation {
        client,
        invoke,
        complete: Some(complete),
        input: RegisterOp::Read,
        output: Some(RegisterAnswer::Value(v)),
    }
}

/// A write whose answer never came.
fn timed_out_write(client: u64, invoke: u64, v: u64) -> Op {
    Operation {
        client,
        invoke,
        complete: None,
        input: RegisterOp::Write(v),
        output: None,
    }
}

const BUDGET: u64 = 1_000_000;

fn detail(verdict: &Verdict) -> &str {
    match verdict {
        Verdict::Violation { detail } => detail,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_eq!(check(&Register, &[], BUDGET), Verdict::Linearizable);
}

#[test]
fn a_sequential_history_is_linearizable() {
    let history = [
        read(1, 0, 10, 0),
        write(1, 20, 30, 1),
        read(2, 40, 50, 1),
        write(2, 60, 70, 2),
        read(1, 80, 90, 2),
    ];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn an_overlapping_read_may_see_the_new_value() {
    let history = [write(1, 0, 100, 1), read(2, 50, 150, 1)];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn an_overlapping_read_may_see_the_old_value() {
    let history = [write(1, 0, 100, 1), read(2, 50, 150, 0)];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn operations_at_equal_instants_count_as_overlapping() {
    let history = [read(2, 0, 100, 1), write(1, 100, 200, 1)];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn a_read_that_completes_before_a_write_is_invoked_cannot_see_it() {
    let history = [read(2, 0, 50, 1), write(1, 100, 200, 1)];
    let verdict = check(&Register, &history, BUDGET);
    let text = detail(&verdict);
    assert!(
        text.contains("#0 client 2 [0, 50] Read -> Value(1)"),
        "{text}"
    );
    assert!(
        text.contains("the model rejects this answer here"),
        "{text}"
    );
}

#[test]
fn a_read_after_two_completed_writes_cannot_see_the_first_one() {
    let history = [write(1, 0, 10, 1), write(1, 20, 30, 2), read(2, 40, 50, 1)];
    let verdict = check(&Register, &history, BUDGET);
    let text = detail(&verdict);
    assert!(
        text.contains("longest linearizable prefix: 2 operations"),
        "{text}"
    );
    assert!(text.contains("state after it: 2"), "{text}");
    assert!(
        text.contains("#2 client 2 [40, 50] Read -> Value(1)"),
        "{text}"
    );
}

#[test]
fn a_timed_out_write_may_be_observed_later() {
    let history = [timed_out_write(1, 0, 7), read(2, 1_000, 1_010, 7)];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn a_timed_out_write_may_never_be_observed() {
    let history = [
        timed_out_write(1, 0, 7),
        read(2, 1_000, 1_010, 0),
        read(2, 2_000, 2_010, 0),
    ];
    assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
}

#[test]
fn a_timed_out_write_once_observed_cannot_be_unobserved() {
    let history = [
        timed_out_write(1, 0, 7),
        read(2, 1_000, 1_010, 7),
        read(2, 2_000, 2_010, 0),
    ];
    assert!(matches!(
        check(&Register, &history, BUDGET),
        Verdict::Violation { .. }
    ));
}

#[test]
fn a_read_cannot_observe_a_timed_out_write_before_its_invocation() {
    let history = [read(2, 0, 10, 7), timed_out_write(1, 100, 7)];
    let verdict = check(&Register, &history, BUDGET);
    assert!(detail(&verdict).contains("#0 client 2 [0, 10] Read -> Value(7)"));
}

#[test]
fn timed_out_reads_are_never_placed_so_they_cost_nothing() {
    let mut history: Vec<Op> = (0..30)
        .map(|i| Operation {
            client: 3,
            invoke: i,
            complete: None,
            input: RegisterOp::Read,
            output: None,
        })
        .collect();
    history.extend([write(1, 0, 10, 1), write(1, 20, 30, 2), read(2, 40, 50, 1)]);
    let verdict = check(&Register, &history, 1_000);
    assert!(
        detail(&verdict).contains("longest linearizable prefix: 2 operations"),
        "{verdict:?}"
    );
}

#[test]
fn an_operation_completing_before_its_invocation_is_reported_as_malformed() {
    let history = [read(1, 50, 10, 0)];
    let verdict = check(&Register, &history, BUDGET);
    assert!(detail(&verdict).starts_with("malformed history"));
}

#[test]
fn two_clients_cannot_both_win_one_compare_and_set() {
    let cas = |client, invoke, complete, won| Operation {
        client,
        invoke,
        complete: Some(complete),
        input: (0, client),
        output: Some(won),
    };
    let one_wins = [cas(1, 0, 100, true), cas(2, 10, 90, false)];
    assert_eq!(
        check(&CasRegister, &one_wins, BUDGET),
        Verdict::Linearizable
    );
    let both_win = [cas(1, 0, 100, true), cas(2, 10, 90, true)];
    assert!(matches!(
        check(&CasRegister, &both_win, BUDGET),
        Verdict::Violation { .. }
    ));
}

#[test]
fn a_budget_of_one_step_yields_unknown() {
    let history = [
        write(1, 0, 100, 1),
        write(2, 0, 100, 2),
        read(3, 0, 100, 2),
        read(4, 0, 100, 1),
    ];
    assert_eq!(
        check(&Register, &history, 1),
        Verdict::Unknown { explored: 1 }
    );
}

/// `len` operations one after another: writes of 1, 2, ..., each read back.
fn long_sequential_history(len: u64) -> Vec<Op> {
    (0..len)
        .map(|i| match i % 2 {
            0 => write(1, i * 10, i * 10 + 5, i / 2 + 1),
            _ => read(2, i * 10, i * 10 + 5, i / 2 + 1),
        })
        .collect()
}

#[test]
fn two_thousand_sequential_operations_check_in_one_step_each_on_a_small_stack() {
    let checked = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| check(&Register, &long_sequential_history(2_000), 2_000))
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert_eq!(checked, Verdict::Linearizable);
}

#[test]
fn a_violation_at_the_end_of_a_long_history_is_found_and_its_prefix_abridged() {
    let mut history = long_sequential_history(2_000);
    history.push(read(3, 30_000, 30_010, 1));
    let verdict = check(&Register, &history, BUDGET);
    let text = detail(&verdict);
    assert!(
        text.contains("longest linearizable prefix: 2000 operations"),
        "{text}"
    );
    assert!(text.contains("... 1970 earlier ones"), "{text}");
}

#[test]
fn partitioned_checking_reports_only_the_bad_key() {
    let history = vec![
        ("good", write(1, 0, 10, 1)),
        ("bad", write(1, 0, 10, 1)),
        ("good", read(2, 20, 30, 1)),
        ("bad", write(1, 20, 30, 2)),
        ("bad", read(2, 40, 50, 1)),
        ("also good", read(3, 0, 5, 0)),
    ];
    let failed = check_partitioned(&Register, history, BUDGET);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "bad");
    assert!(matches!(failed[0].1, Verdict::Violation { .. }));
}

/// One operation of a simulated run: when it was invoked, how long it took, where in its
/// interval it took effect (per mille), whether its answer was lost, whether a lost one took
/// effect at all, and what it did.
type Planned = (u64, u64, u64, bool, bool, Option<u64>);

fn planned() -> impl Strategy<Value = Planned> {
    (
        0..1_000u64,
        0..150u64,
        0..=1_000u64,
        prop::bool::weighted(0.1),
        any::<bool>(),
        prop::option::of(1..5u64),
    )
}

/// Runs the plan against one atomic register, each operation taking effect at its instant
/// (lost ones possibly never), and records what the clients saw.
fn simulate(plan: &[Planned]) -> Vec<Op> {
    let mut effects: Vec<(u64, usize)> = Vec::new();
    for (i, &(invoke, took, at, lost, applied, _)) in plan.iter().enumerate() {
        if !lost || applied {
            effects.push((invoke + took * at / 1_000, i));
        }
    }
    effects.sort_unstable();
    let mut answers = vec![None; plan.len()];
    let mut register = 0;
    for (_, i) in effects {
        answers[i] = Some(match plan[i].5 {
            Some(v) => {
                register = v;
                RegisterAnswer::Written
            }
            None => RegisterAnswer::Value(register),
        });
    }
    let history = plan.iter().zip(answers).enumerate();
    history
        .map(
            |(i, (&(invoke, took, _, lost, _, value), answer))| Operation {
                client: i as u64 % 5,
                invoke,
                complete: (!lost).then_some(invoke + took),
                input: value.map_or(RegisterOp::Read, RegisterOp::Write),
                output: if lost { None } else { answer },
            },
        )
        .collect()
}

proptest! {
    #[test]
    fn histories_of_a_real_atomic_register_are_linearizable(
        plan in prop::collection::vec(planned(), 0..40)
    ) {
        let history = simulate(&plan);
        prop_assert_eq!(check(&Register, &history, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_a_violation(
        plan in prop::collection::vec(planned(), 0..40),
        at in 0..1_000u64,
    ) {
        let mut history = simulate(&plan);
        history.push(read(9, at, at + 10, 99));
        let verdict = check(&Register, &history, BUDGET);
        prop_assert!(matches!(verdict, Verdict::Violation { .. }), "{:?}", verdict);
    }
}
