"""``make bench``: run the integrity, agents and codec benchmarks; print figure, target, verdict.

Each benchmark's full output goes to ``build/bench/<name>.log``; the figures with a target
are collected through ``BENCH_SUMMARY`` (see ``bench/verdict.py``) and printed as one table,
with the machine and the load average before and after, so that the next change can see
what it costs. A benchmark that fails is reported as such; nothing here asserts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from verdict import show

#: (log name, script, arguments)
BENCHES = (("integrity", "integrity", []), ("integrity-25", "integrity", ["--parts", "4"]),
           ("agents", "agents", []), ("codec", "codec", []))


def load() -> str:
    """The load averages, as ``uptime`` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    """Run every benchmark, then print the table."""
    here = os.path.dirname(os.path.abspath(__file__))
    logs = os.path.join(os.path.dirname(here), "build", "bench")
    os.makedirs(logs, exist_ok=True)
    rows: list[dict[str, object]] = []
    failed: list[str] = []
    started = load()
    elapsed: dict[str, float] = {}
    for name, script, arguments in BENCHES:
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as summary:
            env = dict(os.environ, BENCH_SUMMARY=summary.name)
            log = os.path.join(logs, f"{name}.log")
            print(f"running bench/{script}.py {' '.join(arguments)} (output in "
                  f"{os.path.relpath(log)}) ...", flush=True)
            t = time.monotonic()
            with open(log, "w", encoding="utf-8") as out:
                code = subprocess.call(
                    [sys.executable, os.path.join(here, f"{script}.py"), *arguments],
                    stdout=out, stderr=subprocess.STDOUT, env=env)
            elapsed[name] = time.monotonic() - t
            if code:
                failed.append(f"bench/{script}.py exited with {code} (see {log})")
            rows.extend(json.loads(line) for line in summary if line.strip())
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    print()
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; "
          f"load average before {started}, after {load()}")
    print(f"{'figure':<58} {'best':>10} {'median':>10}  {'target':<16} verdict")
    for row in rows:
        unit = str(row["unit"])
        best = show(float(row["best"]), unit)
        median = show(float(row["median"]), unit)
        print(f"{str(row['figure'])[:58]:<58} {best:>10} {median:>10}  "
              f"{row['target']!s:<16} {'met' if row['met'] else 'NOT MET'}")
    met = sum(1 for row in rows if row["met"])
    print(f"{met} of {len(rows)} targets met "
          f"({', '.join(f'{n} {s:.0f} s' for n, s in elapsed.items())})")
    for line in failed:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
