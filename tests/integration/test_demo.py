"""wazuhcluster-demo's start-up failures are one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.harness import BIN, free_port

DEMO = os.path.join(BIN, "wazuhcluster-demo")


class DemoTests(TestCase):
    """The demo refuses a busy port with the reason and the way out."""

    timeout = 60

    async def test_busy_port_is_one_line(self) -> None:
        base = tempfile.mkdtemp(prefix="wzc-demo-")
        self.addCleanup(shutil.rmtree, base, True)
        port = free_port()
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", port))
            busy.listen()
            done = await deferToThread(subprocess.run, [DEMO, "--dir", base, "--port", str(port)],
                                       capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")
        lines = done.stderr.strip().splitlines()
        self.assertEqual(lines, [f"wazuhcluster-demo: port {port} on 127.0.0.1 cannot be used "
                                 "(Address already in use): pass --port N (make demo PORT=N)"])
