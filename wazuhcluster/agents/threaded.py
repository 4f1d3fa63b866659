"""``ThreadedAgentDatabase``: the agent database as a service, off the reactor thread.

The blocking :class:`~wazuhcluster.agents.db.AgentDatabase` runs on a private thread pool of
exactly one thread owned by this service, so SQLite sees one connection used by one thread, and
operations run in the order they were requested. Every method returns a Deferred fired in the
reactor thread (``deferToThreadPool``). The database is opened by the first job queued in
:meth:`ThreadedAgentDatabase.startService` and closed by the last one in
:meth:`ThreadedAgentDatabase.stopService`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from wazuhcluster.agents.db import (
    AgentDatabase,
    AgentInfoBatch,
    AgentInfoSetResult,
    AgentSummary,
    GroupsApplyResult,
    GroupsPage,
    GroupsSetResult,
    Keepalive,
    ReconcileResult,
    SqlParam,
)
from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.interfaces import IAgentDatabase, IAgentPageReader

_T = TypeVar("_T")


class DatabaseNotRunning(RuntimeError):
    """An operation was requested while the service is not running."""


@implementer(IAgentDatabase, IAgentPageReader)
class ThreadedAgentDatabase(Service):
    """Runs :class:`AgentDatabase` operations on a dedicated single-thread pool."""

    _log = Logger()

    def __init__(self, reactor: IReactorFromThreads, clock: IReactorTime, path: str,
                 pool: ThreadPool | None = None) -> None:
        """Prepare the service; nothing is opened until :meth:`startService`.

        :param reactor: receives results from the database thread.
        :param clock: gives the creation time of a new database.
        :param path: the database file (see :func:`wazuhcluster.agents.db.database_path`).
        :param pool: for tests only; by default a private one-thread pool.
        """
        self._reactor = reactor
        self._clock = clock
        self._path = path
        self._pool = pool if pool is not None else ThreadPool(
            minthreads=1, maxthreads=1, name="wazuhcluster-agents-db")
        self._db: AgentDatabase | None = None
        self.opened: Deferred[None] | None = None

    def startService(self) -> None:
        """Start the pool and queue the opening of the database.

        ``self.opened`` fires when the database is open (or the failure has been logged).
        """
        super().startService()
        self._pool.start()
        now = int(self._clock.seconds())
        opened: Deferred[None] = deferToThreadPool(self._reactor, self._pool, self._open, now)
        self.opened = opened.addErrback(self._log_open_failure)

    def _open(self, now: int) -> None:
        """Open the database (database thread)."""
        self._db = AgentDatabase(self._path, now)

    def _log_open_failure(self, failure: Failure) -> None:
        """Report a database that could not be opened; later calls will fail."""
        self._log.failure("Cannot open the agent database {path}", failure, path=self._path)

    def stopService(self) -> Deferred[None]:
        """Queue the closing of the database, then stop the pool once it has run."""
        super().stopService()
        closed: Deferred[None] = deferToThreadPool(self._reactor, self._pool, self._close)

        def stop_pool(result: Any) -> Any:
            self._pool.stop()
            return result

        return closed.addBoth(stop_pool)

    def _close(self) -> None:
        """Close the database (database thread)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _database(self) -> AgentDatabase:
        """The open database (database thread)."""
        if self._db is None:
            raise DatabaseNotRunning("the agent database is not open")
        return self._db

    def _call(self, operation: Callable[[AgentDatabase], _T]) -> Deferred[_T]:
        """Run ``operation(db)`` on the database thread."""
        if not self.running:
            return fail(DatabaseNotRunning("the agent database service is not running"))
        return deferToThreadPool(self._reactor, self._pool,
                                 lambda: operation(self._database()))

    # -- IAgentDatabase ------------------------------------------------------------------------

    def idle(self) -> Deferred[None]:
        """Fires once the operations asked for before it have run (one thread, in order)."""
        return self._call(lambda db: None)

    def get_agent_info_sync(self, rows: bool = False) -> Deferred[AgentInfoBatch]:
        """See :meth:`AgentDatabase.get_agent_info_sync`."""
        return self._call(lambda db: db.get_agent_info_sync(rows=rows))

    def mark_agent_info_synced(self, versions: Sequence[tuple[int, int]]) -> Deferred[int]:
        """See :meth:`AgentDatabase.mark_agent_info_synced`."""
        versions = tuple(versions)
        return self._call(lambda db: db.mark_agent_info_synced(versions))

    def update_agent_info(self, agent_id: int, fields: Mapping[str, Any]) -> Deferred[bool]:
        """See :meth:`AgentDatabase.update_agent_info`."""
        fields = dict(fields)
        return self._call(lambda db: db.update_agent_info(agent_id, fields))

    def record_keepalives(self, keepalives: Sequence[Keepalive]) -> Deferred[int]:
        """See :meth:`AgentDatabase.record_keepalives`."""
        keepalives = tuple(keepalives)
        return self._call(lambda db: db.record_keepalives(keepalives))

    def set_agent_info(self, chunks: Sequence[Any]) -> Deferred[AgentInfoSetResult]:
        """See :meth:`AgentDatabase.set_agent_info`."""
        chunks = tuple(chunks)
        return self._call(lambda db: db.set_agent_info(chunks))

    def create_groups(self, names: Sequence[str]) -> Deferred[int]:
        """See :meth:`AgentDatabase.create_groups`."""
        names = tuple(names)
        return self._call(lambda db: db.create_groups(names))

    def list_groups(self) -> Deferred[list[str]]:
        """See :meth:`AgentDatabase.list_groups`."""
        return self._call(lambda db: db.list_groups())

    def set_agent_groups(self, assignments: Sequence[tuple[int, Sequence[str]]],
                         mode: str = "override",
                         sync_status: str = "synced") -> Deferred[GroupsSetResult]:
        """See :meth:`AgentDatabase.set_agent_groups`."""
        assignments = tuple((a, tuple(g)) for a, g in assignments)
        return self._call(
            lambda db: db.set_agent_groups(assignments, mode, sync_status))  # type: ignore[arg-type]

    def apply_agent_groups_chunks(self, chunks: Sequence[str], mode: str = "override",
                                  sync_status: str = "synced",
                                  full: bool = False) -> Deferred[GroupsApplyResult]:
        """See :meth:`AgentDatabase.apply_agent_groups_chunks`."""
        chunks = tuple(chunks)
        return self._call(lambda db: db.apply_agent_groups_chunks(
            chunks, mode, sync_status, full))  # type: ignore[arg-type]

    def sync_agent_groups_get(self, condition: str | None, now: int, last_id: int = 0,
                              set_synced: bool = False, get_global_hash: bool = False,
                              registration_delta: int = 0) -> Deferred[GroupsPage]:
        """See :meth:`AgentDatabase.sync_agent_groups_get`."""
        return self._call(lambda db: db.sync_agent_groups_get(
            condition, now, last_id, set_synced, get_global_hash,  # type: ignore[arg-type]
            registration_delta))

    def get_agent_groups_chunks(self, condition: str, now: int, set_synced: bool = False,
                                get_global_hash: bool = False,
                                registration_delta: int = 0) -> Deferred[list[str]]:
        """See :meth:`AgentDatabase.get_agent_groups_chunks`."""
        return self._call(lambda db: db.get_agent_groups_chunks(
            condition, now, set_synced, get_global_hash,  # type: ignore[arg-type]
            registration_delta))

    def global_group_hash(self) -> Deferred[str | None]:
        """See :meth:`AgentDatabase.global_group_hash`."""
        return self._call(lambda db: db.global_group_hash())

    def recalculate_group_hashes(self) -> Deferred[int]:
        """See :meth:`AgentDatabase.recalculate_group_hashes`."""
        return self._call(lambda db: db.recalculate_group_hashes())

    def reconcile_keys(self, entries: Sequence[KeyEntry], now: int) -> Deferred[ReconcileResult]:
        """See :meth:`AgentDatabase.reconcile_keys`."""
        entries = tuple(entries)
        return self._call(lambda db: db.reconcile_keys(entries, now))

    def reconcile_keys_file(self, path: str, now: int) -> Deferred[ReconcileResult]:
        """See :meth:`AgentDatabase.reconcile_keys_file`."""
        return self._call(lambda db: db.reconcile_keys_file(path, now))

    def list_agents(self, node_name: str | None = None) -> Deferred[list[AgentSummary]]:
        """See :meth:`AgentDatabase.list_agents`."""
        return self._call(lambda db: db.list_agents(node_name))

    def select(self, sql: str, params: Sequence[SqlParam] = ()) -> Deferred[list[dict[str, Any]]]:
        """See :meth:`AgentDatabase.select`."""
        params = tuple(params)
        return self._call(lambda db: db.select(sql, params))

    def select_page(self, sql: str, params: Sequence[SqlParam], count_sql: str | None,
                    count_params: Sequence[SqlParam],
                    shape: Callable[[list[str], list[tuple[Any, ...]]], _T]
                    ) -> Deferred[tuple[_T, int]]:
        """See :meth:`AgentDatabase.select_page` (one job on the database thread)."""
        params, count_params = tuple(params), tuple(count_params)
        return self._call(lambda db: db.select_page(sql, params, count_sql, count_params,
                                                    shape))

    def generation(self) -> Deferred[tuple[int, int]]:
        """See :meth:`AgentDatabase.generation` (read on the database thread)."""
        return self._call(lambda db: db.generation())

    def count(self, sql: str, params: Sequence[SqlParam] = ()) -> Deferred[int]:
        """See :meth:`AgentDatabase.count`."""
        params = tuple(params)
        return self._call(lambda db: db.count(sql, params))

    def delete_agents(self, agent_ids: Sequence[int], keys_path: str | None = None,
                      purge: bool = True) -> Deferred[list[int]]:
        """See :meth:`AgentDatabase.delete_agents`."""
        agent_ids = tuple(agent_ids)
        return self._call(lambda db: db.delete_agents(agent_ids, keys_path, purge))

    def delete_groups(self, names: Sequence[str],
                      sync_status: str = "syncreq") -> Deferred[dict[str, list[int]]]:
        """See :meth:`AgentDatabase.delete_groups`."""
        names = tuple(names)
        return self._call(lambda db: db.delete_groups(names, sync_status))

    def count_active_agents_by_node(self) -> Deferred[dict[str, int]]:
        """See :meth:`AgentDatabase.count_active_agents_by_node`."""
        return self._call(lambda db: db.count_active_agents_by_node())

    def apply_key_changes(self, entries: Sequence[KeyEntry], removed: Sequence[int],
                          now: int) -> Deferred[ReconcileResult]:
        """See :meth:`AgentDatabase.apply_key_changes`."""
        entries, removed = tuple(entries), tuple(removed)
        return self._call(lambda db: db.apply_key_changes(entries, removed, now))

    def registration_status(self, ids: Sequence[int]) -> Deferred[dict[int, tuple[str, int, int]]]:
        """See :meth:`AgentDatabase.registration_status`."""
        ids = tuple(ids)
        return self._call(lambda db: db.registration_status(ids))


class InlinePool:
    """A "pool" that runs each job at once in the calling thread.

    Used when the reactor cannot receive results from threads (``MemoryReactorClock`` in
    tree-shape tests): the database then runs inline, which only tests may accept.
    """

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None],
                                 func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``func`` now and report its outcome as ThreadPool does."""
        try:
            result = func(*args, **kwargs)
        except BaseException:  # noqa: BLE001 - handed over as a Failure, as ThreadPool does
            on_result(False, Failure())
        else:
            on_result(True, result)


class _InlineCalls:
    """``callFromThread`` for :class:`InlinePool`: call at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` now."""
        f(*args, **kwargs)


def make_agent_database(reactor: Any, path: str) -> ThreadedAgentDatabase:
    """The ``agent-db`` service for ``reactor``: a private one-thread pool on a real reactor,
    inline execution on a reactor that cannot take calls from threads (tests)."""
    if IReactorFromThreads.providedBy(reactor):
        service = ThreadedAgentDatabase(reactor, reactor, path)  # type: ignore[arg-type]
    else:
        service = ThreadedAgentDatabase(_InlineCalls(), reactor, path,  # type: ignore[arg-type]
                                        pool=InlinePool())  # type: ignore[arg-type]
    service.setName("agent-db")
    return service
