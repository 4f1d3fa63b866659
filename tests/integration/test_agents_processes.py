"""Agents across real ``twistd wazuhcluster`` processes: a master and three workers with
2 000 agents each, keepalives through ``wazuhcluster-agents``, agent-info sync to the master
(also across a SIGKILL of the master), group changes reaching every worker, and a diverged
worker converging through the full agent-groups resync.

The same ``etc/client.keys`` is written on every node before start: the tests do not depend on
integrity sync carrying it (it may, which changes nothing since the files are identical).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.harness import BIN, Cluster, NodeProcess
from wazuhcluster.agents.db import AgentDatabase, database_path
from wazuhcluster.agents.keys import KeyEntry, format_client_keys

AGENTS_CLI = os.path.join(BIN, "wazuhcluster-agents")
PER_WORKER = 2000
WORKERS = ("worker1", "worker2", "worker3")
TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"sync_agent_info": 1, "agent_groups_mismatch_limit": 2},
        "master": {"sync_agent_groups": 1, "agent_group_start_delay": 1},
    },
}


def agent_ids(worker_index: int) -> list[int]:
    """The agents reporting to the worker at ``worker_index``."""
    first = worker_index * PER_WORKER + 1
    return list(range(first, first + PER_WORKER))


def write_keys(node: NodeProcess, count: int) -> None:
    """Write client.keys with agents 1..count in ``node``'s home."""
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, count + 1)]
    with open(os.path.join(node.home, "etc", "client.keys"), "w", encoding="utf-8") as f:
        f.write(format_client_keys(entries))


class AgentsProcessTests(TestCase):
    """A master and three workers exchanging agent data."""

    timeout = 120

    async def agents_cli(self, node: NodeProcess, *args: str) -> tuple[str, str, int]:
        """Run the real ``wazuhcluster-agents --home HOME *args``."""
        out, err, code = await getProcessOutputAndValue(
            AGENTS_CLI, ["--home", node.home, *args], env=dict(os.environ))
        return out.decode(), err.decode(), code

    async def listing(self, node: NodeProcess, *args: str) -> dict[str, dict[str, Any]]:
        """``wazuhcluster-agents list --json`` of ``node``, by agent id."""
        out, err, code = await self.agents_cli(node, "list", "--json", *args)
        self.assertEqual(code, 0, err)
        return {a["id"]: a for a in json.loads(out)}

    async def start(self) -> tuple[Cluster, NodeProcess, list[NodeProcess]]:
        """Start the cluster with 6 000 agents known everywhere."""
        c = Cluster(self)
        total = PER_WORKER * len(WORKERS)
        master = c.add_node("master", "master", tunables=TUNABLES)
        write_keys(master, total)
        master.start()
        await c.wait_ready(master)
        workers = [c.add_node(name, tunables=TUNABLES) for name in WORKERS]
        for w in workers:
            write_keys(w, total)
            w.start()
        for w in workers:  # on a loaded machine a worker may take most of WAIT to start
            await c.wait_ready(w)
        await c.wait_listed(master, {"master", *WORKERS})
        return c, master, workers

    async def keepalive_all(self, workers: list[NodeProcess], version: str) -> None:
        """Every worker records a keepalive of its 2 000 agents (one CLI call each)."""
        for index, w in enumerate(workers):
            out, err, code = await self.agents_cli(
                w, "keepalive", *map(str, agent_ids(index)), "--os-name", "Ubuntu",
                "--version", version)
            self.assertEqual(code, 0, err + out)

    async def wait_master_has(self, c: Cluster, master: NodeProcess,
                              workers: list[NodeProcess], version: str) -> None:
        """Wait until the master holds every agent's keepalive, version and node."""
        async def complete() -> bool:
            agents = await self.listing(master)
            for index, w in enumerate(workers):
                for i in agent_ids(index):
                    a = agents[f"{i:03d}"]
                    if (a["node_name"], a["version"], a["status"]) != (w.name, version,
                                                                       "active"):
                        return False
            return True
        await c.wait_for(f"the master to hold every agent's {version} keepalive", complete,
                         timeout=40)

    async def test_keepalives_reach_master_and_survive_master_kill(self) -> None:
        """Keepalives of 6 000 agents reach the master with their node; a master SIGKILLed
        during an agent-info sync and restarted loses no update; wazuhcluster-control -a on
        a worker shows the master's view; -i counts the active agents per worker."""
        c, master, workers = await self.start()
        await self.keepalive_all(workers, "v1")
        await self.wait_master_has(c, master, workers, "v1")

        out, err, code = await c.control(workers[1], "-a", "--json", "--node", "worker3")
        self.assertEqual(code, 0, err)
        shown = json.loads(out)
        self.assertEqual(len(shown), PER_WORKER)
        self.assertEqual({a["node_name"] for a in shown}, {"worker3"})
        out, err, code = await c.control(master, "-i", "--json")
        self.assertEqual(code, 0, err)
        health = json.loads(out)
        for name in WORKERS:
            self.assertEqual(health["nodes"][name]["info"]["n_active_agents"], PER_WORKER)
            self.assertNotEqual(
                health["nodes"][name]["status"]["last_sync_agentinfo"]["date_end_master"], "n/a")

        mark = master.log_size()
        await self.keepalive_all(workers, "v2")
        await c.wait_log(master, r"\[Agent-info sync\] Starting\.", since=mark)
        await master.stop(signal.SIGKILL)
        master.start()
        await c.wait_ready(master)
        await self.wait_master_has(c, master, workers, "v2")

    async def test_groups_reach_workers_and_diverged_worker_converges(self) -> None:
        """A group set on the master reaches every worker; a worker whose database was
        changed behind its back converges through the full agent-groups resync."""
        c, master, workers = await self.start()
        for agent in ("1", "2001", "4001"):
            _, err, code = await self.agents_cli(master, "set-group", agent, "default,web")
            self.assertEqual(code, 0, err)

        async def everywhere() -> bool:
            for w in workers:
                agents = await self.listing(w)
                if any(agents[i]["groups"] != ["default", "web"]
                       for i in ("001", "2001", "4001")):
                    return False
            return True
        await c.wait_for("the groups to reach every worker", everywhere)
        # merged.mg is written by the master's own check every 2 s, which a push to the
        # workers can beat: wait for it too (it races the push, it does not follow it).
        merged = os.path.join(master.home, "etc", "shared", "web", "merged.mg")
        await c.wait_for("merged.mg of group web on the master",
                         lambda: os.path.exists(merged))

        w2 = workers[1]
        mark = w2.log_size()
        rogue = AgentDatabase(database_path(w2.home), 0)  # behind the worker's back (WAL)
        try:
            rogue.set_agent_groups([(7, ["rogue"]), (2001, ["rogue"])])
        finally:
            rogue.close()
        await c.wait_log(w2, r"\[Agent-groups recv full\] Finished", since=mark, timeout=30)

        async def converged() -> bool:
            agents = await self.listing(w2)
            return (agents["007"]["groups"] == [] and
                    agents["2001"]["groups"] == ["default", "web"])
        await c.wait_for("worker2 to converge", converged)
        self.assertEqual(len(w2.grep(r"Sent request to obtain all agent-groups", since=mark)),
                         1)


