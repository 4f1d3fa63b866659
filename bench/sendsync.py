"""Benchmark: sendsync through the cluster, concurrent (ours) versus one at a time (Wazuh
4.7.5's queue).

A real ``twistd wazuhcluster`` master and worker on 127.0.0.1. A stand-in authd on the master's
``queue/sockets/auth`` answers every request after ``DELAY`` seconds (a daemon doing real
work). From the worker's local socket, ``CLIENTS`` C-style clients (one connection per request,
one frame out, one frame in) send ``REQUESTS`` sendsync requests in all. The run is repeated
with ``sendsync.max_concurrent: 1`` (what Wazuh's one-at-a-time queue gives) and with the
default 16. Printed: wall time, requests/s, p50 and p99 latency seen by the clients.

Run: ``.venv/bin/python bench/sendsync.py [requests] [clients] [delay]``
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.integration.harness import Cluster
from tests.integration.test_sendsync_processes import one_frame
from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, encode


class SlowDaemon(Protocol):
    """Answers each message after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._decoder = LengthPrefixDecoder(1 << 20)

    def dataReceived(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            reactor.callLater(self._delay, self._answer, b"ok " + message)

    def _answer(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(encode(data))


class _Case:
    """What the harness needs from a test case."""

    failureException = AssertionError

    def __init__(self) -> None:
        self.cleanups: list[Any] = []

    def addCleanup(self, f: Any, *args: Any) -> None:
        self.cleanups.append((f, args))

    async def cleanup(self) -> None:
        for f, args in reversed(self.cleanups):
            result = f(*args)
            if isinstance(result, Deferred) or hasattr(result, "__await__"):
                await result


async def run_once(max_concurrent: int, requests: int, clients: int,
                   delay: float) -> dict[str, float]:
    case = _Case()
    try:
        c = Cluster(case)
        master = c.add_node("master", "master")
        with open(os.path.join(master.home, "etc", "wazuhcluster.yaml"), "w") as f:
            f.write(f"sendsync:\n  max_concurrent: {max_concurrent}\n  timeout: 600\n")
        worker = c.add_node("w1")
        sockets = os.path.join(master.home, "queue", "sockets")
        os.makedirs(sockets, exist_ok=True)
        port = await UNIXServerEndpoint(reactor, os.path.join(sockets, "auth")).listen(
            Factory.forProtocol(lambda: SlowDaemon(delay)))
        case.addCleanup(port.stopListening)
        master.start()
        await c.wait_ready(master)
        worker.start()
        await c.wait_listed(master, {"master", "w1"})
        await c.wait_log(worker, r"Successfully connected to master")
        request = {"daemon_name": "authd", "message": {"function": "add",
                                                        "arguments": {"name": "a"}}}
        latencies: list[float] = []
        slots = DeferredSemaphore(clients)

        async def one() -> None:
            start = time.perf_counter()
            frame = await one_frame(worker, b"sendsync", request)
            if frame.command != b"ok":
                raise RuntimeError(f"sendsync failed: {frame.payload[:200]!r}")
            latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await gatherResults([slots.run(lambda: Deferred.fromCoroutine(one()))
                             for _ in range(requests)])
        wall = time.perf_counter() - begin
        ordered = sorted(latencies)
        return {"wall_s": wall, "req_per_s": requests / wall,
                "p50_ms": statistics.median(ordered) * 1000,
                "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000}
    finally:
        await case.cleanup()


async def main(_reactor: Any, requests: int, clients: int, delay: float) -> None:
    print(f"sendsync: {requests} requests from {clients} concurrent clients on a worker, "
          f"stand-in authd answering after {delay * 1000:.0f} ms")
    for label, bound in (("one at a time (Wazuh 4.7.5's queue)", 1), ("max_concurrent 16", 16)):
        figures = await run_once(bound, requests, clients, delay)
        print(f"  {label:38s} " + json.dumps({k: round(v, 1) for k, v in figures.items()}))


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    n = int(args[0]) if args else 200
    k = int(args[1]) if len(args) > 1 else 20
    d = args[2] if len(args) > 2 else 0.02
    task.react(lambda r: Deferred.fromCoroutine(main(r, n, k, d)))
