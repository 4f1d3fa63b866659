"""Benchmark: agent-info sync of 50 000 agents through the real code path, and the master's
resident memory with 50 000 agents known.

1. In one process, a worker node and a master node (real ``AgentsWorker`` / ``AgentsMaster``,
   real ``ClusterProtocol`` pair with Fernet encryption, connected in memory by iosim, real
   SQLite databases run inline) sync 50 000 agents, three times in the compact rows form our
   nodes negotiate and three times in the Wazuh 4.7.5 form (what a real Wazuh master gets).
   Two times per run: from the worker's read to the master's commit (the issue's measure),
   and on to the worker having marked the rows synced after ``syn_m_a_e``. The floor is plain
   ``sqlite3`` writing the same rows (same columns, same UPDATE, ``executemany``, one
   transaction) into a copy of the master's database taken just before the sync, in the same
   run. A fourth, instrumented run of each form gives the time per phase.
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
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sqlite_floor import agent_info_rows, floor_seconds
from verdict import best_median, record

from tests.agents.memory import NOW, AgentsCluster, keys, raw
from wazuhcluster.agents import db as db_module
from wazuhcluster.agents import master_side, worker_side
from wazuhcluster.agents.db import AgentDatabase, Keepalive
from wazuhcluster.homes import make_home
from wazuhcluster.protocol.crypto import FernetCodec


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


#: Functions timed for the phase breakdown (a separate, instrumented run).
PHASES: tuple[tuple[Any, str, str], ...] = (
    (AgentDatabase, "get_agent_info_sync", "worker: DB read + JSON build"),
    (worker_side, "encode_agent_info_string", "worker: long string build"),
    (worker_side, "encode_agent_info_rows_string", "worker: long string build"),
    (worker_side, "encode_agent_info_rows_zlib", "worker: long string build (+ deflate)"),
    (FernetCodec, "encrypt", "Fernet encrypt (both ways)"),
    (FernetCodec, "decrypt", "Fernet decrypt (both ways)"),
    (master_side, "decode_agent_info_string", "master: long string parse (+ inflate)"),
    (db_module, "decode_agent_info_params", "master: chunk parse + validation"),
    (db_module, "decode_agent_info_rows", "master: chunk parse + validation"),
    (AgentDatabase, "set_agent_info", "master: set_agent_info (incl. validation, commit)"),
    (AgentDatabase, "mark_agent_info_synced", "worker: mark synced"),
)


def instrument(acc: dict[str, float]) -> Callable[[], None]:
    """Wrap the functions of :data:`PHASES` to add their wall time to ``acc``; returns undo."""
    undo = []
    for owner, name, label in PHASES:
        original = getattr(owner, name)

        def timed(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                acc[_label] = acc.get(_label, 0.0) + time.perf_counter() - t
        setattr(owner, name, timed)
        undo.append((owner, name, original))

    def restore() -> None:
        for owner, name, original in undo:
            setattr(owner, name, original)
    return restore


def one_sync(count: int, rows_format: bool, phases: bool = False) -> dict[str, float]:
    """One agent-info sync of ``count`` agents and its floor; figures in seconds."""
    base = tempfile.mkdtemp(prefix="wzb", dir="/tmp")
    try:
        c = AgentsCluster(base, agents=count)
        assert c.wagents.rows_format, "our master announces agent-info-rows"
        c.wagents.rows_format = rows_format  # False: what a real Wazuh 4.7.5 master gets
        fill_worker(c, count)
        # The floor starts from the master's database as the sync finds it.
        floor_path = os.path.join(base, "floor.db")
        floor_conn = sqlite3.connect(floor_path, isolation_level=None)
        raw(c.mdb)._conn.backup(floor_conn)
        floor_conn.close()

        committed: list[float] = []
        set_info = c.mdb.set_agent_info

        def note(result: Any) -> Any:
            committed.append(time.perf_counter())
            return result

        def set_and_note(chunks: Any) -> Any:
            return set_info(chunks).addCallback(note)
        c.mdb.set_agent_info = set_and_note  # type: ignore[method-assign]
        acc: dict[str, float] = {}
        undo = instrument(acc) if phases else lambda: None
        try:
            start = time.perf_counter()
            d = Deferred.fromCoroutine(c.wagents.sync_agent_info())
            c.flush(10)
            end = time.perf_counter()
        finally:
            undo()
        assert d.called and c.wagents.synced_rounds == 1, "the sync did not complete"
        assert c.pending_on_worker() == []
        last = raw(c.mdb).agent_row(count)
        assert last is not None and last["node_name"] == "worker1"
        [commit] = committed

        rows = agent_info_rows(raw(c.wdb)._conn)
        c.close()
        floor = floor_seconds(floor_path, rows)
        return {"commit": commit - start, "marked": end - start, "floor": floor, **acc}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def sync_figures(count: int, runs: int = 3) -> None:
    """Time agent-info syncs of ``count`` agents (both wire forms) against their floor."""
    print(f"agents: {count}")
    for rows_format, form in ((True, "compact rows form (our master)"),
                              (False, "Wazuh 4.7.5 form (as to a real Wazuh master)")):
        print(f"agent-info sync, {form}:")
        commits: list[float] = []
        ratios: list[float] = []
        for run in range(1, runs + 1):
            f = one_sync(count, rows_format)
            commits.append(f["commit"])
            ratios.append(f["commit"] / f["floor"])
            print(f"  run {run}: worker read -> master commit {f['commit']:.3f} s"
                  f" ({f['commit'] / f['floor']:.2f}x floor); -> worker marked synced"
                  f" {f['marked']:.3f} s ({f['marked'] / f['floor']:.2f}x);"
                  f" floor (plain sqlite3 executemany, one transaction) {f['floor']:.3f} s")
        short = "compact form" if rows_format else "Wazuh 4.7.5 form"
        if not rows_format:
            low, mid = best_median(commits)
            record("agents", f"agent-info {count}, {short}: read -> master commit", low, mid,
                   "s", "< 1 s", mid < 1.0)
        low, mid = best_median(ratios)
        limit = 1.5 if rows_format else 2.5
        record("agents", f"agent-info {count}, {short} / sqlite3 floor", low, mid, "x",
               f"<= {limit}", mid <= limit)
        f = one_sync(count, rows_format, phases=True)
        print(f"  breakdown (instrumented run: commit {f['commit']:.3f} s,"
              f" marked {f['marked']:.3f} s):")
        timed = 0.0
        for label in dict.fromkeys(label for _, _, label in PHASES):
            if label in f:
                print(f"    {label:52s} {f[label]:.3f} s")
                if not label.startswith("master: chunk"):
                    timed += f[label]
        print(f"    {'rest (framing, dispatch, iosim, syn_m_a_e)':52s}"
              f" {f['marked'] - timed:.3f} s")


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
