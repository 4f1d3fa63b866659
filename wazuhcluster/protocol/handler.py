"""ClusterProtocol: one connection. Framing, encryption, correlation, timeouts, dispatch.

This is the only module that calls ``transport.write``. It knows bytes and frames; the role
command tables behind :class:`~wazuhcluster.interfaces.ICommandHandler` know commands.

Differences from Wazuh 4.7.5, on purpose (docs/protocol.md):

* the decoder keeps an explicit header/payload state (no desync after a
  header-only read, unlike Wazuh 4.7.5), refuses oversized
  announcements before buffering, bounds divided messages, and drops a peer whose frame stays
  incomplete for ``partial_frame_timeout`` seconds;
* a reply-typed frame (``ok``, ``err``, ...) with an unknown counter is dropped with a log line
  instead of being answered, so the ``err`` ping-pong seen in Wazuh 4.7.5 cannot start;
* a payload that cannot be decrypted drops the connection with one logged reason.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import abstract, defer
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.errors import ClusterError, InternalError, RemoteCommandError, UnknownCommand
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.logsafe import peer_text
from wazuhcluster.protocol.budget import MemoryAccount
from wazuhcluster.protocol.chunks import (
    DEFAULT_MAX_DIVIDED,
    DEFAULT_MAX_MESSAGE,
    Message,
    Reassembler,
    encode_message,
    encode_message_parts,
)
from wazuhcluster.protocol.commands import ERR, OK, OK_CLIENT, OK_MASTER, REPLY_COMMANDS, Reply
from wazuhcluster.protocol.crypto import DecryptionError, PayloadCodec
from wazuhcluster.protocol.frames import DEFAULT_MAX_FRAME_PAYLOAD, FrameDecoder, FrameError
from wazuhcluster.protocol.tcpinfo import acknowledging

#: Payloads above this size are encrypted/decrypted on the thread pool, if one is given.
OFFLOAD_THRESHOLD = 256 * 1024
#: Frames with at least this many payload bytes are written as header and payload pieces.
SEQUENCE_WRITE = 64 * 1024
#: Bytes one ``send`` of a plain TCP cluster link may take (Twisted: 128 KiB), and bytes one
#: read asks for (Twisted: 64 KiB); a TLS link sets its own (wazuhcluster/tls/link.py).
TCP_SEND_LIMIT = 1024 * 1024
TCP_READ_SIZE = 256 * 1024
#: How many timed-out counters are remembered so that their late replies are dropped.
ABANDONED_MEMORY = 4096
#: How many times a request's deadline is extended while the link still delivers our bytes.
MAX_TIMEOUT_EXTENSIONS = 10
#: Bytes from the peer during one request timeout that show the link busy, not dead.
BUSY_LINK_BYTES = 64 * 1024

Runner = Callable[..., Deferred[Any]]


class ConnectionLostError(ClusterError):
    """The connection closed before the reply arrived."""

    def __init__(self, detail: str = "connection lost") -> None:
        super().__init__(3018, detail)


@implementer(IPeer)
class ClusterProtocol(Protocol):
    """One cluster (TCP) or local-socket (UNIX) connection.

    :param handler: answers incoming requests.
    :param clock: the reactor's time interface.
    :param codec: encrypts payloads (cluster link), or ``None`` (local socket).
    :param request_timeout: seconds to wait for a reply (``timeout_cluster_request``).
    :param runner: runs blocking callables off the reactor; used for big payloads.
    :param accept_reply_requests: dispatch reply-typed frames with an unknown counter to the
        handler (a local client receiving ``ok``/``err`` answers); otherwise they are dropped.
    :param tag: the Wazuh log tag of this connection, e.g. ``Worker worker1``.
    """

    _log = Logger()

    def __init__(self, handler: ICommandHandler, clock: IReactorTime, *,
                 codec: PayloadCodec | None = None, request_timeout: float = 20.0,
                 runner: Runner | None = None, max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
                 max_message: int = DEFAULT_MAX_MESSAGE, max_divided: int = DEFAULT_MAX_DIVIDED,
                 partial_frame_timeout: float = 30.0, accept_reply_requests: bool = False,
                 tag: str = "Cluster", trace: bool = False,
                 memory: MemoryAccount | None = None) -> None:
        self.handler = handler
        self.clock = clock
        self.codec = codec
        self.request_timeout = request_timeout
        self.tag = tag
        self.trace = trace  # DEBUG2 (-dd): one log line per message in and out
        self.peer_address = "unknown"
        self._runner = runner
        self._decoder = FrameDecoder(max_frame_payload)
        self._reassembler = Reassembler(max_message, max_divided)
        self._partial_frame_timeout = partial_frame_timeout
        self._partial_timer: IDelayedCall | None = None
        self._accept_reply_requests = accept_reply_requests
        self._pending: dict[int, Deferred[bytes]] = {}
        self._abandoned: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._counter = secrets.randbits(32)
        self._inbox: collections.deque[Message] = collections.deque()
        self._inbox_bytes = 0
        #: this connection's share of the node's memory budget (None: unbounded, tests)
        self.memory = memory
        self._inbox_busy = False
        self._outbox: collections.deque[tuple[int, bytes, bytes, Deferred[None]]] = (
            collections.deque())
        self._outbox_busy = False
        self._lost: Failure | None = None
        self.when_lost: Deferred[None] = Deferred()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.last_received = clock.seconds()  # liveness: any byte from the peer counts
        #: IClusterEvents told of frames, bytes and drops (cluster links; None elsewhere)
        self.events: Any = None
        self._drop_reason: str | None = None

    # -- IPeer -----------------------------------------------------------------------
    def request(self, command: bytes, payload: bytes,
                timeout: float | None = None) -> Deferred[bytes]:
        """Send a request; fire with the reply payload (see IPeer)."""
        if self._lost is not None:
            return defer.fail(ConnectionLostError())
        counter = self._next_counter()
        waiter: Deferred[bytes] = Deferred(lambda _: self._abandon(counter))
        self._pending[counter] = waiter
        sent = self._send(counter, command, payload)
        sent.addErrback(self._fail_request, counter)
        self._arm_timeout(waiter, counter,
                          self.request_timeout if timeout is None else timeout)
        return waiter.addErrback(self._timeout_to_cluster_error, command)

    def notify(self, command: bytes, payload: bytes) -> Deferred[None]:
        """Send a frame that expects no reply, with a fresh counter."""
        if self._lost is not None:
            return defer.fail(ConnectionLostError())
        return self._send(self._next_counter(), command, payload)

    def set_limits(self, max_frame_payload: int | None = None,
                   max_message: int | None = None) -> None:
        """Change the frame and message limits of this connection."""
        if max_frame_payload is not None:
            self._decoder.max_payload = max_frame_payload
        if max_message is not None:
            self._reassembler.max_message = max_message

    def disconnect(self, reason: str) -> None:
        """Close the connection now, logging ``reason``."""
        if self.transport is not None and self._lost is None:
            self._log.info("[{tag}] [Main] Closing connection with {peer}: {reason}",
                           tag=self.tag, peer=self.peer_address, reason=reason)
            self._drop_reason = self._drop_reason or drop_label(reason)
            self._tcp.abortConnection()

    def delivering(self, within: float) -> bool:
        """See IPeer: the peer's TCP is still acknowledging what we send."""
        return self.transport is not None and acknowledging(self.transport, within)

    @property
    def _tcp(self) -> Any:
        """The transport, as the ITCPTransport/IProducer it is at run time."""
        return self.transport

    @property
    def connected_ok(self) -> bool:
        """True while the connection is up."""
        return self._lost is None and self.transport is not None

    # -- IProtocol -------------------------------------------------------------------
    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self._tcp):
            # Requests wait for their replies: no Nagle delay on small frames.
            self._tcp.setTcpNoDelay(True)
            tcp: Any = self._tcp
            if isinstance(getattr(tcp, "SEND_LIMIT", None), int):
                # Fewer, bigger system calls (Twisted: 128 KiB sends, 64 KiB reads); each
                # one can wake the peer's process and hand it the CPU on a loaded box.
                tcp.SEND_LIMIT = max(tcp.SEND_LIMIT, TCP_SEND_LIMIT)
                tcp.bufferSize = max(tcp.bufferSize, TCP_READ_SIZE)
        peer = self._tcp.getPeer()
        self.peer_address = getattr(peer, "host", None) or "local"
        self.handler.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.pieces_received((data,), len(data))

    def pieces_received(self, pieces: Sequence[bytes], size: int) -> None:
        """Take the bytes of ``pieces`` (``size`` in all) as one ``dataReceived`` of their
        concatenation would (the TLS layer hands over the records of one socket read)."""
        self.bytes_received += size
        self.last_received = self.clock.seconds()
        frames: list[Any] = []
        try:
            frames = self._decoder.feed_pieces(pieces)
            for frame in frames:
                message = self._reassembler.add(frame)
                if message is not None:
                    self._inbox.append(message)
                    self._inbox_bytes += len(message.payload)
        except FrameError as e:
            self._drop(f"malformed stream: {e}")
            return
        finally:
            if self.events is not None:
                self.events.link_traffic("in", len(frames), size)
        if self.memory is not None:
            refused = self.memory.set("frames", self._decoder.pending_bytes
                                      + self._reassembler.open_bytes + self._inbox_bytes)
            if refused is not None:
                self._drop(f"memory budget exceeded: {refused}")
                return
        self._watch_partial_frame()
        self._drain_inbox()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = reason
        if self.events is not None:
            self.events.connection_dropped(self._drop_reason or (
                "peer_closed" if reason.check(ConnectionDone) else "connection_lost"))
        if self._partial_timer is not None and self._partial_timer.active():
            self._partial_timer.cancel()
        self._partial_timer = None
        self._inbox.clear()
        self._inbox_bytes = 0
        # Free what the peer left half-sent now: this object sits in reference cycles
        # (handler <-> protocol) that only the cyclic GC would break, much later.
        self._decoder = FrameDecoder(self._decoder.max_payload)
        self._reassembler = Reassembler(self._reassembler.max_message,
                                        self._reassembler.max_divided)
        if self.memory is not None:
            self.memory.close()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.errback(ConnectionLostError())
        outbox, self._outbox = self._outbox, collections.deque()
        for *_, done in outbox:
            done.errback(ConnectionLostError())
        try:
            self.handler.peer_lost(reason)
        finally:
            self.when_lost.callback(None)

    # -- receiving ---------------------------------------------------------------------
    def _watch_partial_frame(self) -> None:
        """Drop a peer that leaves a message incomplete and sends nothing for a while.

        The timer restarts whenever bytes arrive, so a big message on a slow link is fine;
        a peer that stalls mid-message is dropped (the memory it pins is bounded anyway by
        the frame and message limits).
        """
        incomplete = self._decoder.pending_bytes > 0 or self._reassembler.open_bytes > 0
        timer = self._partial_timer
        if incomplete:
            if timer is not None and timer.active():
                timer.reset(self._partial_frame_timeout)
            else:
                self._partial_timer = self.clock.callLater(
                    self._partial_frame_timeout, self._drop,
                    f"message left incomplete for {self._partial_frame_timeout} s")
        elif timer is not None:
            if timer.active():
                timer.cancel()
            self._partial_timer = None

    def _drop(self, reason: str) -> None:
        self._partial_timer = None
        if self._lost is None and self.transport is not None:
            self._log.warn("[{tag}] [Main] Dropping connection with {peer}: {reason}",
                           tag=self.tag, peer=self.peer_address, reason=reason)
            self._drop_reason = self._drop_reason or drop_label(reason)
            self._tcp.abortConnection()
            if self.memory is not None:
                # Nothing more is read; what it holds is freed when the connection is lost
                # (next reactor turn). Other connections must not be refused meanwhile.
                self.memory.close()

    def _drain_inbox(self) -> None:
        while self._inbox and not self._inbox_busy and self._lost is None:
            message = self._inbox.popleft()
            self._inbox_bytes -= len(message.payload)
            if self.memory is not None:
                self.memory.set("frames", self._decoder.pending_bytes
                                + self._reassembler.open_bytes + self._inbox_bytes)
            if self.codec is None or getattr(self.codec, "plain_in", False):
                self._route(message, message.payload)  # no Fernet (local socket, or inside TLS)
            elif self._runner is not None and len(message.payload) > OFFLOAD_THRESHOLD:
                self._inbox_busy = True
                self._tcp.pauseProducing()
                d = self._runner(self.codec.decrypt, message.payload)
                d.addCallbacks(self._decrypted, self._undecryptable, callbackArgs=(message,))
                d.addErrback(self._log_unexpected, "decrypting a message")
            else:
                try:
                    plaintext = self.codec.decrypt(message.payload)
                except DecryptionError as e:
                    self._drop(f"could not decrypt a message ({e}); is the cluster key right?")
                    return
                self._route(message, plaintext)

    def _decrypted(self, plaintext: bytes, message: Message) -> None:
        self._inbox_busy = False
        if self._lost is not None:
            return
        self._tcp.resumeProducing()
        self._route(message, plaintext)
        self._drain_inbox()

    def _undecryptable(self, failure: Failure) -> None:
        self._inbox_busy = False
        failure.trap(DecryptionError)
        self._drop(f"could not decrypt a message ({failure.value}); is the cluster key right?")

    def _route(self, message: Message, payload: bytes) -> None:
        counter, command = message.counter, message.command
        if self.trace:
            self._log.debug("[{tag}] [Main] Received {command} counter={counter} bytes={bytes}",
                            tag=self.tag, command=command.decode("ascii", "replace"),
                            counter=counter, bytes=len(payload), debug2=True)
        if counter in self._abandoned:
            del self._abandoned[counter]
            self._log.debug("[{tag}] [Main] Late reply {counter} dropped",
                            tag=self.tag, counter=counter)
            return
        waiter = self._pending.pop(counter, None)
        if waiter is not None:
            if command == ERR:
                waiter.errback(RemoteCommandError.from_payload(payload))
            elif command in (OK, OK_MASTER, OK_CLIENT):
                waiter.callback(payload)
            else:
                waiter.errback(ClusterError(3000, f"unknown response command {command!r}"))
            return
        if command in REPLY_COMMANDS and not self._accept_reply_requests:
            self._log.warn("[{tag}] [Main] Dropped unsolicited {command} frame with unknown "
                           "counter {counter}", tag=self.tag, command=peer_text(command, 16),
                           counter=counter)
            return
        self._dispatch(counter, command, payload)

    def _dispatch(self, counter: int, command: bytes, payload: bytes) -> None:
        d = maybeDeferred(self.handler.handle, command, payload)
        d.addCallbacks(self._send_reply, self._refuse, callbackArgs=(counter,),
                       errbackArgs=(counter, command))
        d.addErrback(self._log_unexpected, "answering a request")

    def _send_reply(self, reply: Reply | None, counter: int) -> Deferred[None] | None:
        if reply is None or self._lost is not None:
            return None
        return self._send(counter, reply.command, reply.payload)

    def _refuse(self, failure: Failure, counter: int, command: bytes) -> Deferred[None] | None:
        error = failure.value
        if isinstance(error, UnknownCommand):
            self._log.debug("[{tag}] [Main] Unknown command {command!r}", tag=self.tag,
                            command=command)
            return self._send_reply(Reply(ERR, error.to_wire()), counter)
        if not isinstance(error, ClusterError):
            self._log.failure("[{tag}] [Main] Error handling {command!r}", failure,
                              tag=self.tag, command=command)
            error = InternalError(str(failure.value))
        return self._send_reply(Reply(ERR, error.to_wire()), counter)

    def _log_unexpected(self, failure: Failure, what: str) -> None:
        if failure.check(ConnectionLostError):
            return
        self._log.failure("[{tag}] [Main] Unexpected error while {what}", failure,
                          tag=self.tag, what=what)

    # -- requests ------------------------------------------------------------------------
    def _next_counter(self) -> int:
        while True:
            self._counter = (self._counter + 1) % 2**32
            if self._counter not in self._pending and self._counter not in self._abandoned:
                return self._counter

    def _arm_timeout(self, waiter: Deferred[bytes], counter: int, timeout: float) -> None:
        """Fail ``waiter`` with TimeoutError after ``timeout`` seconds, unless the link is busy
        then: our bytes still being acknowledged by the peer's TCP (a slow link still carrying
        this request or the ones queued before it), or the peer still sending us data (its
        answer may be queued behind it: one TCP stream, head-of-line). The deadline is then
        extended, at most MAX_TIMEOUT_EXTENSIONS times. A dead or cut link does neither and
        times out as before."""
        timers: list[IDelayedCall] = []
        seen = [self.bytes_received]

        def expire() -> None:
            if waiter.called:
                return
            arriving = self.bytes_received - seen[0] >= BUSY_LINK_BYTES
            seen[0] = self.bytes_received
            if len(timers) <= MAX_TIMEOUT_EXTENSIONS and (arriving or self.delivering(timeout)):
                timers.append(self.clock.callLater(timeout, expire))
                return
            self._abandon(counter)
            waiter.errback(defer.TimeoutError(f"no answer within {timeout} s"))

        timers.append(self.clock.callLater(timeout, expire))

        def stop_timer(result: Any) -> Any:
            if timers[-1].active():
                timers[-1].cancel()
            return result
        waiter.addBoth(stop_timer)

    def _abandon(self, counter: int) -> None:
        if self._pending.pop(counter, None) is not None:
            self._abandoned[counter] = None
            while len(self._abandoned) > ABANDONED_MEMORY:
                self._abandoned.popitem(last=False)

    def _fail_request(self, failure: Failure, counter: int) -> None:
        waiter = self._pending.pop(counter, None)
        if waiter is not None:
            waiter.errback(failure)

    @staticmethod
    def _timeout_to_cluster_error(failure: Failure, command: bytes) -> Failure:
        if failure.check(defer.TimeoutError):
            return Failure(ClusterError(3020, command.decode("ascii", "replace")))
        return failure

    # -- sending: the only transport.write ------------------------------------------------
    def _send(self, counter: int, command: bytes, plaintext: bytes) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self._outbox.append((counter, command, plaintext, done))
        self._drain_outbox()
        return done

    def _drain_outbox(self) -> None:
        while self._outbox and not self._outbox_busy:
            counter, command, plaintext, done = self._outbox.popleft()
            if self.codec is None or getattr(self.codec, "plain_out", False):
                self._write(counter, command, len(plaintext), plaintext, done)
            elif self._runner is not None and len(plaintext) > OFFLOAD_THRESHOLD:
                self._outbox_busy = True
                d = self._runner(self.codec.encrypt, plaintext)
                d.addCallback(self._encrypted, counter, command, len(plaintext), done)
                d.addErrback(self._log_unexpected, "encrypting a message")
            else:
                self._write(counter, command, len(plaintext), self.codec.encrypt(plaintext), done)

    def _encrypted(self, token: bytes, counter: int, command: bytes, size: int,
                   done: Deferred[None]) -> None:
        self._outbox_busy = False
        self._write(counter, command, size, token, done)
        self._drain_outbox()

    def _write(self, counter: int, command: bytes, size: int, wire: bytes,
               done: Deferred[None]) -> None:
        if self._lost is not None or self.transport is None:
            done.errback(ConnectionLostError())
            return
        if self.trace:
            self._log.debug("[{tag}] [Main] Sending {command} counter={counter} bytes={bytes}",
                            tag=self.tag, command=command.decode("ascii", "replace"),
                            counter=counter, bytes=size, debug2=True)
        frames = 0
        sent_before = self.bytes_sent
        if len(wire) < SEQUENCE_WRITE:
            for frame in encode_message(counter, command, size, wire):
                self.bytes_sent += len(frame)
                frames += 1
                self.transport.write(frame)
            if self.codec is not None:
                self._send_now()
        else:
            # Header and payload as two pieces: no 1 MiB copy to join them here (the TLS
            # layer encrypts both pieces in place; TCP joins them in its own buffer anyway).
            for header, piece in encode_message_parts(counter, command, size, wire):
                self.bytes_sent += len(header) + len(piece)
                frames += 1
                self.transport.writeSequence((header, piece))
        if self.events is not None:
            self.events.link_traffic("out", frames, self.bytes_sent - sent_before)
        done.callback(None)


    def _send_now(self) -> None:
        """Hand what the transport holds to the socket now, not at the reactor's next turn.

        Cluster links only, small frames only: a request or reply on the link is what the
        other node waits for, and Twisted sends written bytes at the next turn of the
        reactor, after every other event of this turn (in one measured case the 121 kB a
        worker then wrote to its local client went first: 190 us later on the link). The
        socket of a TCP transport is written as the reactor itself would (its ``doWrite``):
        what does not fit stays buffered for the reactor; an error is seen again by the
        reactor at its next turn (the transport still waits to write) and handled there.
        Never while the transport closes (its ``doWrite`` would close it under us)."""
        transport = self.transport
        if not isinstance(transport, abstract.FileDescriptor) or not transport.connected \
                or transport.disconnecting or transport._writeDisconnecting:
            return
        transport.doWrite()


def drop_label(reason: str) -> str:
    """A short, bounded label for why we closed a connection (a metrics label value): the
    words before the first ':' or '(' of the logged reason, e.g. ``keepalive_limit_exceeded``,
    ``malformed_stream``, ``memory_budget_exceeded``."""
    head = reason.split(":", 1)[0].split("(", 1)[0].strip().lower()
    words = "".join(c if c.isalnum() else " " for c in head).split()
    return "_".join(words)[:40] or "other"


def is_connection_closed(failure: Failure) -> bool:
    """True if ``failure`` only says that a connection went away."""
    return bool(failure.check(ConnectionLostError, ConnectionDone))
