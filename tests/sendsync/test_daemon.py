"""The daemon-socket codec and ask_daemon (memory reactor, Clock, StringTransport)."""

from __future__ import annotations

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, LengthPrefixError, encode
from wazuhcluster.sendsync.daemon import (
    DaemonError,
    DaemonUnreachable,
    FrameTooLarge,
    ask_daemon,
)


class DecoderTests(SynchronousTestCase):
    """4-byte little-endian length framing."""

    def test_encode_is_little_endian(self) -> None:
        self.assertEqual(encode(b"abc"), b"\x03\x00\x00\x00abc")

    def test_split_and_joined_messages(self) -> None:
        decoder = LengthPrefixDecoder(1024)
        stream = encode(b"first") + encode(b"") + encode(b"third")
        out: list[bytes] = []
        for i in range(len(stream)):  # one byte at a time
            out += decoder.feed(stream[i:i + 1])
        self.assertEqual(out, [b"first", b"", b"third"])
        self.assertEqual(LengthPrefixDecoder(1024).feed(stream), [b"first", b"", b"third"])

    def test_oversized_announcement_refused(self) -> None:
        decoder = LengthPrefixDecoder(max_size=10)
        self.assertRaises(LengthPrefixError, decoder.feed, b"\xff\xff\xff\xff")
        self.assertEqual(LengthPrefixDecoder(max_size=10).feed(encode(b"x" * 10)), [b"x" * 10])


class AskDaemonTests(SynchronousTestCase):
    """One request, one answer, or a DaemonError; never a hang."""

    def _start(self, timeout: float = 5.0) -> tuple[MemoryReactorClock, Deferred[bytes]]:
        reactor = MemoryReactorClock()
        d = Deferred.fromCoroutine(ask_daemon(reactor, "/x/queue/sockets/auth", b"hello",
                                              timeout))
        return reactor, d

    def _connect(self, reactor: MemoryReactorClock) -> tuple[StringTransport, object]:
        path, factory, _timeout, _pid = reactor.unixClients[0]
        self.assertEqual(path, "/x/queue/sockets/auth")
        protocol = factory.buildProtocol(UNIXAddress(path))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport, protocol

    def test_answer(self) -> None:
        reactor, d = self._start()
        transport, protocol = self._connect(reactor)
        self.assertEqual(transport.value(), encode(b"hello"))
        protocol.dataReceived(encode(b"ok answer")[:6])  # type: ignore[attr-defined]
        self.assertNoResult(d)
        protocol.dataReceived(encode(b"ok answer")[6:])  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(d), b"ok answer")
        self.assertTrue(transport.disconnecting)

    def test_timeout(self) -> None:
        reactor, d = self._start(timeout=5.0)
        transport, _ = self._connect(reactor)
        reactor.advance(4.9)
        self.assertNoResult(d)
        reactor.advance(0.2)
        error = self.failureResultOf(d, DaemonError)
        self.assertIn("no answer from /x/queue/sockets/auth within 5 s", str(error.value))
        self.assertTrue(transport.disconnecting)

    def test_closed_without_answer(self) -> None:
        reactor, d = self._start()
        _, protocol = self._connect(reactor)
        protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertIn("closed the connection", str(self.failureResultOf(d, DaemonError).value))

    def test_connect_refused(self) -> None:
        reactor, d = self._start()
        _path, factory, _t, _p = reactor.unixClients[0]
        connector = reactor.connectors[0]
        factory.clientConnectionFailed(connector, ConnectionRefusedError("refused"))
        error = self.failureResultOf(d, DaemonUnreachable)  # Wazuh's 1013
        self.assertIn("cannot connect to /x/queue/sockets/auth", str(error.value))

    def test_oversized_answer(self) -> None:
        reactor = MemoryReactorClock()
        d = Deferred.fromCoroutine(ask_daemon(reactor, "/s", b"q", 5.0, max_answer=8))
        _path, factory, _t, _p = reactor.unixClients[0]
        protocol = factory.buildProtocol(UNIXAddress("/s"))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"\x00\x00\x01\x00")
        self.failureResultOf(d, FrameTooLarge)
