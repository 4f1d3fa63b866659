"""ReactorLag: how late the reactor runs a call it was asked to run at a given time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: completed windows kept (one minute with 1 s windows)
WINDOWS_KEPT = 60


class ReactorLag(Service):
    """Schedules a call every ``interval`` seconds and records its lateness.

    A call chained with ``callLater`` (rather than a LoopingCall, which re-aligns to its
    start time and so hides how late a call was) knows exactly when it was due. While the
    reactor is blocked (a long callback, a big JSON dump) the call runs late by that long.

    :param clock: the node's clock.
    :param interval: seconds between calls.
    :param window: seconds over which the worst lateness is kept as one entry of ``windows``.
    :param report: told every lateness measured (the node's ``events.reactor_lag``, which
        feeds the Prometheus metrics).
    """

    def __init__(self, clock: IReactorTime, interval: float = 0.1, window: float = 1.0,
                 report: Callable[[float], None] | None = None) -> None:
        self.clock = clock
        self.report = report
        self.interval = interval
        self.window = window
        self.last = 0.0
        self.worst = 0.0
        self.windows: deque[tuple[float, float]] = deque(maxlen=WINDOWS_KEPT)
        self._window_end = 0.0
        self._window_worst = 0.0
        self._due = 0.0
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        now = self.clock.seconds()
        self._window_end = now + self.window
        self._schedule(now)

    def stopService(self) -> Any:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return super().stopService()

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        lag = max(0.0, now - self._due)
        self.last = lag
        self.worst = max(self.worst, lag)
        if self.report is not None:
            self.report(lag)
        if now >= self._window_end:
            # the window ends with this call: a long block is charged to the window it ends
            self.windows.append((round(self._window_end, 3), max(self._window_worst, lag)))
            self._window_worst = 0.0
            self._window_end += self.window * max(1, int((now - self._window_end)
                                                         // self.window) + 1)
        else:
            self._window_worst = max(self._window_worst, lag)
        self._schedule(now)

    def as_dict(self) -> dict[str, Any]:
        """The ``reactor_lag`` object of ``wzc_status`` (milliseconds)."""
        return {"interval_s": self.interval, "window_s": self.window,
                "last_ms": round(self.last * 1000, 3), "worst_ms": round(self.worst * 1000, 3),
                "windows": [[end, round(worst * 1000, 3)] for end, worst in self.windows]}
