"""The twistd plugin and the service tree built by tap.makeService."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.config import load_config
from wazuhcluster.node import make_node_service
from wazuhcluster.tap import Options


class PluginTests(SynchronousTestCase):
    """``twistd wazuhcluster`` is discoverable and parses its options."""

    def test_plugin_is_discoverable(self) -> None:
        """getPlugins finds exactly one IServiceMaker called wazuhcluster."""
        import twisted.plugins

        makers = [m for m in getPlugins(IServiceMaker, twisted.plugins)
                  if m.tapname == "wazuhcluster"]
        self.assertEqual(len(makers), 1)
        verifyObject(IServiceMaker, makers[0])

    def test_options(self) -> None:
        """--role, --home, --config, --cluster-json and repeated -d are parsed."""
        options = Options()
        options.parseOptions(["--role", "worker", "--home", "/tmp/x", "-d", "-d"])
        self.assertEqual((options["role"], options["home"], options["debug"]),
                         ("worker", "/tmp/x", 2))

    def test_bad_role_and_missing_home(self) -> None:
        """A role other than master/worker, or no --home, is a usage error."""
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--role", "boss",
                                                                     "--home", "/tmp"])
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--role", "master"])


class TreeTests(SynchronousTestCase):
    """make_node_service builds named trees in dependency order."""

    def test_master_tree(self) -> None:
        """Master: log, work dir, role node (listener + loops), local API last."""
        reactor = MemoryReactorClock()
        config = node_config(short_tempdir(self))
        root = make_node_service(config, reactor, runner=SynchronousRunner(),
                                 log_to_file=False)
        self.assertEqual([s.name for s in root], [
            "work-dir", "priority", "turn-bound", "master", "local-api", "metrics",
                                                  "api"])
        self.assertLessEqual({"cluster-listener", "keepalive-check", "reactor-lag"},
                             {s.name for s in root.getServiceNamed("master")})
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([(p[0], p[3]) for p in reactor.tcpServers],
                         [(config.port, config.bind_addr), (9465, "127.0.0.1")])
        self.assertEqual([p[0] for p in reactor.unixServers], [config.local_socket_path])
        self.assertEqual([(p[0], p[4]) for p in reactor.sslServers], [(55000, "0.0.0.0")])

    def test_api_can_be_disabled(self) -> None:
        """``api: {enabled: false}`` in etc/wazuhcluster.yaml leaves the REST API out."""
        base = short_tempdir(self)
        home = node_config(base).home
        with open(os.path.join(home, "etc", "wazuhcluster.yaml"), "w") as f:
            f.write("api:\n  enabled: false\n")
        config = load_config(home)
        root = make_node_service(config, MemoryReactorClock(), runner=SynchronousRunner(),
                                 log_to_file=False)
        # The metrics listener stands alone: it is there without the API.
        self.assertEqual([s.name for s in root], [
            "work-dir", "priority", "turn-bound", "master", "local-api", "metrics"])

    def test_metrics_can_be_disabled(self) -> None:
        """``metrics: {enabled: false}`` in api.yaml leaves the metrics listener out (the
        API, which ignores the section, is still there)."""
        config = node_config(short_tempdir(self))
        path = os.path.join(config.home, "api", "configuration", "api.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("port: 55001\nmetrics:\n  enabled: false\n")
        root = make_node_service(config, MemoryReactorClock(), runner=SynchronousRunner(),
                                 log_to_file=False)
        self.assertEqual([s.name for s in root], [
            "work-dir", "priority", "turn-bound", "master", "local-api", "api"])

    def test_worker_tree(self) -> None:
        """Worker: the master link with the keepalive loop, and the local API."""
        reactor = MemoryReactorClock()
        config = node_config(short_tempdir(self), node_name="worker1", role="worker")
        root = make_node_service(config, reactor)
        self.assertEqual([s.name for s in root], [
            "cluster-log", "work-dir", "turn-bound", "blocking-pool",
                                                  "worker", "local-api", "metrics", "api"])
        self.assertLessEqual({"master-link", "keepalive", "reactor-lag"},
                             {s.name for s in root.getServiceNamed("worker")})


class StartupImportTests(SynchronousTestCase):
    """A node imports only what its role and its enabled services need (start-up CPU counts
    when a hundred workers start on one box)."""

    def test_worker_without_api_imports_neither_master_nor_api_service(self) -> None:
        base = short_tempdir(self)
        home = node_config(base, node_name="worker1", role="worker").home
        with open(os.path.join(home, "etc", "wazuhcluster.yaml"), "w") as f:
            f.write("api:\n  enabled: false\n")
        script = (
            "import sys\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "from wazuhcluster.checksums.threaded import SynchronousRunner\n"
            "from wazuhcluster.config import load_config\n"
            "from wazuhcluster.node import make_node_service\n"
            f"make_node_service(load_config({home!r}), MemoryReactorClock(),\n"
            "                  runner=SynchronousRunner(), log_to_file=False)\n"
            "print(' '.join(m for m in ('wazuhcluster.master.service',\n"
            "                           'wazuhcluster.api.service') if m in sys.modules))\n")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, timeout=120)
        self.assertEqual(out.stdout.strip(), "")


class WorkDirTests(SynchronousTestCase):
    """One daemon per home; the queue is emptied and the pid file written."""

    def test_second_daemon_on_the_same_home_is_refused(self) -> None:
        """A second WorkDirService on a locked home stops start-up with a clear message."""
        from wazuhcluster.node import WorkDirService

        config = node_config(short_tempdir(self))
        first = WorkDirService(config)
        first.startService()
        self.addCleanup(first.stopService)
        with self.assertRaises(SystemExit) as ctx:
            WorkDirService(config).privilegedStartService()
        self.assertIn("another wazuhcluster process", str(ctx.exception))

    def test_queue_is_emptied_but_the_socket_kept(self) -> None:
        """Start-up removes leftovers in queue/cluster/ and writes the Wazuh pid file."""
        import os

        from wazuhcluster.node import WorkDirService

        config = node_config(short_tempdir(self))
        queue = os.path.join(config.home, "queue", "cluster")
        os.makedirs(os.path.join(queue, "worker1"))
        open(os.path.join(queue, "c-internal.sock"), "w").close()
        service = WorkDirService(config)
        service.startService()
        self.assertEqual(os.listdir(queue), ["c-internal.sock"])
        self.assertEqual(os.listdir(os.path.join(config.home, "var", "run")).count(
            f"wazuh-clusterd-{os.getpid()}.pid"), 1)
        service.stopService()
        self.assertNotIn(f"wazuh-clusterd-{os.getpid()}.pid",
                         os.listdir(os.path.join(config.home, "var", "run")))
