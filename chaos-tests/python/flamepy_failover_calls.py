"""flamepy 0.6.0 client cycling applications and sessions while the test kills leaders.

Run by chaos-tests/tests/cluster/flamepy_session_and_application_calls_survive_a_leader_sigkill.rs with:
- FLAME_ENDPOINT: a follower's client API (the test never kills it);
- FAILOVER_PREFIX: prefix of the application and session names (unique per iteration);
- FAILOVER_STOP_FILE: the loop stops once this file exists;
- FAILOVER_MAX_SECONDS, FAILOVER_MAX_ITERATIONS: bounds on the loop (defaults 90 and 2000);
- FAILOVER_TRACE (optional): a file every printed line is also appended to, as it is printed;
  the test follows the script's progress there (closed sessions are purged, so the cluster
  cannot tell) and shows it if it has to stop the script.

Each iteration makes five calls in order, one at a time: register_application (command: the
flmping service binary; no task ever runs), create_session of it, open_session of that session,
close_session, unregister_application. A call is NOT retried; one that raises (or returns
something unexpected) is recorded and the rest of its iteration is skipped, since it depends on
it.

Prints, per call, `LATENCY <iteration> <call> <start unix s> <duration s>`, and for a call that
failed, `ERROR <iteration> <call> <type>: <message>` (newlines escaped). At the end
`STOPPED <stop-file|time|iterations>`, `RESULT calls=<n> ok=<n> errors=<n> skipped=<n>` and the
marker line `flamepy failover calls done`. It exits 0 whenever the loop ended, errors or not
(the test judges them).
"""

import os
import sys
import time
from importlib.metadata import version

import flamepy
from flamepy import ApplicationAttributes, SessionState

DONE = "flamepy failover calls done"
COMMAND = "${FLAME_HOME}/bin/flmping-service"
TRACE_PATH = os.environ.get("FAILOVER_TRACE")
trace = open(TRACE_PATH, "a", buffering=1) if TRACE_PATH else None


def emit(line):
    print(line, flush=True)
    if trace is not None:
        trace.write(line + "\n")


def describe(error):
    text = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {text}".replace("\n", "\\n")


def steps(prefix, n):
    app, sid = f"{prefix}-app-{n}", f"{prefix}-ssn-{n}"

    def register():
        attrs = ApplicationAttributes(command=COMMAND, description="chaos-tests failover calls")
        flamepy.register_application(app, attrs)

    def create():
        ssn = flamepy.create_session(app, session_id=sid)
        assert ssn.id == sid and ssn.state == SessionState.OPEN, (ssn.id, ssn.state)

    def open_():
        ssn = flamepy.open_session(sid)
        assert ssn.id == sid and ssn.state == SessionState.OPEN, (ssn.id, ssn.state)

    def close():
        ssn = flamepy.close_session(sid)
        assert ssn.id == sid and ssn.state == SessionState.CLOSED, (ssn.id, ssn.state)

    def unregister():
        flamepy.unregister_application(app)

    return [
        ("register_application", register),
        ("create_session", create),
        ("open_session", open_),
        ("close_session", close),
        ("unregister_application", unregister),
    ]


def main():
    endpoint = os.environ["FLAME_ENDPOINT"]
    prefix = os.environ["FAILOVER_PREFIX"]
    stop_file = os.environ["FAILOVER_STOP_FILE"]
    max_seconds = float(os.environ.get("FAILOVER_MAX_SECONDS", "90"))
    max_iterations = int(os.environ.get("FAILOVER_MAX_ITERATIONS", "2000"))
    assert version("flamepy") == "0.6.0", version("flamepy")
    emit(f"flamepy {version('flamepy')} against {endpoint}")

    ok = errors = skipped = 0
    began = time.monotonic()
    stopped = "iterations"
    for n in range(max_iterations):
        if os.path.exists(stop_file):
            stopped = "stop-file"
            break
        if time.monotonic() - began > max_seconds:
            stopped = "time"
            break
        plan = steps(prefix, n)
        for k, (name, call) in enumerate(plan):
            start, t0 = time.time(), time.monotonic()
            error = None
            try:
                call()
            except Exception as e:  # noqa: BLE001 - every failure is recorded, none retried
                error = describe(e)
            duration = time.monotonic() - t0
            lines = [f"LATENCY {n} {name} {start:.6f} {duration:.6f}"]
            if error is None:
                ok += 1
            else:
                errors += 1
                skipped += len(plan) - k - 1
                lines.append(f"ERROR {n} {name} {error}")
            emit("\n".join(lines))
            if error is not None:
                break
    emit(f"STOPPED {stopped}")
    emit(f"RESULT calls={ok + errors} ok={ok} errors={errors} skipped={skipped}")
    emit(DONE)


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
