"""REST API benchmark: the API layer in-process, then real processes (a master and 10 workers
on 127.0.0.1).

Run with ``.venv/bin/python bench/api.py`` (``--no-processes`` for the first part only). It
prints figures only; nothing is asserted.

Part A, in this process: one master home with 50 000 agents in its agent database (threaded
SQLite, as a node runs it), the API service on 127.0.0.1 with the native framework functions
run in-process (no cluster hop): ``GET /agents?limit=500`` with 1 and 20 clients, and as the
floor the same ``wazuh.agent.get_agents`` call without HTTP.

Part B, real processes:

* The master's client.keys holds 50 000 agents (the workers have the same file).
* ``GET /agents?limit=500`` and ``GET /cluster/healthcheck``, asked at the master and at a
  worker (which runs both through the Distributed API on the master), with 1 and with 20
  concurrent treq clients (persistent HTTPS connections, one token per node): p50 and p99
  latency and requests per second.
* The floor: the same framework function through the node's DAPI without HTTP, by a local
  client on the node's local socket (``dapi`` command), 1 client.
* Meanwhile a probe "worker" on the master's cluster port, in its own process
  (``bench/probe.py``: this process's clients do not delay it), sends a keepalive (``echo-c``)
  every 10 ms: p50 and worst round trip per phase and the worst over the whole run.
* At the end, the issue's targets with a verdict each.

api.yaml of every node sets ``access.max_request_per_minute: 0`` (no request limit).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.probe import ProbeProcess
from wazuhcluster.agents.db import database_path
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.agents.threaded import ThreadedAgentDatabase
from wazuhcluster.api.config import load_api_config
from wazuhcluster.api.functions import register_functions
from wazuhcluster.api.service import APIService
from wazuhcluster.api.users import UserStore
from wazuhcluster.checksums.threaded import ThreadedRunner
from wazuhcluster.config import load_config
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions import ALL_FUNCTIONS
from wazuhcluster.homes import make_home
from wazuhcluster.interfaces import IDistributedAPI

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
KEY = "abcdefghijklmnopqrstuvwxyz012345"
ADMIN = ("bench", "B3nch-pass!")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_until(what: str, predicate: Callable[[], Awaitable[bool] | bool],
                     timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Node(ProcessProtocol):
    def __init__(self, name: str, role: str, home: str, api_port: int) -> None:
        self.name, self.role, self.home, self.api_port = name, role, home, api_port
        self.ended: Deferred[None] = Deferred()

    def start(self) -> Node:
        reactor.spawnProcess(self, TWISTD, [TWISTD, "-n", "--pidfile=", "wazuhcluster", "--role",
                                            self.role, "--home", self.home],
                             env=dict(os.environ), path=self.home,
                             childFDs={0: "w", 1: "r", 2: "r"})
        return self

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    def log(self) -> str:
        try:
            with open(os.path.join(self.home, "logs", "cluster.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    async def stop(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess(signal.SIGTERM)
            await self.ended


@implementer(IPolicyForHTTPS)
class TrustOne:
    def __init__(self, pem: bytes) -> None:
        self._cert = Certificate.loadPEM(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode(), trustRoot=self._cert)


class Client:
    """A treq client of one node with a pool of persistent connections."""

    def __init__(self, node: Node) -> None:
        with open(os.path.join(node.home, "api", "configuration", "ssl", "server.crt"),
                  "rb") as f:
            pem = f.read()
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        self.http = HTTPClient(Agent(reactor, contextFactory=TrustOne(pem), pool=self.pool))
        self.base = f"https://127.0.0.1:{node.api_port}"
        self.token = ""

    async def login(self) -> None:
        auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        r = await self.http.post(self.base + "/security/user/authenticate?raw=true",
                                 headers={"Authorization": f"Basic {auth}"})
        self.token = (await treq.text_content(r)).strip()
        if r.code != 200:
            raise RuntimeError(f"login failed: {r.code} {self.token}")

    async def get(self, path: str) -> Any:
        r = await self.http.get(self.base + path,
                                headers={"Authorization": f"Bearer {self.token}"})
        body = await treq.content(r)
        if r.code != 200:
            raise RuntimeError(f"GET {path}: {r.code} {body[:300]!r}")
        return body


#: CPU seconds per call of this process (all its threads) during the last :func:`measure`.
LAST_CPU = [0.0]


async def measure(call: Callable[[], Awaitable[Any]], clients: int,
                  total: int) -> tuple[float, float, float]:
    """(p50 s, p99 s, requests/s) of ``total`` calls made by ``clients`` concurrent loops."""
    latencies: list[float] = []
    remaining = [total]

    async def loop() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    await call()  # warm the connection and caches
    start, cpu = time.perf_counter(), time.process_time()
    await gatherResults([Deferred.fromCoroutine(loop()) for _ in range(clients)])
    elapsed = time.perf_counter() - start
    LAST_CPU[0] = (time.process_time() - cpu) / max(1, len(latencies))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, len(latencies) / elapsed


def _getter(client: Client, path: str) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return await client.get(path)
    return call


async def dapi_floor(node: Node, function: str, f_kwargs: dict[str, Any],
                     request_type: str) -> Callable[[], Awaitable[Any]]:
    """The same function through the node's DAPI over its local socket (no HTTP)."""
    from wazuhcluster.dapi.client import build_request, dapi_call

    socket_path = os.path.join(node.home, "queue", "cluster", "c-internal.sock")

    async def call() -> Any:
        return await dapi_call(reactor, socket_path,
                               build_request(function, f_kwargs, request_type))
    return call


@implementer(IDistributedAPI)
class InProcessDAPI:
    """Runs registered functions in this process (part A: the API layer without the cluster)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.functions: dict[str, Any] = {}

    def register(self, function: str, implementation: Any) -> None:
        self.functions[function] = implementation

    def call(self, function: str, f_kwargs: Any = None, request_type: str = "local_master",
             **caller: Any) -> Deferred[Any]:
        ctx = DapiContext.for_node(self.node, current_user=caller.get("current_user", ""))
        return Deferred.fromCoroutine(self.functions[function](ctx, **dict(f_kwargs or {})))


class _LocalNode:
    def __init__(self, config: Any, db: Any, runner: Any) -> None:
        self.config = config
        self.agent_db = db
        self.clock = reactor
        self.runner = runner
        self.dapi: InProcessDAPI | None = None

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self.runner.run(f, *args, **kwargs)  # type: ignore[no-any-return]


async def in_process(args: argparse.Namespace) -> None:
    base = tempfile.mkdtemp(prefix="wzc-bench-api-a-", dir="/tmp")
    services: list[Any] = []
    try:
        api_port = free_port()
        home = make_home(os.path.join(base, "master"), node_name="master", node_type="master",
                         key=KEY, port=free_port(), api_port=api_port,
                         metrics_port=free_port())
        with open(os.path.join(home, "api", "configuration", "api.yaml"), "a") as f:
            f.write("access:\n  max_request_per_minute: 0\n")
        config = load_config(home)
        runner = ThreadedRunner(reactor, max_threads=2)
        runner.startService()
        services.append(runner)
        db = ThreadedAgentDatabase(reactor, reactor, database_path(home))
        db.startService()
        services.append(db)
        entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}")
                   for i in range(1, args.agents + 1)]
        await db.reconcile_keys(entries, int(time.time()))
        node = _LocalNode(config, db, runner)
        node.dapi = InProcessDAPI(node)
        for name, f in ALL_FUNCTIONS.items():
            node.dapi.register(name, f)
        register_functions(node.dapi)
        UserStore(home).add(*ADMIN, role="administrator")
        service = APIService(load_api_config(home), reactor, node)
        service.startService()
        services.append(service)
        await service.listening
        client = Client(Node("master", "master", home, api_port))
        await client.login()
        print(f"A. API layer in-process: {args.agents} agents, 1 node, no cluster hop")
        for clients, total in ((1, args.requests), (20, args.requests * 3)):
            p50, p99, rate = await measure(_getter(client, "/agents?limit=500"), clients, total)
            print(f"  GET /agents?limit=500  {clients:2} client(s): p50 {p50 * 1000:7.1f} ms  "
                  f"p99 {p99 * 1000:7.1f} ms  {rate:6.1f} req/s  ({total} requests)  CPU "
                  f"{LAST_CPU[0] * 1000:.1f} ms/request (this process: API and clients)")

        async def floor() -> Any:
            return await node.dapi.call("wazuh.agent.get_agents",  # type: ignore[union-attr]
                                        {"limit": 500, "offset": 0})
        p50, p99, rate = await measure(floor, 1, args.requests)
        print(f"  floor: wazuh.agent.get_agents(limit=500) without HTTP: p50 "
              f"{p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  {rate:6.1f} calls/s  CPU "
              f"{LAST_CPU[0] * 1000:.1f} ms/call")
        await client.pool.closeCachedConnections()
    finally:
        for s in reversed(services):
            stopped = s.stopService()
            if stopped is not None:
                await stopped
        shutil.rmtree(base, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    await in_process(args)
    if args.no_processes:
        return
    base = tempfile.mkdtemp(prefix="wzc-bench-api-", dir="/tmp")
    port = free_port()
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, args.agents + 1)]
    keys = format_client_keys(entries)
    nodes: list[Node] = []
    probe: ProbeProcess | None = None
    try:
        names = [("master", "master")] + [(f"worker{i}", "worker")
                                          for i in range(1, args.workers + 1)]
        for name, role in names:
            api_port = free_port()
            home = make_home(os.path.join(base, name), node_name=name, node_type=role,
                             key=KEY, port=port, api_port=api_port,
                             metrics_port=free_port())
            with open(os.path.join(home, "api", "configuration", "api.yaml"), "a") as f:
                f.write("access:\n  max_request_per_minute: 0\n")
            with open(os.path.join(home, "etc", "client.keys"), "w") as f:
                f.write(keys)
            nodes.append(Node(name, role, home, api_port))
        master, workers = nodes[0], nodes[1:]
        UserStore(master.home).add(*ADMIN, role="administrator")
        master.start()
        await wait_until("the master's API", lambda: "[API] [Main] Listening" in master.log(),
                         60)
        for w in workers:
            w.start()
        await wait_until("every worker to connect", lambda: all(
            "Successfully connected to master" in w.log() for w in workers), 120)
        await wait_until("the workers' APIs", lambda: all(
            "[API] [Main] Listening" in w.log() for w in workers), 60)
        probe = ProbeProcess(port, KEY, 0.01)
        at = {"master": Client(master), "worker1": Client(workers[0])}
        for c in at.values():
            await c.login()

        async def all_agents() -> bool:
            body = json.loads(await at["master"].get("/agents?limit=1&select=id"))
            return bool(int(body["data"]["total_affected_items"]) > args.agents)
        await wait_until(f"the master's {args.agents} agents", all_agents, 120)
        print(f"wazuhcluster REST API: master + {args.workers} workers on 127.0.0.1, "
              f"{args.agents} agents; {os.cpu_count()} CPUs; Python "
              f"{sys.version.split()[0]}")
        probe.take()
        figures: dict[tuple[str, str, int], tuple[float, float, float]] = {}
        worst_rtt, worst_late, rtt_n, rtt_p50s = 0.0, 0.0, 0, []
        for path, function, request_type, kwargs in (
                ("/agents?limit=500", "wazuh.agent.get_agents", "local_master",
                 {"limit": 500, "offset": 0}),
                ("/cluster/healthcheck", "wazuh.cluster.get_health_nodes", "local_master", {})):
            for where, client in at.items():
                for clients, total in ((1, args.requests), (20, args.requests * 3)):
                    pids = {"master": master.transport.pid, "worker1": workers[0].transport.pid,
                            "bench": os.getpid()}
                    before = {k: cpu_seconds(v) for k, v in pids.items()}
                    p50, p99, rate = await measure(_getter(client, path), clients, total)
                    cpu = {k: (cpu_seconds(v) - before[k]) * 1000 / total
                           for k, v in pids.items()}
                    figures[(path, where, clients)] = (p50, p99, rate)
                    rtt = probe.take()
                    worst_rtt = max(worst_rtt, rtt["max"])
                    worst_late = max(worst_late, rtt["late"])
                    rtt_n += int(rtt["n"])
                    rtt_p50s.append(rtt["p50"])
                    print(f"  GET {path:22} at {where:8} {clients:2} client(s): "
                          f"p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
                          f"{rate:6.1f} req/s  ({total} requests)  keepalive RTT meanwhile "
                          f"p50 {rtt['p50']:.1f} ms, max {rtt['max']:.1f} ms (probe's own "
                          f"timer late by up to {rtt['late']:.1f} ms); CPU ms per request: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
                node = master if where == "master" else workers[0]
                floor = await dapi_floor(node, function, kwargs, request_type)
                p50, p99, rate = await measure(floor, 1, args.requests)
                rtt = probe.take()
                worst_rtt = max(worst_rtt, rtt["max"])
                worst_late = max(worst_late, rtt["late"])
                rtt_n += int(rtt["n"])
                print(f"  DAPI floor {function:30} at {where:8}  1 client : "
                      f"p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
                      f"{rate:6.1f} req/s  keepalive RTT meanwhile p50 {rtt['p50']:.1f} ms, "
                      f"max {rtt['max']:.1f} ms (probe's own timer late by up to "
                      f"{rtt['late']:.1f} ms)")
        print(f"  cluster-link keepalive round-trip during the run (probe in its own process, "
              f"every 10 ms): worst {worst_rtt:.1f} ms, p50 per phase "
              f"{min(rtt_p50s):.1f}-{max(rtt_p50s):.1f} ms ({rtt_n} probes); the probe's own "
              f"timer was late by up to {worst_late:.1f} ms (CPU wait of the probe process)")
        print("targets (issue 10):")
        checks = []
        for path in ("/agents?limit=500", "/cluster/healthcheck"):
            p50 = figures[(path, "worker1", 1)][0] * 1000
            checks.append((f"GET {path} p50 at a worker {p50:.1f} ms < 50 ms", p50 < 50))
            for where in ("worker1", "master"):
                rate = figures[(path, where, 20)][2]
                checks.append((f"GET {path} at {where}, 20 clients: {rate:.0f} req/s >= 150",
                               rate >= 150))
        checks.append((f"keepalive RTT worst {worst_rtt:.1f} ms < 100 ms", worst_rtt < 100))
        for text, ok in checks:
            print(f"  {'MET   ' if ok else 'MISSED'} {text}")
        load = os.getloadavg()
        print(f"load average now: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        for c in at.values():
            await c.pool.closeCachedConnections()
    finally:
        if probe is not None:
            probe.stop()
        for n in nodes:
            if n.transport is not None:
                await n.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"homes kept under {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per 1-client run (x3 for 20 clients)")
    parser.add_argument("--keep", action="store_true", help="keep the node homes")
    parser.add_argument("--no-processes", action="store_true", help="part A only")
    args = parser.parse_args()
    task.react(lambda _: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
