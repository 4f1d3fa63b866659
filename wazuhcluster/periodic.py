"""periodic(): a named TimerService on an injected clock."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime


def periodic(name: str, interval: float, tick: Callable[[], Coroutine[Any, Any, None]],
             clock: IReactorTime) -> TimerService:
    """A TimerService called ``name`` that runs ``tick`` every ``interval`` seconds.

    The tick must handle its own failures (``failuresHandled``): an exception that escapes
    it would stop the loop for good.
    """
    service = TimerService(interval, tick)
    service.clock = clock
    service.setName(name)
    return service
