"""flamepy 0.6.0 client running flmping tasks one call at a time while the test kills leaders.

Run by chaos-tests/tests/cluster/flamepy_tasks_through_a_follower_survive_leader_kills_pauses_and_partitions.rs with:
- FLAME_ENDPOINT: a follower's client API (the test never kills it);
- FAILOVER_SESSIONS: comma-separated ids of the flmping sessions to create (two);
- FAILOVER_TASKS: how many calls in all (default 2000);
- FAILOVER_THREADS: how many callers (default 16), spread evenly over the sessions;
- FAILOVER_CALL_TIMEOUT: seconds one call may wait for its task's result (default 60);
- FAILOVER_TRACE (optional): a file every printed line is also appended to, so the test can
  show the lines of a run it had to stop.

Each session gets its own flamepy Connection: a Connection watches tasks on a pool of 10
threads, so with 8 callers per connection no call queues for a watcher and a call's duration is
the cluster's. Every caller loops `ssn.run(input).result(timeout=...)` (create the task, then
wait for its output) until FAILOVER_TASKS calls were made; each call's input is unique JSON
(`{"call": "<session>/<n>"}`; flmping ignores unknown fields). A call is NOT retried: whatever it
raised is recorded.

Prints, per call, `LATENCY <n> <session> <start unix s> <duration s>`, and for a call that raised
or returned something other than flmping's output, `ERROR <n> <session> <type>: <message>`
(newlines escaped). At the end `RESULT calls=<n> ok=<n> errors=<n> elapsed=<s>` and the marker
line `flamepy failover tasks done`. It exits 0 whenever it ran all calls, errors or not (the
test judges them); a failure to set up (connect, create the sessions) raises and exits 1.
"""

import itertools
import json
import os
import sys
import threading
import time
from importlib.metadata import version

import flamepy
from flamepy import ResourceRequirement, SessionAttributes

DONE = "flamepy failover tasks done"

print_lock = threading.Lock()
TRACE_PATH = os.environ.get("FAILOVER_TRACE")
trace = open(TRACE_PATH, "a", buffering=1) if TRACE_PATH else None


def emit(line):
    with print_lock:
        print(line, flush=True)
        if trace is not None:
            trace.write(line + "\n")


def describe(error):
    text = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {text}".replace("\n", "\\n")


class Calls:
    """Hands out call numbers until `total`, and counts outcomes."""

    def __init__(self, total):
        self.total = total
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = 0

    def next(self):
        with self.lock:
            n = next(self.numbers)
            return n if n < self.total else None

    def record(self, ok):
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.errors += 1


def caller(ssn, calls, timeout):
    while (n := calls.next()) is not None:
        data = json.dumps({"call": f"{ssn.id}/{n}"}).encode()
        start, began = time.time(), time.monotonic()
        error = None
        try:
            output = ssn.run(data).result(timeout=timeout)
            if not isinstance(output, bytes) or b"Completed on" not in output:
                error = f"UnexpectedOutput: {output!r}"
        except Exception as e:  # noqa: BLE001 - every failure is recorded, none retried
            error = describe(e)
        duration = time.monotonic() - began
        calls.record(error is None)
        lines = [f"LATENCY {n} {ssn.id} {start:.6f} {duration:.6f}"]
        if error is not None:
            lines.append(f"ERROR {n} {ssn.id} {error}")
        emit("\n".join(lines))


def main():
    endpoint = os.environ["FLAME_ENDPOINT"]
    ids = os.environ["FAILOVER_SESSIONS"].split(",")
    total = int(os.environ.get("FAILOVER_TASKS", "2000"))
    threads = int(os.environ.get("FAILOVER_THREADS", "16"))
    timeout = float(os.environ.get("FAILOVER_CALL_TIMEOUT", "60"))
    assert version("flamepy") == "0.6.0", version("flamepy")
    emit(f"flamepy {version('flamepy')} against {endpoint}: {total} calls by {threads} threads")

    sessions = []
    for sid in ids:
        conn = flamepy.connect(endpoint)
        attrs = SessionAttributes(
            application="flmping",
            id=sid,
            resreq=ResourceRequirement(cpu=1, memory=1 << 30, gpu=0),
        )
        ssn = conn.create_session(attrs)
        assert ssn.id == sid, (ssn.id, sid)
        sessions.append(ssn)
    emit("SESSIONS " + ",".join(s.id for s in sessions))

    calls = Calls(total)
    began = time.monotonic()
    workers = [
        threading.Thread(
            target=caller, args=(sessions[t % len(sessions)], calls, timeout), daemon=True
        )
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        # Each call is bounded by `timeout`; the test bounds the whole script too.
        w.join()
    elapsed = time.monotonic() - began
    made = calls.ok + calls.errors
    emit(f"RESULT calls={made} ok={calls.ok} errors={calls.errors} elapsed={elapsed:.3f}")
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
    # Watch threads of calls that timed out may still block; do not wait for them.
    os._exit(0)
