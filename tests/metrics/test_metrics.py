"""NodeMetrics, the reactor lag it is told, the metrics section of api.yaml and the listener."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.protocol.test_handler import RecordingHandler
from tests.support import node_config, short_tempdir
from wazuhcluster.api.config import load_api_config
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ConfigError
from wazuhcluster.events import EventFanout
from wazuhcluster.interfaces import IClusterEvents
from wazuhcluster.master.node import MasterNode
from wazuhcluster.metrics.config import DEFAULT_PORT, load_metrics_config
from wazuhcluster.metrics.registry import NodeMetrics
from wazuhcluster.metrics.service import LazySite, MetricsService
from wazuhcluster.metrics.web import MetricsResource
from wazuhcluster.protocol.handler import ClusterProtocol, drop_label
from wazuhcluster.status.local import install as install_status
from wazuhcluster.worker.node import WorkerNode

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: NodeMetrics) -> Samples:
    """The registry as Prometheus scrapes it, parsed by prometheus_client's own parser."""
    text = generate_latest(metrics.registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def master(testcase: SynchronousTestCase, clock: Clock) -> MasterNode:
    return MasterNode(node_config(short_tempdir(testcase)), clock, SynchronousRunner())


class NodeMetricsTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        clock = Clock()
        node = master(self, clock)
        verifyObject(IClusterEvents, NodeMetrics(node, clock))
        verifyObject(IClusterEvents, EventFanout())
        verifyObject(IClusterEvents, node.events)

    def test_syncs_move_histograms_counters_and_last_success(self) -> None:
        clock = Clock()
        m = NodeMetrics(master(self, clock), clock)
        m.sync_done("worker1", "integrity_sync", 100.0, 100.25, True,
                    {"created": 2, "updated": 1, "deleted": 3, "bytes": 4096})
        m.sync_done("worker1", "integrity_sync", 200.0, 201.0, True,
                    {"created": 1, "bytes": 10})
        m.sync_done("worker1", "agent_info", 300.0, 300.5, True, {"rows": 7})
        m.sync_done("worker2", "integrity_sync", 0.0, 1.0, False, {})
        s = samples(m)
        self.assertEqual(v(s, "wazuhcluster_sync_duration_seconds_count", worker="worker1",
                           kind="integrity_sync"), 2)
        self.assertEqual(v(s, "wazuhcluster_sync_duration_seconds_sum", worker="worker1",
                           kind="integrity_sync"), 1.25)
        self.assertEqual(v(s, "wazuhcluster_sync_duration_seconds_bucket", worker="worker1",
                           kind="integrity_sync", le="0.25"), 1)
        self.assertEqual(v(s, "wazuhcluster_sync_last_success_timestamp_seconds",
                           worker="worker1", kind="integrity_sync"), 201.0)
        self.assertEqual(v(s, "wazuhcluster_integrity_files_pushed_total", worker="worker1",
                           action="created"), 3)
        self.assertEqual(v(s, "wazuhcluster_integrity_files_pushed_total", worker="worker1",
                           action="deleted"), 3)
        self.assertEqual(v(s, "wazuhcluster_integrity_bytes_pushed_total", worker="worker1"),
                         4106)
        self.assertEqual(v(s, "wazuhcluster_agent_info_rows_synced_total", worker="worker1"), 7)
        self.assertEqual(v(s, "wazuhcluster_sync_failures_total", worker="worker2",
                           kind="integrity_sync"), 1)
        self.assertEqual(v(s, "wazuhcluster_sync_duration_seconds_count", worker="worker2",
                           kind="integrity_sync"), 0)

    def test_traffic_drops_dapi_agents_and_node_state(self) -> None:
        clock = Clock()
        node = master(self, clock)
        m = NodeMetrics(node, clock)
        s = samples(m)
        self.assertEqual(v(s, "wazuhcluster_link_frames_total", direction="in"), 0)
        self.assertEqual(v(s, "wazuhcluster_connected_workers"), 0)
        self.assertEqual(v(s, "wazuhcluster_node_info", node="master-node", type="master",
                           version=node.config.version, cluster="wazuh"), 1)
        m.link_traffic("in", 3, 300)
        m.link_traffic("out", 1, 50)
        m.connection_dropped("keepalive_limit_exceeded")
        m.dapi_request("wazuh.agent.get_agents", "ok")
        m.dapi_request("wazuh.agent.get_agents", "timeout")
        m.set_agents([{"node_name": "worker1", "connection_status": "active", "n": 4},
                      {"node_name": "master-node", "connection_status": "never_connected",
                       "n": 2}])
        m.set_agents([{"node_name": "worker1", "connection_status": "active", "n": 5}])
        s = samples(m)
        self.assertEqual(v(s, "wazuhcluster_link_frames_total", direction="in"), 3)
        self.assertEqual(v(s, "wazuhcluster_link_bytes_total", direction="out"), 50)
        self.assertEqual(v(s, "wazuhcluster_dropped_connections_total",
                           reason="keepalive_limit_exceeded"), 1)
        self.assertEqual(v(s, "wazuhcluster_dapi_requests_total",
                           function="wazuh.agent.get_agents", outcome="timeout"), 1)
        self.assertEqual(v(s, "wazuhcluster_agents", node="worker1", status="active"), 5)
        self.assertNotIn(("wazuhcluster_agents", (("node", "master-node"),
                                                  ("status", "never_connected"))), s)

    def test_worker_reports_its_master_link(self) -> None:
        clock = Clock()
        worker = WorkerNode(node_config(short_tempdir(self), node_name="w1", role="worker"),
                            clock, SynchronousRunner())
        m = NodeMetrics(worker, clock)
        self.assertEqual(v(samples(m), "wazuhcluster_master_connected"), 0)
        worker.peer = object()  # type: ignore[assignment]
        self.assertEqual(v(samples(m), "wazuhcluster_master_connected"), 1)

    def test_reactor_lag_of_the_node_reaches_the_metrics(self) -> None:
        """The node's one ReactorLag (wazuhcluster.status) tells ``node.events``; the metrics,
        an observer there, show each lateness (no second lag loop of their own)."""
        clock = Clock()
        node = MasterNode(node_config(short_tempdir(self)), clock, SynchronousRunner())
        status = install_status(node, clock)
        m = NodeMetrics(node, clock)
        node.events.add(m)
        status.lag.startService()
        self.addCleanup(status.lag.stopService)
        for _ in range(4):
            clock.advance(0.1)
        clock.advance(0.35)  # one tick 0.25 s late
        s = samples(m)
        self.assertEqual(v(s, "wazuhcluster_reactor_lag_distribution_seconds_count"), 5)
        self.assertAlmostEqual(v(s, "wazuhcluster_reactor_lag_seconds"), 0.25)
        self.assertAlmostEqual(status.lag.last, 0.25)


@implementer(IClusterEvents)
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def sync_done(self, *args: Any) -> None:
        self.events.append(("sync", *args))

    def link_traffic(self, direction: str, frames: int, nbytes: int) -> None:
        self.events.append(("traffic", direction, frames, nbytes))

    def connection_dropped(self, reason: str) -> None:
        self.events.append(("dropped", reason))

    def dapi_request(self, function: str, outcome: str) -> None:
        self.events.append(("dapi", function, outcome))

    def reactor_lag(self, seconds: float) -> None:
        self.events.append(("lag", seconds))


class Broken(Recorder):
    def link_traffic(self, direction: str, frames: int, nbytes: int) -> None:
        raise RuntimeError("observer bug")


class EventTests(SynchronousTestCase):
    def test_fanout_survives_a_broken_observer(self) -> None:
        fan = EventFanout()
        good = Recorder()
        verifyObject(IClusterEvents, good)
        fan.add(Broken())
        fan.add(good)
        fan.link_traffic("in", 1, 10)
        self.assertEqual(good.events, [("traffic", "in", 1, 10)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_protocol_counts_frames_bytes_and_drop_reason(self) -> None:
        clock = Clock()
        sender, receiver = ClusterProtocol(RecordingHandler(), clock), ClusterProtocol(
            RecordingHandler(), clock)
        out, into = Recorder(), Recorder()
        sender.events, receiver.events = out, into
        t1, t2 = StringTransport(), StringTransport()
        sender.makeConnection(t1)
        receiver.makeConnection(t2)
        sender.notify(b"hello", b"x" * 100)
        wire = t1.value()
        self.assertEqual(out.events, [("traffic", "out", 1, len(wire))])
        receiver.dataReceived(wire)
        self.assertEqual(into.events[0], ("traffic", "in", 1, len(wire)))
        receiver.disconnect("keepalive limit exceeded")
        receiver.connectionLost()
        self.assertEqual(into.events[-1], ("dropped", "keepalive_limit_exceeded"))
        sender.connectionLost()
        self.assertEqual(out.events[-1], ("dropped", "peer_closed"))

    def test_drop_labels_are_short_words(self) -> None:
        self.assertEqual(drop_label("malformed stream: bad header"), "malformed_stream")
        self.assertEqual(drop_label("memory budget exceeded: frames"), "memory_budget_exceeded")
        self.assertEqual(drop_label("message left incomplete for 30.0 s"),
                         "message_left_incomplete_for_30_0_s")
        self.assertEqual(drop_label("???"), "other")
        self.assertLessEqual(len(drop_label("x" * 500)), 40)


def write_api_yaml(testcase: SynchronousTestCase, text: str) -> str:
    home = node_config(short_tempdir(testcase)).home
    path = os.path.join(home, "api", "configuration", "api.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return home


class ConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        c = load_metrics_config(node_config(short_tempdir(self)).home)
        self.assertEqual((c.enabled, c.host, c.port), (True, "127.0.0.1", DEFAULT_PORT))

    def test_values_and_the_api_ignores_the_section(self) -> None:
        home = write_api_yaml(self, "port: 55001\nmetrics:\n  host: 0.0.0.0\n  port: 9999\n")
        c = load_metrics_config(home)
        self.assertEqual((c.host, c.port), ("0.0.0.0", 9999))
        self.assertEqual(load_api_config(home).port, 55001)

    def test_bad_values_give_one_line_naming_the_key(self) -> None:
        for text, key in (("metrics:\n  port: 0\n", "metrics.port"),
                          ("metrics:\n  port: '9465'\n", "metrics.port"),
                          ("metrics:\n  host: localhost\n", "metrics.host"),
                          ("metrics:\n  enabled: yes please\n", "metrics.enabled"),
                          ("metrics:\n  bind: 1\n", "metrics.bind"),
                          ("metrics: 9465\n", "metrics must be a mapping")):
            home = write_api_yaml(self, text)
            with self.assertRaises(ConfigError) as ctx:
                load_metrics_config(home)
            message = str(ctx.exception)
            self.assertIn(key, message)
            self.assertNotIn("\n", message)
            self.assertIn("api.yaml", message)


class ServiceTests(SynchronousTestCase):
    def service(self, reactor: Any, text: str = "") -> MetricsService:
        home = write_api_yaml(self, text or "metrics:\n  port: 9999\n")
        node = MasterNode(node_config(os.path.dirname(home)), reactor, SynchronousRunner())
        config = load_metrics_config(home)
        return MetricsService(config, NodeMetrics(node, reactor), node, reactor)

    def test_listens_where_configured(self) -> None:
        reactor = MemoryReactorClock()
        service = self.service(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([(p[0], p[3]) for p in reactor.tcpServers], [(9999, "127.0.0.1")])

    def test_counts_agents_from_the_database(self) -> None:
        reactor = MemoryReactorClock()
        service = self.service(reactor)

        class DB:
            def __init__(self) -> None:
                self.sql: list[str] = []

            def select(self, sql: str) -> Any:
                self.sql.append(sql)
                return succeed([{"node_name": "w1", "connection_status": "active", "n": 3}])

        db = service._node.agent_db = DB()
        service.startService()
        self.addCleanup(service.stopService)
        # Nothing is read while nobody scrapes (it was a GROUP BY over every agent every
        # 10 s on every node).
        reactor.advance(60)
        self.assertEqual(db.sql, [])
        site = reactor.tcpServers[0][1].site()

        def scrape() -> bytes:
            request = DummyRequest([b"metrics"])
            request.path = b"/metrics"
            self.assertEqual(site.resource.render_GET(request), NOT_DONE_YET)
            self.assertTrue(request.finished)
            return b"".join(request.written)
        body = scrape()
        self.assertIn(b'wazuhcluster_agents{node="w1",status="active"} 3.0', body)
        self.assertEqual(len(db.sql), 1)
        self.assertIn("GROUP BY node_name, connection_status", db.sql[0])
        reactor.advance(5)
        scrape()  # counts at most 10 s old: kept
        self.assertEqual(len(db.sql), 1)
        reactor.advance(5)
        scrape()
        self.assertEqual(len(db.sql), 2)

    def test_web_stack_imported_at_the_first_connection(self) -> None:
        """A node imports Twisted's web stack for /metrics only when someone connects."""
        code = ("import sys\n"
                "from twisted.internet.testing import MemoryReactorClock\n"
                "from wazuhcluster.metrics.service import MetricsService\n"
                "import wazuhcluster.node\n"
                "print('twisted.web.server' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(os.path.dirname(
                                 os.path.dirname(os.path.abspath(__file__)))))
        self.assertEqual(out.stdout.strip(), "False")
        reactor = MemoryReactorClock()
        service = self.service(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        factory = reactor.tcpServers[0][1]
        self.assertIsInstance(factory, LazySite)
        self.assertIsNone(factory._site)
        factory.doStart()
        protocol = factory.buildProtocol(None)
        from twisted.web.server import Site
        self.assertIsInstance(factory._site, Site)
        self.assertIs(protocol.factory, factory._site)
        self.assertIs(factory.buildProtocol(None).factory, factory._site)  # built once
        factory.doStop()
        self.assertEqual(factory._site.numPorts, 0)

    def test_scrapes_during_a_count_share_it(self) -> None:
        reactor = MemoryReactorClock()
        service = self.service(reactor)
        answers: list[Deferred[Any]] = []

        class DB:
            def select(self, sql: str) -> Any:
                answers.append(Deferred())
                return answers[-1]

        service._node.agent_db = DB()
        first = service.fresh_agents()
        second = service.fresh_agents()
        self.assertEqual(len(answers), 1)
        self.assertNoResult(first)
        answers[0].callback([{"node_name": "w1", "connection_status": "active", "n": 2}])
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(v(samples(service.metrics), "wazuhcluster_agents", node="w1",
                           status="active"), 2)

    def test_busy_port_is_one_error_line_and_the_node_runs_on(self) -> None:
        error = CannotListenError("127.0.0.1", 9999, OSError(98, "Address already in use"))
        reactor = RaisingMemoryReactor(listenException=error)
        clock = MemoryReactorClock()
        home = write_api_yaml(self, "metrics:\n  port: 9999\n")
        node = MasterNode(node_config(os.path.dirname(home)), clock, SynchronousRunner())
        config = load_metrics_config(home)
        service = MetricsService(config, NodeMetrics(node, clock), node, clock)
        service._reactor = reactor
        seen: list[Any] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        service.startService()
        self.addCleanup(service.stopService)
        errors = [e for e in seen if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        from twisted.logger import formatEvent
        text = formatEvent(errors[0])
        self.assertIn("Cannot listen on 127.0.0.1:9999", text)
        self.assertIn("metrics.port", text)
        self.assertTrue(service.running)
        self.assertIsNone(self.successResultOf(service.listening))

    def test_resource_serves_the_text_format(self) -> None:
        clock = Clock()
        m = NodeMetrics(master(self, clock), clock)
        m.link_traffic("in", 2, 20)
        resource = MetricsResource(m)
        request = DummyRequest([b"metrics"])
        request.path = b"/metrics"
        body = resource.render_GET(request)
        self.assertIn(b"wazuhcluster_link_frames_total{direction=\"in\"} 2.0", body)
        self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(
            b"text/plain"))
        # On the node's pool (here a synchronous one): the same text, written later (a
        # kept metric changed whole: its family is written again, off the reactor).
        m.set_agents([])
        pooled = DummyRequest([b"metrics"])
        pooled.path = b"/metrics"
        ran: list[Any] = []

        def run(f: Any, *args: Any) -> Any:
            ran.append(f)
            return succeed(f(*args))
        self.assertEqual(MetricsResource(m, run).render_GET(pooled), NOT_DONE_YET)
        self.assertEqual(len(ran), 1)
        self.assertTrue(pooled.finished)
        self.assertIn(b"wazuhcluster_link_frames_total{direction=\"in\"} 2.0",
                      b"".join(pooled.written))
        other = DummyRequest([b""])
        other.path = b"/"
        resource.render_GET(other)
        self.assertEqual(other.responseCode, 404)


    def test_scrape_is_one_sized_body_on_a_kept_connection(self) -> None:
        """A scrape's answer carries its Content-Length (not chunked: one piece for the
        scraper to read, no chunk framing written and parsed on both sides) and the
        connection stays open for the next scrape (Prometheus keeps it)."""
        clock = Clock()
        node = master(self, clock)
        m = NodeMetrics(node, clock)
        m.link_traffic("in", 2, 20)
        service = MetricsService(load_metrics_config(write_api_yaml(self, "")), m, node, clock)
        site = service._make_site()
        site._reactor = clock  # the channel's idle timeout on the test's clock
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        for _ in range(2):
            transport.clear()
            protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = transport.value().partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            self.assertEqual(lines[0], b"http/1.1 200 ok")
            self.assertNotIn(b"transfer-encoding: chunked", lines)
            self.assertIn(b"content-length: %d" % len(body), lines)
            self.assertEqual(body, generate_latest(m.registry))
            self.assertFalse(transport.disconnecting)

    def test_pool_only_when_many_kept_children_changed(self) -> None:
        """A scrape goes to the node's pool when many children of the kept families (the
        sync histograms of many workers...) or a whole family must be written again; else
        it is generated on the reactor, where only those few children and the families
        that change every second are written: no thread trip."""
        from wazuhcluster.metrics.registry import SMALL_CHANGE

        clock = Clock()
        m = NodeMetrics(master(self, clock), clock)
        ran: list[Any] = []

        def run(f: Any, *args: Any) -> Any:
            ran.append(f)
            return succeed(f(*args))
        resource = MetricsResource(m, run, lambda: succeed(None))

        def scrape() -> bytes:
            request = DummyRequest([b"metrics"])
            request.path = b"/metrics"
            self.assertEqual(resource.render_GET(request), NOT_DONE_YET)
            self.assertTrue(request.finished)
            body = b"".join(request.written)
            self.assertEqual(body, generate_latest(m.registry))
            return body
        scrape()  # the first: every family is written
        self.assertEqual(len(ran), 1)
        m.link_traffic("in", 5, 500)
        m.reactor_lag(0.002)
        body = scrape()
        self.assertEqual(len(ran), 1)  # not on the pool
        self.assertIn(b'wazuhcluster_link_frames_total{direction="in"} 5.0', body)
        m.sync_done("w1", "integrity_sync", 0.0, 0.5, True, {"created": 1})
        body = scrape()
        self.assertEqual(len(ran), 1)  # one worker's sync: a few children, here
        self.assertIn(b'wazuhcluster_sync_duration_seconds_count{kind="integrity_sync",'
                      b'worker="w1"} 1.0', body)
        for i in range(SMALL_CHANGE + 1):  # syncs of many workers: on the pool
            m.sync_done(f"w{i}", "integrity_check", 0.0, 0.5, True, {})
        self.assertIn(b'worker="w9"', scrape())
        self.assertEqual(len(ran), 2)
        scrape()
        self.assertEqual(len(ran), 2)
        m.set_agents([{"node_name": "master", "connection_status": "active", "n": 3}])
        self.assertIn(b'wazuhcluster_agents{node="master",status="active"} 3.0', scrape())
        self.assertEqual(len(ran), 3)  # a family changed whole: on the pool
        # The counts read again (every 10 s while scraped) and equal: nothing to write
        # again, the scrape stays here; counts that moved are written (on the pool).
        m.set_agents([{"node_name": "master", "connection_status": "active", "n": 3}])
        self.assertTrue(m.kept_unchanged())
        self.assertIn(b'wazuhcluster_agents{node="master",status="active"} 3.0', scrape())
        self.assertEqual(len(ran), 3)
        m.set_agents([{"node_name": "master", "connection_status": "active", "n": 2},
                      {"node_name": "w1", "connection_status": "never_connected", "n": 1}])
        body = scrape()
        self.assertEqual(len(ran), 4)
        self.assertIn(b'wazuhcluster_agents{node="master",status="active"} 2.0', body)
        self.assertIn(b'wazuhcluster_agents{node="w1",status="never_connected"} 1.0', body)
        m.set_agents([])
        self.assertNotIn(b'wazuhcluster_agents{', scrape())
        self.assertEqual(len(ran), 5)


class DapiOutcomeTests(SynchronousTestCase):
    def test_requests_run_here_are_told_with_their_outcome(self) -> None:
        from twisted.internet.defer import Deferred

        from tests.dapi.test_service import Env, request, result_of

        env = Env(self)
        recorder = Recorder()
        env.node.events = recorder
        result_of(Deferred.fromCoroutine(env.api.handle(
            request("wazuh.cluster.get_node_wrapper", "local_any"), "local")))
        result_of(Deferred.fromCoroutine(env.api.handle(
            request("os.system", "local_any"), "local")))
        self.assertEqual(recorder.events, [
            ("dapi", "wazuh.cluster.get_node_wrapper", "ok"),
            ("dapi", "unknown", "unknown_function")])


class ExpositionTests(SynchronousTestCase):
    """The text /metrics serves is what prometheus_client's generate_latest writes, however
    the values and the label sets move between scrapes (the kept parts never go stale)."""

    def test_same_text_as_generate_latest_scrape_after_scrape(self) -> None:
        from prometheus_client import Histogram, Info, Summary

        from wazuhcluster.metrics.exposition import Exposition

        clock = Clock()
        m = NodeMetrics(master(self, clock), clock)
        # Families this code writes itself and ones it leaves to the library.
        Summary("wazuhcluster_test_summary", "A summary\nwith a \\ and a newline.", ["x"],
                registry=m.registry).labels('q"uo\\te\nnl').observe(0.5)
        Info("wazuhcluster_test", "An info.", registry=m.registry).info({"a": "b"})
        Histogram("wazuhcluster_test_exemplar", "An exemplar (left to the library).",
                  registry=m.registry).observe(0.3, {"trace_id": "abc"})
        exposition = Exposition(m.registry)
        self.assertIs(type(m.exposition), Exposition)
        evil = 'w"1\\x\nü'

        def check() -> None:
            text = exposition.generate()
            self.assertEqual(text, generate_latest(m.registry))
            self.assertEqual(m.exposition.generate(), text)
            list(text_string_to_metric_families(text.decode()))  # parses
        check()
        for step in range(4):
            m.sync_done(evil, "integrity_sync", 0.0, 0.1 * step, True,
                        {"created": step, "bytes": 10})
            m.sync_done("worker2", "agent_info", 0.0, 3.0, step % 2 == 0, {"rows": 2})
            m.link_traffic("in", 1, 100)
            m.dapi_request("wazuh.f", "ok" if step else "error")
            m.reactor_lag(0.002 * step)
            check()
        check()  # nothing changed: the kept text
        m.set_agents([{"node_name": "master", "connection_status": "active", "n": 3}])
        check()
        m.set_agents([])  # a label set that goes away
        check()
        self.assertIn(b'worker="w\\"1\\\\x\\n\xc3\xbc"', exposition.generate())

    def test_metrics_written_on_events_are_collected_again_only_after_a_write(self) -> None:
        """A scrape reads again only the children (label sets) of the kept metrics that
        were written since the last scrape: a sync of one worker costs that worker's lines,
        not the sync histograms of every worker; the text stays generate_latest's."""
        from prometheus_client.metrics import MetricWrapperBase

        clock = Clock()
        m = NodeMetrics(master(self, clock), clock)
        calls: list[tuple[str, tuple[str, ...]]] = []
        original = MetricWrapperBase._samples
        kept = {m.sync_duration._name, m.dapi_requests._name, m.agents._name,
                m.dropped._name, m.sync_failures._name}

        def counted(metric: Any) -> Any:
            if metric._labelvalues and metric._name in kept:
                calls.append((metric._name.replace("wazuhcluster_", ""),
                              tuple(metric._labelvalues)))
            return original(metric)
        self.patch(MetricWrapperBase, "_samples", counted)

        def scrape() -> list[tuple[str, tuple[str, ...]]]:
            del calls[:]
            self.assertEqual(m.exposition.generate(), generate_latest(m.registry))
            return sorted(set(calls))
        m.sync_done("w1", "integrity_sync", 0.0, 0.5, True, {"created": 1})
        self.assertEqual(scrape(), [("sync_duration_seconds", ("w1", "integrity_sync"))])
        m.sync_done("w2", "integrity_check", 0.0, 0.5, True, {})
        self.assertEqual(scrape(), [("sync_duration_seconds", ("w2", "integrity_check"))])
        m.link_traffic("in", 3, 300)  # changes every second: always collected
        self.assertEqual(scrape(), [])
        self.assertIn(b'wazuhcluster_link_frames_total{direction="in"} 3.0',
                      m.exposition.generate())
        m.sync_done("w1", "integrity_sync", 1.0, 1.25, True, {"created": 1})
        self.assertEqual(scrape(), [("sync_duration_seconds", ("w1", "integrity_sync"))])
        self.assertIn(b'wazuhcluster_sync_duration_seconds_count{kind="integrity_sync",'
                      b'worker="w1"} 2.0', m.exposition.generate())
        m.dapi_request("wazuh.f", "ok")
        m.connection_dropped("timeout")
        m.set_agents([{"node_name": "master", "connection_status": "active", "n": 3},
                      {"node_name": "w1", "connection_status": "active", "n": 2}])
        self.assertEqual(scrape(), [("agents", ("master", "active")), ("agents", ("w1", "active")),
                                    ("dapi_requests", ("wazuh.f", "ok")),
                                    ("dropped_connections", ("timeout",))])
        m.sync_done("w2", "agent_info", 0.0, 1.0, False, {})
        # a failure writes sync_failures only
        self.assertEqual(scrape(), [("sync_failures", ("w2", "agent_info"))])
        self.assertIn(b'wazuhcluster_sync_failures_total{kind="agent_info",worker="w2"} 1.0',
                      m.exposition.generate())
        m.set_agents([{"node_name": "w1", "connection_status": "active", "n": 2}])
        self.assertEqual(scrape(), [("agents", ("w1", "active"))])  # master's went away
        self.assertNotIn(b'node="master",status="active"', m.exposition.generate())
