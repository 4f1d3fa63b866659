"""Benchmark: agent-info sync of 50 000 agents through the real code path, and the master's
resident memory with 50 000 agents known.

1. In one process, a worker node and a master node (real ``AgentsWorker`` / ``AgentsMaster``,
   real ``ClusterProtocol`` pair with Fernet encryption, connected in memory by iosim, real
   SQLite databases run inline) sync 50 000 agents: the timer covers the worker's read, the
   long string, the transfer, the master's decode and commit, ``syn_m_a_e`` and the worker's
   marking. The floor is plain ``sqlite3`` writing the same rows (same UPDATE) with
   ``executemany`` in one transaction, measured in the same run.
2. A real ``twistd wazuhcluster`` master whose ``client.keys`` lists 50 000 agents: VmRSS from
   ``/proc`` once it has reconciled them, and after it answered a full listing.

Run: ``.venv/bin/python bench/agents.py [agents]``
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from twisted.internet.defer import Deferred

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.agents.memory import NOW, AgentsCluster, keys, raw
from wazuhcluster.agents.db import Keepalive
from wazuhcluster.agents.schema import AGENT_INFO_SET_COLUMNS
from wazuhcluster.homes import make_home


def fill_worker(c: AgentsCluster, count: int) -> None:
    """Realistic agent-info (like the captured session) for every agent, marked for sync."""
    conn = raw(c.wdb)._conn
    conn.execute("BEGIN")
    conn.executemany(
        "UPDATE agent SET ip = ?, os_major = '22', os_minor = '04', os_platform = 'ubuntu',"
        " os_uname = 'Linux |agent |5.15.0 |x86_64', os_arch = 'x86_64',"
        " config_sum = 'ab73af41699f13fdd81903b5f23d8d00',"
        " merged_sum = 'fd756ba04d9c32c8848d4608bec41251', manager_host = 'worker-1-host',"
        " group_config_status = 'synced' WHERE id = ?",
        [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i) for i in range(1, count + 1)])
    conn.execute("COMMIT")
    raw(c.wdb).record_keepalives([Keepalive(i, "worker1", NOW, "Ubuntu", "22.04.3 LTS",
                                            "Wazuh v4.7.5") for i in range(1, count + 1)])


def sync_figures(count: int) -> None:
    """Time one agent-info sync of ``count`` agents and the sqlite3 floor."""
    base = tempfile.mkdtemp(prefix="wzb", dir="/tmp")
    try:
        c = AgentsCluster(base, agents=count)
        fill_worker(c, count)
        start = time.perf_counter()
        d = Deferred.fromCoroutine(c.wagents.sync_agent_info())
        c.flush(10)
        ours = time.perf_counter() - start
        assert d.called and c.wagents.synced_rounds == 1, "the sync did not complete"
        assert c.pending_on_worker() == []
        assert raw(c.mdb).agent_row(count)["node_name"] == "worker1"

        columns = ("id", *AGENT_INFO_SET_COLUMNS)
        rows = [tuple(r) for r in raw(c.wdb)._conn.execute(
            f"SELECT {', '.join(columns)} FROM agent WHERE id > 0 ORDER BY id")]
        c.close()
        floor_path = os.path.join(base, "floor.db")
        shutil.copy(os.path.join(c.master.config.home, "queue", "db", "global.db"), floor_path)
        conn = sqlite3.connect(floor_path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = ("UPDATE agent SET " + ", ".join(f"{col} = ?" for col in AGENT_INFO_SET_COLUMNS)
               + ", sync_status = 'synced' WHERE id = ?")
        params = [(*r[1:], r[0]) for r in rows]
        f_start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sql, params)
        conn.execute("COMMIT")
        floor = time.perf_counter() - f_start
        conn.close()
        print(f"agents: {count}")
        print(f"agent-info sync, worker read -> master commit -> worker marked: {ours:.3f} s")
        print(f"floor (plain sqlite3 executemany, one transaction): {floor:.3f} s")
        print(f"ratio: {ours / floor:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_figures(count: int) -> None:
    """VmRSS of a real master process with ``count`` agents in client.keys."""
    base = tempfile.mkdtemp(prefix="wzb", dir="/tmp")
    bin_dir = os.path.dirname(sys.executable)
    home = make_home(os.path.join(base, "m"), node_name="master", node_type="master",
                     key="abcdefghijklmnopqrstuvwxyz012345", port=15000 + os.getpid() % 5000)
    with open(os.path.join(home, "etc", "client.keys"), "w") as f:
        f.writelines(f"{e.agent_id:03d} {e.name} any {e.key}\n" for e in keys(count))
    process = subprocess.Popen(
        [os.path.join(bin_dir, "twistd"), "-n", "--pidfile=", "wazuhcluster", "--role",
         "master", "--home", home], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = os.path.join(home, "logs", "cluster.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(log):
                with open(log) as f:
                    if f"{count} agents added" in f.read():
                        break
            time.sleep(0.2)
        else:
            raise RuntimeError("the master did not reconcile client.keys in time")
        time.sleep(1)
        idle = rss_kib(process.pid)
        out = subprocess.run([os.path.join(bin_dir, "wazuhcluster-agents"), "--home", home,
                              "list", "--json"], capture_output=True, check=True).stdout
        listed = len(json.loads(out))
        after = rss_kib(process.pid)
        print(f"master process with {count} agents known: VmRSS {idle / 1024:.1f} MiB;"
              f" after answering a listing of {listed} agents: {after / 1024:.1f} MiB")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)


def main(count: int = 50_000) -> None:
    """Run both measurements."""
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs,"
          f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    sync_figures(count)
    memory_figures(count)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
