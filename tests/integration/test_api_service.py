"""The REST API service on a real HTTPS socket (127.0.0.1), driven with treq; the DAPI is a
fake running functions in-process. Every response is validated against the OpenAPI
document by the client."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.api.fakes import FakeDAPI
from tests.api.harness import ADMIN, READER, APIHarness
from tests.support import short_tempdir
from wazuhcluster.api import problems
from wazuhcluster.api.service import SPEC_PATH
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhResourceNotFound,
    WazuhResult,
)
from wazuhcluster.interfaces import IDistributedAPI

AGENT = {"id": "001", "name": "web1", "ip": "10.0.0.5", "status": "active",
         "node_name": "worker1", "group": ["default"], "version": "Wazuh v4.7.5",
         "os": {"name": "Ubuntu", "platform": "ubuntu", "version": "22.04"}}


def items(*affected: Any, msg: str = "All selected items were returned") -> Any:
    async def f(ctx: Any, **kwargs: Any) -> AffectedItemsWazuhResult:
        return AffectedItemsWazuhResult(affected_items=list(affected), all_msg=msg)
    return f


def plain(dikt: dict[str, Any]) -> Any:
    async def f(ctx: Any, **kwargs: Any) -> WazuhResult:
        return WazuhResult(dikt)
    return f


def raw_or_items(text: str) -> Any:
    async def f(ctx: Any, raw: bool = False, **kwargs: Any) -> Any:
        if raw:
            return WazuhResult({"message": text})
        return AffectedItemsWazuhResult(affected_items=[{"group": {"@name": "x"}}],
                                        all_msg="Selected file was returned")
    return f


FUNCTIONS = {
    "wazuh.cluster.get_node_wrapper": items({"name": "master-node", "type": "master",
                                             "version": "4.7.5", "ip": "127.0.0.1"}),
    "wazuh.cluster.read_config_wrapper": items({"name": "wazuh", "node_type": "master"}),
    "wazuh.cluster.get_status_json": plain({"data": {"enabled": "yes", "running": "yes"}}),
    "wazuh.cluster.get_nodes_info": items({"name": "master-node", "type": "master",
                                           "version": "4.7.5", "ip": "127.0.0.1"}),
    "wazuh.cluster.get_health_nodes": items({"info": {"name": "master-node"}}),
    "wazuh.cluster.get_node_ruleset_integrity": plain({"data": {"etc/rules/a.xml": "x"}}),
    "wazuh.cluster.get_ruleset_sync_status": items({"name": "worker1", "synced": True}),
    "wazuh.manager.get_status": items({"wazuh-clusterd": "running"}),
    "wazuh.manager.get_basic_info": items({"version": "v4.7.5"}),
    "wazuh.agent.get_agents": items(AGENT),
    "wazuh.agent.delete_agents": items("001"),
    "wazuh.agent.get_agents_summary_status": plain({"data": {
        "connection": {"active": 1, "disconnected": 0, "never_connected": 0, "pending": 0,
                       "total": 1},
        "configuration": {"synced": 1, "not_synced": 0, "total": 1}}}),
    "wazuh.agent.get_agents_summary_os": items("ubuntu"),
    "wazuh.agent.get_agents_keys": items({"id": "001", "key": "MDAxIHdlYjEgYW55IGtleQ=="}),
    "wazuh.agent.assign_agents_to_group": items("001"),
    "wazuh.agent.remove_agent_from_group": plain({"message": "Agent 001 removed from group web"}),
    "wazuh.agent.remove_agent_from_groups": items("web"),
    "wazuh.agent.remove_agents_from_group": items("001"),
    "wazuh.agent.get_agent_groups": items({"name": "default", "count": 1,
                                           "configSum": "ab", "mergedSum": "cd"}),
    "wazuh.agent.create_group": plain({"message": "Group 'web' created."}),
    "wazuh.agent.delete_groups": items("web"),
    "wazuh.agent.get_agents_in_group": items(AGENT),
    "wazuh.agent.get_group_files": items({"filename": "agent.conf", "hash": "ab"}),
    "wazuh.agent.get_agent_conf": plain({"data": {"total_affected_items": 1, "affected_items": [
        {"filters": {}, "config": {"localfile": []}}]}}),
    "wazuh.agent.upload_group_file": plain({"message": "Agent configuration was updated"}),
}
for _module, _singular, _list in (("wazuh.rule", "rule", "get_rules_files"),
                                  ("wazuh.decoder", "decoder", "get_decoders_files"),
                                  ("wazuh.cdb_list", "list", "get_path_lists")):
    FUNCTIONS[f"{_module}.{_list}"] = items({"filename": "local.xml",
                                             "relative_dirname": "etc/rules",
                                             "status": "enabled"})
    FUNCTIONS[f"{_module}.get_{_singular}_file"] = raw_or_items("<group name='x'/>")
    FUNCTIONS[f"{_module}.upload_{_singular}_file"] = items("etc/rules/local.xml")
    FUNCTIONS[f"{_module}.delete_{_singular}_file"] = items("etc/rules/local.xml")


class _Base(TestCase):
    timeout = 60

    async def start(self, **overrides: Any) -> Any:
        self.api = APIHarness(self, reactor, short_tempdir(self), **overrides)
        for name, f in FUNCTIONS.items():
            self.api.dapi.register(name, f)
        self.client = await self.api.start()
        return self.client


class AuthTests(_Base):
    """Logins, tokens, expiry, revocation, roles, lockout, request limits, api.log."""

    async def test_fake_dapi_provides_the_interface(self) -> None:
        """The fake used here is a complete IDistributedAPI."""
        await self.start()
        self.assertTrue(verifyObject(IDistributedAPI, self.api.dapi))
        self.assertIsInstance(self.api.dapi, FakeDAPI)

    async def test_https_certificate_made_at_first_start(self) -> None:
        """A self-signed key and certificate appear under api/configuration/ssl/."""
        await self.start()
        ssl = os.path.join(self.api.home, "api", "configuration", "ssl")
        self.assertEqual(sorted(os.listdir(ssl)), ["server.crt", "server.key"])
        self.assertEqual(os.stat(os.path.join(ssl, "server.key")).st_mode & 0o077, 0)

    async def test_login_json_and_raw(self) -> None:
        """Basic auth gives {"data": {"token"}, "error": 0}; raw=true the bare token."""
        c = await self.start()
        r = await c.request("POST", "/security/user/authenticate", auth=ADMIN)
        self.assertEqual((r.status, r.body["error"]), (200, 0))
        token = r.body["data"]["token"]
        r = await c.request("POST", "/security/user/authenticate?raw=true", auth=ADMIN)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.content_type.startswith("text/plain"))
        self.assertEqual(r.body.count("."), 2)
        me = await c.request("GET", "/security/users/me", token=token)
        self.assertEqual(me.body["data"]["affected_items"][0]["username"], "admin")
        self.assertEqual(self.api.dapi.last("wazuh.rbac.preprocessor.get_permissions")
                         ["request_type"], "local_master")

    async def test_login_through_a_wazuh_master_is_refused_clearly(self) -> None:
        """A real Wazuh 4.7.5 master answers get_permissions with {"roles": [...]} only: the
        login ended in "Unexpected error" (KeyError 'generation'); now it says why."""
        c = await self.start()

        async def wazuh_get_permissions(ctx: Any, **kwargs: Any) -> WazuhResult:
            return WazuhResult({"roles": []})
        self.api.dapi.register("wazuh.rbac.preprocessor.get_permissions",
                               wazuh_get_permissions)
        r = await c.request("POST", "/security/user/authenticate", auth=ADMIN)
        self.assertEqual((r.status, r.body["error"]), (500, 1000))
        self.assertIn("logins at a worker need a wazuhcluster master", r.body["detail"])
        # the status page's login form goes through the same check (it raised KeyError)
        try:
            await self.api.service.resource.login(*ADMIN, "127.0.0.1")
        except problems.Problem as e:
            self.assertIn("logins at a worker need a wazuhcluster master", str(e.detail))
        else:
            self.fail("a page login through a Wazuh master gave a token")

    async def test_bad_credentials_and_tokens(self) -> None:
        """Wrong password, no token, a garbage token: 401 with Wazuh's details."""
        c = await self.start()
        r = await c.request("POST", "/security/user/authenticate", auth=("admin", "nope"))
        self.assertEqual((r.status, r.body), (401, {"title": "Unauthorized",
                                                    "detail": "Invalid credentials"}))
        r = await c.request("POST", "/security/user/authenticate", auth=("ghost", "x"))
        self.assertEqual(r.status, 401)
        r = await c.request("GET", "/agents")
        self.assertEqual(r.body["detail"], "No authorization token provided")
        r = await c.request("GET", "/agents", token="a.b.c")
        self.assertEqual((r.status, r.body["detail"]), (401, "Invalid token"))

    async def test_token_expires(self) -> None:
        """A token stops working after auth_token_exp_timeout seconds of the API clock."""
        c = await self.start(auth_token_exp_timeout=60)
        token = await c.login()
        self.assertEqual((await c.request("GET", "/agents", token=token)).status, 200)
        self.api.clock.advance(59)
        self.assertEqual((await c.request("GET", "/agents", token=token)).status, 200)
        self.api.clock.advance(2)
        r = await c.request("GET", "/agents", token=token)
        self.assertEqual((r.status, r.body["detail"]), (401, "Invalid token"))

    async def test_logout_revokes_every_token_of_the_user(self) -> None:
        """DELETE /security/user/authenticate: the user's tokens stop working, others not."""
        c = await self.start()
        first, second = await c.login(), await c.login()
        reader = await c.login(READER)
        r = await c.request("DELETE", "/security/user/authenticate", token=first)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body["message"], "User admin was successfully logged out")
        for token in (first, second):
            self.assertEqual((await c.request("GET", "/agents", token=token)).status, 401)
        self.assertEqual((await c.request("GET", "/agents", token=reader)).status, 200)
        fresh = await c.login()
        self.assertEqual((await c.request("GET", "/agents", token=fresh)).status, 200)

    async def test_password_change_and_deleted_user_invalidate_tokens(self) -> None:
        """Tokens are checked against the master's users on every (uncached) request."""
        c = await self.start(cache_enabled=False)
        token = await c.login(READER)
        from wazuhcluster.api.users import UserStore

        UserStore(self.api.home).delete("reader")
        self.assertEqual((await c.request("GET", "/agents", token=token)).status, 401)

    async def test_readonly_cannot_change(self) -> None:
        """A readonly user reads (200) and gets Wazuh's 403 on any change."""
        c = await self.start()
        token = await c.login(READER)
        self.assertEqual((await c.request("GET", "/groups", token=token)).status, 200)
        r = await c.request("PUT", "/agents/001/group/web", token=token)
        self.assertEqual((r.status, r.body["error"], r.body["title"]),
                         (403, 4000, "Permission Denied"))
        r = await c.request("DELETE", "/groups?groups_list=web", token=token)
        self.assertEqual(r.status, 403)
        self.assertNotIn("wazuh.agent.assign_agents_to_group",
                         [x["function"] for x in self.api.dapi.calls])
        r = await c.request("DELETE", "/security/user/authenticate", token=token)
        self.assertEqual(r.status, 200)

    async def test_failed_logins_block_the_address(self) -> None:
        """After max_login_attempts failures the address gets 403/6000 until block_time
        has passed since the first failure."""
        c = await self.start(max_login_attempts=3, block_time=300)
        for _ in range(3):
            r = await c.request("POST", "/security/user/authenticate", auth=("admin", "bad"))
            self.assertEqual(r.status, 401)
        r = await c.request("POST", "/security/user/authenticate", auth=ADMIN)
        self.assertEqual((r.status, r.body["error"]), (403, 6000))
        self.api.clock.advance(299)
        r = await c.request("POST", "/security/user/authenticate", auth=ADMIN)
        self.assertEqual(r.status, 403)
        self.api.clock.advance(1)
        r = await c.request("POST", "/security/user/authenticate", auth=ADMIN)
        self.assertEqual(r.status, 200)

    async def test_max_request_per_minute(self) -> None:
        """Request number max+1 in a minute gets 429/6001; the next minute works again."""
        c = await self.start(max_request_per_minute=4)
        token = await c.login()
        for _ in range(3):
            self.assertEqual((await c.request("GET", "/agents", token=token)).status, 200)
        r = await c.request("GET", "/agents", token=token)
        self.assertEqual((r.status, r.body["error"], r.body["title"]),
                         (429, 6001, "Too Many Requests"))
        self.api.clock.advance(61)
        self.assertEqual((await c.request("GET", "/agents", token=token)).status, 200)

    async def test_api_log_lines_without_secrets(self) -> None:
        """Every request is one api.log line with user, address, method, path and status;
        no password and no token appear."""
        c = await self.start()
        token = await c.login()
        await c.request("GET", "/agents?limit=5", token=token)
        await c.request("POST", "/security/user/authenticate", auth=("admin", "Wr0ng-pass!"))
        text = self.api.api_log()
        self.assertRegex(text, r'INFO: admin 127\.0\.0\.1 "GET /agents" with parameters '
                               r'\{"limit": "5"\} done in \d+\.\d{3}s: 200')
        self.assertIn('"POST /security/user/authenticate"', text)
        self.assertIn(": 401", text)
        for secret in (ADMIN[1], "Wr0ng-pass!", token, token.split(".")[2]):
            self.assertNotIn(secret, text)


class EndpointTests(_Base):
    """Every endpoint: Wazuh's function, request type and f_kwargs; body validated."""

    async def test_every_endpoint_happy_path(self) -> None:
        c = await self.start()
        token = await c.login()
        calls: list[tuple[str, str, str, str, dict[str, Any] | None]] = [
            ("GET", "/", "", "", None),
            ("GET", "/cluster/status", "wazuh.cluster.get_status_json", "local_master", {}),
            ("GET", "/cluster/local/info", "wazuh.cluster.get_node_wrapper", "local_any", {}),
            ("GET", "/cluster/local/config", "wazuh.cluster.read_config_wrapper",
             "local_any", {}),
            ("GET", "/cluster/nodes?nodes_list=master-node,worker1&type=worker&select=name,ip"
                    "&sort=-name&search=-work&offset=1&limit=2",
             "wazuh.cluster.get_nodes_info", "local_master",
             {"filter_node": ["master-node", "worker1"], "offset": 1, "limit": 2,
              "sort": {"fields": ["name"], "order": "desc"},
              "search": {"negation": True, "value": "work"}, "select": ["name", "ip"],
              "filter_type": "worker", "distinct": False}),
            ("GET", "/cluster/healthcheck?nodes_list=worker1", "wazuh.cluster.get_health_nodes",
             "local_master", {"filter_node": ["worker1"]}),
            ("GET", "/cluster/ruleset/synchronization", "wazuh.cluster.get_ruleset_sync_status",
             "distributed_master", {"node_list": "*",
                                    "master_md5": {"etc/rules/a.xml": "x"}}),
            ("GET", "/cluster/worker1/info", "wazuh.manager.get_basic_info",
             "distributed_master", {"node_id": "worker1"}),
            ("GET", "/cluster/worker1/status", "wazuh.manager.get_status",
             "distributed_master", {"node_id": "worker1"}),
            ("GET", "/agents?agents_list=001,002&status=active&node_name=worker1&group=default"
                    "&name=web1&ip=10.0.0.5&os.platform=ubuntu&version=4.7.5&older_than=1d"
                    "&select=id,name&sort=+name&search=web&q=status%3Dactive;name~web,id!%3D000"
                    "&offset=0&limit=500",
             "wazuh.agent.get_agents", "local_master",
             {"agent_list": ["001", "002"], "offset": 0, "limit": 500,
              "sort": {"fields": ["name"], "order": "asc"},
              "search": {"negation": False, "value": "web"}, "select": ["id", "name"],
              "filters": {"status": ["active"], "older_than": "1d", "version": "4.7.5",
                          "group": "default", "node_name": "worker1", "name": "web1",
                          "ip": "10.0.0.5", "os.platform": "ubuntu"},
              "q": "status=active;name~web,id!=000", "distinct": False}),
            ("DELETE", "/agents?agents_list=all&status=all&older_than=7d",
             "wazuh.agent.delete_agents", "local_master",
             {"purge": False, "filters": {"status": ["all"], "older_than": "7d"}}),
            ("GET", "/agents/summary/status", "wazuh.agent.get_agents_summary_status",
             "local_master", {}),
            ("GET", "/agents/summary/os", "wazuh.agent.get_agents_summary_os",
             "local_master", {}),
            ("GET", "/agents/no_group?q=name%3Dweb1", "wazuh.agent.get_agents", "local_master",
             {"offset": 0, "limit": 500, "q": "id!=000;group=null;name=web1"}),
            ("GET", "/agents/001/key", "wazuh.agent.get_agents_keys", "local_master",
             {"agent_list": ["001"]}),
            ("PUT", "/agents/001/group/web?force_single_group=true",
             "wazuh.agent.assign_agents_to_group", "local_master",
             {"agent_list": ["001"], "group_list": ["web"], "replace": True}),
            ("DELETE", "/agents/001/group/web", "wazuh.agent.remove_agent_from_group",
             "local_master", {"agent_list": ["001"], "group_list": ["web"]}),
            ("DELETE", "/agents/001/group?groups_list=web,db",
             "wazuh.agent.remove_agent_from_groups", "local_master",
             {"agent_list": ["001"], "group_list": ["web", "db"]}),
            ("PUT", "/agents/group?group_id=web&agents_list=001,002",
             "wazuh.agent.assign_agents_to_group", "local_master",
             {"agent_list": ["001", "002"], "group_list": ["web"], "replace": False}),
            ("DELETE", "/agents/group?group_id=web&agents_list=001",
             "wazuh.agent.remove_agents_from_group", "local_master",
             {"agent_list": ["001"], "group_list": ["web"]}),
            ("GET", "/groups?groups_list=default&sort=-name&search=def",
             "wazuh.agent.get_agent_groups", "local_master",
             {"offset": 0, "group_list": ["default"], "sort_by": ["name"],
              "sort_ascending": False, "search_text": "def", "complementary_search": False,
              "hash_algorithm": "md5", "distinct": False}),
            ("DELETE", "/groups?groups_list=web", "wazuh.agent.delete_groups", "local_master",
             {"group_list": ["web"]}),
            ("GET", "/groups/default/agents?status=active", "wazuh.agent.get_agents_in_group",
             "local_master", {"group_list": ["default"], "offset": 0, "limit": 500,
                              "filters": {"status": ["active"]}, "distinct": False}),
            ("GET", "/groups/default/files?hash=sha256", "wazuh.agent.get_group_files",
             "local_master", {"group_list": ["default"], "offset": 0, "sort_by": ["filename"],
                              "sort_ascending": True, "hash_algorithm": "sha256",
                              "distinct": False}),
            ("GET", "/groups/default/configuration", "wazuh.agent.get_agent_conf",
             "local_master", {"group_list": ["default"], "offset": 0, "limit": 500}),
            ("GET", "/rules/files?status=enabled", "wazuh.rule.get_rules_files", "local_any",
             {"offset": 0, "limit": 500, "sort_by": ["filename"], "sort_ascending": True,
              "status": "enabled", "distinct": False}),
            ("GET", "/rules/files/local_rules.xml", "wazuh.rule.get_rule_file", "local_master",
             {"filename": "local_rules.xml", "raw": False}),
            ("DELETE", "/rules/files/local_rules.xml", "wazuh.rule.delete_rule_file",
             "local_master", {"filename": "local_rules.xml"}),
            ("GET", "/decoders/files", "wazuh.decoder.get_decoders_files", "local_any",
             {"offset": 0, "limit": 500, "sort_by": ["filename"], "sort_ascending": True,
              "distinct": False}),
            ("GET", "/decoders/files/local_decoder.xml?relative_dirname=etc/decoders",
             "wazuh.decoder.get_decoder_file", "local_master",
             {"filename": "local_decoder.xml", "raw": False,
              "relative_dirname": "etc/decoders"}),
            ("DELETE", "/decoders/files/local_decoder.xml", "wazuh.decoder.delete_decoder_file",
             "local_master", {"filename": "local_decoder.xml"}),
            ("GET", "/lists/files", "wazuh.cdb_list.get_path_lists", "local_master",
             {"offset": 0, "limit": 500, "sort_by": ["filename"], "sort_ascending": True}),
            ("GET", "/lists/files/audit-keys", "wazuh.cdb_list.get_list_file", "local_master",
             {"filename": "audit-keys", "raw": False}),
            ("DELETE", "/lists/files/audit-keys", "wazuh.cdb_list.delete_list_file",
             "local_master", {"filename": "audit-keys"}),
            ("GET", "/security/users/me", "wazuh.security.get_user_me", "local_master",
             {"username": "admin"}),
        ]
        for method, path, function, request_type, kwargs in calls:
            r = await c.request(method, path, token=token)
            self.assertEqual(r.status, 200, f"{method} {path}: {r.body}")
            if not function:
                continue
            call = self.api.dapi.last(function)
            self.assertEqual(call["request_type"], request_type, path)
            self.assertEqual(call["current_user"], "admin")
            if kwargs is not None:
                self.assertEqual(call["f_kwargs"], kwargs, f"{method} {path}")
        info = (await c.request("GET", "/", token=token)).body["data"]
        self.assertEqual((info["title"], info["api_version"]), ("Wazuh API REST", "4.7.5"))
        sync = self.api.dapi.last("wazuh.cluster.get_ruleset_sync_status")
        self.assertTrue(sync["broadcasting"])

    async def test_bodies(self) -> None:
        """POST /groups (JSON), PUT group configuration (XML), PUT rule/decoder/list files
        (octet-stream) with overwrite; wrong content type 406, empty body 400."""
        c = await self.start()
        token = await c.login()
        r = await c.request("POST", "/groups", token=token, data=b'{"group_id": "web"}',
                            content_type="application/json")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.api.dapi.last("wazuh.agent.create_group")["f_kwargs"],
                         {"group_id": "web"})
        xml = b"<agent_config><localfile/></agent_config>"
        r = await c.request("PUT", "/groups/web/configuration", token=token, data=xml,
                            content_type="application/xml")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.api.dapi.last("wazuh.agent.upload_group_file")["f_kwargs"],
                         {"group_list": ["web"], "file_data": xml.decode()})
        rule = b"<group name='local,'><rule id='100001' level='5'/></group>"
        for path, function in (("/rules/files/local.xml?overwrite=true",
                                "wazuh.rule.upload_rule_file"),
                               ("/decoders/files/local.xml", "wazuh.decoder.upload_decoder_file"),
                               ("/lists/files/keys?overwrite=true",
                                "wazuh.cdb_list.upload_list_file")):
            r = await c.request("PUT", path, token=token, data=rule,
                                content_type="application/octet-stream")
            self.assertEqual(r.status, 200, path)
            kwargs = self.api.dapi.last(function)["f_kwargs"]
            self.assertEqual(kwargs["content"], rule.decode())
            self.assertEqual(kwargs["overwrite"], "overwrite=true" in path)
        r = await c.request("PUT", "/rules/files/local.xml", token=token, data=rule,
                            content_type="application/json")
        self.assertEqual((r.status, r.body["error"]), (406, 6002))
        r = await c.request("POST", "/groups", token=token, data=b"{no",
                            content_type="application/json")
        self.assertEqual((r.status, r.body["error"]), (400, 2005))
        r = await c.request("PUT", "/rules/files/local.xml", token=token, data=b"",
                            content_type="application/octet-stream")
        self.assertEqual(r.status, 400)

    async def test_raw_files(self) -> None:
        """raw=true answers the file itself (XML for rules/decoders, text for lists)."""
        c = await self.start()
        token = await c.login()
        r = await c.request("GET", "/rules/files/local.xml?raw=true", token=token)
        self.assertEqual((r.status, r.body), (200, "<group name='x'/>"))
        self.assertTrue(r.content_type.startswith("application/xml"))
        r = await c.request("GET", "/lists/files/keys?raw=true", token=token)
        self.assertTrue(r.content_type.startswith("text/plain"))

    async def test_parameter_errors(self) -> None:
        """Unknown parameters, bad types, bad formats and missing required parameters are
        400 before any function runs; unknown paths 404; wrong methods 405."""
        c = await self.start()
        token = await c.login()
        def framework_calls() -> list[str]:
            return [x["function"] for x in self.api.dapi.calls
                    if x["function"].startswith("wazuh.") and "security" not in x["function"]
                    and "rbac" not in x["function"]]

        for path in ("/agents?bogus=1", "/agents?limit=0", "/agents?limit=abc",
                     "/agents?limit=100001", "/agents?offset=-1", "/agents?agents_list=1",
                     "/agents?status=sleeping", "/agents?q=status", "/agents?pretty=maybe",
                     "/agents/1/key", "/agents/abc/key", "/groups/..%2F..%2Fetc/files",
                     "/agents?sort=na;me", "/agents?search=a|b"):
            r = await c.request("GET", path, token=token)
            self.assertEqual(r.status, 400, f"{path}: {r.body}")
            self.assertEqual(r.body["title"], "Bad Request", path)
        r = await c.request("DELETE", "/agents?status=all", token=token)
        self.assertEqual(r.status, 400)
        self.assertIn("agents_list", r.body["detail"])
        r = await c.request("PUT", "/agents/group?agents_list=001", token=token)
        self.assertEqual(r.status, 400)
        self.assertEqual(framework_calls(), [])
        r = await c.request("GET", "/nothing/here", token=token, check=False)
        self.assertEqual(r.status, 404)
        self.assertEqual(json.loads(r.raw)["title"], "Not Found")
        r = await c.request("POST", "/agents/summary/status", token=token, check=False)
        self.assertEqual(r.status, 405)

    async def test_wazuh_exceptions_become_problem_bodies(self) -> None:
        """A WazuhException becomes Wazuh's problem body and status; failed items stay in
        the envelope with error 1 or 2."""
        c = await self.start()
        token = await c.login()

        async def missing(ctx: Any, **kwargs: Any) -> Any:
            raise WazuhResourceNotFound(1710, dapi_errors={"master-node": {"error": "x"}})

        async def bad(ctx: Any, **kwargs: Any) -> Any:
            raise WazuhError(1413, "local.xml")

        async def partial(ctx: Any, **kwargs: Any) -> Any:
            result = AffectedItemsWazuhResult(affected_items=["001"],
                                              some_msg="Some agents were not assigned")
            result.add_failed_item("999", WazuhResourceNotFound(1701))
            return result

        self.api.dapi.register("wazuh.agent.get_agents_in_group", missing)
        self.api.dapi.register("wazuh.rule.get_rule_file", bad)
        self.api.dapi.register("wazuh.agent.assign_agents_to_group", partial)
        r = await c.request("GET", "/groups/nope/agents", token=token)
        self.assertEqual((r.status, r.body["error"], r.body["title"]),
                         (404, 1710, "Resource Not Found"))
        self.assertEqual(r.body["dapi_errors"], {"master-node": {"error": "x"}})
        r = await c.request("GET", "/rules/files/local.xml", token=token)
        self.assertEqual((r.status, r.body["error"]), (400, 1413))
        r = await c.request("PUT", "/agents/group?group_id=web&agents_list=001,999",
                            token=token)
        self.assertEqual((r.status, r.body["error"]), (200, 2))
        failed = r.body["data"]["failed_items"]
        self.assertEqual((failed[0]["error"]["code"], failed[0]["id"]), (1701, ["999"]))

    async def test_spec_served_and_pretty(self) -> None:
        """GET /api/spec serves the shipped document; pretty=true indents JSON."""
        c = await self.start()
        r = await c.request("GET", "/api/spec")
        with open(SPEC_PATH, encoding="utf-8") as f:
            self.assertEqual(r.body, f.read())
        token = await c.login()
        r = await c.request("GET", "/agents/summary/status?pretty=true", token=token)
        self.assertIn(b'\n   "data": {', r.raw)

    async def test_json_bodies_encoded_off_the_reactor(self) -> None:
        """A JSON answer is encoded by the node's runner (a thread in a node), not inline in
        the reactor thread: 500 agents are milliseconds of CPU."""
        c = await self.start()
        token = await c.login()
        del self.api.node.ran[:]
        r = await c.request("GET", "/agents/summary/status", token=token)
        self.assertEqual(r.status, 200)
        self.assertIn("_dumps", self.api.node.ran)

    async def test_oversized_body_refused(self) -> None:
        """A body larger than max_upload_size gets 413 and is not passed on."""
        c = await self.start(max_upload_size=1000)
        token = await c.login()
        r = await c.request("PUT", "/rules/files/big.xml", token=token, data=b"x" * 5000,
                            content_type="application/octet-stream")
        self.assertEqual(r.status, 413)
        self.assertNotIn("wazuh.rule.upload_rule_file",
                         [x["function"] for x in self.api.dapi.calls])

    async def test_plain_http_when_https_disabled(self) -> None:
        """https.enabled false: plain HTTP, no certificate made."""
        c = await self.start(https=False)
        self.assertTrue(c.base.startswith("http://"))
        token = await c.login()
        self.assertEqual((await c.request("GET", "/agents", token=token)).status, 200)
        self.assertFalse(os.path.exists(os.path.join(self.api.home, "api", "configuration",
                                                     "ssl")))
