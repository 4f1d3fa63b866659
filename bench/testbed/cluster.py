"""Real ``twistd wazuhcluster`` nodes on the test bed, and what the scenarios ask of them.

Every node is a child process started inside its namespace (``ip netns exec``), with a home
under the run's directory. The driver talks to each node through its local Unix socket (path
sockets are not tied to a network namespace), samples RSS and CPU of every node once a second,
and waits for *conditions* (a node list, a file's hash, a count of agents) under deadlines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from wazuhcluster.agents.listing import (
    WZC_AG_KAL,
    WZC_AG_LIST,
    KeepaliveRequest,
    encode_keepalive_request,
    encode_list_request,
)
from wazuhcluster.dapi.client import build_request, dapi_call
from wazuhcluster.errors import ClusterError
from wazuhcluster.homes import cluster_block, make_home
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.commands import GET_NODES
from wazuhcluster.status.local import WZC_STATUS

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
#: a cluster.log line of a finished task: when, the peer tag and task, and the seconds it took
FINISHED = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \w+: \[([^]]+)\] \[([^]]+)\] "
                      r"Finished in ([0-9.]+)s")
#: the DAPI probe: one agent from the master's database (a worker relays it to the master)
DAPI_PROBE = ("wazuh.agent.get_agents", {"offset": 0, "limit": 1}, "local_master")
#: the name under which the idle probe's reactor lag is recorded
IDLE_PROBE = "idle reactor"
GET_NODES_ARGS = {"filter_node": None, "offset": 0, "limit": None, "sort": None,
                  "search": None, "select": None, "filter_type": "all"}


def compile_package(directory: str | None = None) -> int:
    """Byte-compile the node code (``wazuhcluster``) once, before the nodes start; how many
    cache files it created (a stale one is written again, not counted).

    An installed wheel comes byte-compiled (pip compiles it); the bed runs the checkout,
    where ``PYTHONDONTWRITEBYTECODE`` (set in this machine's environment) keeps Python from
    writing what it compiles, so each of the 101 nodes compiled some 120 modules from source
    at start-up (0.1-0.2 CPU s per node, measured). Python still reads ``__pycache__`` under
    that variable; ``compileall`` writes it whatever the variable says, and only for sources
    newer than their cache.
    """
    import compileall
    import io

    import wazuhcluster

    directory = directory or os.path.dirname(os.path.abspath(wazuhcluster.__file__))
    before = _cached(directory)
    with contextlib.redirect_stdout(io.StringIO()):
        compileall.compile_dir(directory, quiet=1, workers=1)
    return len(_cached(directory) - before)


def _cached(directory: str) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(directory) for f in files
            if f.endswith(".pyc")}


def random_key() -> str:
    """A valid 32-character cluster key."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def file_digest(path: str) -> str | None:
    """SHA-256 of a file, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class Node(ProcessProtocol):
    """One node process and its home."""

    def __init__(self, name: str, role: str, home: str, prefix: list[str],
                 cluster_json: str) -> None:
        self.name = name
        self.role = role
        self.home = home
        self.prefix = prefix
        self.cluster_json = cluster_json
        self.pid: int | None = None
        self.ended: Deferred[Any] = Deferred()
        self._cpu_last: tuple[float, float] | None = None

    @property
    def socket_path(self) -> str:
        return os.path.join(self.home, "queue", "cluster", "c-internal.sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.home, "logs", "cluster.log")

    @property
    def running(self) -> bool:
        return self.pid is not None and not self.ended.called

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)

    def log_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def sample(self) -> tuple[int, float] | None:
        """(RSS KiB, CPU % since the last sample) of the running process."""
        if not self.running:
            return None
        pid = self._python_pid()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, StopIteration, IndexError, ValueError):
            return None
        now = time.monotonic()
        cpu = 0.0
        if self._cpu_last is not None:
            cpu = 100.0 * (ticks - self._cpu_last[1]) / max(1e-6, now - self._cpu_last[0])
        self._cpu_last = (now, ticks)
        return rss, cpu

    def _python_pid(self) -> int:
        """``ip netns exec`` execs the program in place, so the pid is the node's own."""
        assert self.pid is not None
        return self.pid

    def task_durations(self) -> list[tuple[float, str, str, float]]:
        """Every ``Finished in`` line of cluster.log: (epoch s, peer tag, task, seconds)."""
        rows = []
        for line in self.log_lines():
            m = FINISHED.match(line)
            if m is not None:
                when = time.mktime(time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S"))
                rows.append((when, m.group(2), m.group(3), float(m.group(4))))
        return rows


class BedCluster:
    """The nodes of one scenario on one bed.

    :param reactor: the reactor.
    :param bed: the network (NetnsBed or LoopbackBed).
    :param base: the run's directory (homes go below it).
    :param tunables: a cluster.json override for every node.
    :param workers_nice: run the workers at this niceness (``nice -n``): a model of workers
        on hosts of their own, where they never take the master's CPU (0: as everything
        else, the default and the figure the targets are judged on).
    """

    def __init__(self, reactor: Any, bed: Any, base: str,
                 tunables: dict[str, Any] | None = None, workers_nice: int = 0) -> None:
        self.reactor = reactor
        self.workers_nice = workers_nice
        self.bed = bed
        self.base = base
        compile_package()  # as an installed wheel is: no node compiles the code itself
        self.key = random_key()
        self.port = 1516
        self.tunables = tunables or {}
        self.nodes: dict[str, Node] = {}
        self.samples: list[tuple[float, str, int, float]] = []
        self.events: list[tuple[float, str, str]] = []
        self.t0 = time.monotonic()
        self.wall_t0 = time.time()
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = reactor
        #: reactor lag of each node: node -> {window end (epoch s): worst ms}, from wzc_status
        self.lag: dict[str, dict[float, float]] = {}
        #: worst reactor lag since start reported by each node's last wzc_status, ms
        self.lag_worst: dict[str, float] = {}
        #: DAPI probes: (t_s, node, seconds) of a get_agents round trip through the node
        self.dapi: list[tuple[float, str, float]] = []
        self._probes = LoopingCall(self._probe)
        self._probes.clock = reactor
        self._probing: Deferred[Any] | None = None
        self._probe_round = 0
        self._idle_probe: subprocess.Popen[bytes] | None = None

    # -- nodes ------------------------------------------------------------------------
    def add(self, name: str, role: str, *, master_address: str | None = None,
            port: int | None = None) -> Node:
        """Create the node's home; the bed must already hold ``name``."""
        home = os.path.join(self.base, name)
        make_home(home, node_name=name, node_type=role, key=self.key, port=self.port)
        address = self.bed.address(name)
        master = master_address or self.bed.address("master")
        with open(os.path.join(home, "etc", "ossec.conf"), "w", encoding="utf-8") as f:
            f.write(cluster_block(node_name=name, node_type=role, key=self.key,
                                  port=port or self.port, master_address=master,
                                  bind_addr=address if role == "master" else "0.0.0.0"))
        with open(os.path.join(home, "etc", "wazuhcluster.yaml"), "w", encoding="utf-8") as f:
            f.write("api:\n  enabled: false\n")  # the bed measures the cluster, not the REST API
        cluster_json = os.path.join(home, "etc", "cluster-bed.json")
        with open(cluster_json, "w", encoding="utf-8") as f:
            json.dump(self.tunables, f)
        node = Node(name, role, home, self.bed.prefix(name), cluster_json)
        self.nodes[name] = node
        return node

    def start(self, node: Node) -> None:
        """Spawn the node inside its namespace."""
        node.ended = Deferred()
        node._cpu_last = None
        args = [*node.prefix, TWISTD, "-n", "--pidfile=", "wazuhcluster", "--role", node.role,
                "--home", node.home, "--cluster-json", node.cluster_json]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        trace = os.environ.get("WZC_BED_TURNTRACE")
        if trace and node.role == "master":  # the master's long reactor turns (turntrace.py)
            args = [*node.prefix, os.path.join(BIN, "python"), "-m", "bench.testbed.turntrace",
                    trace, *args[len(node.prefix) + 1:]]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (
                env.get("PYTHONPATH"),
                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))))
        if self.workers_nice and node.role == "worker":
            at = len(node.prefix)
            args = [*args[:at], "nice", "-n", str(self.workers_nice), *args[at:]]
        log = open(os.path.join(node.home, "logs", "twistd.out"), "ab")  # noqa: SIM115
        transport = self.reactor.spawnProcess(node, args[0], args, env=env, path=node.home,
                                              childFDs={0: "w", 1: log.fileno(),
                                                        2: log.fileno()})
        log.close()
        node.pid = transport.pid
        self.event(node.name, "started")

    async def stop(self, node: Node, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the node and wait until it is reaped (SIGKILL after ``timeout``)."""
        if not node.running:
            return
        assert node.transport is not None
        node.transport.signalProcess(sig)
        deadline = time.monotonic() + timeout
        while not node.ended.called and time.monotonic() < deadline:
            await self.sleep(0.1)
        if not node.ended.called:
            node.transport.signalProcess(signal.SIGKILL)
        await node.ended

    async def stop_all(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL), the sampler and the probes."""
        if self._sampler.running:
            self._sampler.stop()
        if self._probes.running:
            self._probes.stop()
        if self._probing is not None:
            await self._probing
        with contextlib.suppress(Exception):  # a last look at the nodes still running
            await self.ask_status([n for n in self.nodes.values() if n.running])
        self._stop_idle_probe()
        for node in self.nodes.values():
            with contextlib.suppress(Exception):  # best effort at teardown
                await self.stop(node, timeout=10.0)

    # -- observation ------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the scenario began."""
        return time.monotonic() - self.t0

    def event(self, node: str, what: str) -> None:
        """Record a timed event for the CSV."""
        self.events.append((self.now(), node, what))

    def start_sampling(self) -> None:
        """RSS/CPU of every node once a second; reactor lag and a DAPI probe every 2 s."""
        self._sampler.start(1.0, now=True)
        self._probes.start(2.0, now=False)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._idle_probe = subprocess.Popen(  # our own idle reactor, no network at all
            [sys.executable, "-m", "bench.testbed.lagprobe", self._idle_probe_path], cwd=root)

    @property
    def _idle_probe_path(self) -> str:
        return os.path.join(self.base, "idle-lag.json")

    def _stop_idle_probe(self) -> None:
        """Stop the idle probe and keep its windows as the node ``idle reactor``."""
        if self._idle_probe is None:
            return
        self.read_idle_probe()
        self._idle_probe.terminate()
        self._idle_probe.wait(10)
        self._idle_probe = None

    def read_idle_probe(self) -> None:
        """Load what the idle probe has written so far."""
        try:
            with open(self._idle_probe_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return
        self.lag_worst[IDLE_PROBE] = float(data["worst_ms"])
        self.lag[IDLE_PROBE] = {float(end): float(worst) for end, worst in data["windows"]}

    def _probe(self) -> None:
        """Ask the master and a few workers in turn (each worker within ~30 s, inside the
        60 s of lag windows a node keeps) for wzc_status; a DAPI probe through the master
        and one worker. Skipped while the previous round is still running."""
        if self._probing is not None:
            return
        running = [n for n in self.nodes.values() if n.running]
        workers = [n for n in running if n.role == "worker"]
        masters = [n for n in running if n.role == "master"]
        per_round = max(1, -(-len(workers) // 15))
        start = (self._probe_round * per_round) % max(1, len(workers))
        batch = masters + (workers + workers)[start:start + min(per_round, len(workers))]
        dapi_worker = workers[self._probe_round % len(workers)] if workers else None
        self._probe_round += 1

        async def go() -> None:
            try:
                await self.ask_status(batch)
                for node in [*masters, *([dapi_worker] if dapi_worker else [])]:
                    await self._dapi_probe(node)
            finally:
                self._probing = None
        self._probing = Deferred.fromCoroutine(go())

    async def ask_status(self, nodes: list[Node]) -> None:
        for node in nodes:
            try:
                answer = await self.ask(node, WZC_STATUS, b"", timeout=5.0)
            except (ClusterError, OSError, ValueError, TimeoutError):
                continue
            lag = answer.get("reactor_lag", {})
            self.lag_worst[node.name] = float(lag.get("worst_ms", 0.0))
            windows = self.lag.setdefault(node.name, {})
            for end, worst in lag.get("windows", []):
                windows[float(end)] = float(worst)

    async def _dapi_probe(self, node: Node) -> None:
        function, kwargs, request_type = DAPI_PROBE
        started = time.monotonic()
        try:
            await dapi_call(self.reactor, node.socket_path,
                            build_request(function, kwargs, request_type), final_timeout=30.0)
        except Exception:  # noqa: BLE001 -- a failed probe is recorded as missing
            return
        self.dapi.append((self.now(), node.name, time.monotonic() - started))

    def task_rows(self) -> list[tuple[float, str, str, str, float]]:
        """Every task duration of every node: (t_s, node, peer tag, task, seconds); t_s to
        the second (cluster.log's resolution)."""
        rows = []
        for node in self.nodes.values():
            for when, peer, task, seconds in node.task_durations():
                rows.append((round(when - self.wall_t0, 3), node.name, peer, task, seconds))
        rows.extend((round(t, 3), node, node, "DAPI round trip", round(seconds, 4))
                    for t, node, seconds in self.dapi)
        return sorted(rows)

    def lag_rows(self) -> list[tuple[float, str, float]]:
        """(t_s, node, worst reactor lag in ms) of every 1 s window seen."""
        return sorted((round(end - self.wall_t0, 3), node, worst)
                      for node, windows in self.lag.items() for end, worst in windows.items())

    def _sample(self) -> None:
        t = self.now()
        for node in self.nodes.values():
            sample = node.sample()
            if sample is not None:
                self.samples.append((t, node.name, sample[0], sample[1]))

    def max_rss_mb(self, name: str) -> float:
        """Highest RSS sampled for ``name``, in MB."""
        values = [rss for _, n, rss, _ in self.samples if n == name]
        return max(values, default=0) / 1024

    def error_lines(self) -> dict[str, list[str]]:
        """ERROR/CRITICAL lines of every node's cluster.log."""
        return {name: [line for line in node.log_lines()
                       if " ERROR: " in line or " CRITICAL: " in line]
                for name, node in self.nodes.items()}

    def sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self.reactor, seconds, lambda: None)

    async def wait(self, what: str, predicate: Callable[[], Any | Awaitable[Any]],
                   timeout: float, poll: float = 0.2) -> float:
        """Poll until ``predicate`` is truthy; the seconds it took.

        :raises TimeoutError: naming ``what``.
        """
        start = time.monotonic()
        while True:
            value = predicate()
            if isinstance(value, Deferred) or hasattr(value, "__await__"):
                value = await value
            if value:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            await self.sleep(poll)

    # -- asking nodes -----------------------------------------------------------------
    async def ask(self, node: Node, command: bytes, payload: Any,
                  timeout: float = 10.0) -> Any:
        raw = await local_request(self.reactor, node.socket_path, command,
                                  json.dumps(payload).encode() if not isinstance(
                                      payload, bytes) else payload,
                                  timeout=timeout, final_timeout=timeout)
        return json.loads(raw)

    async def node_names(self, node: Node) -> set[str] | None:
        """Names the node lists, or None when it cannot answer now."""
        try:
            answer = await self.ask(node, GET_NODES, GET_NODES_ARGS, timeout=3.0)
        except (ClusterError, OSError, ValueError):
            return None
        if not isinstance(answer, dict) or "items" not in answer:
            return None
        return {item["name"] for item in answer["items"]}

    async def agents(self, node: Node, only_node: str | None = None) -> list[dict[str, Any]]:
        """The node's own agent database listing."""
        answer: list[dict[str, Any]] = await self.ask(
            node, WZC_AG_LIST, encode_list_request(only_node), timeout=60.0)
        return answer

    async def agent_counts(self, node: Node) -> dict[str, int]:
        """The node's own agents (000 excluded) by connection status, counted by the node
        (DAPI ``get_agents_summary_status``, ``local_any``): no listing crosses the socket."""
        answer = await dapi_call(self.reactor, node.socket_path, build_request(
            "wazuh.agent.get_agents_summary_status", {}, "local_any"), final_timeout=60.0)
        connection: dict[str, int] = answer["data"]["connection"]
        return connection

    async def keepalive(self, node: Node, ids: list[int], version: str = "Wazuh v4.7.5",
                        os_name: str = "Ubuntu") -> None:
        """Record keepalives of ``ids`` at ``node``, as remoted would, in chunks."""
        for start in range(0, len(ids), 50_000):
            chunk = tuple(ids[start:start + 50_000])
            await self.ask(node, WZC_AG_KAL, encode_keepalive_request(
                KeepaliveRequest(chunk, os_name, "22.04", version)), timeout=120.0)


def write_client_keys(path: str, count: int, first: int = 1) -> list[int]:
    """A client.keys with ``count`` agents (ids from ``first``), written atomically."""
    ids = list(range(first, first + count))
    lines = [f"{i:03d} agent-{i} any {secrets.token_hex(32)}\n" for i in ids]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ids
