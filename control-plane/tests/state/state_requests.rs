//! Exactly-once client writes in the state machine: `Command::Once` applies a client write once
//! per request id, answers a repeat as the first apply did (before any state check, so a
//! retried close or registration does not fail with "already"), keeps no bulk bytes in its
//! records, forgets ids after the TTL of leader time, and stays bounded. Also the per-session
//! task request ids (review D6): resolved before the session's state, refused with another input.

use crate::state_support;

use bytes::Bytes;
use flame_control_plane::state::requests::{MAX_EXPIRED_PER_APPLY, REQUEST_TTL_MS};
use flame_control_plane::state::{Command, NewTask, Outcome, Response, StateMachine};
use flame_proto::error::FlameError;
use flame_proto::model::{ApplicationSpec, SessionState, Task};
use proptest::prelude::*;
use state_support::strategy::commands;
use state_support::*;

fn once(request_id: &str, command: Command) -> Command {
    Command::Once {
        request_id: request_id.into(),
        command: Box::new(command),
    }
}

fn create_task(session_id: &str, input: &[u8], request_id: Option<&str>) -> Command {
    Command::CreateTasks {
        session_id: session_id.into(),
        tasks: vec![NewTask {
            input: Some(Bytes::copy_from_slice(input)),
            request_id: request_id.map(String::from),
        }],
        dispatch: None,
    }
}

fn tasks(r: Response) -> Result<Vec<Task>, FlameError> {
    match r.outcome {
        Outcome::Tasks(result) => result,
        other => panic!("expected tasks, got {other:?}"),
    }
}

fn task_count(m: &StateMachine, session_id: &str) -> usize {
    m.state().tasks(session_id).expect("session").count()
}

#[test]
fn a_repeated_create_task_is_applied_once_and_answered_as_the_first() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let first = m.apply(100, once("r1", create_task("s", b"in", None)));
    assert!(!first.effects.is_empty(), "the first apply changes state");
    let repeat = m.apply(200, once("r1", create_task("s", b"in", None)));
    assert_eq!(
        repeat.outcome, first.outcome,
        "the repeat answers as the first"
    );
    assert!(repeat.effects.is_empty(), "the repeat changes nothing");
    assert_eq!(task_count(&m, "s"), 1);
    assert_eq!(
        tasks(repeat).expect("task")[0].input.as_deref(),
        Some(&b"in"[..])
    );
}

#[test]
fn a_repeated_close_session_succeeds_like_the_first_instead_of_already_closed() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let close = || Command::CloseSession { id: "s".into() };
    let first = session(m.apply(100, once("c1", close())));
    assert_eq!(first.state, SessionState::Closed);
    let repeat = session(m.apply(300, once("c1", close())));
    assert_eq!(repeat, first, "same state and the first completion time");
}

#[test]
fn a_repeated_register_application_succeeds_like_the_first_instead_of_already_exists() {
    let mut m = machine();
    let register = Command::RegisterApplication {
        name: "app1".into(),
        spec: ApplicationSpec::default(),
    };
    let first = m.apply(100, once("a1", register.clone()));
    assert!(
        matches!(first.outcome, Outcome::Application(Ok(_))),
        "{first:?}"
    );
    let repeat = m.apply(150, once("a1", register.clone()));
    assert_eq!(repeat.outcome, first.outcome);
    let fresh = m.apply(160, once("a2", register));
    assert!(
        matches!(
            fresh.outcome,
            Outcome::Application(Err(FlameError::AlreadyExists(_)))
        ),
        "another request id is a new write: {fresh:?}"
    );
}

#[test]
fn a_first_failure_stands_for_its_repeats_even_after_the_state_changed() {
    let mut m = machine();
    let create = Command::CreateSession {
        id: "s".into(),
        spec: spec("later"),
    };
    let first = m.apply(100, once("r", create.clone()));
    assert!(matches!(
        first.outcome,
        Outcome::Session(Err(FlameError::NotFound(_)))
    ));
    m.apply(
        110,
        Command::RegisterApplication {
            name: "later".into(),
            spec: ApplicationSpec::default(),
        },
    );
    let repeat = m.apply(120, once("r", create));
    assert_eq!(repeat.outcome, first.outcome);
    assert!(
        m.state().session("s").is_none(),
        "the repeat created nothing"
    );
}

#[test]
fn records_keep_no_bulk_bytes_and_a_repeat_gets_them_back_from_the_state() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let input = vec![7u8; 64 << 10];
    m.apply(100, once("big", create_task("s", &input, None)));
    let record = m.state().requests().get("big").expect("a record");
    match record.outcome() {
        Outcome::Tasks(Ok(t)) => assert_eq!(t[0].input, None, "the record has no input"),
        other => panic!("{other:?}"),
    }
    let repeat = tasks(m.apply(200, once("big", create_task("s", &input, None))));
    assert_eq!(repeat.expect("task")[0].input.as_deref(), Some(&input[..]));
}

#[test]
fn a_request_id_is_forgotten_after_the_ttl_of_leader_time() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    m.apply(1_000, once("r", create_task("s", b"x", None)));
    m.apply(
        1_000 + REQUEST_TTL_MS - 1,
        once("r", create_task("s", b"x", None)),
    );
    assert_eq!(task_count(&m, "s"), 1, "within the TTL it is a repeat");
    // Another write moves leader time past the TTL; the record goes.
    m.apply(
        1_001 + REQUEST_TTL_MS,
        once("other", create_task("s", b"y", None)),
    );
    assert!(m.state().requests().get("r").is_none());
    m.apply(
        1_002 + REQUEST_TTL_MS,
        once("r", create_task("s", b"x", None)),
    );
    assert_eq!(task_count(&m, "s"), 3, "after the TTL the id is new again");
}

#[test]
fn one_apply_expires_a_bounded_number_of_records() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let old = MAX_EXPIRED_PER_APPLY + 10;
    for i in 0..old {
        m.apply(0, once(&format!("r{i}"), create_task("s", b"", None)));
    }
    let later = REQUEST_TTL_MS * 2;
    m.apply(later, once("new-1", create_task("s", b"", None)));
    assert_eq!(m.state().requests().len(), old + 1 - MAX_EXPIRED_PER_APPLY);
    m.apply(later, once("new-2", create_task("s", b"", None)));
    assert_eq!(
        m.state().requests().len(),
        2,
        "the rest expire on the next write"
    );
}

#[test]
fn a_once_that_wraps_an_internal_command_or_has_no_id_is_refused() {
    let mut m = machine();
    let heartbeat = Command::Heartbeat { node: "n".into() };
    let r = m.apply(1, once("h", heartbeat));
    assert!(matches!(
        r.outcome,
        Outcome::Done(Err(FlameError::InvalidArgument(_)))
    ));
    create_session(&mut m, "s", "flmrun");
    let r = m.apply(1, once("", create_task("s", b"", None)));
    assert!(matches!(
        r.outcome,
        Outcome::Done(Err(FlameError::InvalidArgument(_)))
    ));
    assert_eq!(task_count(&m, "s"), 0);
}

/// Review D6: a client's task request id is looked up before the session's state is checked.
#[test]
fn a_retried_create_task_after_close_returns_the_original_task() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    let first = tasks(m.apply(0, create_task("s", b"in", Some("t1")))).expect("created");
    m.apply(50, Command::CloseSession { id: "s".into() });
    let retry = tasks(m.apply(0, create_task("s", b"in", Some("t1")))).expect("the original");
    assert_eq!(retry[0].id, first[0].id);
    let new = m.apply(0, create_task("s", b"in", Some("t2")));
    assert!(matches!(
        new.outcome,
        Outcome::Tasks(Err(FlameError::InvalidState(_)))
    ));
}

#[test]
fn a_task_request_id_reused_with_another_input_is_invalid_and_creates_nothing() {
    let mut m = machine();
    create_session(&mut m, "s", "flmrun");
    tasks(m.apply(0, create_task("s", b"one", Some("t1")))).expect("created");
    let reused = m.apply(0, create_task("s", b"two", Some("t1")));
    match reused.outcome {
        Outcome::Tasks(Err(FlameError::InvalidArgument(m))) => {
            assert!(m.contains("t1") && m.contains("another input"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let batch = Command::CreateTasks {
        session_id: "s".into(),
        tasks: vec![
            NewTask {
                input: Some(Bytes::from_static(b"a")),
                request_id: Some("t9".into()),
            },
            NewTask {
                input: Some(Bytes::from_static(b"b")),
                request_id: Some("t9".into()),
            },
        ],
        dispatch: None,
    };
    let r = m.apply(60, batch);
    assert!(matches!(
        r.outcome,
        Outcome::Tasks(Err(FlameError::InvalidArgument(_)))
    ));
    assert_eq!(
        task_count(&m, "s"),
        1,
        "nothing of either refused batch was created"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// After any history, a remembered request id changes nothing more and answers its record.
    #[test]
    fn a_remembered_request_id_changes_nothing_and_answers_its_record(history in commands(40)) {
        let mut m = machine();
        for (now, command) in history {
            m.apply(now, command);
        }
        let ids: Vec<String> = m.state().requests().iter().map(|(id, _)| id.to_owned()).collect();
        // At the oldest record's time nothing is old enough to expire.
        let oldest = m.state().requests().iter().map(|(_, r)| r.time_ms).min().unwrap_or(0);
        for id in ids {
            let before = m.state().clone();
            let recorded = before.requests().get(&id).expect("remembered").clone();
            let repeat = m.apply(oldest, once(&id, create_task("s0", b"in", None)));
            prop_assert!(repeat.effects.is_empty());
            prop_assert_eq!(m.state(), &before);
            let mut expected = recorded.outcome();
            if let (Outcome::Tasks(Ok(e)), Outcome::Tasks(Ok(got))) = (&mut expected, &repeat.outcome) {
                for (e, got) in e.iter_mut().zip(got) {
                    e.input = got.input.clone();
                }
            }
            if let (Outcome::Session(Ok(e)), Outcome::Session(Ok(got))) = (&mut expected, &repeat.outcome) {
                e.spec.common_data = got.spec.common_data.clone();
            }
            prop_assert_eq!(repeat.outcome, expected);
        }
    }
}
