"""Ownership of synced files with real processes: a worker gives received files the
configured user and group and the mode of their cluster.json item."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time

from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.harness import Cluster, NodeProcess
from tests.integration.test_integrity_processes import CONNECTED, FAST_INTEGRITY, tree, write


def throwaway_user(case: TestCase) -> str:
    """Create a system user with its own group for this test (removed in cleanup)."""
    if os.geteuid() != 0:
        raise SkipTest("creating a throwaway user needs root")
    name = "wzct" + secrets.token_hex(4)
    _retry(["useradd", "--system", "--no-create-home", "--user-group",
            "--shell", "/usr/sbin/nologin", name])
    case.addCleanup(_retry, ["userdel", name])
    return name


def _retry(command: list[str]) -> None:
    """Run a user-database command; retry while another process holds /etc/passwd's lock
    (the two trial workers may create users at the same moment)."""
    for _ in range(50):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def settings(node: NodeProcess, text: str) -> None:
    """Write the node's etc/wazuhcluster.yaml."""
    with open(os.path.join(node.home, "etc", "wazuhcluster.yaml"), "w", encoding="utf-8") as f:
        f.write(text)


class OwnershipProcessTests(TestCase):
    """A master and one worker as processes."""

    timeout = 60

    async def start(self, c: Cluster, worker_settings: str | None) -> tuple[NodeProcess,
                                                                             NodeProcess]:
        m = c.add_node("master", "master", tunables=FAST_INTEGRITY).start()
        await c.wait_ready(m)
        w = c.add_node("worker-1", tunables=FAST_INTEGRITY)
        if worker_settings is not None:
            settings(w, worker_settings)
        w.start()
        await c.wait_log(w, CONNECTED)
        return m, w

    async def test_received_files_get_the_configured_user_group_and_item_mode(self) -> None:
        name = throwaway_user(self)
        user = pwd.getpwnam(name)
        c = Cluster(self)
        m, w = await self.start(c, f"ownership:\n  user: {name}\n  group: {name}\n")
        await c.wait_log(w, rf"Received files are given to {name}:{name}\.")
        write(m, {"etc/client.keys": b"001 a any 0123456789abcdef0123456789abcdef\n",
                  "etc/rules/sub/local.xml": b"<group name='x'/>\n",
                  "etc/shared/group1/agent.conf": b"<agent_config/>\n"})
        await c.wait_for("the worker to match the master", lambda: tree(w) == tree(m))
        for path, mode in (("etc/client.keys", 0o640), ("etc/rules/sub/local.xml", 0o660),
                           ("etc/shared/group1/agent.conf", 0o660),
                           ("etc/rules/sub", 0o770), ("etc/shared/group1", 0o770)):
            st = os.stat(os.path.join(w.home, path))
            self.assertEqual((st.st_uid, st.st_gid), (user.pw_uid, user.pw_gid), path)
            self.assertEqual(stat.S_IMODE(st.st_mode), mode, path)

    async def test_missing_default_user_is_one_start_up_warning(self) -> None:
        try:
            pwd.getpwnam("wazuh")
        except KeyError:
            pass
        else:
            raise SkipTest("this machine has a 'wazuh' user: the default applies")
        c = Cluster(self)
        _, w = await self.start(c, None)
        lines = await c.wait_log(w, r"WARNING: .*Ownership not applied: user 'wazuh' does "
                                    r"not exist")
        self.assertEqual(len(lines), 1)

    async def test_unknown_configured_user_stops_start_up_with_one_line(self) -> None:
        c = Cluster(self)
        m = c.add_node("master", "master")
        settings(m, "")
        w = c.add_node("worker-1")
        settings(w, "ownership:\n  user: no-such-user-wzc\n")
        w.start()
        await w.ended
        out = w.output.decode().strip().splitlines()
        self.assertEqual(len(out), 1, out)
        self.assertIn("ownership.user = 'no-such-user-wzc' is not a user", out[0])
        self.assertIsNotNone(w.end_reason.exitCode)
        self.assertNotEqual(w.end_reason.exitCode, 0)

    async def test_root_without_cap_chown_warns_once_and_still_applies(self) -> None:
        """Root without CAP_CHOWN (a sandboxing unit): one warning naming the capability, and
        the files are applied, owned by root."""
        name = throwaway_user(self)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SkipTest("setpriv (util-linux) is needed to drop CAP_CHOWN")
        c = Cluster(self)
        m = c.add_node("master", "master", tunables=FAST_INTEGRITY).start()
        await c.wait_ready(m)
        w = c.add_node("worker-1", tunables=FAST_INTEGRITY)
        settings(w, f"ownership:\n  user: {name}\n  group: {name}\n")
        w.wrapper = [setpriv, "--bounding-set", "-chown", "--inh-caps", "-chown"]
        w.start()
        lines = await c.wait_log(w, rf"WARNING: .*Ownership not applied: cannot give files to "
                                    rf"{name}:{name} \(Operation not permitted; as root this "
                                    r"needs the CAP_CHOWN capability\)")
        self.assertEqual(len(lines), 1)
        write(m, {"etc/rules/local.xml": b"<group name='x'/>\n"})
        await c.wait_for("the worker to match the master", lambda: tree(w) == tree(m))
        st = os.stat(os.path.join(w.home, "etc/rules/local.xml"))
        self.assertEqual(st.st_uid, 0)
