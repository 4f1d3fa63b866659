"""NodeMetrics: one node's Prometheus registry, fed by the node's events (IClusterEvents)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from wazuhcluster.interfaces import IClusterEvents
from wazuhcluster.metrics.exposition import Exposition

#: Sync durations span milliseconds (an empty check) to minutes (a big push on a slow link).
SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0, 300.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: connection_status values of the agent table (Wazuh's).
AGENT_STATUSES = ("active", "disconnected", "never_connected", "pending")


class _NodeCollector(Collector):
    """Values read from the node at scrape time: connected workers (master), the master
    link (worker) and the node's identity."""

    def __init__(self, node: Any) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        config = node.config
        info = GaugeMetricFamily("wazuhcluster_node_info", "This node (always 1).",
                                 labels=["node", "type", "version", "cluster"])
        info.add_metric([config.node_name, config.role.value, config.version, config.name], 1)
        yield info
        registry = getattr(node, "registry", None)
        if registry is not None:
            yield GaugeMetricFamily("wazuhcluster_connected_workers",
                                    "Workers registered with this master.", value=len(registry))
        else:
            yield GaugeMetricFamily("wazuhcluster_master_connected",
                                    "1 while this worker's link to the master is up.",
                                    value=1 if getattr(node, "peer", None) is not None else 0)


#: Marks a whole metric changed (its label sets may have gone: collect every child again).
ALL: frozenset[tuple[str, ...]] = frozenset({("*all*",)})
#: A scrape that writes at most this many changed children again runs on the reactor (a
#: child is one label set: a histogram child is 18 lines, some 10 us each).
SMALL_CHANGE = 32


class _Kept(Collector):
    """A labelled metric written only through :class:`NodeMetrics`' methods, which mark
    the children (label sets) they wrote in ``changed`` (metric id -> frozenset of label
    value tuples, or :data:`ALL`). A scrape collects again only the marked children of a
    marked metric and reuses every other child's samples, the same tuple objects, whose
    text the :class:`Exposition` keeps (``parts`` of the family); an unmarked metric gives
    its last families again. A sync of one worker then costs a scrape that one worker's
    lines, not the histograms of every worker.

    A scrape may run in a thread while the reactor writes: the marks are taken (popped)
    *before* the children are read, and the reactor replaces a metric's mark set rather than
    adding to it, so a write that lands meanwhile is collected again next time; a write
    whose mark comes just after this scrape's pop shows in the next scrape, as if this one
    had run a moment earlier.
    """

    def __init__(self, metric: Any, changed: dict[int, frozenset[tuple[str, ...]]]) -> None:
        self.metric = metric
        self._changed = changed
        self._families: list[Metric] | None = None
        #: the samples of each child, by its label values
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        changed[id(metric)] = ALL

    def describe(self) -> Any:
        return self.metric.describe()

    def collect(self) -> Iterator[Metric]:
        key = id(self.metric)
        families = self._families
        if families is None or key in self._changed:
            dirty = self._changed.pop(key, ALL)
            families = self._families = self._collect(ALL if families is None else dirty)
        return iter(families)

    def _collect(self, dirty: frozenset[tuple[str, ...]]) -> list[Metric]:
        metric = self.metric
        children = getattr(metric, "_metrics", None)
        lock = getattr(metric, "_lock", None)
        names = getattr(metric, "_labelnames", None)
        if children is None or lock is None or names is None:
            return list(metric.collect())  # not a labelled prometheus_client metric
        with lock:  # as prometheus_client's own collect() reads the children
            items = list(children.items())
        kept = {} if dirty is ALL else self._children
        fresh: dict[tuple[str, ...], tuple[Any, ...]] = {}
        family = metric._get_metric()
        parts = []
        for labels, child in items:
            part = None if labels in dirty else kept.get(labels)
            if part is None:
                series = list(zip(names, labels, strict=True))
                part = tuple(s._replace(name=metric._name + s.name,
                                        labels=dict(series + list(s.labels.items())))
                             for s in child._samples())
            fresh[labels] = part
            parts.append(part)
            family.samples.extend(part)
        self._children = fresh
        family.parts = parts  # read by the Exposition: each child's text kept by identity
        return [family]


@implementer(IClusterEvents)
class NodeMetrics:
    """The metrics of one node, in a registry of its own (several nodes may share a process
    in tests; prometheus_client's global registry is never used).

    :param node: the role node (read at scrape time: registry, peer, config).
    :param clock: the reactor's time (sync timestamps).
    """

    def __init__(self, node: Any, clock: IReactorTime) -> None:
        self._clock = clock
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(_NodeCollector(node))
        #: Metrics that change only on events (syncs, DAPI requests, agent counts, drops)
        #: are registered through :class:`_Kept`; each write marks its metric here.
        self._changed: dict[int, frozenset[tuple[str, ...]]] = {}
        #: the agent counts last set (set_agents), to tell a read that changed nothing
        self._agent_counts: dict[tuple[str, str], int] | None = None
        self.sync_duration = self._kept(Histogram(
            "wazuhcluster_sync_duration_seconds",
            "Duration of the syncs with each worker (seen by the master).",
            ["worker", "kind"], buckets=SYNC_BUCKETS, registry=None))
        self.sync_last_success = self._kept(Gauge(
            "wazuhcluster_sync_last_success_timestamp_seconds",
            "Unix time the last successful sync of this kind with the worker ended.",
            ["worker", "kind"], registry=None))
        self.sync_failures = self._kept(Counter(
            "wazuhcluster_sync_failures", "Syncs that failed.", ["worker", "kind"],
            registry=None))
        self.files_pushed = self._kept(Counter(
            "wazuhcluster_integrity_files_pushed",
            "Files the master pushed to a worker, by action.", ["worker", "action"],
            registry=None))
        self.bytes_pushed = self._kept(Counter(
            "wazuhcluster_integrity_bytes_pushed",
            "Bytes of integrity containers the master sent to a worker.", ["worker"],
            registry=None))
        self.agent_info_rows = self._kept(Counter(
            "wazuhcluster_agent_info_rows_synced",
            "Agent-info rows a worker's syncs applied on the master.", ["worker"],
            registry=None))
        self.agents = self._kept(Gauge(
            "wazuhcluster_agents", "Agents in this node's database, by node and status.",
            ["node", "status"], registry=None))
        self.dapi_requests = self._kept(Counter(
            "wazuhcluster_dapi_requests", "DAPI requests run on this node.",
            ["function", "outcome"], registry=None))
        self.frames = Counter("wazuhcluster_link_frames", "Cluster frames, in and out.",
                              ["direction"], registry=r)
        self.link_bytes = Counter("wazuhcluster_link_bytes", "Cluster link bytes, in and out.",
                                  ["direction"], registry=r)
        self.dropped = self._kept(Counter("wazuhcluster_dropped_connections",
                                          "Cluster connections that ended, by reason.",
                                          ["reason"], registry=None))
        self.reactor_lag_gauge = Gauge("wazuhcluster_reactor_lag_seconds",
                                       "The reactor lag of the last second: its longest turn "
                                       "or how late it woke.", registry=r)
        self.reactor_lag_hist = Histogram("wazuhcluster_reactor_lag_distribution_seconds",
                                          "The reactor lag, one observation a second.",
                                          buckets=LAG_BUCKETS, registry=r)
        # Present (0) before the first frame; the children are kept because every frame
        # in and out counts here (``labels()`` costs a lock and a tuple per call).
        self._traffic = {direction: (self.frames.labels(direction),
                                     self.link_bytes.labels(direction))
                         for direction in ("in", "out")}
        #: Writes the registry's text for ``/metrics`` (what ``generate_latest`` writes,
        #: keeping the unchanged parts between scrapes).
        self.exposition = Exposition(r)

    def _kept(self, metric: Any) -> Any:
        self.registry.register(_Kept(metric, self._changed))
        return metric

    def kept_unchanged(self) -> bool:
        """True when the next scrape writes again at most :data:`SMALL_CHANGE` children of
        the metrics kept between scrapes (none of them changed whole): its text is then the
        kept texts, those children and the few families that change every second (bounded
        work, whatever the number of workers)."""
        marks = list(self._changed.values())
        return all(m is not ALL for m in marks) and sum(map(len, marks)) <= SMALL_CHANGE

    def _mark(self, labels: tuple[str, ...] | None, *metrics: Any) -> None:
        """The child ``labels`` of ``metrics`` was written (``None``: all of them, e.g.
        after ``clear()``): the next scrape collects it again. (The mark set is replaced,
        never changed in place: a scrape in a thread pops it.)"""
        for metric in metrics:
            key = id(metric)
            if labels is None:
                self._changed[key] = ALL
                continue
            old = self._changed.get(key, frozenset())
            if old is not ALL and labels not in old:
                self._changed[key] = old | {labels}

    # -- IClusterEvents ---------------------------------------------------------------------
    def sync_done(self, worker: str, kind: str, started: float, ended: float, ok: bool,
                  counts: Mapping[str, int]) -> None:
        if not ok:
            self.sync_failures.labels(worker, kind).inc()
            self._mark((worker, kind), self.sync_failures)
            return
        self.sync_duration.labels(worker, kind).observe(max(0.0, ended - started))
        self.sync_last_success.labels(worker, kind).set(ended)
        self._mark((worker, kind), self.sync_duration, self.sync_last_success)
        if kind == "integrity_sync":
            for action in ("created", "updated", "deleted"):
                self.files_pushed.labels(worker, action).inc(counts.get(action, 0))
                self._mark((worker, action), self.files_pushed)
            self.bytes_pushed.labels(worker).inc(counts.get("bytes", 0))
            self._mark((worker,), self.bytes_pushed)
        elif kind == "agent_info":
            self.agent_info_rows.labels(worker).inc(counts.get("rows", 0))
            self._mark((worker,), self.agent_info_rows)

    def link_traffic(self, direction: str, frames: int, nbytes: int) -> None:
        counted = self._traffic.get(direction)
        if counted is None:
            counted = self._traffic[direction] = (self.frames.labels(direction),
                                                  self.link_bytes.labels(direction))
        counted[0].inc(frames)
        counted[1].inc(nbytes)

    def connection_dropped(self, reason: str) -> None:
        self.dropped.labels(reason).inc()
        self._mark((reason,), self.dropped)

    def dapi_request(self, function: str, outcome: str) -> None:
        self.dapi_requests.labels(function, outcome).inc()
        self._mark((function, outcome), self.dapi_requests)

    def reactor_lag(self, seconds: float) -> None:
        self.reactor_lag_gauge.set(seconds)
        self.reactor_lag_hist.observe(seconds)

    # -- fed by the metrics service's loops --------------------------------------------------
    def set_agents(self, rows: list[dict[str, Any]]) -> None:
        """Replace the agent counts with ``rows`` of ``{node_name, connection_status, n}``.
        Counts equal to the current ones change nothing: the family stays kept, and the next
        scrape is not sent to the pool to write it again (a scraped node reads the counts
        every :data:`~wazuhcluster.metrics.service.AGENTS_INTERVAL` seconds; they rarely
        move)."""
        counts: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (str(row.get("node_name") or "unknown"),
                   str(row.get("connection_status") or "unknown"))
            counts[key] = counts.get(key, 0) + int(row.get("n", 0))
        if counts == self._agent_counts:
            return
        self._agent_counts = counts
        self.agents.clear()
        for (node, status), n in counts.items():
            self.agents.labels(node, status).set(n)
        self._mark(None, self.agents)


AGENTS_SQL = ("SELECT node_name, connection_status, COUNT(*) AS n FROM agent WHERE id > 0 "
              "GROUP BY node_name, connection_status")
