"""ReactorLag: how late the reactor runs a call it was asked to run at a given time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from wazuhcluster.interfaces import ITurnMeter

#: completed windows kept (one minute with 1 s windows)
WINDOWS_KEPT = 60


class ReactorLag(Service):
    """Schedules a call every ``interval`` seconds and records its lateness, together with
    the worst reactor turn since the previous call when a turn meter is there.

    A call chained with ``callLater`` (rather than a LoopingCall, which re-aligns to its
    start time and so hides how late a call was) knows exactly when it was due. While the
    reactor is blocked (a long callback, a big JSON dump) the call runs late by that long.

    With a turn meter (:class:`~wazuhcluster.interfaces.ITurnMeter`, the epoll reactor's
    :class:`~wazuhcluster.turns.BoundedPoller`) every turn is measured whole, whenever it
    happens, so the call only has to collect them: it runs every ``metered_interval``
    seconds (one wake-up a second instead of ten, which an idle node paid for in CPU) and
    its lag is the worst of its own lateness and of the turns since the previous call.
    Without one (another reactor, a test ``Clock``), the call samples every ``interval``.

    :param clock: the node's clock.
    :param interval: seconds between calls without a turn meter.
    :param window: seconds over which the worst lateness is kept as one entry of ``windows``.
    :param report: told every lag measured (the node's ``events.reactor_lag``, which feeds
        the Prometheus metrics).
    :param turns: gives the turn meter, or None (asked at start: the meter is installed by
        the node's turn bound, which starts first).
    :param metered_interval: seconds between calls with a turn meter.
    """

    def __init__(self, clock: IReactorTime, interval: float = 0.1, window: float = 1.0,
                 report: Callable[[float], None] | None = None,
                 turns: Callable[[], ITurnMeter | None] | None = None,
                 metered_interval: float = 1.0) -> None:
        self.clock = clock
        self.report = report
        self.interval = interval
        self.window = window
        self._turns = turns
        self._metered_interval = metered_interval
        self._meter: ITurnMeter | None = None
        self.last = 0.0
        self.worst = 0.0
        self.windows: deque[tuple[float, float]] = deque(maxlen=WINDOWS_KEPT)
        self._window_end = 0.0
        self._window_worst = 0.0
        self._due = 0.0
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._meter = self._turns() if self._turns is not None else None
        if self._meter is not None:
            self.interval = self._metered_interval
            self._meter.take_worst()  # only what happens from now on
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
        if self._meter is not None:
            lag = max(lag, self._meter.take_worst())
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
