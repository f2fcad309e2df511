//! Unit tests of the model ↔ `flame.v1` conversions: round trips where both directions exist,
//! and the presence, default and validation rules of spec sections 4.4, 5.1 and 5.3.

use super::*;
use crate::model::*;

fn rr(cpu: u64, memory: u64, gpu: i32) -> ResourceRequirement {
    ResourceRequirement { cpu, memory, gpu }
}

fn full_application() -> Application {
    Application {
        name: "flmrun".into(),
        spec: ApplicationSpec {
            shim: Shim::Wasm,
            description: Some("runner".into()),
            labels: vec!["b".into(), "a".into()],
            image: Some("img:1".into()),
            command: Some("${FLAME_HOME}/bin/uv".into()),
            arguments: vec!["run".into(), "--python".into()],
            environments: vec![
                Environment {
                    name: "Z".into(),
                    value: "1".into(),
                },
                Environment {
                    name: "A".into(),
                    value: "${X}".into(),
                },
            ],
            working_directory: Some("/tmp/w".into()),
            max_instances: 7,
            delay_release_secs: 0,
            schema: Some(ApplicationSchema {
                input: Some(r#"{"type":"string"}"#.into()),
                output: None,
                common_data: Some("true".into()),
            }),
            url: Some("file:///pkg.tar.gz".into()),
            installer: Some("python".into()),
        },
        state: ApplicationState::Disabled,
        creation_time_ms: 1_700_000_000_123,
    }
}

fn session() -> Session {
    Session {
        id: "flmrun-a1B2c3".into(),
        spec: SessionSpec {
            application: "flmrun".into(),
            common_data: Some(Bytes::from_static(b"\x00ctx\xff")),
            min_instances: 2,
            max_instances: Some(0),
            priority: 3,
            resreq: rr(2, 512, 1),
        },
        state: SessionState::Closed,
        creation_time_ms: 1_000,
        completion_time_ms: Some(2_000),
        counters: TaskCounters {
            pending: 1,
            running: 2,
            succeed: 3,
            failed: 4,
            cancelled: 5,
        },
        events: vec![
            Event::session_bind_failed("e1", "n1", 12, "on_session_enter failed: x", 1_500),
            Event::session_retry_limit_reached(5, 5, 1_600),
        ],
    }
}

fn task() -> Task {
    Task {
        id: TaskId(42),
        session_id: "s1".into(),
        input: Some(Bytes::new()),
        output: Some(Bytes::from_static(b"out")),
        state: TaskState::Failed,
        creation_time_ms: 10,
        completion_time_ms: Some(20),
        events: vec![
            Event::task_created(10),
            Event::task_running(15),
            Event::task_failed(Some("boom".into()), 20),
        ],
    }
}

fn node() -> Node {
    Node {
        name: "node-1".into(),
        hostname: "node-1".into(),
        state: NodeState::NotReady,
        capacity: rr(8, 16 << 30, 2),
        allocatable: rr(7, 15 << 30, 1),
        arch: "x86_64".into(),
        os: "linux".into(),
        addresses: vec![NodeAddress {
            kind: "InternalIP".into(),
            address: "10.0.0.1".into(),
        }],
        last_heartbeat_ms: 1_700_000_000_000,
        cache: None,
    }
}

fn executor() -> Executor {
    Executor {
        id: "6f1c2f9e-0000-4000-8000-000000000001".into(),
        spec: ExecutorSpec {
            node: "node-1".into(),
            resreq: rr(1, 1 << 30, 0),
            shim: Shim::Host,
        },
        state: ExecutorState::Bound,
        session_id: Some("s1".into()),
    }
}

#[test]
fn application_round_trips_through_v1() {
    let app = full_application();
    let wire = v1::Application::from(&app);
    assert_eq!(model::Application::try_from(wire), Ok(app));
}

#[test]
fn application_response_has_id_equal_name_and_always_max_instances_and_delay_release() {
    let app = Application {
        name: "bare".into(),
        spec: ApplicationSpec::default(),
        state: ApplicationState::Enabled,
        creation_time_ms: 5,
    };
    let wire = v1::Application::from(&app);
    let md = wire.metadata.clone().unwrap();
    assert_eq!((md.id.as_str(), md.name.as_str()), ("bare", "bare"));
    let spec = wire.spec.unwrap();
    assert_eq!(spec.max_instances, Some(1_000_000));
    assert_eq!(spec.delay_release, Some(60));
    assert_eq!(spec.url, None);
    assert_eq!(spec.schema, None);
    assert_eq!(spec.working_directory, None);
    assert_eq!(spec.description, None);
}

#[test]
fn registration_spec_applies_defaults_and_keeps_absent_optionals_absent() {
    let sent = v1::ApplicationSpec {
        shim: v1::Shim::Host as i32,
        command: Some("/bin/true".into()),
        ..Default::default()
    };
    let spec = model::ApplicationSpec::try_from(sent).unwrap();
    assert_eq!(spec.max_instances, DEFAULT_MAX_INSTANCES);
    assert_eq!(spec.delay_release_secs, DEFAULT_DELAY_RELEASE_SECS);
    assert_eq!(spec.url, None);
    assert_eq!(spec.command.as_deref(), Some("/bin/true"));
}

#[test]
fn registration_spec_is_validated() {
    let relative = v1::ApplicationSpec {
        working_directory: Some("rel".into()),
        ..Default::default()
    };
    assert_eq!(
        model::ApplicationSpec::try_from(relative),
        Err(FlameError::InvalidArgument(
            "working_directory must be an absolute path, got: rel".into()
        ))
    );
    let bad_schema = v1::ApplicationSpec {
        schema: Some(v1::ApplicationSchema {
            output: Some("nope".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = model::ApplicationSpec::try_from(bad_schema).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid output schema: "),
        "{err}"
    );
    let bad_shim = v1::ApplicationSpec {
        shim: 9,
        ..Default::default()
    };
    assert_eq!(
        model::ApplicationSpec::try_from(bad_shim),
        Err(FlameError::InvalidArgument("unknown shim value 9".into()))
    );
}

#[test]
fn application_context_carries_the_instance_fields() {
    let app = full_application();
    let ctx = v1::ApplicationContext::from(&app);
    assert_eq!(ctx.name, "flmrun");
    assert_eq!(ctx.shim, v1::Shim::Wasm as i32);
    assert_eq!(ctx.command.as_deref(), Some("${FLAME_HOME}/bin/uv"));
    assert_eq!(ctx.working_directory.as_deref(), Some("/tmp/w"));
    assert_eq!(ctx.url.as_deref(), Some("file:///pkg.tar.gz"));
    assert_eq!(ctx.installer.as_deref(), Some("python"));
    assert_eq!(ctx.image.as_deref(), Some("img:1"));
}

#[test]
fn session_round_trips_through_v1() {
    let s = session();
    let wire = v1::Session::from(&s);
    assert_eq!(model::Session::try_from(wire), Ok(s));
}

#[test]
fn session_response_has_batch_size_one_resreq_and_counters() {
    let s = session();
    let wire = v1::Session::from(&s);
    let spec = wire.spec.unwrap();
    assert_eq!(spec.batch_size, 1);
    assert_eq!(
        spec.resreq,
        Some(v1::ResourceRequirement::from(&rr(2, 512, 1)))
    );
    assert_eq!(spec.common_data.as_deref(), Some(&b"\x00ctx\xff"[..]));
    let status = wire.status.unwrap();
    let counters = (
        status.pending,
        status.running,
        status.succeed,
        status.failed,
        status.cancelled,
    );
    assert_eq!(counters, (1, 2, 3, 4, 5));
    assert_eq!(status.events.len(), 2);
    assert_eq!(status.events[0].code, 1001);
}

#[test]
fn session_without_common_data_has_it_absent_and_empty_common_data_present() {
    let mut s = session();
    s.spec.common_data = None;
    assert_eq!(v1::Session::from(&s).spec.unwrap().common_data, None);
    s.spec.common_data = Some(Bytes::new());
    assert_eq!(
        v1::Session::from(&s).spec.unwrap().common_data,
        Some(Vec::new())
    );
}

#[test]
fn session_spec_resreq_resolves_explicit_then_cluster_default_then_builtin() {
    let cluster = rr(4, 2 << 30, 0);
    let explicit = v1::SessionSpec {
        application: "a".into(),
        batch_size: 2,
        resreq: Some(v1::ResourceRequirement {
            cpu: 1,
            memory: 512,
            gpu: 0,
        }),
        ..Default::default()
    };
    let got = model::SessionSpec::from_v1(explicit, Some(&cluster)).unwrap();
    assert_eq!(got.resreq, rr(1, 512, 0));
    let implicit = v1::SessionSpec {
        application: "a".into(),
        ..Default::default()
    };
    let got = model::SessionSpec::from_v1(implicit.clone(), Some(&cluster)).unwrap();
    assert_eq!(got.resreq, cluster);
    let got = model::SessionSpec::from_v1(implicit, None).unwrap();
    assert_eq!(got.resreq, rr(1, 1 << 30, 0));
}

#[test]
fn session_spec_keeps_fields_as_sent_and_rejects_negative_gpu() {
    let sent = v1::SessionSpec {
        application: "a".into(),
        common_data: Some(vec![]),
        min_instances: 2,
        max_instances: Some(3),
        batch_size: 9,
        priority: 4,
        resreq: None,
    };
    let got = model::SessionSpec::from_v1(sent, None).unwrap();
    assert_eq!(got.common_data, Some(Bytes::new()));
    assert_eq!(
        (got.min_instances, got.max_instances, got.priority),
        (2, Some(3), 4)
    );
    assert_eq!(v1::SessionSpec::from(&got).batch_size, 1);
    let negative = v1::SessionSpec {
        resreq: Some(v1::ResourceRequirement {
            cpu: 1,
            memory: 1,
            gpu: -1,
        }),
        ..Default::default()
    };
    assert!(matches!(
        model::SessionSpec::from_v1(negative, None),
        Err(FlameError::InvalidArgument(_))
    ));
}

#[test]
fn task_round_trips_through_v1_with_empty_input_present() {
    let t = task();
    let wire = v1::Task::from(&t);
    let spec = wire.spec.clone().unwrap();
    assert_eq!(spec.session_id, "s1");
    assert_eq!(spec.input, Some(Vec::new()));
    assert_eq!(wire.metadata.clone().unwrap().id, "42");
    assert_eq!(model::Task::try_from(wire), Ok(t));
}

#[test]
fn task_without_input_or_output_has_them_absent() {
    let mut t = task();
    t.input = None;
    t.output = None;
    let spec = v1::Task::from(&t).spec.unwrap();
    assert_eq!((spec.input, spec.output), (None, None));
}

#[test]
fn task_context_carries_ids_and_input() {
    let ctx = v1::TaskContext::from(&task());
    assert_eq!(
        (ctx.task_id.as_str(), ctx.session_id.as_str()),
        ("42", "s1")
    );
    assert_eq!(ctx.input, Some(Vec::new()));
}

#[test]
fn session_context_carries_application_and_common_data() {
    let ctx = v1::SessionContext::from((&full_application(), &session()));
    assert_eq!(ctx.session_id, "flmrun-a1B2c3");
    assert_eq!(ctx.application.unwrap().name, "flmrun");
    assert_eq!(ctx.common_data.as_deref(), Some(&b"\x00ctx\xff"[..]));
}

#[test]
fn response_task_with_non_numeric_id_is_refused() {
    let mut wire = v1::Task::from(&task());
    wire.metadata = Some(v1::Metadata {
        id: "x".into(),
        name: "x".into(),
    });
    assert!(matches!(
        model::Task::try_from(wire),
        Err(FlameError::InvalidArgument(_))
    ));
}

#[test]
fn executor_round_trips_through_v1() {
    let e = executor();
    assert_eq!(model::Executor::try_from(v1::Executor::from(&e)), Ok(e));
    let mut idle = executor();
    idle.state = ExecutorState::Idle;
    idle.session_id = None;
    let wire = v1::Executor::from(&idle);
    assert_eq!(wire.status.clone().unwrap().session_id, None);
    assert_eq!(model::Executor::try_from(wire), Ok(idle));
}

#[test]
fn node_round_trips_through_v1_with_heartbeat_in_seconds() {
    let n = node();
    let wire = v1::Node::from(&n);
    assert_eq!(wire.spec.clone().unwrap().hostname, "node-1");
    assert_eq!(
        wire.status.clone().unwrap().last_heartbeat_time,
        1_700_000_000
    );
    assert_eq!(model::Node::try_from(wire), Ok(n));
}

#[test]
fn node_hostname_on_the_wire_is_the_node_name() {
    let mut n = node();
    n.hostname = "host.example".into();
    n.last_heartbeat_ms = 1_999;
    let wire = v1::Node::from(&n);
    assert_eq!(wire.spec.clone().unwrap().hostname, "node-1");
    assert_eq!(wire.status.unwrap().last_heartbeat_time, 1);
}

#[test]
fn every_enum_value_round_trips_and_unknown_values_are_refused() {
    for s in TaskState::ALL {
        let raw = wire::<v1::TaskState, _>(s);
        assert_eq!(TaskState::try_from(raw), Ok(s));
    }
    let executor_states = [
        ExecutorState::Unknown,
        ExecutorState::Void,
        ExecutorState::Idle,
        ExecutorState::Binding,
        ExecutorState::Bound,
        ExecutorState::Unbinding,
        ExecutorState::Releasing,
        ExecutorState::Released,
    ];
    for (n, s) in executor_states.into_iter().enumerate() {
        let raw = wire::<v1::ExecutorState, _>(s);
        assert_eq!(raw, i32::try_from(n).unwrap());
        assert_eq!(ExecutorState::try_from(raw), Ok(s));
    }
    for (raw, s) in [
        (0, NodeState::Unknown),
        (1, NodeState::Ready),
        (2, NodeState::NotReady),
    ] {
        assert_eq!(NodeState::try_from(raw), Ok(s));
    }
    assert_eq!(SessionState::try_from(1), Ok(SessionState::Closed));
    assert_eq!(
        ApplicationState::try_from(1),
        Ok(ApplicationState::Disabled)
    );
    assert_eq!(Shim::try_from(1), Ok(Shim::Wasm));
    assert_eq!(
        TaskState::try_from(5),
        Err(FlameError::InvalidArgument(
            "unknown task state value 5".into()
        ))
    );
    assert!(NodeState::try_from(-1).is_err());
}

#[test]
fn model_survives_postcard_round_trips() {
    fn check<T>(value: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = postcard::to_stdvec(value).unwrap();
        assert_eq!(&postcard::from_bytes::<T>(&bytes).unwrap(), value);
    }
    check(&full_application());
    check(&Application {
        name: "bare".into(),
        spec: ApplicationSpec::default(),
        state: ApplicationState::Enabled,
        creation_time_ms: 0,
    });
    check(&session());
    check(&task());
    check(&executor());
    check(&node());
}

/// A registration of a node with `capacity` and `allocatable` (cpu, GiB of memory).
fn registration(capacity: (u64, u64), allocatable: (u64, u64)) -> v1::Node {
    let res = |(cpu, gib): (u64, u64)| v1::ResourceRequirement {
        cpu,
        memory: gib << 30,
        gpu: 0,
    };
    v1::Node {
        metadata: Some(v1::Metadata {
            id: "n1".into(),
            name: "n1".into(),
        }),
        spec: None,
        status: Some(v1::NodeStatus {
            state: 0,
            capacity: Some(res(capacity)),
            allocatable: Some(res(allocatable)),
            info: None,
            addresses: Vec::new(),
            last_heartbeat_time: 0,
        }),
    }
}

#[test]
fn a_node_may_overcommit_cpu_up_to_the_limit_but_never_memory() {
    let node = Node::from_registration(registration((2, 8), (8, 8))).expect("4x cpu");
    assert_eq!(node.allocatable.cpu, 8);
    let limit = 2 * u64::from(MAX_CPU_OVERCOMMIT);
    assert!(Node::from_registration(registration((2, 8), (limit, 8))).is_ok());
    let err = Node::from_registration(registration((2, 8), (limit + 1, 8))).unwrap_err();
    assert!(
        matches!(&err, FlameError::InvalidArgument(m) if m.contains("64 times")),
        "{err:?}"
    );
    let err = Node::from_registration(registration((2, 8), (2, 9))).unwrap_err();
    assert!(
        matches!(&err, FlameError::InvalidArgument(m) if m.contains("exceeds its capacity")),
        "{err:?}"
    );
}
