"""The agent-database operations the DAPI functions use: read-only select, delete_agents,
delete_groups (embedded SQLite backend, blocking and threaded)."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.dapi.support import DapiEnv
from wazuhcluster.agents.db import AgentDatabase
from wazuhcluster.interfaces import IAgentDatabase


class Select(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.env.add_agents(2)
        self.db: AgentDatabase = self.env.db._database()

    def test_rows_without_nulls(self) -> None:
        rows = self.db.select("SELECT id, name, ip FROM agent WHERE id > ? ORDER BY id", (0,))
        self.assertEqual(rows, [{"id": 1, "name": "agent1"}, {"id": 2, "name": "agent2"}])

    def test_threaded_interface(self) -> None:
        verifyObject(IAgentDatabase, self.env.db)
        d = self.env.db.select("SELECT COUNT(*) AS n FROM agent")
        self.assertEqual(self.successResultOf(d), [{"n": 3}])

    def test_refuses_anything_but_reading(self) -> None:
        for sql in ("DELETE FROM agent", "UPDATE agent SET name = 'x'",
                    "INSERT INTO `group` (name) VALUES ('x')", "PRAGMA writable_schema=1",
                    "ATTACH DATABASE ':memory:' AS x", "SELECT 1; DELETE FROM agent",
                    "  select 1 from agent; drop table agent",
                    "WITH x AS (SELECT 1) DELETE FROM agent"):
            self.assertRaises(ValueError, self.db.select, sql)
        self.assertRaises(ValueError, self.db.select, "SELECT ?", ([1],))  # type: ignore[list-item]
        self.assertEqual(len(self.db.select("SELECT id FROM agent")), 3)
        # The authorizer is removed afterwards: writes of the cluster still work.
        self.assertEqual(self.db.create_groups(["after"]), 1)


class DeleteAgents(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.env.add_agents(3)
        self.env.groups({1: ["web"], 2: ["web"]})
        self.db: AgentDatabase = self.env.db._database()
        self.keys = os.path.join(self.env.home, "etc", "client.keys")

    def test_purge(self) -> None:
        self.assertEqual(self.db.delete_agents([1, 0, 9], self.keys, purge=True), [1])
        text = self.env.read("etc/client.keys")
        self.assertEqual([line.split(" ")[0] for line in text.splitlines()], ["002", "003"])
        self.assertIsNone(self.db.agent_row(1))
        self.assertIsNotNone(self.db.agent_row(0))
        self.assertEqual(self.db.select("SELECT id_agent FROM belongs"), [{"id_agent": 2}])
        # A reconcile with the rewritten keys changes nothing more.
        result = self.db.reconcile_keys_file(self.keys, 0)
        self.assertEqual((result.inserted, result.updated, result.removed), (0, 0, 0))

    def test_mark_removed(self) -> None:
        self.db.delete_agents([2], self.keys, purge=False)
        self.assertIn(f"002 !agent2 any {2:064x}\n", self.env.read("etc/client.keys"))
        self.assertEqual(self.db.reconcile_keys_file(self.keys, 0).removed, 0)

    def test_without_keys_file(self) -> None:
        self.assertEqual(self.db.delete_agents([3], None), [3])
        self.assertIn("003 agent3", self.env.read("etc/client.keys"))


class DeleteGroups(SynchronousTestCase):

    def test_members_fall_back_to_default(self) -> None:
        env = DapiEnv(self)
        env.add_agents(3)
        env.groups({1: ["web", "db"], 2: ["web"]})
        db = env.db._database()
        self.assertEqual(db.delete_groups(["web", "nope"]), {"web": [1, 2]})
        self.assertEqual(db.agent_row(1)["group"], "db")
        self.assertEqual(db.agent_row(2)["group"], "default")
        self.assertEqual(db.agent_row(2)["group_sync_status"], "syncreq")
        self.assertNotIn("web", db.list_groups())
        self.assertRaises(ValueError, db.delete_groups, ["db"], "bogus")
