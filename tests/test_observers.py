"""cluster.log line format."""

from __future__ import annotations

import re

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.observers import format_cluster_line

LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (DEBUG2|DEBUG|INFO|WARNING|ERROR|CRITICAL):"
                  r" \[[^\]]+\] \[[^\]]+\] ")


def event(fmt: str, level: LogLevel = LogLevel.info, **fields: object) -> dict[str, object]:
    """A log event."""
    return {"log_format": fmt, "log_level": level, "log_time": 1700000000.0, **fields}


class ClusterLineTests(SynchronousTestCase):
    """format_cluster_line renders Wazuh's format."""

    def test_tagged_message(self) -> None:
        """Our tagged messages keep their tags, with Wazuh's date and level."""
        line = format_cluster_line(event("[{tag}] [Integrity sync] Starting.",
                                         tag="Worker worker1"))
        assert line is not None
        self.assertRegex(line, LINE)
        self.assertTrue(line.endswith("INFO: [Worker worker1] [Integrity sync] Starting.\n"))

    def test_untagged_messages_get_cluster_main(self) -> None:
        """Twisted's own messages are tagged [Cluster] [Main]."""
        line = format_cluster_line(event("Main loop terminated.", LogLevel.warn))
        self.assertIn("WARNING: [Cluster] [Main] Main loop terminated.", line or "")

    def test_debug_levels(self) -> None:
        """DEBUG needs -d, DEBUG2 needs -dd."""
        debug = event("[Master] [Main] x", LogLevel.debug)
        debug2 = event("[Master] [Main] y", LogLevel.debug, debug2=True)
        self.assertIsNone(format_cluster_line(debug, 0))
        self.assertIn("DEBUG: ", format_cluster_line(debug, 1) or "")
        self.assertIsNone(format_cluster_line(debug2, 1))
        self.assertIn("DEBUG2: ", format_cluster_line(debug2, 2) or "")

    def test_failures_are_one_line_unless_dd(self) -> None:
        """A failure adds its message; the traceback only at DEBUG2."""
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        e = event("[Master] [Main] Failed", LogLevel.critical, log_failure=failure)
        self.assertEqual((format_cluster_line(e, 0) or "").count("\n"), 1)
        self.assertIn("Traceback", format_cluster_line(e, 2) or "")
