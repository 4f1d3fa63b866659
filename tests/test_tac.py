"""tac/master.tac and tac/worker.tac: they build the node's service tree from the environment.

Each tac is loaded the way ``twistd -y`` loads it (``sob.loadValueFromFile``), with the
``WAZUHCLUSTER_*`` variables pointing at a temporary home. Nothing is started: no reactor use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.application.service import IService, IServiceCollection
from twisted.persisted import sob
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.harness import free_port
from wazuhcluster.homes import make_home

TAC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tac")
KEY = "tac_test_key_0123456789abcdefghi"  # 32 characters
ENV_VARS = ("WAZUHCLUSTER_HOME", "WAZUHCLUSTER_CONFIG", "WAZUHCLUSTER_CLUSTER_JSON",
            "WAZUHCLUSTER_DEBUG")


class TacTests(SynchronousTestCase):
    """Loading each tac file yields an ``application`` holding the whole, unstarted tree."""

    def set_env(self, **values: str) -> None:
        """Set the WAZUHCLUSTER_* variables for this test only (unset the others)."""
        saved = {name: os.environ.get(name) for name in ENV_VARS}

        def restore() -> None:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

        self.addCleanup(restore)
        for name in ENV_VARS:
            os.environ.pop(name, None)
        for name, value in values.items():
            os.environ[name] = value

    def make_home(self, role: str) -> str:
        """A fresh node home whose ossec.conf says ``role``.

        It lives under the system temp directory: trial's own temp paths are too long for the
        local socket path (107 bytes), which load_config checks.
        """
        base = tempfile.mkdtemp(prefix="wzc-tac-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        # Free 127.0.0.1 ports: the default 0.0.0.0:55000 may be taken on a shared machine
        # (start-up checks the API's port before building the tree).
        return make_home(os.path.join(base, role), node_name=f"{role}-1", node_type=role,
                         key=KEY, port=15999, api_port=free_port(), metrics_port=free_port())

    def load(self, role: str) -> Any:
        """Execute ``tac/<role>.tac`` as twistd does and return its ``application``."""
        return sob.loadValueFromFile(os.path.join(TAC_DIR, f"{role}.tac"), "application")

    def assert_tree(self, application: Any, role: str) -> Any:
        """Check the tree's shape; return the role node."""
        collection = IServiceCollection(application)
        [root] = list(collection)
        self.assertEqual(root.name, "wazuhcluster")
        priority = ["priority"] if role == "master" else []  # master_nice
        self.assertEqual([s.name for s in root], [
            "cluster-log", "work-dir", *priority, "turn-bound", "blocking-pool", role,
            "local-api", "metrics", "api"])
        self.assertFalse(IService(application).running)
        self.assertFalse(root.running)
        self.assertFalse(any(s.running for s in root))
        return root.getServiceNamed(role)

    def test_master_tac(self) -> None:
        """master.tac builds the master tree from WAZUHCLUSTER_HOME without starting it."""
        home = self.make_home("master")
        self.set_env(WAZUHCLUSTER_HOME=home)
        node = self.assert_tree(self.load("master"), "master")
        self.assertEqual(node.config.home, os.path.abspath(home))
        self.assertEqual(node.config.node_name, "master-1")
        self.assertEqual(node.config.debug, 0)
        self.assertLessEqual({"cluster-listener", "keepalive-check"}, {s.name for s in node})
        self.assertFalse(os.path.exists(os.path.join(home, "logs", "cluster.log")))

    def test_worker_tac(self) -> None:
        """worker.tac builds the worker tree from WAZUHCLUSTER_HOME without starting it."""
        home = self.make_home("worker")
        self.set_env(WAZUHCLUSTER_HOME=home)
        node = self.assert_tree(self.load("worker"), "worker")
        self.assertEqual(node.config.node_name, "worker-1")
        self.assertLessEqual({"master-link", "keepalive"}, {s.name for s in node})

    def test_all_variables(self) -> None:
        """WAZUHCLUSTER_CONFIG, _CLUSTER_JSON and _DEBUG reach load_config."""
        home = self.make_home("master")
        other = self.make_home("master")
        config = os.path.join(other, "etc", "ossec.conf")
        cluster_json = os.path.join(home, "cluster-override.json")
        with open(cluster_json, "w", encoding="utf-8") as f:
            json.dump({"wazuhcluster": {"hello_timeout": 7}}, f)
        self.set_env(WAZUHCLUSTER_HOME=home, WAZUHCLUSTER_CONFIG=config,
                     WAZUHCLUSTER_CLUSTER_JSON=cluster_json, WAZUHCLUSTER_DEBUG="2")
        node = self.assert_tree(self.load("master"), "master")
        self.assertEqual(node.config.config_path, os.path.abspath(config))
        self.assertEqual(node.config.ext.hello_timeout, 7)
        self.assertEqual(node.config.debug, 2)

    def test_role_is_fixed_by_the_tac(self) -> None:
        """master.tac refuses a home whose ossec.conf declares a worker."""
        self.set_env(WAZUHCLUSTER_HOME=self.make_home("worker"))
        error = self.assertRaises(SystemExit, self.load, "master")
        self.assertIn("--role master contradicts", str(error))

    def test_bad_home_is_one_line_naming_the_variable(self) -> None:
        """A missing WAZUHCLUSTER_HOME directory: one line naming the variable, not --home."""
        self.set_env(WAZUHCLUSTER_HOME="/nonexistent/wzc-home")
        error = self.assertRaises(SystemExit, self.load, "worker")
        message = str(error.code)
        self.assertIn("WAZUHCLUSTER_HOME '/nonexistent/wzc-home' is not a directory", message)
        self.assertNotIn("--home", message)
        self.assertNotIn("\n", message)

    def test_bad_debug_variable(self) -> None:
        """WAZUHCLUSTER_DEBUG must be 0, 1 or 2."""
        self.set_env(WAZUHCLUSTER_HOME=self.make_home("master"), WAZUHCLUSTER_DEBUG="x")
        error = self.assertRaises(SystemExit, self.load, "master")
        self.assertIn("WAZUHCLUSTER_DEBUG = 'x' is invalid", str(error.code))
