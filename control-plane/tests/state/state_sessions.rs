//! Scenario tests of the state machine: applications and sessions, walking the items of the
//! specification's checklist (section 14) that the state machine decides.

use crate::state_support;

use bytes::Bytes;
use flame_control_plane::state::{Command, Effect, Outcome, StateConfig, StateMachine};
use flame_proto::error::FlameError;
use flame_proto::model::{
    ApplicationSchema, ApplicationSpec, ApplicationState, Environment, ResourceRequirement,
    SessionState, Shim, TaskState,
};
use state_support::*;

fn register(m: &mut StateMachine, name: &str, spec: ApplicationSpec) -> Outcome {
    let command = Command::RegisterApplication {
        name: name.into(),
        spec,
    };
    m.apply(3, command).outcome
}

/// Checklist 1: a fresh cluster has exactly the three built-ins, stored unexpanded; they are
/// registered once, and an existing one is left alone.
#[test]
fn fresh_cluster_has_exactly_the_three_builtins() {
    let mut m = StateMachine::new(StateConfig::default());
    let r = m.apply(1, Command::EnsureBuiltins);
    assert_eq!(
        r.outcome,
        Outcome::Registered(vec!["flmexec".into(), "flmping".into(), "flmrun".into()])
    );
    let apps: Vec<_> = m.state().applications().collect();
    assert_eq!(apps.len(), 3);
    for app in &apps {
        assert_eq!(
            (app.state, app.spec.shim),
            (ApplicationState::Enabled, Shim::Host)
        );
        assert_eq!(app.spec.max_instances, 1_000_000);
        assert_eq!(app.spec.delay_release_secs, 60);
    }
    let flmrun = m.state().application("flmrun").expect("flmrun");
    assert_eq!(flmrun.spec.command.as_deref(), Some("${FLAME_HOME}/bin/uv"));
    let args = [
        "run",
        "--python",
        "python${FLAME_PYTHON_VERSION}",
        "python",
        "-m",
    ];
    assert_eq!(flmrun.spec.arguments[..5], args.map(String::from));
    assert_eq!(flmrun.spec.installer.as_deref(), Some("python"));
    let flmping = m.state().application("flmping").expect("flmping");
    assert_eq!(
        flmping.spec.url.as_deref(),
        Some("file://${FLAME_HOME}/bin/flmping-service")
    );
    assert!(
        m.state()
            .application("flmexec")
            .expect("flmexec")
            .spec
            .schema
            .is_some()
    );

    m.apply(
        0,
        Command::UpdateApplication {
            name: "flmping".into(),
            spec: ApplicationSpec::default(),
        },
    );
    let again = m.apply(2, Command::EnsureBuiltins);
    assert_eq!(again.outcome, Outcome::Registered(vec![]));
    assert!(again.effects.is_empty());
    assert_eq!(
        m.state().application("flmping").expect("kept").spec.url,
        None
    );
}

/// Checklist 2 and 3: every field round-trips; absent optionals stay absent; defaults stored.
#[test]
fn register_round_trips_every_field() {
    let mut m = machine();
    let spec = ApplicationSpec {
        shim: Shim::Wasm,
        description: Some("d".into()),
        labels: vec!["a".into(), "b".into()],
        image: Some("img".into()),
        command: Some("/bin/app".into()),
        arguments: vec!["-x".into()],
        environments: vec![Environment {
            name: "K".into(),
            value: "${V}".into(),
        }],
        working_directory: Some("/tmp".into()),
        schema: Some(ApplicationSchema {
            input: Some(r#"{"type":"string"}"#.into()),
            output: None,
            common_data: None,
        }),
        installer: Some("python".into()),
        ..ApplicationSpec::default()
    };
    let stored = match register(&mut m, "my-app", spec.clone()) {
        Outcome::Application(Ok(app)) => app,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored.spec, spec);
    assert_eq!(stored.creation_time_ms, 3);
    let got = m.state().application("my-app").expect("registered");
    assert_eq!(got.spec, spec);
    assert_eq!(got.spec.url, None);
    assert_eq!(
        (got.spec.max_instances, got.spec.delay_release_secs),
        (1_000_000, 60)
    );
}

/// Checklist 5: duplicate and bad names and open sessions are business failures.
#[test]
fn duplicate_bad_name_and_open_sessions_are_refused() {
    let mut m = machine();
    let dup = register(&mut m, "flmrun", ApplicationSpec::default());
    assert!(
        matches!(dup.error(), Some(FlameError::AlreadyExists(_))),
        "{dup:?}"
    );
    let bad = register(&mut m, "../x", ApplicationSpec::default());
    assert!(
        matches!(bad.error(), Some(FlameError::InvalidArgument(_))),
        "{bad:?}"
    );
    let relative = ApplicationSpec {
        working_directory: Some("rel".into()),
        ..ApplicationSpec::default()
    };
    let bad_spec = register(&mut m, "ok-name", relative);
    assert!(matches!(
        bad_spec.error(),
        Some(FlameError::InvalidArgument(_))
    ));

    create_session(&mut m, "s1", "flmrun");
    let r = m.apply(
        50,
        Command::UnregisterApplication {
            name: "flmrun".into(),
        },
    );
    let err = error(r);
    assert!(
        matches!(&err, FlameError::InvalidState(m) if m.contains("open sessions")),
        "{err}"
    );
    let r = m.apply(
        0,
        Command::UpdateApplication {
            name: "flmrun".into(),
            spec: ApplicationSpec::default(),
        },
    );
    assert!(error(r).to_string().contains("open sessions"));
    let r = m.apply(
        50,
        Command::UnregisterApplication {
            name: "nope".into(),
        },
    );
    assert!(matches!(error(r), FlameError::NotFound(m) if m.contains("not found")));
}

/// Recommended improvement: UpdateApplication rewrites every field, shim and image included.
#[test]
fn update_replaces_every_field_and_keeps_creation_time() {
    let mut m = machine();
    register(&mut m, "app", ApplicationSpec::default());
    let new = ApplicationSpec {
        shim: Shim::Wasm,
        image: Some("i2".into()),
        url: Some("file:///x".into()),
        ..ApplicationSpec::default()
    };
    let r = m.apply(
        0,
        Command::UpdateApplication {
            name: "app".into(),
            spec: new.clone(),
        },
    );
    assert!(
        r.effects
            .contains(&Effect::ApplicationChanged { name: "app".into() })
    );
    let app = m.state().application("app").expect("app");
    assert_eq!((&app.spec, app.creation_time_ms), (&new, 3));
}

/// Checklist 7: unregistering right after the last close removes the application and all its
/// sessions, tasks and events.
#[test]
fn unregister_after_close_removes_sessions_and_tasks() {
    let mut m = machine();
    register(&mut m, "app", ApplicationSpec::default());
    create_session(&mut m, "s1", "app");
    create_session(&mut m, "s2", "app");
    create_session(&mut m, "other", "flmrun");
    create_tasks(&mut m, "s1", 3);
    for id in ["s1", "s2"] {
        session(m.apply(50, Command::CloseSession { id: id.into() }));
    }
    let r = m.apply(50, Command::UnregisterApplication { name: "app".into() });
    assert_eq!(r.outcome, Outcome::Done(Ok(())));
    for id in ["s1", "s2"] {
        let removed = Effect::SessionRemoved {
            session_id: id.into(),
        };
        assert!(r.effects.contains(&removed), "{:?}", r.effects);
    }
    assert!(
        r.effects
            .contains(&Effect::ApplicationRemoved { name: "app".into() })
    );
    assert!(m.state().application("app").is_none());
    let left: Vec<_> = m.state().sessions().map(|s| s.id.clone()).collect();
    assert_eq!(left, ["other"]);
    assert!(m.state().tasks("s1").is_err());
}

/// Checklist 8, 9 and 10: a new session is Open with zero counters; resreq, min/max instances
/// and common data round-trip; unknown application and duplicate id fail.
#[test]
fn create_session_stores_the_spec_verbatim() {
    let mut m = machine();
    let mut given = spec("flmrun");
    given.resreq = ResourceRequirement {
        cpu: 1,
        memory: 512,
        gpu: 0,
    };
    given.min_instances = 2;
    given.common_data = Some(Bytes::from_static(b"\x00ctx\xff"));
    let r = m.apply(
        10,
        Command::CreateSession {
            id: "s1".into(),
            spec: given.clone(),
        },
    );
    assert_eq!(
        r.effects,
        [Effect::SessionChanged {
            session_id: "s1".into()
        }]
    );
    let s = session(r);
    assert_eq!(
        (s.state, s.creation_time_ms, s.completion_time_ms),
        (SessionState::Open, 10, None)
    );
    assert_eq!(s.counters.total(), 0);
    assert_eq!(s.spec, given);
    assert_eq!(s.spec.max_instances, None);

    let dup = m.apply(
        11,
        Command::CreateSession {
            id: "s1".into(),
            spec: spec("flmrun"),
        },
    );
    assert!(matches!(error(dup), FlameError::AlreadyExists(_)));
    let unknown = m.apply(
        11,
        Command::CreateSession {
            id: "s2".into(),
            spec: spec("ghost"),
        },
    );
    assert!(matches!(error(unknown), FlameError::NotFound(m) if m.contains("not found")));
    let empty = m.apply(
        11,
        Command::CreateSession {
            id: String::new(),
            spec: spec("flmrun"),
        },
    );
    assert!(matches!(error(empty), FlameError::InvalidArgument(_)));
}

/// Checklist 11: OpenSession without a spec or with a matching one returns the session
/// unchanged (common data not replaced) and changes nothing.
#[test]
fn open_session_is_an_idempotent_get() {
    let mut m = machine();
    let mut original = spec("flmrun");
    original.common_data = Some(Bytes::from_static(b"first"));
    session(m.apply(
        10,
        Command::CreateSession {
            id: "s1".into(),
            spec: original.clone(),
        },
    ));
    let before = m.state().clone();
    let mut matching = original.clone();
    matching.common_data = Some(Bytes::from_static(b"second"));
    for given in [None, Some(original), Some(matching)] {
        let r = m.apply(
            99,
            Command::OpenSession {
                id: "s1".into(),
                spec: given,
            },
        );
        assert!(r.effects.is_empty());
        let s = session(r);
        assert_eq!(s.spec.common_data.as_deref(), Some(&b"first"[..]));
        assert_eq!(s.creation_time_ms, 10);
    }
    assert_eq!(m.state(), &before);
}

/// Checklist 12, 13 and 14: mismatch, missing and closed sessions.
#[test]
fn open_session_errors_follow_the_spec_table() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    let mut differing = spec("flmrun");
    differing.max_instances = Some(2);
    let r = m.apply(
        11,
        Command::OpenSession {
            id: "s1".into(),
            spec: Some(differing.clone()),
        },
    );
    let err = error(r);
    assert!(matches!(&err, FlameError::InvalidState(_)));
    assert!(err.to_string().contains("spec mismatch"), "{err}");
    assert!(err.to_string().contains("max_instances"), "{err}");

    let r = m.apply(
        11,
        Command::OpenSession {
            id: "s2".into(),
            spec: None,
        },
    );
    assert!(matches!(error(r), FlameError::NotFound(m) if m.contains("not found")));
    let r = m.apply(
        12,
        Command::OpenSession {
            id: "s2".into(),
            spec: Some(spec("flmrun")),
        },
    );
    assert_eq!(session(r).creation_time_ms, 12);

    session(m.apply(13, Command::CloseSession { id: "s1".into() }));
    for given in [None, Some(spec("flmrun")), Some(differing)] {
        let r = m.apply(
            14,
            Command::OpenSession {
                id: "s1".into(),
                spec: given,
            },
        );
        let err = error(r);
        assert!(
            matches!(&err, FlameError::InvalidState(m) if m.contains("not open")),
            "{err}"
        );
    }
}

/// Checklist 15: closing with a Running task fails with Internal and the session stays Open.
#[test]
fn close_with_running_tasks_fails() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    create_tasks(&mut m, "s1", 2);
    bound_executor(&mut m, "e1", "n1", "s1");
    assign(&mut m, "e1", "s1", 1).expect("assigned");
    let r = m.apply(50, Command::CloseSession { id: "s1".into() });
    assert!(r.effects.is_empty());
    let err = error(r);
    assert!(matches!(&err, FlameError::Internal(m)
        if m.contains("Cannot close session with running tasks")));
    assert_eq!(
        m.state().session("s1").expect("s1").state,
        SessionState::Open
    );
}

/// Checklist 16, 17 and 18: close cancels Pending tasks, sets the completion time once, and the
/// session stays listed as Closed; its executors start unbinding.
#[test]
fn close_cancels_pending_tasks_and_keeps_the_first_completion_time() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    create_tasks(&mut m, "s1", 2);
    bound_executor(&mut m, "e1", "n1", "s1");
    assert_eq!(
        m.state().session("s1").expect("s1").state,
        SessionState::Open
    );
    let r = m.apply(50, Command::CloseSession { id: "s1".into() });
    for effect in [
        Effect::SessionClosed {
            session_id: "s1".into(),
        },
        Effect::TaskChanged {
            session_id: "s1".into(),
            task_id: 2,
        },
        Effect::ExecutorChanged {
            executor_id: "e1".into(),
            node: "n1".into(),
        },
    ] {
        assert!(
            r.effects.contains(&effect),
            "{effect:?} not in {:?}",
            r.effects
        );
    }
    let s = session(r);
    assert_eq!(
        (s.state, s.completion_time_ms),
        (SessionState::Closed, Some(50))
    );
    assert_eq!((s.counters.cancelled, s.counters.pending), (2, 0));
    let task = m.state().task("s1", 1).expect("task 1");
    assert_eq!(
        (task.state, task.completion_time_ms),
        (TaskState::Cancelled, Some(50))
    );
    assert_eq!(task.events.last().map(|e| e.code), Some(4));
    let executor = m.state().executor("e1").expect("e1");
    assert_eq!(executor.state, flame_proto::model::ExecutorState::Unbinding);

    let again = m.apply(60, Command::CloseSession { id: "s1".into() });
    assert!(again.effects.is_empty());
    assert_eq!(session(again).completion_time_ms, Some(50));
    let listed: Vec<_> = m
        .state()
        .sessions()
        .map(|s| (s.id.clone(), s.state))
        .collect();
    assert_eq!(listed, [("s1".into(), SessionState::Closed)]);
    let unknown = m.apply(1, Command::CloseSession { id: "zz".into() });
    assert!(matches!(error(unknown), FlameError::NotFound(_)));
}

/// DeleteSession: only a Closed session whose tasks are all terminal.
#[test]
fn delete_session_only_when_closed_and_finished() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    create_tasks(&mut m, "s1", 1);
    let open = m.apply(0, Command::DeleteSession { id: "s1".into() });
    assert!(matches!(error(open), FlameError::InvalidState(_)));
    session(m.apply(5, Command::CloseSession { id: "s1".into() }));
    let r = m.apply(0, Command::DeleteSession { id: "s1".into() });
    assert!(r.effects.contains(&Effect::SessionRemoved {
        session_id: "s1".into()
    }));
    assert_eq!(session(r).state, SessionState::Closed);
    assert!(m.state().session("s1").is_none());
    let gone = m.apply(0, Command::DeleteSession { id: "s1".into() });
    assert!(matches!(error(gone), FlameError::NotFound(_)));
    // The id is free again, and task ids restart at 1 in the new session.
    create_session(&mut m, "s1", "flmrun");
    assert_eq!(create_tasks(&mut m, "s1", 1)[0].id, 1);
}

/// Review R3: open sessions are capped by the entry's policy (every member holds them all in
/// memory); the refusal names the key, changes nothing, and a close makes room again.
#[test]
fn a_session_past_the_open_session_cap_is_refused_until_one_closes() {
    let mut m = StateMachine::new(StateConfig {
        max_open_sessions: 2,
        ..StateConfig::default()
    });
    m.apply(1, Command::EnsureBuiltins);
    create_session(&mut m, "a", "flmrun");
    create_session(&mut m, "b", "flmrun");
    let create = |id: &str| Command::CreateSession {
        id: id.into(),
        spec: spec("flmrun"),
    };
    let refused = m.apply(11, create("c"));
    assert!(
        matches!(&refused.outcome, Outcome::Session(Err(FlameError::Exhausted(m))) if m.contains("max_open_sessions")),
        "{:?}",
        refused.outcome
    );
    assert!(m.state().session("c").is_none());
    m.apply(12, Command::CloseSession { id: "a".into() });
    assert!(matches!(
        m.apply(13, create("c")).outcome,
        Outcome::Session(Ok(_))
    ));
}
