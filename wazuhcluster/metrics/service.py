"""MetricsService: ``/metrics`` on its own plain-HTTP listener, and the loops feeding it."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from wazuhcluster.metrics.config import MetricsConfig
from wazuhcluster.metrics.registry import AGENTS_SQL, LagMeter, NodeMetrics
from wazuhcluster.periodic import periodic

#: How often the reactor-lag tick runs, and how often agent counts are read from the db.
LAG_INTERVAL = 0.5
AGENTS_INTERVAL = 10.0


class MetricsResource(Resource):
    """``GET /metrics``: the registry in Prometheus text format (generated in the reactor
    thread, where the metrics are updated: a few dozen series, well under a millisecond)."""

    isLeaf = True

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        if request.path.rstrip(b"/") != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not found: the metrics are at /metrics\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._metrics.registry)


class MetricsService(MultiService):
    """Service ``metrics`` of a node: listens on ``metrics.host:metrics.port`` and runs the
    reactor-lag and agent-count loops. A port that cannot be bound is one ERROR line in
    cluster.log; the node keeps running without its metrics listener."""

    name = "metrics"
    _log = Logger()

    def __init__(self, config: MetricsConfig, metrics: NodeMetrics, node: Any,
                 reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.metrics = metrics
        self._node = node
        self._reactor = reactor
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort | None] = Deferred()
        self.lag = LagMeter(reactor, LAG_INTERVAL, metrics.lag)
        lag_loop = TimerService(LAG_INTERVAL, self.lag.tick)
        lag_loop.clock = reactor
        lag_loop.setName("reactor-lag")
        lag_loop.setServiceParent(self)
        periodic("agent-counts", AGENTS_INTERVAL, self.count_agents,
                 reactor).setServiceParent(self)

    async def count_agents(self) -> None:
        """Agents by node and status, read from the node's database (its own thread)."""
        with self._log.failuresHandled("[Cluster] [Metrics] Could not count agents"):
            db = getattr(self._node, "agent_db", None)
            if db is None:
                return
            self.metrics.set_agents(await db.select(AGENTS_SQL))

    def startService(self) -> None:
        self.lag.reset()
        super().startService()
        endpoint = TCP4ServerEndpoint(self._reactor, self.config.port,
                                      interface=self.config.host)
        site = Site(MetricsResource(self.metrics), timeout=60)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        d = endpoint.listen(site)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        if not self.running:
            port.stopListening()
            self.port = None
            return
        self._log.info("[Cluster] [Metrics] Serving Prometheus metrics on http://{host}:{port}"
                       "/metrics", host=self.config.host,
                       port=getattr(port.getHost(), "port", self.config.port))
        self.listening.callback(port)

    def _failed(self, failure: Any) -> None:
        reason = getattr(failure.value, "socketError", None) or failure.getErrorMessage()
        self._log.error("[Cluster] [Metrics] Cannot listen on {host}:{port} ({reason}): change "
                        "metrics.port in {path} or set metrics.enabled to false. Running "
                        "without /metrics.", host=self.config.host, port=self.config.port,
                        reason=str(reason), path=self.config.path)
        self.listening.callback(None)

    def stopService(self) -> Deferred[None] | None:
        d = super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            both: Deferred[None] = Deferred.fromCoroutine(_both(d, port.stopListening()))
            return both
        return d  # type: ignore[no-any-return]


async def _both(first: Any, second: Any) -> None:
    if first is not None:
        await first
    if second is not None:
        await second
