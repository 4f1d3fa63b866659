"""Putting TLS under the cluster link: the master's sniffing listener and the worker's endpoint.

The master's port serves plain Wazuh-style peers and TLS peers at once: the first bytes tell
them apart. A TLS connection starts with a handshake record carrying a ClientHello
(``16 03 xx LL LL 01 ...`` with the client version ``03 0x`` at offset 9); a plain Wazuh peer
starts with a 20-byte frame header whose command field (offset 8) is ``hello``, so offset 9 is
``e``. Eleven bytes decide without any ambiguity.

Between the TLS layer and the cluster protocol sits a :class:`TlsTap`, which logs why a TLS
connection ended before its handshake completed (one line, a Wazuh-style code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.errors import ClusterError
from wazuhcluster.tls.contexts import LinkInfo, describe_failure

#: Bytes needed to tell a TLS ClientHello from a plain ``hello`` frame.
SNIFF_BYTES = 11

#: Wazuh-style error codes of the TLS link (docs/protocol.md, "TLS on the cluster link").
TLS_REQUIRED = 3060
NAME_MISMATCH = 3061
CERT_REFUSED = 3062
HANDSHAKE_FAILED = 3063


def looks_like_tls(first: bytes) -> bool:
    """True if ``first`` (at least SNIFF_BYTES bytes) starts a TLS ClientHello."""
    return (first[0] == 0x16 and first[1] == 0x03 and first[5] == 0x01
            and first[9] == 0x03)


def link_info(protocol: Any) -> LinkInfo | None:
    """The :class:`LinkInfo` of a TLS protocol, if any."""
    info = getattr(protocol, "wzc_link", None)
    return info if isinstance(info, LinkInfo) else None


class TlsTap(Protocol):
    """Forwards everything to the cluster protocol; logs a TLS failure before it.

    :param inner: the ClusterProtocol.
    :param report: called with (reason line) when the connection ends before the handshake
        completed.
    """

    def __init__(self, inner: Any, report: Callable[[str], None], side: str) -> None:
        self.inner = inner
        self._report = report
        self._side = side

    _held: list[bytes] | None = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.inner.makeConnection(transport)

    def hold(self) -> None:
        """Collect the records of one socket read instead of passing each one on."""
        self._held = []

    def release(self) -> None:
        """Pass on what was collected since :meth:`hold`, as one piece."""
        held, self._held = self._held, None
        if held:
            self.inner.dataReceived(held[0] if len(held) == 1 else b"".join(held))

    def dataReceived(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.release()
        info = link_info(self.transport)
        if (info is None or not info.handshake_done or info.verify_error
                or reason.check(SSL.Error)):
            line = describe_failure(reason, info, self._side)
            self.inner.link_failure = line  # already logged: the hello need not say it again
            self._report(line)
        self.inner.connectionLost(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CoalescingTLS(TLSMemoryBIOProtocol):
    """Twisted's TLS protocol, handing the plaintext of one socket read to the cluster protocol
    in one call (Twisted passes each 16 KiB TLS record separately: 64 calls per MiB)."""

    def dataReceived(self, data: bytes) -> None:
        tap = self.wrappedProtocol
        if not isinstance(tap, TlsTap):
            super().dataReceived(data)
            return
        tap.hold()
        try:
            super().dataReceived(data)
        finally:
            tap.release()


class CoalescingTLSFactory(TLSMemoryBIOFactory):
    """TLSMemoryBIOFactory building :class:`CoalescingTLS`."""

    protocol = CoalescingTLS


class SniffingFactory(Factory):
    """The master's listening factory when ``tls.mode`` is ``prefer`` or ``require``.

    :param wrapped: builds the cluster protocol (ClusterServerFactory).
    :param creator: the server connection creator (current TLS context).
    :param clock: for the deadline of the first bytes.
    :param timeout: seconds a new connection has to send its first bytes.
    :param on_plain: called with each plain (non-TLS) cluster protocol.
    """

    noisy = False
    _log = Logger()

    def __init__(self, wrapped: Any, creator: Any, clock: IReactorTime, timeout: float,
                 on_plain: Callable[[Any], None]) -> None:
        self.wrapped = wrapped
        self.tls_factory = CoalescingTLSFactory(creator, False, wrapped)
        self.clock = clock
        self.timeout = timeout
        self.on_plain = on_plain

    def buildProtocol(self, addr: IAddress | None) -> Any:
        inner = self.wrapped.buildProtocol(addr)
        if inner is None:
            return None
        return _Sniffer(self, inner)


class _Sniffer(Protocol):
    """Buffers the first bytes of a connection, then hands it to TLS or to the plain protocol."""

    _log = Logger()

    def __init__(self, factory: SniffingFactory, inner: Any) -> None:
        self.owner = factory
        self.inner = inner
        self.target: Any = None
        self._buffer = b""
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self.owner.clock.callLater(self.owner.timeout, self._overdue)

    def _overdue(self) -> None:
        self._timer = None
        if self.target is None and self.transport is not None:
            self._log.info("[Master] [Main] Closing connection with {peer}: nothing sent within "
                           "{timeout} s", peer=_host(self.transport), timeout=self.owner.timeout)
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.target is not None:
            self.target.dataReceived(data)
            return
        self._buffer += data
        if len(self._buffer) < SNIFF_BYTES:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        peer = _host(self.transport)
        if looks_like_tls(self._buffer):
            tap = TlsTap(self.inner, lambda line: self._refused(peer, line), "master")
            target: Protocol = CoalescingTLS(self.owner.tls_factory, tap)
        else:
            target = self.inner
            self.owner.on_plain(self.inner)
        self.target = target
        buffered, self._buffer = self._buffer, b""
        target.makeConnection(self.transport)
        target.dataReceived(buffered)

    def _refused(self, peer: str, line: str) -> None:
        error = ClusterError(CERT_REFUSED if "certificate" in line else HANDSHAKE_FAILED, line)
        self._log.error("[Master] [Main] Refused TLS connection from {peer}: {error}",
                        peer=peer, error=str(error))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.target is not None:
            self.target.connectionLost(reason)


def _host(transport: Any) -> str:
    try:
        return str(transport.getPeer().host)
    except AttributeError:
        return "unknown"


class TapFactory(Factory):
    """Wraps each protocol of ``wrapped`` in a :class:`TlsTap`."""

    def __init__(self, wrapped: Any, report: Callable[[str], None]) -> None:
        self.wrapped = wrapped
        self.report = report

    def buildProtocol(self, addr: IAddress | None) -> Any:
        inner = self.wrapped.buildProtocol(addr)
        return None if inner is None else TlsTap(inner, self.report, "worker")


@implementer(IStreamClientEndpoint)
class TlsClientEndpoint:
    """The worker's endpoint to the master: TCP, then TLS from ``creator``.

    Fires ``connect`` with the cluster protocol (as ``wrapClientTLS`` does), so ClientService
    sees the same object with or without TLS.
    """

    def __init__(self, tcp: IStreamClientEndpoint, creator: Any,
                 report: Callable[[str], None]) -> None:
        self._tcp = tcp
        self._creator = creator
        self._report = report

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        tls = CoalescingTLSFactory(self._creator, True, TapFactory(protocolFactory,
                                                                   self._report))
        d: Deferred[Any] = self._tcp.connect(tls)

        def unwrap(protocol: Any) -> Any:
            return protocol.wrappedProtocol.inner
        return d.addCallback(unwrap)
