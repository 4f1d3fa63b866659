"""HelloGate: caps on the master's connections that have not completed ``hello``.

Until its hello is accepted a connection is anonymous: anyone who can reach the port can
open thousands and hold them for ``hello_timeout`` seconds each, which with the common
1024 open-file limit exhausts the node's descriptors (``EMFILE``) and locks out real
workers. The gate bounds them:

* per source address (``max_pre_hello_per_address``): a connection beyond the limit is
  closed at once, before anything is read from it;
* in total (``max_pre_hello_connections``): when full, the *oldest* waiting connection is
  closed to make room (a real worker says hello within milliseconds, a flood does not).

Connections leave the gate when their hello is accepted or when they close.
"""

from __future__ import annotations

import collections
import resource
from typing import Any

from twisted.logger import Logger

#: Descriptors a master needs beyond its pre-hello cap: workers, local clients, files
#: being received, the log, SQLite, the thread pool.
DESCRIPTORS_BEYOND_PRE_HELLO = 512


class HelloGate:
    """Counts the connections waiting for hello, globally and per address.

    :param max_total: ``max_pre_hello_connections``.
    :param max_per_address: ``max_pre_hello_per_address``.
    """

    _log = Logger()

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._waiting: collections.OrderedDict[Any, str] = collections.OrderedDict()
        self._per_address: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def admit(self, address: str) -> bool:
        """May a new connection from ``address`` be accepted? (Makes room if needed.)"""
        if self._per_address[address] >= self.max_per_address:
            self.refused += 1
            if _worth_logging(self.refused):
                self._log.warn("[Master] [Main] Closed a connection from {address}: "
                               "{limit} connections from it are already waiting for hello "
                               "(max_pre_hello_per_address); {count} closed so far.",
                               address=address, limit=self.max_per_address,
                               count=self.refused)
            return False
        while len(self._waiting) >= self.max_total:
            oldest, oldest_address = next(iter(self._waiting.items()))
            self.leave(oldest)
            self.evicted += 1
            if _worth_logging(self.evicted):
                self._log.warn("[Master] [Main] {total} connections waiting for hello "
                               "(max_pre_hello_connections): closing the oldest, from "
                               "{address}; {count} closed so far.", total=self.max_total,
                               address=oldest_address, count=self.evicted)
            # closed without one log line each (a flood would write thousands)
            transport = getattr(oldest, "transport", None)
            if transport is not None:
                transport.abortConnection()
            else:
                oldest.disconnect("too many connections waiting for hello")
        return True

    def enter(self, connection: Any, address: str) -> None:
        """``connection`` (an IPeer) from ``address`` now waits for its hello."""
        self._waiting[connection] = address
        self._per_address[address] += 1

    def leave(self, connection: Any) -> None:
        """``connection`` said hello or closed."""
        address = self._waiting.pop(connection, None)
        if address is not None:
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


def _worth_logging(count: int) -> bool:
    """Log the 1st, 10th, 100th, ... occurrence: a flood makes a few lines, not millions."""
    while count % 10 == 0:
        count //= 10
    return count == 1


def descriptor_shortfall(max_pre_hello: int) -> tuple[int, int] | None:
    """``(soft limit, needed)`` if RLIMIT_NOFILE is below what the caps need, else None."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_pre_hello + DESCRIPTORS_BEYOND_PRE_HELLO
    if soft != resource.RLIM_INFINITY and soft < needed:
        return soft, needed
    return None
