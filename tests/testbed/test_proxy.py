"""The test bed's fault-injecting proxy: latency, bandwidth cap, stall and reset (Clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bench.testbed.proxy import Shaper


class ShaperTests(SynchronousTestCase):
    def make(self, **shaping: Any
             ) -> tuple[Clock, Shaper, list[tuple[float, bytes]], list[float]]:
        clock = Clock()
        delivered: list[tuple[float, bytes]] = []
        resets: list[float] = []
        shaper = Shaper(clock, lambda data: delivered.append((clock.seconds(), data)),
                        lambda: resets.append(clock.seconds()), **shaping)
        return clock, shaper, delivered, resets

    def test_latency_delays_every_byte(self) -> None:
        clock, shaper, delivered, _ = self.make(latency=0.1)
        shaper.feed(b"abc")
        clock.advance(0.099)
        self.assertEqual(delivered, [])
        clock.advance(0.001)
        self.assertEqual(delivered, [(0.1, b"abc")])

    def test_rate_spreads_chunks(self) -> None:
        clock, shaper, delivered, _ = self.make(rate=16384.0)  # one chunk per second
        shaper.feed(b"x" * (3 * Shaper.CHUNK))
        clock.advance(0)
        clock.pump([1.0] * 3)
        self.assertEqual([t for t, _ in delivered], [0.0, 1.0, 2.0])
        self.assertEqual(sum(len(d) for _, d in delivered), 3 * Shaper.CHUNK)

    def test_order_kept(self) -> None:
        clock, shaper, delivered, _ = self.make(latency=0.05, rate=1000.0)
        for piece in (b"1", b"22", b"333"):
            shaper.feed(piece)
        clock.pump([0.01] * 100)
        self.assertEqual(b"".join(d for _, d in delivered), b"122333")

    def test_stall_holds_traffic_once(self) -> None:
        clock, shaper, delivered, _ = self.make(stall_at=10, stall_for=5.0)
        shaper.feed(b"a" * 10)
        shaper.feed(b"b" * 10)
        clock.advance(0)
        self.assertEqual(b"".join(d for _, d in delivered), b"a" * 10)
        clock.advance(4.9)
        self.assertEqual(len(delivered), 1)
        clock.advance(0.1)
        self.assertEqual(b"".join(d for _, d in delivered), b"a" * 10 + b"b" * 10)

    def test_reset_at_byte(self) -> None:
        clock, shaper, delivered, resets = self.make(reset_at=5)
        shaper.feed(b"0123456789")
        clock.advance(0)
        self.assertEqual(delivered, [(0.0, b"01234")])
        self.assertEqual(resets, [0.0])
        shaper.feed(b"more")
        clock.advance(1)
        self.assertEqual(len(delivered), 1)

    def test_close_drops_queue(self) -> None:
        clock, shaper, delivered, _ = self.make(latency=1.0)
        shaper.feed(b"late")
        shaper.close()
        clock.advance(2)
        self.assertEqual(delivered, [])

    def test_backpressure_pauses_and_resumes_the_source(self) -> None:
        """Past max_queued bytes the source is paused; at half it is resumed."""
        clock = Clock()
        events: list[str] = []
        shaper = Shaper(clock, lambda data: None, lambda: None, rate=16384.0,
                        pause=lambda: events.append("pause"),
                        resume=lambda: events.append("resume"))
        shaper.feed(b"x" * (Shaper.max_queued + Shaper.CHUNK))
        self.assertEqual(events, ["pause"])
        clock.advance(0)
        clock.pump([1.0] * (Shaper.max_queued // Shaper.CHUNK // 2 + 1))
        self.assertEqual(events, ["pause", "resume"])
