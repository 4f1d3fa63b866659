"""Benchmark: the native DAPI function ``wazuh.agent.get_agents`` on 50 000 agents.

Measures the function alone (query compilation, the two SQLite reads, row formatting), run
inline on a real embedded agent database in a temporary home: no cluster, no codec, no
network. This is the execution share of a DAPI round trip; the round trip itself is measured
with the DAPI. Cases: the first page (limit 500), a page deep in the list (offset 40 000), a
filtered query (``q`` on status and node), and a search over every field.

Run: ``.venv/bin/python bench/dapi_functions.py [agents] [repeats]``
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.agents.memory import NOW, inline_database, raw
from tests.support import node_config
from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.agents import get_agents


def run(ctx: DapiContext, **kwargs: Any) -> Any:
    out: list[Any] = []
    Deferred.fromCoroutine(get_agents(ctx, **kwargs)).addBoth(out.append)
    return out[0]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    base = tempfile.mkdtemp(prefix="wzcb", dir="/tmp")
    try:
        config = node_config(base)
        clock = Clock()
        clock.advance(NOW)
        db = inline_database(clock, config.home)
        blocking = raw(db)
        blocking.reconcile_keys([KeyEntry(i, f"agent{i}", "any", f"{i:064x}")
                                 for i in range(1, count + 1)], NOW)
        blocking._conn.execute(
            "UPDATE agent SET connection_status = CASE id % 3 WHEN 0 THEN 'active'"
            " ELSE 'disconnected' END, node_name = 'worker' || (id % 4), os_platform = 'ubuntu',"
            " version = 'Wazuh v4.7.5', last_keepalive = ? WHERE id > 0", (NOW - 30,))
        ctx = DapiContext(node=SimpleNamespace(clock=clock), config=config, agent_db=db,
                          run=SynchronousRunner().run)
        cases = {
            "first page (limit 500)": {"limit": 500},
            "offset 40000, limit 500": {"limit": 500, "offset": min(40_000, count - 500)},
            "q status+node, limit 500": {"limit": 500, "q": "status=active;node_name=worker1"},
            "search 'agent4', limit 500": {"limit": 500, "search": "agent4"},
        }
        print(f"get_agents on {count} agents, {repeats} calls per case (inline SQLite, "
              f"Python {sys.version.split()[0]})")
        for name, kwargs in cases.items():
            run(ctx, **kwargs)  # warm up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = run(ctx, **kwargs)
                times.append(time.perf_counter() - start)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            p50 = statistics.median(times)
            print(f"  {name:28s} items={len(result.affected_items):4d} "
                  f"total={result.total_affected_items:6d}  p50 {p50 * 1e3:7.2f} ms"
                  f"  p99 {p99 * 1e3:7.2f} ms")
        db.stopService()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
