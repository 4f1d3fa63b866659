"""OpenSSL on the socket itself, once the handshake of a cluster link is done.

Twisted's TLS layer (``TLSMemoryBIOProtocol``) keeps OpenSSL away from the socket: every byte
received is read by Twisted, copied into OpenSSL's memory BIO and read back as plaintext;
every record sent is written into a memory BIO, read back into Python and handed to the TCP
transport, which joins it into its own buffer. At 1 MiB messages those copies cost about as
much CPU as the encryption (docs/performance.md, "The cluster link with TLS").

The handshake still runs in memory-BIO mode (the master reads the first bytes itself to tell a
TLS peer from a plain Wazuh one, and every check and failure report of the handshake stays as
it is). Right after it, :func:`go_direct` points the OpenSSL connection at the socket
(``SSL_set_fd``; the record layer keeps what it holds) and turns the TCP transport into a
:class:`DirectTLSMixin` one:

* reading: ``SSL_read`` straight from the socket, record after record into one buffer, until
  OpenSSL wants more; what one wake-up read reaches the cluster protocol as one piece, a view
  of that buffer (no copy) when it is well filled;
* writing: the transport's buffer holds *plaintext* pieces (no join); each ``SSL_write`` takes
  up to :data:`SEND_LIMIT` bytes of a piece and OpenSSL writes the records to the socket. Partial
  writes are off, so a write that the socket cannot take yet is repeated with the same bytes,
  as OpenSSL requires; what the TCP buffer still held from the handshake (already
  ciphertext) is sent first, as it is;
* closing: after the buffer is flushed, a close_notify alert (``SSL_shutdown``, not waiting
  for the peer's) before the socket closes; a close_notify received ends the link as in
  memory-BIO mode (what is buffered is still sent); EOF without one is a lost connection.

TLS 1.3 (or 1.2 without renegotiation, which our contexts refuse): after the handshake, a read
never needs a write nor a write a read, so no read/write cross-waits are needed.
"""

from __future__ import annotations

import contextlib
from errno import ENOBUFS, EWOULDBLOCK
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import main, tcp

#: Plaintext bytes handed to one SSL_write (OpenSSL cuts them into 16 KiB records).
SEND_LIMIT = 512 * 1024
#: The most one doWrite sends before the reactor serves other connections.
WRITE_TURN = 2 * 1024 * 1024
#: Plaintext bytes of one record (TLS 1.2 and 1.3): one SSL_read returns at most this.
RECORD = 16 * 1024
#: Bounds of the buffer one doRead decrypts into (a whole number of records); the most one
#: doRead delivers before the reactor serves other connections.
READ_MIN = 4 * RECORD
READ_MAX = 64 * RECORD
#: Pieces shorter than this are joined with (the start of) the following ones before
#: SSL_write (a frame header and a small payload then go as one record instead of two).
COALESCE = 16 * 1024


def _is_eof(error: SSL.Error) -> bool:
    """True if ``error`` is the peer closing TCP without a close_notify."""
    if isinstance(error, SSL.SysCallError):
        return True
    queue = error.args[0] if error.args else None
    if not queue:
        return True
    return "unexpected eof" in str(queue[-1][-1]).lower()


class DirectTLSMixin:
    """What a TCP transport (``tcp.Server`` / ``tcp.Client``) does differently once OpenSSL
    owns its socket. ``_tempDataBuffer`` holds plaintext pieces, ``offset`` is how far the
    first one has been sent and ``_tempDataLen`` how many plaintext bytes wait (so Twisted's
    producer pausing keeps working); ``dataBuffer`` stays empty."""

    # the attributes of twisted.internet.abstract.FileDescriptor this class works with
    socket: Any
    protocol: Any
    connected: int
    disconnecting: int
    producer: Any
    streamingProducer: bool
    producerPaused: bool
    dataBuffer: bytes
    offset: int
    _tempDataBuffer: list[Any]
    _tempDataLen: int
    _writeDisconnected: bool
    _writeDisconnecting: bool

    _wzc_conn: SSL.Connection
    _wzc_tls: Any  # the CoalescingTLS protocol (the sniffer may sit between it and us)
    _wzc_raw: memoryview
    _wzc_closed_notify: bool
    _wzc_read_size: int

    if TYPE_CHECKING:  # provided by FileDescriptor (not defined here: they would override it)
        def startWriting(self) -> None: ...
        def stopWriting(self) -> None: ...
        def _maybePauseProducer(self) -> None: ...

    # -- writing --------------------------------------------------------------------------
    def write(self, data: Any) -> None:
        if not self.connected or self._writeDisconnected or not data:
            return
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)
        self._maybePauseProducer()
        self.startWriting()

    def writeSequence(self, iovec: Any) -> None:
        if not self.connected or self._writeDisconnected:
            return
        for data in iovec:
            if data:
                self._tempDataBuffer.append(data)
                self._tempDataLen += len(data)
        self._maybePauseProducer()
        self.startWriting()

    def doWrite(self) -> Any:
        if self._wzc_raw:  # ciphertext queued before the switch goes first, as it is
            try:
                sent = self.socket.send(self._wzc_raw[:SEND_LIMIT])
            except OSError as e:
                if e.args[0] in (EWOULDBLOCK, ENOBUFS):
                    return None
                return main.CONNECTION_LOST
            self._wzc_raw = self._wzc_raw[sent:]
            if self._wzc_raw:
                return None
        queue = self._tempDataBuffer
        connection = self._wzc_conn
        turn = 0
        while queue and turn < WRITE_TURN:
            piece = queue[0]
            if len(piece) - self.offset < COALESCE and len(queue) > 1:
                # Longer than a retried write and with the same bytes first: allowed.
                self._coalesce()
                piece = queue[0]
            chunk = memoryview(piece)[self.offset:self.offset + SEND_LIMIT]
            try:
                sent = connection.send(chunk)  # all of chunk, or an exception
            except (SSL.WantWriteError, SSL.WantReadError):
                return None  # repeated with the same bytes when the socket is writable
            except SSL.ZeroReturnError:
                return main.CONNECTION_DONE
            except SSL.Error as e:
                return main.CONNECTION_LOST if _is_eof(e) else e
            self.offset += sent
            self._tempDataLen -= sent
            turn += sent
            if self.offset >= len(piece):
                queue.pop(0)
                self.offset = 0
        if queue:
            return None
        # Everything is sent: what FileDescriptor.doWrite does at that point.
        self.stopWriting()
        if self.producer is not None and (not self.streamingProducer or self.producerPaused):
            self.producerPaused = False
            self.producer.resumeProducing()
        elif self.disconnecting:
            return self._postLoseConnection()
        elif self._writeDisconnecting:
            self._writeDisconnected = True
            return self._closeWriteConnection()
        return None

    def _coalesce(self) -> None:
        """Join the short first piece with what follows, up to :data:`COALESCE` bytes: a
        frame header and the start of its payload go out as one record (of a long piece only
        its start is copied; the rest stays a view)."""
        queue = self._tempDataBuffer
        parts: list[Any] = [memoryview(queue[0])[self.offset:]]
        size = len(parts[0])
        taken = 1
        rest: list[Any] = []
        while taken < len(queue) and size < COALESCE:
            piece = queue[taken]
            taken += 1
            need = COALESCE - size
            if len(piece) > need:
                view = memoryview(piece)
                parts.append(view[:need])
                rest.append(view[need:])
                size += need
                break
            parts.append(piece)
            size += len(piece)
        queue[:taken] = [b"".join(parts), *rest]
        self.offset = 0

    def _send_close_notify(self) -> None:
        if self._wzc_closed_notify:
            return
        self._wzc_closed_notify = True
        with contextlib.suppress(SSL.Error):
            self._wzc_conn.shutdown()  # one alert record; the peer's is not waited for

    def _postLoseConnection(self) -> Any:
        self._send_close_notify()
        return main.CONNECTION_DONE

    def _closeWriteConnection(self) -> Any:
        self._send_close_notify()
        return tcp.Connection._closeWriteConnection(self)  # type: ignore[arg-type]

    def connectionLost(self, reason: Any) -> None:
        # Nothing may reach OpenSSL after this: its BIO names a file descriptor number that
        # the socket's closing frees for reuse.
        self._wzc_closed_notify = True
        self._wzc_raw = memoryview(b"")
        tcp.Connection.connectionLost(self, reason)  # type: ignore[arg-type]

    # -- reading --------------------------------------------------------------------------
    def doRead(self) -> Any:
        connection = self._wzc_conn
        ssl = connection._ssl  # type: ignore[attr-defined]
        capacity = self._wzc_read_size
        buffer = _alloc("char[]", capacity)  # not zeroed: OpenSSL writes every byte we keep
        size = 0
        outcome: Any = None
        while size + RECORD <= capacity:
            got = _lib.SSL_read(ssl, buffer + size, RECORD)  # one record, decrypted in place
            if got > 0:
                size += got
                continue
            try:
                connection._raise_ssl_error(ssl, got)  # type: ignore[attr-defined]
            except (SSL.WantReadError, SSL.WantWriteError):
                break  # (WantWrite: not after a TLS 1.3 handshake, no renegotiation either)
            except SSL.ZeroReturnError:
                outcome = "close_notify"
                break
            except SSL.Error as e:
                outcome = main.CONNECTION_LOST if _is_eof(e) else e
                break
            break  # pragma: no cover (SSL_read gave 0 without an error)
        # The next read's buffer: bigger while reads fill it, smaller while they do not.
        if size + RECORD > capacity:
            self._wzc_read_size = min(capacity * 2, READ_MAX)
        elif size * 4 < capacity:
            self._wzc_read_size = max(capacity // 2, READ_MIN)
        tls = self._wzc_tls
        if size:
            # A view of the buffer when it is at least half full (the decoder keeps whole
            # pieces of a payload until it is complete, so little memory is pinned for
            # nothing), a copy of what was read otherwise.
            data = _ffi.buffer(buffer, size)
            tls.direct_received([memoryview(data) if size * 2 >= capacity else data[:]],
                                size)
        if outcome == "close_notify":
            tls.peer_closed_tls()  # as in memory-BIO mode: flush, close_notify, close
            return None
        return outcome


_alloc = _ffi.new_allocator(should_clear_after_alloc=False)

_classes: dict[type, type] = {}


def _direct_class(base: type) -> type:
    cls = _classes.get(base)
    if cls is None:
        cls = type(f"DirectTLS{base.__name__}", (DirectTLSMixin, base), {})
        _classes[base] = cls
    return cls


#: What go_direct and DirectTLSMixin use of OpenSSL's bindings and of pyOpenSSL's internals
#: (checked once: with another pyOpenSSL the link simply stays in memory-BIO mode).
SUPPORTED = (all(hasattr(_lib, name) for name in (
    "SSL_set_fd", "SSL_clear_mode", "SSL_set_mode", "SSL_read", "SSL_MODE_ENABLE_PARTIAL_WRITE",
    "SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER")) and hasattr(SSL.Connection, "_raise_ssl_error"))


def can_go_direct(transport: Any, connection: SSL.Connection | None = None) -> bool:
    """True if ``transport`` is a plain TCP transport of the reactor we can take over (and
    ``connection``, if given, a pyOpenSSL connection of the kind we know)."""
    if connection is not None and not (SUPPORTED and hasattr(connection, "_ssl")
                                       and hasattr(connection, "_into_ssl")):
        return False
    return (type(transport) in (tcp.Server, tcp.Client) and bool(transport.connected)
            and not transport.disconnecting and not transport._writeDisconnecting)


def go_direct(transport: Any, tls: Any, connection: SSL.Connection) -> None:
    """Point ``connection`` (its handshake done, its memory BIOs drained) at the socket of
    ``transport`` and make ``transport`` a :class:`DirectTLSMixin` transport.

    :param tls: the TLS protocol that receives the plaintext (``direct_received``).
    """
    # OpenSSL frees the memory BIOs and reads/writes the socket from now on; pyOpenSSL's
    # bio_read/bio_write then refuse (TypeError) instead of touching freed memory.
    if _lib.SSL_set_fd(connection._ssl, transport.fileno()) != 1:  # type: ignore[attr-defined]
        raise SSL.Error("SSL_set_fd failed")
    connection._into_ssl = None  # type: ignore[attr-defined]
    connection._from_ssl = None  # type: ignore[attr-defined]
    raw = transport.dataBuffer[transport.offset:] if transport.offset else transport.dataBuffer
    if transport._tempDataBuffer:
        raw = b"".join([bytes(raw), *transport._tempDataBuffer])
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    # A write the socket cannot take is repeated whole (same bytes, maybe moved): one
    # SSL_write per piece instead of one per record.
    _lib.SSL_clear_mode(connection._ssl,  # type: ignore[attr-defined]
                        _lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
    _lib.SSL_set_mode(connection._ssl,  # type: ignore[attr-defined]
                      _lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
    transport.__class__ = _direct_class(type(transport))
    transport._wzc_conn = connection
    transport._wzc_tls = tls
    transport._wzc_raw = memoryview(raw)
    transport._wzc_closed_notify = False
    transport._wzc_read_size = READ_MIN
    if raw:
        transport.startWriting()


def is_direct(transport: Any) -> bool:
    """True if ``transport`` has been taken over by :func:`go_direct`."""
    return isinstance(transport, DirectTLSMixin)

