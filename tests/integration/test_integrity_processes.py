"""Integrity sync with real processes: a master and workers converge byte for byte.

Uses :mod:`tests.integration.harness` (real ``twistd wazuhcluster`` children, polling under
deadlines). Intervals are short; pushes on change come from the master's inotify watcher.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.trial.unittest import TestCase

from tests.integration.harness import Cluster, NodeProcess, ended_by
from wazuhcluster.integrity.items import load_cluster_items
from wazuhcluster.integrity.metadata import file_digest, scan_items

#: Integrity timers short enough for tests (the watcher pushes changes sooner).
FAST_INTEGRITY: dict[str, Any] = {
    "intervals": {"worker": {"sync_integrity": 1}, "master": {"recalculate_integrity": 1}},
}
CONNECTED = r"\[Main\] Successfully connected to master\."
ITEMS = load_cluster_items()


def tree(node: NodeProcess) -> dict[str, str]:
    """``path -> BLAKE2b`` of every cluster item file of a node."""
    return {path: entry.hash for path, entry in scan_items(node.home, ITEMS).files.items()}


def write(node: NodeProcess, files: dict[str, bytes]) -> None:
    """Create or overwrite files under a node's home."""
    for relative, content in files.items():
        path = os.path.join(node.home, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def write_by_rename(node: NodeProcess, files: dict[str, bytes]) -> None:
    """Create files under a node's home the way deployment tools do: each written as
    ``<name>.tmp`` (an excluded extension) and renamed into place, so that the node never
    has a partial version of one to push."""
    for relative, content in files.items():
        path = os.path.join(node.home, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(content)
        os.replace(path + ".tmp", path)


def complete_merged(data: bytes) -> bool:
    """True if ``data`` is a whole merged.mg: a ``#`` header line, then ``!<size> <name>``
    records whose contents are exactly ``size`` bytes, up to the end."""
    header_end = data.find(b"\n")
    if not data.startswith(b"#") or header_end < 0:
        return False
    position = header_end + 1
    while position < len(data):
        line_end = data.find(b"\n", position)
        if data[position:position + 1] != b"!" or line_end < 0:
            return False
        size = data[position + 1:line_end].split(b" ", 1)[0]
        if not size.isdigit():
            return False
        position = line_end + 1 + int(size)
    return position == len(data)


class IntegrityProcessTests(TestCase):
    """Master + workers as processes."""

    timeout = 60

    async def converged(self, c: Cluster, master: NodeProcess, *workers: NodeProcess,
                        timeout: float = 20.0) -> dict[str, str]:
        """Wait until every worker's item files are byte-identical to the master's."""
        def same() -> bool:
            wanted = tree(master)
            return all(tree(w) == wanted for w in workers)
        await c.wait_for("the workers to match the master's files", same, timeout)
        return tree(master)

    async def test_two_workers_follow_create_modify_delete_and_repair_tampering(self) -> None:
        """Every change on the master reaches both workers; a worker's own edit is undone."""
        c = Cluster(self)
        m, (w1, w2) = await c.start_cluster("worker-1", "worker-2",
                                            master_tunables=FAST_INTEGRITY,
                                            worker_tunables=FAST_INTEGRITY)
        for w in (w1, w2):
            await c.wait_log(w, CONNECTED)
        write(m, {
            "etc/client.keys": b"001 agent-1 any 0123456789abcdef0123456789abcdef\n",
            "etc/rules/local_rules.xml": b"<group name='local'><rule id='100001'/></group>\n",
            "etc/rules/sub/more.xml": b"<group name='more'/>\n",
            "etc/decoders/local_decoder.xml": b"<decoder name='local'/>\n",
            "etc/lists/audit-keys": b"audit-wazuh-w:write\n",
            "etc/shared/group1/agent.conf": b"<agent_config/>\n",
            "etc/shared/group1/merged.mg": b"!20 merged\n",
        })
        files = await self.converged(c, m, w1, w2)
        self.assertIn("etc/shared/group1/merged.mg", files)
        self.assertIn("etc/client.keys", files)
        mode = os.stat(os.path.join(w1.home, "etc/client.keys")).st_mode & 0o777
        self.assertEqual(mode, 0o640)

        write(m, {"etc/rules/local_rules.xml": b"<group name='local'><rule id='100002'/></group>\n",
                  "etc/lists/new-list": b"k:v\n"})
        os.unlink(os.path.join(m.home, "etc/decoders/local_decoder.xml"))
        os.unlink(os.path.join(m.home, "etc/shared/group1/agent.conf"))
        os.unlink(os.path.join(m.home, "etc/shared/group1/merged.mg"))
        os.rmdir(os.path.join(m.home, "etc/shared/group1"))
        files = await self.converged(c, m, w1, w2)
        self.assertIn("etc/lists/new-list", files)
        self.assertNotIn("etc/decoders/local_decoder.xml", files)
        self.assertFalse(os.path.exists(os.path.join(w2.home, "etc/shared/group1")))

        write(w1, {"etc/rules/local_rules.xml": b"tampered", "etc/rules/rogue.xml": b"<x/>"})
        await self.converged(c, m, w1, w2)
        self.assertFalse(os.path.exists(os.path.join(w1.home, "etc/rules/rogue.xml")))
        await c.wait_log(m, r"\[Worker worker-1\] \[Integrity sync\] Files to create in worker: "
                            r"\d+ \| Files to update in worker: \d+ \| Files to delete in "
                            r"worker: \d+")
        health = await c.health(m)
        status = health["nodes"]["worker-1"]["status"]
        self.assertNotEqual(status["last_check_integrity"]["date_start_master"], "n/a")
        self.assertNotEqual(status["last_sync_integrity"]["date_end_master"], "n/a")
        self.assertEqual(set(status["last_sync_integrity"]["total_files"]),
                         {"missing", "shared", "extra"})

    async def test_burst_of_1000_edits_ends_with_the_last_content_on_every_worker(
            self) -> None:
        """1 000 rewrites of a rules file as fast as they go, and 1 000 more by rename:
        every worker ends with the last content, carried by the watcher alone (timers at
        10 minutes)."""
        slow: dict[str, Any] = {"intervals": {"worker": {"sync_integrity": 600},
                                              "master": {"recalculate_integrity": 600}}}
        c = Cluster(self)
        m, workers = await c.start_cluster("worker-1", "worker-2", "worker-3",
                                           master_tunables=slow, worker_tunables=slow)
        for w in workers:
            await c.wait_log(w, CONNECTED)
        rules = os.path.join(m.home, "etc/rules/local_rules.xml")
        for i in range(1000):
            with open(rules, "wb") as f:
                f.write(b"<group name='burst'><rule id='%d'/></group>\n" % i)
        await self.converged(c, m, *workers)
        with open(os.path.join(workers[2].home, "etc/rules/local_rules.xml"), "rb") as f:
            self.assertIn(b"id='999'", f.read())
        for i in range(1000):  # the way editors and deployment tools replace files
            temporary = rules + ".tmp"
            with open(temporary, "wb") as f:
                f.write(b"<group name='renamed'><rule id='%d'/></group>\n" % i)
            os.rename(temporary, rules)
        files = await self.converged(c, m, *workers)
        self.assertEqual(files["etc/rules/local_rules.xml"], file_digest(rules))

    async def test_sigkill_during_apply_leaves_no_half_written_file(self) -> None:
        """A worker killed while applying 5 000 files has each file absent or complete;
        after a restart the next round converges.

        The master's files are renamed into place: written in place, a file can be pushed
        as the empty file it is between its creation and its write (a later push brings
        its content), and that would look like a file the kill left half-written.
        """
        c = Cluster(self)
        m, (w,) = await c.start_cluster("worker-1", master_tunables=FAST_INTEGRITY,
                                        worker_tunables=FAST_INTEGRITY)
        await c.wait_log(w, CONNECTED)
        since = w.log_size()
        write_by_rename(m, {f"etc/shared/big/file-{i:05d}.conf": os.urandom(2048) + b"%d" % i
                            for i in range(5000)})
        await c.wait_for("the worker to start applying",
                         lambda: w.grep(r"\[Integrity sync\] Starting\.", since), 20.0)
        await w.stop(signal.SIGKILL)
        wanted = tree(m)
        present = 0
        for path, digest in wanted.items():
            local = os.path.join(w.home, path)
            if os.path.exists(local):
                present += 1
                if path.endswith("/merged.mg") and file_digest(local) != digest:
                    # The master regenerates merged.mg while the group's files arrive, and
                    # the watcher pushes within milliseconds: an earlier version is fine,
                    # a truncated one is not.
                    with open(local, "rb") as f:
                        self.assertTrue(complete_merged(f.read()), f"{path} is half-written")
                    continue
                self.assertEqual(file_digest(local), digest, f"{path} is half-written")
        for directory, _, names in os.walk(os.path.join(w.home, "etc")):
            for name in names:
                relative = os.path.relpath(os.path.join(directory, name), w.home)
                self.assertTrue(relative in wanted or relative in ("etc/ossec.conf",
                                                                   "etc/cluster-test.json"),
                                f"unexpected file {relative} after the kill")
        self.assertLessEqual(present, len(wanted))
        w.start()
        await self.converged(c, m, w, timeout=30.0)

        # A clean stop in the middle of a round does not hang on the integrity work.
        since = w.log_size()
        write(m, {f"etc/shared/more/file-{i:04d}.conf": os.urandom(2048) for i in range(2000)})
        await c.wait_for("the worker to start a round",
                         lambda: w.grep(r"\[Integrity (check|sync)\] Starting\.", since), 20.0)
        # (no wall-clock bound: a worker that hangs on SIGTERM is SIGKILLed after the
        # timeout, and then did not stop by itself)
        reason = await w.stop(signal.SIGTERM, timeout=60.0)
        self.assertIn(ended_by(reason), [(0, None), (None, signal.SIGTERM)],
                      f"SIGTERM did not stop the worker by itself: {reason!r}")

    async def test_push_larger_than_max_zip_size_completes_over_several_rounds(self) -> None:
        """With a 64 KiB zip limit, 1 MiB of incompressible files arrives in several rounds."""
        c = Cluster(self)
        small_zip = {"intervals": {**FAST_INTEGRITY["intervals"],
                                   "communication": {"max_zip_size": 65536,
                                                     "min_zip_size": 16384}}}
        m, (w,) = await c.start_cluster("worker-1", master_tunables=small_zip,
                                        worker_tunables=small_zip)
        await c.wait_log(w, CONNECTED)
        write(m, {f"etc/lists/big/list-{i:02d}": os.urandom(16384) for i in range(64)})
        await self.converged(c, m, w, timeout=30.0)
        rounds = m.grep(r"\[Worker worker-1\] \[Integrity sync\] Zip limit of 65536 bytes")
        self.assertGreaterEqual(len(rounds), 3)
