"""Tests for ClusterProtocol: correlation, timeouts, limits, dispatch."""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.support import VECTOR_KEY, connected_pair
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError, RemoteCommandError, UnknownCommand
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.protocol.chunks import REQUEST_CHUNK, Reassembler, encode_message
from wazuhcluster.protocol.commands import ERR, OK, Reply
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import FrameDecoder
from wazuhcluster.protocol.handler import (
    BUSY_LINK_BYTES,
    MAX_TIMEOUT_EXTENSIONS,
    TCP_READ_SIZE,
    TCP_SEND_LIMIT,
    ClusterProtocol,
    ConnectionLostError,
)


@implementer(ICommandHandler)
class RecordingHandler:
    """Answers echo, fails on demand, records everything."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []
        self.lost: list[Failure] = []
        self.peer: IPeer | None = None

    def connection_made(self, peer: IPeer) -> None:
        """Record the peer."""
        self.peer = peer

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """echo answers, clusterfail raises ClusterError, crash raises ValueError."""
        self.requests.append((command, payload))
        if command == b"echo":
            return succeed(Reply(OK, payload))
        if command == b"clusterfail":
            return fail(ClusterError(3028, "worker1"))
        if command == b"crash":
            return fail(ValueError("boom"))
        if command == b"silent":
            return succeed(None)
        return fail(UnknownCommand(command))

    def peer_lost(self, reason: Failure) -> None:
        """Record the loss."""
        self.lost.append(reason)


class ClusterProtocolTests(SynchronousTestCase):
    """ClusterProtocol over a StringTransport, with a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.handler = RecordingHandler()
        self.codec = FernetCodec(VECTOR_KEY)
        self.protocol = ClusterProtocol(self.handler, self.clock, codec=self.codec,
                                        request_timeout=20, max_frame_payload=1024 * 1024)
        self.protocol.makeConnection(self.transport)

    def sent(self) -> list[tuple[int, bytes, bytes]]:
        """Messages written so far (decrypted), clearing the transport."""
        decoder, reassembler, out = FrameDecoder(8 * 1024 * 1024), Reassembler(), []
        for frame in decoder.feed(self.transport.value()):
            message = reassembler.add(frame)
            if message is not None:
                out.append((message.counter, message.command,
                            self.codec.decrypt(message.payload)))
        self.transport.clear()
        return out

    def receive(self, counter: int, command: bytes, payload: bytes) -> None:
        """Deliver one encrypted message to the protocol."""
        token = self.codec.encrypt(payload)
        for frame in encode_message(counter, command, len(payload), token):
            self.protocol.dataReceived(frame)

    def test_handler_sees_the_peer(self) -> None:
        """connectionMade hands the protocol to the handler as its IPeer."""
        self.assertIs(self.handler.peer, self.protocol)

    def test_reply_fires_the_matching_request(self) -> None:
        """A frame with a pending request's counter fires that request with its payload."""
        d = self.protocol.request(b"hello", b"worker-1 wazuh worker 4.7.5")
        [(counter, command, payload)] = self.sent()
        self.assertEqual((command, payload), (b"hello", b"worker-1 wazuh worker 4.7.5"))
        self.assertNoResult(d)
        self.receive(counter, OK, b"Client worker-1 added")
        self.assertEqual(self.successResultOf(d), b"Client worker-1 added")

    def test_counters_increase_by_one(self) -> None:
        """Consecutive requests use consecutive counters (mod 2**32)."""
        self.protocol.request(b"echo", b"a")
        self.protocol.request(b"echo", b"b")
        first, second = self.sent()
        self.assertEqual((first[0] + 1) % 2**32, second[0])

    def test_err_reply_fails_the_request_with_the_decoded_error(self) -> None:
        """An err reply becomes a RemoteCommandError with Wazuh's code and message."""
        d = self.protocol.request(b"hello", b"x")
        [(counter, _, _)] = self.sent()
        self.receive(counter, ERR, ClusterError(3031, "Worker version: 4.7.4").to_wire())
        error = self.failureResultOf(d, RemoteCommandError).value
        self.assertEqual((error.code, error.extra_message), (3031, "Worker version: 4.7.4"))

    def test_unanswered_request_times_out_with_3020(self) -> None:
        """Without a reply, the request fails with error 3020 after the timeout."""
        d = self.protocol.request(b"echo", b"x")
        self.clock.advance(19.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3020)

    def test_deadline_extended_while_the_link_delivers(self) -> None:
        """A slow link still acknowledging our bytes extends the deadline; once it stops
        acknowledging, the request fails with 3020 at the next deadline."""
        delivering = [True, True, False]
        self.protocol.delivering = lambda within: delivering.pop(0)  # type: ignore[method-assign]
        d = self.protocol.request(b"file_upd", b"x")
        self.clock.advance(20.1)
        self.clock.advance(20)
        self.assertNoResult(d)
        self.clock.advance(20)
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3020)
        self.assertEqual(delivering, [])

    def test_deadline_extended_while_the_peer_streams_to_us(self) -> None:
        """The answer may wait behind a big stream from the peer: bytes arriving extend the
        deadline; silence then fails it."""
        self.protocol.delivering = lambda within: False  # type: ignore[method-assign]
        d = self.protocol.request(b"echo", b"x")
        self.clock.advance(19)
        self.protocol.bytes_received += BUSY_LINK_BYTES  # a chunk of a push arriving
        self.clock.advance(1.1)
        self.assertNoResult(d)
        self.clock.advance(20)
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3020)

    def test_deadline_extensions_are_bounded(self) -> None:
        """A peer that keeps acknowledging without ever answering fails in the end."""
        self.protocol.delivering = lambda within: True  # type: ignore[method-assign]
        d = self.protocol.request(b"echo", b"x")
        self.clock.pump([20] * MAX_TIMEOUT_EXTENSIONS)
        self.assertNoResult(d)
        self.clock.advance(20)
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3020)

    def test_late_reply_is_dropped_not_dispatched(self) -> None:
        """A reply arriving after the timeout is dropped; nothing is answered."""
        d = self.protocol.request(b"echo", b"x")
        [(counter, _, _)] = self.sent()
        self.clock.advance(21)
        self.failureResultOf(d, ClusterError)
        self.receive(counter, b"echo", b"late")
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.handler.requests, [])

    def test_connection_loss_fails_every_pending_request(self) -> None:
        """Losing the connection errbacks all outstanding requests, and later ones."""
        d1 = self.protocol.request(b"echo", b"1")
        d2 = self.protocol.request(b"echo", b"2")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d1, ConnectionLostError)
        self.failureResultOf(d2, ConnectionLostError)
        self.failureResultOf(self.protocol.request(b"echo", b"3"), ConnectionLostError)
        self.assertEqual(len(self.handler.lost), 1)
        self.successResultOf(self.protocol.when_lost)

    def test_request_is_answered_with_the_same_counter(self) -> None:
        """An incoming request is dispatched and answered with its own counter."""
        self.receive(1234, b"echo", b"hello world")
        self.assertEqual(self.sent(), [(1234, OK, b"hello world")])

    def test_unknown_command_gets_wazuh_plain_text_error(self) -> None:
        """Unknown commands are answered err "unknown command 'b'...''" as Wazuh does."""
        self.receive(5, b"foo", b"")
        self.assertEqual(self.sent(), [(5, ERR, b"unknown command 'b'foo''")])

    def test_cluster_error_becomes_a_json_err_reply(self) -> None:
        """A ClusterError raised by a responder travels as Wazuh's exception object."""
        self.receive(6, b"clusterfail", b"")
        [(counter, command, payload)] = self.sent()
        self.assertEqual((counter, command), (6, ERR))
        obj = json.loads(payload)["__wazuh_exception__"]
        self.assertEqual(obj["__class__"], "WazuhClusterError")
        self.assertEqual((obj["__object__"]["code"], obj["__object__"]["extra_message"]),
                         (3028, "worker1"))

    def test_unexpected_exception_is_logged_and_answered_1000(self) -> None:
        """Any other exception is logged and answered as WazuhInternalError 1000."""
        self.receive(7, b"crash", b"")
        [(_, command, payload)] = self.sent()
        obj = json.loads(payload)["__wazuh_exception__"]
        self.assertEqual((command, obj["__class__"], obj["__object__"]["code"]),
                         (ERR, "WazuhInternalError", 1000))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_responder_returning_none_sends_nothing(self) -> None:
        """A None result means no reply at all."""
        self.receive(8, b"silent", b"")
        self.assertEqual(self.sent(), [])

    def test_unsolicited_reply_frames_are_dropped_without_answer(self) -> None:
        """ok/err with an unknown counter are dropped: no err ping-pong."""
        self.receive(99, ERR, b"unknown command 'b'x''")
        self.receive(100, OK, b"whatever")
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.handler.requests, [])
        self.assertFalse(self.transport.disconnecting)

    def test_oversized_frame_aborts_the_connection(self) -> None:
        """A header announcing more than the limit drops the peer at once."""
        self.protocol.dataReceived(struct.pack("!II12s", 1, 0xFFFFFFFF, b"hello ------"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.handler.requests, [])

    def test_undecryptable_payload_drops_the_connection(self) -> None:
        """A payload that is not a token for our key drops the connection."""
        other = FernetCodec(b"X" * 32)
        token = other.encrypt(b"worker-1 wazuh worker 4.7.5")
        for frame in encode_message(1, b"hello", 27, token):
            self.protocol.dataReceived(frame)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.handler.requests, [])

    def test_incomplete_frame_is_dropped_after_the_deadline(self) -> None:
        """A peer that stops in the middle of a frame is dropped after 30 s of silence."""
        self.protocol.dataReceived(struct.pack("!II12s", 1, 500, b"echo -------") + b"x")
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)

    def test_slow_but_progressing_message_is_kept(self) -> None:
        """Bytes arriving every 20 s keep an incomplete message alive past 30 s."""
        self.protocol.dataReceived(struct.pack("!II12s", 1, 500, b"echo -------"))
        for _ in range(5):
            self.clock.advance(20)
            self.protocol.dataReceived(b"x")
        self.assertFalse(self.transport.disconnecting)

    def test_completed_frame_cancels_the_deadline(self) -> None:
        """Once the frame completes, the partial-frame deadline is cancelled."""
        token = self.codec.encrypt(b"abc")
        frame = b"".join(encode_message(3, b"echo", 3, token))
        self.protocol.dataReceived(frame[:10])
        self.protocol.dataReceived(frame[10:])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_trace_logs_each_message_at_debug2(self) -> None:
        """With trace on, every message in and out is one DEBUG2 event (command, size only)."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.protocol.trace = True
        self.receive(12, b"echo", b"secret payload")
        traced = [e for e in events if e.get("debug2")]
        self.assertEqual([(e["command"], e["bytes"]) for e in traced],
                         [("echo", 14), ("ok", 14)])
        self.assertFalse(any(b"secret" in repr(e).encode() for e in traced))

    def test_set_limits_applies_to_later_frames(self) -> None:
        """After set_limits, a smaller frame limit refuses bigger frames."""
        self.protocol.set_limits(max_frame_payload=100)
        self.receive(1, b"echo", b"y" * 200)
        self.assertTrue(self.transport.disconnecting)


class PairTests(SynchronousTestCase):
    """Two ClusterProtocols talking through iosim."""

    def setUp(self) -> None:
        self.clock = Clock()
        codec = FernetCodec(VECTOR_KEY)
        self.server_handler = RecordingHandler()
        self.client_handler = RecordingHandler()
        self.server, self.client, self.pump = connected_pair(
            lambda: ClusterProtocol(self.server_handler, self.clock, codec=codec,
                                    runner=SynchronousRunner().run),
            lambda: ClusterProtocol(self.client_handler, self.clock, codec=codec,
                                    runner=SynchronousRunner().run),
            self.clock)

    def test_divided_message_round_trip(self) -> None:
        """A payload above 5 MiB travels divided and comes back whole."""
        data = bytes(range(256)) * (REQUEST_CHUNK // 256 + 10)
        d = self.client.request(b"echo", data)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), data)

    def test_no_ping_pong_between_two_nodes(self) -> None:
        """A stray err frame between two of our nodes produces no further traffic."""
        self.client.notify(ERR, b"stray")
        self.pump.flush()
        self.assertEqual(self.server_handler.requests, [])
        self.assertEqual(self.client_handler.requests, [])
        sent_before = self.server.bytes_sent
        self.pump.flush()
        self.assertEqual(self.server.bytes_sent, sent_before)
        self.flushLoggedErrors()


class _FakeReactor:
    """What a FileDescriptor asks of its reactor when it starts and stops writing."""

    def __init__(self) -> None:
        self.writers: set[Any] = set()

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)


class _SocketTransport(FileDescriptor):
    """A FileDescriptor whose "socket" takes ``room`` bytes per write (what a TCP transport
    is), recording what reached it."""

    def __init__(self, reactor: _FakeReactor, room: int = 1 << 30) -> None:
        super().__init__(reactor)  # type: ignore[arg-type]
        self.connected = 1
        self.room = room
        self.socket_bytes = b""

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[:self.room])
        self.socket_bytes += taken
        return len(taken)

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None


class SendNowTests(SynchronousTestCase):
    """On a cluster link a small frame reaches the socket at once, not at the reactor's next
    turn; local sockets and big frames are left to the reactor."""

    def link(self, codec: Any, room: int = 1 << 30) -> tuple[ClusterProtocol,
                                                              _SocketTransport, _FakeReactor]:
        reactor = _FakeReactor()
        transport = _SocketTransport(reactor, room)
        protocol = ClusterProtocol(RecordingHandler(), Clock(), codec=codec)
        protocol.makeConnection(transport)
        return protocol, transport, reactor

    def test_small_frame_sent_at_once(self) -> None:
        protocol, transport, reactor = self.link(FernetCodec(VECTOR_KEY))
        protocol.request(b"echo", b"x" * 100)
        frames = FrameDecoder().feed(transport.socket_bytes)
        self.assertEqual([f.command for f in frames], [b"echo"])
        self.assertEqual(reactor.writers, set())  # nothing left for the reactor

    def test_what_does_not_fit_stays_for_the_reactor(self) -> None:
        protocol, transport, reactor = self.link(FernetCodec(VECTOR_KEY), room=10)
        protocol.request(b"echo", b"x" * 100)
        self.assertEqual(len(transport.socket_bytes), 10)
        self.assertEqual(reactor.writers, {transport})
        while transport in reactor.writers:
            self.assertIsNone(transport.doWrite())
        self.assertEqual([f.command for f in FrameDecoder().feed(transport.socket_bytes)],
                         [b"echo"])

    def test_local_socket_and_closing_transport_left_to_the_reactor(self) -> None:
        protocol, transport, reactor = self.link(None)
        protocol.request(b"echo", b"x")
        self.assertEqual((transport.socket_bytes, reactor.writers), (b"", {transport}))
        protocol, transport, reactor = self.link(FernetCodec(VECTOR_KEY))
        transport.disconnecting = True
        protocol.notify(b"echo", b"x")
        self.assertEqual(transport.socket_bytes, b"")
@implementer(ITCPTransport)
class _TCPLikeTransport(StringTransport):
    """A StringTransport that says it is TCP, with Twisted's TCP send and read sizes."""

    SEND_LIMIT = 128 * 1024
    bufferSize = 64 * 1024

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class TCPSizesTests(SynchronousTestCase):
    """A cluster link over TCP sends and reads in bigger pieces than Twisted's defaults: on a
    box shared by 100 workers each ``send`` that wakes a worker can cost the master the CPU
    for a scheduling round, so fewer, bigger calls (docs/testbed.md, "Sixth session")."""

    def test_tcp_link_sends_1_mib_and_reads_256_kib_per_call(self) -> None:
        transport = _TCPLikeTransport()
        protocol = ClusterProtocol(RecordingHandler(), Clock(), codec=FernetCodec(VECTOR_KEY))
        protocol.makeConnection(transport)
        self.assertEqual((transport.SEND_LIMIT, transport.bufferSize),
                         (TCP_SEND_LIMIT, TCP_READ_SIZE))
        self.assertEqual((TCP_SEND_LIMIT, TCP_READ_SIZE), (1024 * 1024, 256 * 1024))

    def test_other_transports_are_left_alone(self) -> None:
        transport = StringTransport()
        protocol = ClusterProtocol(RecordingHandler(), Clock())
        protocol.makeConnection(transport)
        self.assertFalse(hasattr(transport, "SEND_LIMIT"))
