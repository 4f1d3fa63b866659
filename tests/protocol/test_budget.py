"""The node-wide memory budget: shared by every connection, with a per-connection share."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.protocol.test_handler import RecordingHandler
from tests.support import VECTOR_KEY, connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ConfigError, RemoteCommandError
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.budget import MemoryBudget
from wazuhcluster.protocol.commands import ECHO, HELLO, NEW_STR, STR_UPD
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import HEADER, command_field
from wazuhcluster.protocol.handler import ClusterProtocol

MIB = 1024 * 1024


def divided_frame(counter: int, size: int) -> bytes:
    """One non-final fragment of a divided message that is never finished."""
    return HEADER.pack(counter, size, command_field(b"sendsync", divided=True)) + b"x" * size


class AccountTests(SynchronousTestCase):
    """MemoryBudget / MemoryAccount arithmetic."""

    def test_share_and_total(self) -> None:
        """A connection may not pass its share; all together may not pass the total."""
        budget = MemoryBudget(total=100, per_connection=60)
        a, b = budget.account(), budget.account()
        self.assertIsNone(a.set("frames", 50))
        self.assertIn("memory_per_connection", a.refusal("strings", 20) or "")
        self.assertIsNone(b.set("frames", 40))
        self.assertIn("memory_budget", b.refusal("strings", 20) or "")
        self.assertEqual(budget.used, 90)
        a.close()
        self.assertEqual(budget.used, 40)
        self.assertIsNone(b.refusal("strings", 20))


class ProtocolBudgetTests(SynchronousTestCase):
    """Unfinished divided messages on several connections."""

    def connection(self, budget: MemoryBudget) -> tuple[ClusterProtocol, StringTransport]:
        """A plain connection charged to ``budget``."""
        protocol = ClusterProtocol(RecordingHandler(), Clock(), memory=budget.account(),
                                   max_frame_payload=2 * MIB, max_message=8 * MIB)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_three_connections_cannot_pass_the_total(self) -> None:
        """Three peers each opening 10 divided messages: the node stays within its budget,
        the connection that would pass it is closed, the others go on."""
        budget = MemoryBudget(total=20 * MIB, per_connection=9 * MIB)
        connections = [self.connection(budget) for _ in range(3)]
        for counter in range(10):
            for protocol, transport in connections:
                if not transport.disconnecting:
                    protocol.dataReceived(divided_frame(counter, MIB))
                    if transport.disconnecting:  # aborted: the reactor calls connectionLost
                        protocol.connectionLost()
                self.assertLessEqual(budget.used, 20 * MIB)
        closed = [t for _, t in connections if t.disconnecting]
        # the third passes the total first (3 x 7 MiB > 20), the others then their share
        self.assertEqual(len(closed), 3)
        self.assertEqual(budget.used, sum(p.memory.held for p, t in connections  # type: ignore
                                          if not t.disconnecting))

    def test_a_legitimate_message_within_the_share_passes(self) -> None:
        """A complete 6 MiB divided message under a 9 MiB share is delivered."""
        budget = MemoryBudget(total=20 * MIB, per_connection=9 * MIB)
        protocol, transport = self.connection(budget)
        for _piece in range(3):
            protocol.dataReceived(divided_frame(7, 2 * MIB))
        protocol.dataReceived(HEADER.pack(7, 5, command_field(b"echo")[:-1] + b"-") + b"hello")
        self.assertFalse(transport.disconnecting)
        handler = protocol.handler
        assert isinstance(handler, RecordingHandler)
        self.assertEqual(len(handler.requests[-1][1]), 6 * MIB + 5)
        self.assertEqual(budget.used, 0)


class StringBudgetTests(SynchronousTestCase):
    """Long strings are charged to the connection's share."""

    def test_string_beyond_the_share_is_dropped_with_an_error(self) -> None:
        """A new_str filled past the share is answered 3050 and forgotten; the node and the
        connection go on."""
        clock = Clock()
        config = node_config(short_tempdir(self), cluster_json={"wazuhcluster": {
            "max_message_size": 4 * MIB, "max_frame_payload": 2 * MIB,
            "memory_per_connection": 8 * MIB, "memory_budget": 16 * MIB,
            "max_pending_strings_bytes": 64 * MIB}})
        node = MasterNode(config, clock, SynchronousRunner())
        factory = ClusterServerFactory(node)
        _, client, pump = connected_pair(
            lambda: factory.buildProtocol(None),
            lambda: ClusterProtocol(RecordingHandler(), clock, codec=FernetCodec(VECTOR_KEY)),
            clock)
        d = client.request(HELLO, b"worker-1 wazuh worker 4.7.5")
        pump.flush()
        self.successResultOf(d)
        ids = []
        for _ in range(3):
            d = client.request(NEW_STR, str(4 * MIB).encode())
            pump.flush()
            ids.append(self.successResultOf(d))
        errors = []
        for string_id in ids:
            for _ in range(4):
                d = client.request(STR_UPD, string_id + b" " + b"y" * (MIB - 100))
                pump.flush()
                if d.called and isinstance(d.result, object) and not isinstance(d.result,
                                                                                 bytes):
                    errors.append(self.failureResultOf(d, RemoteCommandError).value.code)
                    break
                self.successResultOf(d)
        self.assertIn(3050, errors)
        self.assertLessEqual(node.memory.used, 8 * MIB)
        d = client.request(ECHO, b"still here")
        pump.flush()
        self.assertEqual(self.successResultOf(d), b"still here")


class ConfigTests(SynchronousTestCase):
    """Inconsistent limits stop start-up with one line."""

    def test_share_must_fit_the_largest_message(self) -> None:
        """memory_per_connection below max_message_size + max_frame_payload is refused."""
        with self.assertRaises(ConfigError) as ctx:
            node_config(short_tempdir(self), cluster_json={"wazuhcluster": {
                "memory_per_connection": 1024}})
        self.assertIn("wazuhcluster.memory_per_connection", str(ctx.exception))
        with self.assertRaises(ConfigError) as ctx:
            node_config(short_tempdir(self), cluster_json={"wazuhcluster": {
                "memory_budget": 300 * MIB, "memory_per_connection": 400 * MIB}})
        self.assertIn("wazuhcluster.memory_budget", str(ctx.exception))
