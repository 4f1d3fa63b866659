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
from wazuhcluster.tls.direct import can_go_direct, go_direct

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
        if not held:
            return
        if len(held) == 1:
            self.inner.dataReceived(held[0])
            return
        take = getattr(self.inner, "pieces_received", None)
        if take is not None:
            take(held, sum(len(piece) for piece in held))  # no join: the decoder keeps pieces
        else:
            self.inner.dataReceived(b"".join(held))

    def dataReceived(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self.inner.dataReceived(data)

    def deliver(self, pieces: list[Any], size: int) -> None:
        """Pass on what one socket read gave (``size`` bytes in all; direct mode): pieces may
        be memoryviews, which only ``ClusterProtocol.pieces_received`` is given as they are."""
        take = getattr(self.inner, "pieces_received", None)
        if take is not None:
            take(pieces, size)
        else:
            self.inner.dataReceived(b"".join(pieces))

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
    """Twisted's TLS protocol with fewer trips through Python per byte (the cluster link moves
    messages of up to 5 MiB; Twisted's TLS layer is built for small writes):

    * sending: OpenSSL encrypts record after record straight from the caller's buffer (no
      slice copies), and the records of up to :data:`WRITE_PIECE` plaintext bytes go to the
      socket as one write (Twisted: per 16 KiB record a slice copied, encrypted, read back
      and written); header and payload of a frame can come as a ``writeSequence`` without
      being joined first; the TCP transport sends up to :data:`SEND_LIMIT` per call;
    * receiving: the socket is read in :data:`READ_SIZE` pieces (Twisted: 64 KiB), and the
      plaintext records of one read reach the cluster protocol in one call, as a list of pieces
      when it takes them (``ClusterProtocol.pieces_received``), else joined (Twisted: one
      call per 16 KiB record).

    Once the handshake is done, a link over a reactor TCP connection goes *direct*
    (:mod:`wazuhcluster.tls.direct`): OpenSSL reads and writes the socket itself and none of
    the memory-BIO copies above remain. Other transports (tests' in-memory ones) stay in
    memory-BIO mode.
    """

    _direct = False

    def makeConnection(self, transport: Any) -> None:
        if hasattr(transport, "bufferSize"):
            # The read size of a TCP transport (and the write buffer size above which it pauses
            # a registered producer): many 16 KiB records per read and per call up.
            transport.bufferSize = READ_SIZE
        if hasattr(transport, "SEND_LIMIT"):
            transport.SEND_LIMIT = SEND_LIMIT  # bytes per send() call (Twisted: 128 KiB)
        super().makeConnection(transport)

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
        self._maybe_go_direct()

    # -- direct mode (tls/direct.py) ------------------------------------------------------------
    def _maybe_go_direct(self) -> None:
        """Hand the socket to OpenSSL if the handshake is done and nothing is half-way."""
        if (self._direct or not self._handshakeDone or self._lostTLSConnection or self._aborted
                or self.disconnecting or self._appSendBuffer):
            return
        connection = self._tlsConnection
        if (connection is None or connection.pending()
                or not can_go_direct(self.transport, connection)):
            return
        self._flushSendBIO()  # what the handshake left in the memory BIO, to the TCP buffer
        go_direct(self.transport, self, connection)
        self._direct = True

    @property
    def direct(self) -> bool:
        """True once OpenSSL reads and writes the socket itself."""
        return self._direct

    def direct_received(self, pieces: list[Any], size: int) -> None:
        """Plaintext records of one socket read (direct mode)."""
        if self._aborted or self._lostTLSConnection:
            return
        tap = self.wrappedProtocol
        if isinstance(tap, TlsTap):
            tap.deliver(pieces, size)
        else:
            for piece in pieces:
                tap.dataReceived(bytes(piece))

    def peer_closed_tls(self) -> None:
        """The peer's close_notify arrived (direct mode): flush what is buffered, then close
        (our close_notify goes out just before the socket closes)."""
        self._tlsShutdownFinished(None)

    def _flushSendBIO(self) -> None:
        if self._direct:
            return  # no memory BIO any more
        self._flush_send_bio()

    def _shutdownTLS(self) -> None:
        if self._direct:
            # The transport flushes its plaintext, then sends close_notify and closes.
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        super()._shutdownTLS()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._direct:
            self._lostTLSConnection = True  # no memory BIO to drain
        super().connectionLost(reason)

    def _write(self, data: bytes) -> None:
        self._write_pieces((data,))

    def writeSequence(self, iovec: Any) -> None:
        if self.disconnecting and self._producer is None:
            return  # as write(): nothing is written after loseConnection
        self._write_pieces(iovec)

    def _write_pieces(self, pieces: Any) -> None:
        """Encrypt ``pieces`` in order and write the records; what OpenSSL cannot take yet
        (a TLS 1.2 renegotiation in progress) is buffered as Twisted does."""
        if self._lostTLSConnection:
            return
        if self._direct:
            self.transport.writeSequence(pieces)  # type: ignore[union-attr]
            return
        connection = self._tlsConnection
        pieces = list(pieces)
        for index, piece in enumerate(pieces):
            view = memoryview(piece)
            done = 0
            flushed = 0
            while done < len(view):
                try:
                    # (pyOpenSSL enables partial writes: one record per call)
                    done += connection.send(view[done:flushed + WRITE_PIECE])
                except SSL.WantReadError:
                    self._flushSendBIO()
                    self._bufferedWrite(bytes(view[done:]) + b"".join(pieces[index + 1:]))
                    return
                except SSL.Error:
                    self._tlsShutdownFinished(Failure())  # flushes, closes the transport
                    return
                if done - flushed >= WRITE_PIECE and done < len(view):
                    self._flushSendBIO()  # bounds the memory BIO to one piece's records
                    flushed = done
        self._flushSendBIO()

    def _flush_send_bio(self) -> None:
        connection = self._tlsConnection
        records: list[bytes] = []
        while True:
            try:
                records.append(connection.bio_read(BIO_READ))
            except SSL.WantReadError:
                break
        if records:
            transport: Any = self.transport
            transport.write(records[0] if len(records) == 1 else b"".join(records))


#: Plaintext bytes handed to one SSL_write (and ciphertext held in the memory BIO at most).
WRITE_PIECE = 1024 * 1024
#: Bytes read from the memory BIO at once: one WRITE_PIECE of records and their overhead.
BIO_READ = WRITE_PIECE + 64 * 1024
#: Socket read size of a TLS link.
READ_SIZE = 256 * 1024
#: The most a TLS link's TCP transport hands to one send() call.
SEND_LIMIT = 512 * 1024


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
