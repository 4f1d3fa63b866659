"""Fernet switched off inside TLS with ``wzc_plain``: ordering is exact in both directions."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair
from tests.tls.pki import shared_pki
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.commands import ECHO, Reply
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.tls.contexts import ClientCreator, ServerCreator
from wazuhcluster.tls.feature import WZC_PLAIN, accept_plain, start_plain
from wazuhcluster.tls.keyring import KeyRing, LinkCodec

KEY = b"abcdefghijklmnopqrstuvwxyz012345"


class Side:
    """A handler that echoes and honours wzc_plain like the role nodes do."""

    def __init__(self, answer_plain: bool) -> None:
        self.peer: Any = None
        self.answer_plain = answer_plain
        self.seen: list[bytes] = []

    def connection_made(self, peer: Any) -> None:
        self.peer = peer

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        self.seen.append(command)
        d: Deferred[Any] = Deferred()
        if command == WZC_PLAIN:
            accept_plain(self.peer)
            if self.answer_plain:
                start_plain(self.peer)
            d.callback(None)
        elif command == ECHO:
            d.callback(Reply.ok(payload))
        else:
            d.errback(ClusterError(3000, "unexpected"))
        return d

    def peer_lost(self, reason: Any) -> None:
        pass


class Wire:
    """Records what the server's TLS layer hands to the cluster protocol (decrypted TLS)."""

    def __init__(self, inner: ClusterProtocol) -> None:
        self.inner = inner
        self.data = b""

    def makeConnection(self, transport: Any) -> None:
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self.inner.connectionLost(reason)


class PlainInsideTlsTests(SynchronousTestCase):
    def test_switch_with_requests_in_flight(self) -> None:
        pki = shared_pki()
        clock = Clock()
        server_side = Side(answer_plain=True)
        client_side = Side(answer_plain=False)
        server = ClusterProtocol(server_side, clock, codec=LinkCodec(KeyRing(KEY)))
        client = ClusterProtocol(client_side, clock, codec=LinkCodec(KeyRing(KEY)))
        wire = Wire(server)

        def make_server() -> TLSMemoryBIOProtocol:
            return TLSMemoryBIOProtocol(
                TLSMemoryBIOFactory(ServerCreator(pki.material("master")), False, Factory()),
                wire)  # type: ignore[arg-type]

        def make_client() -> TLSMemoryBIOProtocol:
            return TLSMemoryBIOProtocol(
                TLSMemoryBIOFactory(ClientCreator(pki.material("w1"), "127.0.0.1"), True,
                                    Factory()), client)

        _, _, pump = connected_pair(make_server, make_client, clock)
        before = client.request(ECHO, b"before-switch")
        start_plain(client)
        after = [client.request(ECHO, f"after-{i}".encode()) for i in range(5)]
        pump.flush()
        self.assertEqual(self.successResultOf(before), b"before-switch")
        self.assertEqual([self.successResultOf(d) for d in after],
                         [f"after-{i}".encode() for i in range(5)])
        for codec in (server.codec, client.codec):
            assert isinstance(codec, LinkCodec)
            self.assertTrue(codec.plain_in and codec.plain_out)
        self.assertNotIn(b"before-switch", wire.data)  # still Fernet
        for i in range(5):
            self.assertIn(f"after-{i}".encode(), wire.data)  # no Fernet inside TLS
        self.assertEqual(client_side.seen, [WZC_PLAIN])

    def test_plain_refused_without_tls(self) -> None:
        clock = Clock()
        side = Side(answer_plain=True)
        proto = ClusterProtocol(side, clock, codec=LinkCodec(KeyRing(KEY)))
        side.peer = proto
        with self.assertRaises(ClusterError):
            accept_plain(proto)


class CoalescingTests(SynchronousTestCase):
    """The TLS records of one socket read reach the cluster protocol as one piece."""

    def test_records_of_one_read_coalesced_and_flushed_on_loss(self) -> None:
        from wazuhcluster.tls.link import CoalescingTLS, CoalescingTLSFactory, TlsTap

        pki = shared_pki()
        clock = Clock()
        chunks: list[bytes] = []
        lost: list[Any] = []

        class Inner:
            def makeConnection(self, transport: Any) -> None:
                pass

            def dataReceived(self, data: bytes) -> None:
                chunks.append(data)

            def connectionLost(self, reason: Any) -> None:
                lost.append(reason)

        tap = TlsTap(Inner(), lambda line: None, "master")  # type: ignore[arg-type]

        def make_server() -> CoalescingTLS:
            return CoalescingTLS(CoalescingTLSFactory(ServerCreator(pki.material("master")),
                                                      False, Factory()), tap)

        def make_client() -> TLSMemoryBIOProtocol:
            return TLSMemoryBIOProtocol(
                TLSMemoryBIOFactory(ClientCreator(pki.material("w1"), "127.0.0.1"), True,
                                    Factory()), ClusterProtocol(Side(False), clock))

        _, client, pump = connected_pair(make_server, make_client, clock)
        payload = bytes(range(256)) * 256  # 64 KiB: four TLS records
        client.write(payload)
        pump.flush()
        self.assertEqual(b"".join(chunks), payload)
        self.assertLess(len(chunks), 4, "records of one read were passed on one by one")
        tap.hold()
        tap.dataReceived(b"tail")
        tap.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(chunks[-1], b"tail")
        self.assertEqual(len(lost), 1)


class BulkTests(SynchronousTestCase):
    """Big messages through CoalescingTLS on both ends: one SSL_write per MiB, records handed
    over as pieces, bytes and order exact."""

    def setUp(self) -> None:
        from wazuhcluster.tls.link import CoalescingTLS, CoalescingTLSFactory, TlsTap

        pki = shared_pki()
        self.clock = Clock()
        self.server_side = Side(answer_plain=True)
        self.server = ClusterProtocol(self.server_side, self.clock,
                                      codec=LinkCodec(KeyRing(KEY)), max_message=64 << 20)
        self.client = ClusterProtocol(Side(answer_plain=False), self.clock,
                                      codec=LinkCodec(KeyRing(KEY)), max_message=64 << 20)
        self.pieces: list[int] = []
        original = self.server.pieces_received

        def count(pieces: Any, size: int) -> None:
            self.pieces.append(len(pieces))
            original(pieces, size)
        self.server.pieces_received = count  # type: ignore[method-assign]

        def make_server() -> CoalescingTLS:
            return CoalescingTLS(
                CoalescingTLSFactory(ServerCreator(pki.material("master")), False, Factory()),
                TlsTap(self.server, lambda line: None, "master"))

        def make_client() -> CoalescingTLS:
            return CoalescingTLS(
                CoalescingTLSFactory(ClientCreator(pki.material("w1"), "127.0.0.1"), True,
                                     Factory()),
                TlsTap(self.client, lambda line: None, "worker"))

        self.server_tls, self.client_tls, self.pump = connected_pair(make_server, make_client,
                                                                     self.clock)

    def test_writes_before_the_handshake_are_kept(self) -> None:
        """Written before the handshake (OpenSSL: want read), sent once it is done."""
        big = bytes(range(256)) * 8192  # 2 MiB
        answers = [self.client.request(ECHO, big), self.client.request(ECHO, b"small")]
        self.pump.flush()
        self.assertEqual([self.successResultOf(d) for d in answers], [big, b"small"])

    def test_big_messages_plain_inside_tls(self) -> None:
        self.pump.flush()
        start_plain(self.client)
        self.pump.flush()
        writes: list[int] = []
        transport = self.client_tls.transport
        write = transport.write

        def recorded(data: bytes) -> None:
            writes.append(len(data))
            write(data)
        transport.write = recorded
        three = bytes(range(256)) * (3 * 4096)  # 3 MiB: one frame
        six = bytes(reversed(range(256))) * (6 * 4096)  # 6 MiB: a divided message
        answers = [self.client.request(ECHO, three), self.client.request(ECHO, b"a"),
                   self.client.request(ECHO, six), self.client.request(ECHO, b"b")]
        self.pump.flush()
        self.assertEqual([self.successResultOf(d) for d in answers], [three, b"a", six, b"b"])
        # 9 MiB and two small frames: about one transport write per MiB, not one per record
        self.assertLessEqual(len(writes), 9 + 2 + 2)
        self.assertGreater(max(self.pieces), 1)  # records of a read arrive as pieces
        codec = self.server.codec
        assert isinstance(codec, LinkCodec)
        self.assertTrue(codec.plain_in)
