"""The Distributed API across real ``twistd wazuhcluster`` processes: a master and two
workers, agents reporting to w2. From w1: ``-a`` lists every agent with its node; requests
routed to the node owning an agent or named by ``node_id``; a broadcast merges the three
nodes' answers; a killed worker becomes a failed item; 50 concurrent requests all answer
while a 10 000-file integrity sync runs.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.harness import BIN, Cluster, NodeProcess
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.dapi.client import build_request, dapi_call
from wazuhcluster.dapi.results import AffectedItemsWazuhResult

AGENTS_CLI = os.path.join(BIN, "wazuhcluster-agents")
AGENTS = 20
TUNABLES: dict[str, Any] = {
    "intervals": {"worker": {"sync_agent_info": 1, "sync_integrity": 1},
                  "master": {"recalculate_integrity": 1}},
}


def write_keys(node: NodeProcess, count: int) -> None:
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, count + 1)]
    with open(os.path.join(node.home, "etc", "client.keys"), "w", encoding="utf-8") as f:
        f.write(format_client_keys(entries))


class DapiProcessTests(TestCase):
    timeout = 120

    async def start(self) -> tuple[Cluster, NodeProcess, NodeProcess, NodeProcess]:
        """Master, w1, w2; agents 1..20 report to w2 and the master knows it."""
        c = Cluster(self)
        master = c.add_node("master", "master", tunables=TUNABLES)
        write_keys(master, AGENTS)
        master.start()
        await c.wait_ready(master)
        w1, w2 = c.add_node("w1", tunables=TUNABLES), c.add_node("w2", tunables=TUNABLES)
        for w in (w1, w2):
            write_keys(w, AGENTS)
            w.start()
        await c.wait_listed(master, {"master", "w1", "w2"})
        out, err, code = await getProcessOutputAndValue(
            AGENTS_CLI, ["--home", w2.home, "keepalive", *map(str, range(1, AGENTS + 1)),
                         "--os-name", "Ubuntu", "--version", "Wazuh v4.7.5"],
            env=dict(os.environ))
        self.assertEqual(code, 0, (out + err).decode())

        async def on_w2() -> bool:
            agents = await self.overview(c, master)
            return sum(1 for a in agents if a.get("node_name") == "w2") == AGENTS
        await c.wait_for("the master to see every agent on w2", on_w2, timeout=30)
        return c, master, w1, w2

    async def overview(self, c: Cluster, node: NodeProcess) -> list[dict[str, Any]]:
        out, err, code = await c.control(node, "-a", "--json")
        self.assertEqual(code, 0, err)
        agents: list[dict[str, Any]] = json.loads(out)
        return agents

    async def dapi(self, c: Cluster, node: NodeProcess, function: str, kwargs: dict[str, Any],
                   request_type: str) -> dict[str, Any]:
        """``wazuhcluster-control --dapi`` on ``node``: the rendered answer."""
        out, err, code = await c.control(node, "--dapi", function, "--type", request_type,
                                         "--kwargs", json.dumps(kwargs))
        self.assertEqual(code, 0, err + out)
        answer: dict[str, Any] = json.loads(out)
        return answer

    async def test_routing_from_a_worker(self) -> None:
        c, master, w1, w2 = await self.start()
        pwned = [os.path.join(n.home, "pwned") for n in (master, w1, w2)]
        # -a from w1 lists every agent with its node (through the master's DAPI).
        agents = await self.overview(c, w1)
        by_id = {a["id"]: a for a in agents}
        self.assertEqual(len(by_id), AGENTS + 1)
        self.assertEqual(by_id["000"]["node_name"], "master")
        self.assertEqual({by_id[f"{i:03d}"]["node_name"] for i in range(1, AGENTS + 1)}, {"w2"})

        # node_id: w1 -> master -> w2 -> master -> w1.
        answer = await self.dapi(c, w1, "wazuh.cluster.get_node_wrapper", {"node_id": "w2"},
                                 "distributed_master")
        self.assertEqual(answer["data"]["affected_items"],
                         [{"node": "w2", "cluster": "wazuh", "type": "worker"}])

        # An agent of w2: the request runs on w2.
        answer = await self.dapi(c, w1, "wazuh.cluster.get_node_wrapper",
                                 {"agent_list": ["007"]}, "distributed_master")
        self.assertEqual([i["node"] for i in answer["data"]["affected_items"]], ["w2"])
        answer = await self.dapi(c, w1, "wazuh.agent.get_agents",
                                 {"agent_list": ["007", "999"], "select": ["id", "node_name"]},
                                 "distributed_master")
        self.assertEqual(answer["data"]["affected_items"], [{"id": "007", "node_name": "w2"}])
        self.assertEqual(answer["data"]["failed_items"][0]["error"]["code"], 1701)

        # Broadcast: three nodes answer, merged.
        answer = await self.dapi(c, w1, "wazuh.cluster.get_node_wrapper", {"node_list": "*"},
                                 "distributed_master")
        self.assertEqual(sorted(i["node"] for i in answer["data"]["affected_items"]),
                         ["master", "w1", "w2"])
        self.assertEqual(answer["data"]["total_affected_items"], 3)

        # A function that is not native runs nothing, and says so.
        _, err, code = await c.control(w1, "--dapi", "os.system", "--type",
                                       "distributed_master", "--kwargs",
                                       json.dumps({"command": f"touch {' '.join(pwned)}"}))
        self.assertEqual(code, 1)
        self.assertIn("Error 1000", err)
        self.assertIn("os.system", err)
        self.assertFalse([p for p in pwned if os.path.exists(p)])

        # A killed worker: a failed item, at once (no 200 s wait).
        await w2.stop(signal.SIGKILL)
        answer = await self.dapi(c, w1, "wazuh.cluster.get_node_wrapper",
                                 {"node_list": ["w1", "w2"]}, "distributed_master")
        self.assertEqual([i["node"] for i in answer["data"]["affected_items"]], ["w1"])
        [failed] = answer["data"]["failed_items"]
        self.assertEqual((failed["error"]["code"], failed["id"]), (3022, ["w2"]))

    async def test_concurrent_requests_during_big_sync(self) -> None:
        c, master, w1, w2 = await self.start()
        for i in range(10_000):
            path = os.path.join(master.home, "etc", "lists", "big", f"l{i // 500:02d}",
                                f"list-{i:05d}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(f"key{i}:value{i}\n")
        mark = w1.log_size()
        await c.wait_log(w1, r"\[Integrity sync\]", since=mark, timeout=30)

        async def one(i: int) -> AffectedItemsWazuhResult:
            request = build_request("wazuh.agent.get_agents",
                                    {"limit": 5, "offset": i % 10, "select": ["id"]})
            node = (w1, w2, master)[i % 3]
            result: AffectedItemsWazuhResult = await dapi_call(reactor, node.socket_path,
                                                               request, final_timeout=60)
            return result
        results = await gatherResults([defer_of(one(i)) for i in range(50)])
        self.assertEqual(len(results), 50)
        for i, result in enumerate(results):
            self.assertEqual(result.total_affected_items, AGENTS + 1)
            self.assertEqual(len(result.affected_items), 5)
            self.assertEqual(result.affected_items[0]["id"], f"{i % 10:03d}")

        def synced() -> bool:
            big = os.path.join(w1.home, "etc", "lists", "big")
            return os.path.isdir(big) and sum(len(f) for _, _, f in os.walk(big)) == 10_000
        await c.wait_for("w1 to receive the 10 000 files", synced, timeout=90)


def defer_of(coroutine: Any) -> Any:
    from twisted.internet.defer import Deferred
    return Deferred.fromCoroutine(coroutine)
