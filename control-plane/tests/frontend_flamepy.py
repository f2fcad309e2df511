"""flamepy 0.6.0 against a Flame control-plane member (run by tests/frontend/frontend_flamepy.rs).

The endpoint comes from FLAME_ENDPOINT (a follower's client API). The scenario covers the
applications, sessions and tasks a flamepy user touches, and the not-found, not-open and
spec-mismatch errors with the specification's texts (sections 4.3, 5 and 14). There are no
executors, so tasks stay Pending until their session is closed.

Prints one line per step to stdout and "flamepy scenario passed" at the end; any failure raises,
so the process exits non-zero with a traceback naming the step.
"""

import os
import sys
from importlib.metadata import version

import flamepy
from flamepy import (
    ApplicationAttributes,
    ApplicationState,
    FlameError,
    FlameErrorCode,
    ResourceRequirement,
    SessionAttributes,
    SessionState,
    Shim,
    TaskState,
)

APP = "py-app"
STEP_TIMEOUT = 20  # seconds; every wait in this script is bounded


def step(name):
    print(f"step: {name}", flush=True)


def expect_error(call, *texts, code=None):
    """Runs call() and checks it raises FlameError whose message contains every text."""
    try:
        value = call()
    except FlameError as e:
        for text in texts:
            assert text in e.message, f"expected {text!r} in {e.message!r}"
        if code is not None:
            assert e.code == code, f"expected code {code!r}, got {e.code!r}: {e.message}"
        return e
    raise AssertionError(f"expected FlameError with {texts}, got {value!r}")


def applications(conn):
    step("a fresh cluster lists exactly the three built-ins")
    apps = flamepy.list_applications()
    names = sorted(a.name for a in apps)
    assert names == ["flmexec", "flmping", "flmrun"], names
    for app in apps:
        assert app.state == ApplicationState.ENABLED and app.shim == Shim.HOST, app
        assert app.max_instances == 1_000_000 and app.delay_release == 60, app
    flmrun = flamepy.get_application("flmrun")
    assert flmrun.command == "${FLAME_HOME}/bin/uv", flmrun
    assert flmrun.arguments[-2:] == ["-m", "flamepy.runner.runpy"], flmrun
    assert flmrun.installer == "python" and flmrun.url is None, flmrun

    step("register, get and list an application")
    attrs = ApplicationAttributes(
        command="/usr/bin/true",
        arguments=["--x", "1"],
        environments={"K": "V"},
        labels=["a", "b"],
        working_directory="/tmp/py",
        description="flamepy scenario",
    )
    flamepy.register_application(APP, attrs)
    app = flamepy.get_application(APP)
    assert app is not None and app.name == APP, app
    assert app.arguments == ["--x", "1"] and app.environments == {"K": "V"}, app
    assert app.labels == ["a", "b"] and app.working_directory == "/tmp/py", app
    assert app.url is None and app.max_instances == 1_000_000, app
    assert len(conn.list_applications()) == 4
    assert flamepy.get_application("py-unknown") is None

    step("duplicate, bad name and relative working directory are refused")
    expect_error(lambda: flamepy.register_application(APP, attrs), "already exists")
    expect_error(lambda: flamepy.register_application("bad/name", attrs), "invalid application name")
    relative = ApplicationAttributes(command="/usr/bin/true", working_directory="rel")
    expect_error(
        lambda: flamepy.register_application("py-rel", relative),
        "working_directory must be an absolute path",
    )


def sessions():
    step("create a session: Open, counters 0, common data and resreq round-trip")
    ssn = flamepy.create_session(
        APP, common_data=b"\x00ctx", session_id="py-s1", min_instances=2, batch_size=2
    )
    assert ssn.id == "py-s1" and ssn.state == SessionState.OPEN, ssn.state
    assert (ssn.pending, ssn.running, ssn.succeed, ssn.failed) == (0, 0, 0, 0)
    assert ssn.common_data() == b"\x00ctx"
    explicit = flamepy.create_session(
        APP, session_id="py-s2", resreq=ResourceRequirement.from_string("cpu=1,mem=512,gpu=0")
    )
    assert explicit.state == SessionState.OPEN

    step("open an Open session: without spec, matching spec, mismatched spec")
    same = flamepy.open_session("py-s1")
    assert same.common_data() == b"\x00ctx" and same.creation_time == ssn.creation_time
    matching = SessionAttributes(application=APP, common_data=b"other", min_instances=2)
    again = flamepy.open_session("py-s1", matching)
    assert again.common_data() == b"\x00ctx", "common data is not replaced"
    mismatch = SessionAttributes(application=APP, min_instances=2, max_instances=5)
    expect_error(
        lambda: flamepy.open_session("py-s1", mismatch),
        "spec mismatch",
        "max_instances",
        code=FlameErrorCode.INVALID_ARGUMENT,
    )

    step("open a missing session: not found without spec, created with one")
    expect_error(
        lambda: flamepy.open_session("py-missing"), "not found", code=FlameErrorCode.NOT_FOUND
    )
    created = flamepy.open_session("py-s3", SessionAttributes(application=APP))
    assert created.state == SessionState.OPEN

    step("get and list sessions")
    got = flamepy.get_session("py-s1")
    assert got.id == "py-s1" and got.common_data() == b"\x00ctx"
    listed = {s.id: s for s in flamepy.list_sessions()}
    assert {"py-s1", "py-s2", "py-s3"} <= set(listed), listed.keys()
    assert all(listed[i].state == SessionState.OPEN for i in ("py-s1", "py-s2", "py-s3"))
    expect_error(lambda: flamepy.get_session("py-missing"), "not found")
    return ssn


def tasks(ssn):
    step("create, get and list tasks: they stay Pending without executors")
    first = ssn.create_task(b"hello")
    second = ssn.create_task(b"world")
    assert (first.id, second.id) == ("1", "2"), (first.id, second.id)
    assert first.state == TaskState.PENDING and [e.code for e in first.events] == [0]
    got = ssn.get_task("1")
    assert got.input == b"hello" and got.state == TaskState.PENDING and got.output is None
    listed = list(ssn.list_tasks())
    assert [(t.id, t.input) for t in listed] == [("1", b"hello"), ("2", b"world")], listed
    assert all(t.state == TaskState.PENDING for t in listed)
    counters = flamepy.get_session(ssn.id)
    assert (counters.pending, counters.running, counters.succeed) == (2, 0, 0)
    expect_error(lambda: ssn.get_task("abc"), "invalid task id")

    step("watch a task: the current state arrives first")
    watcher = ssn.watch_task("1", timeout=STEP_TIMEOUT)
    current = next(watcher)
    assert current.id == "1" and current.state == TaskState.PENDING, current
    assert [e.code for e in current.events] == [0], "watch messages carry events"
    watcher._stream.cancel()


def closing(ssn):
    step("run() is pending until the session closes; closing fails its future")
    future = ssn.run(b"pending")
    assert not future.done(), "a task without executors cannot finish"

    step("close sessions: Closed, idempotent; the watch sees Cancelled")
    closed = flamepy.close_session(ssn.id)
    assert closed.state == SessionState.CLOSED and closed.completion_time is not None
    assert closed.pending == 0
    error = future.exception(timeout=STEP_TIMEOUT)
    assert isinstance(error, FlameError) and "not a valid TaskState" in error.message, error
    again = flamepy.close_session(ssn.id)
    assert again.state == SessionState.CLOSED
    assert again.completion_time == closed.completion_time, "the first close time is kept"

    step("a closed session is not open and takes no tasks")
    expect_error(
        lambda: flamepy.open_session(ssn.id), "not open", code=FlameErrorCode.INVALID_ARGUMENT
    )
    expect_error(
        lambda: flamepy.open_session(ssn.id, SessionAttributes(application=APP, min_instances=2)),
        "not open",
        code=FlameErrorCode.INVALID_ARGUMENT,
    )
    expect_error(lambda: ssn.create_task(b"late"), "Cannot create task in closed session")
    expect_error(lambda: flamepy.close_session("py-missing"), "not found")
    states = {s.id: s.state for s in flamepy.list_sessions()}
    assert states[ssn.id] == SessionState.CLOSED, states


def unregistering():
    step("unregister is refused with open sessions, then succeeds after closing them")
    expect_error(lambda: flamepy.unregister_application(APP), "open sessions")
    for sid in ("py-s2", "py-s3"):
        flamepy.close_session(sid)
    flamepy.unregister_application(APP)
    assert flamepy.get_application(APP) is None
    left = [s.id for s in flamepy.list_sessions() if s.application == APP]
    assert left == [], left
    expect_error(lambda: flamepy.unregister_application(APP), "not found")
    assert len(flamepy.list_applications()) == 3

    step("no executors and no nodes yet")
    assert flamepy.list_executors() == [] and flamepy.list_nodes() == []


def main():
    endpoint = os.environ["FLAME_ENDPOINT"]
    print(f"flamepy {version('flamepy')} against {endpoint}", flush=True)
    assert version("flamepy") == "0.6.0"
    conn = flamepy.connect(endpoint)
    applications(conn)
    ssn = sessions()
    tasks(ssn)
    closing(ssn)
    unregistering()
    conn.close()
    print("flamepy scenario passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    os._exit(0)
