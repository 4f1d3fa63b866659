"""Log lines of real processes: the worker's Starting line, no port noise at INFO, JSON lines,
the wrong-key hint."""

from __future__ import annotations

import calendar
import gzip
import json
import os
import time

from twisted.trial.unittest import TestCase

from tests.integration.harness import Cluster, random_key

CONNECTED = r"\[Main\] Successfully connected to master\."


class LogProcessTests(TestCase):
    """A master and workers as processes."""

    timeout = 60

    async def test_starting_line_json_format_and_no_port_noise(self) -> None:
        c = Cluster(self)
        m = c.add_node("master", "master").start()
        await c.wait_ready(m)
        w = c.add_node("worker-1")
        w.extra_args = ["--log-format", "json"]
        w.start()
        json_log = os.path.join(w.home, "logs", "cluster.json")

        def connected() -> list[dict[str, str]]:
            try:
                with open(json_log, encoding="utf-8") as f:
                    lines = [json.loads(line) for line in f]
            except FileNotFoundError:
                return []
            return lines if any("Successfully connected" in e["message"]
                                for e in lines) else []
        lines = await c.wait_for("the worker's JSON log to say it connected", connected)
        starting = [e for e in lines if e["message"].startswith("Starting worker")]
        self.assertEqual(len(starting), 1, lines)
        self.assertEqual((starting[0]["tag"], starting[0]["subtag"], starting[0]["levelname"]),
                         ("Worker worker-1", "Main", "INFO"))
        self.assertIn(f"master 127.0.0.1:{c.port}, version 4.7.5.", starting[0]["message"])
        self.assertFalse(os.path.exists(w.log_path))
        await c.wait_log(m, r"\[Local Server\] \[Main\] Serving on")
        self.assertEqual(m.grep(r"INFO: .*starting on"), [])
        self.assertNotEqual(m.grep(r"DEBUG: .*LocalAPIFactory starting on"), [])

    async def test_wrong_key_names_the_cause(self) -> None:
        c = Cluster(self)
        m = c.add_node("master", "master").start()
        await c.wait_ready(m)
        w = c.add_node("worker-1", key=random_key()).start()
        lines = await c.wait_log(w, r"ERROR: \[Worker\] \[Main\] Could not connect to "
                                    r"master: the master dropped the link during hello; a "
                                    r"wrong key is the usual cause", count=2)
        self.assertIn("refused 1 time(s) in a row", lines[0])
        self.assertIn("refused 2 time(s) in a row", lines[1])
        self.assertEqual(w.grep(CONNECTED), [])

    async def test_log_of_an_earlier_day_is_archived_at_start(self) -> None:
        """A cluster.log last written yesterday goes to logs/cluster/YYYY/Mon/cluster.log-DD.gz."""
        c = Cluster(self)
        m = c.add_node("master", "master")
        with open(m.log_path, "w", encoding="utf-8") as f:
            f.write("2000/01/01 00:00:00 INFO: [Cluster] [Main] yesterday's line\n")
        yesterday = time.time() - 86400
        os.utime(m.log_path, (yesterday, yesterday))
        day = time.localtime(yesterday)
        archive = os.path.join(m.home, "logs", "cluster", str(day.tm_year),
                               calendar.month_abbr[day.tm_mon], f"cluster.log-{day.tm_mday:02d}.gz")
        m.start()
        await c.wait_ready(m)
        await c.wait_for("the archive of yesterday's log", lambda: os.path.exists(archive))
        with gzip.open(archive, "rt", encoding="utf-8") as f:
            self.assertIn("yesterday's line", f.read())
        self.assertEqual(m.grep("yesterday's line"), [])
        self.assertNotEqual(m.grep(r"Starting master"), [])
