"""Tests for wazuhcluster.agents.schema: the tables match Wazuh 4.7.5's global.db."""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents.db import AgentDatabase, database_path

# (name, declared type, not null, default, primary key) of Wazuh 4.7.5's global.db (v6),
# written down from wazuh/wazuh src/wazuh_db/schema_global.sql at tag v4.7.5.
_WAZUH_AGENT = [
    ("id", "INTEGER", 0, None, 1), ("name", "TEXT", 1, None, 0), ("ip", "TEXT", 0, None, 0),
    ("register_ip", "TEXT", 0, None, 0), ("internal_key", "TEXT", 0, None, 0),
    ("os_name", "TEXT", 0, None, 0), ("os_version", "TEXT", 0, None, 0),
    ("os_major", "TEXT", 0, None, 0), ("os_minor", "TEXT", 0, None, 0),
    ("os_codename", "TEXT", 0, None, 0), ("os_build", "TEXT", 0, None, 0),
    ("os_platform", "TEXT", 0, None, 0), ("os_uname", "TEXT", 0, None, 0),
    ("os_arch", "TEXT", 0, None, 0), ("version", "TEXT", 0, None, 0),
    ("config_sum", "TEXT", 0, None, 0), ("merged_sum", "TEXT", 0, None, 0),
    ("manager_host", "TEXT", 0, None, 0), ("node_name", "TEXT", 0, "'unknown'", 0),
    ("date_add", "INTEGER", 1, None, 0), ("last_keepalive", "INTEGER", 0, None, 0),
    ("group", "TEXT", 0, "'default'", 0), ("group_hash", "TEXT", 0, "NULL", 0),
    ("group_sync_status", "TEXT", 1, "'synced'", 0), ("sync_status", "TEXT", 1, "'synced'", 0),
    ("connection_status", "TEXT", 1, "'never_connected'", 0),
    ("disconnection_time", "INTEGER", 0, "0", 0),
    ("group_config_status", "TEXT", 1, "'not synced'", 0),
    ("status_code", "INTEGER", 0, "0", 0),
]
_WAZUH_OTHER = {
    "labels": [("id", "INTEGER", 0, None, 1), ("key", "TEXT", 1, None, 2),
               ("value", "TEXT", 1, None, 0)],
    "info": [("key", "TEXT", 0, None, 1), ("value", "TEXT", 0, None, 0)],
    "group": [("id", "INTEGER", 0, None, 1), ("name", "TEXT", 0, None, 0)],
    "belongs": [("id_agent", "INTEGER", 0, None, 1), ("id_group", "INTEGER", 0, None, 2),
                ("priority", "INTEGER", 1, "0", 0)],
}


class SchemaTests(SynchronousTestCase):
    """The created database has Wazuh's tables, constraints and initial rows."""

    def setUp(self) -> None:
        """Create a database in a temporary Wazuh home."""
        self.home = self.mktemp()
        self.db = AgentDatabase.for_home(self.home, 1700000000)
        self.addCleanup(self.db.close)
        self.conn = sqlite3.connect(database_path(self.home))
        self.addCleanup(self.conn.close)

    def columns(self, table: str) -> list[tuple[object, ...]]:
        """``PRAGMA table_info`` without the column index."""
        return [tuple(r[1:]) for r in self.conn.execute(f"PRAGMA table_info(`{table}`)")]

    def test_path(self) -> None:
        """The database has its own name under ``queue/db/``, never wazuh-db's global.db."""
        self.assertTrue(database_path(self.home).endswith("/queue/db/wazuhcluster-agents.db"))
        self.assertEqual(self.db.path, database_path(self.home))

    def test_agent_columns_equal_wazuh(self) -> None:
        """The agent table's columns, types, NOT NULLs, defaults and key equal Wazuh's."""
        self.assertEqual(self.columns("agent"), _WAZUH_AGENT)

    def test_other_tables_equal_wazuh(self) -> None:
        """labels, info, group and belongs equal Wazuh's."""
        for table, expected in _WAZUH_OTHER.items():
            self.assertEqual(self.columns(table), expected, table)

    def test_check_constraints(self) -> None:
        """Status columns only accept Wazuh's values."""
        self.assertRaises(sqlite3.IntegrityError, self.conn.execute,
                          "UPDATE agent SET connection_status = 'bogus' WHERE id = 0")
        self.assertRaises(sqlite3.IntegrityError, self.conn.execute,
                          "UPDATE agent SET group_config_status = 'x' WHERE id = 0")

    def test_unique_constraints(self) -> None:
        """Group names are unique and an agent has one group per priority."""
        self.conn.execute("INSERT INTO `group` (name) VALUES ('a')")
        self.assertRaises(sqlite3.IntegrityError, self.conn.execute,
                          "INSERT INTO `group` (name) VALUES ('a')")

    def test_manager_row_and_version(self) -> None:
        """Agent 000 exists as Wazuh creates it, and db_version is 6."""
        row = self.db.agent_row(0)
        assert row is not None
        self.assertEqual((row["name"], row["ip"], row["register_ip"], row["group"],
                          row["connection_status"], row["last_keepalive"], row["date_add"]),
                         ("localhost", "127.0.0.1", "127.0.0.1", None, "active",
                          253402300799, 1700000000))
        self.assertEqual(self.conn.execute(
            "SELECT value FROM metadata WHERE key = 'db_version'").fetchone(), ("6",))

    def test_wal_mode(self) -> None:
        """The database uses write-ahead logging."""
        self.assertEqual(self.conn.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    def test_reopen_keeps_data(self) -> None:
        """Opening an existing database creates nothing twice."""
        again = AgentDatabase.for_home(self.home, 1800000000)
        self.addCleanup(again.close)
        self.assertEqual(len(again.list_agents()), 1)
        row = again.agent_row(0)
        assert row is not None
        self.assertEqual(row["date_add"], 1700000000)
