"""The bed's node code is byte-compiled once before the nodes start."""

from __future__ import annotations

import importlib.util
import os

from twisted.trial.unittest import SynchronousTestCase

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
