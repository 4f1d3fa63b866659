"""Functions that change shared state run only on the master; reads run anywhere."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.support import DapiEnv
from wazuhcluster.dapi.functions import agents, groups
from wazuhcluster.dapi.functions import ruleset as rs
from wazuhcluster.dapi.results import WazuhClusterError


class OnAWorker(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self, role="worker")
        self.env.add_agents(2)
        self.env.mkgroup("default", "web")

    def test_writes_refused(self) -> None:
        for f, kwargs in ((agents.delete_agents, {"agent_list": ["001"]}),
                          (groups.create_group, {"group_id": "g"}),
                          (groups.delete_groups, {"group_list": ["web"]}),
                          (groups.assign_agents_to_group, {"group_list": ["web"],
                                                           "agent_list": ["001"]}),
                          (groups.remove_agent_from_group, {"group_list": ["web"],
                                                            "agent_list": ["001"]}),
                          (groups.remove_agent_from_groups, {"agent_list": ["001"]}),
                          (rs.upload_rule_file, {"filename": "a.xml", "content": "<a/>"}),
                          (rs.delete_decoder_file, {"filename": "a.xml"}),
                          (rs.upload_list_file, {"filename": "l", "content": "a:b"}),
                          (rs.delete_list_file, {"filename": ["l"]})):
            exc = self.assertRaises(WazuhClusterError, self.env.call, f, **kwargs)
            self.assertEqual(exc.message, "Cluster: this function runs only on the master node")
        self.assertIn("001 agent1", self.env.read("etc/client.keys"))
        self.assertTrue(self.env.exists("etc/shared/web"))

    def test_reads_allowed(self) -> None:
        self.assertEqual(self.env.call(agents.get_agents).total_affected_items, 3)
        self.assertEqual(len(self.env.call(groups.get_agent_groups).affected_items), 2)
        self.assertEqual(self.env.call(rs.get_path_lists).total_affected_items, 0)
