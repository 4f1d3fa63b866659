"""Master membership: hello rules, duplicate names, keepalive bookkeeping, queries."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.protocol.test_handler import RecordingHandler
from tests.support import VECTOR_KEY, connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.commands import ECHO_CLIENT, GET_HEALTH, GET_NODES, HELLO
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol


class SilentHandler(RecordingHandler):
    """A worker whose process is frozen: it never answers anything."""

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Never fire."""
        return Deferred()


class MasterHelloTests(SynchronousTestCase):
    """A master node and in-memory worker connections."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = node_config(short_tempdir(self))
        self.node = MasterNode(self.config, self.clock, SynchronousRunner())
        self.factory = ClusterServerFactory(self.node)

    def connect(self, answers_echo: bool = True) -> tuple[Any, ClusterProtocol, Any]:
        """One worker connection; returns (server protocol, client protocol, pump)."""
        handler = RecordingHandler() if answers_echo else SilentHandler()
        return connected_pair(
            lambda: self.factory.buildProtocol(None),
            lambda: ClusterProtocol(handler, self.clock, codec=FernetCodec(VECTOR_KEY)),
            self.clock)

    def hello(self, client: ClusterProtocol, pump: Any, payload: bytes) -> Any:
        """Send hello and pump until answered; return the Deferred."""
        d = client.request(HELLO, payload)
        pump.flush()
        return d

    def test_hello_registers_the_worker(self) -> None:
        """A valid hello is answered 'Client <name> added' and registers the worker."""
        _, client, pump = self.connect()
        d = self.hello(client, pump, b"worker-1 wazuh worker 4.7.5")
        self.assertEqual(self.successResultOf(d), b"Client worker-1 added")
        self.assertEqual(self.node.registry.names(), {"worker-1"})

    def assertRefused(self, payload: bytes, code: int) -> None:
        """The hello ``payload`` is refused with ``code`` and nothing is registered."""
        _, client, pump = self.connect()
        d = self.hello(client, pump, payload)
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, code)
        self.assertNotIn(payload.split()[0].decode(), self.node.registry.names())

    def test_name_of_the_master_is_refused_3029(self) -> None:
        """A worker using the master's name gets 3029."""
        self.assertRefused(b"master-node wazuh worker 4.7.5", 3029)

    def test_other_cluster_is_refused_3030(self) -> None:
        """A worker of another cluster gets 3030 and is not registered."""
        self.assertRefused(b"worker-1 other worker 4.7.5", 3030)

    def test_other_version_is_refused_3031(self) -> None:
        """Any version string but ours is refused with 3031 (exact match, as Wazuh)."""
        self.assertRefused(b"worker-1 wazuh worker 4.7.4", 3031)

    def test_path_like_names_are_refused(self) -> None:
        """A hello name that would be a path ('..', '../x') is refused; no directory is made."""
        self.assertRefused(b".. wazuh worker 4.7.5", 3000)
        self.assertRefused(b"../etc wazuh worker 4.7.5", 3000)
        self.assertFalse(os.path.exists(os.path.join(self.config.home, "etc", "queue")))

    def test_malformed_hello_is_refused_1000(self) -> None:
        """A hello without exactly four fields is an internal error 1000."""
        self.assertRefused(b"worker-1 wazuh worker", 1000)

    def test_commands_before_hello_are_refused(self) -> None:
        """Before hello, a known command is refused and nothing happens."""
        _, client, pump = self.connect()
        d = client.request(ECHO_CLIENT, b"keepalive")
        pump.flush()
        self.failureResultOf(d, RemoteCommandError)

    def test_live_duplicate_is_refused_3028(self) -> None:
        """A second connection with a live worker's name gets 3028; the first stays."""
        _, first, pump1 = self.connect()
        self.successResultOf(self.hello(first, pump1, b"worker-1 wazuh worker 4.7.5"))
        _, second, pump2 = self.connect()
        d = second.request(HELLO, b"worker-1 wazuh worker 4.7.5")
        for _ in range(5):
            pump2.flush()
            pump1.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3028)
        self.assertTrue(first.connected_ok)
        self.assertEqual(self.node.registry.names(), {"worker-1"})

    def test_dead_duplicate_is_replaced_at_once(self) -> None:
        """If the old connection does not answer the probe, the new one is accepted."""
        _, old_client, old_pump = self.connect(answers_echo=False)
        self.successResultOf(self.hello(old_client, old_pump, b"worker-1 wazuh worker 4.7.5"))
        old_session = self.node.registry.get("worker-1")
        _, new, pump = self.connect()
        d = new.request(HELLO, b"worker-1 wazuh worker 4.7.5")
        pump.flush()
        old_pump.flush()
        self.assertNoResult(d)
        self.clock.advance(self.config.ext.duplicate_probe_timeout + 0.1)
        pump.flush()
        old_pump.flush()
        self.assertEqual(self.successResultOf(d), b"Client worker-1 added")
        self.assertIsNot(self.node.registry.get("worker-1"), old_session)

    def test_silent_connection_is_dropped_after_the_hello_deadline(self) -> None:
        """A connection that never says hello is closed after hello_timeout."""
        server, _, pump = self.connect()
        self.clock.advance(self.config.ext.hello_timeout + 1)
        pump.flush()
        self.assertFalse(server.connected_ok)

    def test_big_frames_are_refused_before_hello(self) -> None:
        """Before hello only small frames are accepted (no memory pinned by strangers)."""
        server, client, pump = self.connect()
        d = client.request(b"echo", b"x" * (self.config.ext.pre_hello_max_payload + 1))
        pump.flush()
        self.failureResultOf(d, ClusterError)
        self.assertFalse(server.connected_ok)
        self.assertFalse(client.connected_ok)

    def test_keepalive_updates_last_keepalive_and_answers_ok_m(self) -> None:
        """echo-c is answered with ok-m and refreshes the worker's last keepalive."""
        _, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        self.clock.advance(30)
        d = client.request(ECHO_CLIENT, b"keepalive")
        pump.flush()
        self.assertEqual(self.successResultOf(d), b"keepalive")
        session = self.node.registry.get("worker-1")
        assert session is not None
        self.assertEqual(session.last_keepalive, 30)

    def test_silent_worker_is_dropped_by_the_keepalive_check(self) -> None:
        """A registered worker silent for longer than the limit is disconnected."""
        server, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        self.clock.advance(self.config.intervals.max_allowed_time_without_keepalive - 1)
        self.successResultOf(self.node.check_keepalives())
        self.assertTrue(server.connected_ok)
        self.clock.advance(2)
        self.successResultOf(self.node.check_keepalives())
        pump.flush()
        self.assertFalse(server.connected_ok)
        self.assertEqual(self.node.registry.names(), set())

    def test_idle_worker_is_probed_and_kept_when_it_answers(self) -> None:
        """A worker silent for idle_probe_after gets echo-m; answering keeps it."""
        server, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        self.clock.advance(self.config.ext.idle_probe_after + 1)
        self.successResultOf(Deferred.fromCoroutine(self.node.check_keepalives()))
        pump.flush()
        self.assertTrue(server.connected_ok)
        session = self.node.registry.get("worker-1")
        assert session is not None
        self.assertFalse(session.probing)

    def test_dead_worker_is_dropped_after_an_unanswered_probe(self) -> None:
        """A frozen worker is dropped after idle_probe_after + probe timeout, not 120 s."""
        server, client, pump = self.connect(answers_echo=False)
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        self.clock.advance(self.config.ext.idle_probe_after + 1)
        self.successResultOf(Deferred.fromCoroutine(self.node.check_keepalives()))
        pump.flush()
        self.clock.advance(self.config.ext.liveness_timeout + 0.1)
        pump.flush()
        self.assertFalse(server.connected_ok)
        self.assertEqual(self.node.registry.names(), set())

    def test_default_detection_under_ten_seconds(self) -> None:
        """Idle threshold + probe timeout + check period stay under 10 s by default."""
        ext = self.config.ext
        self.assertLess(ext.idle_probe_after + ext.liveness_timeout + ext.reaper_check_interval,
                        10.0)

    def test_busy_worker_not_dropped_for_a_late_probe_answer(self) -> None:
        """A worker whose bytes keep arriving is kept even if the probe answer is late."""
        server, client, pump = self.connect(answers_echo=False)
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        self.clock.advance(self.config.ext.idle_probe_after + 1)
        self.successResultOf(Deferred.fromCoroutine(self.node.check_keepalives()))
        pump.flush()
        session = self.node.registry.get("worker-1")
        assert session is not None
        self.clock.advance(1)
        session.peer.last_received = self.clock.seconds()  # e.g. a sync's chunks arriving
        self.clock.advance(self.config.ext.liveness_timeout)
        pump.flush()
        self.assertTrue(server.connected_ok)
        self.assertEqual(self.node.registry.names(), {"worker-1"})

    def test_disconnect_unregisters(self) -> None:
        """When the worker's connection closes, its registration goes away."""
        _, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        client.transport.loseConnection()
        pump.flush()
        self.assertEqual(self.node.registry.names(), set())

    def test_get_nodes_lists_master_then_workers(self) -> None:
        """get_nodes returns the master first, then workers, with Wazuh's fields."""
        _, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        d = client.request(GET_NODES, b"{}")
        pump.flush()
        answer = json.loads(self.successResultOf(d))
        ip = self.node.registry.get("worker-1").ip  # type: ignore[union-attr]
        self.assertEqual(answer, {"items": [
            {"name": "master-node", "type": "master", "version": "4.7.5", "ip": "127.0.0.1"},
            {"name": "worker-1", "type": "worker", "version": "4.7.5", "ip": ip}],
            "totalItems": 2})

    def test_get_health_reports_each_worker(self) -> None:
        """get_health has the master's info and each worker's info and status."""
        _, client, pump = self.connect()
        self.successResultOf(self.hello(client, pump, b"worker-1 wazuh worker 4.7.5"))
        d = client.request(GET_HEALTH, b"null")
        pump.flush()
        answer = json.loads(self.successResultOf(d))
        self.assertEqual(answer["n_connected_nodes"], 1)
        worker = answer["nodes"]["worker-1"]
        self.assertEqual(worker["info"]["type"], "worker")
        self.assertEqual(worker["status"]["last_sync_integrity"]["date_start_master"], "n/a")
        self.assertIn("last_keep_alive", worker["status"])

    def test_get_health_counts_active_agents_once(self) -> None:
        """get_health asks the agents feature for the per-node counts once for the whole
        answer (not once per node) and gives each node its own count."""
        calls: list[None] = []

        async def counts() -> dict[str, int]:
            calls.append(None)
            return {"worker-1": 4, "worker-2": 2, self.config.node_name: 1}

        self.node.active_agents_by_node = counts
        for name in (b"worker-1", b"worker-2", b"worker-3"):
            _, client, pump = self.connect()
            self.successResultOf(self.hello(client, pump, name + b" wazuh worker 4.7.5"))
        answer = self.successResultOf(Deferred.fromCoroutine(self.node.get_health(None)))
        self.assertEqual(len(calls), 1)
        self.assertEqual({n: v["info"]["n_active_agents"] for n, v in answer["nodes"].items()},
                         {"worker-1": 4, "worker-2": 2, "worker-3": 0,
                          self.config.node_name: 1})

    def test_get_nodes_unknown_filter_type_is_1728(self) -> None:
        """A bad filter_type is refused with Wazuh's error 1728."""
        with self.assertRaises(ClusterError) as ctx:
            self.node.get_nodes({"filter_type": "bogus"})
        self.assertEqual(ctx.exception.code, 1728)
