"""Harness for the process-level integration tests: real ``twistd wazuhcluster`` nodes.

Every node is a child process started with ``reactor.spawnProcess`` from a short home under
``/tmp``; the test waits for *events* (a log line, an answer on the local socket, a closed
connection) by polling under a deadline, never by sleeping a fixed time. Everything a
:class:`Cluster` starts is killed, reaped and deleted in the test's cleanup, even when the
test fails.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, ITCPTransport
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from wazuhcluster.errors import ClusterError
from wazuhcluster.homes import make_home
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.commands import GET_HEALTH, GET_NODES

LOCALHOST = "127.0.0.1"
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
CONTROL = os.path.join(BIN, "wazuhcluster-control")
PRLIMIT = shutil.which("prlimit") or "/usr/bin/prlimit"
#: How long any single wait may take before the test fails with diagnostics.
WAIT = 20.0
POLL = 0.1

#: Short intervals so that the tests run fast (merged under each node's own overrides).
FAST_TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"keep_alive": 1, "connection_retry": 1},
        "master": {"max_allowed_time_without_keepalive": 10, "check_worker_lastkeepalive": 1},
        "communication": {"timeout_cluster_request": 5},
    },
    "wazuhcluster": {
        "reconnect_initial_delay": 0.2,
        "reconnect_max_delay": 1,
        "reaper_check_interval": 0.5,
        "duplicate_probe_timeout": 1,
    },
}

#: The arguments wazuhcluster-control sends with ``-l``.
GET_NODES_ARGS = {"filter_node": None, "offset": 0, "limit": None, "sort": None,
                  "search": None, "select": None, "filter_type": "all"}


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago.

    Picked at random *below* the kernel's ephemeral range and checked by binding it: a port
    from ``bind(port 0)`` comes from that range, where the kernel may hand it again to any
    other process's ``bind(0)`` or outgoing connection (other test runs share the machine)
    before our node binds it ("Address already in use"); below the range only another
    explicit choice could take it.
    """
    low = max(_ephemeral_low(), 12000)
    for _ in range(200):
        port = secrets.randbelow(low - 10000) + 10000
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # (a crowded range)
        s.bind((LOCALHOST, 0))
        fallback: int = s.getsockname()[1]
        return fallback


def random_key() -> str:
    """A valid 32-character cluster key."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged over a copy of ``base``, recursively."""
    merged: dict[str, Any] = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sleep(seconds: float) -> Deferred[None]:
    """Let the reactor run for ``seconds`` (only as a poll step, never to synchronise)."""
    return deferLater(reactor, seconds, lambda: None)


class NodeProcess(ProcessProtocol):
    """One ``twistd -n wazuhcluster`` child process and its home.

    :param name: the node name (also the home directory's name).
    :param role: ``master`` or ``worker``.
    :param home: the node's home.
    :param cluster_json: the partial cluster.json passed with ``--cluster-json``.
    """

    api_port: int = 0  # the node's REST API port on 127.0.0.1
    metrics_port: int = 0  # the node's Prometheus metrics port on 127.0.0.1

    def __init__(self, name: str, role: str, home: str, cluster_json: str) -> None:
        self.name = name
        self.role = role
        self.home = home
        self.cluster_json = cluster_json
        self.pid: int | None = None
        self.ended: Deferred[Any] = Deferred()
        self.end_reason: Any = None
        self.output = bytearray()
        self.starts = 0
        #: More ``twistd wazuhcluster`` options for the next start (e.g. --log-format json).
        self.extra_args: list[str] = []
        #: A command the next start runs twistd through (e.g. setpriv dropping a capability).
        self.wrapper: list[str] = []

    # -- process life -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between start() and the process being reaped."""
        return self.pid is not None and not self.ended.called

    @property
    def socket_path(self) -> str:
        """The node's local API socket."""
        return os.path.join(self.home, "queue", "cluster", "c-internal.sock")

    @property
    def log_path(self) -> str:
        """The node's cluster.log."""
        return os.path.join(self.home, "logs", "cluster.log")

    def start(self) -> NodeProcess:
        """Spawn the node (again, after it ended)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.ended = Deferred()
        self.end_reason = None
        self.starts += 1
        args = [TWISTD, "-n", "--pidfile=", "wazuhcluster", "--role", self.role,
                "--home", self.home, "--cluster-json", self.cluster_json, "-d",
                *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = [*self.wrapper, *args]
        transport = reactor.spawnProcess(self, args[0], args, env=env, path=self.home,
                                         childFDs={0: "w", 1: "r", 2: "r"})
        self.pid = transport.pid
        return self

    @property
    def process(self) -> IProcessTransport:
        """The process transport (only once started)."""
        assert self.transport is not None, f"{self.name} was never started"
        return self.transport

    @property
    def live_pid(self) -> int:
        """The pid of the running process."""
        assert self.pid is not None and self.running, f"{self.name} is not running"
        return self.pid

    def connectionMade(self) -> None:
        self.process.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        del self.output[:-32768]  # keep the tail only

    def processEnded(self, reason: Failure) -> None:
        self.end_reason = reason.value
        self.ended.callback(reason.value)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the running process."""
        if not self.running:
            raise RuntimeError(f"{self.name} is not running")
        self.process.signalProcess(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Any:
        """Send ``sig`` and wait until the process is reaped (SIGKILL after ``timeout``)."""
        if not self.running:
            return self.end_reason
        ended = self.ended
        with contextlib.suppress(OSError, ProcessExitedAlready):
            self.process.signalProcess(signal.SIGCONT)
            self.process.signalProcess(sig)
        deadline = time.monotonic() + timeout
        while not ended.called and time.monotonic() < deadline:
            await sleep(POLL)
        if not ended.called:
            with contextlib.suppress(OSError, ProcessExitedAlready):
                self.process.signalProcess(signal.SIGKILL)
        return await ended

    # -- observation --------------------------------------------------------------------
    def log_size(self) -> int:
        """Current size of cluster.log (an offset for ``log_lines(since=...)``)."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_lines(self, since: int = 0) -> list[str]:
        """cluster.log lines written after byte offset ``since``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def grep(self, pattern: str, since: int = 0) -> list[str]:
        """cluster.log lines after ``since`` matching the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.log_lines(since) if regex.search(line)]

    def describe(self) -> str:
        """Diagnostics: state, cluster.log tail and stdout tail."""
        state = "running" if self.running else f"ended ({self.end_reason!r})"
        log = "\n      ".join(self.log_lines()[-25:])
        out = "\n      ".join(self.output.decode("utf-8", "replace").splitlines()[-10:])
        return (f"--- {self.role} {self.name} pid {self.pid} {state}\n"
                f"    cluster.log tail:\n      {log}\n    stdout tail:\n      {out}")


class RawClient(Protocol):
    """A bare TCP client for misbehaving-peer tests; ``closed`` fires when the link ends."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.received = bytearray()
        self.connected_at = 0.0
        self.closed_at = 0.0

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def send(self, data: bytes) -> None:
        """Write ``data`` to the master."""
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        """Close the connection at once, if it is still open."""
        if not self.closed.called and self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed_at = time.monotonic()
        self.reason = reason
        self.closed.callback(None)


class Cluster:
    """The nodes and clients of one test, cleaned up by the test case.

    :param case: the running test; its cleanups kill and reap every process and delete
        the homes.
    """

    def __init__(self, case: Any) -> None:
        self.case = case
        self.base = tempfile.mkdtemp(prefix="wzc", dir="/tmp")
        self.port = free_port()
        self.key = random_key()
        self.nodes: list[NodeProcess] = []
        self.clients: list[RawClient] = []
        if not os.environ.get("WZC_KEEP_HOMES"):
            case.addCleanup(shutil.rmtree, self.base, True)
        case.addCleanup(self._cleanup)

    async def _cleanup(self) -> None:
        """Kill and reap every node, close every client; report the first problem last."""
        problems: list[BaseException] = []
        for client in self.clients:
            client.abort()
        for node in self.nodes:
            try:
                if node.running:
                    await node.stop(signal.SIGKILL, timeout=5.0)
            except Exception as e:  # noqa: BLE001 -- report it, but kill the others first
                problems.append(e)
        for client in self.clients:
            await client.closed
        if problems:
            raise problems[0]

    # -- nodes --------------------------------------------------------------------------
    def add_node(self, name: str, role: str = "worker", *, key: str | None = None,
                 cluster_name: str = "wazuh", tunables: dict[str, Any] | None = None,
                 home_name: str | None = None, auth_port: int | None = None,
                 auth_extra: str = "") -> NodeProcess:
        """Create a home for a node (not started) with FAST_TUNABLES plus ``tunables``.

        ``auth_port``: the agent registration port (TLS); None leaves it disabled.
        """
        home = os.path.join(self.base, home_name or name)
        api_port = free_port()  # every node serves its REST API on 127.0.0.1 only
        metrics_port = free_port()  # and its Prometheus metrics
        make_home(home, node_name=name, node_type=role, key=key or self.key, port=self.port,
                  name=cluster_name, auth_port=auth_port, auth_extra=auth_extra,
                  api_port=api_port, metrics_port=metrics_port)
        cluster_json = os.path.join(home, "etc", "cluster-test.json")
        with open(cluster_json, "w", encoding="utf-8") as f:
            json.dump(deep_merge(FAST_TUNABLES, tunables or {}), f)
        node = NodeProcess(name, role, home, cluster_json)
        node.api_port = api_port
        node.metrics_port = metrics_port
        self.nodes.append(node)
        return node

    def describe(self) -> str:
        """Diagnostics of every node."""
        return "\n".join(node.describe() for node in self.nodes)

    # -- waiting ------------------------------------------------------------------------
    async def wait_for(self, what: str, predicate: Callable[[], Any],
                       timeout: float = WAIT) -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy.

        :returns: the truthy value.
        :raises FailTest: after ``timeout`` seconds, with every node's log tail.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise self.case.failureException(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{self.describe()}")
            await sleep(POLL)

    async def api_client(self, node: NodeProcess) -> Any:
        """A tests.api.harness.APIClient for ``node``'s REST API, once it listens, trusting
        the self-signed certificate the node made at start; its pool closed at cleanup."""
        from tests.api.harness import APIClient
        cert = os.path.join(node.home, "api", "configuration", "ssl", "server.crt")
        await self.wait_for(f"{node.name}'s API certificate", lambda: os.path.exists(cert))
        await self.wait_log(node, r"\[API\] \[Main\] Listening on")
        with open(cert, "rb") as f:
            client = APIClient(reactor, f"https://127.0.0.1:{node.api_port}", f.read())
        self.case.addCleanup(client.pool.closeCachedConnections)
        return client

    async def wait_log(self, node: NodeProcess, pattern: str, *, since: int = 0,
                       count: int = 1, timeout: float = WAIT) -> list[str]:
        """Wait until ``node``'s cluster.log has ``count`` lines matching ``pattern``."""
        def found() -> list[str] | None:
            lines = node.grep(pattern, since)
            return lines if len(lines) >= count else None
        result: list[str] = await self.wait_for(
            f"{count} line(s) matching {pattern!r} in {node.name}'s cluster.log", found,
            timeout)
        return result

    # -- asking nodes -------------------------------------------------------------------
    async def request(self, node: NodeProcess, command: bytes, payload: Any) -> Any:
        """Ask ``node`` over its local socket (as the control CLI does); decoded JSON."""
        raw = await local_request(reactor, node.socket_path, command,
                                  json.dumps(payload).encode(), timeout=5.0,
                                  final_timeout=5.0)
        value = json.loads(raw)
        if isinstance(value, dict) and "__wazuh_exception__" in value:
            obj = value["__wazuh_exception__"]["__object__"]
            raise ClusterError(obj.get("code", 3000), obj.get("extra_message"))
        return value

    async def node_names(self, node: NodeProcess) -> set[str] | None:
        """Names in ``node``'s get_nodes answer, or None if it cannot answer now."""
        try:
            answer = await self.request(node, GET_NODES, GET_NODES_ARGS)
        except (ClusterError, OSError):
            return None
        return {item["name"] for item in answer["items"]}

    async def health(self, node: NodeProcess) -> dict[str, Any]:
        """``node``'s get_health answer."""
        answer: dict[str, Any] = await self.request(node, GET_HEALTH, None)
        return answer

    async def wait_listed(self, node: NodeProcess, names: set[str],
                          timeout: float = WAIT) -> None:
        """Wait until ``node``'s node list is exactly ``names``."""
        async def exact() -> bool:
            return await self.node_names(node) == names
        await self.wait_for(f"{node.name} to list exactly {sorted(names)}", exact, timeout)

    async def wait_ready(self, node: NodeProcess, timeout: float = WAIT) -> None:
        """Wait until ``node`` answers on its local socket (a master is then listening)."""
        async def answers() -> bool:
            try:
                await local_request(reactor, node.socket_path, b"get_config", b"",
                                    timeout=5.0)
            except (ClusterError, OSError):
                return False
            return True
        await self.wait_for(f"{node.name} to answer on its local socket", answers, timeout)

    async def start_cluster(self, *workers: str, master: str = "master",
                            master_tunables: dict[str, Any] | None = None,
                            worker_tunables: dict[str, Any] | None = None
                            ) -> tuple[NodeProcess, list[NodeProcess]]:
        """Start a master and ``workers``; return once the master lists all of them."""
        m = self.add_node(master, "master", tunables=master_tunables).start()
        await self.wait_ready(m)
        ws = [self.add_node(w, tunables=worker_tunables).start() for w in workers]
        await self.wait_listed(m, {master, *workers})
        return m, ws

    async def control(self, node: NodeProcess, *args: str) -> tuple[str, str, int]:
        """Run the real ``wazuhcluster-control --home HOME *args``; (stdout, stderr, status)."""
        out, err, code = await getProcessOutputAndValue(
            CONTROL, ["--home", node.home, *args], env=dict(os.environ))
        return out.decode(), err.decode(), code

    # -- raw TCP clients ----------------------------------------------------------------
    async def raw_connect(self) -> RawClient:
        """Open a bare TCP connection to the master's port (closed in cleanup)."""
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, LOCALHOST, self.port, timeout=5),
                              client)
        self.clients.append(client)
        return client

    async def wait_closed(self, client: RawClient, what: str,
                          timeout: float = WAIT) -> Failure:
        """Wait until the master has closed ``client``'s connection."""
        await self.wait_for(what, lambda: client.closed.called, timeout)
        assert client.reason is not None
        return client.reason


def ended_by(reason: Any) -> tuple[int | None, int | None]:
    """``(exit status, signal)`` of a processEnded reason.

    A ``twistd`` that shut down cleanly on SIGTERM re-raises SIGTERM on itself at the very
    end (so that its parent sees which signal stopped it): ``(None, 15)`` is a clean stop.
    """
    if isinstance(reason, ProcessDone):
        return 0, None
    if isinstance(reason, ProcessTerminated):
        return reason.exitCode, reason.signal
    return None, None
