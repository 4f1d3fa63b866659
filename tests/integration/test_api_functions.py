"""The REST API over the native agent, group and ruleset functions (one node, real HTTPS
listener, in-process DAPI): Wazuh's envelopes from real data, validated against the
OpenAPI document."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.api.harness import APIHarness
from tests.dapi.support import DapiEnv
from tests.support import short_tempdir
from wazuhcluster.dapi.functions import ALL_FUNCTIONS


class RealFunctionTests(TestCase):
    timeout = 60

    async def start(self) -> Any:
        self.env = DapiEnv(self)  # type: ignore[arg-type]
        self.env.add_agents(3, connection_status="active", node_name="master-node",
                            os_platform="ubuntu", version="Wazuh v4.7.5")
        self.env.mkgroup("default", "web")
        self.env.groups({1: ["default"], 2: ["default", "web"]})
        self.env.write("etc/rules/local_rules.xml", "<group name='local,'>\n</group>\n")
        self.env.write("etc/decoders/local_decoder.xml", "<decoder name='x'/>\n")
        self.env.write("etc/lists/audit-keys", "a:b\n")
        self.env.write("etc/shared/ar.conf", "restart-ossec0 - restart.sh - 0\n")
        self.api = APIHarness(self, reactor, short_tempdir(self), env=self.env)
        for name, f in ALL_FUNCTIONS.items():
            self.api.dapi.register(name, f)
        self.client = await self.api.start()
        self.token = await self.client.login()
        return self.client

    async def get(self, path: str) -> Any:
        r = await self.client.request("GET", path, token=self.token)
        self.assertEqual(r.status, 200, f"{path}: {r.body}")
        return r.body

    async def test_agents(self) -> None:
        await self.start()
        body = await self.get("/agents?sort=-id&select=name,status")
        ids = [a["id"] for a in body["data"]["affected_items"]]
        self.assertEqual(ids[:3], ["003", "002", "001"])
        self.assertEqual(body["error"], 0)
        body = await self.get("/agents?q=id!%3D000;name%3Dagent2")
        self.assertEqual([a["name"] for a in body["data"]["affected_items"]], ["agent2"])
        body = await self.get("/agents?agents_list=001,999")
        self.assertEqual((body["error"], body["data"]["failed_items"][0]["error"]["code"]),
                         (2, 1701))
        await self.get("/agents/summary/status")
        await self.get("/agents/summary/os")
        body = await self.get("/agents/no_group")
        self.assertEqual([a["id"] for a in body["data"]["affected_items"]], ["003"])
        body = await self.get("/agents/001/key")
        self.assertEqual(body["data"]["affected_items"][0]["id"], "001")

    async def test_groups(self) -> None:
        c = await self.start()
        body = await self.get("/groups")
        self.assertEqual({g["name"]: g["count"] for g in body["data"]["affected_items"]},
                         {"default": 2, "web": 1})
        r = await c.request("POST", "/groups", token=self.token, data=b'{"group_id": "db"}',
                            content_type="application/json")
        self.assertEqual(r.status, 200, r.body)
        r = await c.request("PUT", "/agents/003/group/db", token=self.token)
        self.assertEqual((r.status, r.body["data"]["affected_items"]), (200, ["003"]))
        body = await self.get("/groups/db/agents")
        self.assertEqual([a["id"] for a in body["data"]["affected_items"]], ["003"])
        r = await c.request("GET", "/groups/nothere/agents", token=self.token)
        self.assertEqual((r.status, r.body["error"]), (404, 1710))
        r = await c.request("DELETE", "/agents/002/group/web", token=self.token)
        self.assertEqual(r.status, 200, r.body)
        r = await c.request("DELETE", "/groups?groups_list=db", token=self.token)
        self.assertEqual(r.status, 200, r.body)

    async def test_group_files_and_configuration(self) -> None:
        c = await self.start()
        conf = (b"<agent_config os=\"Linux\">\n  <localfile>\n    <location>/var/log/x.log"
                b"</location>\n    <log_format>syslog</log_format>\n  </localfile>\n"
                b"</agent_config>\n")
        r = await c.request("PUT", "/groups/web/configuration", token=self.token, data=conf,
                            content_type="application/xml")
        self.assertEqual((r.status, r.body["message"]),
                         (200, "Agent configuration was updated successfully"))
        self.assertEqual(self.env.read("etc/shared/web/agent.conf"), conf.decode())
        body = await self.get("/groups/web/configuration")
        self.assertEqual(body["data"]["affected_items"], [
            {"filters": {"os": "Linux"}, "config": {"localfile": {
                "location": "/var/log/x.log", "log_format": "syslog"}}}])
        r = await c.request("PUT", "/groups/web/configuration", token=self.token,
                            data=b"<agent_config>", content_type="application/xml")
        self.assertEqual((r.status, r.body["error"]), (400, 1113))
        r = await c.request("GET", "/groups/nope/configuration", token=self.token)
        self.assertEqual((r.status, r.body["error"]), (404, 1710))
        body = await self.get("/groups/web/files?hash=sha256")
        files = {f["filename"]: f["hash"] for f in body["data"]["affected_items"]}
        import hashlib

        self.assertEqual(files["agent.conf"], hashlib.sha256(conf).hexdigest())
        self.assertEqual(files["ar.conf"], hashlib.sha256(b"restart-ossec0 - restart.sh - 0\n")
                         .hexdigest())
        r = await c.request("DELETE", "/agents/group?group_id=default&agents_list=001,002,999",
                            token=self.token)
        self.assertEqual((r.status, r.body["error"]), (200, 2), r.body)
        self.assertEqual(r.body["data"]["affected_items"], ["002"])  # 001 only had default
        codes = sorted(f["error"]["code"] for f in r.body["data"]["failed_items"])
        self.assertEqual(codes, [1701, 1745])
        r = await c.request("DELETE", "/agents/group?group_id=web&agents_list=all",
                            token=self.token)
        self.assertEqual((r.status, r.body["data"]["affected_items"]), (200, ["002"]), r.body)
        body = await self.get("/groups/web/agents")
        self.assertEqual(body["data"]["affected_items"], [])

    async def test_ruleset_files(self) -> None:
        c = await self.start()
        body = await self.get("/rules/files?filename=local_rules.xml")
        self.assertEqual(body["data"]["affected_items"][0]["filename"], "local_rules.xml")
        await self.get("/decoders/files")
        await self.get("/lists/files")
        r = await c.request("GET", "/rules/files/local_rules.xml?raw=true", token=self.token)
        self.assertEqual(r.body, "<group name='local,'>\n</group>\n")
        new = b"<group name='local,'>\n  <rule id='100001' level='3'>\n" \
              b"    <description>x</description>\n  </rule>\n</group>\n"
        r = await c.request("PUT", "/rules/files/local_rules.xml", token=self.token, data=new,
                            content_type="application/octet-stream")
        self.assertEqual((r.status, r.body["error"]), (200, 1))  # exists, no overwrite
        r = await c.request("PUT", "/rules/files/local_rules.xml?overwrite=true",
                            token=self.token, data=new,
                            content_type="application/octet-stream")
        self.assertEqual((r.status, r.body["error"]), (200, 0), r.body)
        self.assertEqual(self.env.read("etc/rules/local_rules.xml"), new.decode())
        r = await c.request("GET", "/lists/files/audit-keys?raw=true", token=self.token)
        self.assertEqual(r.body, "a:b\n")
        r = await c.request("DELETE", "/decoders/files/local_decoder.xml", token=self.token)
        self.assertEqual(r.status, 200, r.body)
        self.assertFalse(self.env.exists("etc/decoders/local_decoder.xml"))
