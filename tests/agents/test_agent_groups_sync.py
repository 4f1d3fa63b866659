"""Agent-groups push, checksum comparison and full resync (Clock + iosim), including the
three loops Wazuh 4.7.5 can fall into."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.defer import fail as defer_fail
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import AgentsCluster, GatedCalls, QueuedCalls, raw
from tests.support import short_tempdir
from wazuhcluster.agents.db import group_hash
from wazuhcluster.agents.master_side import FULL_PUSH_MIN_INTERVAL, full_dump_chunks
from wazuhcluster.agents.worker_side import full_resync_min_interval
from wazuhcluster.master.registry import WorkerSession
from wazuhcluster.protocol.commands import SYN_W_G_C


class AgentGroupsSyncTests(SynchronousTestCase):
    """The master's "Local agent-groups" loop and the worker's "Agent-groups recv"."""

    backend = "embedded"  # a subclass below runs the same tests over wazuh-db

    def make(self, agents: int = 10) -> AgentsCluster:
        """A linked master and worker, closed after the test."""
        cluster = AgentsCluster(short_tempdir(self), agents=agents,
                                backend=self.backend)
        self.addCleanup(cluster.close)
        return cluster

    def assign(self, c: AgentsCluster, agent_id: int, groups: list[str]) -> None:
        """Assign groups on the master as wazuhcluster-agents set-group does."""
        raw(c.mdb).set_agent_groups([(agent_id, groups)], "override", "syncreq")

    def hashes(self, c: AgentsCluster) -> tuple[str | None, str | None]:
        """Global group hashes of master and worker."""
        return raw(c.mdb).global_group_hash(), raw(c.wdb).global_group_hash()

    def test_no_push_before_the_start_delay(self) -> None:
        """The first run happens only after agent_group_start_delay."""
        c = self.make()
        self.assign(c, 1, ["web"])
        Deferred.fromCoroutine(c.magents.local_agent_groups())
        c.flush()
        self.assertEqual(c.magents.group_rounds, 0)

    def test_pushes_start_a_few_per_reactor_turn(self) -> None:
        """A periodic round starts at most max_events_per_turn pushes per reactor turn (each
        starts with a request encrypted and sent on the reactor); the others start in the
        next turns, and a worker gone meanwhile is skipped."""
        c = AgentsCluster(short_tempdir(self), backend=self.backend,
                          master_ext={"max_events_per_turn": 3})
        self.addCleanup(c.close)
        started: list[str] = []
        c.magents._enqueue = lambda state, kind, job: started.append(state.session.name)
        sessions = [WorkerSession(f"w{i}", "4.7.5", "worker", "127.0.0.1", c.server, 0.0, 0.0)
                    for i in range(6)]
        for session in sessions:
            c.master.registry.join(session)
        c.groups_round()  # starts the clock of the start delay
        c.clock.advance(c.master.config.intervals.agent_group_start_delay)
        del started[:]
        Deferred.fromCoroutine(c.magents.local_agent_groups())
        self.assertEqual(len(started), 3)
        c.master.registry.leave(sessions[-1])
        c.clock.advance(0)
        self.assertEqual(len(started), 6)
        c.clock.advance(0)
        self.assertEqual(sorted(started), sorted(["worker1", *(f"w{i}" for i in range(5))]))

    def test_apply_timeout_is_reported_in_words(self) -> None:
        """A worker whose database does not apply the chunks within timeout_agent_groups
        says so in words to its log and to the master (not Twisted's "(40, 'Deferred')")."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.make()
        gated = GatedCalls(c.wdb, ["apply_agent_groups_chunks"])
        c.wagents._db = gated  # the worker's database stalls (e.g. a starved machine)
        c.groups_round()
        self.assign(c, 3, ["web"])
        c.groups_round()
        self.assertEqual(gated.calls, ["apply_agent_groups_chunks"])
        c.clock.advance(c.worker.config.intervals.timeout_agent_groups + 1)
        c.flush()
        errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertTrue(errors)
        for text in errors:
            self.assertIn("Timeout applying agent-groups chunks (10 s)", text)
            self.assertNotIn("Deferred", text)

    def test_waiting_behind_earlier_work_is_not_a_timeout(self) -> None:
        """The time limit starts when the database has finished what was asked before (a
        long client.keys reconcile): chunks queued behind it longer than
        timeout_agent_groups are applied, with no error."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.make()
        gated = GatedCalls(c.wdb, ["idle"])
        c.wagents._db = gated  # earlier work holds the worker's database
        c.groups_round()
        self.assign(c, 3, ["web"])
        c.groups_round()
        self.assertEqual(gated.calls, ["idle"])
        c.clock.advance(c.worker.config.intervals.timeout_agent_groups * 3)
        c.flush()
        gated.open()
        c.flush()
        self.assertEqual(raw(c.wdb).list_agents()[3].groups, ("web",))
        self.assertEqual([formatEvent(e) for e in events
                          if e.get("log_level") == LogLevel.error], [])

    def test_work_asked_for_as_the_database_goes_idle_is_not_counted(self) -> None:
        """The limit starts when the apply itself starts: work that asks for the database
        in the moment between "earlier work done" and the apply being queued (a
        ``client.keys`` reconcile, seen once on the 100-worker bed) runs after the apply,
        not before it inside the limit."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = self.make()
        held: list[Deferred[None]] = []
        queue = QueuedCalls(c.wdb, c.clock, after_idle=lambda: held.append(queue.hold()))
        c.wagents._db = queue
        c.groups_round()
        self.assign(c, 3, ["web"])
        c.groups_round()  # the push arrives: the worker asks for its database
        c.clock.advance(0)  # "idle" reaches the worker; the watcher asks at that moment
        c.flush()
        self.assertEqual(len(held), 1)
        c.clock.advance(c.worker.config.intervals.timeout_agent_groups * 3)
        c.flush()
        for gate in held:
            gate.callback(None)
        for _ in range(3):
            c.clock.advance(0)
            c.flush()
        self.assertEqual([formatEvent(e) for e in events
                          if e.get("log_level") == LogLevel.error], [])
        self.assertEqual(raw(c.wdb).list_agents()[3].groups, ("web",))
        self.assertEqual(queue.order[:3], ["idle", "apply_agent_groups_chunks", "held"])

    def test_change_reaches_the_worker_once(self) -> None:
        """A group change is pushed, applied, and the checksums then agree."""
        c = self.make()
        c.groups_round()  # starts the clock of the start delay
        self.assign(c, 3, ["web", "db"])
        c.groups_round()
        c.groups_round()
        self.assertEqual(raw(c.wdb).list_agents()[3].groups, ("web", "db"))
        master_hash, worker_hash = self.hashes(c)
        self.assertEqual(master_hash, worker_hash)
        self.assertEqual(c.wagents.mismatches, 0)
        self.assertEqual(raw(c.mdb).agent_row(3)["group_sync_status"], "synced")
        session = c.master.registry.get("worker1")
        status = c.magents.health_status(session)["last_sync_agentgroup"]
        self.assertEqual(status["n_synced_chunks"], 1)
        self.assertGreater(status["date_end"], 0)

    def test_diverged_worker_converges_through_full_resync(self) -> None:
        """A worker whose groups diverged asks for a full dump after the mismatch limit."""
        c = self.make()
        raw(c.wdb).set_agent_groups([(5, ["stale"])])
        self.assign(c, 1, ["web"])
        limit = c.worker.config.intervals.agent_groups_mismatch_limit
        for _ in range(limit + 2):
            c.groups_round()
        self.assertEqual(c.wagents.full_requests, 1)
        self.assertEqual(self.hashes(c)[0], self.hashes(c)[1])
        self.assertEqual(raw(c.wdb).list_agents()[5].groups, ())
        self.assertEqual(c.wagents.mismatches, 0)

    def test_loop1_full_resync_converges_for_agents_without_groups(self) -> None:
        """Wazuh loop 1: the master has no agent with groups, the worker has some. The full
        dump clears them, the hashes agree (both None) and no further resync is asked."""
        c = self.make()
        raw(c.wdb).set_agent_groups([(2, ["old"]), (7, ["old", "older"])])
        for _ in range(12):
            c.groups_round()
        self.assertEqual(self.hashes(c), (None, None))
        self.assertEqual(c.wagents.full_requests, 1)
        self.assertEqual(c.wagents.mismatches, 0)

    def test_loop2_one_agent_per_chunk_is_synced(self) -> None:
        """Wazuh loop 2: entries so big that every chunk holds one agent are all pushed,
        marked synced on the master, applied on the worker, and not pushed again."""
        c = self.make()
        names = [f"{n:03d}" + "g" * 252 for n in range(128)]  # ~33 KB of names per agent
        c.groups_round()
        for agent_id in (1, 2, 3, 4):
            self.assign(c, agent_id, names)
        chunks = raw(c.mdb).get_agent_groups_chunks("sync_status", 2**40)
        self.assertEqual(len(chunks), 4)  # one agent per chunk (not marked: set_synced False)
        c.groups_round()
        self.assertEqual([raw(c.wdb).list_agents()[i].groups == tuple(names)
                          for i in (1, 2, 3, 4)], [True] * 4)
        self.assertEqual(raw(c.mdb).get_agent_groups_chunks("sync_status", 2**40), [])
        self.assertEqual(*self.hashes(c))
        for _ in range(5):
            c.groups_round()
        self.assertEqual(c.wagents.full_requests, 0)

    def test_loop3_full_resync_not_retriggered_forever(self) -> None:
        """Wazuh loop 3: a mismatch a full dump cannot fix (the worker does not know an agent
        the master grouped) asks for a full dump at most once per interval, with the counter
        reset after each, instead of every limit cycles for ever."""
        c = self.make()
        self.assign(c, 4, ["web"])
        raw(c.wdb).reconcile_keys([], 0)  # the worker lost every agent: unfixable mismatch
        limit = c.worker.config.intervals.agent_groups_mismatch_limit
        for _ in range(limit * 6):
            c.groups_round()
        self.assertEqual(c.wagents.full_requests, 1)
        self.assertLess(c.wagents.mismatches, limit * 6)
        c.clock.advance(full_resync_min_interval(c.worker.config))
        for _ in range(limit + 1):
            c.groups_round()
        self.assertEqual(c.wagents.full_requests, 2)

    def test_master_rate_limits_full_pushes(self) -> None:
        """Two syn_w_g_c within FULL_PUSH_MIN_INTERVAL give one full push."""
        c = self.make()
        for _ in range(2):
            d = c.client.request(SYN_W_G_C, b"")
            c.flush()
            self.successResultOf(d)
        session = c.master.registry.get("worker1")
        self.assertEqual(c.magents.state_of(session).full_pushes, 1)
        c.clock.advance(FULL_PUSH_MIN_INTERVAL + 1)
        d = c.client.request(SYN_W_G_C, b"")
        c.flush()
        self.successResultOf(d)
        self.assertEqual(c.magents.state_of(session).full_pushes, 2)

    def test_pushes_apply_in_order(self) -> None:
        """Two changes of the same agent in successive rounds end with the latest."""
        c = self.make()
        c.groups_round()
        self.assign(c, 1, ["a"])
        c.groups_round()
        self.assign(c, 1, ["b"])
        c.groups_round()
        self.assertEqual(raw(c.wdb).list_agents()[1].groups, ("b",))
        self.assertEqual(raw(c.wdb).agent_row(1)["group_hash"], group_hash("b"))

    def test_worker_lost_clears_state(self) -> None:
        """After the worker leaves, its queued pushes and locks are gone."""
        c = self.make()
        session = c.master.registry.get("worker1")
        c.magents.state_of(session)
        c.disconnect()
        self.assertEqual(c.magents.health_status(session), {})

    def test_merged_written_for_groups_and_multigroups(self) -> None:
        """merged.mg is written for each group and for each multi-group in use."""
        c = self.make()
        home = c.master.config.home
        os.makedirs(os.path.join(home, "etc", "shared", "web"))
        with open(os.path.join(home, "etc", "shared", "web", "agent.conf"), "w") as f:
            f.write("<agent_config/>\n")
        self.assign(c, 1, ["default", "web"])
        Deferred.fromCoroutine(c.magents.check_merged())
        self.assertTrue(os.path.exists(os.path.join(home, "etc", "shared", "web", "merged.mg")))
        multigroups = os.listdir(os.path.join(home, "var", "multigroups"))
        self.assertEqual(len(multigroups), 1)
        path = os.path.join(home, "etc", "shared", "web", "agent.conf")
        with open(path, "w") as f:
            f.write("<agent_config><changed/></agent_config>\n")
        os.utime(path, ns=(1, 1))
        Deferred.fromCoroutine(c.magents.check_merged())
        with open(os.path.join(home, "etc", "shared", "web", "merged.mg"), "rb") as f:
            self.assertIn(b"<changed/>", f.read())


class FullDumpChunkTests(SynchronousTestCase):
    """The shape of a full push when the master has no assignment at all."""

    def test_empty_dump_is_one_chunk_without_assignments(self) -> None:
        """Never an empty chunk list (a real 4.7.5 worker indexes chunks[-1])."""
        self.assertEqual(full_dump_chunks([]), ['[{"data":[]}]'])
        self.assertEqual(full_dump_chunks(["a", "b"]), ["a", "b"])


class SharedFullDumpTests(SynchronousTestCase):
    """Full agent-groups dumps are read once for workers that ask together, never reused
    across a periodic read (which marks what it read as synced)."""

    backend = "embedded"  # a subclass below runs the same tests over wazuh-db

    def make(self) -> AgentsCluster:
        cluster = AgentsCluster(short_tempdir(self), agents=10, backend=self.backend)
        self.addCleanup(cluster.close)
        return cluster

    def dump(self, c: AgentsCluster) -> tuple[int, bytes]:
        result: tuple[int, bytes] = self.successResultOf(c.magents._shared_full_dump())
        return result

    def test_dump_shared_until_the_next_periodic_read(self) -> None:
        c = self.make()
        raw(c.mdb).set_agent_groups([(1, ["a"])], "override", "syncreq")
        first = self.dump(c)
        self.assertEqual(self.dump(c), first)
        self.assertEqual(c.magents.full_dumps_read, 1)
        c.groups_round()  # starts the clock of the start delay
        c.groups_round()  # a periodic read
        raw(c.mdb).set_agent_groups([(2, ["b"])], "override", "syncreq")
        second = self.dump(c)
        self.assertEqual(c.magents.full_dumps_read, 2)
        self.assertNotEqual(second, first)
        self.assertIn(b'\\"b\\"', second[1])

    def test_in_flight_dump_shared(self) -> None:
        """Callers that ask while the read runs get the same result from one read."""
        c = self.make()
        gate: Deferred[None] = Deferred()
        original = c.mdb.recalculate_group_hashes

        def slow() -> Deferred[int]:
            return gate.addCallback(lambda _: original())
        c.mdb.recalculate_group_hashes = slow  # type: ignore[method-assign]
        first, second = c.magents._shared_full_dump(), c.magents._shared_full_dump()
        self.assertNoResult(first)
        gate.callback(None)
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(c.magents.full_dumps_read, 1)

    def test_failed_read_not_reused(self) -> None:
        c = self.make()
        original = c.mdb.recalculate_group_hashes
        c.mdb.recalculate_group_hashes = lambda: defer_fail(OSError("disk"))  # type: ignore
        self.failureResultOf(c.magents._shared_full_dump(), OSError)
        c.mdb.recalculate_group_hashes = original  # type: ignore[method-assign]
        self.dump(c)
        self.assertEqual(c.magents.full_dumps_read, 2)

    def test_sends_bounded(self) -> None:
        """At most max_concurrent_full_group_pushes full dumps are being sent at once."""
        c = self.make()
        self.assertEqual(c.magents._full_sends.limit,
                         c.master.config.ext.max_concurrent_full_group_pushes)



# -- the same tests over the wazuh-db backend (drop-in mode), served by a stand-in wazuh-db --
class AgentGroupsSyncWazuhDbTests(AgentGroupsSyncTests):
    backend = "wazuh-db"


class SharedFullDumpWazuhDbTests(SharedFullDumpTests):
    backend = "wazuh-db"
