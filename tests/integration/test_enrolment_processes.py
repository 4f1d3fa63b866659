"""Agent enrolment with real node processes on 127.0.0.1: the master's registration port,
client.keys and database, the key on the workers, removal, concurrency."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.harness import BIN, Cluster, free_port
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.keystore import KeyLine, read_keys
from wazuhcluster.enrolment.messages import encode_request

AGENTS_CLI = os.path.join(BIN, "wazuhcluster-agents")
WAIT = 30.0


def keys_of(home: str) -> list[KeyLine]:
    return read_keys(os.path.join(home, "etc", "client.keys"))


class MasterEnrolmentTests(TestCase):
    """Enrolment at the master; the key reaches the workers by integrity push."""

    timeout = 120

    async def cli(self, home: str, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(AGENTS_CLI, ["--home", home, *args],
                                                        env=dict(os.environ))
        return out.decode(), err.decode(), code

    async def start(self, workers: int = 1) -> tuple[Cluster, Any, list[Any]]:
        cluster = Cluster(self)
        self.auth_port = free_port()
        master = cluster.add_node("master", "master", auth_port=self.auth_port, tunables={
            "intervals": {"master": {"sync_agent_groups": 1, "agent_group_start_delay": 1}}}
        ).start()
        await cluster.wait_ready(master)
        names = [f"w{i}" for i in range(1, workers + 1)]
        nodes = [cluster.add_node(n).start() for n in names]
        await cluster.wait_listed(master, {"master", *names})
        return cluster, master, nodes

    async def test_enrol_list_duplicate_remove(self) -> None:
        """CLI enrol at the master: key and row on the master, key on the worker within
        seconds; a duplicate name is refused with Wazuh's message; removal reaches the
        worker."""
        cluster, master, (w1,) = await self.start()
        out, err, code = await self.cli(master.home, "enrol", "agent-1", "--group", "default",
                                        "--node", f"127.0.0.1:{self.auth_port}")
        self.assertEqual(code, 0, err)
        agent_id, name, ip, key = out.split()
        self.assertEqual((agent_id, name, ip, len(key)), ("001", "agent-1", "any", 64))
        self.assertEqual(keys_of(master.home), [KeyLine(1, "agent-1", "any", key)])
        out, err, code = await self.cli(master.home, "list", "--json")
        listed = {a["id"]: a for a in json.loads(out)}
        self.assertEqual(listed["001"]["groups"], ["default"])
        await cluster.wait_for("the key on w1", lambda: keys_of(w1.home) == keys_of(
            master.home), WAIT)

        async def grouped() -> bool:
            out, _, _ = await self.cli(w1.home, "list", "--json")
            return any(a["id"] == "001" and a["groups"] == ["default"] for a in json.loads(out))
        await cluster.wait_for("the agent's group on w1", grouped, WAIT)
        out, err, code = await self.cli(master.home, "enrol", "agent-1")
        self.assertEqual((code, err.strip()), (1, "ERROR: Duplicate agent name: agent-1"))
        out, err, code = await self.cli(master.home, "remove", "1")
        self.assertEqual((code, out.strip()), (0, "Agent 001 removed."), err)
        out, err, code = await self.cli(master.home, "remove", "1")
        self.assertEqual(code, 1)
        self.assertIn("Agent ID not found", err)
        await cluster.wait_for("the removal on w1", lambda: [
            ln.removed for ln in keys_of(w1.home)] == [True], WAIT)

        async def gone() -> bool:
            out, _, _ = await self.cli(w1.home, "list", "--json")
            return all(a["id"] == "000" for a in json.loads(out))
        await cluster.wait_for("the row gone on w1", gone, WAIT)

    async def test_two_hundred_concurrent(self) -> None:
        """200 concurrent enrolments at the master: 200 distinct ids, one consistent file,
        the same on the worker."""
        cluster, master, (w1,) = await self.start()
        context = make_context()
        answers = await gatherResults([
            Deferred.fromCoroutine(enrol(reactor, "127.0.0.1", self.auth_port,
                                encode_request(f"agent-{i:03d}"), context=context))
            for i in range(200)])
        ids = [a.agent_id for a in answers]
        self.assertNotIn(None, ids, [a.error for a in answers if a.error][:3])
        self.assertEqual(len(set(ids)), 200)
        lines = keys_of(master.home)
        self.assertEqual({(f"{ln.agent_id:03d}", ln.name, ln.key) for ln in lines},
                         {(a.agent_id, a.name, a.key) for a in answers})
        await cluster.wait_for("200 keys on w1", lambda: keys_of(w1.home) == lines, WAIT)



class Simulation(ProcessProtocol):
    """A ``wazuhcluster-agents simulate`` process run in the background."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def start_simulation(case: TestCase, home: str, *args: str) -> Simulation:
    """Start the simulator (it runs for --duration); the test's cleanup stops it."""
    simulation = Simulation()
    transport = reactor.spawnProcess(simulation, AGENTS_CLI,
                                     [AGENTS_CLI, "--home", home, "simulate", *args],
                                     env=dict(os.environ))

    async def stop() -> None:
        if not simulation.ended.called:
            transport.signalProcess("KILL")
            await simulation.ended
    case.addCleanup(stop)
    return simulation


class SimulatorProcessTests(TestCase):
    """``wazuhcluster-agents simulate`` against real nodes."""

    timeout = 240

    async def test_thousand_agents_active(self) -> None:
        """1 000 simulated agents enrol and report keepalives: all active on the master,
        with the node they report to; progress lines as they go."""
        cluster = Cluster(self)
        auth_port = free_port()
        master = cluster.add_node("master", "master", auth_port=auth_port).start()
        await cluster.wait_ready(master)
        simulation = start_simulation(
            self, master.home, "--nodes", f"127.0.0.1:{auth_port}", "--homes", master.home,
            "--count", "1000", "--keepalive", "2", "--duration", "600", "--prefix", "sim")
        await cluster.wait_for("1000 enrolled by the simulator", lambda: (
            "enrolment: 1000 enrolled, 0 refused" in simulation.text), 120)
        self.assertIn("enrolled", simulation.text.splitlines()[0])  # a progress line first

        async def active() -> bool:
            out, _, _ = await getProcessOutputAndValue(
                AGENTS_CLI, ["--home", master.home, "list", "--json"], env=dict(os.environ))
            agents = [a for a in json.loads(out) if a["id"] != "000"]
            return len(agents) == 1000 and all(
                a["status"] == "active" and a["node_name"] == "master"
                and a["version"] == "Wazuh v4.7.5" for a in agents)
        await cluster.wait_for("1000 active agents on the master", active, 60)

    async def test_summary_and_exit(self) -> None:
        """The simulator prints its summary and exits by itself after --duration."""
        cluster = Cluster(self)
        auth_port = free_port()
        master = cluster.add_node("master", "master", auth_port=auth_port).start()
        await cluster.wait_ready(master)
        out, err, code = await getProcessOutputAndValue(AGENTS_CLI, [
            "--home", master.home, "simulate", "--nodes", f"127.0.0.1:{auth_port}",
            "--homes", master.home, "--count", "20", "--keepalive", "1", "--duration", "4",
            "--prefix", "short"], env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        self.assertIn("summary: enrolled 20, refused 0", out.decode())
