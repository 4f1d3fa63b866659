"""A small run of the multi-host test bed (bench/testbed) in the test suite.

1 master + 5 workers with 5 000 agents, one 15 s silent partition and one shaped link, each
node a real ``twistd wazuhcluster`` process in its own network namespace (as root) or on its
own 127.0.0.x address. Only convergence and "nothing lost" are asserted, never wall time: the
figures belong to ``python -m bench.testbed`` (docs/testbed.md).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from bench.testbed import scenarios
from bench.testbed.__main__ import write_outputs
from bench.testbed.cluster import BedCluster
from bench.testbed.net import make_bed


class SmallBedTests(TestCase):
    timeout = 300

    async def run_scenario(self, name: str, scenario: Any, *args: Any) -> dict[str, Any]:
        bed = make_bed()
        base = tempfile.mkdtemp(prefix=f"wzcbed-{name}-", dir="/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        c = BedCluster(reactor, bed, base)
        self.cluster = c
        try:
            results = await scenario(c, *args)
        finally:
            await c.stop_all()
            bed.destroy()
        return {metric: (value, passed) for metric, value, _, _, passed in results}

    async def test_scale_small(self) -> None:
        """Every worker gets every agent; keepalives land on the master under the right node."""
        results = await self.run_scenario("scale", scenarios.scale, 5, 5000)
        self.assertEqual(results["agents with the wrong node_name on the master"][0], 0)
        self.assertEqual(results["ERROR lines in every cluster.log"][0], 0)
        # the run's CSV has every node's task durations and the reactor lag of the nodes
        c = self.cluster
        tasks = {(node == "master", task) for _, node, _, task, _ in c.task_rows()}
        for side in (True, False):
            for task in ("Integrity check", "Integrity sync", "Agent-info sync",
                         "DAPI round trip"):
                self.assertIn((side, task), tasks)
        self.assertIn("master", {node for _, node, _ in c.lag_rows()})
        self.assertIn("worst reactor lag on the master", results)
        out = tempfile.mkdtemp(prefix="wzcbed-out-", dir="/tmp")
        self.addCleanup(shutil.rmtree, out, True)
        write_outputs(out, c, [])
        with open(os.path.join(out, "run.csv"), encoding="utf-8") as f:
            metrics = {row["metric"] for row in csv.DictReader(f)}
        self.assertLessEqual({"rss", "cpu", "reactor lag (worst of 1 s)", "Integrity sync",
                              "Agent-info sync", "DAPI round trip"}, metrics)

    async def test_partition_small(self) -> None:
        """A 15 s silent cut: the worker rejoins, nothing it recorded is lost, no 3028 loop."""
        if make_bed().kind != "netns":
            self.skipTest("a silent partition needs network namespaces (root with iproute2); "
                          "the bed falls back to 127.0.0.x, where links cannot be cut")
        results = await self.run_scenario("partition", scenarios.partition, 2, 2000, 15.0)
        self.assertIn("rejoined after the link came back", results)
        self.assertEqual(results["agent updates made during the cut lost on the master"][0], 0)
        self.assertTrue(results["Error 3028 lines on the master"][1])

    async def test_slow_link_small(self) -> None:
        """A 1 MB list through a 2 Mbit/s, 50 ms link converges without a disconnect."""
        results = await self.run_scenario("slowlink", scenarios.slowlink, 1.0, 2000.0, 50.0)
        self.assertEqual(results["slow worker disconnected during the transfer"][0], 0)
        self.assertTrue(results["slow worker converged"][1])

