"""What makes a DAPI request cheaper keeps its answer the same: the master's routing query
(index walk instead of a scan), the answer cache (identical bytes, invalidated by any write
and by the clock's second), small requests decoded inline."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import raw
from tests.dapi.support import DapiEnv
from wazuhcluster.agents.schema import NODE_NAMES_SQL

DISTINCT = "SELECT DISTINCT node_name FROM agent"


def first_names(rows: list[dict[str, Any]]) -> list[str]:
    """Node names in first-seen order (as the DAPI's routing keeps them)."""
    out: dict[str, None] = {}
    for row in rows:
        out.setdefault(str(row.get("node_name") or ""), None)
    return list(out)


class NodeNamesQueryTests(SynchronousTestCase):
    """``NODE_NAMES_SQL`` gives the names ``SELECT DISTINCT node_name`` gives, in its order,
    without reading the whole index."""

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.db = raw(self.env.db)

    def same(self) -> list[str]:
        expected = first_names(self.db.select(DISTINCT, []))
        got = first_names(self.db.select(NODE_NAMES_SQL, []))
        self.assertEqual(got, expected)
        return got

    def test_empty_and_manager_only(self) -> None:
        self.env.conn.execute("DELETE FROM agent")
        self.assertEqual(self.same(), [])
        self.env.add_agents(1)
        self.env.conn.execute("DELETE FROM agent WHERE id != 0")
        self.same()

    def test_statuses_nodes_and_nulls(self) -> None:
        self.env.add_agents(60)
        statuses = ["active", "disconnected", "pending", "never_connected"]
        nodes: list[str | None] = ["w2", "master-node", None, "w1", "", "unknown", "w10"]
        for i in range(1, 61):
            self.env.set([i], connection_status=statuses[i % 4], node_name=nodes[i % 7])
        names = self.same()
        self.assertEqual(set(names), {"w2", "master-node", "", "w1", "unknown", "w10"})
        # a status whose agents all lack a node name, and one with a single agent
        self.env.set(range(1, 61), node_name=None)
        self.env.set([7], connection_status="pending", node_name="zeta")
        self.assertEqual(sorted(self.same()), ["", "unknown", "zeta"])  # 000: unknown

    def test_walks_the_index(self) -> None:
        """No step of the plan scans the agent table or the whole index."""
        plan = self.env.conn.execute("EXPLAIN QUERY PLAN " + NODE_NAMES_SQL).fetchall()
        details = [str(row[-1]) for row in plan]
        self.assertFalse([d for d in details if d.startswith("SCAN agent")], details)
        self.assertTrue([d for d in details if "agent_status_node" in d], details)
