"""Disk full while a worker receives a push: partial file removed, task ended, backoff."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.integrity import vectors
from tests.integrity.pairs import IntegrityPair
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol import transfers
from wazuhcluster.protocol.commands import SYN_I_W_M, SYN_I_W_M_E, SYN_I_W_M_P, SYN_M_C_R
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore, send_file


class DiskFullRunner(SynchronousRunner):
    """Runs inline; every append fails with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        self.full = True

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Fail appends like a full disk."""
        if f is transfers._append and self.full:
            return super().run(_raise_enospc)
        return super().run(f, *args, **kwargs)


def _raise_enospc() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class FileReceiverDiskFullTests(SynchronousTestCase):
    """The receiving side."""

    def test_enospc_removes_the_partial_file_and_logs_one_error(self) -> None:
        """ENOSPC: ClusterError for the sender, partial file gone at once, one ERROR line
        naming the directory (no traceback)."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        home = self.mktemp()
        os.makedirs(home)
        runner = DiskFullRunner()
        receiver = FileReceiver(home, runner.run)
        receiver.directory_name = b"worker1"
        relpath = b"/queue/cluster/worker1/c.zip"
        self.successResultOf(Deferred.fromCoroutine(receiver.new_file(relpath)))
        path = os.path.join(home, "queue", "cluster", "worker1", "c.zip")
        self.assertTrue(os.path.exists(path))
        d = Deferred.fromCoroutine(receiver.update(relpath + b" " + b"x" * 1000))
        error = self.failureResultOf(d, ClusterError).value
        self.assertIn("no space left", str(error))
        self.assertFalse(os.path.exists(path))
        logged = [e for e in events if e["log_level"] >= LogLevel.error]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["log_level"], LogLevel.error)
        self.assertNotIn("log_failure", logged[0])
        text = formatEvent(logged[0])
        self.assertIn(os.path.join(home, "queue", "cluster", "worker1"), text)
        self.assertIn("1000 bytes", text)


class MasterEndsTheTaskTests(SynchronousTestCase):
    """The master's side: syn_m_c_r after a failed file_upd, and backoff."""

    def test_failed_push_is_ended_with_syn_m_c_r_and_backs_off_then_recovers(self) -> None:
        """A push refused by a full worker disk is ended with syn_m_c_r; the next checks are
        refused for sync_retry_initial_delay, doubling; once space is back it succeeds."""
        pair = IntegrityPair(self, master_json={"wazuhcluster": {
            "sync_retry_initial_delay": 10, "sync_retry_max_delay": 25}})
        vectors.write_tree(pair.master_config.home, vectors.sample_tree())
        pair.recalculate()
        fake = pair.fake_worker("worker-1")
        runner = DiskFullRunner()
        fake.files = FileReceiver(os.path.join(pair.base, "worker-1"), runner.run)
        fake.files.directory_name = b"worker-1"
        fake.common = CommonResponders(StringStore(pair.clock), fake.files, lambda: "w")

        def check() -> bytes:
            peer = fake.protocol
            assert peer is not None
            granted = self.successResultOf(pair.request(peer, SYN_I_W_M_P, b""))
            if granted != b"True":
                return granted
            task = self.successResultOf(pair.request(peer, SYN_I_W_M, b""))
            relpath = (b"/queue/cluster/worker-1/worker-1-1795749401.68925-"
                       b"ce553a9b6bdd4d71a56e1255ff4f567a.zip")
            sent = Deferred.fromCoroutine(send_file(
                peer, str(vectors.INTEGRITY / "worker_integrity_check.zip"), relpath,
                SynchronousRunner().run))
            pair.settle()
            self.successResultOf(sent)
            self.successResultOf(pair.request(peer, SYN_I_W_M_E, task + b" " + relpath[1:]))
            return granted

        self.assertEqual(check(), b"True")
        self.assertIn(SYN_M_C_R, fake.requests)
        self.assertEqual(fake.pushed, [])
        # nothing of the failed push is left on the worker
        self.assertEqual(os.listdir(os.path.join(pair.base, "worker-1", "queue", "cluster",
                                                 "worker-1")), [])
        pair.recalculate()
        self.assertEqual(check(), b"False")  # backing off
        pair.clock.advance(10)
        pair.recalculate()
        fake.requests.clear()
        self.assertEqual(check(), b"True")  # second failure: 20 s now
        self.assertIn(SYN_M_C_R, fake.requests)
        pair.clock.advance(15)
        pair.recalculate()
        self.assertEqual(check(), b"False")
        pair.clock.advance(5)
        pair.recalculate()
        runner.full = False  # the operator freed space
        fake.requests.clear()
        self.assertEqual(check(), b"True")
        self.assertNotIn(SYN_M_C_R, fake.requests)
        self.assertEqual(len(fake.pushed), 1)
        pair.recalculate()
        self.assertEqual(check(), b"True")  # success reset the backoff
