"""The embedded agent database never runs beside a live wazuh-db."""

from __future__ import annotations

import os
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents.db import database_path, refuse_next_to_live_wazuh_db, wazuh_db_socket
from wazuhcluster.errors import ConfigError


class BesideWazuhDbTests(SynchronousTestCase):
    """A listening ``queue/db/wdb`` stops start-up; a stale socket file or none does not."""

    def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="wzc-wdb-")  # short: AF_UNIX path limit
        self.addCleanup(lambda: __import__("shutil").rmtree(self.home, ignore_errors=True))
        os.makedirs(os.path.join(self.home, "queue", "db"))

    def bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(wazuh_db_socket(self.home))
        return sock

    def test_no_socket(self) -> None:
        refuse_next_to_live_wazuh_db(self.home)

    def test_stale_socket_file(self) -> None:
        self.bind()  # bound, not listening: connect is refused
        refuse_next_to_live_wazuh_db(self.home)

    def test_live_wazuh_db_is_refused_with_the_setting_to_use(self) -> None:
        self.bind().listen(1)
        with self.assertRaises(ConfigError) as caught:
            refuse_next_to_live_wazuh_db(self.home)
        message = str(caught.exception)
        self.assertIn(f"a live wazuh-db answers on {self.home}/queue/db/wdb", message)
        self.assertIn("agent_db.backend: wazuh-db in etc/wazuhcluster.yaml", message)
        self.assertNotIn("\n", message)

    def test_own_file_name(self) -> None:
        self.assertNotEqual(os.path.basename(database_path(self.home)), "global.db")
