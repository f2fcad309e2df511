"""Elastic executors benchmark: many flmping sessions at once against one session.

Runs against FLAME_ENDPOINT (for the issue's figure, a follower of `flmctl local up`) with
flamepy 0.6.0:
- `--sessions S --tasks T`: S sessions opened at once, T tasks in flight in each (futures from
  `ssn.run`), each session on its own flamepy Connection so one session's watches never wait
  behind another's; prints the wall time, and for each session the time from its creation to
  its first result (a bound on its wait for a first executor; the leader's exact figure is the
  metric flame_scheduler_first_executor_seconds).
- the same number of tasks in one session, for the ratio.
- `--priorities 0,1`: session i gets priority `list[i % len]`, and the figures are also given
  per priority. flamepy 0.6.0's SessionAttributes has no priority, so these sessions are
  created with flamepy's own generated stubs (`CreateSession` with `SessionSpec.priority`) and
  then opened with `Connection.open_session`; tasks still go through flamepy's Session.
- `--shared`: every session on one flamepy Connection, as one client with one watch pool
  (10 threads) would run them; a session whose tasks wait then holds watch threads that the
  other sessions' results need.
- `--warm`: the sessions use `flmping-warm`, flmping registered with the label
  `flame.warm-switch=true`, so executors move between sessions without a new process.

Usage: python3 scripts/elastic-bench.py [--sessions 8] [--tasks 250] [--priorities 0,1] [--warm]
       [--shared]
"""

import argparse
import json
import os
import statistics
import threading
import time

from flamepy.core.client import connect
from flamepy.core.types import ApplicationAttributes, SessionAttributes
from flamepy.proto.frontend_pb2 import CreateSessionRequest
from flamepy.proto.types_pb2 import SessionSpec

ENDPOINT = os.environ.get("FLAME_ENDPOINT", "http://127.0.0.1:8080")


def open_session(conn, app, index, priority):
    if priority is None:
        attrs = SessionAttributes(application=app, common_data=None, min_instances=0,
                                  max_instances=None, batch_size=1, resreq=None)
        return conn.create_session(attrs)
    session_id = f"bench-{os.getpid()}-{index}-{time.monotonic_ns()}"
    spec = SessionSpec(application=app, batch_size=1, priority=priority)
    conn._frontend.CreateSession(CreateSessionRequest(session_id=session_id, session=spec))
    return conn.open_session(session_id)


def one_session(app, index, tasks, priority, results, shared):
    conn = shared or connect(ENDPOINT)
    started = time.monotonic()
    ssn = open_session(conn, app, index, priority)
    done_at = []
    futures = []
    for n in range(tasks):
        f = ssn.run(json.dumps({"n": n}).encode())
        # Called on the thread that resolves the future, as soon as it does.
        f.add_done_callback(lambda _f: done_at.append(time.monotonic()))
        futures.append(f)
    for f in futures:
        f.result(timeout=600)
    ssn.close()
    results[index] = (priority, min(done_at) - started, time.monotonic() - started)


def run(app, sessions, tasks, priorities, shared=False):
    results = [None] * sessions
    conn = connect(ENDPOINT) if shared else None
    threads = []
    for i in range(sessions):
        priority = priorities[i % len(priorities)] if priorities else None
        threads.append(threading.Thread(target=one_session,
                                        args=(app, i, tasks, priority, results, conn)))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started, results


def describe(results):
    firsts = sorted(r[1] for r in results)
    dones = sorted(r[2] for r in results)
    return (f"first result median {statistics.median(firsts):.2f} s, longest {firsts[-1]:.2f} s; "
            f"session done median {statistics.median(dones):.2f} s, longest {dones[-1]:.2f} s")


def register_warm():
    conn = connect(ENDPOINT)
    names = [a.name for a in conn.list_applications()]
    if "flmping-warm" not in names:
        conn.register_application("flmping-warm", ApplicationAttributes(
            command="${FLAME_HOME}/bin/flmping-service",
            labels=["flame.warm-switch=true"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--tasks", type=int, default=250)
    p.add_argument("--priorities", type=str, default="")
    p.add_argument("--warm", action="store_true")
    p.add_argument("--shared", action="store_true")
    a = p.parse_args()
    priorities = [int(x) for x in a.priorities.split(",") if x.strip()]
    app = "flmping"
    if a.warm:
        register_warm()
        app = "flmping-warm"
    total = a.sessions * a.tasks
    wall_many, results = run(app, a.sessions, a.tasks, priorities, a.shared)
    print(f"{app}: {a.sessions} sessions x {a.tasks} tasks: {wall_many:.1f} s; "
          f"{describe(results)}", flush=True)
    for priority in sorted(set(priorities)):
        group = [r for r in results if r[0] == priority]
        print(f"  priority {priority} ({len(group)} sessions): {describe(group)}", flush=True)
    wall_one, _ = run(app, 1, total, [])
    print(f"{app}: 1 session x {total} tasks: {wall_one:.1f} s; ratio {wall_many / wall_one:.2f}",
          flush=True)


if __name__ == "__main__":
    main()
