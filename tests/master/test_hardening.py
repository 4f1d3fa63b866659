"""Master hardening: escaped peer strings in logs, clear name refusals, no leftover dirs."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.protocol.test_handler import RecordingHandler
from tests.support import VECTOR_KEY, connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.config import name_problem
from wazuhcluster.errors import RemoteCommandError
from wazuhcluster.logsafe import peer_text
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.commands import FILE_UPD, HELLO, NEW_FILE
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol


class PeerTextTests(SynchronousTestCase):
    """logsafe.peer_text."""

    def test_plain_names_are_unchanged(self) -> None:
        """An ordinary name prints as it is."""
        self.assertEqual(peer_text("worker-1"), "worker-1")

    def test_control_characters_are_escaped_and_long_text_cut(self) -> None:
        """Newlines, ANSI escapes and raw bytes come out escaped; long text is cut."""
        self.assertEqual(peer_text("a\nb"), "a\\nb")
        self.assertEqual(peer_text("\x1b[31mred"), "\\x1b[31mred")
        self.assertEqual(peer_text(b"\xff"), "\\xff")
        cut = peer_text("x" * 1000, 50)
        self.assertTrue(cut.startswith("x" * 50 + "..."))
        self.assertIn("1000", cut)
        self.assertLess(len(cut), 80)


class NameProblemTests(SynchronousTestCase):
    """Each invalid name gets its own reason."""

    def test_reasons(self) -> None:
        """Too long, control character, path separator, dot names, space."""
        self.assertIsNone(name_problem("worker-1"))
        self.assertIn("too long", name_problem("w" * 129) or "")
        self.assertIn("control", name_problem("w\nx") or "")
        self.assertIn("path separator", name_problem("../etc") or "")
        self.assertIn("not allowed", name_problem("..") or "")
        self.assertIn("empty", name_problem("") or "")
        self.assertIn("'@'", name_problem("w@x") or "")


class MasterLogTests(SynchronousTestCase):
    """What a hostile hello can and cannot write into the log."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = node_config(short_tempdir(self))
        self.node = MasterNode(self.config, self.clock, SynchronousRunner())
        self.factory = ClusterServerFactory(self.node)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connect(self) -> tuple[Any, ClusterProtocol, Any]:
        """One worker connection."""
        return connected_pair(
            lambda: self.factory.buildProtocol(None),
            lambda: ClusterProtocol(RecordingHandler(), self.clock,
                                    codec=FernetCodec(VECTOR_KEY)), self.clock)

    def hello(self, payload: bytes) -> RemoteCommandError:
        """Send a hello that is refused; return the error."""
        _, client, pump = self.connect()
        d = client.request(HELLO, payload)
        pump.flush()
        return self.failureResultOf(d, RemoteCommandError).value

    def logged(self) -> list[str]:
        """Every event as it would be written."""
        return [formatEvent(e) for e in self.events]

    def test_forged_line_and_ansi_escapes_are_escaped(self) -> None:
        """A name with a newline or ANSI escape cannot start a line or paint the terminal."""
        self.hello(b"w\n2026/11/28\t10:00:00\twazuh-clusterd:\tCRITICAL:\tforged "
                   b"wazuh worker 4.7.5")
        self.hello(b"\x1b[2J\x1b[31mred wazuh worker 4.7.5")
        self.hello(b"\xff\xfe\x00 wazuh worker 4.7.5")
        lines = self.logged()
        refused = [line for line in lines if "Refused worker" in line]
        self.assertEqual(len(refused), 3)
        for line in lines:
            self.assertNotIn("\n", line)
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\x00", line)
        self.assertIn("w\\n2026", refused[0])

    def test_refusals_say_what_is_wrong(self) -> None:
        """Too long, control character and path separator get their own message."""
        self.assertIn("too long", str(self.hello(b"w" * 200 + b" wazuh worker 4.7.5")))
        self.assertIn("control", str(self.hello(b"w\tx wazuh worker 4.7.5")))
        self.assertIn("path separator", str(self.hello(b"a/b wazuh worker 4.7.5")))
        self.assertNotIn("'.' or '..'", str(self.hello(b"a/b wazuh worker 4.7.5")))

    def test_long_names_are_cut_in_the_log(self) -> None:
        """A 30 000-character name does not make a 30 000-character log line."""
        self.hello(b"w" * 30000 + b" wazuh worker 4.7.5")
        [line] = [line for line in self.logged() if "Refused worker" in line]
        self.assertLess(len(line), 1000)


class WorkerDirectoryTests(SynchronousTestCase):
    """queue/cluster/<worker>/ exists only while a connected worker uses it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = node_config(short_tempdir(self))
        self.node = MasterNode(self.config, self.clock, SynchronousRunner())
        self.factory = ClusterServerFactory(self.node)
        self.directory = os.path.join(self.config.home, "queue", "cluster", "worker-1")

    def test_directory_made_by_the_first_file_and_removed_on_disconnect(self) -> None:
        """hello alone leaves no directory; a file makes it (0770); disconnect removes it."""
        _, client, pump = connected_pair(
            lambda: self.factory.buildProtocol(None),
            lambda: ClusterProtocol(RecordingHandler(), self.clock,
                                    codec=FernetCodec(VECTOR_KEY)), self.clock)
        d = client.request(HELLO, b"worker-1 wazuh worker 4.7.5")
        pump.flush()
        self.successResultOf(d)
        self.assertFalse(os.path.exists(self.directory))
        relpath = b"/queue/cluster/worker-1/upload.zip"
        d = client.request(NEW_FILE, relpath)
        pump.flush()
        self.successResultOf(d)
        self.assertEqual(os.stat(self.directory).st_mode & 0o777, 0o770)
        d = client.request(FILE_UPD, relpath + b" partial")
        pump.flush()
        self.successResultOf(d)
        client.transport.loseConnection()
        pump.flush()
        self.assertFalse(os.path.exists(self.directory))

    def test_many_hellos_leave_no_directories(self) -> None:
        """Hellos with 50 different names leave queue/cluster/ as it was."""
        cluster_dir = os.path.join(self.config.home, "queue", "cluster")
        os.makedirs(cluster_dir, exist_ok=True)
        before = set(os.listdir(cluster_dir))
        for i in range(50):
            _, client, pump = connected_pair(
                lambda: self.factory.buildProtocol(None),
                lambda: ClusterProtocol(RecordingHandler(), self.clock,
                                        codec=FernetCodec(VECTOR_KEY)), self.clock)
            d = client.request(HELLO, f"worker-{i} wazuh worker 4.7.5".encode())
            pump.flush()
            self.successResultOf(d)
            client.transport.loseConnection()
            pump.flush()
        self.assertEqual(set(os.listdir(cluster_dir)), before)
