"""Start-up leftovers: stale pid files of SIGKILLed runs."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from wazuhcluster.node import WorkDirService


class StalePidFileTests(SynchronousTestCase):
    """var/run/wazuh-clusterd-<pid>.pid of a dead process is removed at start-up."""

    def test_dead_pid_files_go_live_ones_stay(self) -> None:
        """A dead pid's file is removed, a live one's and unrelated files are kept."""
        config = node_config(short_tempdir(self))
        run = os.path.join(config.home, "var", "run")
        os.makedirs(run, exist_ok=True)
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()  # reaped: its pid is dead
        dead = f"wazuh-clusterd-{child.pid}.pid"
        live = f"wazuh-clusterd-{os.getppid()}.pid"
        for name in (dead, live, "wazuh-clusterd-x.pid", "other.pid"):
            with open(os.path.join(run, name), "w") as f:
                f.write("1\n")
        service = WorkDirService(config)
        service.startService()
        self.addCleanup(service.stopService)
        left = set(os.listdir(run))
        self.assertNotIn(dead, left)
        self.assertLessEqual({live, "wazuh-clusterd-x.pid", "other.pid",
                              f"wazuh-clusterd-{os.getpid()}.pid"}, left)
