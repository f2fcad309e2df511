"""flamepy 0.6.0 side of the flame.v1 compatibility test (driven by flamepy_compat.rs).

Commands (JSON on stdout, byte strings as lowercase hex):

  export   Prints {"flamepy_version", "descriptor_set", "samples"}: the FileDescriptorSet of
           flamepy's types.proto, frontend.proto and shim.proto as flamepy ships them, and
           fully populated sample messages built with flamepy's generated classes, as
           [{"name", "type", "hex"}].

  verify   Reads {"reencoded": [{"name", "type", "hex"}], "rust_built": [...]} on stdin.
           "reencoded" holds the samples after Rust decoded and re-encoded them; each must parse
           into a message equal to the original sample, with no unknown fields. "rust_built"
           holds messages Rust encoded itself; each is parsed and dumped field by field.
           Prints {"failures": [text], "dumps": {name: dump}}.

A dump maps every field that is set (ListFields: presence-aware for optional fields, non-default
for plain proto3 scalars) to its value: enums by value name, bytes as hex, messages as nested
dumps, repeated fields as lists. A message with unknown fields gets "__unknown_fields__": [field
numbers], so a field-number slip cannot go unnoticed.
"""

import json
import sys
from importlib.metadata import version

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from flamepy.proto import frontend_pb2, shim_pb2, types_pb2

MODULES = (types_pb2, frontend_pb2, shim_pb2)
T = types_pb2


def message_class(name):
    for module in MODULES:
        cls = getattr(module, name, None)
        if cls is not None and hasattr(cls, "DESCRIPTOR"):
            return cls
    raise KeyError(f"flame.v1 has no message {name}")


def descriptor_set():
    fds = descriptor_pb2.FileDescriptorSet()
    for module in MODULES:
        fds.file.add().ParseFromString(module.DESCRIPTOR.serialized_pb)
    return fds.SerializeToString()


def resreq(cpu, memory, gpu):
    return T.ResourceRequirement(cpu=cpu, memory=memory, gpu=gpu)


def session_spec(max_instances):
    spec = T.SessionSpec(
        application="flmrun",
        common_data=b"\x00\x01common\xff",
        min_instances=2,
        batch_size=1,
        priority=3,
        resreq=resreq(2, 1073741824, 1),
    )
    if max_instances is not None:
        spec.max_instances = max_instances
    return spec


def samples():
    """Fully populated messages with distinct values, so that any swapped field shows."""
    meta = lambda i: T.Metadata(id=i, name=i)  # noqa: E731
    bind_text = (
        "Executor <e-1> on node <n-1> failed to bind session with return_code <12>: "
        "on_session_enter failed: boom"
    )
    session = T.Session(
        metadata=meta("flmrun-a1B2c3"),
        spec=session_spec(5),
        status=T.SessionStatus(
            state=T.Closed,
            creation_time=1700000000123,
            completion_time=1700000005456,
            pending=1,
            running=2,
            succeed=3,
            failed=4,
            cancelled=5,
            events=[
                T.Event(code=1001, message=bind_text, creation_time=1700000001000),
                T.Event(code=1002, creation_time=1700000002000),
            ],
        ),
    )
    task = T.Task(
        metadata=meta("7"),
        spec=T.TaskSpec(session_id="flmrun-a1B2c3", input=b"in\x00put", output=b"out\xffput"),
        status=T.TaskStatus(
            state=T.Failed,
            creation_time=1700000000001,
            completion_time=1700000000999,
            events=[
                T.Event(code=0, message="Task was created with state <Pending>", creation_time=1),
                T.Event(code=1, message="Task state was updated to <Running>", creation_time=2),
                T.Event(code=3, message="ValueError: boom", creation_time=3),
            ],
        ),
    )
    task_empty_input = T.Task(
        metadata=meta("8"),
        spec=T.TaskSpec(session_id="s-2", input=b""),
        status=T.TaskStatus(state=T.Cancelled, creation_time=5, completion_time=6),
    )
    application = T.Application(
        metadata=meta("my-app"),
        spec=T.ApplicationSpec(
            shim=T.Wasm,
            description="Runner application: my-app",
            labels=["team=a", "tier=b"],
            image="registry/img:1",
            command="${FLAME_HOME}/bin/uv",
            arguments=["run", "--python", "python${FLAME_PYTHON_VERSION}"],
            environments=[
                T.Environment(name="FLAME_PYTHON_VERSION", value="3.11"),
                T.Environment(name="A", value="b"),
            ],
            working_directory="/var/flame/work/my-app",
            max_instances=10,
            delay_release=0,
            schema=T.ApplicationSchema(
                input='{"type": "string"}', output="true", common_data='{"type": "object"}'
            ),
            url="file:///opt/pkg/my-app.tar.gz",
            installer="python",
        ),
        status=T.ApplicationStatus(state=T.Disabled, creation_time=1700000000777),
    )
    node = T.Node(
        metadata=meta("node-1"),
        spec=T.NodeSpec(hostname="node-1"),
        status=T.NodeStatus(
            state=T.NotReady,
            capacity=resreq(8, 17179869184, 2),
            allocatable=resreq(7, 16106127360, 1),
            info=T.NodeInfo(arch="x86_64", os="linux"),
            addresses=[T.NodeAddress(type="InternalIP", address="10.0.0.1")],
            last_heartbeat_time=1700000000,
        ),
    )
    executor = lambda i, state, session_id: T.Executor(  # noqa: E731
        metadata=meta(i),
        spec=T.ExecutorSpec(node="node-1", resreq=resreq(1, 536870912, 0), shim=T.Host),
        status=T.ExecutorStatus(state=state, session_id=session_id),
    )
    executors = T.ExecutorList(
        executors=[
            executor("e-1", T.ExecutorBound, "flmrun-a1B2c3"),
            T.Executor(
                metadata=meta("e-2"),
                spec=T.ExecutorSpec(node="node-2", resreq=resreq(3, 2048, 0), shim=T.Wasm),
                status=T.ExecutorStatus(state=T.ExecutorReleasing),
            ),
        ]
    )
    app_ctx = shim_pb2.ApplicationContext(
        name="my-app",
        shim=T.Host,
        image="img",
        command="/bin/svc",
        working_directory="/w",
        url="file:///p",
        installer="python",
    )
    return [
        ("session", session),
        ("session_list", T.SessionList(sessions=[session])),
        ("task", task),
        ("task_empty_input", task_empty_input),
        ("application", application),
        ("application_minimal", T.Application(metadata=meta("m"), spec=T.ApplicationSpec())),
        ("node", node),
        ("get_node_response", frontend_pb2.GetNodeResponse(node=node)),
        ("executor_list", executors),
        ("open_session_with_spec", frontend_pb2.OpenSessionRequest(
            session_id="flmrun-a1B2c3", session=session_spec(0))),
        ("open_session_without_spec", frontend_pb2.OpenSessionRequest(session_id="s-9")),
        ("create_session", frontend_pb2.CreateSessionRequest(
            session_id="s-10", session=session_spec(None))),
        ("register_application", frontend_pb2.RegisterApplicationRequest(
            name="my-app", application=application.spec)),
        ("watch_task", frontend_pb2.WatchTaskRequest(task_id="7", session_id="s-1")),
        ("create_task", frontend_pb2.CreateTaskRequest(
            task=T.TaskSpec(session_id="s-1", input=b"x"))),
        ("task_context", shim_pb2.TaskContext(task_id="3", session_id="s-3", input=b"\xfe\x00")),
        ("session_context", shim_pb2.SessionContext(
            session_id="s-4", application=app_ctx, common_data=b"cd")),
        ("task_result", T.TaskResult(return_code=1, output=b"", message="failed: x")),
        ("result", T.Result(return_code=-1, message="application my-app has open sessions")),
    ]


def is_repeated(fd):
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return flag
    return fd.label == FieldDescriptor.LABEL_REPEATED


def dump_one(fd, value):
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return dump(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = fd.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value


def dump(msg):
    out = {}
    for fd, value in msg.ListFields():
        if is_repeated(fd):
            out[fd.name] = [dump_one(fd, v) for v in value]
        else:
            out[fd.name] = dump_one(fd, value)
    unknown = sorted({f.field_number for f in UnknownFieldSet(msg)})
    if unknown:
        out["__unknown_fields__"] = unknown
    return out


def has_unknown_fields(d):
    if isinstance(d, dict):
        return "__unknown_fields__" in d or any(has_unknown_fields(v) for v in d.values())
    if isinstance(d, list):
        return any(has_unknown_fields(v) for v in d)
    return False


def export():
    return {
        "flamepy_version": version("flamepy"),
        "descriptor_set": descriptor_set().hex(),
        "samples": [
            {"name": n, "type": m.DESCRIPTOR.name, "hex": m.SerializeToString().hex()}
            for n, m in samples()
        ],
    }


def parse(entry):
    cls = message_class(entry["type"])
    msg = cls()
    msg.ParseFromString(bytes.fromhex(entry["hex"]))
    return msg


def verify(request):
    failures = []
    originals = dict(samples())
    for entry in request["reencoded"]:
        name = entry["name"]
        original = originals.get(name)
        if original is None:
            failures.append(f"reencoded {name}: no such sample")
            continue
        try:
            ours = parse(entry)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failures.append(f"reencoded {name}: flamepy cannot parse our bytes: {e!r}")
            continue
        if has_unknown_fields(dump(ours)):
            failures.append(f"reencoded {name}: unknown fields {dump(ours)}")
        if ours != original:
            failures.append(
                f"reencoded {name}: differs from the original\n  ours:     {dump(ours)}\n"
                f"  original: {dump(original)}"
            )
    missing = set(originals) - {e["name"] for e in request["reencoded"]}
    failures.extend(f"reencoded {name}: not sent back by Rust" for name in sorted(missing))
    dumps = {}
    for entry in request["rust_built"]:
        try:
            dumps[entry["name"]] = dump(parse(entry))
        except Exception as e:  # noqa: BLE001
            failures.append(f"rust_built {entry['name']}: flamepy cannot parse it: {e!r}")
    return {"failures": failures, "dumps": dumps}


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "export":
        result = export()
    elif command == "verify":
        result = verify(json.load(sys.stdin))
    else:
        sys.exit(f"usage: {sys.argv[0]} export|verify")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
