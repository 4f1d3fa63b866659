"""CPU seconds per node and per phase of the scale scenario, on a small bed.

``python -m bench.scale_cpu [--workers 3] [--agents 200000] [--runs 1]``

The 100-worker bed saturates a 2-core box, so its wall-clock figures follow the CPU each node
needs. This bench runs the bed's own code paths (``bench/testbed``: real ``twistd`` nodes in
network namespaces, or on 127.0.0.x) with one master and a few workers, and reads every node's
CPU time (``/proc/PID/stat``, user + system, all threads) at the end of each phase, after the
nodes have gone quiet, so each phase's figure holds all the work it caused:

* ``startup``: workers spawned until the master lists them all (imports, config, TLS, hello);
* ``keys``: a ``client.keys`` of N agents written on the master until every worker's database
  holds them (master reconcile, integrity sync of the file, worker reconcile, and the agent-info
  and agent-groups rounds that follow);
* ``hold``: 60 s in which nothing changes, every node holding all the agents (the periodic
  integrity, agent-info and agent-groups rounds and liveness of a cluster at rest);
* ``rules``: 10 rule-file changes pushed to every worker;
* ``keepalives``: each worker records keepalives of its share of the agents until the master
  sees all of them active (worker agent-info send, master ingest).

CPU seconds survive a loaded box far better than durations; the figures printed are per
worker (mean of the workers) and for the master, with the master's RSS at the end of each phase
and the load average at the start. Compare two commits by running this with each checkout's
code on ``PYTHONPATH`` in turn (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from bench.testbed import scenarios
from bench.testbed.cluster import BedCluster, Node, write_client_keys
from bench.testbed.net import make_bed

PHASES = ("startup", "keys", "hold", "rules", "keepalives")
#: seconds of the ``hold`` phase: nothing changes, every node holds all the agents
HOLD = 60.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(node: Node) -> float:
    """User + system CPU seconds of the node's process (every thread)."""
    assert node.pid is not None
    with open(f"/proc/{node.pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(node: Node, field: str = "VmRSS") -> float:
    """The node's RSS (``VmRSS``) or its peak so far (``VmHWM``), in MB."""
    assert node.pid is not None
    with open(f"/proc/{node.pid}/status", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    return kib / 1024


class Profiles:
    """py-spy of the master and the first worker, one flame file per phase (``--profile``)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, phase: str, nodes: list[Node]) -> None:
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        for node in nodes:
            out = os.path.join(self.directory, f"{phase}-{node.name}.txt")
            self.running.append(subprocess.Popen(
                [spy, "record", "--pid", str(node.pid), "--rate", "200", "--format", "raw",
                 "--threads", "--nonblocking", "--output", out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for spy in self.running:
            spy.send_signal(signal.SIGINT)
        for spy in self.running:
            spy.wait(30)
        self.running = []


async def settle(c: BedCluster, quiet: float = 0.05, timeout: float = 60.0) -> None:
    """Wait until the nodes together use less than ``quiet`` of a core over 2 s."""
    deadline = time.monotonic() + timeout
    before = sum(cpu_seconds(n) for n in c.nodes.values())
    while time.monotonic() < deadline:
        await c.sleep(2.0)
        now = sum(cpu_seconds(n) for n in c.nodes.values())
        if now - before < 2.0 * quiet:
            return
        before = now


async def one_run(reactor: Any, workers: int, agents: int, loopback: bool,
                  profile: str | None = None) -> dict[str, Any]:
    bed = make_bed(prefer_netns=not loopback)
    base = tempfile.mkdtemp(prefix="wzc-scalecpu-", dir="/tmp")
    c = BedCluster(reactor, bed, base)
    names = [f"w{i}" for i in range(1, workers + 1)]
    cpu: dict[str, dict[str, float]] = {}
    rss: dict[str, float] = {}
    peak: dict[str, float] = {}
    spies = Profiles(profile)
    load = os.getloadavg()[0]
    try:
        bed.create(["master", *names])
        master = c.add("master", "master")
        c.start(master)
        await c.wait("the master's local socket", lambda: c.node_names(master), 60.0)
        await settle(c)
        mark = {"master": cpu_seconds(master)}

        def phase(name: str) -> None:
            cpu[name] = {}
            for node in c.nodes.values():
                now = cpu_seconds(node)
                cpu[name][node.name] = now - mark.get(node.name, 0.0)
                mark[node.name] = now
            rss[name] = rss_mb(master)
            peak[name] = rss_mb(master, "VmHWM")

        for name in names:
            c.add(name, "worker")
        for name in names:
            c.start(c.nodes[name])
        spies.start("startup", [master, c.nodes[names[0]]])
        expected = {"master", *names}

        async def joined() -> bool:
            return await c.node_names(master) == expected
        await c.wait("workers to join", joined, 120.0, poll=0.5)
        await settle(c)
        spies.stop()
        phase("startup")
        spies.start("keys", [master, c.nodes[names[0]]])

        ids = write_client_keys(os.path.join(master.home, "etc", "client.keys"), agents)
        await scenarios.wait_agents(c, master, agents, 300.0)
        for name in names:
            await scenarios.wait_agents(c, c.nodes[name], agents, 300.0)
        await settle(c)
        spies.stop()
        phase("keys")
        spies.start("hold", [master, c.nodes[names[0]]])

        await c.sleep(HOLD)
        spies.stop()
        phase("hold")
        spies.start("rules", [master, c.nodes[names[0]]])

        for i in range(10):
            await scenarios.propagate_rule(c, names, i)
        await settle(c)
        spies.stop()
        phase("rules")
        spies.start("keepalives", [master, c.nodes[names[0]]])

        share = {name: ids[i::workers] for i, name in enumerate(names)}
        for name in names:
            await c.keepalive(c.nodes[name], share[name])

        async def all_active() -> bool:
            try:
                return (await c.agent_counts(master))["active"] >= len(ids)
            except Exception:  # noqa: BLE001 -- a busy master's DAPI timeout: ask again
                return False
        await c.wait("all agents active on the master", all_active, 300.0, poll=1.0)
        await settle(c)
        spies.stop()
        phase("keepalives")
        errors = sum(len(lines) for lines in c.error_lines().values())
    finally:
        spies.stop()
        await c.stop_all()
        bed.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return {"cpu": cpu, "rss": rss, "peak": peak, "load": load, "errors": errors, "names": names}


def report(run: dict[str, Any]) -> None:
    names = run["names"]
    print(f"load average at start {run['load']:.2f}; ERROR lines {run['errors']}")
    print(f"{'phase':12} {'worker CPU s (mean)':>20} {'worker max':>11} {'master CPU s':>13}"
          f" {'master/worker':>14} {'master RSS MB':>14} {'peak':>6}")
    totals = [0.0, 0.0]
    for phase in PHASES:
        per = run["cpu"][phase]
        workers = [per[n] for n in names]
        mean = sum(workers) / len(workers)
        totals[0] += mean
        totals[1] += per["master"]
        print(f"{phase:12} {mean:20.2f} {max(workers):11.2f} {per['master']:13.2f}"
              f" {per['master'] / len(names):14.2f} {run['rss'][phase]:14.1f}"
              f" {run['peak'][phase]:6.1f}")
    print(f"{'total':12} {totals[0]:20.2f} {'':11} {totals[1]:13.2f}")


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_cpu", description=__doc__)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--agents", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--loopback", action="store_true")
    parser.add_argument("--profile", default=None,
                        help="directory for py-spy profiles (raw stacks) of the master and w1")
    args = parser.parse_args(argv)
    import wazuhcluster
    print(f"code: {os.path.dirname(wazuhcluster.__file__)}; {args.workers} workers, "
          f"{args.agents} agents", flush=True)
    for _ in range(args.runs):
        report(await one_run(reactor, args.workers, args.agents, args.loopback,
                            args.profile))


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
