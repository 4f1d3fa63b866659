"""The agent simulator's enrolment phase, churn and option parsing (no sockets)."""

from __future__ import annotations

import io
import random
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.messages import Answer
from wazuhcluster.enrolment.simulator import (
    SimulationOptions,
    Simulator,
    parse_nodes,
)


class FakeEnrol:
    """Every third agent is refused; the others get consecutive ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    def __call__(self, reactor: Any, host: str, port: int, request: bytes,
                 context: Any = None) -> Deferred[Answer]:
        self.calls.append((host, port, request))
        d: Deferred[Answer] = Deferred()
        n = len(self.calls)
        if n % 3 == 0:
            d.callback(Answer(error="Duplicate agent name: x"))
        else:
            d.callback(Answer(f"{n:03d}", "x", "any", "k" * 64))
        return d


class SimulatorTests(SynchronousTestCase):
    """Enrolment round-robin, counting, summary."""

    def test_enrol_round_robin(self) -> None:
        """Requests alternate between the nodes; agents attach to the node they used."""
        clock = Clock()
        fake = FakeEnrol()
        out = io.StringIO()
        options = SimulationOptions(nodes=[("127.0.0.1", 1), ("127.0.0.1", 2)], count=9,
                                    duration=30.0, prefix="t")
        simulator = Simulator(clock, options, out=out, enrol_one=fake)
        result = self.successResultOf(Deferred.fromCoroutine(simulator.run()))
        self.assertEqual([port for _, port, _ in fake.calls], [1, 2] * 4 + [1])
        self.assertEqual(fake.calls[0][2], b"OSSEC A:'t-00000'\n")
        self.assertEqual((result.enrolled, result.refused), (6, 3))
        self.assertEqual(result.errors, {"Duplicate agent name: x": 3})
        self.assertEqual(result.attached["001"], 0)
        self.assertEqual(result.attached["002"], 1)
        self.assertIn("summary: enrolled 6, refused 3", out.getvalue())

    def test_connection_failure_retried(self) -> None:
        """A refused connection is tried again a second later; at the end it counts."""
        clock = Clock()
        calls: list[int] = []

        def flaky(reactor: Any, host: str, port: int, request: bytes,
                  context: Any = None) -> Deferred[Answer]:
            calls.append(port)
            if len(calls) < 3:
                return fail(ConnectionRefusedError())
            return succeed(Answer("001", "x", "any", "k"))
        options = SimulationOptions(nodes=[("h", 1)], count=1, duration=30.0)
        d = Deferred.fromCoroutine(Simulator(clock, options, out=io.StringIO(),
                                             enrol_one=flaky).run())
        clock.pump([1.0] * 2)
        result = self.successResultOf(d)
        self.assertEqual((result.enrolled, result.retries), (1, 2))
        options = SimulationOptions(nodes=[("h", 1)], count=1, duration=3.0)
        d = Deferred.fromCoroutine(Simulator(clock, options, out=io.StringIO(),
                                             enrol_one=lambda *a, **k: fail(OSError())).run())
        clock.pump([1.0] * 3)
        self.assertEqual(self.successResultOf(d).errors, {"OSError": 1})

    def test_rate(self) -> None:
        """With --rate, enrolments are spaced in time."""
        clock = Clock()
        fake = FakeEnrol()
        options = SimulationOptions(nodes=[("h", 1)], count=4, rate=2.0, duration=30.0)
        d = Deferred.fromCoroutine(Simulator(clock, options, out=io.StringIO(),
                                             enrol_one=fake).run())
        self.assertEqual(len(fake.calls), 0)
        clock.advance(0.5)
        self.assertEqual(len(fake.calls), 1)
        clock.pump([0.5] * 3)
        self.assertEqual(len(fake.calls), 4)
        self.assertEqual(self.successResultOf(d).enrolled, 3)

    def test_churn(self) -> None:
        """P % per minute: with 10 s keepalives, about P/6 % move per tick, to another node."""
        options = SimulationOptions(nodes=[("h", 1), ("h", 2), ("h", 3)], count=600,
                                    keepalive=10.0, churn=60.0)
        simulator = Simulator(Clock(), options, out=io.StringIO(), rng=random.Random(1))
        simulator.result.attached = {f"{i:03d}": i % 3 for i in range(600)}
        before = dict(simulator.result.attached)
        simulator._churn()
        moved = [a for a in before if before[a] != simulator.result.attached[a]]
        self.assertIn(len(moved), (60, 61))
        self.assertEqual(simulator.result.moves, len(moved))

    def test_parse_nodes(self) -> None:
        """HOST:PORT lists."""
        self.assertEqual(parse_nodes("127.0.0.1:1515,::1:1516"),
                         [("127.0.0.1", 1515), ("::1", 1516)])
        for bad in ("host", "h:x", "h:0", ":1"):
            self.assertRaises(ValueError, parse_nodes, bad)
