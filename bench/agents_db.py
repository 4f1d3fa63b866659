"""Benchmark: agent-info sync of 50 000 agents into a master database.

Times the whole path from the worker's read to the master's commit (worker
``get_agent_info_sync`` -> long-string encode -> decode -> master ``set_agent_info``) against
the floor of writing the same rows with plain ``sqlite3`` ``executemany`` in one transaction,
in the same run, and prints both and their ratio. Then prints the resident memory (maximum
RSS from ``resource.getrusage``) of a fresh process that opens a 50 000 agent database and
lists its agents, and of this process.

Run: ``.venv/bin/python bench/agents_db.py [agents]``
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from sqlite_floor import agent_info_rows, floor_seconds

from wazuhcluster.agents.db import AgentDatabase, Keepalive
from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.agents.payloads import decode_agent_info_string, encode_agent_info_string

NOW = 1_700_000_000


def make_db(path: str, count: int) -> AgentDatabase:
    """A database holding ``count`` agents from client.keys entries."""
    db = AgentDatabase(path, NOW)
    db.reconcile_keys([KeyEntry(i, f"agent-{i:05d}", "any", f"{i:064x}")
                       for i in range(1, count + 1)], NOW - 1000)
    return db


def fill_worker(db: AgentDatabase, count: int) -> None:
    """Give every agent realistic agent-info (like the captured session) and mark it."""
    conn = db._conn
    conn.execute("BEGIN")
    conn.executemany(
        "UPDATE agent SET ip = ?, os_major = '22', os_minor = '04', os_platform = 'ubuntu',"
        " os_uname = 'Linux |agent |5.15.0 |x86_64', os_arch = 'x86_64',"
        " config_sum = 'ab73af41699f13fdd81903b5f23d8d00',"
        " merged_sum = 'fd756ba04d9c32c8848d4608bec41251', manager_host = 'worker-1-host',"
        " group_config_status = 'synced' WHERE id = ?",
        [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i) for i in range(1, count + 1)])
    conn.execute("COMMIT")
    db.record_keepalives([Keepalive(i, "worker-1", NOW, "Ubuntu", "22.04.3 LTS",
                                    "Wazuh v4.7.5") for i in range(1, count + 1)])


def memory_of_fresh_process(path: str, list_agents: bool) -> tuple[int, int, int]:
    """Memory (KiB) of a new interpreter that opens ``path`` (and lists the agents).

    :returns: ``(ru_maxrss, VmHWM, VmRSS)``. On Linux ``ru_maxrss`` survives ``execve`` and so
        can report the parent's peak when the parent is bigger; ``VmHWM`` (peak RSS of the
        process's own address space) does not have that problem.
    """
    code = (
        "import resource, sys\n"
        "from wazuhcluster.agents.db import AgentDatabase\n"
        "db = AgentDatabase(sys.argv[1], 0)\n"
        "n = db.count_active_agents_by_node()\n"
        "agents = db.list_agents() if sys.argv[2] == '1' else []\n"
        "st = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " st['VmHWM'].split()[0], st['VmRSS'].split()[0])\n")
    out = subprocess.run([sys.executable, "-c", code, path, "1" if list_agents else "0"],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def main(count: int = 50_000) -> None:
    """Run the benchmark and print the figures."""
    tmp = tempfile.mkdtemp(prefix="agents-bench-")
    worker = make_db(os.path.join(tmp, "worker.db"), count)
    master = make_db(os.path.join(tmp, "master.db"), count)
    floor_db = make_db(os.path.join(tmp, "floor.db"), count)
    fill_worker(worker, count)

    start = time.perf_counter()
    batch = worker.get_agent_info_sync()
    t_read = time.perf_counter()
    payload = encode_agent_info_string(batch.chunks)
    chunks = decode_agent_info_string(payload)
    t_codec = time.perf_counter()
    result = master.set_agent_info(chunks)
    end = time.perf_counter()
    assert result.updated_agents == count and not result.error_messages, result
    ours = end - start

    # Floor: the same rows, plain executemany in one transaction, same UPDATE columns.
    rows = agent_info_rows(worker._conn)
    floor_db.close()
    floor = floor_seconds(os.path.join(tmp, "floor.db"), rows)

    print(f"agents: {count}, chunks: {len(batch.chunks)}, long string: {len(payload)} bytes")
    print(f"agent-info sync (worker read -> encode -> decode -> master commit): {ours:.3f} s")
    print(f"  worker read {t_read - start:.3f} s, encode+decode {t_codec - t_read:.3f} s,"
          f" master set {end - t_codec:.3f} s")
    print(f"floor (plain sqlite3 executemany, one transaction): {floor:.3f} s")
    print(f"ratio: {ours / floor:.1f}x")
    worker.close()
    master.close()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for listed in (False, True):
        maxrss, hwm, rss = memory_of_fresh_process(os.path.join(tmp, "master.db"), listed)
        what = "opening and listing all agents" if listed else "opening it, counting by node"
        print(f"fresh process holding the {count} agent DB ({what}): peak RSS (VmHWM)"
              f" {hwm / 1024:.1f} MiB, RSS {rss / 1024:.1f} MiB,"
              f" getrusage ru_maxrss {maxrss / 1024:.1f} MiB")
    print(f"this benchmark process: getrusage ru_maxrss {own / 1024:.1f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
