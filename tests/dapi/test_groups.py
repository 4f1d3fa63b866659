"""Native group functions: listing, members, create/delete, (un)assignment."""

from __future__ import annotations

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.support import DapiEnv
from wazuhcluster.dapi.functions.groups import (
    assign_agents_to_group,
    create_group,
    delete_groups,
    get_agent_groups,
    get_agents_in_group,
    remove_agent_from_group,
    remove_agent_from_groups,
)
from wazuhcluster.dapi.results import WazuhError, WazuhResourceNotFound


class Fixture(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.env.add_agents(4)
        self.env.mkgroup("default", "web", "db")
        self.env.write("etc/shared/web/agent.conf", "<agent_config/>\n")
        self.env.groups({1: ["default", "web"], 2: ["web"], 3: ["default"]})

    def groups_of(self, agent_id: int) -> list[str]:
        rows = self.env.conn.execute(
            "SELECT g.name FROM belongs b JOIN `group` g ON g.id = b.id_group"
            " WHERE b.id_agent = ? ORDER BY b.priority", (agent_id,)).fetchall()
        return [r[0] for r in rows]

    def sync_status(self, agent_id: int) -> str:
        return str(self.env.conn.execute("SELECT group_sync_status FROM agent WHERE id = ?",
                                         (agent_id,)).fetchone()[0])


class Listing(Fixture):

    def test_groups_with_counts_and_sums(self) -> None:
        result = self.env.call(get_agent_groups)
        conf_md5 = hashlib.md5(b"<agent_config/>\n").hexdigest()
        self.assertEqual(result.affected_items, [
            {"name": "db", "count": 0},
            {"name": "default", "count": 2},
            {"name": "web", "count": 2, "configSum": conf_md5}])
        self.assertEqual(result.render()["message"],
                         "All selected groups information was returned")

    def test_listed_unknown_group_fails(self) -> None:
        result = self.env.call(get_agent_groups, group_list=["web", "nope"])
        self.assertEqual([g["name"] for g in result.affected_items], ["web"])
        [(error, ids)] = result.failed_items.items()
        self.assertEqual((error.code, ids), (1710, {"nope"}))

    def test_sort_search_select_paginate(self) -> None:
        result = self.env.call(get_agent_groups, sort_by=["count"], sort_ascending=False,
                               select="count", limit=2)
        self.assertEqual(result.total_affected_items, 3)
        self.assertEqual([g["count"] for g in result.affected_items], [2, 2])
        self.assertEqual(set(result.affected_items[0]), {"name", "count"})
        result = self.env.call(get_agent_groups, search_text="de")
        self.assertEqual([g["name"] for g in result.affected_items], ["default"])
        result = self.env.call(get_agent_groups, q="count>0")
        self.assertEqual([g["name"] for g in result.affected_items], ["default", "web"])
        exc = self.assertRaises(WazuhError, self.env.call, get_agent_groups, sort_by=["x"])
        self.assertEqual(exc.code, 1403)
        exc = self.assertRaises(WazuhError, self.env.call, get_agent_groups, select=["x"])
        self.assertEqual(exc.code, 1724)

    def test_agents_in_group(self) -> None:
        result = self.env.call(get_agents_in_group, group_list=["web"], select=["name"])
        self.assertEqual(result.affected_items, [{"id": "001", "name": "agent1"},
                                                 {"id": "002", "name": "agent2"}])
        result = self.env.call(get_agents_in_group, group_list=["web"], q="id=002")
        self.assertEqual([a["id"] for a in result.affected_items], ["002"])
        exc = self.assertRaises(WazuhResourceNotFound, self.env.call, get_agents_in_group,
                                group_list=["nope"])
        self.assertEqual(exc.code, 1710)


class CreateDelete(Fixture):

    def test_create(self) -> None:
        self.env.write("etc/shared/agent-template.conf", "<agent_config>tpl</agent_config>\n")
        result = self.env.call(create_group, group_id="new_one")
        self.assertEqual(result.render(), {"message": "Group 'new_one' created.", "error": 0})
        self.assertEqual(self.env.read("etc/shared/new_one/agent.conf"),
                         "<agent_config>tpl</agent_config>\n")
        names = [g["name"] for g in self.env.call(get_agent_groups).affected_items]
        self.assertIn("new_one", names)

    def test_create_errors(self) -> None:
        self.env.write("etc/shared/afile", "x")
        for group_id, code in (("web", 1711), ("default", 1711), ("DEFAULT", 1711),
                               ("afile", 1713), ("../etc", 1722), ("a/b", 1722), ("", 1722),
                               ("x" * 256, 1722)):
            exc = self.assertRaises(WazuhError, self.env.call, create_group, group_id=group_id)
            self.assertEqual(exc.code, code, group_id)
        self.assertFalse(self.env.exists("etc/etc"))

    def test_delete(self) -> None:
        result = self.env.call(delete_groups, group_list=["web", "default", "nope"])
        self.assertEqual(result.affected_items, ["web"])
        self.assertEqual({e.code: i for e, i in result.failed_items.items()},
                         {1712: {"default"}, 1710: {"nope"}})
        self.assertEqual(result.render()["message"], "Some groups were not deleted")
        self.assertFalse(self.env.exists("etc/shared/web"))
        self.assertEqual(self.groups_of(1), ["default"])
        self.assertEqual(self.groups_of(2), ["default"])  # left without groups -> default
        self.assertEqual(self.sync_status(2), "syncreq")

    def test_delete_all_skips_default_silently(self) -> None:
        result = self.env.call(delete_groups)
        self.assertEqual(result.affected_items, ["db", "web"])
        self.assertEqual(result.total_failed_items, 0)
        self.assertTrue(self.env.exists("etc/shared/default"))


class Assignment(Fixture):

    def test_assign(self) -> None:
        result = self.env.call(assign_agents_to_group, group_list=["db"],
                               agent_list=["001", "004", "000", "009"])
        self.assertEqual(result.affected_items, ["001", "004"])
        self.assertEqual(result.render()["message"], "Some agents were not assigned to db")
        self.assertEqual({e.code: i for e, i in result.failed_items.items()},
                         {1703: {"000"}, 1701: {"009"}})
        self.assertEqual(self.groups_of(1), ["default", "web", "db"])
        self.assertEqual(self.sync_status(1), "syncreq")
        again = self.env.call(assign_agents_to_group, group_list=["db"], agent_list=["001"])
        self.assertEqual([e.code for e in again.failed_items], [1751])
        self.assertEqual(again.render()["message"], "No agents were assigned to db")

    def test_assign_replace(self) -> None:
        result = self.env.call(assign_agents_to_group, group_list=["db"],
                               agent_list=["001", "002"], replace=True, replace_list=["web"])
        self.assertEqual(result.affected_items, ["002"])
        self.assertEqual([e.code for e in result.failed_items], [1752])
        self.assertEqual(result.all_msg, "All selected agents were assigned to db and removed"
                                         " from the other groups")
        self.assertEqual(self.groups_of(2), ["db"])

    def test_assign_unknown_group(self) -> None:
        exc = self.assertRaises(WazuhResourceNotFound, self.env.call, assign_agents_to_group,
                                group_list=["nope"], agent_list=["001"])
        self.assertEqual(exc.code, 1710)

    def test_remove_from_group(self) -> None:
        out = self.env.call(remove_agent_from_group, group_list=["web"], agent_list=["002"])
        self.assertEqual(out["message"],
                         "Agent '002' removed from 'web'. Agent reassigned to group default.")
        self.assertEqual(self.groups_of(2), ["default"])
        out = self.env.call(remove_agent_from_group, group_list=["web"], agent_list=["001"])
        self.assertEqual(out["message"], "Agent '001' removed from 'web'.")
        for kwargs, code in (({"group_list": ["web"], "agent_list": ["099"]}, 1701),
                             ({"group_list": ["web"], "agent_list": ["000"]}, 1703),
                             ({"group_list": ["nope"], "agent_list": ["001"]}, 1710),
                             ({"group_list": ["db"], "agent_list": ["001"]}, 1734),
                             ({"group_list": ["default"], "agent_list": ["003"]}, 1745)):
            exc = self.assertRaises(WazuhError, self.env.call, remove_agent_from_group, **kwargs)
            self.assertEqual(exc.code, code, kwargs)

    def test_remove_from_groups(self) -> None:
        result = self.env.call(remove_agent_from_groups, agent_list=["001"],
                               group_list=["default", "web", "db", "nope"])
        # default is tried last: by then it is the agent's only group (1745).
        self.assertEqual(result.affected_items, ["web"])
        self.assertEqual({e.code: i for e, i in result.failed_items.items()},
                         {1734: {"db"}, 1710: {"nope"}, 1745: {"default"}})
        self.assertEqual(self.groups_of(1), ["default"])
        self.assertEqual(result.render()["message"],
                         "Specified agent was not removed from some groups")

    def test_remove_from_all_groups(self) -> None:
        result = self.env.call(remove_agent_from_groups, agent_list=["001"])
        self.assertEqual(result.affected_items, ["web"])
        self.assertEqual(result.total_failed_items, 0)
        self.assertEqual(self.groups_of(1), ["default"])
        exc = self.assertRaises(WazuhError, self.env.call, remove_agent_from_groups,
                                agent_list=["000"])
        self.assertEqual(exc.code, 1703)
        self.assertTrue(os.path.isdir(os.path.join(self.env.home, "etc", "shared", "web")))
