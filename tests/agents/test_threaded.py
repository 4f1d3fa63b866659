"""Tests for wazuhcluster.agents.threaded.ThreadedAgentDatabase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from wazuhcluster.agents.db import AgentInfoSetResult, Keepalive, database_path
from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.agents.threaded import DatabaseNotRunning, ThreadedAgentDatabase
from wazuhcluster.interfaces import IAgentDatabase, IAgentPageReader


class InlineReactor:
    """A reactor whose ``callFromThread`` runs the call at once (for the inline pool)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` now."""
        f(*args, **kwargs)


class InlinePool:
    """A thread pool that runs every job synchronously in the calling thread."""

    def __init__(self) -> None:
        """Not started, not stopped, no jobs run yet."""
        self.started = False
        self.stopped = False
        self.jobs = 0

    def start(self) -> None:
        """Mark started."""
        self.started = True

    def stop(self) -> None:
        """Mark stopped."""
        self.stopped = True

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None],
                                 func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``func`` and report its outcome like ThreadPool does."""
        self.jobs += 1
        try:
            result = func(*args, **kwargs)
        except BaseException:  # noqa: BLE001 - reported as a Failure, like ThreadPool
            on_result(False, Failure())
        else:
            on_result(True, result)


class ThreadedAgentDatabaseTests(SynchronousTestCase):
    """The service runs database operations on its pool and returns Deferreds."""

    def setUp(self) -> None:
        """A started service on an inline pool."""
        self.home = self.mktemp()
        self.pool = InlinePool()
        self.service = ThreadedAgentDatabase(
            InlineReactor(), Clock(), database_path(self.home),  # type: ignore[arg-type]
            pool=self.pool)  # type: ignore[arg-type]
        self.service.startService()
        self.addCleanup(lambda: self.service.running and self.service.stopService())

    def test_provides_interface(self) -> None:
        """The service provides IAgentDatabase."""
        self.assertTrue(verifyObject(IAgentDatabase, self.service))

    def test_provides_page_reader(self) -> None:
        """The service reads listing pages as one job (IAgentPageReader)."""
        self.assertTrue(verifyObject(IAgentPageReader, self.service))

    def test_default_pool_has_one_thread(self) -> None:
        """Without an injected pool the service owns a one-thread pool."""
        service = ThreadedAgentDatabase(InlineReactor(), Clock(),  # type: ignore[arg-type]
                                        self.mktemp())
        self.assertEqual((service._pool.min, service._pool.max), (1, 1))
        self.assertTrue(verifyObject(IAgentDatabase, service))

    def test_idle_is_a_job_in_line(self) -> None:
        """idle() is one more job on the database thread, after those asked before it."""
        before = self.pool.jobs
        self.assertIsNone(self.successResultOf(self.service.idle()))
        self.assertEqual(self.pool.jobs, before + 1)

    def test_operations_run_on_pool(self) -> None:
        """Calls go through the pool and fire with the database's results."""
        before = self.pool.jobs
        self.successResultOf(self.service.reconcile_keys(
            [KeyEntry(1, "a", "any", "k"), KeyEntry(2, "b", "any", "k")], 100))
        self.assertEqual(self.successResultOf(self.service.record_keepalives(
            [Keepalive(1, "w1", 200), Keepalive(2, "w1", 200)])), 2)
        batch = self.successResultOf(self.service.get_agent_info_sync())
        self.assertEqual(len(batch.versions), 2)
        self.assertEqual(self.successResultOf(
            self.service.mark_agent_info_synced(batch.versions)), 2)
        result = self.successResultOf(self.service.set_agent_info(batch.chunks))
        self.assertEqual(result, AgentInfoSetResult(1, (), 2, 0))
        self.assertEqual(self.successResultOf(self.service.count_active_agents_by_node()),
                         {"w1": 2})
        self.assertEqual(self.successResultOf(self.service.count(
            "SELECT COUNT(*) FROM agent WHERE connection_status = ?", ["active"])), 3)
        self.successResultOf(self.service.set_agent_groups([(1, ["g"])]))
        self.assertIsNotNone(self.successResultOf(self.service.global_group_hash()))
        self.assertEqual(set(self.successResultOf(self.service.registration_status([1, 5]))),
                         {1})
        self.assertEqual(self.successResultOf(self.service.apply_key_changes(
            [KeyEntry(3, "c", "any", "k")], [2], 300)).inserted, 1)
        self.assertEqual(self.pool.jobs - before, 11)

    def test_errors_become_failures(self) -> None:
        """An exception in the database thread fails the Deferred."""
        self.failureResultOf(self.service.update_agent_info(1, {"group": "x"}), ValueError)

    def test_not_running(self) -> None:
        """After stopService the database is closed and calls fail."""
        self.successResultOf(self.service.stopService())
        self.assertTrue(self.pool.stopped)
        self.failureResultOf(self.service.list_agents(), DatabaseNotRunning)


class RealThreadPoolTests(TestCase):
    """With a real one-thread pool and the real reactor, calls complete in order."""

    timeout = 15

    async def test_real_pool(self) -> None:
        """Operations run on the pool thread and fire in the reactor thread."""
        from twisted.internet import reactor  # noqa: TID251 (real-pool test, see brief)

        pool = ThreadPool(minthreads=1, maxthreads=1, name="test-agents-db")
        service = ThreadedAgentDatabase(reactor, reactor, database_path(self.mktemp()),
                                        pool=pool)
        self.assertTrue(verifyObject(IAgentDatabase, service))
        service.startService()
        try:
            await service.reconcile_keys([KeyEntry(1, "a", "any", "k")], 100)
            agents = await service.list_agents()
            self.assertEqual([a.agent_id for a in agents], [0, 1])
        finally:
            await service.stopService()
        self.assertFalse(pool.started)
