"""Start-up failures of real daemon-mode ``twistd --pidfile --logfile`` processes.

Each failure must end ``twistd`` with a non-zero status and one line naming the cause on
stderr; no process may be left behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.harness import TWISTD, Cluster, NodeProcess, sleep
from tests.integration.test_ownership_processes import throwaway_user


def daemon(node: NodeProcess, *extra: str) -> list[str]:
    """The daemon-mode command line of ``node`` (pid file and twistd log in its home)."""
    return [TWISTD, f"--pidfile={node.home}/var/run/twistd.pid",
            f"--logfile={node.home}/twistd.log", *extra, "wazuhcluster", "--role", node.role,
            "--home", node.home, "--cluster-json", node.cluster_json]


class DaemonStartupTests(TestCase):
    """Port busy, lock held, bad configuration, unwritable home: exit status and one line."""

    timeout = 90

    async def run_daemon(self, node: NodeProcess, *extra: str) -> tuple[int, list[str]]:
        """Run twistd in daemon mode; (exit status, stderr lines). Killed after 40 s."""
        done = await deferToThread(subprocess.run, daemon(node, *extra), capture_output=True,
                                   text=True, timeout=40, cwd=node.home)
        return done.returncode, done.stderr.strip().splitlines()

    async def assert_no_process_left(self, node: NodeProcess) -> None:
        """Whoever took the home's lock is gone (the lock names its pid)."""
        lock = os.path.join(node.home, "var", "run", "wazuhcluster.lock")
        deadline = time.monotonic() + 20
        while True:
            try:
                pid = int(os.readlink(lock))
            except OSError:
                return
            if not os.path.exists(f"/proc/{pid}") or time.monotonic() > deadline:
                break
            await sleep(0.1)
        self.assertFalse(os.path.exists(f"/proc/{pid}"), f"pid {pid} still runs")

    async def test_port_busy(self) -> None:
        c = Cluster(self)
        node = c.add_node("master", "master")
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", c.port))
            busy.listen()
            status, err = await self.run_daemon(node)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"cannot listen on 127.0.0.1:{c.port}", err[0])
        await self.assert_no_process_left(node)

    async def test_api_port_busy(self) -> None:
        c = Cluster(self)
        node = c.add_node("worker-1")
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", node.api_port))
            busy.listen()
            status, err = await self.run_daemon(node)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"the REST API cannot listen on 127.0.0.1:{node.api_port}", err[0])
        await self.assert_no_process_left(node)

    async def test_bad_api_yaml(self) -> None:
        c = Cluster(self)
        node = c.add_node("worker-1")
        with open(os.path.join(node.home, "api", "configuration", "api.yaml"), "a") as f:
            f.write("access:\n  block_time: soon\n")
        status, err = await self.run_daemon(node)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn("api.yaml: access.block_time is 'soon'", err[0])

    async def test_lock_held(self) -> None:
        c = Cluster(self)
        running = c.add_node("master", "master").start()
        await c.wait_ready(running)
        status, err = await self.run_daemon(running)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"another wazuhcluster process (pid {running.pid}) is running", err[0])
        self.assertTrue(running.running)

    async def test_bad_configuration(self) -> None:
        c = Cluster(self)
        node = c.add_node("worker-1")
        conf = os.path.join(node.home, "etc", "ossec.conf")
        with open(conf, encoding="utf-8") as f:
            text = f.read()
        with open(conf, "w", encoding="utf-8") as f:
            f.write(text.replace(f"<key>{c.key}</key>", "<key>short</key>"))
        status, err = await self.run_daemon(node)
        self.assertEqual(status, 1)
        self.assertEqual(len(err), 1, err)
        self.assertIn("configuration error", err[0])
        self.assertIn("<cluster><key> is invalid", err[0])

    async def test_unwritable_home(self) -> None:
        c = Cluster(self)
        node = c.add_node("worker-1")
        os.rmdir(os.path.join(node.home, "var", "run"))
        with open(os.path.join(node.home, "var", "run"), "w") as f:
            f.write("in the way\n")
        status, err = await self.run_daemon(node)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"cannot write {node.home}/var/run", err[0])

    async def test_unwritable_log_file(self) -> None:
        """A cluster.log the node may not write (a directory here): one line, exit 1."""
        c = Cluster(self)
        node = c.add_node("worker-1")
        os.mkdir(os.path.join(node.home, "logs", "cluster.log"))
        status, err = await self.run_daemon(node)
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn("cannot write the log file", err[0])

    async def test_failure_after_the_fork_still_ends_twistd(self) -> None:
        """``--uid`` drops root after the fork; the new user cannot create cluster.log in the
        root-owned logs/ directory: twistd must still exit non-zero and leave nothing."""
        name = throwaway_user(self)
        c = Cluster(self)
        node = c.add_node("master", "master")
        os.chmod(c.base, 0o755)
        os.chmod(node.home, 0o755)
        os.chmod(os.path.join(node.home, "logs"), 0o755)
        status, err = await self.run_daemon(node, f"--uid={name}", f"--gid={name}")
        self.assertNotEqual(status, 0)
        self.assertTrue(any("StartupError: wazuhcluster: cannot write" in line for line in err),
                        err)
        with open(os.path.join(node.home, "twistd.log"), encoding="utf-8") as f:
            self.assertIn("logs/cluster.log (Permission denied)", f.read())
        await self.assert_no_process_left(node)

    async def test_embedded_database_refused_beside_a_live_wazuh_db(self) -> None:
        """A live ``queue/db/wdb`` in the home: one line pointing at agent_db.backend."""
        c = Cluster(self)
        node = c.add_node("worker-1")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wdb:
            wdb.bind(os.path.join(node.home, "queue", "db", "wdb"))
            wdb.listen(4)
            status, err = await self.run_daemon(node)
        self.assertEqual(status, 1)
        self.assertEqual(len(err), 1, err)
        self.assertIn("a live wazuh-db answers on", err[0])
        self.assertIn("agent_db.backend: wazuh-db", err[0])
        self.assertFalse(os.path.exists(os.path.join(node.home, "queue", "db",
                                                     "wazuhcluster-agents.db")))

    async def test_tac_with_a_bad_home_variable_is_one_line(self) -> None:
        """``twistd -y tac/worker.tac`` with WAZUHCLUSTER_HOME naming no directory."""
        tac = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tac", "worker.tac")
        base = tempfile.mkdtemp(prefix="wzc-tac-")
        self.addCleanup(shutil.rmtree, base, True)
        env = dict(os.environ, WAZUHCLUSTER_HOME=os.path.join(base, "missing"))
        done = await deferToThread(
            subprocess.run, [TWISTD, f"--pidfile={base}/t.pid", f"--logfile={base}/t.log",
                             "-y", tac], capture_output=True, text=True, timeout=40, env=env,
            cwd=base)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr.strip().splitlines(), [
            f"wazuhcluster: configuration error: WAZUHCLUSTER_HOME '{base}/missing' is not a "
            "directory: create it or pass the right path"])
