"""Coalescing runner: never two runs at once, and one more run for requests made during one.

Both sides of the integrity sync need it: the master recomputes its local metadata when the
timer fires *or* when the file-system watcher says something changed; the worker runs its
integrity check when its timer fires *or* when the master sends ``wzc_syncnow``. However
many requests arrive while a run is in progress, exactly one more run follows it, and every
request's Deferred fires when a run that *started after the request* has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure


class Coalescer:
    """Runs ``work`` on request, one run at a time, folding concurrent requests together.

    :param work: the coroutine function to run; it should handle its own failures (an
        escaping failure is logged here and reported to the waiting requests as success,
        so that a caller's loop never stops).
    :param what: a short description for the log, e.g. ``"[Master] [Local integrity]"``.
    """

    _log = Logger()

    def __init__(self, work: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        self._work = work
        self._what = what
        self._running = False
        self._next: list[Deferred[None]] = []
        self.runs = 0

    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._running

    @property
    def pending(self) -> bool:
        """True if another run is scheduled after the current one."""
        return bool(self._next)

    def request(self) -> Deferred[None]:
        """Ask for a run; fire once a run started after this call has finished."""
        waiter: Deferred[None] = Deferred()
        self._next.append(waiter)
        if not self._running:
            self._start()
        return waiter

    def _start(self) -> None:
        waiters, self._next = self._next, []
        self._running = True
        self.runs += 1
        d = Deferred.fromCoroutine(self._work())
        d.addErrback(self._log_failure)
        d.addBoth(self._finished, waiters)

    def _log_failure(self, failure: Failure) -> None:
        self._log.failure("{what} Unexpected error", failure, what=self._what)

    def _finished(self, _: object, waiters: list[Deferred[None]]) -> None:
        self._running = False
        if self._next:
            self._start()
        for waiter in waiters:
            waiter.callback(None)
