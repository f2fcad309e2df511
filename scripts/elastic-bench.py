"""Elastic executors benchmark: many flmping sessions at once against one session.

Runs against FLAME_ENDPOINT (for the issue's figure, a follower of `flmctl local up`) with
flamepy 0.6.0:
- `--sessions S --tasks T`: S sessions opened at once, T tasks in flight in each (futures from
  `ssn.run`), each session on its own flamepy Connection so one session's watches never wait
  behind another's; prints the wall time, and for each session the time to its first result
  (a bound on its wait for a first executor).
- the same number of tasks in one session, for the ratio.

Usage: python3 scripts/elastic-bench.py [--sessions 8] [--tasks 250]

Caveat: flamepy 0.6.0's SessionAttributes has no priority, so every session has priority 0.
"""

import argparse
import json
import os
import threading
import time

from flamepy.core.client import connect
from flamepy.core.types import SessionAttributes


def one_session(index, tasks, results):
    conn = connect(os.environ.get("FLAME_ENDPOINT", "http://127.0.0.1:8080"))
    attrs = SessionAttributes(application="flmping", common_data=None, min_instances=0,
                              max_instances=None, batch_size=1, resreq=None)
    started = time.monotonic()
    ssn = conn.create_session(attrs)
    futures = [ssn.run(json.dumps({"n": n}).encode()) for n in range(tasks)]
    first = None
    for f in futures:
        f.result(timeout=600)
        if first is None:
            first = time.monotonic() - started
    ssn.close()
    results[index] = (first, time.monotonic() - started)


def run(sessions, tasks):
    results = [None] * sessions
    threads = [threading.Thread(target=one_session, args=(i, tasks, results))
               for i in range(sessions)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    firsts = sorted(r[0] for r in results)
    return wall, firsts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--tasks", type=int, default=250)
    a = p.parse_args()
    total = a.sessions * a.tasks
    wall_many, firsts = run(a.sessions, a.tasks)
    print(f"{a.sessions} sessions x {a.tasks} tasks: {wall_many:.1f} s; first result per "
          f"session: median {firsts[len(firsts) // 2]:.2f} s, longest {firsts[-1]:.2f} s",
          flush=True)
    wall_one, _ = run(1, total)
    print(f"1 session x {total} tasks: {wall_one:.1f} s; ratio {wall_many / wall_one:.2f}",
          flush=True)


if __name__ == "__main__":
    main()
