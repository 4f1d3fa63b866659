"""Silent-peer detection under 10 s on both sides, without false alarms on a busy link."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.master.test_commands import SilentHandler
from tests.support import VECTOR_KEY, connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.commands import HELLO
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import HEADER, command_field
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode

#: The detection target of both sides, in seconds after the peer's last byte.
TARGET = 10.0


def partial_frame(size: int) -> bytes:
    """The start of a big frame: a peer in the middle of sending a large message."""
    return HEADER.pack(99, 8 * 1024 * 1024, command_field(b"file_upd")) + b"z" * size


class WorkerSideTests(SynchronousTestCase):
    """A worker and a master whose answers we hold back (a frozen master)."""

    def setUp(self) -> None:
        self.clock = Clock()
        base = short_tempdir(self)
        self.master = MasterNode(node_config(base), self.clock, SynchronousRunner())
        self.config = node_config(base, node_name="worker1", role="worker")
        self.worker = WorkerNode(self.config, self.clock, SynchronousRunner())
        self.server, self.client, self.pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(self.client)
        self.pump.flush()
        self.pump.flush()
        self.successResultOf(d)

    def tick_until_lost(self, limit: float, feed: Any = None) -> float:
        """Run the keepalive loop every tick without delivering the master's answers;
        return the seconds until the worker closed the link (or ``limit``)."""
        step = min(self.config.intervals.keep_alive, self.config.ext.reaper_check_interval)
        start = self.client.last_received
        while self.clock.seconds() - start < limit:
            Deferred.fromCoroutine(self.worker.send_keepalive())
            self.clock.advance(step)
            if feed is not None:
                feed()
            if not self.client.connected_ok or self.client.transport.disconnecting:
                return float(self.clock.seconds() - start)
        return limit

    def test_frozen_master_is_noticed_in_under_10_s(self) -> None:
        """A master that sends nothing and answers nothing is dropped before TARGET s."""
        elapsed = self.tick_until_lost(60)
        self.assertLess(elapsed, TARGET)

    def test_busy_master_is_not_taken_for_dead(self) -> None:
        """While the master's bytes keep arriving (a big message in progress), the probe
        going unanswered does not close the link."""
        self.client.dataReceived(partial_frame(1))
        elapsed = self.tick_until_lost(60, feed=lambda: self.client.dataReceived(b"z" * 1000))
        self.assertEqual(elapsed, 60)
        self.assertTrue(self.client.connected_ok)


class MasterSideTests(SynchronousTestCase):
    """A master and a worker that stops answering."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = node_config(short_tempdir(self))
        self.node = MasterNode(self.config, self.clock, SynchronousRunner())
        factory = ClusterServerFactory(self.node)
        self.server, self.client, self.pump = connected_pair(
            lambda: factory.buildProtocol(None),
            lambda: ClusterProtocol(SilentHandler(), self.clock,
                                    codec=FernetCodec(VECTOR_KEY)), self.clock)
        d = self.client.request(HELLO, b"worker-1 wazuh worker 4.7.5")
        self.pump.flush()
        self.successResultOf(d)

    def run_checks(self, limit: float, feed: Any = None) -> float:
        """Run the master's check every reaper_check_interval; seconds until it dropped
        the worker (or ``limit``)."""
        start = self.server.last_received
        while self.clock.seconds() - start < limit:
            Deferred.fromCoroutine(self.node.check_keepalives())
            self.pump.flush()
            self.clock.advance(self.config.ext.reaper_check_interval)
            if feed is not None:
                feed()
            self.pump.flush()
            if not self.node.registry.names():
                return float(self.clock.seconds() - start)
        return limit

    def test_frozen_worker_is_noticed_in_under_10_s(self) -> None:
        """A worker that answers nothing is dropped before TARGET s."""
        self.assertLess(self.run_checks(60), TARGET)

    def test_busy_worker_is_not_taken_for_dead(self) -> None:
        """A worker whose bytes keep arriving is kept even if the probe waits."""
        self.server.dataReceived(partial_frame(1))
        self.assertEqual(self.run_checks(60, lambda: self.server.dataReceived(b"z" * 1000)),
                         60)
