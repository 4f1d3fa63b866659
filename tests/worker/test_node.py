"""Worker: hello through the master link, keepalive timing, reconnect backoff."""

from __future__ import annotations

import errno

from twisted.application.internet import backoffPolicy
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode
from wazuhcluster.worker.service import make_worker_service


class WorkerLinkTests(SynchronousTestCase):
    """A WorkerNode talking to a MasterNode through iosim."""

    def setUp(self) -> None:
        self.clock = Clock()
        base = short_tempdir(self)
        self.master = MasterNode(node_config(base), self.clock, SynchronousRunner())
        self.worker_config = node_config(base, node_name="worker1", role="worker")
        self.worker = WorkerNode(self.worker_config, self.clock, SynchronousRunner())
        self.server, self.client, self.pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)

    def connect(self) -> None:
        """Run the hello handshake to completion."""
        d = self.worker.hello(self.client)
        self.pump.flush()
        self.pump.flush()
        self.successResultOf(d)

    def test_hello_connects_and_exchanges_capabilities(self) -> None:
        """After hello the worker is connected and knows our master's capabilities."""
        self.connect()
        self.assertIs(self.worker.peer, self.client)
        self.assertEqual(self.master.registry.names(), {"worker1"})
        self.assertEqual(self.worker.master_capabilities, frozenset({"sync_now"}))
        session = self.master.registry.get("worker1")
        assert session is not None
        self.assertEqual(session.capabilities, frozenset({"sync_now"}))

    def test_refused_hello_fails_and_closes_the_link(self) -> None:
        """A refused hello fails with the master's error and leaves the worker unconnected."""
        other = MasterNode(node_config(short_tempdir(self), cluster_json={
            "wazuhcluster": {"compatibility_version": "4.7.4"}}), self.clock,
            SynchronousRunner())
        _, client, pump = connected_pair(
            lambda: ClusterServerFactory(other).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(client)
        pump.flush()
        self.assertEqual(self.failureResultOf(d, ClusterError).value.code, 3031)
        self.assertIsNone(self.worker.peer)

    def test_refusals_slow_down_reconnects(self) -> None:
        """Each refused hello counts; the retry policy then waits as after that many failures."""
        other = MasterNode(node_config(short_tempdir(self), cluster_json={
            "wazuhcluster": {"compatibility_version": "4.7.4"}}), self.clock,
            SynchronousRunner())
        self.worker.auto_hello = True
        for expected in (1, 2, 3):
            _, client, pump = connected_pair(
                lambda: ClusterServerFactory(other).buildProtocol(None),
                lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
            pump.flush()
            pump.flush()
            self.assertEqual(self.worker.refusals, expected)
            self.assertFalse(client.connected_ok)
        self.assertEqual(self.worker.retry_delay(lambda attempt: float(attempt), 0), 3.0)

    def test_wrong_key_is_named_and_slows_down_reconnects(self) -> None:
        """A master with another key drops the hello: the log names the likely cause and
        each drop counts as a refusal, so the retry delay grows."""
        other = MasterNode(node_config(short_tempdir(self),
                                       key="ZYXWVUTSRQPONMLKJIHGFEDCBA987654"),
                           self.clock, SynchronousRunner())
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.worker.auto_hello = True
        policy = backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0, jitter=lambda: 0)
        delays = []
        for expected in (1, 2, 3):
            _, _client, pump = connected_pair(
                lambda: ClusterServerFactory(other).buildProtocol(None),
                lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
            for _ in range(3):
                pump.flush()
            self.clock.advance(self.worker_config.intervals.timeout_cluster_request)
            pump.flush()
            self.assertEqual(self.worker.refusals, expected)
            delays.append(self.worker.retry_delay(policy, 1))  # ClientService says attempt 1
        self.assertEqual(delays, sorted(delays))
        self.assertLess(delays[0], delays[-1])
        hints = [formatEvent(e) for e in events
                 if "dropped the link during hello" in formatEvent(e)]
        self.assertEqual(len(hints), 3, [formatEvent(e) for e in events])
        self.assertIn("a wrong key is the usual cause", hints[0])
        self.assertTrue(hints[0].startswith("[Worker] [Main] Could not connect to master: "))

    def test_start_logs_one_starting_line(self) -> None:
        """The worker says who it is, where its master is and which version it speaks."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.worker.startService()
        self.addCleanup(self.worker.stopService)
        lines = [formatEvent(e) for e in events if "Starting worker" in formatEvent(e)]
        self.assertEqual(lines, ["[Worker worker1] [Main] Starting worker worker1 of cluster "
                                 "wazuh: master 127.0.0.1:15160, version 4.7.5."])

    def test_keepalive_success_resets_failures(self) -> None:
        """A keepalive answered by the master keeps the link and the failure count at 0."""
        self.connect()
        self.worker.failed_keepalives = 1
        self.clock.advance(self.worker_config.intervals.keep_alive)
        d = Deferred.fromCoroutine(self.worker.send_keepalive())
        self.pump.flush()
        self.successResultOf(d)
        self.assertEqual(self.worker.failed_keepalives, 0)

    def test_failed_keepalives_disconnect_after_the_limit(self) -> None:
        """Keepalives without answer disconnect after max_failed_keepalive_attempts."""
        self.connect()
        limit = self.worker_config.intervals.max_failed_keepalive_attempts
        timeout = self.worker_config.intervals.timeout_cluster_request
        for attempt in range(1, limit + 1):
            self.clock.advance(self.worker_config.intervals.keep_alive)
            self.client.last_received = self.clock.seconds()  # talking, but not answering
            # the pump is not flushed: no answer comes
            d = Deferred.fromCoroutine(self.worker.send_keepalive())
            self.clock.advance(timeout + 1)
            self.successResultOf(d)
            self.assertEqual(self.worker.failed_keepalives, attempt)
        self.pump.flush()
        self.assertIsNone(self.worker.peer)
        self.assertFalse(self.client.connected_ok)


    def test_keepalive_waits_for_its_interval(self) -> None:
        """No echo-c before keep_alive seconds while the master keeps talking."""
        self.connect()
        sent = self.client.bytes_sent
        self.clock.advance(self.worker_config.ext.idle_probe_after - 1)
        self.client.last_received = self.clock.seconds()
        self.successResultOf(Deferred.fromCoroutine(self.worker.send_keepalive()))
        self.assertEqual(self.client.bytes_sent, sent)

    def test_silent_master_dropped_after_one_unanswered_probe(self) -> None:
        """A master that sends nothing at all is given up after idle + liveness_timeout."""
        self.connect()
        ext = self.worker_config.ext
        self.clock.advance(ext.idle_probe_after)
        d = Deferred.fromCoroutine(self.worker.send_keepalive())  # no answer: not pumped
        self.clock.advance(ext.liveness_timeout + 0.1)
        self.successResultOf(d)
        self.pump.flush()
        self.assertIsNone(self.worker.peer)
        self.assertLess(ext.idle_probe_after + ext.liveness_timeout + 1.0, 10.0)

    def test_silent_master_is_probed_early(self) -> None:
        """A master silent for idle_probe_after seconds gets an echo-c before keep_alive."""
        self.connect()
        sent = self.client.bytes_sent
        self.clock.advance(self.worker_config.ext.idle_probe_after)
        d = Deferred.fromCoroutine(self.worker.send_keepalive())
        self.assertGreater(self.client.bytes_sent, sent)
        self.pump.flush()
        self.successResultOf(d)


class BackoffTests(SynchronousTestCase):
    """The master link reconnects with capped, jittered exponential backoff."""

    def test_unanswered_attempts_are_retried_within_a_second(self) -> None:
        """A master that does not answer (a silent partition): each attempt gives up after
        connect_timeout (2 s) and the next comes 0.5-1 s later, however many failed, so a
        healed link is found within seconds; a refused connection backs off again."""
        reactor = MemoryReactorClock()
        config = node_config(short_tempdir(self), node_name="worker1", role="worker",
                             cluster_json={"wazuhcluster": {"reconnect_max_delay": 5}})
        self.assertEqual(config.ext.connect_timeout, 2.0)
        node = make_worker_service(config, reactor, SynchronousRunner())
        node.startService()
        self.addCleanup(node.stopService)

        def fail_with(exc: Exception) -> float:
            _, _, factory, timeout, _ = reactor.tcpClients[-1]
            self.assertEqual(timeout, 2.0)
            before = reactor.seconds()
            existing = set(reactor.getDelayedCalls())
            factory.clientConnectionFailed(None, Failure(exc))
            [retry] = [c for c in reactor.getDelayedCalls() if c not in existing]
            delay: float = retry.getTime() - before
            reactor.advance(delay)
            return delay
        silent = [fail_with(error.TimeoutError()) for _ in range(8)]
        self.assertTrue(all(0.5 <= d < 1.0 for d in silent), silent)
        # Once the master's neighbour entry has expired, the same cut gives "No route to
        # host" (EHOSTUNREACH, a plain ConnectError) between the timeouts: also unanswered.
        unreachable = [fail_with(e) for e in (
            error.ConnectError(errno.EHOSTUNREACH, "No route to host"), error.TimeoutError(),
            error.NoRouteError(), error.ConnectError(errno.EHOSTUNREACH, "No route to host"))]
        self.assertTrue(all(0.5 <= d < 1.0 for d in unreachable), unreachable)
        # Refused: back to the backoff, already at its cap after 8 attempts (5 s + jitter).
        refused = [fail_with(ConnectionRefusedError()) for _ in range(6)]
        self.assertTrue(all(5.0 <= d <= 5.0 + 1 for d in refused), refused)

    def test_retry_delays_grow_and_are_capped(self) -> None:
        """Each failed attempt schedules the next one later, never beyond the cap + 1 s."""
        reactor = MemoryReactorClock()
        config = node_config(short_tempdir(self), node_name="worker1", role="worker",
                             cluster_json={"wazuhcluster": {"reconnect_max_delay": 5}})
        node = make_worker_service(config, reactor, SynchronousRunner())
        node.startService()
        self.addCleanup(node.stopService)
        delays = []
        for _ in range(8):
            _, _, factory, *_ = reactor.tcpClients[-1]
            before = reactor.seconds()
            existing = set(reactor.getDelayedCalls())
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            [retry] = [c for c in reactor.getDelayedCalls() if c not in existing]
            delays.append(retry.getTime() - before)
            reactor.advance(delays[-1])
        self.assertEqual(len(reactor.tcpClients), 9)
        self.assertTrue(all(0 < d <= 5 + 1 for d in delays), delays)
        self.assertGreater(delays[-1], delays[0])
