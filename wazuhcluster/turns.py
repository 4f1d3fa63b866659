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
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger


class BoundedPoller:
    """An epoll object whose :meth:`poll` returns at most ``limit`` events."""

    def __init__(self, poller: Any, limit: int) -> None:
        self.wrapped = poller
        self.limit = limit

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        if maxevents <= 0 or maxevents > self.limit:
            maxevents = self.limit
        events: list[tuple[int, int]] = self.wrapped.poll(timeout, maxevents)
        return events

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
