"""DELETE /agents (the DAPI's delete_agents) goes through the registrar when the node runs one,
so client.keys has a single writer."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.support import DapiEnv
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.dapi.functions.agents import delete_agents
from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.registrar import Registrar, keys_path


class DapiRemovalTests(SynchronousTestCase):
    """delete_agents and the registrar."""

    def test_delete_through_registrar(self) -> None:
        """The registrar applies the removals (marked, purge off) and the rows go."""
        env = DapiEnv(self)
        env.add_agents(4)
        registrar = Registrar(env.home, AuthConfig(), SynchronousRunner(), env.db, env.clock)
        env.node.enrolment = SimpleNamespace(registrar=registrar)  # type: ignore[attr-defined]
        result = env.call(delete_agents, agent_list=["001", "003", "099"],
                          filters={"status": "all"}, purge=False)
        self.assertEqual(result.affected_items, ["001", "003"])
        self.assertEqual({e.code for e in result.failed_items}, {1701})
        lines = read_keys(keys_path(env.home))
        self.assertEqual([(ln.agent_id, ln.removed) for ln in lines],
                         [(1, True), (2, False), (3, True), (4, False)])
        ids = [a.agent_id for a in self.successResultOf(env.db.list_agents())]
        self.assertEqual(ids, [0, 2, 4])
