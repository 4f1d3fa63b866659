"""wazuhcluster-control against real processes: cluster_control's options and text output."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.harness import CONTROL, Cluster, NodeProcess
from tests.integration.test_agents_processes import AGENTS_CLI, TUNABLES
from wazuhcluster.agents.keys import KeyEntry, format_client_keys


def rows(text: str) -> list[list[str]]:
    """Table lines split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


class ControlProcessTests(TestCase):
    """A master and two workers; two agents, one reporting to worker1."""

    timeout = 90

    async def agents_cli(self, node: NodeProcess, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            AGENTS_CLI, ["--home", node.home, *args], env=dict(os.environ))
        return out.decode(), err.decode(), code

    async def test_control_matches_cluster_control(self) -> None:
        c = Cluster(self)
        master = c.add_node("master-node", "master", tunables=TUNABLES)
        keys = format_client_keys([KeyEntry(1, "web", "any", "a" * 64),
                                   KeyEntry(2, "db", "10.0.0.2", "b" * 64)])
        with open(os.path.join(master.home, "etc", "client.keys"), "w") as f:
            f.write(keys)
        master.start()
        await c.wait_ready(master)
        workers = [c.add_node(n, tunables=TUNABLES) for n in ("worker1", "worker2")]
        for w in workers:
            with open(os.path.join(w.home, "etc", "client.keys"), "w") as f:
                f.write(keys)
            w.start()
        await c.wait_listed(master, {"master-node", "worker1", "worker2"})
        out, err, code = await self.agents_cli(workers[0], "keepalive", "2", "--version",
                                               "Wazuh v4.7.5")
        self.assertEqual(code, 0, err)

        async def on_worker1() -> Any:
            out, _, code = await c.control(master, "-a", "-fn", "worker1")
            return code == 0 and len(rows(out)) == 2 and out
        out = await c.wait_for("agent 002 on worker1 in -a -fn worker1", on_worker1)
        self.assertEqual(rows(out), [["ID", "NAME", "IP", "STATUS", "VERSION", "NODE NAME"],
                                     ["002", "db", "10.0.0.2", "active", "Wazuh v4.7.5",
                                      "worker1"]])
        out, err, code = await c.control(workers[1], "-a")  # from a worker: the master's view
        self.assertEqual(code, 0, err)
        table = {r[0]: r for r in rows(out)[1:]}
        self.assertEqual(table["000"][3:], ["active", "Wazuh v4.7.5", "master-node"])
        self.assertEqual(table["001"][1:], ["web", "any", "never_connected", "unknown",
                                            "unknown"])
        out, err, code = await c.control(master, "-a", "-fs", "never_connected")
        self.assertEqual([r[0] for r in rows(out)[1:]], ["001"], out)
        out, err, code = await c.control(master, "-a", "-fn", "worker2", "master-node")
        self.assertEqual([r[0] for r in rows(out)[1:]], ["000"], out)

        out, err, code = await c.control(master, "-i")
        self.assertEqual(code, 0, err)
        self.assertIn("Last completed synchronization for connected nodes (2):", out)
        self.assertRegex(out, r"    worker1 \(127\.0\.0\.1\): Integrity check: .* \| Last keep "
                              r"alive: .*\.\n")
        out, err, code = await c.control(master, "-i", "more", "-fn", "worker1")
        self.assertEqual(code, 0, err)
        self.assertIn("Connected nodes (", out)
        self.assertRegex(out, r"Last integrity check: (n/a|\d+\.\d+s) \(")
        self.assertNotIn("worker2 (", out)

        out, err, code = await c.control(master, "-l", "-fs", "active")
        self.assertEqual((code, err.splitlines()[0]),
                         (1, "ERROR: Wrong arguments: -fs/--filter-agent-status only goes "
                             "with -a"))
        out, err, code = await self.agents_cli(master, "set-group", "000", "x")
        self.assertEqual(code, 1)
        self.assertIn("agent 000 is the manager", err)

    async def test_node_not_running_is_one_error_line(self) -> None:
        home = tempfile.mkdtemp(prefix="wzc-ctl-")
        self.addCleanup(os.rmdir, home)
        _out, err, code = await getProcessOutputAndValue(CONTROL, ["--home", home, "-l"],
                                                        env=dict(os.environ))
        self.assertEqual(code, 1)
        lines = err.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("ERROR: "), lines)
