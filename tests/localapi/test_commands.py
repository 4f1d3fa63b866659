"""The local Unix-socket API: get_config, get_nodes, get_health on master and worker."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.commands import SENT_TO_MASTER
from wazuhcluster.localapi.factory import LocalAPIFactory
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.commands import GET_CONFIG, GET_HEALTH, GET_NODES
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode


class LocalAPITests(SynchronousTestCase):
    """Local clients talking to a master and to a connected worker, in memory."""

    def setUp(self) -> None:
        self.clock = Clock()
        base = short_tempdir(self)
        self.master = MasterNode(node_config(base), self.clock, SynchronousRunner())
        self.worker = WorkerNode(node_config(base, node_name="worker1", role="worker"),
                                 self.clock, SynchronousRunner())
        _, link, self.link_pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(link)
        self.link_pump.flush()
        self.link_pump.flush()
        self.successResultOf(d)

    def local(self, node: Any) -> tuple[ClusterProtocol, LocalClientCommands, Any]:
        """A local client connected to ``node``'s local API."""
        commands = LocalClientCommands(self.clock)
        _, client, pump = connected_pair(
            lambda: LocalAPIFactory(node).buildProtocol(None),
            lambda: ClusterProtocol(commands, self.clock, codec=None,
                                    accept_reply_requests=True), self.clock)
        return client, commands, pump

    def ask(self, node: Any, command: bytes, payload: bytes) -> Any:
        """Send a request and follow the worker's 'Sent request to master node' flow."""
        client, commands, pump = self.local(node)
        d = client.request(command, payload)
        for _ in range(5):
            pump.flush()
            self.link_pump.flush()
        reply = self.successResultOf(d)
        if reply == SENT_TO_MASTER:
            for _ in range(5):
                self.link_pump.flush()
                pump.flush()
            reply = self.successResultOf(commands.final)
        return json.loads(reply)

    def test_get_config_redacts_the_key(self) -> None:
        """get_config answers the <cluster> block without the key."""
        answer = self.ask(self.master, GET_CONFIG, b"")
        self.assertEqual(answer["node_name"], "master-node")
        self.assertEqual(answer["key"], "********")

    def test_get_nodes_from_master_and_worker(self) -> None:
        """Both the master and a worker (via the master) list the same two nodes."""
        from_master = self.ask(self.master, GET_NODES, b"{}")
        from_worker = self.ask(self.worker, GET_NODES, b"{}")
        self.assertEqual(from_master, from_worker)
        self.assertEqual([n["name"] for n in from_master["items"]], ["master-node", "worker1"])

    def test_get_health_from_worker(self) -> None:
        """A worker relays get_health to the master and delivers it with control_res."""
        answer = self.ask(self.worker, GET_HEALTH, b"null")
        self.assertEqual(answer["n_connected_nodes"], 1)
        self.assertIn("worker1", answer["nodes"])

    def test_worker_relays_master_errors_instead_of_hanging(self) -> None:
        """A master error reaches the local client as an error object (no 200 s wait)."""
        answer = self.ask(self.worker, GET_NODES, json.dumps({"filter_type": "x"}).encode())
        self.assertEqual(answer["__wazuh_exception__"]["__object__"]["code"], 1728)

    def test_disconnected_worker_says_3023(self) -> None:
        """Without a master link, a worker answers get_nodes with error 3023."""
        self.worker.peer = None
        client, _, pump = self.local(self.worker)
        d = client.request(GET_NODES, b"{}")
        pump.flush()
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3023)

    def test_idle_local_clients_are_closed(self) -> None:
        """A local client silent for max_allowed_time_without_keepalive is disconnected."""
        client, _, pump = self.local(self.master)
        self.clock.advance(self.master.config.intervals.max_allowed_time_without_keepalive + 1)
        pump.flush()
        self.assertFalse(client.connected_ok)

    def test_client_ids_are_unique(self) -> None:
        """Every live local client gets its own id."""
        factory = LocalAPIFactory(self.master)
        for _ in range(50):
            factory.buildProtocol(None)
        self.assertEqual(len(factory.clients), 50)

    def test_unknown_local_command(self) -> None:
        """Unknown commands get Wazuh's err text."""
        client, _, pump = self.local(self.master)
        d: Deferred[bytes] = client.request(b"bogus", b"")
        pump.flush()
        self.assertIn("unknown command", str(self.failureResultOf(d, ClusterError).value))
