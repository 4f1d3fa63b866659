"""A fault-injecting TCP proxy written with Twisted (tc/netem is not available here).

Each accepted connection is relayed to ``--to HOST:PORT``; every byte in both directions goes
through a :class:`Shaper` that adds latency, caps the bandwidth, stalls the link for a while once
a byte count is reached, or resets the connection at a chosen byte. Run it as its own process
(inside a node's network namespace on the test bed)::

    python -m bench.testbed.proxy --listen 127.0.0.1:1516 --to 10.213.0.1:1516 \
        --latency-ms 100 --rate-kbit 2000

It only ever connects to ``--to``, which the test bed sets to a node of its own.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections import deque
from typing import Any, cast

from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

#: Receive buffer of each proxied socket: what a router port holds, so that the sender's TCP
#: (not our memory) keeps the data the shaped link has not carried yet.
ROUTER_BUFFER = 64 * 1024


class Shaper:
    """Delivers bytes to ``deliver`` late, at a capped rate, with optional stall and reset.

    :param clock: the reactor's time.
    :param deliver: called with each chunk when it may be delivered.
    :param reset: called (once) when ``reset_at`` bytes have passed.
    :param latency: seconds added to every chunk.
    :param rate: bytes per second (0: unlimited).
    :param stall_at: after this many bytes, hold everything for ``stall_for`` seconds (0: never).
    :param reset_at: after this many bytes, reset the connection (0: never).
    :param pause: called when more than ``max_queued`` bytes wait (stop reading the source);
        ``resume`` when they are down to half. A router's queue, not an endless buffer: the
        sender's TCP then sees the link's real pace (its data stays unacknowledged).
    """

    CHUNK = 16384
    max_queued = 256 * 1024

    def __init__(self, clock: IReactorTime, deliver: Any, reset: Any, *, latency: float = 0.0,
                 rate: float = 0.0, stall_at: int = 0, stall_for: float = 0.0,
                 reset_at: int = 0, pause: Any = None, resume: Any = None) -> None:
        self.clock = clock
        self.deliver = deliver
        self.reset = reset
        self.latency = latency
        self.rate = rate
        self.stall_at = stall_at
        self.stall_for = stall_for
        self.reset_at = reset_at
        self.passed = 0
        self._queue: deque[tuple[float, bytes]] = deque()
        self._link_free_at = 0.0
        self._call: IDelayedCall | None = None
        self._stalled = False
        self.closed = False
        self.queued = 0
        self.paused = False
        self._pause = pause
        self._resume = resume

    def feed(self, data: bytes) -> None:
        """Bytes arrived from one side, to be delivered to the other."""
        if self.closed:
            return
        now = self.clock.seconds()
        for start in range(0, len(data), self.CHUNK):
            piece = data[start:start + self.CHUNK]
            self._queue.append((now + self.latency, piece))
        self.queued += len(data)
        if self.queued > self.max_queued and not self.paused and self._pause is not None:
            self.paused = True
            self._pause()
        self._schedule()

    def _schedule(self) -> None:
        if self._call is not None or not self._queue or self.closed:
            return
        ready_at, _ = self._queue[0]
        now = self.clock.seconds()
        when = max(ready_at, self._link_free_at, now)
        self._call = self.clock.callLater(when - now, self._send)

    def _send(self) -> None:
        self._call = None
        if self.closed or not self._queue:
            return
        _, piece = self._queue.popleft()
        self.queued -= len(piece)
        if self.paused and self.queued <= self.max_queued // 2 and self._resume is not None:
            self.paused = False
            self._resume()
        if self.reset_at and self.passed + len(piece) >= self.reset_at:
            piece = piece[:self.reset_at - self.passed]
            self.passed += len(piece)
            if piece:
                self.deliver(piece)
            self.close()
            self.reset()
            return
        if self.stall_at and not self._stalled and self.passed + len(piece) >= self.stall_at:
            self._stalled = True
            self._link_free_at = self.clock.seconds() + self.stall_for
        self.passed += len(piece)
        self.deliver(piece)
        if self.rate:
            start = max(self._link_free_at, self.clock.seconds())
            self._link_free_at = start + len(piece) / self.rate
        self._schedule()

    def close(self) -> None:
        """Drop whatever is queued."""
        self.closed = True
        self._queue.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _Side(Protocol):
    """One end of a relayed connection."""

    other: _Side | None = None
    shaper: Shaper | None = None  # shapes what this side receives, toward the other side

    def dataReceived(self, data: bytes) -> None:
        if self.shaper is not None:
            self.shaper.feed(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.shaper is not None:
            self.shaper.close()
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class ProxyFactory(Factory):
    """Accepts clients and relays each to the target through two shapers."""

    def __init__(self, reactor: Any, host: str, port: int, **shaping: Any) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.shaping = shaping

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Accepted(self)


class _Accepted(_Side):
    def __init__(self, factory: ProxyFactory) -> None:
        self.proxy = factory

    def connectionMade(self) -> None:
        assert self.transport is not None
        cast(IPushProducer, self.transport).pauseProducing()
        upstream = _Side()
        f = self.proxy
        endpoint = TCP4ClientEndpoint(f.reactor, f.host, f.port, timeout=5)
        d = connectProtocol(endpoint, upstream)
        d.addCallbacks(self._linked, lambda _: self.transport.abortConnection())  # type: ignore

    def _linked(self, upstream: _Side) -> None:
        assert self.transport is not None and upstream.transport is not None
        f = self.proxy
        for side in (self, upstream):  # a router's small buffer, not megabytes of socket memory
            handle = side.transport.getHandle()  # type: ignore[union-attr]
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ROUTER_BUFFER)
        self.other, upstream.other = upstream, self

        def reset() -> None:
            for side in (self, upstream):
                if side.transport is not None:
                    side.transport.abortConnection()  # type: ignore[attr-defined]

        def flow(side: _Side) -> dict[str, Any]:
            producer = cast(IPushProducer, side.transport)
            return {"pause": producer.pauseProducing, "resume": producer.resumeProducing}

        self.shaper = Shaper(f.reactor, upstream.transport.write, reset, **f.shaping,
                             **flow(self))
        upstream.shaper = Shaper(f.reactor, self.transport.write, reset, **f.shaping,
                                 **flow(upstream))
        cast(IPushProducer, self.transport).resumeProducing()


def main(argv: list[str] | None = None) -> None:
    """Run the proxy until killed."""
    parser = argparse.ArgumentParser(prog="python -m bench.testbed.proxy")
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--to", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-kbit", type=float, default=0.0, help="bandwidth cap, each way")
    parser.add_argument("--stall-at", type=int, default=0, help="bytes before a stall")
    parser.add_argument("--stall-for", type=float, default=0.0, help="seconds of the stall")
    parser.add_argument("--reset-at", type=int, default=0, help="bytes before a reset")
    args = parser.parse_args(argv)
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.to.rsplit(":", 1)
    factory = ProxyFactory(global_reactor, thost, int(tport), latency=args.latency_ms / 1000,
                           rate=args.rate_kbit * 1000 / 8, stall_at=args.stall_at,
                           stall_for=args.stall_for, reset_at=args.reset_at)
    TCP4ServerEndpoint(global_reactor, int(lport), interface=lhost).listen(factory)
    sys.stdout.write(f"proxy {args.listen} -> {args.to} ready\n")
    sys.stdout.flush()
    global_reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
