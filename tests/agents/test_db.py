"""Tests for wazuhcluster.agents.db against real SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.agents.test_payloads import a_row, bad_labels_chunks, bad_rows_chunks
from tests.agents.wdb_standin import MARKS_ON_READ, BlockingView, not_with_wazuh_db
from wazuhcluster.agents import db as agents_db
from wazuhcluster.agents import payloads
from wazuhcluster.agents.db import (
    COUNT_CACHE_SIZE,
    GROUPS_SET_ERROR,
    AgentDatabase,
    Keepalive,
    global_group_hash_of,
    group_hash,
)
from wazuhcluster.agents.keys import KeyEntry, format_client_keys, iter_sorted_client_keys
from wazuhcluster.agents.schema import AGENT_INFO_COLUMNS, AGENT_INFO_SET_COLUMNS

_NOW = 1700000000


def _keys(ids: range) -> list[KeyEntry]:
    """client.keys entries for the given agent ids."""
    return [KeyEntry(i, f"agent-{i:03d}", "any", f"{i:064x}") for i in ids]


def _open(case: SynchronousTestCase, agents: range = range(1, 6)) -> AgentDatabase:
    """A fresh database in a temporary home holding the given agents: the embedded one, or
    (``backend = "wazuh-db"`` on the test class) the same operations through a
    WazuhDbAgentDatabase and a stand-in wazuh-db."""
    db: Any
    if getattr(case, "backend", "embedded") == "wazuh-db":
        db = BlockingView(case.mktemp(), _NOW)
    else:
        db = AgentDatabase.for_home(case.mktemp(), _NOW)
    case.addCleanup(db.close)
    db.reconcile_keys(_keys(agents), _NOW - 100)
    return cast(AgentDatabase, db)


class HashTests(SynchronousTestCase):
    """Group hashes are computed as wazuh-db computes them."""

    def test_group_hash_is_sha256_prefix(self) -> None:
        """An agent's hash is the first 8 hex digits of SHA-256 of its group CSV."""
        self.assertEqual(group_hash("default,group1"), "e48046b2")
        self.assertEqual(group_hash("default"), "37a8eec1")

    def test_global_hash_matches_real_master(self) -> None:
        """Five agents in default,group1 give the hash the real 4.7.5 master sent."""
        db = _open(self)
        db.set_agent_groups([(i, ["default", "group1"]) for i in range(1, 6)])
        self.assertEqual(db.global_group_hash(), "1147021666b6b45fdfa0df05e49b106d48a946aa")

    def test_global_hash_skips_agents_without_groups_and_manager(self) -> None:
        """Only non-NULL hashes of agents id > 0 count, in id order."""
        db = _open(self)
        db.set_agent_groups([(3, ["b"]), (1, ["a", "c"])])
        expected = hashlib.sha1(
            (hashlib.sha256(b"a,c").hexdigest()[:8]
             + hashlib.sha256(b"b").hexdigest()[:8]).encode()).hexdigest()
        self.assertEqual(db.global_group_hash(), expected)

    def test_global_hash_none_without_groups(self) -> None:
        """No agent with groups gives no hash (JSON null on the wire)."""
        self.assertIsNone(_open(self).global_group_hash())
        self.assertIsNone(global_group_hash_of([]))

    def test_recalculate_repairs_columns(self) -> None:
        """Recalculation rebuilds group and group_hash from belongs."""
        db = _open(self)
        db.set_agent_groups([(1, ["a", "b"])])
        db._conn.execute("UPDATE agent SET `group` = 'x', group_hash = 'deadbeef' WHERE id = 1")
        db._conn.execute("UPDATE agent SET `group` = 'default' WHERE id = 2")
        self.assertEqual(db.recalculate_group_hashes(), 2)
        row1, row2 = db.agent_row(1), db.agent_row(2)
        assert row1 is not None and row2 is not None
        self.assertEqual((row1["group"], row1["group_hash"]), ("a,b", group_hash("a,b")))
        self.assertEqual((row2["group"], row2["group_hash"]), (None, None))


class AgentInfoTests(SynchronousTestCase):
    """Agent-info get on a worker and set on a master."""

    def setUp(self) -> None:
        """A worker and a master knowing agents 1-5."""
        self.worker = _open(self)
        self.master = _open(self)

    def keepalive(self, *ids: int, when: int = _NOW) -> int:
        """Record keepalives on the worker."""
        return self.worker.record_keepalives(
            [Keepalive(i, "worker-1", when, "Ubuntu", "22.04.3 LTS", "Wazuh v4.7.5")
             for i in ids])

    def test_nothing_to_sync(self) -> None:
        """Without changes there are no chunks."""
        batch = self.worker.get_agent_info_sync()
        self.assertEqual((batch.chunks, batch.versions), ((), ()))

    def test_keepalive_marks_for_sync(self) -> None:
        """A keepalive sets the connection columns and marks the agent."""
        self.assertEqual(self.keepalive(1, 2, 99, 0), 2)
        row = self.worker.agent_row(1)
        assert row is not None
        self.assertEqual((row["connection_status"], row["node_name"], row["last_keepalive"],
                          row["os_name"], row["version"], row["sync_status"]),
                         ("active", "worker-1", _NOW, "Ubuntu", "Wazuh v4.7.5", "syncreq"))
        self.assertEqual([v[0] for v in self.worker.get_agent_info_sync().versions], [1, 2])

    def test_round_trip(self) -> None:
        """What the worker reads, the master stores; labels included."""
        self.keepalive(1, 2, 3)
        self.worker._conn.execute("INSERT INTO labels VALUES (2, 'env', 'prod')")
        self.worker._conn.execute("INSERT INTO labels VALUES (2, 'aaa', 'first')")
        batch = self.worker.get_agent_info_sync()
        result = self.master.set_agent_info(batch.chunks)
        self.assertEqual((result.updated_chunks, result.error_messages, result.updated_agents,
                          result.unknown_agents), (1, (), 3, 0))
        for agent_id in (1, 2, 3):
            w, m = self.worker.agent_row(agent_id), self.master.agent_row(agent_id)
            assert w is not None and m is not None
            for column in ("name", "os_name", "os_version", "version", "node_name",
                           "last_keepalive", "connection_status", "disconnection_time"):
                self.assertEqual(w[column], m[column], column)
            self.assertEqual(m["sync_status"], "synced")
        self.assertEqual(self.master.agent_labels(2), {"env": "prod", "aaa": "first"})
        self.assertEqual(self.master.count_active_agents_by_node(), {"worker-1": 3})

    def test_json_shape_like_wazuh_db(self) -> None:
        """Columns in wazuh-db's order, NULLs omitted, labels last and only when present."""
        self.keepalive(1, 2)
        self.worker._conn.execute("INSERT INTO labels VALUES (2, 'env', 'prod')")
        [chunk] = self.worker.get_agent_info_sync().chunks
        agents = json.loads(chunk)
        self.assertEqual(list(agents[0]), [
            "id", "name", "os_name", "os_version", "version", "node_name", "last_keepalive",
            "connection_status", "disconnection_time", "group_config_status", "status_code"])
        self.assertNotIn("labels", agents[0])
        self.assertEqual(agents[1]["labels"], [{"id": 2, "key": "env", "value": "prod"}])
        self.assertEqual(chunk, json.dumps(agents, separators=(",", ":"), ensure_ascii=False))

    def test_reading_does_not_mark_synced(self) -> None:
        """Rows stay marked until confirmed, so a failed master store loses nothing."""
        self.keepalive(1, 2)
        first = self.worker.get_agent_info_sync()
        self.assertEqual(self.worker.get_agent_info_sync(), first)
        self.assertEqual(self.worker.mark_agent_info_synced(first.versions), 2)
        self.assertEqual(self.worker.get_agent_info_sync().chunks, ())

    def test_update_during_sync_is_not_lost(self) -> None:
        """A row changed after it was read stays marked when the sync is confirmed."""
        self.keepalive(1, 2)
        batch = self.worker.get_agent_info_sync()
        self.keepalive(2, when=_NOW + 60)
        self.assertEqual(self.worker.mark_agent_info_synced(batch.versions), 1)
        after = self.worker.get_agent_info_sync()
        self.assertEqual([v[0] for v in after.versions], [2])
        self.assertEqual(json.loads(after.chunks[0])[0]["last_keepalive"], _NOW + 60)

    def test_update_agent_info_marks(self) -> None:
        """Local agent-info changes are marked for sync; other columns are refused."""
        self.assertTrue(self.worker.update_agent_info(4, {"os_arch": "arm64", "name": "n4"}))
        self.assertFalse(self.worker.update_agent_info(42, {"os_arch": "x"}))
        self.assertRaises(ValueError, self.worker.update_agent_info, 4, {"group": "x"})
        [chunk] = self.worker.get_agent_info_sync().chunks
        self.assertEqual(json.loads(chunk)[0]["os_arch"], "arm64")

    def test_unknown_agents_ignored_and_counted(self) -> None:
        """The master ignores agents it does not know, and agent 000, but counts them."""
        chunk = payloads.encode_agent_info_chunk(
            [{"id": 1, "name": "agent-001", "node_name": "w"},
             {"id": 77, "name": "ghost", "labels": [{"id": 77, "key": "k", "value": "v"}]},
             {"id": 0, "name": "evil"}])
        result = self.master.set_agent_info([chunk])
        self.assertEqual((result.updated_chunks, result.updated_agents, result.unknown_agents,
                          result.error_messages), (1, 1, 2, ()))
        self.assertIsNone(self.master.agent_row(77))
        row = self.master.agent_row(0)
        assert row is not None
        self.assertEqual(row["name"], "localhost")

    def test_bad_chunk_reported_others_applied(self) -> None:
        """A malformed chunk is an error message; the other chunks are still applied."""
        good = payloads.encode_agent_info_chunk([{"id": 1, "name": "x", "os_name": "Z"}])
        result = self.master.set_agent_info(["[{", good])
        self.assertEqual(result.updated_chunks, 1)
        self.assertEqual(len(result.error_messages), 1)
        row = self.master.agent_row(1)
        assert row is not None
        self.assertEqual(row["os_name"], "Z")

    def test_labels_replaced(self) -> None:
        """A labels array replaces the agent's labels; no labels key leaves them alone."""
        self.master._conn.execute("INSERT INTO labels VALUES (1, 'old', 'x')")
        self.master.set_agent_info([payloads.encode_agent_info_chunk([{"id": 1, "name": "a"}])])
        self.assertEqual(self.master.agent_labels(1), {"old": "x"})
        self.master.set_agent_info([payloads.encode_agent_info_chunk(
            [{"id": 1, "name": "a", "labels": [{"id": 1, "key": "new", "value": "y"}]}])])
        self.assertEqual(self.master.agent_labels(1), {"new": "y"})

    def test_chunks_stay_under_wazuh_limit(self) -> None:
        """Many agents are split into chunks smaller than wazuh-db's answer limit."""
        worker = _open(self, range(1, 801))
        worker.record_keepalives([Keepalive(i, "worker-1", _NOW, "x" * 100) for i in
                                  range(1, 801)])
        batch = worker.get_agent_info_sync(max_chunk_size=20000)
        self.assertGreater(len(batch.chunks), 2)
        self.assertTrue(all(len(c.encode()) < 20000 for c in batch.chunks))
        ids = [a["id"] for c in batch.chunks for a in json.loads(c)]
        self.assertEqual(ids, list(range(1, 801)))
        self.assertEqual(len(batch.versions), 800)

    def test_objects_leave_out_nulls_whatever_the_pattern(self) -> None:
        """Every agent object is json_patch('{}', json_object(all columns)) (NULL members
        left out), for NULL patterns in the sampled first agents and beyond them, with text
        that needs escaping; chunks are cut greedily under the bound, as before."""
        if getattr(self, "backend", "embedded") != "embedded":
            raise SkipTest(_OWN_LIMIT)
        worker = _open(self, range(1, 601))
        worker.record_keepalives([Keepalive(i, "worker-1", _NOW) for i in range(1, 601)])
        texts = ["x", "\u00e9\u65e5", 'q"b\\s', "c\x01\n\t", "\u2028", "", "{\"a\":1}"]
        columns = [c for c in AGENT_INFO_COLUMNS[1:]
                   if c not in ("name", "connection_status", "group_config_status")]
        for i in range(1, 601):
            # agents 1-256 (the sample) have few patterns, the later ones many others
            nulls = {c for k, c in enumerate(columns) if (i if i > 256 else i % 3) >> k & 1}
            worker._conn.execute(
                "UPDATE agent SET " + ", ".join(f"{c} = ?" for c in columns) + " WHERE id = ?",
                [None if c in nulls else (i if c in ("last_keepalive", "status_code",
                                                     "disconnection_time")
                                          else texts[(i + k) % len(texts)])
                 for k, c in enumerate(columns)] + [i])
        worker._conn.execute("INSERT INTO labels VALUES (300, 'k\u00e9', 'v\"')")
        batch = worker.get_agent_info_sync(max_chunk_size=4000)
        members = ", ".join(f"'{c}', {c}" for c in AGENT_INFO_COLUMNS)
        expected = [t for (t,) in worker._conn.execute(
            f"SELECT json_patch('{{}}', json_object({members})) FROM agent"
            " WHERE id > 0 ORDER BY id")]
        expected[299] = (expected[299][:-1]
                         + ',"labels":[{"id":300,"key":"k\u00e9","value":"v\\""}]}')
        got = [json.dumps(a, separators=(",", ":"), ensure_ascii=False)
               for c in batch.chunks for a in json.loads(c)]
        self.assertEqual(got, [json.dumps(json.loads(t), separators=(",", ":"),
                                          ensure_ascii=False) for t in expected])
        self.assertEqual(",".join(c[1:-1] for c in batch.chunks), ",".join(expected))
        sizes = [len(c.encode()) for c in batch.chunks]
        self.assertTrue(all(size < 4000 for size in sizes))
        for chunk, following in zip(batch.chunks, batch.chunks[1:], strict=False):
            first = json.dumps(json.loads(following)[0], separators=(",", ":"),
                               ensure_ascii=False)
            # greedy: the next chunk's first object would not have fitted
            self.assertGreaterEqual(len(chunk.encode()) + 1 + len(first.encode()) + 1, 4000)

    def rows_chunks(self, db: AgentDatabase | None = None, **kwargs: int) -> tuple[object, ...]:
        """The worker's pending agent-info in the compact rows form, as the master decodes it."""
        batch = (db or self.worker).get_agent_info_sync(rows=True, **kwargs)
        return payloads.decode_agent_info_string(
            payloads.encode_agent_info_rows_string(batch.chunks))

    def test_rows_form_means_the_same_as_standard(self) -> None:
        """Applying the compact rows form leaves the master exactly as the 4.7.5 form does."""
        self.keepalive(1, 2, 3)
        self.worker.update_agent_info(3, {"os_arch": "arm64", "os_name": "Ubuntu \u00e9\""})
        self.worker._conn.execute("INSERT INTO labels VALUES (2, 'env', 'prod')")
        self.worker._conn.execute("INSERT INTO labels VALUES (2, 'aaa', 'first')")
        self.master._conn.execute("INSERT INTO labels VALUES (1, 'kept', 'x')")
        self.master._conn.execute("INSERT INTO labels VALUES (2, 'gone', 'x')")
        other = _open(self)
        other._conn.execute("INSERT INTO labels VALUES (1, 'kept', 'x')")
        other._conn.execute("INSERT INTO labels VALUES (2, 'gone', 'x')")
        standard = self.master.set_agent_info(self.worker.get_agent_info_sync().chunks)
        rows = other.set_agent_info(self.rows_chunks())
        self.assertEqual(rows, standard)
        self.assertEqual((rows.updated_agents, rows.unknown_agents, rows.error_messages),
                         (3, 0, ()))
        everything = "SELECT * FROM agent ORDER BY id"
        self.assertEqual(other._conn.execute(everything).fetchall(),
                         self.master._conn.execute(everything).fetchall())
        for agent_id in (1, 2, 3):
            self.assertEqual(other.agent_labels(agent_id), self.master.agent_labels(agent_id))
        self.assertEqual(other.agent_labels(2), {"env": "prod", "aaa": "first"})
        self.assertEqual(other.agent_labels(1), {"kept": "x"})

    def test_rows_form_unknown_agents_and_manager(self) -> None:
        """Rows of unknown agents and of agent 000 are counted and not written."""
        row = [None] * len(AGENT_INFO_COLUMNS)
        chunk = {"rows": [[1, "agent-001", *row[2:]], [77, "ghost", *row[2:]],
                          [0, "evil", *row[2:]]],
                 "labels": [[77, [["k", "v"]]], [0, [["k", "v"]]]]}
        result = self.master.set_agent_info([chunk])
        self.assertEqual((result.updated_chunks, result.updated_agents, result.unknown_agents,
                          result.error_messages), (1, 1, 2, ()))
        self.assertIsNone(self.master.agent_row(77))
        self.assertEqual(self.master.agent_labels(0), {})
        manager = self.master.agent_row(0)
        assert manager is not None
        self.assertEqual(manager["name"], "localhost")

    def test_rows_form_bad_chunk_reported_others_applied(self) -> None:
        """An invalid rows chunk is an error message; the other chunks are still applied."""
        self.keepalive(1)
        [good] = self.rows_chunks()
        bad = {"rows": [[2, True] + [None] * (len(AGENT_INFO_COLUMNS) - 2)], "labels": []}
        result = self.master.set_agent_info([bad, good, 7])
        self.assertEqual(result.updated_chunks, 1)
        self.assertEqual(len(result.error_messages), 2)
        row = self.master.agent_row(1)
        assert row is not None
        self.assertEqual(row["node_name"], "worker-1")

    def test_rows_chunks_bounded(self) -> None:
        """Rows chunks stay under the size bound and keep every agent in id order."""
        worker = _open(self, range(1, 801))
        worker.record_keepalives([Keepalive(i, "worker-1", _NOW, "x" * 100) for i in
                                  range(1, 801)])
        worker._conn.execute("INSERT INTO labels VALUES (5, 'k', 'v')")
        batch = worker.get_agent_info_sync(max_chunk_size=20000, rows=True)
        self.assertGreater(len(batch.chunks), 2)
        self.assertTrue(all(len(c.encode()) < 20000 for c in batch.chunks))
        ids = [r[0] for c in batch.chunks for r in json.loads(c)["rows"]]
        self.assertEqual(ids, list(range(1, 801)))
        self.assertEqual([v[0] for v in batch.versions], ids)
        self.assertEqual(json.loads(batch.chunks[0])["labels"], [[5, [["k", "v"]]]])


class AgentGroupsTests(SynchronousTestCase):
    """Agent-groups get on the master and set on the worker."""

    def setUp(self) -> None:
        """A master and a worker knowing agents 1-5."""
        self.master = _open(self)
        self.worker = _open(self)

    def test_set_creates_missing_groups(self) -> None:
        """Assigning a group the worker does not have creates it (Wazuh fails instead)."""
        result = self.worker.set_agent_groups([(1, ["default", "new-group"])])
        self.assertEqual((result.updated_agents, result.failed_agents), (1, ()))
        self.assertIn("new-group", self.worker.list_groups())
        row = self.worker.agent_row(1)
        assert row is not None
        self.assertEqual((row["group"], row["group_hash"]),
                         ("default,new-group", group_hash("default,new-group")))

    def test_modes(self) -> None:
        """append, empty_only and remove behave as in wazuh-db."""
        db = self.master
        db.set_agent_groups([(1, ["a"]), (2, ["b"])])
        db.set_agent_groups([(1, ["c", "a"])], mode="append")
        self.assertEqual(db.list_agents()[1].groups, ("a", "c"))
        result = db.set_agent_groups([(1, ["z"]), (3, ["z"])], mode="empty_only")
        self.assertEqual((result.updated_agents, result.skipped_agents), (1, 1))
        db.set_agent_groups([(2, ["b"])], mode="remove")
        agents = {a.agent_id: a.groups for a in db.list_agents()}
        self.assertEqual((agents[1], agents[2], agents[3]), (("a", "c"), ("default",), ("z",)))

    def test_invalid_and_unknown(self) -> None:
        """Invalid group names fail the agent; unknown agents are counted, not failed."""
        result = self.worker.set_agent_groups([(1, ["../etc"]), (99, ["a"]), (2, ["ok"])])
        self.assertEqual((result.updated_agents, result.unknown_agents, result.failed_agents),
                         (1, 1, (1,)))
        result = self.worker.set_agent_groups([(3, [f"g{i}" for i in range(129)])])
        self.assertEqual(result.failed_agents, (3,))

    def test_periodic_get_marks_synced_and_carries_hash(self) -> None:
        """Changed agents are returned once, and the hash is in every cycle's last chunk."""
        self.master.set_agent_groups([(1, ["a"]), (2, ["a", "b"])], sync_status="syncreq")
        chunks = self.master.get_agent_groups_chunks("sync_status", _NOW, set_synced=True,
                                                     get_global_hash=True)
        decoded = payloads.decode_groups_chunk(chunks[-1])
        self.assertEqual(decoded.assignments, ((1, ("a",)), (2, ("a", "b"))))
        self.assertEqual(decoded.global_hash, self.master.global_group_hash())
        again = self.master.get_agent_groups_chunks("sync_status", _NOW, set_synced=True,
                                                    get_global_hash=True)
        self.assertEqual(len(again), 1)
        self.assertEqual(payloads.decode_groups_chunk(again[0]).assignments, ())

    def test_hash_only_request(self) -> None:
        """No condition returns only the hash, as the worker's local hash query."""
        page = self.worker.sync_agent_groups_get(None, _NOW, get_global_hash=True)
        self.assertEqual((page.status, page.payload), ("ok", '[{"data":[],"hash":null}]'))

    def test_registration_delta(self) -> None:
        """Agents registered at or after now - delta are not returned."""
        page = self.master.sync_agent_groups_get("all", _NOW - 100)
        self.assertEqual(page.payload, '[{"data":[]}]')
        page = self.master.sync_agent_groups_get("all", _NOW, registration_delta=50)
        self.assertEqual(len(json.loads(page.payload)[0]["data"]), 5)

    def test_paging_with_last_id(self) -> None:
        """The full dump is paged under the size limit with last_id continuing."""
        master = _open(self, range(1, 301))
        master.set_agent_groups([(i, ["default", f"group-{i}"]) for i in range(1, 301)])
        pages = []
        last_id = 0
        while True:
            page = master.sync_agent_groups_get("all", _NOW, last_id=last_id, max_size=2000)
            pages.append(page)
            self.assertLess(len(page.payload), 2000)
            if page.status == "ok":
                break
            last_id = page.last_id
        self.assertGreater(len(pages), 3)
        ids = [a["id"] for p in pages for a in json.loads(p.payload)[0]["data"]]
        self.assertEqual(ids, list(range(1, 301)))

    def test_periodic_push_converges(self) -> None:
        """Applying the master's periodic chunks gives the worker the master's hash."""
        self.master.set_agent_groups([(i, ["default", "group1"]) for i in range(1, 6)],
                                     sync_status="syncreq")
        chunks = self.master.get_agent_groups_chunks("sync_status", _NOW, set_synced=True,
                                                     get_global_hash=True)
        result = self.worker.apply_agent_groups_chunks(chunks)
        self.assertEqual((result.updated_chunks, result.error_messages), (1, ()))
        self.assertEqual(payloads.master_groups_hash(chunks),
                         (True, self.worker.global_group_hash()))

    def test_failed_agent_makes_chunk_error(self) -> None:
        """A chunk in which some agent fails reports wazuh-db's error text; others count."""
        self.worker.set_agent_groups([(2, [f"h{i}" for i in range(100)])])
        good = payloads.encode_groups_chunk([(1, ["a"])])
        too_many = payloads.encode_groups_chunk([(2, [f"g{i}" for i in range(100)])])
        result = self.worker.apply_agent_groups_chunks([good, too_many], mode="append")
        self.assertEqual((result.updated_chunks, result.error_messages),
                         (1, (GROUPS_SET_ERROR,)))

    def test_full_resync_converges_for_agents_without_groups(self) -> None:
        """After a full resync the hashes agree even for agents the master has no groups for."""
        self.master.set_agent_groups([(1, ["default"]), (2, ["default", "g"])])
        # Worker drifted: stale groups for agent 3 (none on the master), agent 4 wrong,
        # and agent 5 has groups while the master never assigned any.
        self.worker.set_agent_groups([(1, ["default"]), (3, ["old"]), (4, ["x"]), (5, ["y"])])
        self.assertNotEqual(self.worker.global_group_hash(), self.master.global_group_hash())
        self.master.recalculate_group_hashes()
        chunks = self.master.get_agent_groups_chunks("all", _NOW)
        result = self.worker.apply_agent_groups_chunks(chunks, full=True)
        self.assertEqual(result.error_messages, ())
        self.assertEqual(self.worker.global_group_hash(), self.master.global_group_hash())
        groups = {a.agent_id: a.groups for a in self.worker.list_agents()}
        self.assertEqual(groups, {0: (), 1: ("default",), 2: ("default", "g"), 3: (), 4: (),
                                  5: ()})

    def test_full_resync_clears_agents_missing_from_dump(self) -> None:
        """Worker agents absent from the master's dump lose their stale groups."""
        worker = _open(self, range(1, 8))
        worker.set_agent_groups([(7, ["stale"])])
        self.master.set_agent_groups([(1, ["a"])])
        chunks = self.master.get_agent_groups_chunks("all", _NOW)
        result = worker.apply_agent_groups_chunks(chunks, full=True)
        self.assertEqual(result.cleared_agents, 1)
        self.assertEqual(worker.global_group_hash(), self.master.global_group_hash())

    def test_full_resync_with_bad_chunk_keeps_unlisted(self) -> None:
        """If a chunk of the dump is unreadable, nothing is cleared (the dump is incomplete)."""
        self.worker.set_agent_groups([(5, ["keep"])])
        result = self.worker.apply_agent_groups_chunks(["nope"], full=True)
        self.assertEqual((result.cleared_agents, len(result.error_messages)), (0, 1))
        self.assertEqual(self.worker.list_agents()[5].groups, ("keep",))


class KeysAndQueriesTests(SynchronousTestCase):
    """client.keys reconciliation and CLI queries."""

    def test_count_follows_every_change(self) -> None:
        """count() answers the COUNT of a SELECT, and a new answer after each change
        (keepalives, deletions), whichever backend remembers answers."""
        db = _open(self)
        active = "SELECT COUNT(*) AS total FROM agent WHERE id > 0 AND connection_status = ?"
        self.assertEqual(db.count(active, ("active",)), 0)
        self.assertEqual(db.count(active, ("never_connected",)), 5)
        db.record_keepalives([Keepalive(1, "w1", _NOW), Keepalive(2, "w1", _NOW)])
        self.assertEqual(db.count(active, ("active",)), 2)
        self.assertEqual(db.count(active, ("never_connected",)), 3)
        db.delete_agents([1])
        self.assertEqual(db.count(active, ("active",)), 1)
        self.assertEqual(db.count("SELECT COUNT(*) FROM agent WHERE id > 99"), 0)

    def test_reconcile(self) -> None:
        """New agents are inserted, changed ones updated, missing ones removed; 000 stays."""
        db = _open(self, range(1, 4))
        db.set_agent_groups([(3, ["a"])])
        db._conn.execute("INSERT INTO labels VALUES (3, 'k', 'v')")
        entries = [KeyEntry(1, "agent-001", "any", f"{1:064x}"),
                   KeyEntry(2, "renamed", "10.0.0.0/24", f"{2:064x}"),
                   KeyEntry(9, "new", "10.1.1.1/32", "abc")]
        result = db.reconcile_keys(entries, _NOW)
        self.assertEqual((result.inserted, result.updated, result.removed), (1, 1, 1))
        self.assertEqual([a.agent_id for a in db.list_agents()], [0, 1, 2, 9])
        two, nine = db.agent_row(2), db.agent_row(9)
        assert two is not None and nine is not None
        self.assertEqual((two["name"], two["register_ip"]), ("renamed", "10.0.0.0/24"))
        self.assertEqual((nine["register_ip"], nine["ip"], nine["internal_key"], nine["group"],
                          nine["date_add"]), ("10.1.1.1", None, "abc", None, _NOW))
        self.assertEqual(db._conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0], 0)
        self.assertEqual(db._conn.execute("SELECT COUNT(*) FROM belongs").fetchone()[0], 0)
        self.assertEqual(db.reconcile_keys(entries, _NOW).inserted, 0)

    def test_bulk_reconcile_keeps_the_indexes(self) -> None:
        """Many new agents at once: the agent table's indexes are rebuilt in the same
        transaction (same definitions, used by queries); a failure leaves them as they were."""
        if getattr(self, "backend", "embedded") != "embedded":
            return
        db = _open(self, range(1, 3))
        schema = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'agent'"
        before = sorted(db._conn.execute(schema).fetchall())
        self.patch(agents_db, "BULK_INSERT_ROWS", 10)
        result = db.reconcile_keys(_keys(range(1, 40)), _NOW)
        self.assertEqual(result.inserted, 37)
        self.assertEqual(sorted(db._conn.execute(schema).fetchall()), before)
        plan = " ".join(str(r) for r in db._conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM agent WHERE name = 'agent-020'"))
        self.assertIn("agent_name", plan)
        self.assertEqual(db.count("SELECT COUNT(*) FROM agent WHERE name = 'agent-020'"), 1)
        bad = [*_keys(range(40, 60)), KeyEntry(60, None, "any", "k")]  # type: ignore[arg-type]
        self.assertRaises(sqlite3.IntegrityError, db.reconcile_keys, _keys(range(1, 40)) + bad,
                          _NOW)
        self.assertEqual(sorted(db._conn.execute(schema).fetchall()), before)
        self.assertEqual(db.count("SELECT COUNT(*) FROM agent WHERE id >= 40"), 0)

    def test_keys_writes_skip_the_checks_and_only_they_do(self) -> None:
        """The client.keys writes run without the CHECK constraints (none of their columns
        has one; inserted rows take valid defaults); afterwards, and after a failed
        reconcile, the constraints hold again on this connection."""
        if getattr(self, "backend", "embedded") != "embedded":
            return
        db = _open(self, range(1, 3))
        self.patch(agents_db, "BULK_INSERT_ROWS", 10)
        seen: list[int] = []
        real = db._transaction

        @contextmanager
        def watching() -> Iterator[sqlite3.Connection]:
            with real() as conn:
                seen.append(conn.execute("PRAGMA ignore_check_constraints").fetchone()[0])
                yield conn
        self.patch(db, "_transaction", watching)
        db.reconcile_keys(_keys(range(1, 40)), _NOW)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(format_client_keys(_keys(range(1, 45))))
        db.reconcile_keys_file(path, _NOW)
        db.apply_key_changes(_keys([50]), [], _NOW)
        self.assertEqual(seen, [1, 1, 1])
        checks = "PRAGMA ignore_check_constraints"
        self.assertEqual(db._conn.execute(checks).fetchone()[0], 0)
        statuses = {r[0] for r in db._conn.execute(
            "SELECT DISTINCT connection_status || sync_status || group_sync_status"
            " || group_config_status FROM agent WHERE id > 0")}
        self.assertEqual(statuses, {"never_connectedsyncedsyncednot synced"})
        bad = [*_keys(range(40, 60)), KeyEntry(60, None, "any", "k")]  # type: ignore[arg-type]
        self.assertRaises(sqlite3.IntegrityError, db.reconcile_keys, bad, _NOW)
        self.assertEqual(db._conn.execute(checks).fetchone()[0], 0)
        self.assertRaises(sqlite3.IntegrityError, db._conn.execute,
                          "UPDATE agent SET connection_status = 'bogus' WHERE id = 1")

    def test_ip_and_group_hash_indexes_are_partial_and_old_databases_get_them(self) -> None:
        """``agent_ip`` and ``agent_group_hash`` hold only rows with a value (a first
        client.keys has none, so building them costs nothing), queries on the column still
        use them, and a database of an earlier version has its full indexes replaced."""
        if getattr(self, "backend", "embedded") != "embedded":
            return
        path = os.path.join(self.mktemp(), "global.db")
        db = AgentDatabase(path, _NOW)
        conn = db._conn
        conn.execute("DROP INDEX agent_ip")
        conn.execute("DROP INDEX agent_group_hash")
        conn.execute("CREATE INDEX agent_ip ON agent (ip)")
        conn.execute("CREATE INDEX agent_group_hash ON agent (group_hash)")
        db.reconcile_keys(_keys(range(1, 5)), _NOW)
        db.close()
        db = AgentDatabase(path, _NOW)
        self.addCleanup(db.close)
        conn = db._conn
        stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN"
                                   " ('agent_ip', 'agent_group_hash')").fetchall())
        self.assertIn("WHERE ip IS NOT NULL", stored["agent_ip"])
        self.assertIn("WHERE group_hash IS NOT NULL", stored["agent_group_hash"])
        self.assertEqual(len(db.list_agents()), 5)
        for sql, index in (("SELECT id FROM agent WHERE ip = '10.0.0.1'", "agent_ip"),
                           ("SELECT id FROM agent WHERE group_hash = 'ab'", "agent_group_hash"),
                           ("SELECT id FROM agent WHERE group_hash IS NOT NULL",
                            "agent_group_hash")):
            plan = " ".join(str(r) for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            self.assertIn(index, plan)
        self.assertEqual([r[0] for r in conn.execute("PRAGMA integrity_check")], ["ok"])

    def test_reconcile_file(self) -> None:
        """The file form reads client.keys; a missing file changes nothing."""
        db = _open(self, range(1, 4))
        path = self.mktemp()
        self.assertEqual(db.reconcile_keys_file(path, _NOW).removed, 0)
        with open(path, "w") as f:
            f.write("001 agent-001 any k1\n002 !gone any k2\n")
        result = db.reconcile_keys_file(path, _NOW)
        self.assertEqual((result.updated, result.removed), (1, 2))

    def test_apply_key_changes(self) -> None:
        """Inserts new agents, updates changed ones, deletes the removed; others untouched."""
        db = _open(self, range(1, 4))
        before = db.agent_row(2)
        result = db.apply_key_changes([KeyEntry(1, "renamed", "10.0.0.1/32", "k"),
                                       KeyEntry(9, "new", "any", "k9")], [3, 0], _NOW + 5)
        self.assertEqual((result.inserted, result.updated, result.removed), (1, 1, 1))
        self.assertEqual((db.agent_row(1) or {})["register_ip"], "10.0.0.1")
        self.assertEqual((db.agent_row(9) or {})["date_add"], _NOW + 5)
        self.assertIsNone(db.agent_row(3))
        self.assertEqual(db.agent_row(2), before)
        self.assertIsNotNone(db.agent_row(0))

    def test_registration_status(self) -> None:
        """Status, disconnection time and registration date of existing agents only."""
        db = _open(self, range(1, 4))
        db._conn.execute("UPDATE agent SET connection_status = 'disconnected',"
                         " disconnection_time = 50 WHERE id = 2")
        status = db.registration_status([2, 3, 9, 0])
        self.assertEqual(set(status), {2, 3})
        self.assertEqual(status[2][:2], ("disconnected", 50))
        self.assertEqual(status[3][:2], ("never_connected", 0))
        self.assertIsInstance(status[3][2], int)

    def test_list_and_count(self) -> None:
        """Listing filters by node; counting excludes 000 and inactive agents."""
        db = _open(self)
        db.record_keepalives([Keepalive(1, "w1", _NOW), Keepalive(2, "w2", _NOW),
                              Keepalive(3, "w2", _NOW)])
        db._conn.execute("UPDATE agent SET connection_status = 'disconnected' WHERE id = 3")
        self.assertEqual([a.agent_id for a in db.list_agents("w2")], [2, 3])
        self.assertEqual(db.count_active_agents_by_node(), {"w1": 1, "w2": 1})
        # get_health asks it for every healthcheck: a covering index, not a table scan.
        plan = " ".join(str(r[-1]) for r in db._conn.execute(
            "EXPLAIN QUERY PLAN SELECT node_name, COUNT(*) FROM agent WHERE id > 0 AND"
            " connection_status = 'active' GROUP BY node_name"))
        self.assertIn("COVERING INDEX agent_status_node", plan)
        summary = db.list_agents("w1")[0]
        self.assertEqual((summary.name, summary.status, summary.last_keepalive),
                         ("agent-001", "active", _NOW))


# -- the same tests through the wazuh-db backend (drop-in mode) and a stand-in wazuh-db -------
_OWN_LIMIT = ("wazuh-db cuts answers at its own 64 KiB limit; paging at that limit is tested "
              "in tests/agents/test_wazuhdb.py")


class CountCacheTests(SynchronousTestCase):
    """The embedded database remembers count() answers until its data changes."""

    QUERY = "SELECT COUNT(*) AS total FROM agent WHERE connection_status = 'never_connected'"

    def counting_selects(self, db: AgentDatabase) -> list[str]:
        """Record the statements count() actually runs."""
        ran: list[str] = []
        select = db.select

        def recording(sql: str, params: Any = ()) -> Any:
            ran.append(sql)
            return select(sql, params)
        db.select = recording  # type: ignore[method-assign]
        return ran

    def test_remembered_while_unchanged(self) -> None:
        """The same count twice without a change in between runs the query once."""
        db = _open(self)
        ran = self.counting_selects(db)
        self.assertEqual(db.count(self.QUERY), 5)
        self.assertEqual(db.count(self.QUERY), 5)
        self.assertEqual(len(ran), 1)

    def test_forgotten_after_a_write_of_this_connection(self) -> None:
        """Any row written through the database's connection (even by a statement of no
        method of ours) makes the next count run again."""
        db = _open(self)
        ran = self.counting_selects(db)
        self.assertEqual(db.count(self.QUERY), 5)
        db._conn.execute("UPDATE agent SET connection_status = 'active' WHERE id = 3")
        self.assertEqual(db.count(self.QUERY), 4)
        self.assertEqual(len(ran), 2)
        db._conn.execute("UPDATE agent SET name = name WHERE id = 99")  # no row: no change
        self.assertEqual(db.count(self.QUERY), 4)
        self.assertEqual(len(ran), 2)

    def test_forgotten_after_a_commit_of_another_connection(self) -> None:
        """A commit by another connection to the same file (another process) is seen."""
        db = _open(self)
        self.assertEqual(db.count(self.QUERY), 5)
        other = sqlite3.connect(db.path)
        self.addCleanup(other.close)
        with other:
            other.execute("DELETE FROM agent WHERE id IN (4, 5)")
        self.assertEqual(db.count(self.QUERY), 3)

    def test_bounded(self) -> None:
        """At most COUNT_CACHE_SIZE answers are kept, the oldest dropped first."""
        db = _open(self)
        sql = "SELECT COUNT(*) FROM agent WHERE id > ?"
        for i in range(COUNT_CACHE_SIZE + 5):
            db.count(sql, (i,))
        self.assertEqual(len(db._counts), COUNT_CACHE_SIZE)
        self.assertNotIn((sql, (0,)), db._counts)
        self.assertIn((sql, (COUNT_CACHE_SIZE + 4,)), db._counts)


class PeriodicReadTests(SynchronousTestCase):
    """What the periodic agent-info and agent-groups rounds read at rest costs nothing per
    agent: the global group hash is kept until it may have changed, and the agents waiting
    for a sync are found through partial indexes, not by reading every agent."""

    HASH_SQL = "group_hash IS NOT NULL ORDER BY id"

    def tracing(self, db: AgentDatabase) -> list[str]:
        ran: list[str] = []
        db._conn.set_trace_callback(ran.append)
        self.addCleanup(db._conn.set_trace_callback, None)
        return ran

    def fresh_hash(self, db: AgentDatabase) -> str | None:
        return global_group_hash_of([r[0] for r in db._conn.execute(
            "SELECT group_hash FROM agent WHERE id > 0 AND group_hash IS NOT NULL"
            " ORDER BY id")])

    def test_global_hash_kept_while_unchanged(self) -> None:
        db = _open(self, range(1, 30))
        db.set_agent_groups([(i, ["default"]) for i in range(1, 20)])
        first = db.global_group_hash()
        ran = self.tracing(db)
        db.record_keepalives([Keepalive(i, "w1", 1) for i in range(1, 30)])  # no group moves
        db.mark_agent_info_synced([(i, 0) for i in range(1, 30)])
        self.assertEqual(db.global_group_hash(), first)
        self.assertEqual([sql for sql in ran if self.HASH_SQL in sql], [])

    def test_global_hash_follows_every_change(self) -> None:
        """Every kind of change that moves the hash is seen, whoever makes it."""
        db = _open(self, range(1, 30))
        db.set_agent_groups([(i, ["default"]) for i in range(1, 20)])

        def check() -> str | None:
            value = db.global_group_hash()
            self.assertEqual(value, self.fresh_hash(db))
            return value
        seen = [check()]
        db.set_agent_groups([(5, ["default", "extra"])])
        seen.append(check())
        db.delete_agents([7])
        seen.append(check())
        db.set_agent_groups([(25, ["other"])])  # an agent without a group gets one
        seen.append(check())
        db._conn.execute("UPDATE agent SET group_hash = NULL WHERE id = 3")  # any statement
        seen.append(check())
        other = sqlite3.connect(db.path)  # another connection (another process)
        self.addCleanup(other.close)
        with other:
            other.execute("UPDATE agent SET group_hash = 'abcdef01' WHERE id = 4")
        seen.append(check())
        # A bulk reconcile drops the triggers with the indexes: counted all the same.
        self.patch(agents_db, "BULK_INSERT_ROWS", 10)
        db.reconcile_keys(_keys(range(9, 60)), _NOW)  # removes 1-8 (some with groups)
        seen.append(check())
        self.assertEqual(len(set(seen)), len(seen), seen)  # each step moved it

    def test_global_hash_inside_a_transaction_is_not_kept(self) -> None:
        db = _open(self, range(1, 5))
        db.set_agent_groups([(1, ["a"])])
        before = db.global_group_hash()
        db._conn.execute("BEGIN")
        db._conn.execute("UPDATE agent SET group_hash = 'ffffffff' WHERE id = 1")
        inside = db.global_group_hash()
        db._conn.execute("ROLLBACK")
        self.assertNotEqual(inside, before)
        self.assertEqual(db.global_group_hash(), before)

    def plans(self, ran: list[str], db: AgentDatabase) -> list[str]:
        """The query plans of the SELECTs that pick agents waiting for a sync."""
        plans = []
        for sql in ran:
            if "syncreq" in sql and sql.lstrip().upper().startswith(("SELECT", "WITH")):
                params = (0,) * sql.count("?")
                plans.append(" ".join(str(r[3]) for r in db._conn.execute(
                    "EXPLAIN QUERY PLAN " + sql, params)))
        return plans

    def test_agents_waiting_for_a_sync_are_read_through_partial_indexes(self) -> None:
        db = _open(self, range(1, 30))
        db.record_keepalives([Keepalive(i, "w1", 1) for i in (3, 4)])
        ran = self.tracing(db)
        batch = db.get_agent_info_sync(rows=True)
        self.assertEqual([v[0] for v in batch.versions], [3, 4])
        info = self.plans(ran, db)
        self.assertTrue(info)
        for plan in info:
            self.assertNotIn("SCAN a ", plan + " ")
        self.assertIn("agent_info_syncreq", info[0])
        db.set_agent_groups([(5, ["g"])], sync_status="syncreq")
        del ran[:]
        chunks = db.get_agent_groups_chunks("sync_status", _NOW + 10**6)
        self.assertIn('"id":5', chunks[0])
        groups = self.plans(ran, db)
        self.assertTrue(groups)
        self.assertIn("agent_groups_syncreq", groups[0])

    def test_bulk_reconcile_keeps_partial_indexes_and_triggers(self) -> None:
        db = _open(self, range(0))
        schema = ("SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')"
                  " AND tbl_name = 'agent'")
        before = sorted(db._conn.execute(schema).fetchall())
        self.assertTrue(any(kind == "trigger" for kind, _, _ in before))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(format_client_keys(_keys(range(1, 50))))
        self.assertEqual(db.reconcile_keys_file(path, _NOW).inserted, 49)
        self.assertEqual(sorted(db._conn.execute(schema).fetchall()), before)


class HashWazuhDbTests(HashTests):
    backend = "wazuh-db"


class AgentInfoWazuhDbTests(AgentInfoTests):
    backend = "wazuh-db"
    test_reading_does_not_mark_synced = not_with_wazuh_db(
        AgentInfoTests.test_reading_does_not_mark_synced, MARKS_ON_READ)
    test_update_during_sync_is_not_lost = not_with_wazuh_db(
        AgentInfoTests.test_update_during_sync_is_not_lost, MARKS_ON_READ)
    test_rows_form_means_the_same_as_standard = not_with_wazuh_db(
        AgentInfoTests.test_rows_form_means_the_same_as_standard,
        MARKS_ON_READ + "; the test reads the same agents twice (the rows form over wazuh-db "
        "is tested in tests/agents/test_wazuhdb.py)")
    test_chunks_stay_under_wazuh_limit = not_with_wazuh_db(
        AgentInfoTests.test_chunks_stay_under_wazuh_limit, _OWN_LIMIT)
    test_rows_chunks_bounded = not_with_wazuh_db(
        AgentInfoTests.test_rows_chunks_bounded, _OWN_LIMIT)


class AgentGroupsWazuhDbTests(AgentGroupsTests):
    backend = "wazuh-db"
    test_registration_delta = not_with_wazuh_db(
        AgentGroupsTests.test_registration_delta,
        "wazuh-db applies the registration delta with its own clock, not the caller's")
    test_paging_with_last_id = not_with_wazuh_db(
        AgentGroupsTests.test_paging_with_last_id, _OWN_LIMIT)


class KeysAndQueriesWazuhDbTests(KeysAndQueriesTests):
    backend = "wazuh-db"



class StagedUpdateTests(SynchronousTestCase):
    """The master applies each checked chunk by staging its rows and one set-based UPDATE:
    it writes, counts and refuses exactly what an UPDATE executed per row does."""

    def setUp(self) -> None:
        """Two masters knowing agents 1-5: one as it is, one applying row by row (the
        previous code: ``executemany`` of the per-row UPDATE), and a count of the chunks
        applied set-based."""
        self.staged = _open(self)
        self.per_row = _open(self)
        self.set_based = 0
        original = agents_db._update_info

        def counting(conn: sqlite3.Connection, rows: Any, sql: str, stage: str,
                     id_at: int, *before_update: Any) -> int:
            if conn is self.per_row._conn:
                return int(conn.executemany(sql, rows).rowcount)
            before = conn.total_changes
            updated = original(conn, rows, sql, stage, id_at, *before_update)
            if conn.execute("SELECT count(*) FROM temp.info_staged").fetchone()[0] == 0 and (
                    conn.total_changes - before > updated):  # staged rows inserted, deleted
                self.set_based += 1
            return updated
        self.patch(agents_db, "_update_info", counting)

    def agents(self, db: AgentDatabase) -> list[Any]:
        """Everything the agent-info sync may write."""
        return (db._conn.execute("SELECT * FROM agent ORDER BY id").fetchall()
                + db._conn.execute("SELECT * FROM labels ORDER BY id, key").fetchall())

    def assert_same(self, *chunks: object) -> Any:
        """Both ways give the same result and leave the same database."""
        got = self.staged.set_agent_info(list(chunks))
        expected = self.per_row.set_agent_info(list(chunks))
        self.assertEqual(got, expected)
        self.assertEqual(self.agents(self.staged), self.agents(self.per_row))
        return got

    def test_both_forms_applied_set_based(self) -> None:
        """Rows and 4.7.5 objects, NULL and NOT NULL columns, unknown agents and agent 000,
        labels: written as row by row, set-based."""
        rows = [a_row(ip="10.0.0.1", last_keepalive=2**63 - 1, status_code=-(2**63 - 1)),
                [2, None, *a_row(os_name="\u00e9\"\\\n" + "x" * 8188)[2:]],
                [77, "ghost", *a_row()[2:]], [0, "evil", *a_row()[2:]]]
        objects = json.dumps([{"id": 3, "name": "agent-003", "ip": "10.0.0.3",
                               "last_keepalive": 5, "labels": [{"id": 3, "key": "k",
                                                                "value": "v"}]},
                              {"id": 4, "connection_status": "active"}, {"id": 0, "name": "x"},
                              {"id": 78}])
        result = self.assert_same({"rows": rows, "labels": [[2, [["k", "v"]]]]}, objects,
                                  {"rows": []}, "[]")
        self.assertEqual((result.updated_chunks, result.updated_agents, result.unknown_agents,
                          result.error_messages), (4, 4, 4, ()))
        self.assertEqual(self.set_based, 2)
        self.assertEqual(self.staged.agent_labels(3), {"k": "v"})
        row = self.staged.agent_row(4)
        assert row is not None
        self.assertEqual((row["name"], row["connection_status"]), ("agent-004", "active"))

    def test_every_bad_chunk_refused_as_before(self) -> None:
        """Each malformed rows chunk is refused with the same message, next to a valid chunk
        that is applied, and nothing of it is written."""
        good = {"rows": [[3, "agent-003", *a_row(ip="10.9.9.9", last_keepalive=_NOW)[2:]]]}
        before = self.agents(self.staged)[:3]  # agents 0-2: the bad chunks are about 1 and 2
        for bad in bad_rows_chunks() + bad_labels_chunks():
            with self.subTest(bad=str(bad)[:200]):
                result = self.assert_same(bad, good)
                self.assertEqual(result.updated_chunks, 1)
                self.assertEqual(len(result.error_messages), 1)
                self.assertTrue(result.error_messages[0].startswith("Invalid JSON syntax; "))
                self.assertEqual(self.agents(self.staged)[:3], before)

    def test_repeated_agent_applied_row_by_row(self) -> None:
        """A chunk listing an agent twice is applied in order and counted per row."""
        result = self.assert_same({"rows": [[2, "a", *a_row()[2:]], [2, "b", *a_row()[2:]]]},
                                  '[{"id":3,"name":"c"},{"id":3,"name":"d"}]')
        self.assertEqual((result.updated_agents, self.set_based), (4, 0))
        self.assertEqual([self.staged.agent_row(i)["name"] for i in (2, 3)],  # type: ignore[index]
                         ["b", "d"])

    def test_a_failing_update_rolls_the_chunk_back(self) -> None:
        """A chunk whose UPDATE fails in SQLite (a CHECK constraint) writes nothing, is
        reported with the same message, and the next chunk is applied."""
        bad = {"rows": [[1, "x", *a_row()[2:]], [2, *a_row(connection_status="nonsense")[1:]]]}
        good = {"rows": [[3, "agent-003", *a_row(node_name="w")[2:]]]}
        result = self.assert_same(bad, good)
        self.assertEqual(result.updated_chunks, 1)
        self.assertIn("CHECK constraint failed", result.error_messages[0])
        row = self.staged.agent_row(1)
        assert row is not None
        self.assertEqual(row["name"], "agent-001")
        self.assertEqual(
            self.staged._conn.execute("SELECT count(*) FROM temp.info_staged").fetchone()[0], 0)


    def test_rows_that_move_no_index_leave_the_indexes_alone(self) -> None:
        """A sync that brings new keepalives writes no indexed column (no index entry is
        rewritten); rows that change a name, an address, a node or a status are written
        whole; both as row by row, in both forms."""
        first = {"rows": [[i, f"agent-00{i}", *a_row(ip=f"10.0.0.{i}", node_name="w1",
                                                     connection_status="active",
                                                     last_keepalive=1)[2:]]
                          for i in range(1, 6)]}
        self.assert_same(first)
        touched: list[tuple[int, str]] = []
        conn = self.staged._conn
        conn.create_function("touched", 2, lambda i, c: touched.append((i, c)))
        for column in sorted(agents_db._INDEXED_INFO_COLUMNS):
            conn.execute(f"CREATE TEMP TRIGGER watch_{column} AFTER UPDATE OF {column} ON agent"
                         f" BEGIN SELECT touched(NEW.id, '{column}'); END")
        keepalives = {"rows": [[i, f"agent-00{i}", *a_row(
            ip=f"10.0.0.{i}", node_name="w1", connection_status="active",
            last_keepalive=2, os_name="Debian")[2:]] for i in (1, 2, 3)]}
        # Agent 4 moves to another node, agent 5 keeps its name through a null.
        objects = json.dumps([
            {"id": 4, "name": "agent-004", "ip": "10.0.0.4", "node_name": "w2",
             "connection_status": "active", "last_keepalive": 2},
            {"id": 5, "ip": "10.0.0.5", "node_name": "w1", "connection_status": "active",
             "last_keepalive": 3}])
        result = self.assert_same(keepalives, objects)
        self.assertEqual(result.updated_agents, 5)
        self.assertEqual(sorted({i for i, _ in touched}), [4])
        row = self.staged.agent_row(1)
        assert row is not None
        self.assertEqual((row["last_keepalive"], row["os_name"]), (2, "Debian"))

    def test_the_split_is_dropped_when_most_rows_move_an_index(self) -> None:
        """A first sync (every row moves an index) is split for its first chunk only; a
        keepalive sync for every chunk; each writes as row by row."""
        statements: list[str] = []
        self.staged._conn.set_trace_callback(statements.append)

        def chunk(agent: int, keepalive: int) -> dict[str, Any]:
            return {"rows": [[agent, f"agent-00{agent}", *a_row(
                ip=f"10.0.0.{agent}", node_name="w1", connection_status="active",
                last_keepalive=keepalive)[2:]]]}

        def used() -> list[str]:
            kinds = [("whole" if sql == agents_db._UPDATE_INFO_STAGED else "split")
                     for sql in statements if sql.startswith("UPDATE agent SET")]
            statements.clear()
            return kinds
        self.assert_same(*(chunk(i, 1) for i in range(1, 6)))
        self.assertEqual(used(), ["split", "split", "whole", "whole", "whole", "whole"])
        # A keepalive sync: the first statement writes every row, the second is not run.
        self.assert_same(*(chunk(i, 2) for i in range(1, 6)))
        self.assertEqual(used(), ["split"] * 5)
        # An unknown agent next to a known one: both statements run.
        self.assert_same({"rows": [*chunk(1, 3)["rows"], *chunk(99, 3)["rows"]]})
        self.assertEqual(used(), ["split"] * 2)

    def test_indexed_columns_match_the_schema(self) -> None:
        """The columns the update treats as indexed are those the agent table's indexes
        hold among the agent-info columns."""
        conn = self.staged._conn
        indexed = {column for (_, index, *_) in conn.execute("PRAGMA index_list(agent)")
                   for (_, _, column) in conn.execute(f"PRAGMA index_info({index})")}
        self.assertEqual(indexed & set(AGENT_INFO_SET_COLUMNS),
                         agents_db._INDEXED_INFO_COLUMNS)


class DecodeAheadTests(SynchronousTestCase):
    """The master parses and checks chunk k+1 on a second thread while it writes chunk k."""

    def setUp(self) -> None:
        """A master knowing agents 1-9, and a record of every decode and write."""
        self.master = _open(self, range(1, 10))
        self.events: list[tuple[str, int, object]] = []
        self.decoded: dict[int, threading.Event] = {}
        decode_params = agents_db.decode_agent_info_params
        decode_rows = agents_db.decode_agent_info_rows
        update_info = agents_db._update_info

        def first_id(chunk: Any) -> int:
            try:
                return int(json.loads(chunk)[0]["id"] if isinstance(chunk, str)
                           else chunk["rows"][0][0])
            except (ValueError, TypeError, KeyError, IndexError):
                return -1  # a malformed chunk

        def recorded(decode: Any) -> Any:
            def wrapper(chunk: Any) -> Any:
                agent = first_id(chunk)
                try:
                    return decode(chunk)
                finally:
                    self.events.append(("decode", agent, threading.current_thread()))
                    self.decoded.setdefault(agent, threading.Event()).set()
            return wrapper

        def update(conn: sqlite3.Connection, rows: Any, sql: str, stage: str, id_at: int,
                   before_update: Any, *plan: Any) -> int:
            agent = rows[0][id_at]

            def started() -> None:
                before_update()
                # Wait for the decode started ahead (of the agent after this chunk's), so the
                # order of the record does not depend on the threads' timing.
                following = agent + 1
                if following <= self.last:
                    self.decoded.setdefault(following, threading.Event()).wait(10)
            result = update_info(conn, rows, sql, stage, id_at, started, *plan)
            self.events.append(("write", agent, threading.current_thread()))
            return int(result)
        self.patch(agents_db, "decode_agent_info_params", recorded(decode_params))
        self.patch(agents_db, "decode_agent_info_rows", recorded(decode_rows))
        self.patch(agents_db, "_update_info", update)
        self.last = 0

    def chunks(self, ids: range) -> list[Any]:
        """One chunk per agent, alternating the two forms."""
        self.last = ids[-1]
        return [json.dumps([{"id": i, "name": f"agent-{i:03d}", "ip": f"10.0.0.{i}"}])
                if i % 2 else {"rows": [[i, f"agent-{i:03d}", *a_row(ip=f"10.0.0.{i}")[2:]]]}
                for i in ids]

    def test_next_chunk_decoded_on_a_second_thread_during_the_write(self) -> None:
        """Chunk 1 is decoded on the writer's thread; every later chunk on one other thread,
        started before the previous chunk's UPDATE and finished before that write ended;
        every chunk is written, in order, on the writer's thread."""
        result = self.master.set_agent_info(self.chunks(range(1, 10)))
        self.assertEqual((result.updated_chunks, result.updated_agents), (9, 9))
        here = threading.current_thread()
        writes = [(agent, thread) for kind, agent, thread in self.events if kind == "write"]
        self.assertEqual(writes, [(i, here) for i in range(1, 10)])
        self.assertEqual(self.events[0], ("decode", 1, here))
        decoders = {thread for kind, agent, thread in self.events if kind == "decode"
                    and agent > 1}
        self.assertEqual(len(decoders), 1)
        self.assertNotIn(here, decoders)
        order = [(kind, agent) for kind, agent, _ in self.events]
        for agent in range(2, 10):
            self.assertLess(order.index(("decode", agent)), order.index(("write", agent - 1)))
        for agent in range(1, 10):
            row = self.master.agent_row(agent)
            assert row is not None
            self.assertEqual(row["ip"], f"10.0.0.{agent}")

    def test_a_bad_chunk_ahead_is_reported_in_its_place(self) -> None:
        """A chunk that fails its checks on the second thread is an error in its place; the
        chunks after it are still decoded and written."""
        chunks = self.chunks(range(1, 5))
        chunks[1] = {"rows": [[2, True] + [None] * (len(AGENT_INFO_COLUMNS) - 2)]}
        chunks.insert(2, "[{")
        self.last = 0  # the bad chunks are not waited for
        result = self.master.set_agent_info(chunks)
        self.assertEqual((result.updated_chunks, result.updated_agents), (3, 3))
        self.assertEqual(len(result.error_messages), 2)
        self.assertTrue(all(m.startswith("Invalid JSON syntax; ")
                            for m in result.error_messages))
        row = self.master.agent_row(2)
        assert row is not None
        self.assertIsNone(row["ip"])

    def test_writer_does_not_wait_for_a_decoding_not_begun(self) -> None:
        """When the second thread has not begun a chunk the writer needs (here: it is held
        by another job, as a thread that gets no CPU), the writer decodes it itself."""
        release = threading.Event()
        busy = self.master._chunk_decoder().submit(release.wait, 5)
        self.addCleanup(release.set)
        chunks = self.chunks(range(1, 5))
        self.last = 0  # nothing is decoded ahead to wait for
        result = self.master.set_agent_info(chunks)
        self.assertFalse(busy.done())  # the writer finished while the thread was held
        release.set()
        self.assertEqual((result.updated_chunks, result.updated_agents), (4, 4))
        here = threading.current_thread()
        self.assertEqual([(kind, thread) for kind, _, thread in self.events if kind == "decode"],
                         [("decode", here)] * 4)

    def test_close_stops_the_decoding_thread(self) -> None:
        """Closing the database ends its decoding thread."""
        self.master.set_agent_info(self.chunks(range(1, 4)))
        [decoder] = {thread for kind, _, thread in self.events
                     if kind == "decode" and thread is not threading.current_thread()}
        self.assertTrue(decoder.is_alive())
        self.master.close()
        self.assertFalse(decoder.is_alive())


class StreamedReconcileTests(SynchronousTestCase):
    """client.keys read line by line and merged with the agent table in batches of ids
    (the embedded database's reconcile_keys_file)."""

    @settings(max_examples=60, deadline=None)
    @given(st.sets(st.integers(1, 40)), st.sets(st.integers(1, 40)), st.integers(1, 7),
           st.sets(st.integers(1, 40)))
    def test_file_reconcile_in_batches_equals_the_plan(
            self, before: set[int], after: set[int], batch: int, changed: set[int]) -> None:
        """Reading client.keys line by line and the table in batches of ids gives the same
        table and counts as planning with everything in memory, whatever the batch size."""
        home = self.mktemp()
        os.makedirs(home)
        entries = [KeyEntry(i, f"agent-{i:03d}" + ("x" if i in changed else ""),
                            "10.0.0.1/32" if i % 3 == 0 else "any", f"{i:064x}")
                   for i in sorted(after)]
        path = os.path.join(home, "client.keys")
        with open(path, "w") as f:
            f.write(format_client_keys(entries))
        planned = AgentDatabase(os.path.join(home, "a.db"), _NOW)
        streamed = AgentDatabase(os.path.join(home, "b.db"), _NOW)
        self.addCleanup(planned.close)
        self.addCleanup(streamed.close)
        for db in (planned, streamed):
            db.reconcile_keys([
                KeyEntry(i, f"agent-{i:03d}", "any", f"{i:064x}") for i in sorted(before)], _NOW)
            db._conn.execute("INSERT INTO labels SELECT id, 'k', 'v' FROM agent WHERE id > 0")
        expected = planned.reconcile_keys(entries, _NOW + 1)
        with open(path, encoding="utf-8") as f:
            got = streamed._reconcile_sorted(iter_sorted_client_keys(f), _NOW + 1, batch)
        self.assertEqual(got, expected)
        table = ("SELECT id, name, ip, register_ip, internal_key, date_add FROM agent"
                 " ORDER BY id")
        self.assertEqual(streamed._conn.execute(table).fetchall(),
                         planned._conn.execute(table).fetchall())
        labels = "SELECT id FROM labels ORDER BY id"
        self.assertEqual(streamed._conn.execute(labels).fetchall(),
                         planned._conn.execute(labels).fetchall())

    def test_file_out_of_order_or_duplicated(self) -> None:
        """A file whose ids do not ascend is read whole: the last line of an id wins."""
        db = _open(self, range(1, 4))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("003 c any k3\n001 a any k1\n003 c2 any k3b\n")
        result = db.reconcile_keys_file(path, _NOW)
        self.assertEqual((result.inserted, result.updated, result.removed), (0, 2, 1))
        self.assertEqual([(a.agent_id, a.name) for a in db.list_agents()],
                         [(0, "localhost"), (1, "a"), (3, "c2")])
