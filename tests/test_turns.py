"""The bound on the descriptors one reactor turn serves (wazuhcluster/turns.py)."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wazuhcluster.config import Extensions
from wazuhcluster.interfaces import ITurnMeter
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


class _FakeEpoll:
    """An epoll object on a fake clock: each poll takes ``wait`` seconds and returns
    ``events`` (the next of the scripted answers)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.answers: list[tuple[float, list[tuple[int, int]]]] = []

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        wait, events = self.answers.pop(0)
        self.clock[0] += wait
        return events


class TurnMeterTests(SynchronousTestCase):
    """BoundedPoller measures every turn: the work between two polls, and how much a poll
    that timed out overran its timeout."""

    def setUp(self) -> None:
        self.now = [100.0]
        self.epoll = _FakeEpoll(self.now)
        self.meter = BoundedPoller(self.epoll, 8, now=lambda: self.now[0])

    def test_is_a_turn_meter(self) -> None:
        verifyObject(ITurnMeter, self.meter)

    def test_the_longest_turn_between_two_polls(self) -> None:
        """Turns of 2, 350 and 5 ms: the worst is 350 ms, then the measure starts again."""
        self.epoll.answers = [(0.01, [(3, 1)])] * 4
        self.meter.poll(1.0)
        for turn in (0.002, 0.35, 0.005):
            self.now[0] += turn  # the reactor works on what the poll gave it
            self.meter.poll(1.0)
        self.assertAlmostEqual(self.meter.take_worst(), 0.35)
        self.assertEqual(self.meter.take_worst(), 0.0)

    def test_the_turn_under_way_counts_up_to_now(self) -> None:
        """take_worst, called inside a turn (a timer of the reactor), counts that turn up to
        the call, and the rest of it in the next measure."""
        self.epoll.answers = [(0.0, [(3, 1)]), (0.0, [(3, 1)])]
        self.meter.poll(1.0)
        self.now[0] += 0.2
        self.assertAlmostEqual(self.meter.take_worst(), 0.2)
        self.now[0] += 0.03
        self.meter.poll(1.0)
        self.assertAlmostEqual(self.meter.take_worst(), 0.03)

    def test_a_timed_out_poll_that_overran_is_lag(self) -> None:
        """A poll with a 100 ms timeout that returns, empty, after 400 ms: the process waited
        300 ms for a CPU (less the millisecond epoll rounds the timeout up by)."""
        self.epoll.answers = [(0.4, [])]
        self.meter.poll(0.1)
        self.assertAlmostEqual(self.meter.take_worst(), 0.299)

    def test_waiting_for_events_is_not_lag(self) -> None:
        """An idle reactor waits 30 s for a socket (or with no timeout at all): no lag; a
        poll that returns events before its timeout is no lag either."""
        self.epoll.answers = [(30.0, [(3, 1)]), (5.0, []), (0.05, [(4, 1)])]
        self.meter.poll(-1)
        self.meter.poll(5.0)
        self.meter.poll(1.0)
        self.assertEqual(self.meter.take_worst(), 0.0)

    def test_no_poll_yet_no_lag(self) -> None:
        self.assertEqual(self.meter.take_worst(), 0.0)

    def test_turn_bound_gives_its_meter_while_installed(self) -> None:
        reactor = EPollReactor()
        self.addCleanup(reactor.waker.connectionLost, None)  # type: ignore[attr-defined]
        self.addCleanup(reactor._poller.close)
        bound = TurnBound(reactor, 8)
        self.assertIsNone(bound.meter())
        bound.startService()
        self.assertIs(bound.meter(), reactor._poller)
        bound.stopService()
        self.assertIsNone(bound.meter())
        self.assertIsNone(TurnBound(Clock(), 8).meter())
