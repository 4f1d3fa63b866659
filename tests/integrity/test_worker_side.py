"""Worker side of the integrity check and sync, and the coalescing runner."""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.integrity.pairs import IntegrityPair, ThreadedExtractions, write_files
from tests.support import VECTOR_KEY, node_config, read_vector, short_tempdir
from wazuhcluster.errors import RemoteCommandError
from wazuhcluster.integrity import apply as apply_module
from wazuhcluster.integrity import master_side
from wazuhcluster.integrity.apply import SMALL_PUSH_FILES
from wazuhcluster.integrity.compare import Comparison
from wazuhcluster.integrity.container import (
    ContainerLimits,
    read_container_bytes,
    write_sync_container,
)
from wazuhcluster.integrity.errors import ContainerError
from wazuhcluster.integrity.items import parse_cluster_items
from wazuhcluster.integrity.metadata import scan_items
from wazuhcluster.integrity.scheduling import Coalescer
from wazuhcluster.integrity.worker_side import PUSH_PROGRESS_BYTES, Extractions, stage_followed
from wazuhcluster.interfaces import IWorkerExtension
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.chunks import Reassembler
from wazuhcluster.protocol.commands import (
    FILE_END,
    FILE_UPD,
    NEW_FILE,
    SYN_M_C,
    SYN_M_C_E,
    SYN_M_C_R,
    SYNC_NOW,
)
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import FrameDecoder
from wazuhcluster.protocol.transfers import FollowedFile, FollowError

FILES = {
    "etc/rules/local_rules.xml": b"<group name='local'></group>\n",
    "etc/shared/default/agent.conf": b"<agent_config></agent_config>\n",
    "etc/lists/audit-keys": b"audit-wazuh-w:write\n",
}


def count(events: list[Any], text: str) -> int:
    """How many logged events have ``text`` in their format."""
    return sum(1 for e in events if text in e.get("log_format", ""))


class CoalescerTests(SynchronousTestCase):
    """Never two runs at once; requests during a run fold into exactly one more."""

    def setUp(self) -> None:
        self.started: list[Deferred[None]] = []
        self.coalescer = Coalescer(self.work, "[Test] [Test]")

    async def work(self) -> None:
        """One run: waits until the test fires it."""
        d: Deferred[None] = Deferred()
        self.started.append(d)
        await d

    def test_requests_during_a_run_schedule_exactly_one_more(self) -> None:
        """Three requests during a run give one more run, and all three wait for it."""
        first = self.coalescer.request()
        self.assertEqual(len(self.started), 1)
        during = [self.coalescer.request() for _ in range(3)]
        self.assertEqual(len(self.started), 1)  # never two at once
        self.started[0].callback(None)
        self.successResultOf(first)
        for d in during:
            self.assertNoResult(d)  # they wait for a run that started after them
        self.assertEqual(len(self.started), 2)
        self.started[1].callback(None)
        for d in during:
            self.successResultOf(d)
        self.assertEqual(self.coalescer.runs, 2)
        self.assertFalse(self.coalescer.running)

    def test_a_failing_run_is_logged_and_does_not_stop_later_runs(self) -> None:
        """An escaping error is logged; the waiters still fire and the next run happens."""
        d = self.coalescer.request()
        self.started[0].errback(ValueError("boom"))
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.coalescer.request()
        self.assertEqual(len(self.started), 2)


class WorkerIntegrityTests(SynchronousTestCase):
    """Our worker against our master, in memory."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.pair = IntegrityPair(self)
        write_files(self.pair.master_config.home, FILES)
        self.pair.recalculate()
        self.pair.connect()
        self.assertTrue(self.pair.in_sync())

    def test_extension_provides_the_interface(self) -> None:
        """The worker extension passes verifyObject."""
        self.assertTrue(verifyObject(IWorkerExtension, self.pair.worker_integrity))

    def test_tampered_file_is_restored_at_the_next_check(self) -> None:
        """The master wins: a file changed on the worker is overwritten, extra ones go."""
        home = self.pair.worker_config.home
        write_files(home, {"etc/rules/local_rules.xml": b"tampered",
                           "etc/rules/dropped.xml": b"<x/>"})
        self.pair.recalculate()  # a new cycle; nothing changed on the master
        self.pair.worker_integrity.checks.request()
        self.pair.settle()
        self.assertTrue(self.pair.in_sync())
        self.assertFalse(os.path.exists(os.path.join(home, "etc/rules/dropped.xml")))

    def test_disk_full_check_logged_once_and_recovers(self) -> None:
        """No room for the check's container: one ERROR line naming the directory however many
        checks fail, then one line when space is back and the sync goes on."""
        import errno

        from wazuhcluster.integrity import worker_side
        pair = self.pair
        real = worker_side.scan_and_write

        def full(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")
        worker_side.scan_and_write = full  # type: ignore[assignment]
        try:
            for _ in range(3):
                pair.clock.advance(61)  # past the master's retry back-off
                pair.recalculate()
                pair.worker_integrity.checks.request()
                pair.settle()
        finally:
            worker_side.scan_and_write = real  # type: ignore[assignment]
        lines = [formatEvent(e) for e in self.events
                 if e.get("log_format") == "[{tag}] [Integrity check] {error}"]
        self.assertEqual(len(lines), 1)
        self.assertIn("No space left on device in ", lines[0])
        self.assertIn(os.path.join("queue", "cluster"), lines[0])
        pair.clock.advance(61)
        pair.recalculate()
        pair.worker_integrity.checks.request()
        pair.settle()
        self.assertEqual(count(self.events, "Space is available again"), 1)
        self.assertTrue(pair.in_sync())

    def test_sync_now_during_a_check_runs_exactly_one_more(self) -> None:
        """Three wzc_syncnow while a check runs: one more check, not three, never two at once."""
        pair = self.pair
        pair.recalculate()
        asked = count(self.events, "Permission to synchronize")
        pair.worker_integrity.checks.request()  # permission request queued, not delivered
        self.assertTrue(pair.worker_integrity.checks.running)
        replies = [pair.server.request(SYNC_NOW, b"") for _ in range(3)]
        pair.settle()
        for reply in replies:
            self.assertEqual(self.successResultOf(reply), b"Check scheduled")
        self.assertEqual(count(self.events, "Permission to synchronize") - asked, 2)
        self.assertFalse(pair.worker_integrity.checks.running)

    def test_end_naming_a_file_not_received_is_refused(self) -> None:
        """syn_m_c_e naming anything but a file received here is 3034; nothing is touched."""
        pair = self.pair
        planted = os.path.join(pair.worker_config.home, "queue", "cluster", "worker-1",
                               "planted.zip")
        with open(planted, "wb") as f:
            f.write(b"not from the master")
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        d = pair.request(pair.server, SYN_M_C_E, task + b" queue/cluster/worker-1/planted.zip")
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3034)
        self.assertTrue(os.path.exists(planted))
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertEqual(count(self.events, "Error reported by the worker"), 1)
        d = pair.request(pair.server, SYN_M_C_E, b"unknown queue/cluster/worker-1/planted.zip")
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3027)

    def test_push_without_container_times_out_with_cancel_task(self) -> None:
        """No syn_m_c_e within timeout_receiving_file: cancel_task to the master."""
        pair = self.pair
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        pair.clock.advance(pair.worker_config.intervals.timeout_receiving_file + 1)
        pair.settle()
        self.assertIn(task.decode(), pair.server.handler.common.cancelled_tasks)
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)

    def test_push_still_arriving_is_not_timed_out(self) -> None:
        """While the master keeps sending (a big container over a slow link), the wait for the
        push is extended; once nothing more arrives, it times out with cancel_task."""
        pair = self.pair
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        timeout = pair.worker_config.intervals.timeout_receiving_file
        for _ in range(3):
            pair.clock.advance(timeout - 1)
            pair.client.bytes_received += PUSH_PROGRESS_BYTES  # chunks arriving meanwhile
            pair.clock.advance(1)
            pair.settle()
            self.assertNotIn(task.decode(), pair.server.handler.common.cancelled_tasks)
        pair.clock.advance(timeout + 1)
        pair.settle()
        self.assertIn(task.decode(), pair.server.handler.common.cancelled_tasks)
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)

    def test_master_error_ends_the_push(self) -> None:
        """syn_m_c_r for a push task ends it and is reported back with syn_i_w_m_r."""
        pair = self.pair
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        d = pair.request(pair.server, SYN_M_C_R, task + b" not json")
        self.assertEqual(self.successResultOf(d), b"Error received")
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertEqual(count(self.events, "Error reported by the worker"), 1)

    def test_check_asked_during_a_push_runs_after_it(self) -> None:
        """A check requested while a push is being received or applied (a direct push has
        no check waiting for it) is not dropped: it runs once the push has ended."""
        pair = self.pair
        runs = pair.worker_integrity.checks.runs
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        write_files(pair.worker_config.home, {"etc/lists/audit-keys": b"tampered\n"})
        pair.integrity.recalculation.request()  # a new cycle: the next check is granted
        self.successResultOf(pair.request(pair.server, SYNC_NOW, b""))
        self.assertFalse(pair.in_sync())
        self.assertEqual(pair.worker_integrity.checks.runs, runs + 1)
        self.successResultOf(pair.request(pair.server, SYN_M_C_R, task + b" not json"))
        pair.settle()
        self.assertTrue(pair.in_sync())  # the check ran after the push and repaired it

    def test_push_is_made_durable_with_two_barriers(self) -> None:
        """A big push runs with one barrier before the renames and one after."""
        pair = self.pair
        calls: list[int] = []
        pair.worker_integrity._barrier = lambda: calls.append(1)
        write_files(pair.master_config.home,
                    {f"etc/lists/new-{i}": b"k:v\n" for i in range(SMALL_PUSH_FILES + 1)})
        pair.recalculate()
        self.assertTrue(pair.in_sync())
        self.assertEqual(len(calls), 2)

    def test_small_push_is_fsynced_file_by_file_without_a_barrier(self) -> None:
        """One file: its staged copy and its directory are fsynced; no sync() barrier."""
        pair = self.pair
        pair.recalculate()
        calls: list[int] = []
        pair.worker_integrity._barrier = lambda: calls.append(1)
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)
        self.patch(apply_module.os, "fsync", fsync)
        write_files(pair.master_config.home, {"etc/lists/new": b"k:v\n"})
        pair.recalculate()
        self.assertTrue(pair.in_sync())
        self.assertEqual(calls, [])
        lists = os.path.join(pair.worker_config.home, "etc", "lists")
        self.assertIn(os.path.realpath(lists), [os.path.realpath(p) for p in synced])
        self.assertTrue(any("staging-" in p for p in synced), synced)

    def test_applied_files_are_not_read_again_by_the_next_check(self) -> None:
        """The worker's digest cache learns what a push wrote: the next scan hashes nothing."""
        pair = self.pair
        write_files(pair.master_config.home, {"etc/lists/new": b"k:v\n",
                                              "etc/rules/new.xml": b"<x/>"})
        pair.recalculate()
        self.assertTrue(pair.in_sync())
        self.assertIn("etc/lists/new", pair.worker_integrity.last_apply.installed)
        with patch("wazuhcluster.integrity.metadata.file_digest",
                   side_effect=AssertionError("hashed again")):
            pair.recalculate()  # a new cycle: the worker's next check is granted
            pair.worker_integrity.checks.request()
            pair.settle()
        self.assertTrue(pair.in_sync())

    def test_check_waits_for_the_recomputation_the_watcher_scheduled(self) -> None:
        """Files written while a check is answered go in the same push, not a second round."""
        pair = self.pair

        class Watcher:
            pending = True

        pair.checks_only()
        pair.integrity.watcher = Watcher()  # type: ignore[assignment]
        write_files(pair.master_config.home, {"etc/lists/first": b"a:1\n"})
        pair.recalculate()  # announces; the worker checks; the master waits
        self.assertFalse(pair.in_sync())
        write_files(pair.master_config.home, {"etc/lists/second": b"b:2\n"})
        Watcher.pending = False
        pair.integrity.recalculation.request()
        pair.clock.advance(master_side.FRESH_SCAN_POLL)
        pair.settle()
        self.assertTrue(pair.in_sync())
        self.assertEqual(set(pair.worker_integrity.last_apply.created),
                         {"etc/lists/first", "etc/lists/second"})

    def test_check_waits_at_most_fresh_scan_wait(self) -> None:
        """A watcher that never settles delays a check by FRESH_SCAN_WAIT, no more."""
        pair = self.pair

        class Watcher:
            pending = True

        pair.checks_only()
        pair.integrity.watcher = Watcher()  # type: ignore[assignment]
        write_files(pair.master_config.home, {"etc/lists/first": b"a:1\n"})
        pair.recalculate()
        self.assertFalse(pair.in_sync())  # the check waits for the watcher
        for _ in range(int(master_side.FRESH_SCAN_WAIT / master_side.FRESH_SCAN_POLL) + 2):
            pair.clock.advance(master_side.FRESH_SCAN_POLL)
        pair.settle()
        self.assertTrue(pair.in_sync())

    def test_disconnect_ends_waiting_pushes(self) -> None:
        """A push waiting for its container ends quietly when the link goes away."""
        pair = self.pair
        self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 1)
        pair.client.transport.loseConnection()
        pair.settle()
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertIsNone(pair.worker.peer)


class CheckWithoutMasterTests(SynchronousTestCase):
    """Edge cases of the check itself."""

    def test_no_link_no_check(self) -> None:
        """A timer tick while disconnected does nothing."""
        pair = IntegrityPair(self)
        self.successResultOf(Deferred.fromCoroutine(pair.worker_integrity.tick()))
        self.assertEqual(pair.worker_integrity.checks.runs, 1)
        self.assertFalse(pair.worker_integrity.checks.running)


def captured_master_requests() -> list[tuple[bytes, bytes]]:
    """The master's side of the captured Wazuh 4.7.5 session: (command, payload) of each
    message, decrypted."""
    codec = FernetCodec(VECTOR_KEY)
    decoder = FrameDecoder()
    reassembler = Reassembler()
    out = []
    for frame in decoder.feed(read_vector("session.m2w.bin")):
        message = reassembler.add(frame)
        if message is not None:
            out.append((message.command, codec.decrypt(message.payload)))
    return out


def staging_dirs(pair: IntegrityPair) -> list[str]:
    """Staging directories left in the worker's queue/cluster/worker-1/."""
    directory = os.path.join(pair.worker_config.home, "queue", "cluster", "worker-1")
    return [name for name in os.listdir(directory) if name.startswith("staging-")]


class StreamedPushTests(SynchronousTestCase):
    """The push container is extracted while it arrives; only a complete, checked
    container named by syn_m_c_e is applied, and nothing is left behind otherwise."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.extractions = ThreadedExtractions()
        self.addCleanup(self.extractions.stop)
        self.pair = IntegrityPair(self, extractions=self.extractions)
        write_files(self.pair.master_config.home, FILES)
        self.pair.recalculate()
        self.pair.connect()
        self.extractions.finish()
        self.pair.settle()

    def container(self, files: dict[str, bytes]) -> bytes:
        """A push container of ``files`` (written on the master, as the master would)."""
        home = self.pair.master_config.home
        write_files(home, files)
        scanned = scan_items(home, parse_cluster_items(self.pair.master_config.files)).files
        out = io.BytesIO()
        write_sync_container(out, home, Comparison(missing={p: scanned[p] for p in files}),
                             max_size=1 << 30)
        return out.getvalue()

    def send(self, rel: bytes, data: bytes, digest: bytes | None = None) -> Deferred[bytes]:
        """new_file, file_upd in two pieces, file_end (with ``digest`` if given)."""
        pair = self.pair
        self.successResultOf(pair.request(pair.server, NEW_FILE, rel))
        half = len(data) // 2
        for piece in (data[:half], data[half:]):
            self.successResultOf(pair.request(pair.server, FILE_UPD, rel + b" " + piece))
        return pair.request(pair.server, FILE_END,
                            rel + b" " + (digest or hashlib.sha256(data).digest()))

    def test_the_first_push_was_extracted_while_it_arrived(self) -> None:
        """setUp's push went through the extraction thread and left no staging."""
        self.assertTrue(self.pair.in_sync())
        self.assertEqual(self.extractions.started, 1)
        self.assertEqual(count(self.events, "extracted while it arrived"), 1)
        self.assertEqual(staging_dirs(self.pair), [])

    def test_a_changed_file_is_pushed_and_applied_the_same_way(self) -> None:
        """A direct push after a change on the master is followed and applied too."""
        write_files(self.pair.master_config.home, {"etc/rules/local_rules.xml": b"<new/>\n"})
        self.pair.recalculate()
        self.extractions.finish()
        self.pair.settle()
        self.assertTrue(self.pair.in_sync())
        self.assertEqual(self.extractions.started, 2)
        self.assertEqual(count(self.events, "extracted while it arrived"), 2)
        self.assertEqual(staging_dirs(self.pair), [])

    def test_a_wazuh_masters_push_is_extracted_while_it_arrives(self) -> None:
        """The push of the captured real Wazuh 4.7.5 session (syn_m_c, new_file, file_upd,
        file_end, syn_m_c_e, byte for byte but our task id) is followed, extracted while
        it arrives and applied: every file of its container on the worker, right."""
        pair = self.pair
        requests = captured_master_requests()
        first = next(i for i, (command, _) in enumerate(requests) if command == SYN_M_C)
        last = next(i for i, (command, _) in enumerate(requests) if command == SYN_M_C_E)
        push = requests[first:last + 1]
        self.assertEqual([command for command, _ in push],
                         [SYN_M_C, NEW_FILE, FILE_UPD, FILE_END, SYN_M_C_E])
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, push[0][1]))
        container = b""
        for command, payload in push[1:-1]:
            self.successResultOf(pair.request(pair.server, command, payload))
            if command == FILE_UPD:
                container += payload.partition(b" ")[2]
        self.extractions.finish()
        relpath = messages.split_id(push[-1][1])[1]
        self.successResultOf(pair.request(pair.server, SYN_M_C_E, task + b" " + relpath))
        pair.settle()
        self.assertEqual(count(self.events, "extracted while it arrived"), 2)  # and setUp's
        files = read_container_bytes(container).files
        self.assertTrue(files)
        for name, content in files.items():
            with open(os.path.join(pair.worker_config.home, name), "rb") as f:
                self.assertEqual(f.read(), content, name)
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertEqual(staging_dirs(pair), [])

    def test_checksum_mismatch_stages_nothing_and_applies_nothing(self) -> None:
        """The followed file fails its checksum: the extraction ends, its staging goes,
        and no file is installed."""
        pair = self.pair
        data = self.container({"etc/rules/new.xml": b"<rule/>\n"})
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        rel = b"/queue/cluster/worker-1/worker-1-1.0-aa.zip"
        self.failureResultOf(self.send(rel, data, digest=b"0" * 32), RemoteCommandError)
        self.extractions.finish()
        self.successResultOf(pair.request(pair.server, SYN_M_C_R, task + b" not json"))
        pair.settle()
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertFalse(os.path.exists(os.path.join(pair.worker_config.home,
                                                     "etc/rules/new.xml")))
        self.assertEqual(staging_dirs(pair), [])

    def test_another_file_named_by_syn_m_c_e_is_extracted_once_complete(self) -> None:
        """The followed file was not the container (garbage here): its extraction fails
        quietly and the file syn_m_c_e names is extracted and applied as before."""
        pair = self.pair
        data = self.container({"etc/rules/new.xml": b"<rule/>\n"})
        task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        self.successResultOf(self.send(b"/queue/cluster/worker-1/worker-1-1.0-aa.zip",
                                       b"not a container"))
        rel = b"/queue/cluster/worker-1/worker-1-2.0-bb.zip"
        self.successResultOf(self.send(rel, data))
        self.extractions.finish()
        self.successResultOf(pair.request(pair.server, SYN_M_C_E, task + b" " + rel[1:]))
        pair.settle()
        with open(os.path.join(pair.worker_config.home, "etc/rules/new.xml"), "rb") as f:
            self.assertEqual(f.read(), b"<rule/>\n")
        self.assertEqual(count(self.events, "extracted while it arrived"), 1)  # setUp's
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertEqual(staging_dirs(pair), [])

    def test_disconnect_mid_transfer_ends_the_extraction(self) -> None:
        """The link drops halfway through the container: the reader is released, the
        partial staging removed, the push ended."""
        pair = self.pair
        data = self.container({"etc/rules/new.xml": b"<rule/>\n" * 1000})
        self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
        rel = b"/queue/cluster/worker-1/worker-1-1.0-aa.zip"
        self.successResultOf(pair.request(pair.server, NEW_FILE, rel))
        self.successResultOf(pair.request(pair.server, FILE_UPD,
                                          rel + b" " + data[:len(data) // 2]))
        pair.client.transport.loseConnection()
        pair.settle()
        self.extractions.finish()
        pair.settle()
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
        self.assertEqual(staging_dirs(pair), [])


class InlineReactor:
    """``callFromThread`` runs the call at once, on the pool's thread: the pool is joined
    before the test looks at the result."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` now."""
        f(*args, **kwargs)


class ExtractionsServiceTests(SynchronousTestCase):
    """The extraction thread of a running worker."""

    def test_stop_ends_an_extraction_waiting_for_bytes(self) -> None:
        """Stopping the service fails the files it follows, so its thread ends and the
        pool is joined without waiting for bytes that will never come."""
        home = short_tempdir(self)
        directory = os.path.join(home, "queue", "cluster", "worker-1")
        os.makedirs(directory)
        path = os.path.join(directory, "c.zip")
        with open(path, "wb") as f:
            f.write(b"etc/rules/a")
        followed = FollowedFile(path)
        followed.advance(11)
        items = parse_cluster_items(node_config(home).files)
        extractions = Extractions(InlineReactor())
        extractions.startService()
        d = extractions.follow(followed, functools.partial(
            stage_followed, home, "worker-1", items, limits=ContainerLimits()))
        extractions.stopService()  # joins the thread
        self.failureResultOf(d, FollowError)
        self.assertEqual(os.listdir(directory), ["c.zip"])  # its staging is gone


class QueuedPushTests(SynchronousTestCase):
    """``push_queue``: a push that arrives while another is being applied waits for it."""

    def test_pushes_are_applied_one_at_a_time_in_order(self) -> None:
        """Two containers named back to back: the second apply starts only once the first
        has ended, whatever order the applies would finish in."""
        pair = IntegrityPair(self)
        write_files(pair.master_config.home, FILES)
        pair.recalculate()
        pair.connect()
        self.assertIn(master_side.PUSH_QUEUE_CAPABILITY, pair.worker_integrity.capabilities)
        started: list[str] = []
        gates: list[Deferred[Any]] = []

        def apply(path: str, streamed: Any) -> Deferred[Any]:
            started.append(os.path.basename(path))
            gate: Deferred[Any] = Deferred()
            gates.append(gate)
            return gate
        tasks = []
        for name in (b"worker-1-1.0-aa.zip", b"worker-1-2.0-bb.zip"):
            task = self.successResultOf(pair.request(pair.server, SYN_M_C, b""))
            rel = b"/queue/cluster/worker-1/" + name
            self.successResultOf(pair.request(pair.server, NEW_FILE, rel))
            self.successResultOf(pair.request(pair.server, FILE_UPD, rel + b" x"))
            self.successResultOf(pair.request(pair.server, FILE_END,
                                              rel + b" " + hashlib.sha256(b"x").digest()))
            tasks.append((task, rel))
        with patch.object(pair.worker_integrity, "_apply", apply):
            for task, rel in tasks:
                self.successResultOf(pair.request(pair.server, SYN_M_C_E,
                                                  task + b" " + rel[1:]))
            self.assertEqual(started, ["worker-1-1.0-aa.zip"])
            self.assertEqual(pair.worker_integrity.pushes_in_progress, 2)
            gates[0].errback(ContainerError("first"))  # even a failed apply
            pair.settle()
            self.assertEqual(started, ["worker-1-1.0-aa.zip", "worker-1-2.0-bb.zip"])
            gates[1].errback(ContainerError("second"))
            pair.settle()
        self.assertEqual(pair.worker_integrity.pushes_in_progress, 0)
