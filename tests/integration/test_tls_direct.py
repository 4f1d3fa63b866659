"""The TLS link after its handshake, with OpenSSL on the socket itself (tls/direct.py).

These run over real loopback sockets (127.0.0.1, the reactor's own TCP transports): the
direct mode needs a socket, and in-memory transports stay in memory-BIO mode.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.tls.pki import shared_pki
from wazuhcluster.tls import direct
from wazuhcluster.tls.contexts import ClientCreator, ServerCreator
from wazuhcluster.tls.link import CoalescingTLS, SniffingFactory, TlsClientEndpoint


class App(Protocol):
    """The cluster protocol's stand-in: collects bytes, tells when it has N and when lost."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._wait: tuple[int, Deferred[None]] | None = None
        self.early: bytes = b""  # written at once (before the handshake completes)

    def connectionMade(self) -> None:
        if self.early:
            self.transport.write(self.early)  # type: ignore[union-attr]

    def pieces_received(self, pieces: Any, size: int) -> None:
        for piece in pieces:
            self.dataReceived(bytes(piece))

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self._wait is not None and len(self.data) >= self._wait[0]:
            d = self._wait[1]
            self._wait = None
            d.callback(None)

    def wait_for(self, size: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.data) >= size:
            d.callback(None)
        else:
            self._wait = (size, d)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


class DirectLinkTests(TestCase):
    """A master-side sniffing listener and a worker-side endpoint over loopback."""

    timeout = 20
    direct_expected = True

    async def connect(self, early: bytes = b"", max_version: int | None = None
                      ) -> tuple[App, App]:
        pki = shared_pki()
        servers: list[App] = []
        reports: list[str] = []
        self.reports = reports

        class Server(Factory):
            def buildProtocol(self, addr: Any) -> App:
                app = App()
                app.early = b"ready"  # tells connect() that the master side is up
                servers.append(app)
                return app

        server_creator = ServerCreator(pki.material("master"))
        factory = SniffingFactory(Server(), server_creator, reactor, 10, lambda p: None)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)

        class Client(Factory):
            def buildProtocol(self, addr: Any) -> App:
                app = App()
                app.early = early
                return app

        endpoint = TlsClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            ClientCreator(pki.material("w1"), "127.0.0.1", max_version), reports.append)
        client: App = await endpoint.connect(Client())
        self.addCleanup(self._close, client)
        await client.wait_for(len(b"ready"))  # the server app says so once connected
        await deferLater(reactor, 0)  # (a TLS 1.2 client gets "ready" with the handshake's
        # last record: the test would go on inside that read, before the switch at its end)
        server = servers[0]
        self.addCleanup(self._close, server)
        if self.direct_expected:
            self.assert_direct(client)
            self.assert_direct(server)
        return server, client

    async def _close(self, app: App) -> None:
        if not app.lost.called:
            app.transport.abortConnection()  # type: ignore[union-attr]
        await app.lost

    def assert_direct(self, app: App) -> None:
        tls = app.transport
        assert isinstance(tls, CoalescingTLS)
        self.assertTrue(tls.direct)
        self.assertTrue(direct.is_direct(tls.transport))

    async def test_both_sides_go_direct_and_bytes_flow_both_ways(self) -> None:
        """After the handshake both ends read and write the socket through OpenSSL; a 5 MiB
        write, header+payload sequences and small writes arrive whole and in order."""
        server, client = await self.connect()
        big = os.urandom(5 * 1024 * 1024)
        expected = bytearray()
        client.transport.write(big)  # type: ignore[union-attr]
        expected += big
        for n in range(50):
            header, payload = b"H%05d" % n, os.urandom(n * 997)
            client.transport.writeSequence((header, payload))  # type: ignore[union-attr]
            expected += header + payload
        await server.wait_for(len(expected))
        self.assertEqual(bytes(server.data), bytes(expected))
        back = os.urandom(3 * 1024 * 1024 + 17)
        server.transport.write(back)  # type: ignore[union-attr]
        await client.wait_for(len(b"ready") + len(back))
        self.assertEqual(bytes(client.data), b"ready" + back)
        self.assertEqual(self.reports, [])

    async def test_tls12_link_goes_direct_too(self) -> None:
        """A worker limited to TLS 1.2 (the minimum) gets a direct link as well."""
        server, client = await self.connect(max_version=SSL.TLS1_2_VERSION)
        version = server.transport._tlsConnection.get_protocol_version_name()  # type: ignore
        self.assertEqual(version, "TLSv1.2")
        payload = os.urandom(2 * 1024 * 1024 + 5)
        client.transport.write(payload)  # type: ignore[union-attr]
        await server.wait_for(len(payload))
        self.assertEqual(bytes(server.data), payload)

    async def test_early_writes_and_certificate(self) -> None:
        """What the worker writes before the handshake completes arrives after it; the
        master still reads the worker's certificate once the link is direct."""
        server, client = await self.connect(early=b"hello before handshake")
        await server.wait_for(len(b"hello before handshake"))
        self.assertEqual(bytes(client.data), b"ready")
        self.assertEqual(bytes(server.data), b"hello before handshake")
        self.assert_direct(server)
        cert = server.transport.getPeerCertificate()  # type: ignore[union-attr]
        self.assertEqual(cert.to_cryptography().serial_number,
                         shared_pki().nodes["w1"][0].serial_number)
        version = server.transport._tlsConnection.get_protocol_version_name()  # type: ignore
        self.assertEqual(version, "TLSv1.3")

    async def test_close_notify_after_buffered_data(self) -> None:
        """loseConnection right after a big write: everything arrives, then the peer sees a
        clean close (close_notify), not a lost connection."""
        server, client = await self.connect()
        payload = os.urandom(4 * 1024 * 1024)
        client.transport.write(payload)  # type: ignore[union-attr]
        client.transport.loseConnection()  # type: ignore[union-attr]
        await server.lost
        reason = server.reason
        assert reason is not None
        self.assertEqual(bytes(server.data), payload)
        self.assertTrue(reason.check(ConnectionDone), reason)
        await client.lost
        mine = client.reason
        assert mine is not None
        self.assertTrue(mine.check(ConnectionDone), mine)
        self.assertEqual(self.reports, [])

    async def test_slow_reader_write_retries(self) -> None:
        """The peer stops reading while 16 MiB are written: OpenSSL's writes that the socket
        cannot take are repeated until they go through; nothing is lost or reordered."""
        server, client = await self.connect()
        server.transport.pauseProducing()  # type: ignore[union-attr]
        chunks = [os.urandom(1024 * 1024) for _ in range(16)]
        for chunk in chunks:
            client.transport.write(chunk)  # type: ignore[union-attr]
        tcp = client.transport.transport  # type: ignore[union-attr]
        waiting = [-1, tcp._tempDataLen]
        while waiting[-1] != waiting[-2]:  # until the writer no longer gets rid of bytes
            await deferLater(reactor, 0.01)
            waiting.append(tcp._tempDataLen)
        self.assertGreater(waiting[-1], 0)  # the socket is full, the writer waits on it
        self.assertLess(waiting[-1], 16 * 1024 * 1024)
        server.transport.resumeProducing()  # type: ignore[union-attr]
        await server.wait_for(16 * 1024 * 1024)
        self.assertEqual(bytes(server.data), b"".join(chunks))

    async def test_eof_without_close_notify_is_a_lost_connection(self) -> None:
        """The peer's TCP connection ends without a close_notify: what it sent before still
        arrives, then the link is lost (not closed cleanly)."""
        server, client = await self.connect()
        client.transport.write(b"last words")  # type: ignore[union-attr]
        await server.wait_for(len(b"last words"))
        tcp = client.transport.transport  # type: ignore[union-attr]
        tcp.socket.shutdown(socket.SHUT_WR)  # TCP FIN, no TLS alert
        await server.lost
        self.assertEqual(bytes(server.data), b"last words")
        assert server.reason is not None
        self.assertTrue(server.reason.check(ConnectionLost), server.reason)
        self.assertEqual(self.reports, [])

    async def test_forged_record_ends_the_link_with_the_tls_error(self) -> None:
        """Bytes that are no valid record of this TLS session end the link with OpenSSL's
        error as the reason, as in memory-BIO mode."""
        server, client = await self.connect()
        tcp = client.transport.transport  # type: ignore[union-attr]
        tcp.socket.send(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data, bad tag
        await server.lost
        assert server.reason is not None
        self.assertTrue(server.reason.check(SSL.Error), server.reason)

    async def test_unknown_pyopenssl_stays_in_memory_bio_mode(self) -> None:
        """Without the OpenSSL calls the direct mode needs, the link works as before."""
        self.patch(direct, "SUPPORTED", False)
        self.direct_expected = False
        server, client = await self.connect()
        self.assertFalse(client.transport.direct)  # type: ignore[union-attr]
        self.assertFalse(server.transport.direct)  # type: ignore[union-attr]
        payload = os.urandom(1024 * 1024 + 3)
        client.transport.write(payload)  # type: ignore[union-attr]
        await server.wait_for(len(payload))
        self.assertEqual(bytes(server.data), payload)

    async def test_abort(self) -> None:
        """abortConnection on a direct link ends both sides."""
        server, client = await self.connect()
        client.transport.abortConnection()  # type: ignore[union-attr]
        await server.lost
        await client.lost
