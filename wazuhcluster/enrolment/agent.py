"""The agent side of the enrolment protocol (what ``agent-auth`` does): for the
``wazuhcluster-agents enrol`` and ``simulate`` commands, benchmarks and tests."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.enrolment.messages import Answer, parse_answer
from wazuhcluster.enrolment.tls import client_context

#: An answer longer than this is not authd's.
MAX_ANSWER = 65536


@implementer(IOpenSSLContextFactory)
class _ContextFactory:
    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def getContext(self) -> SSL.Context:
        return self._ctx


class _Enrol(Protocol):
    transport: Any

    def __init__(self, request: bytes, done: Deferred[bytes]) -> None:
        self._request = request
        self._done = done
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_ANSWER:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.callback(self._buffer[:MAX_ANSWER])


def make_context(ca: str | None = None, cert: str | None = None,
                 key: str | None = None) -> Any:
    """A context factory for :func:`enrol` (one can serve many connections)."""
    return _ContextFactory(client_context(ca, cert, key))


async def enrol(reactor: Any, host: str, port: int, request: bytes, *,
                context: Any = None, timeout: float = 30.0) -> Answer:
    """Open a TLS connection, send ``request``, read the answer until the manager closes.

    A connection closed without an answer (a refused certificate, too many connections)
    gives an Answer whose ``error`` says so.
    """
    done: Deferred[bytes] = Deferred()
    endpoint = SSL4ClientEndpoint(reactor, host, port, context or make_context(),
                                  timeout=int(timeout))
    await connectProtocol(endpoint, _Enrol(request, done))
    done.addTimeout(timeout, reactor)
    data = await done
    if not data:
        return Answer(error="connection closed without an answer")
    return parse_answer(data)
