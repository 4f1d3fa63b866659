"""How long does serving ``/ui``, ``/ui/data`` and ``/metrics`` hold a master's reactor?

Run with ``.venv/bin/python bench/ui_lag.py``. It prints figures; nothing is asserted.

A master node (the whole tree of ``wazuhcluster.node``: REST API with its status page, metrics
listener) runs in this process, with the last hour of syncs of ``--workers`` workers in its
history and metrics (``--syncs`` records, fed through the node's events as real syncs are). A
client in a process of its own (plain ``http.client``, one persistent connection per port, as
a browser and a Prometheus keep theirs) fetches each page ``--requests`` times, one at a time.
Meanwhile a timer in the master's reactor is due every millisecond; how late it runs is how
long the reactor was held (by the request's work on the reactor, or waiting for the GIL that a
thread of the node's pool holds). Per request: the worst lateness while it was served, the
sum of the lateness over 1 ms (time the reactor could not answer anything else), and the
process CPU it cost (``time.process_time``: the reactor and the pool's threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from bench.api import ADMIN, KEY, free_port, sleep, wait_until

CLIENT = r'''
import base64, http.client, json, ssl, sys, time
api_port, metrics_port = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
api = http.client.HTTPSConnection("127.0.0.1", api_port, context=ctx, timeout=60)
met = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=60)
basic = base64.b64encode(sys.argv[3].encode()).decode()
api.request("POST", "/security/user/authenticate?raw=true",
            headers={"Authorization": "Basic " + basic})
token = api.getresponse().read().decode().strip()
print("ready", flush=True)
for line in sys.stdin:
    what = line.strip()
    start = time.perf_counter()
    if what == "metrics":
        met.request("GET", "/metrics"); r = met.getresponse()
    else:
        api.request("GET", what, headers={"Authorization": "Bearer " + token})
        r = api.getresponse()
    body = r.read()
    print(json.dumps({"status": r.status, "bytes": len(body),
                      "ms": (time.perf_counter() - start) * 1000}), flush=True)
'''


class Client(ProcessProtocol):
    """The client process: one request per line written, one JSON line back."""

    def __init__(self, api_port: int, metrics_port: int) -> None:
        self.lines: list[str] = []
        self.buffer = b""
        self.waiting: Deferred[str] | None = None
        reactor.spawnProcess(self, sys.executable, [
            sys.executable, "-c", CLIENT, str(api_port), str(metrics_port),
            f"{ADMIN[0]}:{ADMIN[1]}"], env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2})

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if self.waiting is not None:
                d, self.waiting = self.waiting, None
                d.callback(line.decode())
            else:
                self.lines.append(line.decode())

    def next_line(self) -> Deferred[str]:
        if self.lines:
            d: Deferred[str] = Deferred()
            d.callback(self.lines.pop(0))
            return d
        self.waiting = Deferred()
        return self.waiting

    async def get(self, what: str) -> dict[str, Any]:
        assert self.transport is not None
        self.transport.write(what.encode() + b"\n")
        return dict(json.loads(await self.next_line()))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.closeStdin()


class Ticker:
    """A call due every ``interval`` seconds, chained with callLater; records how late."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (when run, lateness in s)
        self._due = 0.0
        self._call: Any = None

    def start(self) -> None:
        self._due = time.perf_counter() + self.interval
        self._call = reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.samples.append((now, max(0.0, now - self._due)))
        self._due = now + self.interval
        self._call = reactor.callLater(self.interval, self._tick)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Worst lateness and the sum of lateness beyond 1 ms, for ticks in [start, end]."""
        late = [x for t, x in self.samples if start <= t <= end]
        return (max(late, default=0.0), sum(max(0.0, x - 0.001) for x in late))


def feed(node: Any, workers: int, syncs: int, now: float) -> None:
    """``syncs`` syncs of the last hour through the node's events (history and metrics)."""
    kinds = ("integrity_check", "integrity_sync", "agent_info")
    for i in range(syncs):
        ended = now - 3500 + 3490 * i / max(1, syncs)
        duration = 0.01 + (i * 7919 % 1000) / 5000
        node.events.sync_done(f"worker{i % workers + 1}", kinds[i // workers % 3],
                              ended - duration, ended, True,
                              {"created": i % 5, "updated": 1, "deleted": 0, "bytes": 2048,
                               "rows": 3})
    for i in range(12):
        node.events.dapi_request(f"wazuh.function{i}", "ok")


async def run(args: argparse.Namespace) -> None:
    from wazuhcluster.api.users import UserStore
    from wazuhcluster.config import load_config
    from wazuhcluster.homes import make_home
    from wazuhcluster.node import make_node_service

    base = tempfile.mkdtemp(prefix="wzc-bench-uilag-", dir="/tmp")
    api_port, metrics_port = free_port(), free_port()
    home = make_home(os.path.join(base, "master"), node_name="master", node_type="master",
                     key=KEY, port=free_port(), api_port=api_port, metrics_port=metrics_port)
    with open(os.path.join(home, "api", "configuration", "api.yaml"), "a") as f:
        f.write("access:\n  max_request_per_minute: 0\n")
    UserStore(home).add(*ADMIN, role="administrator")
    root = make_node_service(load_config(home), reactor)
    root.startService()
    log = os.path.join(home, "logs", "cluster.log")
    try:
        def listening() -> bool:
            if not os.path.exists(log):
                return False
            with open(log) as f:
                return "[API] [Main] Listening" in f.read()
        await wait_until("the API", listening, 60)
        node = _role_node(root)
        feed(node, args.workers, args.syncs, time.time())
        client = Client(api_port, metrics_port)
        ready = await client.next_line()
        if ready != "ready":
            raise RuntimeError(f"client: {ready}")
        ticker = Ticker()
        ticker.start()
        paths = [("/ui", "GET /ui"), ("/ui/data", "GET /ui/data"), ("metrics", "GET /metrics")]
        figures: dict[str, list[tuple[float, float, float, float, int]]] = {p: [] for p, _ in paths}
        idle: list[tuple[float, float]] = []
        for _ in range(args.requests):
            for path, _label in paths:
                await sleep(0.05)
                cpu, start = time.process_time(), time.perf_counter()
                answer = await client.get(path)
                cpu = time.process_time() - cpu
                if answer["status"] != 200:
                    raise RuntimeError(f"{path}: {answer}")
                await sleep(0.005)  # the ticks due right after the answer
                worst, held = ticker.window(start, time.perf_counter())
                figures[path].append((worst, held, cpu, answer["ms"], answer["bytes"]))
            start = time.perf_counter()
            await sleep(0.05)
            idle.append(ticker.window(start, time.perf_counter()))
        ticker.stop()
        client.close()
        load = os.getloadavg()
        print(f"master in this process, {args.workers} workers' worth of syncs "
              f"({args.syncs} in the history and the metrics), {args.requests} requests "
              f"each, one at a time; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        print(f"  {'':14} {'reactor held (worst tick lateness)':>36} {'held > 1 ms, sum':>18} "
              f"{'CPU':>9} {'client time':>12} {'bytes':>8}")
        for path, label in paths:
            rows = figures[path]
            worst = sorted(r[0] for r in rows)
            print(f"  {label:14} p50 {statistics.median(worst) * 1000:7.2f} ms "
                  f"max {worst[-1] * 1000:7.2f} ms {'':9}"
                  f"{statistics.median(r[1] for r in rows) * 1000:8.2f} ms "
                  f"{statistics.median(r[2] for r in rows) * 1000:7.2f} ms "
                  f"{statistics.median(r[3] for r in rows):9.2f} ms "
                  f"{statistics.median(r[4] for r in rows):8.0f}")
        iw = sorted(w for w, _ in idle)
        print(f"  {'idle 50 ms':14} p50 {statistics.median(iw) * 1000:7.2f} ms "
              f"max {iw[-1] * 1000:7.2f} ms (no request: the floor of this machine)")
        print("  (medians over the requests; CPU: this process, reactor and threads)")
    finally:
        await root.stopService()
        shutil.rmtree(base, ignore_errors=True)


def _role_node(root: Any) -> Any:
    for service in root:
        if hasattr(service, "events") and hasattr(service, "dapi"):
            return service
    raise RuntimeError("no role node in the tree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--syncs", type=int, default=2000,
                        help="syncs of the last hour in the history")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    task.react(lambda _: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
