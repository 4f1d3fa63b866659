"""Does watching the cluster cost the cluster? Keepalive RTT and integrity sync time with and
without a Prometheus scraper and an open status page.

Run with ``.venv/bin/python bench/ui_metrics.py``. It prints figures and a verdict against
the target (< 5 % change); nothing is asserted.

Real processes on 127.0.0.1: a master and two workers (``--agents`` agents in client.keys).
The phases alternate, ``--rounds`` times each, in the order off-on, on-off, off-on, ... (so
that neither kind always comes first after the other, and the machine's load hits both alike):

* **off**: nobody looks at the cluster.
* **on**: every second, ``GET /metrics`` of each of the three nodes (a Prometheus scraping
  them at a 1 s interval), and ``GET /ui`` of the master every 10 s with a bearer token (a
  browser keeping the page open: the page reloads itself every 10 s), from a process of its
  own (as Prometheus and a browser are; in the probe's process its own work would delay the
  probe's timestamps).

In each phase, for ``--seconds`` seconds, a probe "worker" connection on the master's
cluster port (``bench/probe.py``, a process of its own, a fresh one per phase) sends a
keepalive (``echo-c``) every ``--probe-interval`` (5 ms): some 4 000 round trips a phase. The
keepalive RTT figures are the p50 and p99 of all the round trips of one kind of phase pooled
(``--rounds`` 5: some 20 000, so the p99 rests on some 200 round trips above it); the noise
floor printed next to them is the same percentile compared between two sets of *off* phases
(the even rounds' against the odd rounds'): a change smaller than it is not resolved.
Then, ``--batches`` times, ``--files`` new files of 2 KiB are written on the master; the time
until both workers hold all of them and the master's own "[Integrity sync] Finished in"
durations are the sync figures (medians). The CPU the node processes used while probing is
read from /proc.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import treq
from treq.client import HTTPClient
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.web.client import Agent, HTTPConnectionPool

from bench.api import ADMIN, KEY, Client, Node, free_port, sleep, wait_until
from bench.probe import ProbeProcess
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.api.users import UserStore
from wazuhcluster.homes import make_home

TARGET = 0.05
TUNABLES = ('{"intervals": {"worker": {"sync_integrity": 2, "sync_agent_info": 2}, '
            '"master": {"recalculate_integrity": 2}}}')
FINISHED = re.compile(r"\[Worker (\S+)\] \[Integrity sync\] Finished in ([0-9.]+)s")


class TunedNode(Node):
    """A node started with short sync intervals (``--cluster-json``)."""

    def start(self) -> TunedNode:
        from bench.api import TWISTD
        args = [TWISTD, "-n", "--pidfile=", "wazuhcluster", "--role", self.role, "--home",
                self.home, "--cluster-json", os.path.join(self.home, "etc", "tunables.json")]
        reactor.spawnProcess(self, TWISTD, args, env=dict(os.environ), path=self.home,
                             childFDs={0: "w", 1: "r", 2: "r"})
        return self


class Watcher:
    """The "on" load: /metrics of every node each second, /ui of the master every 10 s."""

    def __init__(self, metrics_ports: list[int], ui: Client) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.ports = metrics_ports
        self.ui = ui
        self.scrape_times: list[float] = []
        self.ui_times: list[float] = []
        self.scrape_loop = task.LoopingCall(self._scrape)
        self.ui_loop = task.LoopingCall(self._page)

    async def _scrape_all(self) -> None:
        for port in self.ports:
            start = time.perf_counter()
            r = await self.http.get(f"http://127.0.0.1:{port}/metrics")
            body = await treq.content(r)
            if r.code != 200 or b"wazuhcluster_link_frames_total" not in body:
                raise RuntimeError(f"scrape of :{port} failed: {r.code}")
            self.scrape_times.append(time.perf_counter() - start)

    def _scrape(self) -> Any:
        return Deferred.fromCoroutine(self._scrape_all())

    async def _page_once(self) -> None:
        start = time.perf_counter()
        body = await self.ui.get("/ui")
        if b'id="sync-chart"' not in body:
            raise RuntimeError("the status page did not render")
        self.ui_times.append(time.perf_counter() - start)

    def _page(self) -> Any:
        return Deferred.fromCoroutine(self._page_once())

    def start(self) -> None:
        self.scrape_loop.start(1.0)
        self.ui_loop.start(10.0)

    def stop(self) -> None:
        for loop in (self.scrape_loop, self.ui_loop):
            if loop.running:
                loop.stop()


async def watch(args: argparse.Namespace) -> None:
    """``--watch``: the watcher in a process of its own (as a Prometheus and a browser are),
    until stdin closes; then one JSON line with the scrape and page times."""
    import json

    from twisted.internet import stdio
    from twisted.internet.protocol import Protocol

    node = Node("master", "master", args.master_home, args.api_port)
    ui = Client(node)
    ui.token = args.token
    w = Watcher([int(p) for p in args.metrics_ports.split(",")], ui)
    done: Deferred[None] = Deferred()

    class Stdin(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            done.callback(None)

    stdio.StandardIO(Stdin())
    w.start()
    await done
    w.stop()
    sys.__stdout__.write(json.dumps({"scrapes": w.scrape_times, "pages": w.ui_times}) + "\n")
    sys.__stdout__.flush()


class WatcherProcess(ProcessProtocol):
    """``bench/ui_metrics.py --watch ...`` as a child process."""

    def __init__(self, master: Node, metrics_ports: list[int], token: str) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()
        self.args = [sys.executable, os.path.abspath(__file__), "--watch", "--master-home",
                     master.home, "--api-port", str(master.api_port), "--metrics-ports",
                     ",".join(map(str, metrics_ports)), "--token", token]

    def start(self) -> None:
        reactor.spawnProcess(self, sys.executable, self.args, env=dict(os.environ),
                             childFDs={0: "w", 1: "r", 2: 2})

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    async def stop(self) -> dict[str, list[float]]:
        import json

        assert self.transport is not None
        self.transport.closeStdin()
        await self.ended
        result: dict[str, list[float]] = json.loads(self.output.decode().splitlines()[-1])
        return result


def cpu_seconds(nodes: list[Node]) -> float:
    """User + system CPU seconds used so far by the node processes (/proc/PID/stat)."""
    total = 0.0
    for n in nodes:
        with open(f"/proc/{n.transport.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def count_files(home: str, directory: str) -> int:
    try:
        return len(os.listdir(os.path.join(home, "etc", "shared", directory)))
    except OSError:
        return 0


async def phase(name: str, index: int, args: argparse.Namespace,
                master: Node, workers: list[Node], watcher: WatcherProcess | None,
                seen: dict[str, list[float]]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    if watcher is not None:
        watcher.start()
    try:
        # The probe is a process of its own (bench/probe.py), a fresh one per phase.
        probe = ProbeProcess(args.port, KEY, args.probe_interval, f"probe-{name}-{index}",
                             raw=True)
        nodes = [master, *workers]
        cpu_before, wall_before = cpu_seconds(nodes), time.perf_counter()
        await sleep(args.seconds)
        rtt = probe.stop()
        cpu = (cpu_seconds(nodes) - cpu_before) / (time.perf_counter() - wall_before)
        if not rtt["n"]:
            raise RuntimeError(f"no keepalive answered in phase {name} {index}: see "
                               f"{master.home}/logs/cluster.log (run with --keep)")
        walls: list[float] = []
        durations: list[float] = []
        for batch in range(args.batches):
            directory = f"uibench-{name}-{index}-{batch}"
            log_before = len(master.log())
            target = os.path.join(master.home, "etc", "shared", directory)
            os.makedirs(target)
            start = time.perf_counter()
            for i in range(args.files):
                with open(os.path.join(target, f"f{i:05d}.conf"), "wb") as f:
                    f.write(os.urandom(1024).hex().encode())
            await wait_until(f"{args.files} files on both workers", lambda d=directory: all(
                count_files(w.home, d) >= args.files for w in workers), 300)
            walls.append(time.perf_counter() - start)
            await sleep(0.5)  # the "Finished" lines of both workers
            durations += [float(m.group(2))
                          for m in FINISHED.finditer(master.log()[log_before:])]
        # Back to the same tree for the next phase (a growing tree costs every later scan).
        # (The master may be writing the group's merged.mg meanwhile: retry until gone.)
        paths = [os.path.join(master.home, "etc", "shared", f"uibench-{name}-{index}-{b}")
                 for b in range(args.batches)]

        def removed() -> bool:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)
            return not any(os.path.exists(path) for path in paths)
        await wait_until("the batches removed on the master", removed, 60)
        await wait_until("the batches gone from both workers", lambda: not any(
            count_files(w.home, f"uibench-{name}-{index}-{b}")
            for w in workers for b in range(args.batches)), 300)
    finally:
        if watcher is not None:
            times = await watcher.stop()
            for key, values in times.items():
                seen.setdefault(key, []).extend(values)
    return {"phase": name, "rtt_p50": rtt["p50"] / 1000, "rtt_p99": rtt["p99"] / 1000,
            "probes": int(rtt["n"]), "rtts": rtt["rtts"], "load": load,
            "cpu": cpu,
            "walls": walls, "durations": durations,
            "sync_wall": statistics.median(walls),
            "sync_master": statistics.median(durations) if durations else float("nan")}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the probe's rule: index ``int(n * q)`` sorted)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def pooled(results: list[dict[str, Any]], kind: str, q: float,
           rounds: set[int] | None = None) -> tuple[float, int]:
    """The ``q`` quantile (seconds) of every round trip of the ``kind`` phases (of ``rounds``),
    and how many round trips that is."""
    rtts = [x for r in results if r["phase"] == kind and (rounds is None or r["round"] in rounds)
            for x in r["rtts"]]
    return percentile(rtts, q) / 1000, len(rtts)


def change(off: float, on: float) -> str:
    delta = (on - off) / off if off else 0.0
    verdict = "met" if delta <= TARGET else "NOT met"
    return f"{delta * 100:+.1f} % ({verdict}: target < +{TARGET * 100:.0f} %)"


async def run(args: argparse.Namespace) -> None:
    base = tempfile.mkdtemp(prefix="wzc-bench-ui-", dir="/tmp")
    port = free_port()
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, args.agents + 1)]
    nodes: list[Node] = []
    metrics_ports: list[int] = []
    try:
        for name, role in (("master", "master"), ("worker1", "worker"), ("worker2", "worker")):
            api_port, metrics_port = free_port(), free_port()
            home = make_home(os.path.join(base, name), node_name=name, node_type=role,
                             key=KEY, port=port, api_port=api_port, metrics_port=metrics_port)
            with open(os.path.join(home, "api", "configuration", "api.yaml"), "a") as f:
                f.write("access:\n  max_request_per_minute: 0\n")
            with open(os.path.join(home, "etc", "client.keys"), "w") as f:
                f.write(format_client_keys(entries))
            with open(os.path.join(home, "etc", "tunables.json"), "w") as f:
                f.write(TUNABLES)
            node = TunedNode(name, role, home, api_port)
            nodes.append(node)
            metrics_ports.append(metrics_port)
        master, workers = nodes[0], nodes[1:]
        UserStore(master.home).add(*ADMIN, role="administrator")
        for n in nodes:
            n.start()
        await wait_until("every worker to connect", lambda: all(
            "Successfully connected to master" in w.log() for w in workers), 120)
        await wait_until("the master's API", lambda: "[API] [Main] Listening" in master.log(),
                         60)
        ui = Client(master)
        await ui.login()
        args.port = port
        seen: dict[str, list[float]] = {}
        await sleep(3)  # first syncs of the agents
        results = []
        for i in range(args.rounds):
            for name in (("off", "on") if i % 2 == 0 else ("on", "off")):
                watcher = (WatcherProcess(master, metrics_ports, ui.token) if name == "on"
                           else None)
                r = await phase(name, i, args, master, workers, watcher, seen)
                r["round"] = i
                results.append(r)
                print(f"  round {i + 1} {name:3}: keepalive RTT p50 {r['rtt_p50'] * 1000:.2f} ms"
                      f" p99 {r['rtt_p99'] * 1000:.2f} ms ({r['probes']} probes), nodes' CPU "
                      f"{r['cpu'] * 100:.1f} % of a core, load {r['load']:.2f}; "
                      f"{args.files} files on both workers in {r['sync_wall']:.2f} s, master's "
                      f"integrity sync {r['sync_master']:.3f} s (medians of {args.batches})",
                      flush=True)
        load = os.getloadavg()
        print(f"\nmaster + 2 workers on 127.0.0.1, {args.agents} agents, {os.cpu_count()} CPUs,"
              f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; Python "
              f"{sys.version.split()[0]}; {args.rounds} rounds of each phase.")
        n_off = sum(r["probes"] for r in results if r["phase"] == "off")
        n_on = sum(r["probes"] for r in results if r["phase"] == "on")
        print(f"Keepalive RTT: every round trip of one kind of phase pooled ({n_off} off, "
              f"{n_on} on; a keepalive every {args.probe_interval * 1000:.0f} ms, "
              f"{args.seconds:.0f} s a phase):")
        even = set(range(0, args.rounds, 2))
        odd = set(range(1, args.rounds, 2))
        for q, label in ((0.5, "keepalive RTT p50"), (0.99, "keepalive RTT p99")):
            off, _ = pooled(results, "off", q)
            on, _ = pooled(results, "on", q)
            line = (f"  {label:42} off {off * 1000:8.3f} ms  on {on * 1000:8.3f} ms  "
                    f"change {change(off, on)}")
            if odd:
                a, na = pooled(results, "off", q, even)
                b, nb = pooled(results, "off", q, odd)
                floor = abs(a - b) / min(a, b)
                line += (f"\n  {'':42} noise floor: off phases of even rounds {a * 1000:.3f} ms"
                         f" ({na}) vs odd rounds {b * 1000:.3f} ms ({nb}): "
                         f"{floor * 100:.1f} %")
            print(line)
        threshold, _ = pooled(results, "off", 0.99)
        for kind in ("off", "on"):
            rtts = [x for r in results if r["phase"] == kind for x in r["rtts"]]
            slow = sum(1 for x in rtts if x / 1000 > threshold)
            print(f"  round trips slower than the off p99 ({threshold * 1000:.2f} ms), {kind:3}: "
                  f"{slow} of {len(rtts)} ({slow / len(rtts) * 100:.2f} %)")
        print("  per phase p99 (ms), off: " + ", ".join(
            f"{r['rtt_p99'] * 1000:.2f}" for r in results if r["phase"] == "off")
            + "; on: " + ", ".join(f"{r['rtt_p99'] * 1000:.2f}" for r in results
                                   if r["phase"] == "on"))
        print("Sync figures: medians of every batch of one kind of phase pooled:")

        def batches(key: str, kind: str, rounds: set[int] | None = None) -> list[float]:
            return [x for r in results if r["phase"] == kind
                    and (rounds is None or r["round"] in rounds) for x in r[key]]
        for key, label in (("walls", f"sync of {args.files} files to both workers"),
                           ("durations", "master's integrity sync duration")):
            off = statistics.median(batches(key, "off"))
            on = statistics.median(batches(key, "on"))
            line = (f"  {label:42} off {off:8.3f} s   on {on:8.3f} s   change {change(off, on)}"
                    f" ({len(batches(key, 'off'))} / {len(batches(key, 'on'))} values)")
            if odd:
                a = statistics.median(batches(key, "off", even))
                b = statistics.median(batches(key, "off", odd))
                line += (f"\n  {'':42} noise floor: off phases of even rounds {a:.3f} s vs odd "
                         f"rounds {b:.3f} s: {abs(a - b) / min(a, b) * 100:.1f} %")
            print(line)
        off_cpu = statistics.median(r["cpu"] for r in results if r["phase"] == "off")
        on_cpu = statistics.median(r["cpu"] for r in results if r["phase"] == "on")
        print(f"  {'CPU of the 3 node processes (% of a core)':42} off {off_cpu * 100:8.2f} %   "
              f"on {on_cpu * 100:8.2f} %   (+{(on_cpu - off_cpu) * 100:.2f} points)")
        if seen.get("scrapes"):
            s = sorted(seen["scrapes"])
            print(f"  one GET /metrics: p50 {statistics.median(s) * 1000:.2f} ms, worst "
                  f"{s[-1] * 1000:.2f} ms ({len(s)} scrapes)")
        if seen.get("pages"):
            u = sorted(seen["pages"])
            print(f"  one GET /ui (HTTPS, token): p50 {statistics.median(u) * 1000:.1f} ms, "
                  f"worst {u[-1] * 1000:.1f} ms ({len(u)} loads)")
        await ui.pool.closeCachedConnections()
    finally:
        for n in nodes:
            if n.transport is not None:
                await n.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"homes kept under {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="keepalive probing per phase")
    parser.add_argument("--probe-interval", type=float, default=0.005,
                        help="seconds between keepalives of the probe")
    parser.add_argument("--files", type=int, default=300, help="files per batch")
    parser.add_argument("--batches", type=int, default=3, help="file batches per phase")
    parser.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--master-home", help=argparse.SUPPRESS)
    parser.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-ports", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the homes")
    args = parser.parse_args()
    task.react(lambda _: Deferred.fromCoroutine(watch(args) if args.watch else run(args)))


if __name__ == "__main__":
    main()
