//! The `flame.v1` compatibility test against flamepy 0.6.0, whose generated modules carry the
//! wire truth (spec section 2: "The protobuf descriptors shipped inside flamepy 0.6.0 are
//! identical to the ones at [upstream's] commit").
//!
//! What it checks:
//! 1. Descriptors: our `flame.v1` files in [`flame_proto::FILE_DESCRIPTOR_SET`] against
//!    flamepy's `types.proto`, `frontend.proto` and `shim.proto`, both ways: files and their
//!    imports, every service and method, message, nested type, field (number, type, type name,
//!    label, proto3 optional, oneof index), oneof, reserved range and name, enum and value. All
//!    differences are reported in one failure.
//! 2. flamepy → Rust → flamepy: flamepy builds fully populated samples; prost decodes each into
//!    our type (a few are also checked value by value and converted into the model), re-encodes
//!    it, and flamepy asserts the result equals the original with no unknown fields.
//! 3. Rust → flamepy: we encode messages built from the domain model; flamepy decodes and dumps
//!    them and we compare each dump in full with hand-written expectations, so a field-number
//!    slip cannot pass even where a prost round trip would hide it.
//!
//! Setup: Python comes from `scripts/flamepy-venv.sh` (set `FLAME_VENV` to reuse a venv), which
//! installs flamepy 0.6.0 from PyPI on first use. Python runs twice per test binary: once to
//! export, once to verify. Caveat: file options (such as `go_package`) and source info are not
//! compared; they do not affect the wire.

mod compat_support;

use compat_support::{descriptor_facts, diff_facts, exchange, from_hex};
use flame_proto::{FILE_DESCRIPTOR_SET, model, v1};
use prost::Message;
use prost_types::FileDescriptorSet;
use serde_json::json;

#[test]
fn python_side_is_flamepy_0_6_0() {
    let ex = exchange();
    assert_eq!(ex.export.flamepy_version, "0.6.0");
}

#[test]
fn flame_v1_descriptors_match_flamepy_0_6_0_exactly() {
    let theirs_bytes = from_hex(&exchange().export.descriptor_set).expect("descriptor hex");
    let theirs = FileDescriptorSet::decode(theirs_bytes.as_slice()).expect("flamepy's set decodes");
    let ours = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("our set decodes");
    let (ours, theirs) = (descriptor_facts(&ours), descriptor_facts(&theirs));
    let methods = |facts: &std::collections::BTreeMap<String, String>| {
        facts
            .keys()
            .filter(|k| k.starts_with("service .flame.v1.Frontend method "))
            .count()
    };
    assert_eq!(
        methods(&theirs),
        18,
        "flamepy's Frontend should have 18 RPCs"
    );
    assert!(ours.len() > 250, "suspiciously few facts: {}", ours.len());
    let diffs = diff_facts(&ours, &theirs);
    assert!(
        diffs.is_empty(),
        "flame.v1 descriptors differ from flamepy 0.6.0 ({} differences):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn flamepy_samples_reencode_to_equal_messages() {
    let ex = exchange();
    assert!(ex.export.samples.len() >= 15, "too few samples");
    assert!(
        ex.verify.failures.is_empty(),
        "flamepy found {} problems:\n{}",
        ex.verify.failures.len(),
        ex.verify.failures.join("\n")
    );
}

#[test]
fn flamepy_samples_decode_to_the_values_flamepy_set() {
    let ex = exchange();
    let session: v1::Session = ex.sample("session");
    let status = session.status.clone().expect("status");
    let counters = (
        status.pending,
        status.running,
        status.succeed,
        status.failed,
        status.cancelled,
    );
    assert_eq!(counters, (1, 2, 3, 4, 5));
    assert_eq!(status.completion_time, Some(1_700_000_005_456));
    assert_eq!(status.events.len(), 2);
    assert_eq!(status.events[1].message, None);
    let spec = session.spec.clone().expect("spec");
    assert_eq!(
        spec.common_data.as_deref(),
        Some(&b"\x00\x01common\xff"[..])
    );
    assert_eq!((spec.min_instances, spec.max_instances), (2, Some(5)));
    let model_session = model::Session::try_from(session).expect("model session");
    assert_eq!(model_session.state, model::SessionState::Closed);
    assert_eq!(model_session.events[0].code, 1001);

    let task: v1::Task = ex.sample("task_empty_input");
    assert_eq!(task.spec.clone().expect("spec").input, Some(Vec::new()));
    let model_task = model::Task::try_from(task).expect("model task");
    assert_eq!(
        (model_task.id, model_task.state),
        (model::TaskId(8), model::TaskState::Cancelled)
    );

    let app: v1::Application = ex.sample("application");
    let model_app = model::Application::try_from(app).expect("model application");
    assert_eq!(model_app.spec.delay_release_secs, 0);
    assert_eq!(model_app.spec.max_instances, 10);
    assert_eq!(model_app.spec.environments[0].name, "FLAME_PYTHON_VERSION");

    let open: v1::OpenSessionRequest = ex.sample("open_session_with_spec");
    assert_eq!(open.session.expect("spec").max_instances, Some(0));
    let open: v1::OpenSessionRequest = ex.sample("open_session_without_spec");
    assert_eq!(open.session, None);

    let ctx: v1::TaskContext = ex.sample("task_context");
    assert_eq!(ctx.input.as_deref(), Some(&b"\xfe\x00"[..]));
    let list: v1::ExecutorList = ex.sample("executor_list");
    let bound = model::Executor::try_from(list.executors[0].clone()).expect("executor");
    assert_eq!(bound.state, model::ExecutorState::Bound);
    assert_eq!(bound.session_id.as_deref(), Some("flmrun-a1B2c3"));
    assert_eq!(
        list.executors[1].status.clone().expect("status").session_id,
        None
    );
}

#[test]
fn rust_encoded_session_and_task_decode_in_flamepy_as_expected() {
    let ex = exchange();
    ex.assert_dump(
        "session",
        json!({
            "metadata": {"id": "s-1", "name": "s-1"},
            "spec": {
                "application": "flmrun", "common_data": "00ff", "min_instances": 2,
                "max_instances": 0, "batch_size": 1, "priority": 3,
                "resreq": {"cpu": 2, "memory": 512, "gpu": 1}
            },
            "status": {
                "state": "Closed", "creation_time": 1000, "completion_time": 2000,
                "pending": 1, "running": 2, "succeed": 3, "failed": 4, "cancelled": 5,
                "events": [{"code": 1002, "message": compat_support::RETRY_TEXT,
                            "creation_time": 1500}]
            }
        }),
    );
    ex.assert_dump(
        "task",
        json!({
            "metadata": {"id": "42", "name": "42"},
            "spec": {"session_id": "s-1", "input": "", "output": "6f7574"},
            "status": {
                "state": "Failed", "creation_time": 10, "completion_time": 20,
                "events": [
                    {"message": "Task was created with state <Pending>", "creation_time": 10},
                    {"code": 3, "message": "boom", "creation_time": 20}
                ]
            }
        }),
    );
    ex.assert_dump(
        "task_cancelled",
        json!({
            "metadata": {"id": "43", "name": "43"},
            "spec": {"session_id": "s-1"},
            "status": {"state": "Cancelled", "creation_time": 11, "completion_time": 21}
        }),
    );
}

#[test]
fn rust_encoded_application_node_and_executors_decode_in_flamepy_as_expected() {
    let ex = exchange();
    ex.assert_dump(
        "application",
        json!({
            "metadata": {"id": "my-app", "name": "my-app"},
            "spec": {
                "shim": "Wasm", "description": "d", "labels": ["l1", "l2"], "image": "img",
                "command": "${FLAME_HOME}/bin/uv", "arguments": ["run", "-m"],
                "environments": [{"name": "K", "value": "V"}, {"name": "A"}],
                "working_directory": "/w", "max_instances": 9, "delay_release": 7,
                "schema": {"input": "{}", "common_data": "true"},
                "url": "file:///p", "installer": "python"
            },
            "status": {"state": "Disabled", "creation_time": 77}
        }),
    );
    ex.assert_dump(
        "application_defaults",
        json!({
            "metadata": {"id": "bare", "name": "bare"},
            "spec": {"max_instances": 1_000_000, "delay_release": 60},
            "status": {"creation_time": 5}
        }),
    );
    ex.assert_dump(
        "node",
        json!({
            "metadata": {"id": "n-1", "name": "n-1"},
            "spec": {"hostname": "n-1"},
            "status": {
                "state": "NotReady",
                "capacity": {"cpu": 8, "memory": 4096, "gpu": 2},
                "allocatable": {"cpu": 7, "memory": 2048, "gpu": 1},
                "info": {"arch": "aarch64", "os": "linux"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
                "last_heartbeat_time": 1_700_000_000
            }
        }),
    );
    ex.assert_dump(
        "executor_list",
        json!({"executors": [
            {"metadata": {"id": "e-1", "name": "e-1"},
             "spec": {"node": "n-1", "resreq": {"cpu": 1, "memory": 64, "gpu": 3}, "shim": "Wasm"},
             "status": {"state": "ExecutorBound", "session_id": "s-1"}},
            {"metadata": {"id": "e-2", "name": "e-2"},
             "spec": {"node": "n-2", "resreq": {"cpu": 4}},
             "status": {"state": "ExecutorReleasing"}}
        ]}),
    );
}

#[test]
fn rust_encoded_requests_and_instance_messages_decode_in_flamepy_as_expected() {
    let ex = exchange();
    let spec = json!({
        "application": "flmrun", "common_data": "00ff", "min_instances": 2,
        "max_instances": 0, "batch_size": 1, "priority": 3,
        "resreq": {"cpu": 2, "memory": 512, "gpu": 1}
    });
    ex.assert_dump(
        "open_session_with_spec",
        json!({"session_id": "s-1", "session": spec}),
    );
    ex.assert_dump("open_session_without_spec", json!({"session_id": "s-2"}));
    ex.assert_dump("get_task", json!({"task_id": "7", "session_id": "s-3"}));
    ex.assert_dump(
        "task_context",
        json!({"task_id": "42", "session_id": "s-1", "input": ""}),
    );
    ex.assert_dump(
        "session_context",
        json!({
            "session_id": "s-1",
            "application": {
                "name": "my-app", "shim": "Wasm", "image": "img",
                "command": "${FLAME_HOME}/bin/uv", "working_directory": "/w",
                "url": "file:///p", "installer": "python"
            },
            "common_data": "00ff"
        }),
    );
    ex.assert_dump(
        "task_result",
        json!({"return_code": 3, "output": "", "message": "boom"}),
    );
    ex.assert_dump(
        "result",
        json!({"return_code": -1, "message": "application my-app has open sessions"}),
    );
}
