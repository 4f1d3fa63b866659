"""The bed's node code is byte-compiled once before the nodes start."""

from __future__ import annotations

import importlib.util
import os

from twisted.trial.unittest import SynchronousTestCase

from bench.testbed import cluster as cluster_module
from bench.testbed.cluster import compile_package


class CompilePackageTests(SynchronousTestCase):
    def test_writes_the_cache_despite_dontwritebytecode(self) -> None:
        """Python reads ``__pycache__`` under PYTHONDONTWRITEBYTECODE but never writes it:
        the bed writes it once, so that no node compiles the sources at start-up."""
        package = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(package, "sub"))
        sources = [os.path.join(package, "__init__.py"), os.path.join(package, "sub", "m.py")]
        for path in sources:
            with open(path, "w") as f:
                f.write("VALUE = 1\n")
        self.patch(os, "environ", dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        self.assertEqual(compile_package(package), 2)
        for path in sources:
            self.assertTrue(os.path.exists(importlib.util.cache_from_source(path)), path)
        self.assertEqual(compile_package(package), 0)  # up to date: nothing again

    def test_default_is_the_node_code(self) -> None:
        import wazuhcluster

        compile_package()
        init = os.path.abspath(wazuhcluster.__file__)
        self.assertTrue(os.path.exists(importlib.util.cache_from_source(init)))


class WorkersNiceTests(SynchronousTestCase):
    """``--workers-nice N`` starts the workers, and only them, under ``nice -n N``, after the
    namespace prefix."""

    def spawned(self, nice: int) -> dict[str, list[str]]:
        from twisted.internet.testing import MemoryReactorClock

        from bench.testbed.cluster import BedCluster, Node

        reactor = MemoryReactorClock()
        seen: dict[str, list[str]] = {}

        def spawn(proto: Node, executable: str, args: list[str], **_: object) -> object:
            seen[proto.name] = list(args)

            class Transport:
                pid = 1
            return Transport()
        reactor.spawnProcess = spawn  # type: ignore[method-assign]
        self.patch(cluster_module, "compile_package", lambda *a: 0)
        c = BedCluster(reactor, object(), self.mktemp(), workers_nice=nice)
        base = c.base
        os.makedirs(base)
        for name, role in (("master", "master"), ("w1", "worker")):
            home = os.path.join(base, name)
            os.makedirs(os.path.join(home, "logs"))
            c.start(Node(name, role, home, ["ip", "netns", "exec", name], "x.json"))
        return seen

    def test_workers_only_after_the_prefix(self) -> None:
        seen = self.spawned(10)
        self.assertEqual(seen["w1"][:7], ["ip", "netns", "exec", "w1", "nice", "-n", "10"])
        self.assertNotIn("nice", seen["master"])

    def test_default_is_no_nice(self) -> None:
        seen = self.spawned(0)
        self.assertNotIn("nice", seen["w1"])
