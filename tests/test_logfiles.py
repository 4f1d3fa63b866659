"""Daily rotation and JSON lines of the node's log file (wazuhcluster.logfiles)."""

from __future__ import annotations

import gzip
import json
import os
import time
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.errors import ConfigError
from wazuhcluster.logfiles import (
    ClusterLogFile,
    archive,
    format_json_line,
    logging_settings,
    next_midnight,
    prune,
    quiet_port_noise,
)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))


def sync_archiver(*args: Any) -> Deferred[None]:
    archive(*args)
    return succeed(None)


def emit(publisher: LogPublisher, clock: Clock, text: str) -> None:
    publisher({"log_format": text, "log_level": LogLevel.info, "log_time": clock.seconds(),
               "log_namespace": "test", "log_source": None})


class RotationTests(SynchronousTestCase):
    """Midnight rotation into logs/cluster/YYYY/Mon/cluster.log-DD.gz, retention, restarts."""

    def setUp(self) -> None:
        self.logs = os.path.join(self.mktemp(), "logs")
        self.path = os.path.join(self.logs, "cluster.log")
        self.clock = Clock()
        self.clock.advance(local(2026, 3, 14, 23, 59))
        self.publisher = LogPublisher()

    def service(self, **kwargs: Any) -> ClusterLogFile:
        service = ClusterLogFile(self.path, 0, self.clock, publisher=self.publisher,
                                 archiver=sync_archiver, **kwargs)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def read_archive(self, year: str, month: str, name: str) -> str:
        with gzip.open(os.path.join(self.logs, "cluster", year, month, name), "rt") as f:
            return f.read()

    def test_rotates_at_local_midnight_into_wazuh_layout(self) -> None:
        self.service()
        emit(self.publisher, self.clock, "[Cluster] [Main] before midnight")
        self.clock.advance(59)
        self.assertFalse(os.path.exists(os.path.join(self.logs, "cluster")))
        self.clock.advance(1)  # 2026-03-15 00:00 local
        emit(self.publisher, self.clock, "[Cluster] [Main] after midnight")
        self.assertIn("before midnight", self.read_archive("2026", "Mar", "cluster.log-14.gz"))
        with open(self.path) as f:
            current = f.read()
        self.assertIn("after midnight", current)
        self.assertNotIn("before midnight", current)
        st = os.stat(os.path.join(self.logs, "cluster", "2026", "Mar", "cluster.log-14.gz"))
        self.assertEqual(st.st_mode & 0o777, 0o640)
        self.assertEqual(os.stat(os.path.join(self.logs, "cluster", "2026")).st_mode & 0o777,
                         0o750)
        self.assertEqual([n for n in os.listdir(self.logs) if "rotating" in n], [])
        self.clock.advance(24 * 3600)  # and again the next night
        self.assertTrue(os.path.exists(os.path.join(self.logs, "cluster", "2026", "Mar",
                                                    "cluster.log-15.gz")))

    def test_a_log_from_an_earlier_day_is_rotated_at_start(self) -> None:
        os.makedirs(self.logs)
        with open(self.path, "w") as f:
            f.write("old line\n")
        old = local(2026, 3, 10, 12)
        os.utime(self.path, (old, old))
        self.service()
        self.assertEqual(self.read_archive("2026", "Mar", "cluster.log-10.gz"), "old line\n")
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_retention_deletes_archives_older_than_keep_days(self) -> None:
        root = os.path.join(self.logs, "cluster")
        for year, month, day in (("2026", "Jan", "01"), ("2026", "Mar", "01"),
                                 ("2026", "Mar", "12"), ("2025", "Dec", "31")):
            os.makedirs(os.path.join(root, year, month), exist_ok=True)
            open(os.path.join(root, year, month, f"cluster.log-{day}.gz"), "w").close()
        removed = prune(root, 5, local(2026, 3, 15, 1))
        self.assertEqual(sorted(removed), ["2025/Dec/cluster.log-31.gz",
                                           "2026/Jan/cluster.log-01.gz",
                                           "2026/Mar/cluster.log-01.gz"])
        self.assertEqual(os.listdir(root), ["2026"])
        self.assertEqual(os.listdir(os.path.join(root, "2026", "Mar")), ["cluster.log-12.gz"])

    def test_rotation_applies_retention(self) -> None:
        old_dir = os.path.join(self.logs, "cluster", "2026", "Jan")
        os.makedirs(old_dir)
        open(os.path.join(old_dir, "cluster.log-02.gz"), "w").close()
        self.service(keep_days=10)
        self.clock.advance(60)
        self.assertFalse(os.path.exists(old_dir))
        self.assertTrue(os.path.exists(os.path.join(self.logs, "cluster", "2026", "Mar",
                                                    "cluster.log-14.gz")))

    def test_second_rotation_the_same_day_keeps_both(self) -> None:
        target = os.path.join(self.logs, "cluster", "2026", "Mar", "cluster.log-14.gz")
        for content in (b"one\n", b"two\n"):
            rotated = os.path.join(self.mktemp())
            with open(rotated, "wb") as f:
                f.write(content)
            archive(rotated, target, os.path.join(self.logs, "cluster"), 0, self.clock.seconds())
        self.assertEqual(self.read_archive("2026", "Mar", "cluster.log-14_1.gz"), "two\n")

    def test_next_midnight(self) -> None:
        self.assertEqual(next_midnight(local(2026, 12, 31, 13)), local(2027, 1, 1))


class JsonFormatTests(SynchronousTestCase):
    """--log-format json and the logging settings."""

    def test_json_line_has_tags_and_message(self) -> None:
        line = format_json_line({"log_format": "[Worker w1] [Integrity sync] {n} files.",
                                 "n": 3, "log_level": LogLevel.warn, "log_time": 0.0})
        assert line is not None
        self.assertTrue(line.endswith("}\n"))
        value = json.loads(line)
        self.assertEqual((value["levelname"], value["tag"], value["subtag"], value["message"]),
                         ("WARNING", "Worker w1", "Integrity sync", "3 files."))
        self.assertRegex(value["timestamp"], r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d$")
        self.assertIsNone(format_json_line({"log_format": "x", "log_level": LogLevel.debug}))

    def test_port_lines_are_debug(self) -> None:
        """Twisted's "LocalAPIFactory starting on ..." and "(UNIX Port ... Closed)" lines are
        debug; a legacy line with other text stays info."""
        for text in ("LocalAPIFactory starting on '/var/ossec/queue/cluster/c-internal.sock'",
                     "(UNIX Port /var/ossec/queue/cluster/c-internal.sock Closed)",
                     "ClusterServerFactory starting on 1516", "(TCP Port 1516 Closed)"):
            event = {"log_namespace": "log_legacy", "log_level": LogLevel.info,
                     "log_format": "{log_text}", "log_text": text}
            self.assertEqual(quiet_port_noise(event)["log_level"], LogLevel.debug, text)
        other = {"log_namespace": "log_legacy", "log_level": LogLevel.info,
                 "log_format": "{log_text}", "log_text": "Main loop terminated."}
        self.assertEqual(quiet_port_noise(other)["log_level"], LogLevel.info)

    def test_settings(self) -> None:
        self.assertEqual(logging_settings({}), ("plain", 31))
        self.assertEqual(logging_settings({"logging": {"format": "json", "keep_days": 0}}),
                         ("json", 0))
        self.assertEqual(logging_settings({"logging": {"format": "json"}}, "plain")[0], "plain")
        self.assertRaises(ConfigError, logging_settings, {}, "xml")
        self.assertRaises(ConfigError, logging_settings, {"logging": {"keep_days": -1}})
        self.assertRaises(ConfigError, logging_settings, {"logging": {"rotate": "no"}})
