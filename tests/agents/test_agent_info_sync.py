"""Agent-info sync between an in-memory worker and master (Clock + iosim)."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.agents.memory import (
    NOW,
    TUNABLES,
    AgentsCluster,
    GatedCalls,
    inline_database,
    keys,
    raw,
)
from tests.agents.wdb_standin import MARKS_ON_READ, not_with_wazuh_db
from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.agents import master_side
from wazuhcluster.agents.db import Keepalive
from wazuhcluster.agents.worker_side import AgentsWorker
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.interfaces import IMasterExtension, IWorkerExtension
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.protocol.commands import SYN_A_W_M_P, SYN_M_A_ERR
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode


class _Recording:
    """A master database that records the chunks ``set_agent_info`` is given."""

    def __init__(self, db: Any, received: list[tuple[object, ...]]) -> None:
        self._db = db
        self._received = received

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def set_agent_info(self, chunks: Any) -> Any:
        self._received.append(tuple(chunks))
        return self._db.set_agent_info(chunks)


class AgentInfoSyncTests(SynchronousTestCase):
    """The worker's "Agent-info sync" loop against the master's responders."""

    backend = "embedded"  # a subclass below runs the same tests over wazuh-db

    def make(self, **kwargs: object) -> AgentsCluster:
        """A linked master and worker, closed after the test."""
        cluster = AgentsCluster(short_tempdir(self), backend=self.backend,  # type: ignore[arg-type]
                                **kwargs)
        self.addCleanup(cluster.close)
        return cluster

    def test_extensions_provide_their_interfaces(self) -> None:
        """The master and worker sides are checked against their interfaces."""
        c = self.make()
        self.assertTrue(verifyObject(IMasterExtension, c.magents))
        self.assertTrue(verifyObject(IWorkerExtension, c.wagents))

    def test_round_updates_master_and_marks_worker(self) -> None:
        """One round carries keepalives to the master; the worker then has nothing pending."""
        c = self.make()
        c.keepalive([1, 2, 3], when=NOW + 5)
        self.successResultOf(c.sync_agent_info())
        row = raw(c.mdb).agent_row(2)
        assert row is not None
        self.assertEqual((row["node_name"], row["last_keepalive"], row["connection_status"]),
                         ("worker1", NOW + 5, "active"))
        self.assertEqual(c.pending_on_worker(), [])
        self.assertEqual(c.wagents.synced_rounds, 1)
        session = c.master.registry.get("worker1")
        status = c.magents.health_status(session)
        self.assertTrue(status["sync_agent_info_free"])
        self.assertEqual(status["last_sync_agentinfo"]["n_synced_chunks"], 1)

    def test_wire_form_follows_master_capabilities(self) -> None:
        """Our master gets the compact rows form; a master without ``agent-info-rows`` (a
        real Wazuh 4.7.5 master) gets the 4.7.5 form; both store the same."""
        received: list[tuple[object, ...]] = []
        c = self.make(master_db=lambda db: _Recording(db, received))
        self.assertTrue(c.wagents.rows_format)
        c.keepalive([1, 2], when=NOW + 5)
        self.successResultOf(c.sync_agent_info())
        c.wagents.connected(c.wagents._peer, frozenset())  # as after a Wazuh master's hello
        self.assertFalse(c.wagents.rows_format)
        c.keepalive([2, 3], when=NOW + 9)
        self.successResultOf(c.sync_agent_info())
        (rows_form,), (standard,) = received  # one chunk each time
        self.assertEqual([type(rows_form), type(standard)], [dict, str])
        self.assertEqual([r[0] for r in rows_form["rows"]], [1, 2])  # type: ignore[index]
        self.assertEqual([a["id"] for a in json.loads(standard)], [2, 3])  # type: ignore[arg-type]
        self.assertEqual([raw(c.mdb).agent_row(i)["last_keepalive"]  # type: ignore[index]
                          for i in (1, 2, 3)], [NOW + 5, NOW + 9, NOW + 9])
        self.assertEqual(c.pending_on_worker(), [])

    def test_compressed_only_for_a_master_that_announced_it(self) -> None:
        """Our master (``agent-info-rows-zlib``) gets the rows form as one zlib stream; a
        master with only ``agent-info-rows`` gets it plain; each time the same is stored."""
        strings: list[bytes] = []
        decode = master_side.decode_agent_info_string

        def recording(data: bytes) -> Any:
            strings.append(data)
            return decode(data)
        self.patch(master_side, "decode_agent_info_string", recording)
        c = self.make()
        self.assertTrue(c.wagents.rows_zlib)
        worker_runs: list[str] = []
        master_runs: list[str] = []
        for node, names in ((c.worker, worker_runs), (c.master, master_runs)):
            def run(f: Any, *args: Any, _run: Any = node.run, _names: list[str] = names,
                    **kwargs: Any) -> Any:
                _names.append(getattr(f, "__name__", ""))
                return _run(f, *args, **kwargs)
            node.run = run  # type: ignore[method-assign]
        c.keepalive([1, 2], when=NOW + 5)
        self.successResultOf(c.sync_agent_info())
        c.wagents.connected(c.wagents._peer, frozenset({"agent-info-rows"}))
        self.assertEqual((c.wagents.rows_format, c.wagents.rows_zlib), (True, False))
        c.keepalive([2, 3], when=NOW + 9)
        self.successResultOf(c.sync_agent_info())
        compressed, plain = strings
        self.assertIn("encode_agent_info_rows_zlib", worker_runs)  # deflate off the reactor
        self.assertIn("encode_agent_info_rows_string", worker_runs)
        self.assertEqual(master_runs.count("recording"), 2)  # inflate + parse off the reactor
        self.assertEqual(json.loads(zlib.decompress(compressed))["format"], "wazuhcluster-rows-1")
        self.assertEqual(json.loads(plain)["format"], "wazuhcluster-rows-1")
        self.assertEqual([raw(c.mdb).agent_row(i)["last_keepalive"]  # type: ignore[index]
                          for i in (1, 2, 3)], [NOW + 5, NOW + 9, NOW + 9])
        self.assertEqual(c.pending_on_worker(), [])

    def test_nothing_to_send_sends_no_string(self) -> None:
        """Without marked agents the round ends after the permission request."""
        c = self.make()
        self.successResultOf(c.sync_agent_info())
        self.assertEqual(len(c.server.handler.strings), 0)
        self.assertEqual(c.wagents.synced_rounds, 0)

    def test_link_drop_mid_sync_loses_nothing(self) -> None:
        """If the link drops while the master writes, nothing is marked; the next round on a
        new link sends the same agents again and the master ends with the data."""
        c = self.make(master_db=lambda db: GatedCalls(db, ["set_agent_info"]))
        c.keepalive([1, 2, 3, 4], when=NOW + 7)
        d = c.sync_agent_info()
        self.assertEqual(c.master_db.calls, ["set_agent_info"])
        self.assertNoResult(d)
        c.disconnect()
        self.successResultOf(d)
        self.flushLoggedErrors()
        self.assertEqual(c.pending_on_worker(), [1, 2, 3, 4])
        c.master_db.open()  # the cancelled write may still land; it is idempotent
        c.connect()
        d = c.sync_agent_info()
        c.master_db.open()
        c.flush()
        self.successResultOf(d)
        self.assertEqual(c.pending_on_worker(), [])
        self.assertEqual([raw(c.mdb).agent_row(i)["last_keepalive"] for i in (1, 4)],
                         [NOW + 7, NOW + 7])

    def test_update_during_sync_is_sent_next_round(self) -> None:
        """A keepalive recorded while a sync is in flight keeps its agent marked."""
        c = self.make(master_db=lambda db: GatedCalls(db, ["set_agent_info"]))
        c.keepalive([1, 2, 3], when=NOW + 1)
        d = c.sync_agent_info()
        c.keepalive([2], when=NOW + 9)  # lands between the read and the confirmation
        c.master_db.open()
        c.flush()
        self.successResultOf(d)
        self.assertEqual(c.pending_on_worker(), [2])
        d = c.sync_agent_info()
        c.master_db.open()
        c.flush()
        self.successResultOf(d)
        self.assertEqual(c.pending_on_worker(), [])
        self.assertEqual(raw(c.mdb).agent_row(2)["last_keepalive"], NOW + 9)

    def test_master_error_marks_nothing(self) -> None:
        """A syn_m_a_err ends the round with every agent still marked."""
        c = self.make(master_db=lambda db: GatedCalls(db, ["set_agent_info"]))
        c.keepalive([1, 2])
        d = c.sync_agent_info()
        c.server.request(SYN_M_A_ERR, b"Error processing agent-info: test")
        c.flush()
        self.successResultOf(d)
        self.assertEqual(c.pending_on_worker(), [1, 2])

    def test_permission_refused_while_busy_then_forced_after_timeout(self) -> None:
        """The per-worker lock answers False while held, and is released after the limit."""
        c = self.make(master_db=lambda db: GatedCalls(db, ["set_agent_info"]))
        c.keepalive([1])
        c.sync_agent_info()
        ask = c.client.request(SYN_A_W_M_P, b"")
        c.flush()
        self.assertEqual(self.successResultOf(ask), b"False")
        session = c.master.registry.get("worker1")
        self.assertFalse(c.magents.health_status(session)["sync_agent_info_free"])
        intervals = c.master.config.intervals
        c.clock.advance(intervals.timeout_agent_info + intervals.timeout_cluster_request + 1)
        c.flush()
        self.flushLoggedErrors()
        ask = c.client.request(SYN_A_W_M_P, b"")
        c.flush()
        self.assertEqual(self.successResultOf(ask), b"True")

    def test_stale_result_without_sync_is_ignored(self) -> None:
        """A syn_m_a_e that arrives when no sync is in flight marks nothing."""
        c = self.make()
        c.keepalive([1])
        reply = c.server.request(b"syn_m_a_e", b'{"updated_chunks": 1, "error_messages": [], '
                                               b'"time_spent": 0.1}')
        c.flush()
        self.assertEqual(self.successResultOf(reply), b"Thanks")
        self.assertEqual(c.pending_on_worker(), [1])

    def test_health_counts_active_agents(self) -> None:
        """get_health reports the agents the master knows as active on each worker."""
        c = self.make()
        c.keepalive([1, 2, 3])
        self.successResultOf(c.sync_agent_info())
        health = self.successResultOf(Deferred.fromCoroutine(c.master.get_health(None)))
        self.assertEqual(health["nodes"]["worker1"]["info"]["n_active_agents"], 3)
        self.assertNotEqual(
            health["nodes"]["worker1"]["status"]["last_sync_agentinfo"]["date_end_master"],
            "n/a")


# -- the same tests over the wazuh-db backend (drop-in mode), served by a stand-in wazuh-db --
class AgentInfoSyncWazuhDbTests(AgentInfoSyncTests):
    backend = "wazuh-db"
    test_link_drop_mid_sync_loses_nothing = not_with_wazuh_db(
        AgentInfoSyncTests.test_link_drop_mid_sync_loses_nothing, MARKS_ON_READ)
    test_master_error_marks_nothing = not_with_wazuh_db(
        AgentInfoSyncTests.test_master_error_marks_nothing, MARKS_ON_READ)


class AgentInfoBoundTests(SynchronousTestCase):
    """``max_concurrent_agent_info_applies``: workers sending agent-info together are applied
    a few at a time, and the time waiting in line does not count against timeout_agent_info."""

    def add_worker(self, c: AgentsCluster, name: str) -> tuple[AgentsWorker, Any, Any]:
        """A second worker linked to the same master; (its agents side, its db, its pump)."""
        base = os.path.dirname(c.master.config.home)
        worker = WorkerNode(node_config(base, node_name=name, role="worker",
                                        cluster_json=TUNABLES), c.clock, SynchronousRunner())
        db = inline_database(c.clock, worker.config.home)
        self.addCleanup(db.stopService)
        raw(db).reconcile_keys(keys(10), NOW - 100)
        agents = AgentsWorker(worker, db, c.clock)
        worker.extensions.append(agents)
        _, client, pump = connected_pair(
            lambda: ClusterServerFactory(c.master).buildProtocol(None),
            lambda: WorkerClientFactory(worker).buildProtocol(None), c.clock)
        d = worker.hello(client)
        pump.flush()
        self.successResultOf(d)
        raw(db).record_keepalives([Keepalive(i, name, NOW + 3, "Ubuntu", "22.04", "v2")
                                   for i in (5, 6)])
        return agents, db, pump

    def test_applies_wait_in_line_without_timing_out(self) -> None:
        """With one slot, the second worker's chunks reach the database only after the
        first apply ends, and its wait in line is not a timeout."""
        c = AgentsCluster(short_tempdir(self), master_db=lambda db: GatedCalls(
            db, ["set_agent_info"]), master_ext={"max_concurrent_agent_info_applies": 1})
        self.addCleanup(c.close)
        other, _, pump = self.add_worker(c, "worker2")
        c.keepalive([1, 2], when=NOW + 5)
        first = c.sync_agent_info()
        second = Deferred.fromCoroutine(other.sync_agent_info())
        for _ in range(6):
            pump.flush()
            c.flush()
        self.assertEqual(c.master_db.calls, ["set_agent_info"])  # the second one waits
        timeout = c.master.config.intervals.timeout_agent_info
        c.clock.advance(timeout - 1)
        c.master_db.open()
        for _ in range(6):
            pump.flush()
            c.flush()
        self.successResultOf(first)
        self.assertEqual(c.master_db.calls, ["set_agent_info", "set_agent_info"])
        c.clock.advance(timeout - 1)  # waited 2 * timeout - 2 s in all: still no timeout
        c.master_db.open()
        for _ in range(6):
            pump.flush()
            c.flush()
        self.successResultOf(second)
        self.assertEqual(self.flushLoggedErrors(), [])
        rows = [raw(c.mdb).agent_row(i) for i in (1, 5)]
        self.assertEqual([(r["node_name"], r["connection_status"]) for r in rows if r],
                         [("worker1", "active"), ("worker2", "active")])
        self.assertEqual(other.synced_rounds, 1)
