"""Sendsync through the real protocol stack in memory (iosim, Clock): a local client of the
worker, the worker's link to the master, the master's relay; only the daemon is a stand-in."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.factory import LocalAPIFactory
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.sendsync.daemon import DaemonError
from wazuhcluster.sendsync.extension import SendSyncMaster, SendSyncWorker
from wazuhcluster.sendsync.relay import SendSyncRelay, SendSyncSettings
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode

REQUEST = json.dumps({"daemon_name": "remoted", "message": "assigngroup 001"}).encode()


class MemoryTests(SynchronousTestCase):

    def setUp(self) -> None:
        base = short_tempdir(self)
        self.clock = Clock()
        self.asked: list[tuple[str, bytes, Deferred[bytes]]] = []
        self.master = MasterNode(node_config(base), self.clock, SynchronousRunner())
        relay = SendSyncRelay(None, SendSyncSettings.from_settings(self.master.config.home, {}),
                              ask=self._ask)
        self.mfeature = SendSyncMaster(self.master, relay)
        self.master.extensions.append(self.mfeature)
        self.worker = WorkerNode(node_config(base, node_name="w1", role="worker"), self.clock,
                                 SynchronousRunner())
        self.wfeature = SendSyncWorker(self.worker, timeout=60)
        self.worker.extensions.append(self.wfeature)
        self.worker.local_extensions.append(self.wfeature)
        self.server, self.link, self.link_pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(self.link)
        self.flush()
        self.successResultOf(d)
        self.client_commands = LocalClientCommands(self.clock)
        factory = LocalAPIFactory(self.worker)
        _, self.client, self.local_pump = connected_pair(
            lambda: factory.buildProtocol(None),
            lambda: ClusterProtocol(self.client_commands, self.clock,
                                    accept_reply_requests=True), self.clock)

    async def _ask(self, reactor: Any, path: str, message: bytes, timeout: float) -> bytes:
        d: Deferred[bytes] = Deferred()
        self.asked.append((path, message, d))
        return await d

    def flush(self) -> None:
        for _ in range(8):
            self.link_pump.flush()
            if hasattr(self, "local_pump"):
                self.local_pump.flush()

    def test_sendasync_round_trip(self) -> None:
        reply = self.client.request(b"sendasync", REQUEST)
        self.flush()
        self.assertEqual(self.successResultOf(reply),
                         b"Added request to sendsync requests queue")
        self.assertEqual(self.asked[0][:2], (self.master.config.home + "/queue/sockets/remote",
                                             b"assigngroup 001"))
        self.assertNoResult(self.client_commands.final)
        self.asked[0][2].callback(b'ok {"group":"default"}' + b"x" * 60000)  # a long answer
        self.flush()
        self.assertEqual(self.successResultOf(self.client_commands.final),
                         b'ok {"group":"default"}' + b"x" * 60000)
        self.assertEqual(len(self.wfeature.answers), 0)

    def test_daemon_error_arrives_as_err(self) -> None:
        self.client.request(b"sendasync", REQUEST)
        self.flush()
        self.asked[0][2].errback(DaemonError("the daemon closed the connection without "
                                             "answering"))
        self.flush()
        self.assertEqual(self.successResultOf(self.client_commands.final),
                         b"Error 1014 - Error communicating with socket: remote (the daemon "
                         b"closed the connection without answering)")

    def test_master_link_lost_while_waiting(self) -> None:
        self.client.request(b"sendasync", REQUEST)
        self.flush()
        self.link.disconnect("test drops the link")
        self.flush()
        self.assertIn(b"Error 3023", self.successResultOf(self.client_commands.final))
        self.assertTrue(self.asked[0][2].called)  # the master cancelled the daemon request
