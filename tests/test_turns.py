"""The bound on the descriptors one reactor turn serves (wazuhcluster/turns.py)."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.config import Extensions
from wazuhcluster.turns import BoundedPoller, TurnBound


class _Readable:
    """A socket with a byte waiting: ready to read until it is read."""

    def __init__(self, served: list[int]) -> None:
        self.here, self.there = socket.socketpair()
        self.there.send(b"x")
        self.served = served

    def fileno(self) -> int:
        return self.here.fileno()

    def doRead(self) -> None:
        self.here.recv(1)
        self.served.append(self.fileno())

    def logPrefix(self) -> str:
        return "readable"

    def connectionLost(self, reason: Any) -> None:
        pass

    def close(self) -> None:
        self.here.close()
        self.there.close()


class TurnBoundTests(SynchronousTestCase):
    def reactor_with(self, count: int) -> tuple[EPollReactor, list[_Readable], list[int]]:
        reactor = EPollReactor()
        served: list[int] = []
        readers = [_Readable(served) for _ in range(count)]
        for reader in readers:
            reactor.addReader(reader)  # type: ignore[arg-type]

        def clean() -> None:
            for reader in readers:
                reactor.removeReader(reader)  # type: ignore[arg-type]
                reader.close()
            reactor._poller.close()
            reactor.waker.connectionLost(None)  # type: ignore[attr-defined]
        self.addCleanup(clean)
        return reactor, readers, served

    def test_one_turn_serves_at_most_the_bound_and_every_socket_in_turn(self) -> None:
        """40 sockets ready at once: each turn serves 8 of them, and five turns serve all
        40, each once (the kernel puts served descriptors behind the waiting ones)."""
        reactor, readers, served = self.reactor_with(40)
        bound = TurnBound(reactor, 8)
        bound.startService()
        per_turn = []
        for _ in range(5):
            before = len(served)
            reactor.doPoll(0)
            per_turn.append(len(served) - before)
        self.assertEqual(per_turn, [8, 8, 8, 8, 8])
        self.assertEqual(sorted(served), sorted(r.fileno() for r in readers))

    def test_unbounded_reactor_serves_every_ready_socket_in_one_turn(self) -> None:
        """What the bound changes: without it one turn serves all 40 (and after stopService
        the reactor's own poller is back)."""
        reactor, _readers, served = self.reactor_with(40)
        original = reactor._poller
        bound = TurnBound(reactor, 8)
        bound.startService()
        self.assertIsInstance(reactor._poller, BoundedPoller)
        bound.stopService()
        self.assertIs(reactor._poller, original)
        reactor.doPoll(0)
        self.assertEqual(len(served), 40)

    def test_other_reactors_are_left_alone(self) -> None:
        clock = Clock()
        bound = TurnBound(clock, 8)
        bound.startService()
        bound.stopService()
        self.assertFalse(hasattr(clock, "_poller"))

    def test_default_bound(self) -> None:
        self.assertEqual(Extensions().max_events_per_turn, 8)
