"""Enrolment through workers with real node processes on 127.0.0.1: sendsync to the master's
registrar, the key on every worker, waiting while the master is away, removal from a worker."""

from __future__ import annotations

import functools
import json
import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.harness import BIN, Cluster, NodeProcess, free_port
from tests.integration.test_enrolment_processes import start_simulation
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.keystore import KeyLine, read_keys
from wazuhcluster.enrolment.messages import encode_request

AGENTS_CLI = os.path.join(BIN, "wazuhcluster-agents")
WAIT = 30.0


def keys_of(node: NodeProcess) -> list[KeyLine]:
    return read_keys(os.path.join(node.home, "etc", "client.keys"))


async def cli(node: NodeProcess, *args: str) -> tuple[str, str, int]:
    out, err, code = await getProcessOutputAndValue(AGENTS_CLI, ["--home", node.home, *args],
                                                    env=dict(os.environ))
    return out.decode(), err.decode(), code


class WorkerEnrolmentTests(TestCase):
    """A master and two workers, each with its registration port."""

    timeout = 300

    async def start(self) -> tuple[Cluster, NodeProcess, NodeProcess, NodeProcess]:
        cluster = Cluster(self)
        self.ports = {n: free_port() for n in ("master", "w1", "w2")}
        master = cluster.add_node("master", "master", auth_port=self.ports["master"]).start()
        await cluster.wait_ready(master)
        workers = [cluster.add_node(n, auth_port=self.ports[n]).start() for n in ("w1", "w2")]
        await cluster.wait_listed(master, {"master", "w1", "w2"})
        return cluster, master, workers[0], workers[1]

    async def ask(self, node: str, name: str, **kwargs: Any) -> Any:
        return await enrol(reactor, "127.0.0.1", self.ports[node], encode_request(name, **kwargs),
                           timeout=120)

    async def test_enrol_at_worker(self) -> None:
        """Enrol at w1: the master's client.keys and database have it, w2 has the key within
        seconds; a duplicate name through a worker is refused; removal from a worker's home
        reaches every worker."""
        cluster, master, w1, w2 = await self.start()
        answer = await self.ask("w1", "agent-1", groups="default")
        self.assertEqual((answer.agent_id, answer.name, answer.ip), ("001", "agent-1", "any"),
                         answer.error)
        self.assertEqual(keys_of(master), [KeyLine(1, "agent-1", "any", answer.key)])
        out, _, _ = await cli(master, "list", "--json")
        listed = {a["id"]: a for a in json.loads(out)}
        self.assertEqual(listed["001"]["groups"], ["default"])
        await cluster.wait_for("the key on w2", lambda: keys_of(w2) == keys_of(master), WAIT)
        again = await self.ask("w2", "agent-1")
        self.assertEqual(again.error, "Duplicate name")
        out, err, code = await cli(w2, "remove", "1")
        self.assertEqual((code, out.strip()), (0, "Agent 001 removed."), err)
        for worker in (w1, w2):
            await cluster.wait_for(f"the removal on {worker.name}", functools.partial(
                lambda w: [ln.removed for ln in keys_of(w)] == [True], worker), WAIT)

    async def test_two_hundred_over_three_nodes(self) -> None:
        """200 concurrent enrolments spread over the three nodes: 200 distinct ids and the
        same consistent client.keys everywhere."""
        cluster, master, w1, w2 = await self.start()
        context = make_context()
        nodes = ["master", "w1", "w2"]
        answers = await gatherResults([
            Deferred.fromCoroutine(enrol(reactor, "127.0.0.1", self.ports[nodes[i % 3]],
                                         encode_request(f"agent-{i:03d}"), context=context,
                                         timeout=120))
            for i in range(200)])
        self.assertEqual([a.error for a in answers if a.error], [])
        self.assertEqual(len({a.agent_id for a in answers}), 200)
        lines = keys_of(master)
        self.assertEqual({(f"{ln.agent_id:03d}", ln.name, ln.key) for ln in lines},
                         {(a.agent_id, a.name, a.key) for a in answers})
        for worker in (w1, w2):
            await cluster.wait_for(f"200 keys on {worker.name}",
                                   functools.partial(lambda w: keys_of(w) == lines, worker),
                                   WAIT)

    async def test_master_away(self) -> None:
        """Master stopped: an enrolment at a worker waits; master restarted: the agent gets
        its key, once."""
        cluster, master, w1, _ = await self.start()
        await master.stop(signal.SIGTERM)
        pending = Deferred.fromCoroutine(self.ask("w1", "late-agent"))
        await cluster.wait_log(w1, "waits for the master")
        self.assertFalse(pending.called)
        master.start()
        answer = await pending
        self.assertEqual((answer.agent_id, answer.name), ("001", "late-agent"), answer.error)
        self.assertEqual([(ln.name, ln.key) for ln in keys_of(master)],
                         [("late-agent", answer.key)])

    async def test_simulator_through_workers(self) -> None:
        """1 000 simulated agents enrolling through the workers are active on the master with
        the worker each reports to."""
        cluster, master, w1, w2 = await self.start()
        simulation = start_simulation(
            self, master.home, "--nodes",
            f"127.0.0.1:{self.ports['w1']},127.0.0.1:{self.ports['w2']}",
            "--homes", f"{w1.home},{w2.home}", "--count", "1000", "--keepalive", "2",
            "--duration", "600", "--prefix", "sim")
        await cluster.wait_for("1000 enrolled by the simulator", lambda: (
            "enrolment: 1000 enrolled, 0 refused" in simulation.text), 120)

        async def active() -> bool:
            out, _, _ = await cli(master, "list", "--json")
            agents = [a for a in json.loads(out) if a["id"] != "000"]
            nodes = {a["node_name"] for a in agents}
            return len(agents) == 1000 and nodes == {"w1", "w2"} and all(
                a["status"] == "active" for a in agents)
        await cluster.wait_for("1000 active agents on the master, by worker", active, 90)
