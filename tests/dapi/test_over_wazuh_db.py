"""The DAPI's agent and group functions over the wazuh-db agent backend (drop-in mode): the
same tests as tests/dapi/test_agents.py, test_groups.py and test_roles.py, with a stand-in
wazuh-db answering ``global sql`` (parameters bound as literals), ``delete-agent`` and
``delete-group``."""

from __future__ import annotations

import tests.dapi.test_agents as agents
import tests.dapi.test_groups as groups
import tests.dapi.test_roles as roles


class OverviewOverWazuhDb(agents.Overview):
    backend = "wazuh-db"


class GetAgentsOverWazuhDb(agents.GetAgents):
    backend = "wazuh-db"


class SummariesOverWazuhDb(agents.Summaries):
    backend = "wazuh-db"


class KeysOverWazuhDb(agents.Keys):
    backend = "wazuh-db"


class DeleteOverWazuhDb(agents.Delete):
    backend = "wazuh-db"


class ListingOverWazuhDb(groups.Listing):
    backend = "wazuh-db"


class CreateDeleteOverWazuhDb(groups.CreateDelete):
    backend = "wazuh-db"


class AssignmentOverWazuhDb(groups.Assignment):
    backend = "wazuh-db"


class OnAWorkerOverWazuhDb(roles.OnAWorker):
    backend = "wazuh-db"


class BackendInUse(agents.Fixture):
    """These tests really go through wazuh-db commands."""

    backend = "wazuh-db"

    def test_queries_are_wazuh_db_commands(self) -> None:
        from wazuhcluster.agents.wazuhdb import WazuhDbAgentDatabase

        self.assertIsInstance(self.env.db, WazuhDbAgentDatabase)
        before = len(self.env.db.backend.commands)
        rows = self.successResultOf(self.env.db.select(
            "SELECT id, name FROM agent WHERE name = ? OR name = ? ORDER BY id",
            ("agent1", "it's ? not a placeholder")))
        self.assertEqual(rows, [{"id": 1, "name": "agent1"}])
        self.assertEqual(self.env.db.backend.commands[before:], [
            "global sql SELECT id, name FROM agent WHERE name = 'agent1' OR name = "
            "'it''s ? not a placeholder' ORDER BY id"])
