#!/usr/bin/env python3
"""Figures for flamepy's Runner against a running cluster (for example `flmctl local up`).

What it measures, each over --runs runs, printing every run and the median:
- first-call latency of a new Runner, split into packaging + upload + registration (the
  `Runner(...)` constructor), and the first result (the agent downloads the package from the
  cache, `uv pip install`s it, starts the instance, runs the call): once with the agent's uv
  cache emptied first (cold; needs --uv-cache, the agent's `<work_dir>/cache/uv`), once warm;
- calls/s for --calls small calls (`inc(i)`) submitted at once through one Runner service,
  then read back, and the p50 of --sequential calls made one at a time.

Each Runner gets a new name, so every first call installs a new release. Run it from any
directory; it writes its project to a temporary one. Needs flamepy 0.6.0, FLAME_ENDPOINT and
FLAME_CACHE_ENDPOINT (or ~/.flame/flame.yaml).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

PYPROJECT = """[project]
name = "runner-bench"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[tool.setuptools]
py-modules = ["benchfns"]
"""

MODULE = "def inc(x):\n    return x + 1\n"


def project():
    path = tempfile.mkdtemp(prefix="runner-bench-")
    with open(os.path.join(path, "pyproject.toml"), "w") as f:
        f.write(PYPROJECT)
    with open(os.path.join(path, "benchfns.py"), "w") as f:
        f.write(MODULE)
    os.chdir(path)
    sys.path.insert(0, path)
    return path


def first_call(tag, uv_cache):
    from flamepy.runner import Runner
    import benchfns

    if uv_cache is not None:
        shutil.rmtree(uv_cache, ignore_errors=True)
    name = "runner-bench-%s-%d-%d" % (tag, os.getpid(), time.time_ns() % 10**9)
    began = time.perf_counter()
    runner = Runner(name)
    registered = time.perf_counter()
    try:
        result = runner.service(benchfns.inc)(1).get()
        answered = time.perf_counter()
        assert result == 2, result
    finally:
        runner.close()
    return registered - began, answered - registered


def throughput(calls, sequential):
    from flamepy.runner import Runner
    import benchfns

    name = "runner-bench-tp-%d-%d" % (os.getpid(), time.time_ns() % 10**9)
    with Runner(name) as runner:
        svc = runner.service(benchfns.inc)
        assert svc(0).get() == 1  # warm: installed and started
        began = time.perf_counter()
        futures = [svc(i) for i in range(calls)]
        results = [f.get() for f in futures]
        elapsed = time.perf_counter() - began
        wrong = sum(1 for i, r in enumerate(results) if r != i + 1)
        latencies = []
        for i in range(sequential):
            t = time.perf_counter()
            svc(i).get()
            latencies.append(time.perf_counter() - t)
    return calls / elapsed, wrong, statistics.median(latencies) if latencies else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--uv-cache", help="the agent's uv cache, emptied before cold runs")
    args = parser.parse_args()
    project()

    cold, warm = [], []
    for run in range(args.runs):
        if args.uv_cache:
            cold.append(first_call("cold", args.uv_cache))
            print("run %d cold: upload+register %.2f s, first result %.2f s" % (run, *cold[-1]))
        warm.append(first_call("warm", None))
        print("run %d warm: upload+register %.2f s, first result %.2f s" % (run, *warm[-1]))
    rates = []
    for run in range(args.runs):
        rate, wrong, p50 = throughput(args.calls, args.sequential)
        rates.append((rate, p50))
        print("run %d: %d calls at %.0f calls/s (%d wrong); sequential p50 %.1f ms" % (run, args.calls, rate, wrong, p50 * 1000))

    def med(pairs, i):
        return statistics.median(p[i] for p in pairs)

    print("--- medians of %d runs" % args.runs)
    if cold:
        print("first call, cold uv cache: upload+register %.2f s, first result %.2f s, total %.2f s"
              % (med(cold, 0), med(cold, 1), statistics.median(a + b for a, b in cold)))
    print("first call, warm uv cache: upload+register %.2f s, first result %.2f s, total %.2f s"
          % (med(warm, 0), med(warm, 1), statistics.median(a + b for a, b in warm)))
    print("%d small calls: %.0f calls/s; sequential p50 %.1f ms" % (args.calls, med(rates, 0), med(rates, 1) * 1000))


if __name__ == "__main__":
    main()
