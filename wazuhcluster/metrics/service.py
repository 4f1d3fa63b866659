"""MetricsService: ``/metrics`` on its own plain-HTTP listener (the resource is in
:mod:`wazuhcluster.metrics.web`, imported at the first connection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from wazuhcluster.metrics.config import MetricsConfig
from wazuhcluster.metrics.registry import AGENTS_SQL, NodeMetrics

#: How old the agent counts of a scrape may be: a scrape reads them from the db again when
#: they are older. Nothing reads them while nobody scrapes (a GROUP BY over every agent,
#: 18 ms at 200 000 agents: once every 10 s on each of 100 workers was a fifth of a core).
#: (Reactor lag comes from the node's own ReactorLag, wazuhcluster.status, through the
#: node's events.)
AGENTS_INTERVAL = 10.0


class LazySite(Factory):
    """Listens from the start; builds the web site (``make``), and so imports Twisted's web
    stack (35-40 ms of CPU at start-up, measured with ``-X importtime``), at the first
    connection: a worker that is never scraped never pays for it, and a box starting 100
    workers pays for none of them at start."""

    noisy = False

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._site: Any = None

    def site(self) -> Any:
        """The site, built now if it was not."""
        if self._site is None:
            self._site = self._make()
            if self.numPorts:
                self._site.doStart()
        return self._site

    def buildProtocol(self, addr: Any) -> Any:
        return self.site().buildProtocol(addr)

    def stopFactory(self) -> None:
        if self._site is not None and self._site.numPorts:
            self._site.doStop()


class MetricsService(MultiService):
    """Service ``metrics`` of a node: listens on ``metrics.host:metrics.port``; a scrape
    reads the agent counts again when they are older than :data:`AGENTS_INTERVAL`. A port
    that cannot be bound is one ERROR line in cluster.log; the node keeps running without
    its metrics listener."""

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
        #: when the agent counts were last read (reactor seconds), and a read in progress
        self._counted_at: float | None = None
        self._counting: Deferred[None] | None = None

    async def count_agents(self) -> None:
        """Agents by node and status, read from the node's database (its own thread)."""
        with self._log.failuresHandled("[Cluster] [Metrics] Could not count agents"):
            db = getattr(self._node, "agent_db", None)
            if db is None:
                return
            self.metrics.set_agents(await db.select(AGENTS_SQL))

    def fresh_agents(self) -> Deferred[None]:
        """Fires once the agent counts are at most :data:`AGENTS_INTERVAL` old: at once,
        or after one read shared by the scrapes that arrive while it runs."""
        now = self._reactor.seconds()
        if self._counted_at is not None and now - self._counted_at < AGENTS_INTERVAL:
            return succeed(None)
        counting = self._counting
        if counting is None:
            counting = self._counting = Deferred.fromCoroutine(self.count_agents())

            def done(result: object) -> object:
                self._counting = None
                self._counted_at = now
                return result
            counting.addBoth(done)
        waiting: Deferred[None] = Deferred()
        counting.addBoth(lambda _: waiting.callback(None))
        return waiting

    def startService(self) -> None:
        super().startService()
        endpoint = TCP4ServerEndpoint(self._reactor, self.config.port,
                                      interface=self.config.host)
        d = endpoint.listen(LazySite(self._make_site))
        d.addCallbacks(self._listening, self._failed)

    def _make_site(self) -> Any:
        from twisted.web.server import Site

        from wazuhcluster.metrics.web import MetricsResource

        site = Site(MetricsResource(self.metrics, getattr(self._node, "run", None),
                                    self.fresh_agents), timeout=60)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        return site

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
