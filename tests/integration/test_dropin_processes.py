"""Drop-in mode between real processes: a master and a worker configured with
``agent_db: {backend: wazuh-db}`` use the wazuh-db of their "manager" (a stand-in wazuh-db
serving each home's ``queue/db/wdb`` from this test process) for client.keys, agent-info and
agent-groups, and never open a database of their own.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.trial.unittest import TestCase

from tests.agents.wdb_standin import StandInBackend, StandInFactory
from tests.integration.harness import Cluster, NodeProcess
from wazuhcluster.agents.db import AgentDatabase, Keepalive, database_path
from wazuhcluster.agents.keys import KeyEntry, format_client_keys

TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"sync_agent_info": 1, "agent_groups_mismatch_limit": 2},
        "master": {"sync_agent_groups": 1, "agent_group_start_delay": 1},
    },
}


class DropInProcessTests(TestCase):
    """Master and worker over stand-in wazuh-dbs."""

    timeout = 90

    async def serve_wazuh_db(self, node: NodeProcess) -> StandInBackend:
        """Give ``node`` a wazuh-db: its own global.db outside the home, on queue/db/wdb."""
        with open(os.path.join(node.home, "etc", "wazuhcluster.yaml"), "w") as f:
            f.write("agent_db:\n  backend: wazuh-db\n  socket: queue/db/wdb\n")
        entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in (1, 2, 3)]
        with open(os.path.join(node.home, "etc", "client.keys"), "w") as f:
            f.write(format_client_keys(entries))
        db = AgentDatabase(os.path.join(node.home, "wazuh-db-standin", "global.db"),
                           int(reactor.seconds()) - 1000)
        self.addCleanup(db.close)
        backend = StandInBackend(db, reactor)
        directory = os.path.join(node.home, "queue", "db")
        os.makedirs(directory, exist_ok=True)
        port = await UNIXServerEndpoint(reactor, os.path.join(directory, "wdb")).listen(
            StandInFactory(backend))
        self.addCleanup(port.stopListening)
        return backend

    async def test_agents_through_wazuh_db(self) -> None:
        c = Cluster(self)
        master = c.add_node("master", "master", tunables=TUNABLES)
        worker = c.add_node("w1", tunables=TUNABLES)
        mwdb = await self.serve_wazuh_db(master)
        wwdb = await self.serve_wazuh_db(worker)
        master.start()
        await c.wait_ready(master)
        worker.start()
        await c.wait_listed(master, {"master", "w1"})

        def known(backend: StandInBackend) -> bool:
            return [a.agent_id for a in backend.db.list_agents()] == [0, 1, 2, 3]
        await c.wait_for("client.keys to reach both wazuh-dbs", lambda: known(mwdb) and
                         known(wwdb))
        self.assertIn("global insert-agent", " ".join(mwdb.commands))

        # remoted on the worker records keepalives in its wazuh-db; the cluster carries them
        now = int(reactor.seconds())
        wwdb.db.record_keepalives([Keepalive(i, "w1", now, "Ubuntu", "22.04", "v4.7.5")
                                   for i in (1, 3)])

        def master_has_keepalives() -> bool:
            rows = [mwdb.db.agent_row(i) for i in (1, 3)]
            return all(r is not None and (r["node_name"], r["last_keepalive"], r["version"])
                       == ("w1", now, "v4.7.5") for r in rows)
        await c.wait_for("agent-info to reach the master's wazuh-db", master_has_keepalives)
        self.assertIn("global sync-agent-info-get ", wwdb.commands)
        self.assertTrue(any(cmd.startswith("global sync-agent-info-set [")
                            for cmd in mwdb.commands))

        # a group assigned on the master's wazuh-db reaches the worker's
        mwdb.db.set_agent_groups([(2, ["web", "db"])], "override", "syncreq")

        def worker_has_groups() -> bool:
            return wwdb.db.list_agents()[2].groups == ("web", "db")
        await c.wait_for("the group assignment to reach the worker's wazuh-db",
                         worker_has_groups)
        self.assertIn('global sync-agent-groups-get {"condition": "sync_status", "set_synced": '
                      'true, "get_global_hash": true}', mwdb.commands)
        self.assertTrue(any(cmd.startswith('global set-agent-groups {"mode": "override"')
                            for cmd in wwdb.commands))
        for node in (master, worker):  # the node opened no database file of its own
            self.assertFalse(os.path.exists(database_path(node.home)))
            self.assertFalse(os.path.exists(os.path.join(node.home, "queue", "db",
                                                         "global.db")))
