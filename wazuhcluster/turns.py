"""A bound on what one reactor turn serves: at most ``max_events_per_turn`` ready
descriptors are handed out by each ``epoll_wait``.

Twisted's epoll reactor asks the kernel for as many ready descriptors as it watches and serves
them all before it runs its timers again. A master pushing a 17 MB client.keys to 100 workers
found all 100 sockets writable at once: one turn sent to every one of them, each ``send``
giving the GIL away and the CPU to the worker it woke (on a loaded box ~5 ms a call), and
the turn lasted 0.4-0.9 s; the same happened with 90 sockets readable. Timers (keepalives,
liveness probes, request timeouts) waited for the whole turn.

With the bound, epoll hands out at most ``max_events_per_turn`` descriptors per call; the
kernel keeps the others ready (level-triggered) and puts the served ones behind them, so the
next call serves the rest, in turn: no descriptor waits more than ``ready / bound`` turns, and
timers and thread results run between every two turns. The throughput is the same (every
ready descriptor is served); one more ``epoll_wait`` call per ``max_events_per_turn`` events
is the cost.

This wraps the reactor's poller object (``EPollReactor._poller``); on any other reactor it
does nothing.

The wrapper also measures every turn (:class:`~wazuhcluster.interfaces.ITurnMeter`): how long
the reactor worked between two polls (nothing else could be answered meanwhile), and how much
later than its timeout a poll that timed out returned (the process waited for a CPU). The
node's :class:`~wazuhcluster.status.lag.ReactorLag` reads the worst of them at each of its
ticks, so a long turn is measured whole whenever it happens, with no timer waking the node
ten times a second to find it (each wake-up of an idle node costs it ~0.5 ms of CPU on the
2-vCPU VM; 100 idle workers woken ten times a second took a quarter of a core).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.interfaces import ITurnMeter


@implementer(ITurnMeter)
class BoundedPoller:
    """An epoll object whose :meth:`poll` returns at most ``limit`` events, and that keeps
    the worst turn seen since :meth:`take_worst` was last called.

    :param now: a monotonic clock in seconds (tests inject one).
    """

    def __init__(self, poller: Any, limit: int,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.wrapped = poller
        self.limit = limit
        self._now = now
        #: when the last poll returned, or when take_worst last measured (None: no poll yet)
        self._returned: float | None = None
        self._worst = 0.0

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        if maxevents <= 0 or maxevents > self.limit:
            maxevents = self.limit
        now = self._now
        called = now()
        if self._returned is not None and called - self._returned > self._worst:
            self._worst = called - self._returned  # the turn that just ended
        events: list[tuple[int, int]] = self.wrapped.poll(timeout, maxevents)
        returned = self._returned = now()
        if not events and timeout is not None and timeout >= 0:
            # Timed out: anything past the timeout is time the process waited for a CPU
            # (epoll rounds the timeout up to the next millisecond: that much is not lag).
            late = returned - called - timeout - 0.001
            if late > self._worst:
                self._worst = late
        return events

    def take_worst(self) -> float:
        """The longest the reactor could not answer since the last call (seconds): the
        longest turn that ended, or the longest a timed-out poll overran; starts again."""
        worst, self._worst = self._worst, 0.0
        if self._returned is not None:
            # The turn under way (the caller's own) counts up to now, and in the next
            # window only from now on.
            now = self._now()
            worst = max(worst, now - self._returned)
            self._returned = now
        return worst

    def __getattr__(self, name: str) -> Any:  # register, modify, unregister, close, fileno
        return getattr(self.wrapped, name)


class TurnBound(Service):
    """Bounds the descriptors each reactor turn serves while the node runs.

    :param reactor: the node's reactor; only an epoll reactor (one with a ``_poller`` whose
        ``poll`` takes ``maxevents``) is bounded.
    :param limit: the most ready descriptors one turn serves.
    """

    _log = Logger()

    def __init__(self, reactor: Any, limit: int) -> None:
        self._reactor = reactor
        self._limit = limit
        self._installed: BoundedPoller | None = None

    def meter(self) -> ITurnMeter | None:
        """The turn meter while the bound is installed (an epoll reactor), else None."""
        return self._installed

    def startService(self) -> None:
        super().startService()
        poller = getattr(self._reactor, "_poller", None)
        if poller is None or not hasattr(poller, "poll") or not hasattr(self._reactor, "doPoll"):
            return
        if isinstance(poller, BoundedPoller):
            poller.limit = self._limit
            self._installed = poller
            return
        self._installed = BoundedPoller(poller, self._limit)
        self._reactor._poller = self._installed

    def stopService(self) -> Any:
        if self._installed is not None and self._reactor._poller is self._installed:
            self._reactor._poller = self._installed.wrapped
        self._installed = None
        return super().stopService()
