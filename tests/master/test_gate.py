"""Caps on connections that have not said hello yet; the descriptor-limit warning."""

from __future__ import annotations

import resource

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support import VECTOR_KEY, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.master import gate
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.chunks import encode_message
from wazuhcluster.protocol.commands import HELLO
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol


class HelloGateTests(SynchronousTestCase):
    """A master with small caps, connections built as the reactor builds them."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = node_config(short_tempdir(self), cluster_json={"wazuhcluster": {
            "max_pre_hello_connections": 6, "max_pre_hello_per_address": 3}})
        self.node = MasterNode(self.config, self.clock, SynchronousRunner())
        self.factory = ClusterServerFactory(self.node)

    def accept(self, host: str) -> tuple[ClusterProtocol, StringTransport] | None:
        """What the listening port does for a new connection from ``host``."""
        address = IPv4Address("TCP", host, 40000)
        protocol = self.factory.buildProtocol(address)
        if protocol is None:
            return None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_per_address_limit_refuses_only_that_address(self) -> None:
        """The 4th waiting connection from one address is refused; others still get in."""
        for _ in range(3):
            self.assertIsNotNone(self.accept("192.0.2.1"))
        self.assertIsNone(self.accept("192.0.2.1"))
        self.assertIsNotNone(self.accept("192.0.2.2"))
        self.assertEqual(len(self.node.hello_gate), 4)

    def test_global_cap_closes_the_oldest(self) -> None:
        """When max_pre_hello_connections wait, a new one closes the oldest."""
        accepted = [self.accept(f"192.0.2.{i}") for i in range(6)]
        newest = self.accept("192.0.2.100")
        self.assertIsNotNone(newest)
        first = accepted[0]
        assert first is not None
        self.assertTrue(first[1].disconnecting)
        self.assertFalse(any(a[1].disconnecting for a in accepted[1:] if a is not None))

    def test_hello_and_close_leave_the_gate(self) -> None:
        """A connection whose hello is accepted, or that closes, no longer counts."""
        accepted = self.accept("192.0.2.1")
        assert accepted is not None
        protocol, _transport = accepted
        codec = FernetCodec(VECTOR_KEY)
        token = codec.encrypt(b"worker-1 wazuh worker 4.7.5")
        for frame in encode_message(1, HELLO, 27, token):
            protocol.dataReceived(frame)
        self.assertEqual(self.node.registry.names(), {"worker-1"})
        self.assertEqual(len(self.node.hello_gate), 0)
        other = self.accept("192.0.2.1")
        assert other is not None
        self.assertEqual(len(self.node.hello_gate), 1)
        other[0].connectionLost()
        self.assertEqual(len(self.node.hello_gate), 0)


class DescriptorWarningTests(SynchronousTestCase):
    """The master warns at start-up when RLIMIT_NOFILE is below what its caps need."""

    def start(self, soft: int) -> list[str]:
        """Start a master under a faked limit; return the warnings."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.patch(gate.resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
        node = MasterNode(node_config(short_tempdir(self)), Clock(), SynchronousRunner())
        node.startService()
        self.addCleanup(node.stopService)
        return [e["log_format"] for e in events if "open-file limit" in e["log_format"]]

    def test_low_limit_warns(self) -> None:
        """600 < 256 + 512: one warning naming LimitNOFILE."""
        [warning] = self.start(600)
        self.assertIn("LimitNOFILE", warning)

    def test_enough_descriptors_is_quiet(self) -> None:
        """1024 is enough for the default caps: no warning."""
        self.assertEqual(self.start(1024), [])
