"""The REST API on three real ``twistd wazuhcluster`` processes (a master and two workers,
each serving HTTPS on a free 127.0.0.1 port): the same ``GET /agents`` at the master and at
a worker, a login at a worker checked by the master, and changes made through a worker's API
(an agent's group, a rule file) reaching every node."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.api.harness import ADMIN, READER, APIClient
from tests.integration.harness import BIN, Cluster, NodeProcess
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.api.users import UserStore

AGENTS = 30
TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"sync_agent_info": 1, "sync_integrity": 1},
        "master": {"sync_agent_groups": 1, "agent_group_start_delay": 1,
                   "recalculate_integrity": 1},
    },
}
RULE = ("<group name='api_test,'>\n  <rule id='100200' level='3'>\n"
        "    <description>added through a worker's API</description>\n  </rule>\n</group>\n")


def write_keys(node: NodeProcess) -> None:
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, AGENTS + 1)]
    with open(os.path.join(node.home, "etc", "client.keys"), "w", encoding="utf-8") as f:
        f.write(format_client_keys(entries))




class APIProcessTests(TestCase):
    timeout = 150

    async def test_master_alone(self) -> None:
        """One master process: login, agents, a group change and a rule file through HTTPS
        (answered by the master itself)."""
        c = Cluster(self)
        master = c.add_node("master", "master", tunables=TUNABLES)
        write_keys(master)
        UserStore(master.home).add(*ADMIN, role="administrator")
        master.start()
        await c.wait_ready(master)
        client = await self.client(c, master)
        token = await client.login()

        async def all_known() -> bool:
            r = await client.request("GET", "/agents?limit=500", token=token)
            return bool(r.status == 200 and
                        r.body["data"]["total_affected_items"] == AGENTS + 1)
        await c.wait_for("the master's agents through its API", all_known)
        r = await client.request("PUT", "/agents/003/group/default", token=token)
        self.assertEqual((r.status, r.body["data"]["affected_items"]), (200, ["003"]))
        r = await client.request("PUT", "/rules/files/api_rules.xml", token=token,
                                 data=RULE.encode(), content_type="application/octet-stream")
        self.assertEqual((r.status, r.body["error"]), (200, 0), r.body)
        with open(os.path.join(master.home, "etc", "rules", "api_rules.xml")) as f:
            self.assertEqual(f.read(), RULE)
        log = os.path.join(master.home, "logs", "api.log")
        with open(log, encoding="utf-8") as f:
            text = f.read()
        self.assertIn('admin 127.0.0.1 "PUT /rules/files/api_rules.xml"', text)
        self.assertNotIn(ADMIN[1], text)

    async def client(self, c: Cluster, node: NodeProcess) -> APIClient:
        client: APIClient = await c.api_client(node)
        return client

    async def groups_of(self, node: NodeProcess) -> dict[str, list[str]]:
        out, err, code = await getProcessOutputAndValue(
            os.path.join(BIN, "wazuhcluster-agents"), ["--home", node.home, "list", "--json"],
            env=dict(os.environ))
        self.assertEqual(code, 0, err)
        return {a["id"]: a["groups"] for a in json.loads(out)}

    async def test_same_answers_and_changes_reach_every_node(self) -> None:
        c = Cluster(self)
        master = c.add_node("master", "master", tunables=TUNABLES)
        write_keys(master)
        store = UserStore(master.home)
        store.add(*ADMIN, role="administrator")
        store.add(*READER, role="readonly")
        master.start()
        await c.wait_ready(master)
        workers = [c.add_node(name, tunables=TUNABLES) for name in ("worker1", "worker2")]
        for w in workers:
            write_keys(w)
            w.start()
        await c.wait_listed(master, {"master", "worker1", "worker2"})
        at_master = await self.client(c, master)
        at_w1, at_w2 = [await self.client(c, w) for w in workers]

        # Users live on the master only; a login at a worker is checked there.
        self.assertFalse(os.path.exists(os.path.join(workers[0].home, "api", "configuration",
                                                     "security", "users.json")))
        master_token = await at_master.login()
        w1_token = await at_w1.login()
        w2_token = await at_w2.login()
        r = await at_w1.request("POST", "/security/user/authenticate", auth=("admin", "bad"))
        self.assertEqual(r.status, 401)
        # A token is valid at the node that issued it only (each node signs its own).
        r = await at_w1.request("GET", "/agents", token=master_token)
        self.assertEqual(r.status, 401)

        async def agents(client: APIClient, token: str) -> list[dict[str, Any]]:
            r = await client.request("GET", "/agents?limit=500&sort=id&select=id,name,status",
                                     token=token)
            self.assertEqual(r.status, 200, r.body)
            return list(r.body["data"]["affected_items"])

        async def all_known() -> bool:
            return len(await agents(at_master, master_token)) == AGENTS + 1
        await c.wait_for("the master to know every agent", all_known)
        self.assertEqual(await agents(at_master, master_token), await agents(at_w1, w1_token))

        r = await at_w1.request("GET", "/cluster/nodes", token=w1_token)
        self.assertEqual(sorted(n["name"] for n in r.body["data"]["affected_items"]),
                         ["master", "worker1", "worker2"])
        r = await at_w2.request("GET", "/cluster/healthcheck", token=w2_token)
        self.assertEqual(r.status, 200, r.body)

        # A readonly user is refused at a worker too.
        reader = await at_w2.login(READER)
        r = await at_w2.request("PUT", "/agents/007/group/default", token=reader)
        self.assertEqual((r.status, r.body["error"]), (403, 4000))

        # A group and an agent's group set through worker1 reach every node.
        r = await at_w1.request("POST", "/groups", token=w1_token,
                                data=b'{"group_id": "web"}', content_type="application/json")
        self.assertEqual(r.status, 200, r.body)
        r = await at_w1.request("PUT", "/agents/007/group/web", token=w1_token)
        self.assertEqual((r.status, r.body["data"]["affected_items"]), (200, ["007"]))
        for node in (master, *workers):
            async def has_group(node: NodeProcess = node) -> bool:
                return "web" in (await self.groups_of(node)).get("007", [])
            await c.wait_for(f"agent 007's group on {node.name}", has_group)

        # A rule file PUT at worker2 is written on the master and synced to every worker.
        r = await at_w2.request("PUT", "/rules/files/api_rules.xml", token=w2_token,
                                data=RULE.encode(), content_type="application/octet-stream")
        self.assertEqual((r.status, r.body["error"]), (200, 0), r.body)
        for node in (master, *workers):
            path = os.path.join(node.home, "etc", "rules", "api_rules.xml")

            def has_rule(path: str = path) -> bool:
                if not os.path.exists(path):
                    return False
                with open(path, encoding="utf-8") as f:
                    return f.read() == RULE
            await c.wait_for(f"the rule file on {node.name}", has_rule)
        r = await at_w1.request("GET", "/rules/files/api_rules.xml?raw=true", token=w1_token)
        self.assertEqual(r.body, RULE)
