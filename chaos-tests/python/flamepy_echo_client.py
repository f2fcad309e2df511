"""flamepy 0.6.0 client driving flamepy_echo_service.py under a real node agent.

Run by chaos-tests/tests/cluster/a_flamepy_service_under_a_real_agent_serves_a_flamepy_client.rs with:
- FLAME_ENDPOINT: a member's client API (a follower);
- ECHO_PYTHON, ECHO_SERVICE: the venv's python and the service script, the application's command;
- ECHO_LEAVE_MARKER: the file the service writes on leave (passed in the application environment);
- ECHO_WORKDIR: the application's working directory;
- ECHO_APP, ECHO_SESSION: the application and session names.

Prints "step: ..." before each step and "flamepy echo scenario passed" at the end; any failure
raises, so the process exits non-zero with a traceback naming the step. Every wait is bounded.
"""

import os
import sys
from importlib.metadata import version

import flamepy
from flamepy import ApplicationAttributes, FlameError, SessionState, TaskState

COMMON = b"common|"
INPUTS = [f"task-{n}".encode() for n in range(1, 6)]
POISON = b"explode"
AFTER = b"still alive"
STEP_TIMEOUT = 60  # seconds: the first task waits for the instance to start


def step(name):
    print(f"step: {name}", flush=True)


def register(app):
    step("register the application: the venv's python running the flamepy service")
    attrs = ApplicationAttributes(
        command=os.environ["ECHO_PYTHON"],
        arguments=["-u", os.environ["ECHO_SERVICE"]],
        environments={"ECHO_LEAVE_MARKER": os.environ["ECHO_LEAVE_MARKER"]},
        working_directory=os.environ["ECHO_WORKDIR"],
        description="flamepy echo service (chaos-tests)",
    )
    flamepy.register_application(app, attrs)
    got = flamepy.get_application(app)
    assert got is not None and got.command == attrs.command, got
    assert got.arguments == attrs.arguments and got.environments == attrs.environments, got
    assert got.working_directory == attrs.working_directory, got


def echo_tasks(ssn):
    step(f"run {len(INPUTS)} tasks: each returns common data + input")
    futures = [(data, ssn.run(data)) for data in INPUTS]
    for data, future in futures:
        output = future.result(timeout=STEP_TIMEOUT)
        assert output == COMMON + data, (data, output)

    step("every task reached Succeed with its output (GetTask and ListTask)")
    tasks = {t.input: t for t in ssn.list_tasks()}
    assert set(tasks) == set(INPUTS), tasks.keys()
    for data, task in tasks.items():
        got = ssn.get_task(task.id)
        assert got.state == TaskState.SUCCEED and got.output == COMMON + data, got
        assert [e.code for e in got.events][-1] == TaskState.SUCCEED, got.events


def failing_task(ssn):
    step("a task whose service raises ValueError fails run() with the exception's text")
    error = ssn.run(POISON).exception(timeout=STEP_TIMEOUT)
    poison = [t for t in ssn.list_tasks() if t.input == POISON]
    assert len(poison) == 1, poison
    task_id = poison[0].id
    text = f"echo service refuses task {task_id}: input {POISON!r} is poison"
    assert isinstance(error, FlameError), repr(error)
    assert error.message == text, f"expected {text!r}, got {error.message!r}"

    step("WatchTask on the failed task streams Failed with the text in a code-3 event")
    watcher = ssn.watch_task(task_id, timeout=STEP_TIMEOUT)
    last = next(t for t in watcher if t.is_completed())
    watcher._stream.cancel()
    assert last.id == task_id and last.state == TaskState.FAILED, last
    failures = [e.message for e in last.events if e.code == TaskState.FAILED]
    assert failures == [text], last.events
    assert ssn.get_task(task_id).state == TaskState.FAILED

    step("the instance survives the exception and serves the next task")
    output = ssn.run(AFTER).result(timeout=STEP_TIMEOUT)
    assert output == COMMON + AFTER, output


def main():
    endpoint = os.environ["FLAME_ENDPOINT"]
    app, session_id = os.environ["ECHO_APP"], os.environ["ECHO_SESSION"]
    print(f"flamepy {version('flamepy')} against {endpoint}", flush=True)
    assert version("flamepy") == "0.6.0"
    register(app)

    step("create a session with common data, served by one instance")
    ssn = flamepy.create_session(app, common_data=COMMON, session_id=session_id, max_instances=1)
    assert ssn.id == session_id and ssn.state == SessionState.OPEN, ssn
    assert ssn.common_data() == COMMON

    echo_tasks(ssn)
    failing_task(ssn)

    step("the session counts the successes and the failure")
    counted = flamepy.get_session(session_id)
    succeeded = len(INPUTS) + 1
    assert (counted.pending, counted.running) == (0, 0), counted
    assert (counted.succeed, counted.failed) == (succeeded, 1), counted

    step("close the session")
    closed = flamepy.close_session(session_id)
    assert closed.state == SessionState.CLOSED, closed
    print("flamepy echo scenario passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)
