"""MasterNode: the master's shared state (registry, config) and its periodic checks."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wazuhcluster.config import ClusterConfig
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.interfaces import IBlockingRunner, IMasterExtension
from wazuhcluster.master import queries
from wazuhcluster.master.gate import DESCRIPTORS_BEYOND_PRE_HELLO, HelloGate, descriptor_shortfall
from wazuhcluster.master.registry import WorkerRegistry, WorkerSession
from wazuhcluster.protocol.commands import ECHO_MASTER
from wazuhcluster.rolenode import RoleNode


class MasterNode(RoleNode):
    """The master role: owns the worker registry; children are the listener and loops.

    :param config: the node configuration.
    :param clock: the reactor's time.
    :param runner: runs blocking work off the reactor.
    """

    _log = Logger()

    def __init__(self, config: ClusterConfig, clock: IReactorTime,
                 runner: IBlockingRunner) -> None:
        super().__init__(config, clock, runner, "master")
        self.registry = WorkerRegistry()
        self.extensions: list[IMasterExtension] = []
        self.started_at = 0.0
        #: Set by the agents feature: () -> awaitable ``{node name: active agents}``, asked
        #: once per get_health (one GROUP BY over the agent table, not one per node).
        self.active_agents_by_node: Any = None
        #: Called with (hello, peer) before a worker joins; raise ClusterError to refuse it.
        self.hello_checks: list[Any] = []
        self.hello_gate = HelloGate(config.ext.max_pre_hello_connections,
                                    config.ext.max_pre_hello_per_address)

    def startService(self) -> None:
        self.started_at = self.clock.seconds()
        self._log.info("[Master] [Main] Starting master {node} of cluster {cluster}.",
                       node=self.config.node_name, cluster=self.config.name)
        shortfall = descriptor_shortfall(self.config.ext.max_pre_hello_connections)
        if shortfall is not None:
            self._log.warn("[Master] [Main] The open-file limit is {soft}, below the {needed} "
                           "this master needs (max_pre_hello_connections + {extra} for workers,"
                           " local clients and files): raise it (LimitNOFILE= in the systemd "
                           "unit, ulimit -n) or lower max_pre_hello_connections.",
                           soft=shortfall[0], needed=shortfall[1],
                           extra=DESCRIPTORS_BEYOND_PRE_HELLO)
        super().startService()

    # -- periodic ------------------------------------------------------------------------
    async def check_keepalives(self) -> None:
        """Liveness of every worker, checked every ``reaper_check_interval`` seconds.

        Wazuh's rule stays: a worker without keepalive for max_allowed_time_without_keepalive
        is dropped. Beyond Wazuh, a worker that sent nothing at all for idle_probe_after
        seconds is probed with ``echo-m`` (real Wazuh workers answer ``ok-c``); no answer and
        no other byte within liveness_timeout drops it, so a dead or silently cut-off peer
        goes in under 10 s (3 + 5 + the 1 s check period by default), not 120 s. A link busy
        with a sync keeps delivering bytes and is never probed.
        """
        with self._log.failuresHandled("[Master] [Keep alive] Keepalive check failed"):
            limit = self.config.intervals.max_allowed_time_without_keepalive
            now = self.clock.seconds()
            for session in self.registry:
                if now - session.last_keepalive > limit:
                    self._log.error("[Worker {worker}] [Keep alive] No keepalive for {seconds:.0f}"
                                    " s; closing the connection.", worker=session.name,
                                    seconds=now - session.last_keepalive)
                    session.peer.disconnect("keepalive limit exceeded")
                elif (now - session.peer.last_received > self.config.ext.idle_probe_after
                        and not session.probing):
                    probe = Deferred.fromCoroutine(self._probe(session))
                    probe.addErrback(lambda f: self._log.failure(
                        "[Master] [Keep alive] Probe failed", f))

    async def _probe(self, session: WorkerSession) -> None:
        session.probing = True
        sent = self.clock.seconds()
        try:
            await session.peer.request(ECHO_MASTER, b"keepalive",
                                       timeout=self.config.ext.liveness_timeout)
        except RemoteCommandError:
            pass  # an error answer still proves the worker is alive
        except ClusterError as e:
            if (self.registry.get(session.name) is session
                    and session.peer.last_received < sent
                    and not session.peer.delivering(self.config.ext.liveness_timeout)):
                self._log.error("[Worker {worker}] [Keep alive] Nothing received for {silent:.1f}"
                                " s and no answer to a liveness probe ({error}); closing the "
                                "connection.", worker=session.name, error=str(e),
                                silent=self.clock.seconds() - session.peer.last_received)
                session.peer.disconnect("liveness probe unanswered")
        finally:
            session.probing = False

    # -- queries ---------------------------------------------------------------------------
    def node_list(self) -> list[dict[str, str]]:
        """The master first, then the workers, as get_nodes items."""
        nodes = [{"name": self.config.node_name, "type": "master",
                  "version": self.config.version, "ip": self.config.master_address}]
        for session in sorted(self.registry, key=lambda s: s.name):
            nodes.append({"name": session.name, "type": "worker", "version": session.version,
                          "ip": session.ip})
        return nodes

    def get_nodes(self, kwargs: Any) -> dict[str, Any]:
        """Answer get_nodes."""
        return queries.get_nodes(self.node_list(), kwargs)

    async def get_health(self, filter_nodes: Any) -> dict[str, Any]:
        """Answer get_health."""
        active = await self._active_agents()
        master = {"info": {"name": self.config.node_name, "type": "master",
                           "version": self.config.version, "ip": self.config.master_address,
                           "n_active_agents": active.get(self.config.node_name, 0)}}
        workers = []
        for session in sorted(self.registry, key=lambda s: s.name):
            status = dict(session.status)
            for extension in self.extensions:
                status.update(extension.health_status(session))
            status["last_keep_alive"] = session.last_keepalive
            rendered = queries.render_status(status)
            rendered["connected_since"] = queries.format_date(session.connected_since)
            workers.append({"info": {"name": session.name, "type": "worker",
                                     "version": session.version, "ip": session.ip,
                                     "n_active_agents": active.get(session.name, 0)},
                            "status": rendered})
        return queries.get_health(master, workers, filter_nodes)

    async def _active_agents(self) -> dict[str, int]:
        if self.active_agents_by_node is None:
            return {}
        counts: dict[str, int] = await self.active_agents_by_node()
        return counts
