"""Does watching the cluster cost the cluster? Keepalive RTT and integrity sync time with and
without a Prometheus scraper and an open status page.

Run with ``.venv/bin/python bench/ui_metrics.py``. It prints figures and a verdict against
the target (< 5 % change); nothing is asserted.

Real processes on 127.0.0.1: a master and two workers (``--agents`` agents in client.keys),
and the *watcher*, a process of its own (as Prometheus and a browser are) that, while it is
"on", scrapes ``GET /metrics`` of each of the three nodes every second (a Prometheus at a 1 s
interval) and loads ``GET /ui`` of the master every 10 s with a bearer token (an open page
reloads itself every 10 s). It lives for the whole run and is switched on and off; "off":
nobody looks at the cluster. By default (``--watcher curl``, since the ninth session) the
requests are made by two curl processes that live for the whole run, continued and stopped
with the watcher (:class:`CurlWatcher`): compiled clients, as Prometheus and a browser are,
at some 1.5 ms of CPU a watched second; ``--watcher python`` makes them with this script's
treq client (3.4 ms a watched second: the figure of the sessions before).

**Keepalive RTT: many short blocks.** A probe "worker" connection on the master's cluster
port (``bench/probe.py``, a process of its own for the whole run) sends a keepalive
(``echo-c``) every ``--probe-interval`` (5 ms). The run is ``--blocks`` blocks of
``--block-seconds`` (10 s) each, in pairs; each pair is one off and one on block, in an
order drawn at random (``--seed``), so that the machine's bursts of noise fall on both kinds
alike. Every block starts with ``--guard`` seconds (1 s) that are not counted (in-flight
requests of the block before settle); then, in an on block, the watcher's schedule starts:
10 scrapes of each node and one page in the 10 s counted, its real rate. Per kind the round
trips of all its blocks are pooled (20 blocks: some 40 000); printed for p50 and p99: the
change, the **noise floor** (the same percentile between two sets of *off* blocks, every
other one: a change smaller than it is not resolved), and for the p99 a 95 % confidence
interval of the change (the pairs resampled with replacement, ``--bootstrap`` times; blocks
are resampled whole since round trips close in time are not independent). Verdict: met when
the whole interval is below +5 %, not met when all of it is above, else not resolvable.
The CPU each process used in each block is read from /proc: what watching costs each node
per watched second, and the watcher's own (in production it runs elsewhere).

**``--niced-watcher``** (optional; the default figure above is unchanged and still
printed): a second watcher process at the lowest scheduling priority (``nice 19``) and a
third kind of block, "on, niced watcher", in each group of three blocks (off, on, on niced;
order drawn at random). In production Prometheus and the browser run on other hosts, so
their CPU does not compete with the nodes'; here both share the 2 vCPUs, and the niced
watcher shows how much of the change is the watcher's own CPU taking a core from the nodes
and how much the nodes' work to serve it. Both changes are printed against the same off
blocks. The sync phases use the default watcher only.

**Sync figures: phases.** ``--rounds`` times an off and an on phase (off-on, on-off, ...);
after a random 0-10 s (so that the batches fall anywhere in the page's 10 s schedule),
``--batches`` times, ``--files`` new files of 2 KiB are written on the master; the time
until both workers hold all of them and the master's own "[Integrity sync] Finished in"
durations are the figures (medians of all the batches of a kind pooled, with the same noise
floor: the off phases of even rounds against those of odd rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import signal
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
        self.scrape_bytes = 0
        self.ui_bytes = 0
        self.scrape_loop = task.LoopingCall(self._scrape)
        self.ui_loop = task.LoopingCall(self._page)
        self.pending: list[Any] = []

    async def _scrape_all(self) -> None:
        for port in self.ports:
            start = time.perf_counter()
            r = await self.http.get(f"http://127.0.0.1:{port}/metrics")
            body = await treq.content(r)
            if r.code != 200 or b"wazuhcluster_link_frames_total" not in body:
                raise RuntimeError(f"scrape of :{port} failed: {r.code}")
            self.scrape_times.append(time.perf_counter() - start)
            self.scrape_bytes += len(body)

    def _scrape(self) -> Any:
        return Deferred.fromCoroutine(self._scrape_all())

    async def _page_once(self) -> None:
        start = time.perf_counter()
        body = await self.ui.get("/ui")
        if b'id="sync-chart"' not in body:
            # The bearer token lives auth_token_exp_timeout (900 s): a longer run is shown
            # the login form, as a person's open tab would be; log in again, as they would.
            await self.ui.login()
            body = await self.ui.get("/ui")
        if b'id="sync-chart"' not in body:
            raise RuntimeError("the status page did not render")
        self.ui_times.append(time.perf_counter() - start)
        self.ui_bytes += len(body)

    def _page(self) -> Any:
        return Deferred.fromCoroutine(self._page_once())

    def start(self) -> None:
        self.scrape_loop.start(1.0)
        self.ui_loop.start(10.0)

    def stop(self) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.pending = []
        for loop in (self.scrape_loop, self.ui_loop):
            if loop.running:
                loop.stop()

    def on(self, delay: float, duration: float) -> None:
        """Start the schedule in ``delay`` seconds, stop it ``duration`` seconds later."""
        self.stop()
        self.pending = [reactor.callLater(delay, self.start),
                        reactor.callLater(delay + duration, self.stop)]


class _Curl(ProcessProtocol):
    """One curl process; its ``-w`` lines (code, bytes, seconds) are collected."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def errReceived(self, data: bytes) -> None:
        # (the -w lines go to stderr, unbuffered: a curl stopped by a signal has written
        # every line of the transfers it made; its stdout would lose a buffered tail)
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    def transfers(self) -> list[tuple[int, int, float]]:
        rows = []
        for line in self.output.decode(errors="replace").splitlines():
            words = line.split()
            if len(words) != 3 or not words[0].isdigit():
                raise RuntimeError(f"curl: {line}")
            rows.append((int(words[0]), int(words[1]), float(words[2])))
        return rows


class CurlWatcher:
    """The same load as :class:`Watcher`, made by curl (the default watcher).

    Prometheus's scraper and a browser are compiled programs that run all the time; this
    script's own treq client spent 3.4 ms of CPU per watched second, about what the three
    nodes spent serving it, and on a 2-vCPU box that CPU is taken from the nodes. Here two
    curl processes (C, libcurl) make the requests and live for the whole run: one scrapes
    the nodes' ``/metrics`` in turn, three requests a second evenly spaced (``--rate 3/s``:
    each node once a second) over kept-alive connections; the other loads ``/ui`` over
    HTTPS (the API's certificate as the only trust root) with the bearer token every 10 s
    (``--rate 6/m``). Watching starts them (SIGCONT) and stopping stops them (SIGSTOP), so
    a block pays no start-up. The page's curl is replaced by one with a new token in a
    block's guard once the token is :data:`TOKEN_AGE` old (a token lives 900 s), and a curl
    whose URL list ran out is replaced. Their CPU is the watcher's: the bench reads the
    watcher process and its live children.
    """

    #: Seconds of watching in one curl's URL list.
    SPAN = 3600.0
    #: Age of the bearer token after which the page's curl gets a new one.
    TOKEN_AGE = 600.0

    def __init__(self, metrics_ports: list[int], ui: Client, cert: str, workdir: str) -> None:
        self.ports = metrics_ports
        self.ui = ui
        self.cert = cert
        self.workdir = workdir
        self.token_at = time.monotonic()
        self.watching = False
        self.curls: dict[str, _Curl] = {}
        self.pending: list[Any] = []
        self.scrape_times: list[float] = []
        self.ui_times: list[float] = []
        self.scrape_bytes = 0
        self.ui_bytes = 0
        self.failures: list[str] = []
        self.curl = shutil.which("curl") or ""
        if not self.curl:
            raise SystemExit("bench/ui_metrics.py: curl is needed for the default watcher "
                             "(apt-get install curl), or use --watcher python")

    def _config(self, kind: str) -> str:
        write_out = 'write-out = "%{stderr}%{http_code} %{size_download} %{time_total}\\n"'
        if kind == "metrics":
            n = len(self.ports)
            lines = ["silent", write_out, f'rate = "{n}/s"',
                     *(f'url = "http://127.0.0.1:{self.ports[i % n]}/metrics"\n'
                       'output = "/dev/null"' for i in range(math.ceil(self.SPAN * n)))]
        else:
            lines = ["silent", write_out, 'rate = "6/m"', f'cacert = "{self.cert}"',
                     f'header = "Authorization: Bearer {self.ui.token}"',
                     *(f'url = "{self.ui.base}/ui"\noutput = "{self.workdir}/ui.html"'
                       for _ in range(math.ceil(self.SPAN / 10)))]
        path = os.path.join(self.workdir, f"{kind}.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _spawn(self, kind: str) -> None:
        curl = _Curl()
        self.curls[kind] = curl
        reactor.spawnProcess(curl, self.curl, [self.curl, "--config", self._config(kind)],
                             env={"PATH": os.environ.get("PATH", "")},
                             childFDs={0: "w", 1: "r", 2: "r"})
        curl.ended.addCallback(lambda _: self._ended(kind, curl))

    def _ended(self, kind: str, curl: _Curl) -> None:
        if self.curls.get(kind) is curl:
            del self.curls[kind]
        for code, size, seconds in curl.transfers():
            if code != 200:
                self.failures.append(f"{kind}: HTTP {code}")
            elif kind == "ui":
                self.ui_times.append(seconds)
                self.ui_bytes += size
            else:
                self.scrape_times.append(seconds)
                self.scrape_bytes += size
        if kind == "ui" and os.path.exists(os.path.join(self.workdir, "ui.html")):
            with open(os.path.join(self.workdir, "ui.html"), "rb") as f:
                if b'id="sync-chart"' not in f.read():
                    self.failures.append("the status page did not render")
        if self.watching and kind not in self.curls:  # its URL list ran out
            self._spawn(kind)

    def _signal(self, kind: str, sig: int) -> None:
        curl = self.curls.get(kind)
        if curl is not None and curl.transport is not None and curl.transport.pid:
            curl.transport.signalProcess(sig)

    async def _end(self, kind: str) -> None:
        curl = self.curls.get(kind)
        if curl is not None:
            self._signal(kind, signal.SIGTERM)
            self._signal(kind, signal.SIGCONT)  # (a stopped process acts on TERM once continued)
            await curl.ended

    async def _on(self, delay: float, duration: float) -> None:
        if time.monotonic() - self.token_at > self.TOKEN_AGE:
            await self.ui.login()
            self.token_at = time.monotonic()
            await self._end("ui")
        self.watching = True
        for kind in ("metrics", "ui"):
            if kind in self.curls:
                self._signal(kind, signal.SIGCONT)
            else:
                self._spawn(kind)

    def start(self) -> None:
        """Unused (the Python watcher's schedule entry point)."""

    def stop(self) -> None:
        """Stop watching: both curls stopped where they are."""
        self.watching = False
        for call in self.pending:
            if call.active():
                call.cancel()
        self.pending = []
        for kind in self.curls:
            self._signal(kind, signal.SIGSTOP)

    def on(self, delay: float, duration: float) -> None:
        """Watch from now (the block's guard) until ``delay + duration`` from now."""
        self.stop()
        self.pending = [reactor.callLater(delay + duration, self.stop)]
        Deferred.fromCoroutine(self._on(delay, duration)).addErrback(
            lambda f: self.failures.append(str(f.value)))

    async def drain(self) -> None:
        """End both curls and collect what they did."""
        self.stop()
        for kind in list(self.curls):
            await self._end(kind)


async def watch(args: argparse.Namespace) -> None:
    """``--watch``: the watcher in a process of its own (as a Prometheus and a browser are).
    Commands on stdin: ``on DELAY DURATION``, ``off``; when stdin closes, one JSON line with
    the scrape and page times and bytes."""
    import json

    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    if args.nice:
        os.nice(19)
    node = Node("master", "master", args.master_home, args.api_port)
    ui = Client(node)
    ui.token = args.token
    ports = [int(p) for p in args.metrics_ports.split(",")]
    workdir = tempfile.mkdtemp(prefix="wzc-bench-watcher-")
    w: Watcher | CurlWatcher
    if args.watcher == "curl":
        cert = os.path.join(args.master_home, "api", "configuration", "ssl", "server.crt")
        w = CurlWatcher(ports, ui, cert, workdir)
    else:
        w = Watcher(ports, ui)
    done: Deferred[None] = Deferred()

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            words = line.decode().split()
            if words and words[0] == "on":
                w.on(float(words[1]), float(words[2]))
            elif words == ["off"]:
                w.stop()

        def connectionLost(self, reason: Any = None) -> None:
            done.callback(None)

    stdio.StandardIO(Commands())
    await done
    w.stop()
    failures: list[str] = []
    if isinstance(w, CurlWatcher):
        await w.drain()
        failures = w.failures
    shutil.rmtree(workdir, ignore_errors=True)
    sys.__stdout__.write(json.dumps({"scrapes": w.scrape_times, "pages": w.ui_times,
                                     "scrape_bytes": w.scrape_bytes,
                                     "page_bytes": w.ui_bytes,
                                     "failures": failures}) + "\n")
    sys.__stdout__.flush()


class WatcherProcess(ProcessProtocol):
    """``bench/ui_metrics.py --watch ...`` as a child process, for the whole run."""

    def __init__(self, master: Node, metrics_ports: list[int], token: str,
                 nice: bool = False, kind: str = "curl") -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()
        self.args = [sys.executable, os.path.abspath(__file__), "--watch", "--master-home",
                     master.home, "--api-port", str(master.api_port), "--metrics-ports",
                     ",".join(map(str, metrics_ports)), "--token", token, "--watcher", kind]
        if nice:
            self.args.append("--nice")

    def start(self) -> None:
        reactor.spawnProcess(self, sys.executable, self.args, env=dict(os.environ),
                             childFDs={0: "w", 1: "r", 2: 2})

    @property
    def pid(self) -> int:
        assert self.transport is not None
        return int(self.transport.pid)

    def on(self, delay: float, duration: float) -> None:
        assert self.transport is not None
        self.transport.write(f"on {delay} {duration}\n".encode())

    def off(self) -> None:
        assert self.transport is not None
        self.transport.write(b"off\n")

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    async def stop(self) -> dict[str, Any]:
        import json

        assert self.transport is not None
        self.transport.closeStdin()
        await self.ended
        result: dict[str, Any] = json.loads(self.output.decode().splitlines()[-1])
        return result


def process_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``, the children it has reaped
    and those alive (/proc/PID/stat: utime, stime, cutime, cstime; the curl watcher's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for task_id in tasks:
        try:
            with open(f"/proc/{pid}/task/{task_id}/children") as f:
                children = [int(child) for child in f.read().split()]
        except OSError:
            continue
        for child in children:
            with contextlib.suppress(OSError):  # ended meanwhile (counted once reaped)
                total += process_cpu(child)
    return total


def count_files(home: str, directory: str) -> int:
    try:
        return len(os.listdir(os.path.join(home, "etc", "shared", directory)))
    except OSError:
        return 0


async def phase(name: str, index: int, args: argparse.Namespace,
                master: Node, workers: list[Node], watcher: WatcherProcess,
                offset: float) -> dict[str, Any]:
    """One sync phase: ``--batches`` batches of ``--files`` files, the watcher on or off.
    The batches start ``offset`` seconds into the phase (drawn at random in [0, 10) s for
    either kind), so that they fall at any point of the page's 10 s schedule, as an
    operator's page open at any moment would."""
    load = os.getloadavg()[0]
    if name == "on":
        watcher.on(0.0, 1e9)
    try:
        await sleep(offset)
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
        watcher.off()
    return {"phase": name, "load": load, "walls": walls, "durations": durations,
            "sync_wall": statistics.median(walls),
            "sync_master": statistics.median(durations) if durations else float("nan")}


async def rtt_blocks(args: argparse.Namespace, probe: ProbeProcess,
                     watchers: dict[str, WatcherProcess],
                     pids: dict[str, int]) -> list[dict[str, Any]]:
    """The keepalive blocks: groups of one off block and one block of each watcher
    (``watchers``: kind -> watcher; "on" alone by default: pairs) in a random order."""
    rng = random.Random(args.seed)
    blocks: list[dict[str, Any]] = []
    for pair in range(args.blocks // 2):
        order = ["off", *watchers]
        rng.shuffle(order)
        for kind in order:
            if kind in watchers:
                watchers[kind].on(args.guard, args.block_seconds - 0.5)
            await sleep(args.guard)
            probe.take()  # the guard's round trips: not counted
            cpu = {name: process_cpu(pid) for name, pid in pids.items()}
            start, load = time.perf_counter(), os.getloadavg()[0]
            await sleep(args.block_seconds)
            rtt = probe.take()
            wall = time.perf_counter() - start
            used = {name: (process_cpu(pid) - cpu[name]) / wall for name, pid in pids.items()}
            if not rtt["n"]:
                raise RuntimeError(f"no keepalive answered in block {len(blocks)}")
            blocks.append({"kind": kind, "pair": pair, "rtts": rtt["rtts"], "cpu": used,
                           "load": load, "seconds": wall})
            print(f"  pair {pair + 1:2} {kind:5}: keepalive RTT p50 {rtt['p50']:.2f} ms "
                  f"p99 {rtt['p99']:.2f} ms ({rtt['n']} probes), master CPU "
                  f"{used['master'] * 100:.1f} % of a core, load {load:.2f}", flush=True)
    return blocks


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the probe's rule: index ``int(n * q)`` sorted)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def pooled(blocks: list[dict[str, Any]], q: float) -> float:
    """The ``q`` quantile (ms) of every round trip of ``blocks`` pooled."""
    return percentile([x for b in blocks for x in b["rtts"]], q)


def tail_quantile(tails: list[list[float]], counts: list[int], q: float) -> float:
    """The ``q`` quantile of the union of blocks given by their largest values (descending,
    enough of them) and their sizes: the same as :func:`pooled`, without the bulk."""
    n = sum(counts)
    rank = n - 1 - min(n - 1, int(n * q))  # 0 = the largest
    merged = sorted((x for t in tails for x in t), reverse=True)
    return merged[rank]


def bootstrap_p99(pairs: list[tuple[dict[str, Any], dict[str, Any]]], times: int,
                  seed: int) -> tuple[float, float]:
    """95 % interval of (p99 on / p99 off - 1), the pairs of blocks resampled whole."""
    longest = max(len(b["rtts"]) for pair in pairs for b in pair)
    keep = int(0.01 * len(pairs) * longest) + 2
    tails = [tuple(sorted(b["rtts"], reverse=True)[:keep] for b in pair) for pair in pairs]
    sizes = [tuple(len(b["rtts"]) for b in pair) for pair in pairs]
    rng = random.Random(seed)
    changes = []
    for _ in range(times):
        chosen = [rng.randrange(len(pairs)) for _ in pairs]
        off = tail_quantile([tails[i][0] for i in chosen], [sizes[i][0] for i in chosen], 0.99)
        on = tail_quantile([tails[i][1] for i in chosen], [sizes[i][1] for i in chosen], 0.99)
        changes.append(on / off - 1)
    changes.sort()
    return changes[int(0.025 * times)], changes[min(times - 1, int(0.975 * times))]


def change(off: float, on: float) -> str:
    delta = (on - off) / off if off else 0.0
    verdict = "met" if delta <= TARGET else "NOT met"
    return f"{delta * 100:+.1f} % ({verdict}: target < +{TARGET * 100:.0f} %)"


def interval_verdict(low: float, high: float) -> str:
    if high <= TARGET:
        return "met"
    if low > TARGET:
        return "NOT met"
    return "not resolvable"


async def run(args: argparse.Namespace) -> None:
    base = tempfile.mkdtemp(prefix="wzc-bench-ui-", dir="/tmp")
    port = free_port()
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, args.agents + 1)]
    nodes: list[Node] = []
    metrics_ports: list[int] = []
    watcher: WatcherProcess | None = None
    niced: WatcherProcess | None = None
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
        await ui.pool.closeCachedConnections()
        watcher = WatcherProcess(master, metrics_ports, ui.token, kind=args.watcher)
        watcher.start()
        if args.niced_watcher:
            niced = WatcherProcess(master, metrics_ports, ui.token, nice=True,
                                   kind=args.watcher)
            niced.start()
        await sleep(3)  # first syncs of the agents; the watcher's start-up
        load_start = os.getloadavg()
        probe = ProbeProcess(port, KEY, args.probe_interval, "probe-ui", raw=True)
        pids = {"master": master.transport.pid, "worker1": workers[0].transport.pid,
                "worker2": workers[1].transport.pid, "watcher": watcher.pid,
                "probe": probe.proc.pid}
        watchers = {"on": watcher}
        if niced is not None:
            watchers["niced"] = niced
            pids["niced"] = niced.pid
        print(f"Keepalive blocks ({args.blocks // 2 * len(watchers) + args.blocks // 2} of "
              f"{args.block_seconds:.0f} s + "
              f"{args.guard:.0f} s not counted), load average {load_start[0]:.2f}:", flush=True)
        try:
            blocks = await rtt_blocks(args, probe, watchers, pids)
        finally:
            probe.stop()
        results = []
        offsets = random.Random(args.seed + 1)
        for i in range(args.rounds):
            for name in (("off", "on") if i % 2 == 0 else ("on", "off")):
                r = await phase(name, i, args, master, workers, watcher,
                                offsets.uniform(0.0, 10.0))
                r["round"] = i
                results.append(r)
                print(f"  sync round {i + 1} {name:3}: {args.files} files on both workers in "
                      f"{r['sync_wall']:.2f} s, master's integrity sync {r['sync_master']:.3f}"
                      f" s (medians of {args.batches}), load {r['load']:.2f}", flush=True)
        seen = await watcher.stop()
        watcher = None
        if niced is not None:
            niced_seen = await niced.stop()
            niced = None
            seen["failures"] = seen.get("failures", []) + niced_seen.get("failures", [])
        if seen.get("failures"):
            raise RuntimeError(f"the watcher's requests failed: {seen['failures'][:5]}")
        load = os.getloadavg()
        print(f"\nmaster + 2 workers on 127.0.0.1, {args.agents} agents, {os.cpu_count()} CPUs,"
              f" load average {load_start[0]:.2f} at the start, {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f} at the end; Python {sys.version.split()[0]}.")
        off = [b for b in blocks if b["kind"] == "off"]
        on = [b for b in blocks if b["kind"] == "on"]
        n_off = sum(len(b["rtts"]) for b in off)
        n_on = sum(len(b["rtts"]) for b in on)
        print(f"Keepalive RTT: every round trip of one kind of block pooled ({n_off} off, "
              f"{n_on} on; {len(off)} blocks of each kind, {args.block_seconds:.0f} s each; a "
              f"keepalive every {args.probe_interval * 1000:.0f} ms):")
        names = {"on": "watched / not", "niced": "watched by a niced watcher / not"}
        for kind in watchers:
            watched = [b for b in blocks if b["kind"] == kind]
            if kind != "on":
                print(f"The same, {names[kind]} (the watcher at nice 19; "
                      f"{sum(len(b['rtts']) for b in watched)} round trips):")
            for q, label in ((0.5, "keepalive RTT p50"), (0.99, "keepalive RTT p99")):
                a, b = pooled(off, q), pooled(watched, q)
                # (one off block, as in a run of sync phases only: no floor to compare)
                first = pooled(off[0::2], q)
                second = pooled(off[1::2], q) if len(off) > 1 else first
                floor = abs(first - second) / min(first, second)
                print(f"  {label:42} off {a:8.3f} ms  on {b:8.3f} ms  change {change(a, b)}\n"
                      f"  {'':42} noise floor: every other off block {first:.3f} ms vs the "
                      f"others {second:.3f} ms: {floor * 100:.1f} %")
                if q == 0.99:
                    pairs = []
                    for p in sorted({b["pair"] for b in blocks}):
                        kinds = {b["kind"]: b for b in blocks if b["pair"] == p}
                        pairs.append((kinds["off"], kinds[kind]))
                    low, high = bootstrap_p99(pairs, args.bootstrap, args.seed)
                    half = (high - low) / 2
                    needed = (math.ceil(len(pairs) * (half / TARGET) ** 2) if half > TARGET
                              else 0)
                    minutes = needed * (len(watchers) + 1) * (args.block_seconds + args.guard) / 60
                    print(f"  {'':42} 95 % interval of the change (pairs of blocks resampled, "
                          f"{args.bootstrap} times): {low * 100:+.1f} % to {high * 100:+.1f} %"
                          + (f" (half-width {half * 100:.1f} %: at this noise some {needed} "
                             f"pairs, {minutes:.0f} minutes, would narrow it to 5 %)"
                             if needed else "") + "\n"
                          f"VERDICT keepalive RTT p99, {names[kind]}: "
                          f"{(b - a) / a * 100:+.1f} % ({a:.3f} -> {b:.3f} ms), interval "
                          f"{low * 100:+.1f} % to {high * 100:+.1f} %, noise floor "
                          f"{floor * 100:.1f} %; target < +{TARGET * 100:.0f} %: "
                          f"{interval_verdict(low, high)}")
        threshold = pooled(off, 0.99)
        for kind in ("off", *watchers):
            rtts = [x for b in blocks if b["kind"] == kind for x in b["rtts"]]
            slow = sum(1 for x in rtts if x > threshold)
            print(f"  round trips slower than the off p99 ({threshold:.2f} ms), {kind:5}: "
                  f"{slow} of {len(rtts)} ({slow / len(rtts) * 100:.2f} %)")
        print("CPU per second of each process (ms of CPU a second = 0.1 % of a core; means of "
              "the blocks):")
        for kind in watchers:
            if kind != "on":
                print(f"  ... {names[kind]}:")
            watched = [b for b in blocks if b["kind"] == kind]
            for name in pids:
                c_off = statistics.mean(b["cpu"][name] for b in off) * 1000
                c_on = statistics.mean(b["cpu"][name] for b in watched) * 1000
                print(f"  {name:8} off {c_off:7.2f}  on {c_on:7.2f}  watching costs "
                      f"{c_on - c_off:+7.2f} ms a watched second")
        print("Sync figures: medians of every batch of one kind of phase pooled:")

        def batches(key: str, kind: str, rounds: set[int] | None = None) -> list[float]:
            return [x for r in results if r["phase"] == kind
                    and (rounds is None or r["round"] in rounds) for x in r[key]]
        even = set(range(0, args.rounds, 2))
        odd = set(range(1, args.rounds, 2))
        for key, label in (("walls", f"sync of {args.files} files to both workers"),
                           ("durations", "master's integrity sync duration")):
            s_off = statistics.median(batches(key, "off"))
            s_on = statistics.median(batches(key, "on"))
            line = (f"  {label:42} off {s_off:8.3f} s   on {s_on:8.3f} s   change "
                    f"{change(s_off, s_on)} ({len(batches(key, 'off'))} / "
                    f"{len(batches(key, 'on'))} values)")
            if odd:
                a = statistics.median(batches(key, "off", even))
                b = statistics.median(batches(key, "off", odd))
                line += (f"\n  {'':42} noise floor: off phases of even rounds {a:.3f} s vs odd "
                         f"rounds {b:.3f} s: {abs(a - b) / min(a, b) * 100:.1f} %")
            print(line)
        if seen.get("scrapes"):
            s = sorted(seen["scrapes"])
            print(f"  one GET /metrics: p50 {statistics.median(s) * 1000:.2f} ms, worst "
                  f"{s[-1] * 1000:.2f} ms ({len(s)} scrapes, "
                  f"{seen['scrape_bytes'] / len(s) / 1000:.1f} kB each)")
        if seen.get("pages"):
            u = sorted(seen["pages"])
            print(f"  one GET /ui (HTTPS, token): p50 {statistics.median(u) * 1000:.1f} ms, "
                  f"worst {u[-1] * 1000:.1f} ms ({len(u)} loads, "
                  f"{seen['page_bytes'] / len(u) / 1000:.1f} kB each)")
    finally:
        for w in (watcher, niced):
            if w is not None:
                await w.stop()
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
    parser.add_argument("--rounds", type=int, default=6, help="sync phases of each kind")
    parser.add_argument("--blocks", type=int, default=40,
                        help="keepalive blocks (half off, half on)")
    parser.add_argument("--block-seconds", type=float, default=10.0,
                        help="counted seconds of a keepalive block")
    parser.add_argument("--guard", type=float, default=1.0,
                        help="seconds not counted at the start of each block")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1, help="order of the blocks")
    parser.add_argument("--probe-interval", type=float, default=0.005,
                        help="seconds between keepalives of the probe")
    parser.add_argument("--files", type=int, default=300, help="files per batch")
    parser.add_argument("--batches", type=int, default=3, help="file batches per phase")
    parser.add_argument("--niced-watcher", action="store_true",
                        help="also blocks watched by a second watcher at nice 19 (printed "
                             "apart; the default figure is unchanged)")
    parser.add_argument("--watcher", choices=("curl", "python"), default="curl",
                        help="what makes the watcher's requests: curl (default; compiled, "
                             "as Prometheus and a browser are) or this script's own treq "
                             "client (the figure of the sessions before the ninth)")
    parser.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nice", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--master-home", help=argparse.SUPPRESS)
    parser.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-ports", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the homes")
    args = parser.parse_args()
    task.react(lambda _: Deferred.fromCoroutine(watch(args) if args.watch else run(args)))


if __name__ == "__main__":
    main()
