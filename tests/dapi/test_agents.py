"""Native agent functions over the embedded agent database."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import raw
from tests.dapi.support import NOW, DapiEnv
from wazuhcluster.dapi.functions import ALL_FUNCTIONS
from wazuhcluster.dapi.functions.agents import (
    FUNCTIONS,
    delete_agents,
    get_agents,
    get_agents_keys,
    get_agents_overview,
    get_agents_summary_os,
    get_agents_summary_status,
)
from wazuhcluster.dapi.results import AffectedItemsWazuhResult, WazuhError, WazuhResult


class Registry(SynchronousTestCase):

    def test_names(self) -> None:
        for name in ("wazuh.core.agent.Agent.get_agents_overview", "wazuh.agent.get_agents",
                     "wazuh.agent.get_agents_summary_status", "wazuh.agent.get_agents_summary_os",
                     "wazuh.agent.get_agents_keys", "wazuh.agent.delete_agents"):
            self.assertIn(name, FUNCTIONS)
        for name in ("wazuh.agent.get_agent_groups", "wazuh.agent.get_agents_in_group",
                     "wazuh.agent.assign_agents_to_group", "wazuh.agent.remove_agent_from_group",
                     "wazuh.agent.remove_agent_from_groups", "wazuh.agent.create_group",
                     "wazuh.agent.delete_groups", "wazuh.rule.upload_rule_file",
                     "wazuh.decoder.delete_decoder_file", "wazuh.cdb_list.get_lists"):
            self.assertIn(name, ALL_FUNCTIONS)


class Fixture(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.env.add_agents(6)
        self.env.set([1, 2, 3], connection_status="active", node_name="master-node",
                     os_platform="ubuntu", version="Wazuh v4.7.5", last_keepalive=NOW - 10)
        self.env.set([4, 5], connection_status="disconnected", node_name="worker1",
                     os_platform="centos", version="Wazuh v4.7.4", last_keepalive=NOW - 86400 * 10,
                     group_config_status="synced")
        self.env.set([2], ip="10.0.0.2", name="web-2")


class Overview(Fixture):

    def test_cluster_control_listing(self) -> None:
        out = self.env.call(get_agents_overview, select=["id", "ip", "name", "status",
                                                         "node_name", "version"], limit=None)
        self.assertEqual(out["totalItems"], 7)
        self.assertEqual([i["id"] for i in out["items"]],
                         ["000", "001", "002", "003", "004", "005", "006"])
        self.assertEqual(out["items"][2], {"id": "002", "ip": "10.0.0.2", "name": "web-2",
                                           "status": "active", "node_name": "master-node",
                                           "version": "Wazuh v4.7.5"})
        # Agent 006 has no IP yet: the registration IP stands in ("any").
        self.assertEqual(out["items"][6]["ip"], "any")

    def test_filters_by_node_and_status(self) -> None:
        out = self.env.call(get_agents_overview, filters={"node_name": "worker1"}, select=["id"])
        self.assertEqual([i["id"] for i in out["items"]], ["004", "005"])
        out = self.env.call(get_agents_overview,
                            filters={"status": ["active", "never_connected"]}, select=["id"])
        self.assertEqual([i["id"] for i in out["items"]], ["000", "001", "002", "003", "006"])

    def test_cluster_control_filter_form(self) -> None:
        out = self.env.call(get_agents_overview, limit=None, select=["id"], filters={
            "status": "disconnected,never_connected", "node_name": "all"})
        self.assertEqual([i["id"] for i in out["items"]], ["004", "005", "006"])
        out = self.env.call(get_agents_overview, limit=None, select=["id"], filters={
            "status": "all", "node_name": "worker1"})
        self.assertEqual([i["id"] for i in out["items"]], ["004", "005"])

    def test_count_only(self) -> None:
        self.assertEqual(self.env.call(get_agents_overview, get_data=False), {"totalItems": 7})


class GetAgents(Fixture):

    def test_all_with_dates_and_nesting(self) -> None:
        result = self.env.call(get_agents)
        self.assertIsInstance(result, AffectedItemsWazuhResult)
        self.assertEqual(result.total_affected_items, 7)
        one = result.affected_items[1]
        self.assertEqual(one["os"], {"platform": "ubuntu"})
        self.assertEqual(one["lastKeepAlive"], datetime.fromtimestamp(NOW - 10, tz=UTC))
        self.assertNotIn("internal_key", one)
        self.assertNotIn("disconnection_time", one)
        body = result.render()
        self.assertEqual(body["message"], "All selected agents information was returned")
        self.assertEqual(body["error"], 0)

    def test_missing_agents_fail_with_1701(self) -> None:
        result = self.env.call(get_agents, agent_list=["001", "099", "5"])
        self.assertEqual([i["id"] for i in result.affected_items], ["001", "005"])
        body = result.render()
        self.assertEqual(body["error"], 2)
        self.assertEqual(body["message"], "Some agents information was not returned")
        self.assertEqual(body["data"]["failed_items"][0]["error"]["code"], 1701)
        self.assertEqual(body["data"]["failed_items"][0]["id"], ["099"])

    def test_only_missing(self) -> None:
        body = self.env.call(get_agents, agent_list=["077"]).render()
        self.assertEqual((body["error"], body["message"]), (1, "No agent information was returned"))

    def test_pagination_sort_select(self) -> None:
        result = self.env.call(get_agents, sort={"fields": ["name"], "order": "desc"},
                               select=["name"], offset=1, limit=2)
        self.assertEqual(result.total_affected_items, 7)
        names = [i["name"] for i in result.affected_items]
        self.assertEqual(names, ["localhost", "agent6"])
        result = self.env.call(get_agents, sort="-node_name,+id", select="node_name", limit=3)
        self.assertEqual([i["id"] for i in result.affected_items], ["004", "005", "000"])

    def test_q_search_and_older_than(self) -> None:
        ids = lambda r: [i["id"] for i in r.affected_items]  # noqa: E731
        self.assertEqual(ids(self.env.call(get_agents, q="os.platform=centos,name~web")),
                         ["002", "004", "005"])
        self.assertEqual(ids(self.env.call(get_agents, q="(status=active;id>001),id=004")),
                         ["002", "003", "004"])
        self.assertEqual(ids(self.env.call(get_agents, q="group=null;id!=000")),
                         ["001", "002", "003", "004", "005", "006"])
        self.assertEqual(ids(self.env.call(get_agents, search="web")), ["002"])
        self.assertEqual(len(ids(self.env.call(get_agents, search="-web"))), 6)
        self.assertEqual(ids(self.env.call(get_agents, filters={"older_than": "7d"})),
                         ["004", "005"])
        self.assertEqual(ids(self.env.call(get_agents, q="lastKeepAlive<1h")),
                         ["001", "002", "003"])
        self.assertEqual(ids(self.env.call(get_agents, filters={"version": "4.7.4"})),
                         ["004", "005"])

    def test_distinct(self) -> None:
        result = self.env.call(get_agents, select=["os.platform"], distinct=True)
        self.assertEqual(result.affected_items,
                         [{"os": {"platform": "centos"}}, {"os": {"platform": "ubuntu"}}])

    def test_bad_parameters(self) -> None:
        for kwargs, code in (({"select": ["nope"]}, 1724), ({"select": ["internal_key"]}, 1724),
                             ({"sort": "+nope"}, 1403), ({"q": "nope=1"}, 1408),
                             ({"q": "name=="}, 1409), ({"q": "name"}, 1407),
                             ({"limit": 0}, 1406), ({"limit": 100001}, 1405),
                             ({"offset": -1}, 1400), ({"q": "lastKeepAlive<yesterday"}, 1412)):
            exc = self.assertRaises(WazuhError, self.env.call, get_agents, **kwargs)
            self.assertEqual(exc.code, code, kwargs)

    def test_injection_is_only_a_value(self) -> None:
        result = self.env.call(get_agents, q="name=x' OR 1=1 --")
        self.assertEqual(result.affected_items, [])
        result = self.env.call(get_agents, search="'; DROP TABLE agent; --")
        self.assertEqual(result.affected_items, [])
        exc = self.assertRaises(WazuhError, self.env.call, get_agents, q="name=x') OR 1=1 --")
        self.assertEqual(exc.code, 1407)
        self.assertEqual(self.env.call(get_agents).total_affected_items, 7)


class Summaries(Fixture):

    def test_status(self) -> None:
        result = self.env.call(get_agents_summary_status)
        self.assertIsInstance(result, WazuhResult)
        self.assertEqual(result.render(), {"data": {
            "connection": {"active": 3, "disconnected": 2, "never_connected": 1, "pending": 0,
                           "total": 6},
            "configuration": {"synced": 2, "not_synced": 4, "total": 6}}, "error": 0})
        partial = self.env.call(get_agents_summary_status, agent_list=["004"])
        self.assertEqual(partial["data"]["connection"]["total"], 1)
        empty = self.env.call(get_agents_summary_status, agent_list=[])
        self.assertEqual(empty["data"]["connection"]["total"], 0)

    def test_status_is_counted_by_the_database(self) -> None:
        """The database counts: the summary reads one row of counts, not one row per agent."""
        self.env.add_agents(66)  # 60 more agents, never connected, not synced
        returned: list[int] = []
        select = self.env.db.select

        def counting(sql: str, params: Any = ()) -> Any:
            d = select(sql, params)
            d.addCallback(lambda rows: (returned.append(len(rows)), rows)[1])
            return d
        self.patch(self.env.db, "select", counting)
        result = self.env.call(get_agents_summary_status)
        self.assertEqual(result["data"]["connection"]["total"], 66)
        self.assertEqual(result["data"]["connection"]["never_connected"], 61)
        self.assertEqual(result["data"]["configuration"]["not_synced"], 64)
        self.assertEqual(returned, [1])

    def test_os(self) -> None:
        result = self.env.call(get_agents_summary_os)
        self.assertEqual(result.affected_items, ["centos", "ubuntu"])
        self.assertEqual(result.render()["message"],
                         "Showing the operative system of all specified agents")
        self.assertEqual(self.env.call(get_agents_summary_os, agent_list=["001"]).affected_items,
                         ["ubuntu"])


class Keys(Fixture):

    def test_keys(self) -> None:
        result = self.env.call(get_agents_keys, agent_list=["002", "000", "042"])
        key = base64.b64decode(result.affected_items[0]["key"]).decode()
        self.assertEqual(key, f"002 web-2 any {2:064x}")
        codes = {e.code: sorted(i) for e, i in result.failed_items.items()}
        self.assertEqual(codes, {1703: ["000"], 1701: ["042"]})
        self.assertEqual(result.render()["message"], "Some agent keys were not obtained")
        everyone = self.env.call(get_agents_keys)
        self.assertEqual(everyone.total_affected_items, 6)
        self.assertEqual(everyone.total_failed_items, 0)


class Delete(Fixture):

    def test_delete_listed(self) -> None:
        result = self.env.call(delete_agents, agent_list=["001", "000", "099"],
                               filters={"status": "all"}, purge=True)
        self.assertEqual(result.affected_items, ["001"])
        self.assertEqual(result.render()["message"], "Some agents were not deleted")
        self.assertEqual({e.code for e in result.failed_items}, {1701, 1703})
        keys = self.env.read("etc/client.keys")
        self.assertNotIn("agent1 ", keys)
        self.assertIn("002 agent2", keys)
        self.assertEqual(self.env.call(get_agents, agent_list=["001"]).affected_items, [])

    def test_delete_keeps_removed_line_without_purge(self) -> None:
        self.env.call(delete_agents, agent_list=["003"])
        self.assertIn("003 !agent3 any", self.env.read("etc/client.keys"))
        self.assertEqual(self.env.call(get_agents).total_affected_items, 6)

    def test_filters_make_agents_ineligible(self) -> None:
        result = self.env.call(delete_agents, agent_list=["001", "004"],
                               filters={"older_than": "7d", "status": "all"})
        self.assertEqual(result.affected_items, ["004"])
        [(error, ids)] = result.failed_items.items()
        self.assertEqual((error.code, ids), (1731, {"001"}))
        self.assertEqual(error.message, "Agent is not eligible for the action to be performed: "
                         "some of the requirements are not met -> older_than: 7d, status: all")

    def test_delete_all_matching_drops_unasked_failures(self) -> None:
        result = self.env.call(delete_agents, filters={"node_name": "worker1"}, purge=True)
        self.assertEqual(result.affected_items, ["004", "005"])
        self.assertEqual(result.total_failed_items, 0)
        self.assertEqual(result.render()["message"], "All selected agents were deleted")
        self.assertTrue(os.path.exists(os.path.join(self.env.home, "etc", "client.keys")))


class PageReader(Fixture):
    """Agent pages read as one job with rows formatted from SQLite's tuples give exactly the
    items (keys, values, key order) of the dict path that the wazuh-db backend takes."""

    def setUp(self) -> None:
        super().setUp()
        self.env.set([1], group_="default,web", os_name="Ubuntu", os_major="22",
                     disconnection_time=0)
        self.env.set([4], disconnection_time=NOW - 5, os_uname="Linux |x|")
        # the manager's row without node name nor version: filled from the node's config
        self.env.set([0], node_name=None, version=None)

    def _both(self, **kwargs: object) -> tuple[list[dict[str, object]], int,
                                               list[dict[str, object]], int]:
        from wazuhcluster.dapi.functions import common
        from wazuhcluster.dapi.query import compile_agent_query
        from wazuhcluster.interfaces import IAgentPageReader
        self.assertTrue(IAgentPageReader.providedBy(self.env.db))
        query = compile_agent_query(now=NOW, **kwargs)  # type: ignore[arg-type]
        out: list[object] = []
        from twisted.internet.defer import Deferred
        Deferred.fromCoroutine(common.run_agent_query(self.env.ctx, query)).addBoth(out.append)
        fast, fast_total = out[0]  # type: ignore[misc]
        db = raw(self.env.db)
        rows = db.select(query.sql, query.params)
        slow = common._format_rows(self.env.ctx, rows, query.select)
        return fast, fast_total, slow, db.count(query.count_sql, query.count_params)

    def assertSameItems(self, fast: list[dict[str, object]],
                        slow: list[dict[str, object]]) -> None:
        import json
        self.assertEqual(fast, slow)
        self.assertEqual(json.dumps(fast, default=str), json.dumps(slow, default=str))

    def test_every_column(self) -> None:
        fast, fast_total, slow, total = self._both(limit=500)
        self.assertSameItems(fast, slow)
        self.assertEqual((fast_total, len(fast)), (total, 7))
        manager = fast[0]
        self.assertEqual((manager["node_name"], manager["version"]),
                         ("master-node", "Wazuh v4.7.5"))
        self.assertEqual(fast[1]["group"], ["default", "web"])
        self.assertNotIn("disconnection_time", fast[1])
        self.assertIsInstance(fast[4]["disconnection_time"], datetime)
        self.assertEqual(fast[1]["os"]["name"], "Ubuntu")

    def test_select_sets_sort_and_pages(self) -> None:
        for kwargs in ({"select": ["name", "os.platform", "lastKeepAlive"], "limit": 3},
                       {"select": ["node_name", "version"], "offset": 0, "limit": 10},
                       {"select": ["version"], "sort": {"fields": ["name"], "order": "desc"}},
                       {"q": "status=active", "offset": 1, "limit": 2},
                       {"search": {"value": "agent", "negation": False}}):
            with self.subTest(kwargs=kwargs):
                fast, fast_total, slow, total = self._both(**kwargs)
                self.assertSameItems(fast, slow)
                self.assertEqual(fast_total, total)
