"""The master link's endpoint and ClientService, with our own reconnect log line.

Twisted's ClientService logs ``Scheduling retry 3 to connect <TCP4ClientEndpoint object at
0x...> in 2.2500000000000004 seconds.``: no address, no reason. :class:`QuietClientService`
silences it and :meth:`WorkerNode.retry_delay` logs ``host:port``, the reason of the last
failure and the delay rounded instead; :class:`ReportingEndpoint` records that reason.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer


def _discard(event: dict[str, Any]) -> None:
    """A log observer that drops everything."""


class QuietClientService(ClientService):
    """ClientService without its own log lines (the worker node logs the retries)."""

    _log = Logger(observer=_discard)  # type: ignore[arg-type]


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """Wraps the master's endpoint: prints as ``host:port`` and tells the node why a
    connection attempt failed (``node.link_failed(address, reason)``)."""

    def __init__(self, endpoint: IStreamClientEndpoint, address: str, node: Any) -> None:
        self._endpoint = endpoint
        self.address = address
        self._node = node

    def __str__(self) -> str:
        return self.address

    __repr__ = __str__

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        d = self._endpoint.connect(protocolFactory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> Failure:
        self._node.link_failed(self.address, failure.getErrorMessage(),
                               timed_out=unanswered(failure))
        return failure


#: ``connect()`` errors of a host the network cannot reach now: no answer to ARP/neighbour
#: discovery (EHOSTUNREACH), no route (ENETUNREACH). Twisted reports the first as a plain
#: ConnectError carrying the errno.
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


def unanswered(failure: Failure) -> bool:
    """Whether a connection attempt failed because nobody answered, rather than because a
    host answered "no": a timeout, or an address the network cannot reach (a silent
    partition shows both, in turn, as the neighbour entry of the master expires). Such an
    attempt is retried within a second; a refusal backs off."""
    if failure.check(error.TimeoutError, error.TCPTimedOutError, error.NoRouteError):
        return True
    value = failure.value
    return isinstance(value, error.ConnectError) and getattr(value, "osError", None) in \
        _UNREACHABLE
