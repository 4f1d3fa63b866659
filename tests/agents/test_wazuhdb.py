"""The wazuh-db agent backend (drop-in mode) against the stand-in wazuh-db: the exact
commands, paging under wazuh-db's 64 KiB answers, errors, timeouts, reconnection, settings."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.agents.wdb_standin import loopback_database
from tests.support import node_config, short_tempdir
from wazuhcluster.agents.backend import agent_db_settings, make_agent_backend
from wazuhcluster.agents.db import Keepalive
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.agents.payloads import decode_agent_info_string, encode_agent_info_rows_string
from wazuhcluster.agents.schema import WDB_MAX_RESPONSE_SIZE
from wazuhcluster.agents.threaded import ThreadedAgentDatabase
from wazuhcluster.agents.wazuhdb import (
    WazuhDbAgentDatabase,
    WazuhDbError,
    WdbProtocol,
    bind_select,
    sql_literal,
)
from wazuhcluster.errors import ConfigError
from wazuhcluster.interfaces import IAgentDatabase
from wazuhcluster.protocol.lenprefix import encode

NOW = 1_700_000_000


class _Case(SynchronousTestCase):
    def make(self, agents: int = 5) -> Any:
        clock = Clock()
        clock.advance(NOW)
        db = loopback_database(clock, short_tempdir(self))
        self.addCleanup(db.standin.close)
        self.addCleanup(db.stopService)
        db.standin.reconcile_keys([KeyEntry(i, f"agent{i}", "any", f"{i:064x}")
                                   for i in range(1, agents + 1)], NOW - 100)
        return db

    def result(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)


class CommandTests(_Case):
    """What goes to wazuh-db is what wazuh-clusterd 4.7.5 sends."""

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IAgentDatabase, self.make()))

    def test_idle_sends_nothing_and_waits_its_turn(self) -> None:
        """idle() runs after the operations before it and sends nothing to wazuh-db."""
        db = self.make()
        sent = db.backend.commands
        before = len(sent)
        first = db.global_group_hash()
        idle = db.idle()
        self.result(first)
        self.assertIsNone(self.result(idle))
        self.assertEqual(len(sent), before + 1)

    def test_cluster_command_texts(self) -> None:
        db = self.make()
        sent = db.backend.commands
        self.result(db.get_agent_info_sync())
        self.result(db.get_agent_groups_chunks("sync_status", NOW, set_synced=True,
                                               get_global_hash=True))
        self.result(db.get_agent_groups_chunks("all", NOW))
        self.result(db.global_group_hash())
        self.result(db.recalculate_group_hashes())
        self.result(db.set_agent_groups([(1, ["default"])]))
        self.assertIn("global sync-agent-info-get ", sent)
        self.assertIn('global sync-agent-groups-get {"condition": "sync_status", "set_synced": '
                      'true, "get_global_hash": true}', sent)
        self.assertIn('global sync-agent-groups-get {"condition": "all", "set_synced": false, '
                      '"get_global_hash": false, "last_id": 0}', sent)
        self.assertIn('global sync-agent-groups-get {"get_global_hash": true}', sent)
        self.assertIn("global recalculate-agent-group-hashes", sent)
        self.assertIn('global set-agent-groups {"mode": "override", "sync_status": "synced", '
                      '"data": [{"id": 1, "groups": ["default"]}]}', sent)
        self.assertIn("global insert-agent-group default", sent)  # created before assigning

    def test_enrolment_operations(self) -> None:
        """registration_status and apply_key_changes over wazuh-db's commands."""
        db = self.make(3)
        db.standin._conn.execute("UPDATE agent SET connection_status = 'disconnected',"
                                 " disconnection_time = 50 WHERE id = 2")
        status = self.result(db.registration_status([2, 3, 9]))
        self.assertEqual(set(status), {2, 3})
        self.assertEqual(status[2][:2], ("disconnected", 50))
        result = self.result(db.apply_key_changes(
            [KeyEntry(1, "renamed", "any", f"{1:064x}"), KeyEntry(7, "new", "any", "k7"),
             KeyEntry(3, "agent3", "any", f"{3:064x}")], [2, 0], NOW))
        self.assertEqual((result.inserted, result.updated, result.removed), (1, 1, 1))
        self.assertEqual(db.standin.agent_row(1)["name"], "renamed")
        self.assertEqual(db.standin.agent_row(7)["internal_key"], "k7")
        self.assertIsNone(db.standin.agent_row(2))
        sent = db.backend.commands
        self.assertIn("global delete-agent 2", sent)
        self.assertTrue(any(c.startswith("global insert-agent {") for c in sent))

    def test_agent_info_round_trip_between_two_wazuh_dbs(self) -> None:
        worker, master = self.make(), self.make()
        self.result(worker.record_keepalives(
            [Keepalive(i, "w1", NOW + i, "Ubuntu", "22.04", "v4.7.5") for i in (1, 2, 99)]))
        worker.standin._conn.execute("INSERT INTO labels VALUES (2, 'env', 'prod')")
        batch = self.result(worker.get_agent_info_sync())
        self.assertEqual([v[0] for v in batch.versions], [1, 2])
        self.assertEqual(worker.standin.agent_row(1)["sync_status"], "synced")  # on read
        result = self.result(master.set_agent_info(batch.chunks))
        self.assertEqual((result.updated_chunks, result.updated_agents, result.unknown_agents,
                          result.error_messages), (1, 2, 0, ()))
        self.assertTrue(any(c.startswith("global sync-agent-info-set [") for c in
                            master.backend.commands))
        row = master.standin.agent_row(2)
        self.assertEqual((row["node_name"], row["last_keepalive"], row["os_name"]),
                         ("w1", NOW + 2, "Ubuntu"))
        self.assertEqual(master.standin.agent_labels(2), {"env": "prod"})

    def test_rows_form_from_wazuh_db_means_the_same(self) -> None:
        worker, master, other = self.make(), self.make(), self.make()
        self.result(worker.record_keepalives([Keepalive(i, "w1", NOW, "Ubuntu") for i in (1, 3)]))
        worker.standin._conn.execute("INSERT INTO labels VALUES (3, 'k', 'v')")
        standard = self.result(worker.get_agent_info_sync())
        worker.standin._conn.execute("UPDATE agent SET sync_status = 'syncreq' WHERE id > 0")
        rows = self.result(worker.get_agent_info_sync(rows=True))
        parsed = decode_agent_info_string(encode_agent_info_rows_string(rows.chunks))
        self.result(master.set_agent_info(standard.chunks))
        self.result(other.set_agent_info(parsed))
        everything = "SELECT * FROM agent ORDER BY id"
        self.assertEqual(other.standin._conn.execute(everything).fetchall(),
                         master.standin._conn.execute(everything).fetchall())
        self.assertEqual(other.standin.agent_labels(3), {"k": "v"})


class PagingTests(_Case):
    """No answer above wazuh-db's limit; everything still arrives."""

    def test_agent_info_comes_in_due_pages(self) -> None:
        db = self.make(agents=1500)
        db.standin._conn.execute("UPDATE agent SET os_uname = ?, sync_status = 'syncreq'"
                                 " WHERE id > 0", ("Linux |x| " + "u" * 150,))
        batch = self.result(db.get_agent_info_sync())
        self.assertGreater(len(batch.chunks), 3)
        self.assertTrue(all(len(c.encode()) < WDB_MAX_RESPONSE_SIZE for c in batch.chunks))
        self.assertEqual([v[0] for v in batch.versions], list(range(1, 1501)))
        self.assertEqual(db.backend.commands.count("global sync-agent-info-get "),
                         len(batch.chunks))

    def test_sql_reads_are_paged_and_halved_when_too_big(self) -> None:
        db = self.make(agents=1200)
        db.standin._conn.execute("UPDATE agent SET name = 'n' || id || ?", ("x" * 120,))
        agents = self.result(db.list_agents())
        self.assertEqual([a.agent_id for a in agents], list(range(0, 1201)))
        sql = [c for c in db.backend.commands if c.startswith("global sql SELECT id, name")]
        self.assertGreater(len(sql), 3)
        self.assertTrue(any("LIMIT 250" in c for c in sql))  # 500 rows did not fit

    def test_groups_dump_pages(self) -> None:
        db = self.make(agents=3000)
        self.result(db.set_agent_groups([(i, ["default", f"g{i % 7}"])
                                         for i in range(1, 3001)]))
        chunks = self.result(db.get_agent_groups_chunks("all", NOW))
        self.assertGreater(len(chunks), 1)
        ids = [item["id"] for c in chunks for item in json.loads(c)[0]["data"]]
        self.assertEqual(ids, list(range(1, 3001)))
        self.assertLessEqual(max(len(c) for c in chunks), WDB_MAX_RESPONSE_SIZE)


class FailureTests(_Case):
    """Errors are WazuhDbError (an sqlite3.Error); nothing hangs."""

    def test_err_answer(self) -> None:
        db = self.make()
        failure = self.failureResultOf(Deferred.fromCoroutine(db.query("global nonsense")),
                                       WazuhDbError)
        self.assertIsInstance(failure.value, sqlite3.Error)
        self.assertIn("nonsense", str(failure.value))

    def test_timeout_then_reconnect(self) -> None:
        clock = Clock()
        transports: list[StringTransport] = []
        protocols: list[WdbProtocol] = []

        async def connect() -> WdbProtocol:
            protocol = WdbProtocol()
            transport = StringTransport()
            transports.append(transport)
            protocols.append(protocol)
            protocol.makeConnection(transport)
            return protocol
        db = WazuhDbAgentDatabase(clock, connect, lambda f, *a: f(*a), timeout=5)
        d = db.global_group_hash()
        self.assertNoResult(d)
        clock.advance(5)
        self.assertIn("no answer from wazuh-db within 5 s",
                      str(self.failureResultOf(d, WazuhDbError).value))
        self.assertTrue(transports[0].disconnecting)
        d = db.global_group_hash()  # a new connection; the lock was released
        self.assertEqual(len(transports), 2)
        protocols[1].dataReceived(encode(b'ok [{"data":[],"hash":"abc"}]'))
        self.assertEqual(self.successResultOf(d), "abc")

    def test_connection_lost_fails_waiting_and_reconnects(self) -> None:
        clock = Clock()
        protocols: list[WdbProtocol] = []

        async def connect() -> WdbProtocol:
            protocol = WdbProtocol()
            protocol.makeConnection(StringTransport())
            protocols.append(protocol)
            return protocol
        db = WazuhDbAgentDatabase(clock, connect, lambda f, *a: f(*a))
        d = db.count_active_agents_by_node()
        protocols[0].connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, WazuhDbError)
        d = db.count_active_agents_by_node()
        protocols[1].dataReceived(encode(b'ok [{"node_name":"w1","n":3},{"n":1}]'))
        self.assertEqual(self.successResultOf(d), {"w1": 3, "unknown": 1})

    def test_oversized_answer_refused(self) -> None:
        protocol = WdbProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = protocol.ask(b"global sql SELECT 1")
        protocol.dataReceived(b"\xff\xff\xff\x7f")
        self.failureResultOf(d, WazuhDbError)
        self.assertTrue(transport.disconnecting)

    def test_sql_literal(self) -> None:
        self.assertEqual(sql_literal("a'; DROP TABLE agent; --"), "'a''; DROP TABLE agent; --'")
        self.assertEqual((sql_literal(None), sql_literal(7), sql_literal(True)),
                         ("NULL", "7", "1"))
        self.assertRaises(ValueError, sql_literal, "a\x00b")
        self.assertRaises(ValueError, sql_literal, 1.5)

    def test_hostile_node_name_stays_data(self) -> None:
        db = self.make()
        name = "w'); DELETE FROM agent; --"
        self.assertEqual(self.result(db.record_keepalives([Keepalive(1, name, NOW)])), 1)
        self.assertEqual(db.standin.agent_row(1)["node_name"], name)
        self.assertEqual(len(db.standin.list_agents()), 6)


class SettingsTests(SynchronousTestCase):
    """``agent_db`` in etc/wazuhcluster.yaml."""

    def config(self, section: dict[str, Any] | None) -> Any:
        config = node_config(short_tempdir(self))
        if section is not None:
            config.settings["agent_db"] = section
        return config

    def test_default_is_embedded(self) -> None:
        config = self.config(None)
        self.assertEqual(agent_db_settings(config)["backend"], "embedded")
        service = make_agent_backend(config, Clock(), None)
        self.assertIsInstance(service, ThreadedAgentDatabase)
        self.assertEqual(service.name, "agent-db")

    def test_wazuh_db(self) -> None:
        config = self.config({"backend": "wazuh-db", "socket": "/run/wdb", "timeout": 9})
        service = make_agent_backend(config, Clock(), None)
        self.assertIsInstance(service, WazuhDbAgentDatabase)
        self.assertEqual(service.name, "agent-db")
        values = agent_db_settings(self.config({"backend": "wazuh-db"}))
        self.assertTrue(values["socket"].endswith("/queue/db/wdb"))

    def test_bad_values_name_the_key(self) -> None:
        for section, key in (({"backend": "mysql"}, "agent_db.backend"),
                             ({"socket": 3}, "agent_db.socket"),
                             ({"timeout": -1}, "agent_db.timeout"),
                             ({"path": "x"}, "agent_db.path")):
            with self.assertRaises(ConfigError) as caught:
                agent_db_settings(self.config(section))
            self.assertIn(key, str(caught.exception))




class DapiOperationTests(_Case):
    """select, delete_agents and delete_groups over wazuh-db."""

    def test_bind_select(self) -> None:
        self.assertEqual(bind_select("SELECT * FROM agent WHERE name = ? AND id > ? AND x = '?'",
                                     ("a'b", 3)),
                         "SELECT * FROM agent WHERE name = 'a''b' AND id > 3 AND x = '?'")
        self.assertEqual(bind_select("SELECT ? ;  ", (1.5,)), "SELECT 1.5")
        for sql, params in (("DELETE FROM agent", ()), ("SELECT 1; DELETE FROM agent", ()),
                            ("SELECT ?", ()), ("SELECT 1", (1,)), ("SELECT 'x", ()),
                            ("SELECT ?", ([1],)), ("SELECT ?", (float("nan"),)),
                            ("  select 1 from agent; drop table agent", ())):
            self.assertRaises(ValueError, bind_select, sql, params)

    def test_select_pages_when_too_big(self) -> None:
        db = self.make(agents=1000)
        db.standin._conn.execute("UPDATE agent SET name = 'n' || id || ?", ("y" * 100,))
        rows = self.result(db.select("SELECT id, name FROM agent WHERE id > ? ORDER BY id", (0,)))
        self.assertEqual([r["id"] for r in rows], list(range(1, 1001)))
        paged = [c for c in db.backend.commands if ") LIMIT " in c]
        self.assertGreater(len(paged), 1)  # the whole answer was too big for wazuh-db

    def test_select_error_is_wazuh_db_error(self) -> None:
        db = self.make()
        self.failureResultOf(db.select("SELECT nope FROM agent"), WazuhDbError)

    def test_delete_agents(self) -> None:
        db = self.make(agents=3)
        home = short_tempdir(self)
        keys = f"{home}/client.keys"
        with open(keys, "w") as f:
            f.write(format_client_keys([KeyEntry(i, f"agent{i}", "any", f"{i:064x}")
                                        for i in (1, 2, 3)]))
        self.result(db.set_agent_groups([(1, ["web"]), (2, ["web"])]))
        self.assertEqual(self.result(db.delete_agents([1, 0, 9], keys, purge=False)), [1])
        with open(keys) as f:
            self.assertTrue(f.readline().startswith("001 !agent1 "))
        self.assertIsNone(db.standin.agent_row(1))
        self.assertIsNotNone(db.standin.agent_row(0))
        self.assertIn("global delete-agent 1", db.backend.commands)

    def test_delete_groups(self) -> None:
        db = self.make(agents=3)
        self.result(db.set_agent_groups([(1, ["web"]), (2, ["web", "db"])]))
        removed = self.result(db.delete_groups(["web", "missing"], "synced"))
        self.assertEqual(removed, {"web": [1, 2]})
        self.assertIn("global delete-group web", db.backend.commands)
        agents = db.standin.list_agents()
        self.assertEqual((agents[1].groups, agents[2].groups), (("default",), ("db",)))
        self.assertEqual(db.standin.agent_row(1)["group_sync_status"], "synced")
        self.assertEqual(db.standin.list_groups(), ["db", "default"])
