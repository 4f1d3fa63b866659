"""An in-memory master and worker with the agents feature installed, for the sync tests.

Both nodes share one :class:`Clock`; their agent databases are real SQLite files run inline
(:class:`~wazuhcluster.agents.threaded.InlinePool`); the cluster link is an iosim pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tests.agents.wdb_standin import loopback_database
from tests.support import connected_pair, node_config
from wazuhcluster.agents.db import AgentDatabase, Keepalive, database_path
from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.agents.master_side import AgentsMaster
from wazuhcluster.agents.threaded import (
    InlinePool,
    ThreadedAgentDatabase,
    _InlineCalls,
)
from wazuhcluster.agents.worker_side import AgentsWorker
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode

#: Short intervals used by the sync tests.
TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"sync_agent_info": 1, "agent_groups_mismatch_limit": 3,
                   "timeout_agent_groups": 10},
        "master": {"sync_agent_groups": 1, "agent_group_start_delay": 1,
                   "timeout_agent_info": 10},
        "communication": {"timeout_cluster_request": 5},
    },
}
NOW = 1_700_000_000


#: The agent database backends every agent test runs against.
BACKENDS = ("embedded", "wazuh-db")


def inline_database(clock: Clock, home: str, backend: str = "embedded") -> Any:
    """A started agent database that runs every operation inline: the embedded one, or the
    wazuh-db backend talking to a stand-in wazuh-db in memory (``tests.agents.wdb_standin``)."""
    if backend == "wazuh-db":
        return loopback_database(clock, home)
    db = ThreadedAgentDatabase(_InlineCalls(), clock, database_path(home),  # type: ignore[arg-type]
                               pool=InlinePool())  # type: ignore[arg-type]
    db.startService()
    return db


def raw(db: Any) -> AgentDatabase:
    """The blocking database behind an inline service (tests inspect it directly); for the
    wazuh-db backend, the stand-in wazuh-db's own global.db."""
    standin = getattr(db, "standin", None)
    if standin is not None:
        return cast(AgentDatabase, standin)
    return cast(AgentDatabase, db._database())


def keys(count: int) -> list[KeyEntry]:
    """client.keys entries of agents 1..count."""
    return [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, count + 1)]


class GatedCalls:
    """Wraps a database so that chosen operations wait until the test opens the gate."""

    def __init__(self, db: ThreadedAgentDatabase, gated: Sequence[str]) -> None:
        self._db = db
        self._gated = set(gated)
        self.waiting: list[Deferred[Any]] = []
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._db, name)
        if name not in self._gated:
            return method

        def gated(*args: Any, **kwargs: Any) -> Deferred[Any]:
            self.calls.append(name)
            gate: Deferred[None] = Deferred()
            self.waiting.append(gate)
            return gate.addCallback(lambda _: method(*args, **kwargs))
        return gated

    def open(self) -> None:
        """Let every waiting operation run."""
        waiting, self.waiting = self.waiting, []
        for gate in waiting:
            gate.callback(None)


class QueuedCalls:
    """Wraps a database as the one serial queue it is (one thread, in order), driven by the
    test: each operation starts when those asked before it have finished, and its result
    reaches the caller through the reactor (``clock.callLater(0)``, as ``callFromThread``
    does), not inside the call that asked for it.

    :param clock: delivers the results.
    :param after_idle: called when an ``idle()`` result is delivered, before its caller
        resumes (a ``client.keys`` watcher that asks for the database at that moment).
    """

    def __init__(self, db: Any, clock: Clock, after_idle: Any = None) -> None:
        self._db = db
        self._clock = clock
        self._after_idle = after_idle
        self._tail: Deferred[Any] = Deferred()
        self._tail.callback(None)
        self.order: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._db, name)

        def queued(*args: Any, **kwargs: Any) -> Deferred[Any]:
            self.order.append(name)
            result: Deferred[Any] = Deferred()

            def deliver(outcome: Any) -> None:
                self._clock.callLater(0, lambda: (result.errback(outcome)
                                                  if isinstance(outcome, Failure)
                                                  else result.callback(outcome)))

            def run(_: object) -> Deferred[Any]:
                d = maybeDeferred(method, *args, **kwargs)
                d.addBoth(deliver)
                return d  # the next operation starts once this one has finished
            self._tail.addCallback(run)
            if name == "idle" and self._after_idle is not None:
                result.addCallback(lambda r: (self._after_idle(), r)[1])
            return result
        return queued

    def hold(self) -> Deferred[None]:
        """Queue an operation that lasts until the returned Deferred is fired."""
        self.order.append("held")
        gate: Deferred[None] = Deferred()
        self._tail.addCallback(lambda _: gate)
        return gate


class AgentsCluster:
    """A master and one worker with their agent databases, linked in memory.

    :param base: a short temporary directory for both homes.
    :param agents: how many agents both client.keys list.
    :param master_db: wrap the master's database (e.g. with :class:`GatedCalls`).
    """

    def __init__(self, base: str, agents: int = 10, master_db: Any = None,
                 worker_name: str = "worker1", backend: str = "embedded",
                 master_ext: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        master_json = {**TUNABLES, "wazuhcluster": dict(master_ext or {})}
        self.master = MasterNode(node_config(base, cluster_json=master_json), self.clock,
                                 SynchronousRunner())
        self.mdb = inline_database(self.clock, self.master.config.home, backend)
        self.master_db = master_db(self.mdb) if master_db is not None else self.mdb
        self.magents = AgentsMaster(self.master, self.master_db, self.clock)
        self.master.extensions.append(self.magents)
        self.master.active_agents_by_node = self.magents.active_agents_by_node
        self.worker_name = worker_name
        self.worker = WorkerNode(node_config(base, node_name=worker_name, role="worker",
                                             cluster_json=TUNABLES),
                                 self.clock, SynchronousRunner())
        self.wdb = inline_database(self.clock, self.worker.config.home, backend)
        self.wagents = AgentsWorker(self.worker, self.wdb, self.clock)
        self.worker.extensions.append(self.wagents)
        for db in (self.mdb, self.wdb):
            raw(db).reconcile_keys(keys(agents), NOW - 100)
        self.connect()

    def connect(self) -> None:
        """(Re)connect the worker to the master and run the handshake."""
        self.server, self.client, self.pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(self.client)
        self.flush()
        assert d.called

    def flush(self, rounds: int = 6) -> None:
        """Deliver everything in flight, both ways."""
        for _ in range(rounds):
            self.pump.flush()

    def disconnect(self) -> None:
        """Drop the link (both sides notice)."""
        self.client.disconnect("test drops the link")
        self.flush()

    def close(self) -> None:
        """Stop both databases."""
        for db in (self.mdb, self.wdb):
            if db.running:
                db.stopService()
            standin = getattr(db, "standin", None)
            if standin is not None:
                standin.close()

    def keepalive(self, ids: Sequence[int], when: int = NOW, version: str = "v1") -> None:
        """Record keepalives of ``ids`` on the worker."""
        raw(self.wdb).record_keepalives([Keepalive(i, self.worker_name, when, "Ubuntu", "22.04",
                                                   version) for i in ids])

    def sync_agent_info(self) -> Deferred[None]:
        """Run one agent-info tick of the worker to completion (as far as the link allows)."""
        d = Deferred.fromCoroutine(self.wagents.sync_agent_info())
        self.flush()
        return d

    def groups_round(self) -> None:
        """Run one "Local agent-groups" tick of the master and deliver its pushes."""
        self.clock.advance(1)
        Deferred.fromCoroutine(self.magents.local_agent_groups())
        self.flush()

    def pending_on_worker(self) -> list[int]:
        """Agent ids still marked for agent-info sync on the worker."""
        return [i for i, _ in raw(self.wdb).get_agent_info_sync().versions]
