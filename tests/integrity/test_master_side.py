"""Master side of the integrity check and sync, with a worker connected in memory."""

from __future__ import annotations

import os
import random
import struct
from typing import Any
from unittest.mock import patch

from twisted.internet import inotify
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.integrity import vectors
from tests.integrity.pairs import IntegrityPair, item_digests, write_files
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.integrity import master_side
from wazuhcluster.integrity.container import read_container_bytes
from wazuhcluster.integrity.master_side import IntegrityWatcher, WorkerIntegrity
from wazuhcluster.integrity.metadata import file_digest
from wazuhcluster.interfaces import IMasterExtension
from wazuhcluster.protocol.commands import (
    CANCEL_TASK,
    SYN_I_W_M,
    SYN_I_W_M_E,
    SYN_I_W_M_P,
    SYN_I_W_M_R,
    SYN_M_C,
    SYN_M_C_OK,
    SYNC_NOW,
)
from wazuhcluster.protocol.transfers import send_file

MASTER_FILES = {
    "etc/client.keys": b"001 agent-1 any 0123456789abcdef\n",
    "etc/rules/local_rules.xml": b"<group name='local'></group>\n",
    "etc/decoders/local_decoder.xml": b"<decoder name='local'></decoder>\n",
    "etc/lists/audit-keys": b"audit-wazuh-w:write\n",
    "etc/shared/default/agent.conf": b"<agent_config></agent_config>\n",
    "etc/shared/web/merged.mg": b"!1 merged\n",
}


class ManualRunner:
    """A blocking runner whose calls wait until the test runs them (in order)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Queue the call."""
        d: Deferred[Any] = Deferred()
        self.calls.append((d, f, args, kwargs))
        return d

    def step(self) -> None:
        """Run the oldest queued call, if any."""
        if self.calls:
            d, f, args, kwargs = self.calls.pop(0)
            d.callback(f(*args, **kwargs))

    def drain(self) -> None:
        """Run calls (and those they queue) until none is left."""
        while self.calls:
            self.step()


def messages_of(events: list[Any], text: str) -> list[Any]:
    """Logged events whose format contains ``text``."""
    return [e for e in events if text in e.get("log_format", "")]


class MasterIntegrityTests(SynchronousTestCase):
    """A master and one of our workers converge, in memory."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.pair = IntegrityPair(self)
        write_files(self.pair.master_config.home, MASTER_FILES)
        write_files(self.pair.worker_config.home, {
            "etc/rules/local_rules.xml": b"<group name='old'></group>\n",
            "etc/shared/default/old.txt": b"stale\n",
            "etc/shared/gone/agent.conf": b"stale group\n",
        })

    def test_extension_provides_the_interface(self) -> None:
        """The master extension passes verifyObject."""
        self.assertTrue(verifyObject(IMasterExtension, self.pair.integrity))

    def test_full_round_converges_then_follows_changes(self) -> None:
        """Create, update and delete reach the worker; changes are pushed at once."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        self.assertTrue(pair.in_sync())
        worker_home = pair.worker_config.home
        self.assertFalse(os.path.exists(os.path.join(worker_home, "etc/shared/gone")))
        [counts] = messages_of(self.events, "Files to create in worker")
        self.assertEqual((counts["missing"], counts["shared"], counts["extra"]), (4, 2, 2))
        self.assertEqual(oct(os.stat(os.path.join(worker_home, "etc/client.keys")).st_mode
                             & 0o777), "0o640")

        master_home = pair.master_config.home
        write_files(master_home, {"etc/rules/local_rules.xml": b"<group name='new'></group>\n",
                                  "etc/lists/new-list": b"key:value\n"})
        os.unlink(os.path.join(master_home, "etc/decoders/local_decoder.xml"))
        checks = pair.worker_integrity.checks.runs
        pair.recalculate()  # the worker announced push_direct: the changes are pushed at once
        self.assertTrue(pair.in_sync())
        self.assertEqual(len(messages_of(self.events, "Sync required")), 1)
        self.assertEqual(pair.worker_integrity.checks.runs, checks)  # no check was needed
        [_, counts] = messages_of(self.events, "Files to create in worker")
        self.assertEqual((counts["missing"], counts["shared"], counts["extra"]), (1, 1, 1))

    def test_a_worker_without_direct_pushes_is_asked_to_check(self) -> None:
        """Without push_direct, a change makes the worker check (sync_now), as before."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        pair.checks_only()
        checks = pair.worker_integrity.checks.runs
        write_files(pair.master_config.home, {"etc/rules/local_rules.xml": b"<x/>\n"})
        pair.recalculate()
        self.assertTrue(pair.in_sync())
        self.assertEqual(pair.worker_integrity.checks.runs, checks + 1)
        self.assertEqual(len(messages_of(self.events, "Sync required")), 2)

    def test_direct_push_only_touches_what_changed(self) -> None:
        """A direct push carries the changed files only: a difference the worker made
        itself stays until its next check, which repairs it."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        worker_home = pair.worker_config.home
        write_files(worker_home, {"etc/lists/audit-keys": b"tampered on the worker\n"})
        write_files(pair.master_config.home, {"etc/rules/local_rules.xml": b"<y/>\n"})
        pair.recalculate()
        with open(os.path.join(worker_home, "etc/rules/local_rules.xml"), "rb") as f:
            self.assertEqual(f.read(), b"<y/>\n")
        self.assertFalse(pair.in_sync())
        self.assertEqual(set(pair.worker_integrity.last_apply.updated),
                         {"etc/rules/local_rules.xml"})
        pair.worker_integrity.checks.request()  # its timer
        pair.settle()
        self.assertTrue(pair.in_sync())

    def change_during_a_push(self, capabilities: frozenset[str] | None = None) -> int:
        """A change while a direct push holds the worker's lock; return the worker's checks
        since. ``capabilities`` replaces the worker's (as a worker of an older version)."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        session = pair.master.registry.get("worker-1")
        assert session is not None
        if capabilities is not None:
            session.capabilities = capabilities
        checks = pair.worker_integrity.checks.runs
        home = pair.master_config.home
        write_files(home, {"etc/rules/local_rules.xml": b"<one/>\n"})
        pair.integrity.recalculation.request()  # starts the direct push, not delivered yet
        state = pair.integrity.state_of(session)
        assert state is not None
        self.assertIsNotNone(state.lock)
        write_files(home, {"etc/rules/local_rules.xml": b"<two/>\n",
                           "etc/lists/during": b"k:v\n"})
        pair.integrity.recalculation.request()
        self.assertTrue(state.nudge_pending)
        pair.settle()
        self.assertTrue(pair.in_sync())
        with open(os.path.join(pair.worker_config.home, "etc/rules/local_rules.xml"),
                  "rb") as f:
            self.assertEqual(f.read(), b"<two/>\n")
        return pair.worker_integrity.checks.runs - checks

    def test_changes_during_a_push_follow_it_at_once(self) -> None:
        """To a worker that takes queued pushes, what changed during a push is pushed
        right after it, compared with what the worker will have: no check, and the
        master's idea of the worker's files is then exactly the worker's."""
        self.assertEqual(self.change_during_a_push(), 0)
        self.assertEqual(len(messages_of(self.events, "Files changed during the last push")),
                         1)
        state = self.pair.integrity.state_of(self.pair.master.registry.get("worker-1"))
        assert state is not None and state.assumed is not None
        self.assertEqual({path: entry.hash for path, entry in state.assumed.items()},
                         item_digests(self.pair.worker_config))

    def test_changes_during_a_push_make_an_older_worker_check(self) -> None:
        """A worker without push_queue is asked to check once the push ends, as before."""
        caps = frozenset({master_side.SYNC_NOW_CAPABILITY, master_side.PUSH_DIRECT_CAPABILITY})
        self.assertEqual(self.change_during_a_push(caps), 1)
        self.assertEqual(messages_of(self.events, "Files changed during the last push"), [])

    def test_after_a_failed_push_changes_are_checked(self) -> None:
        """Once a push failed, the master no longer knows what the worker has: the next
        change during a push makes the worker check."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        state = pair.integrity.state_of(pair.master.registry.get("worker-1"))
        assert state is not None
        state.assumed = None  # as _push leaves it when the push does not complete
        state.lock = "held"
        write_files(pair.master_config.home, {"etc/lists/during": b"k:v\n"})
        pair.recalculate()
        self.assertTrue(state.nudge_pending)
        checks = pair.worker_integrity.checks.runs
        pair.integrity._release(state, "held")
        pair.settle()
        self.assertTrue(pair.in_sync())
        self.assertEqual(pair.worker_integrity.checks.runs, checks + 1)

    def burst(self, capabilities: frozenset[str] | None = None,
              assumed_known: bool = True) -> int:
        """A change seen while the watcher has more pending (a burst still being
        written); return the worker's checks until the pair is in sync.
        ``capabilities`` replaces the worker's; without ``assumed_known`` the master
        has forgotten what the worker has (as after a failed push)."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        session = pair.master.registry.get("worker-1")
        state = pair.integrity.state_of(session)
        assert session is not None and state is not None
        if capabilities is not None:
            session.capabilities = capabilities
        if not assumed_known:
            state.assumed = None

        class Watcher:
            pending = True

        pair.integrity.watcher = Watcher()  # type: ignore[assignment]
        checks = pair.worker_integrity.checks.runs
        write_files(pair.master_config.home, {"etc/rules/local_rules.xml": b"<z/>\n"})
        pair.recalculate()
        first = pair.worker_integrity.checks.runs
        Watcher.pending = False
        write_files(pair.master_config.home, {"etc/lists/later": b"k:v\n"})
        pair.integrity.files_changed(None)  # the burst's last recomputation
        for _ in range(int(master_side.FRESH_SCAN_WAIT / master_side.FRESH_SCAN_POLL) + 2):
            pair.clock.advance(master_side.FRESH_SCAN_POLL)
        pair.settle()
        self.assertTrue(pair.in_sync())
        self.assertEqual(first - checks, pair.worker_integrity.checks.runs - checks)
        return pair.worker_integrity.checks.runs - checks

    def test_a_burst_is_pushed_as_the_difference_from_the_workers_files(self) -> None:
        """While the watcher has more changes pending, a worker that takes queued pushes
        and whose files the master knows gets no direct push of this recomputation's
        files, nor a check: a push of what differs from its files, computed after the
        burst's next recomputation (so it takes the later files too)."""
        self.assertEqual(self.burst(), 0)
        self.assertEqual(len(messages_of(self.events, "pushing what differs from its files")),
                         1)
        last = self.pair.worker_integrity.last_apply
        self.assertEqual((set(last.created), set(last.updated)),
                         ({"etc/lists/later"}, {"etc/rules/local_rules.xml"}))

    def test_a_burst_makes_an_older_worker_check(self) -> None:
        """The same burst makes a worker without push_queue check (the check waits for
        the next recomputation and takes more files in one push)."""
        caps = frozenset({master_side.SYNC_NOW_CAPABILITY, master_side.PUSH_DIRECT_CAPABILITY})
        self.assertEqual(self.burst(caps), 1)
        self.assertEqual(messages_of(self.events, "pushing what differs from its files"), [])

    def test_a_burst_makes_a_worker_check_when_its_files_are_unknown(self) -> None:
        """... and so does a worker whose last push did not complete."""
        self.assertEqual(self.burst(assumed_known=False), 1)

    def test_no_direct_push_to_a_worker_asked_to_check(self) -> None:
        """A worker asked to check (sync_now) that has not asked for permission yet gets
        no direct push: its check would wait behind each new one."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        session = pair.master.registry.get("worker-1")
        state = pair.integrity.state_of(session)
        assert state is not None and session is not None
        pair.integrity._sync_now(session)  # not delivered yet
        write_files(pair.master_config.home, {"etc/rules/local_rules.xml": b"<w/>\n"})
        pair.integrity.recalculation.request()
        self.assertIsNone(state.lock)  # no direct push started
        pair.settle()
        self.assertTrue(pair.in_sync())
        self.assertIsNone(state.asked_at)

    def test_big_direct_push_needs_a_free_slot(self) -> None:
        """More than SMALL_DIRECT_PUSH files with every task slot taken: the worker is
        asked to check instead (it waits in line for a slot)."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        write_files(pair.master_config.home, {
            f"etc/lists/many-{i}": b"k:v\n" for i in range(master_side.SMALL_DIRECT_PUSH + 1)})
        with patch.object(pair.integrity, "busy_tasks", return_value=10 ** 6):
            pair.integrity.recalculation.request()
            self.assertEqual(pair.integrity.state_of(
                pair.master.registry.get("worker-1")).lock, None)
        pair.settle()
        self.assertTrue(pair.in_sync())

    def _push_with_every_slot_taken(self, files: dict[str, bytes]) -> str | None:
        """Write ``files`` on the master with every task slot taken; return worker-1's
        integrity lock right after the recomputation (set: pushed directly), then check
        that the pair converges anyway."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        write_files(pair.master_config.home, files)
        with patch.object(pair.integrity, "busy_tasks", return_value=10 ** 6):
            pair.integrity.recalculation.request()
            lock = pair.integrity.state_of(pair.master.registry.get("worker-1")).lock
        pair.settle()
        self.assertTrue(pair.in_sync())
        return lock

    def test_big_file_direct_push_needs_a_free_slot(self) -> None:
        """One file of more than SMALL_DIRECT_PUSH_BYTES with every task slot taken: the
        worker is asked to check instead (a changed client.keys must not go to every idle
        worker at once)."""
        self.assertIsNone(self._push_with_every_slot_taken(
            {"etc/lists/big": b"k:v\n" * (master_side.SMALL_DIRECT_PUSH_BYTES // 4 + 1)}))

    def test_small_file_direct_push_goes_without_a_slot(self) -> None:
        """The same with a small file: pushed directly although every slot is taken."""
        self.assertIsNotNone(self._push_with_every_slot_taken({"etc/lists/small": b"k:v\n"}))

    def test_equal_trees_get_syn_m_c_ok(self) -> None:
        """When nothing differs the master answers syn_m_c_ok and pushes nothing."""
        pair = self.pair
        pair.recalculate()
        pair.connect()
        pair.recalculate()  # no change: no sync_now, but a new cycle
        pair.worker_integrity.checks.request()
        pair.settle()
        self.assertEqual(len(messages_of(self.events, "Sync not required")), 1)
        self.assertEqual(len(messages_of(self.events, "verified that the integrity is right")),
                         1)
        session = pair.master.registry.get("worker-1")
        assert session is not None
        status = session.status["last_check_integrity"]
        self.assertGreaterEqual(status["date_end_master"], status["date_start_master"])
        self.assertEqual(session.status["last_sync_integrity"]["total_files"],
                         {"missing": 4, "shared": 2, "extra": 2})
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": True})

    def test_once_per_cycle(self) -> None:
        """A second permission request in the same cycle is refused, the next cycle allows it."""
        pair = self.pair
        pair.recalculate()
        fake = pair.fake_worker("worker-2")
        peer = fake.protocol
        assert peer is not None
        self.assertEqual(self.successResultOf(pair.request(peer, SYN_I_W_M_P, b"")), b"True")
        self.assertEqual(self.successResultOf(pair.request(peer, SYN_I_W_M_P, b"")), b"False")
        pair.recalculate()
        self.assertEqual(self.successResultOf(pair.request(peer, SYN_I_W_M_P, b"")), b"True")

    def test_no_permission_before_the_first_local_integrity(self) -> None:
        """Until the master knows its own files, no worker is compared (nothing deleted)."""
        fake = self.pair.fake_worker("worker-2")
        assert fake.protocol is not None
        d = self.pair.request(fake.protocol, SYN_I_W_M_P, b"")
        self.assertEqual(self.successResultOf(d), b"False")


class WireTests(SynchronousTestCase):
    """Scripted workers talking to our master: Wazuh's sequences and the refusals."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start_check(self, pair: IntegrityPair, name: str = "worker-2") -> tuple[Any, bytes]:
        """A scripted worker that was granted a check; returns (handler, task id)."""
        pair.recalculate()
        fake = pair.fake_worker(name)
        peer = fake.protocol
        self.assertEqual(self.successResultOf(pair.request(peer, SYN_I_W_M_P, b"")), b"True")
        task = self.successResultOf(pair.request(peer, SYN_I_W_M, b""))
        return fake, task

    def test_wazuh_worker_container_is_decoded_and_answered(self) -> None:
        """A real 4.7.5 worker's upload yields exactly the reference classification and files."""
        pair = IntegrityPair(self)
        vectors.write_tree(pair.master_config.home, vectors.sample_tree())
        fake, task = self.start_check(pair, "worker-1")
        relpath = (b"/queue/cluster/worker-1/"
                   b"worker-1-1795749401.68925-ce553a9b6bdd4d71a56e1255ff4f567a.zip")
        sent = Deferred.fromCoroutine(send_file(
            fake.protocol, str(vectors.INTEGRITY / "worker_integrity_check.zip"), relpath,
            SynchronousRunner().run))
        pair.settle()
        self.successResultOf(sent)
        d = pair.request(fake.protocol, SYN_I_W_M_E, task + b" " + relpath[1:])
        self.assertEqual(self.successResultOf(d), b"File correctly received")
        self.assertEqual([c for c in fake.requests if c.startswith(b"syn")], [SYN_M_C,
                                                                            b"syn_m_c_e"])
        [pushed] = fake.pushed
        decoded = read_container_bytes(pushed)
        expected = vectors.load_json("compare_files_result.json")
        assert isinstance(expected, dict) and isinstance(decoded.metadata, dict)
        self.assertEqual({k: {p: e["hash"] for p, e in v.items()}
                          for k, v in decoded.metadata.items()},
                         {k: {p: e["hash"] for p, e in v.items()} for k, v in expected.items()})
        tree = vectors.sample_tree()
        self.assertEqual(decoded.files, {p: tree[p][0] for p in ("etc/client.keys",
                                                                "etc/rules/extra/more_rules.xml")})
        # the worker's upload was deleted after use
        self.assertEqual(os.listdir(os.path.join(pair.master_config.home, "queue", "cluster",
                                                 "worker-1")), [])

    def test_end_naming_a_file_not_received_is_refused(self) -> None:
        """syn_i_w_m_e may only name a file received completely on this connection."""
        pair = IntegrityPair(self)
        fake, task = self.start_check(pair)
        planted = os.path.join(pair.master_config.home, "queue", "cluster", "worker-2",
                               "planted.zip")
        os.makedirs(os.path.dirname(planted), exist_ok=True)
        with open(planted, "wb") as f:
            f.write(b"not yours")
        for path in (b"queue/cluster/worker-2/planted.zip", b"etc/client.keys",
                     b"queue/cluster/worker-2/../../../etc/client.keys"):
            d = pair.request(fake.protocol, SYN_I_W_M_E, task + b" " + path)
            self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3027
                             if path != b"queue/cluster/worker-2/planted.zip" else 3034)
        self.assertTrue(os.path.exists(planted))
        self.assertTrue(os.path.exists(os.path.join(pair.master_config.home,
                                                    "etc/client.keys")))
        # the task was failed at the first refusal and its lock released
        session = pair.master.registry.get("worker-2")
        assert session is not None
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": True})
        self.flushLoggedErrors()

    def test_unknown_task_is_3027(self) -> None:
        """A …_e naming a task that does not exist is refused with 3027."""
        pair = IntegrityPair(self)
        fake, _ = self.start_check(pair)
        d = pair.request(fake.protocol, SYN_I_W_M_E, b"nope queue/cluster/worker-2/x.zip")
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3027)

    def test_unknown_task_deletes_the_file_it_names(self) -> None:
        """As Wazuh, a …_e with an unknown task removes the (received) file it names."""
        pair = IntegrityPair(self)
        fake, _ = self.start_check(pair)
        relpath = b"/queue/cluster/worker-2/worker-2-1.5-ab.zip"
        source = os.path.join(pair.master_config.home, "source.bin")
        with open(source, "wb") as f:
            f.write(b"container")
        sent = Deferred.fromCoroutine(send_file(fake.protocol, source, relpath,
                                                SynchronousRunner().run))
        pair.settle()
        self.successResultOf(sent)
        received = os.path.join(pair.master_config.home, relpath[1:].decode())
        self.assertTrue(os.path.exists(received))
        d = pair.request(fake.protocol, SYN_I_W_M_E, b"nope " + relpath[1:])
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3027)
        self.assertFalse(os.path.exists(received))

    def test_lock_is_force_released_after_max_locked_integrity_time(self) -> None:
        """A lock held longer than max_locked_integrity_time is released at the next ask."""
        pair = IntegrityPair(self, master_json={"intervals": {
            "master": {"max_locked_integrity_time": 10},
            "communication": {"timeout_receiving_file": 100}}})
        fake, _ = self.start_check(pair)
        session = pair.master.registry.get("worker-2")
        assert session is not None
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": False})
        pair.recalculate()
        self.assertEqual(self.successResultOf(pair.request(fake.protocol, SYN_I_W_M_P, b"")),
                         b"False")
        pair.clock.advance(11)
        pair.recalculate()
        self.assertEqual(self.successResultOf(pair.request(fake.protocol, SYN_I_W_M_P, b"")),
                         b"True")
        self.assertEqual(len(messages_of(self.events, "Integrity lock held")), 1)

    def test_upload_timeout_cancels_the_task_and_frees_the_lock(self) -> None:
        """Without syn_i_w_m_e within timeout_receiving_file: cancel_task 3039, lock freed."""
        pair = IntegrityPair(self)
        fake, _ = self.start_check(pair)
        pair.clock.advance(pair.master_config.intervals.timeout_receiving_file + 1)
        pair.settle()
        self.assertIn(CANCEL_TASK, fake.requests)
        session = pair.master.registry.get("worker-2")
        assert session is not None
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": True})

    def test_worker_error_frees_the_lock(self) -> None:
        """syn_i_w_m_r ends the task and releases the lock."""
        pair = IntegrityPair(self)
        fake, task = self.start_check(pair)
        d = pair.request(fake.protocol, SYN_I_W_M_R,
                         task + b' {"__wazuh_exception__": {"__class__": "WazuhClusterError", '
                                b'"__object__": {"code": 3001, "extra_message": "boom"}}}')
        self.assertEqual(self.successResultOf(d), b"Error received")
        session = pair.master.registry.get("worker-2")
        assert session is not None
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": True})

    def test_worker_error_without_task_frees_the_lock(self) -> None:
        """syn_i_w_m_r None <error> releases the lock too, as in Wazuh."""
        pair = IntegrityPair(self)
        fake, _ = self.start_check(pair)
        d = pair.request(fake.protocol, SYN_I_W_M_R, b"None " + ClusterError(3001, "x").to_wire())
        self.assertEqual(self.successResultOf(d), b"Error received")
        session = pair.master.registry.get("worker-2")
        assert session is not None
        self.assertEqual(pair.integrity.health_status(session), {"sync_integrity_free": True})
        self.flushLoggedErrors()

    def test_sync_now_only_to_workers_that_announced_it(self) -> None:
        """A Wazuh worker (no capabilities) never receives wzc_sync_now; ours does."""
        pair = IntegrityPair(self)
        pair.recalculate()
        wazuh = pair.fake_worker("worker-2")
        ours = pair.fake_worker("worker-3", capabilities=["sync_now"])
        write_files(pair.master_config.home, {"etc/rules/new.xml": b"<x/>"})
        pair.recalculate()
        self.assertNotIn(SYNC_NOW, wazuh.requests)
        self.assertEqual(ours.requests.count(SYNC_NOW), 1)
        pair.recalculate()  # nothing changed: no new nudge
        self.assertEqual(ours.requests.count(SYNC_NOW), 1)

    def test_syn_m_c_ok_for_a_wazuh_worker_in_sync(self) -> None:
        """A worker whose metadata equals ours gets syn_m_c_ok and nothing else."""
        pair = IntegrityPair(self)
        write_files(pair.master_config.home, MASTER_FILES)
        fake, task = self.start_check(pair)
        upload = os.path.join(pair.base, "upload.zip")
        from wazuhcluster.integrity.container import write_metadata_container
        local = pair.integrity.local
        assert local is not None
        with open(upload, "wb") as f:
            write_metadata_container(f, local.files)
        relpath = b"/queue/cluster/worker-2/worker-2-1.5-00.zip"
        sent = Deferred.fromCoroutine(send_file(fake.protocol, upload, relpath,
                                                SynchronousRunner().run))
        pair.settle()
        self.successResultOf(sent)
        self.successResultOf(pair.request(fake.protocol, SYN_I_W_M_E, task + b" " + relpath[1:]))
        self.assertEqual([c for c in fake.requests if c.startswith(b"syn")], [SYN_M_C_OK])


class ZipLimitTests(SynchronousTestCase):
    """max_zip_size: what does not fit waits for the next rounds; the limit adapts."""

    def test_push_larger_than_max_zip_size_completes_over_several_rounds(self) -> None:
        """12 incompressible 16 KiB files with a 64 KiB limit reach the worker in rounds."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        limits = {"intervals": {"communication": {"max_zip_size": 65536,
                                                  "min_zip_size": 16384}}}
        pair = IntegrityPair(self, master_json=limits, worker_json=limits)
        write_files(pair.master_config.home,
                    {f"etc/lists/big/list-{i:02d}": os.urandom(16384) for i in range(12)})
        pair.recalculate()
        pair.connect()
        self.assertTrue(pair.in_sync())
        pushes = messages_of(events, "Files to create in worker")
        self.assertGreaterEqual(len(pushes), 4)
        self.assertGreaterEqual(len(messages_of(events, "Zip limit of")), 3)
        # our worker takes queued pushes: the rest follows each push without a new check
        self.assertEqual(len(messages_of(events, "Sync required")), 1)

    def test_limit_shrinks_after_a_cancel_and_grows_back(self) -> None:
        """Wazuh's adaptive rule: a cancelled transfer lowers L; fast ones raise it again."""
        pair = IntegrityPair(self)
        pair.recalculate()
        fake = pair.fake_worker("worker-2")
        session = pair.master.registry.get("worker-2")
        assert session is not None
        intervals = pair.master_config.intervals
        state = WorkerIntegrity(session, fake.master_commands, zip_limit=intervals.max_zip_size)
        pair.integrity._adapt_limit(state, True, 100 * 1024 * 1024, 130.0)
        self.assertEqual(state.zip_limit, int(100 * 1024 * 1024 * 0.8))
        pair.integrity._adapt_limit(state, True, 1024, 130.0)
        self.assertEqual(state.zip_limit, intervals.min_zip_size)
        pair.integrity._adapt_limit(state, False, 0, 1.0)
        self.assertEqual(state.zip_limit, int(intervals.min_zip_size / 0.8))
        for _ in range(100):
            pair.integrity._adapt_limit(state, False, 0, 1.0)
        self.assertEqual(state.zip_limit, intervals.max_zip_size)
        self.flushLoggedErrors()


class WatcherTests(SynchronousTestCase):
    """The inotify watcher's debounce, driven by a Clock."""

    def test_unsettled_events_wait_for_quiet(self) -> None:
        """Writes to a file still open, 0.1 s apart, trigger once 0.2 s after the last
        (capped at 1 s after the first)."""
        pair = IntegrityPair(self)
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock, delay=0.2, max_delay=1.0)
        path = FilePath(os.path.join(pair.master_config.home, "etc/rules/a.xml").encode())
        runs = pair.integrity.recalculation.runs
        for _ in range(3):
            watcher._event(None, path, inotify.IN_MODIFY)
            clock.advance(0.1)
        self.assertEqual(watcher.triggers, 0)
        clock.advance(0.2)
        self.assertEqual(watcher.triggers, 1)
        self.assertEqual(pair.integrity.recalculation.runs, runs + 1)
        for _ in range(30):  # continuous churn still triggers within max_delay
            watcher._event(None, path, inotify.IN_MODIFY)
            clock.advance(0.1)
        self.assertGreaterEqual(watcher.triggers, 3)

    def test_closed_file_is_rehashed_alone_within_milliseconds(self) -> None:
        """IN_CLOSE_WRITE triggers a recomputation 2 ms later that hashes only that file."""
        pair = IntegrityPair(self)
        home = pair.master_config.home
        write_files(home, MASTER_FILES)
        pair.recalculate()
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock)
        write_files(home, {"etc/rules/local_rules.xml": b"<group name='new'/>\n",
                           "etc/lists/audit-keys": b"changed without an event\n"})
        named = os.path.join(home, "etc/rules/local_rules.xml")
        watcher._event(None, FilePath(named.encode()), inotify.IN_CLOSE_WRITE)
        clock.advance(0.001)
        self.assertEqual(watcher.triggers, 0)
        clock.advance(0.001)
        self.assertEqual(watcher.triggers, 1)
        pair.settle()
        local = pair.integrity.local
        assert local is not None
        self.assertEqual(local.hashed, 1)
        self.assertEqual(local.files["etc/rules/local_rules.xml"].hash, file_digest(named))
        lists = os.path.join(home, "etc/lists/audit-keys")
        self.assertNotEqual(local.files["etc/lists/audit-keys"].hash, file_digest(lists))
        self.successResultOf(Deferred.fromCoroutine(pair.integrity.tick()))  # the timer: all
        local = pair.integrity.local
        assert local is not None
        self.assertEqual(local.files["etc/lists/audit-keys"].hash, file_digest(lists))

    def test_settled_burst_is_coalesced(self) -> None:
        """200 closed files 1 ms apart: a few recomputations, the first within 50 ms."""
        pair = IntegrityPair(self)
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock, quick=0.002, quick_max=0.05)
        base = os.path.join(pair.master_config.home, "etc/rules")
        for i in range(200):
            watcher._event(None, FilePath(os.path.join(base, f"{i}.xml").encode()),
                           inotify.IN_CLOSE_WRITE)
            clock.advance(0.001)
            if i == 50:
                self.assertEqual(watcher.triggers, 1)
        clock.advance(0.01)
        self.assertGreaterEqual(watcher.triggers, 4)
        self.assertLessEqual(watcher.triggers, 5)

    def test_a_closed_file_is_not_held_up_by_writes_elsewhere(self) -> None:
        """A write to another, still open file does not postpone a closed file's trigger."""
        pair = IntegrityPair(self)
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock, quick=0.002)
        base = os.path.join(pair.master_config.home, "etc/rules")
        watcher._event(None, FilePath(os.path.join(base, "a.xml").encode()),
                       inotify.IN_CLOSE_WRITE)
        clock.advance(0.001)
        watcher._event(None, FilePath(os.path.join(base, "b.xml").encode()), inotify.IN_MODIFY)
        clock.advance(0.001)
        self.assertEqual(watcher.triggers, 1)

    def test_directory_events_and_overflow_scan_the_whole_tree(self) -> None:
        """A new directory: the next run walks it alone (a file changed elsewhere, its
        event not seen, stays as it was); a directory moved in, or lost events: it scans
        the whole tree (and finds that file)."""
        pair = IntegrityPair(self)
        home = pair.master_config.home
        write_files(home, MASTER_FILES)
        pair.recalculate()
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock)
        masks = (inotify.IN_CREATE | inotify.IN_ISDIR, inotify.IN_MOVED_TO | inotify.IN_ISDIR,
                 inotify.IN_Q_OVERFLOW)
        for n, mask in enumerate(masks):
            write_files(home, {f"etc/rules/sub{n}/a.xml": b"a", f"etc/rules/sub{n}/b.xml": b"b",
                               f"etc/rules/sub{n}/deeper/c.xml": b"c",
                               "etc/lists/unseen": f"{n}".encode()})
            watcher._event(None, FilePath(os.path.join(home, f"etc/rules/sub{n}").encode()),
                           mask)
            clock.advance(0.01)
            pair.settle()
            local = pair.integrity.local
            assert local is not None
            self.assertIn(f"etc/rules/sub{n}/deeper/c.xml", local.files)
            self.assertEqual("etc/lists/unseen" in local.files, n > 0, mask)

    def test_notifier_reports_queue_overflow(self) -> None:
        """Twisted drops events of unknown watch descriptors; the overflow reaches us."""
        from wazuhcluster.integrity.master_side import _Notifier

        lost: list[int] = []
        notifier = _Notifier(Clock(), lambda n: None, lambda: lost.append(1))
        self.addCleanup(os.close, notifier._fd)
        notifier._doRead(struct.pack("=LLLL", 0xFFFFFFFF, inotify.IN_Q_OVERFLOW, 0, 0))
        self.assertEqual(lost, [1])

    def test_named_rescan_tells_changes_like_a_full_comparison(self) -> None:
        """A rescan of named files updates the digests and the "changed" verdict exactly
        as rebuilding them from the whole result does."""
        from wazuhcluster.integrity.items import load_cluster_items
        from wazuhcluster.integrity.master_side import _scan

        home = self.mktemp()
        write_files(home, MASTER_FILES)
        items = load_cluster_items()
        first = _scan(home, items, None, {})
        self.assertTrue(first.changed)

        def full(result: Any) -> dict[str, tuple[str, str]]:
            return {p: (e.hash, e.cluster_item_key) for p, e in result.files.items()}

        rules = os.path.join(home, "etc/rules")
        steps: list[tuple[dict[str, bytes], list[str], bool]] = [
            ({}, ["local_rules.xml"], False),  # an event, same content: no change
            ({"etc/rules/local_rules.xml": b"<group name='x'/>\n"}, ["local_rules.xml"], True),
            ({"etc/rules/new.xml": b"<group name='n'/>\n"}, ["new.xml"], True),
            ({}, ["gone.xml"], False),  # a file that never existed
        ]
        previous = first
        for files, names, changed in [*steps, ({}, [], False)]:
            write_files(home, files)
            paths = frozenset(os.path.join(rules, n).encode() for n in names)
            scan = _scan(home, items, previous.digests, previous.result.cache,
                         previous.result, paths)
            self.assertIsNotNone(scan.result.touched)  # the named-files path was taken
            self.assertEqual(scan.digests, full(scan.result))
            self.assertEqual(scan.changed, changed)
            previous = scan
        os.unlink(os.path.join(rules, "new.xml"))
        scan = _scan(home, items, previous.digests, previous.result.cache, previous.result,
                     frozenset([os.path.join(rules, "new.xml").encode()]))
        self.assertNotIn("etc/rules/new.xml", scan.digests)
        self.assertEqual(scan.digests, full(scan.result))
        self.assertTrue(scan.changed)

    def test_notifier_parses_events_like_twisted(self) -> None:
        """The fast reader names the same files as Twisted's, across split reads, and
        still lets Twisted add a watch for a new directory."""
        from wazuhcluster.integrity.master_side import _Notifier

        root = self.mktemp()
        os.makedirs(os.path.join(root, "rules"))
        seen: list[tuple[bytes | None, int]] = []
        twisted_seen: list[tuple[bytes | None, int]] = []
        notifier = _Notifier(Clock(), lambda n: None, lambda: None,
                             lambda path, mask: seen.append((path, mask)))
        self.addCleanup(os.close, notifier._fd)
        directory = FilePath(os.path.abspath(os.path.join(root, "rules")).encode())
        wd = notifier.watch(directory, autoAdd=True, callbacks=[
            lambda _, path, mask: twisted_seen.append((path.path, mask))])

        def event(name: bytes, mask: int, wd: int = wd) -> bytes:
            padded = name + b"\0" * (-len(name) % 16 or (16 if name else 0))
            return struct.pack("=LLLL", wd, mask, 0, len(padded)) + padded

        data = (event(b"a.xml", inotify.IN_CREATE) + event(b"a.xml", inotify.IN_CLOSE_WRITE)
                + event(b"", inotify.IN_ATTRIB) + event(b"x", inotify.IN_MODIFY, wd=999)
                + event(b"b" * 40, inotify.IN_MOVED_TO))
        for cut in (7, 40, 61):  # reads may end anywhere
            notifier._doRead(data[:cut])
            data = data[cut:]
        notifier._doRead(data)
        base = directory.path
        self.assertEqual(seen, [(base + b"/a.xml", inotify.IN_CREATE),
                                (base + b"/a.xml", inotify.IN_CLOSE_WRITE),
                                (base, inotify.IN_ATTRIB),
                                (base + b"/" + b"b" * 40, inotify.IN_MOVED_TO)])
        self.assertEqual(notifier._buffer, b"")
        # a new directory under an autoAdd watch: Twisted's own handling (a new watch)
        os.makedirs(os.path.join(root, "rules", "sub"))
        notifier._doRead(event(b"sub", inotify.IN_CREATE | inotify.IN_ISDIR))
        self.assertEqual(twisted_seen, [(base + b"/sub", inotify.IN_CREATE | inotify.IN_ISDIR)])
        self.assertIsNotNone(notifier._isWatched(directory.child(b"sub")))

    def test_burst_of_1000_edits_ends_with_the_last_content(self) -> None:
        """1 000 edits, events and scans interleaved at random: the last edit always wins."""
        pair = IntegrityPair(self)
        runner = ManualRunner()
        pair.master.runner = runner
        home = pair.master_config.home
        write_files(home, MASTER_FILES)
        pair.integrity.recalculation.request()
        runner.drain()
        clock = Clock()
        watcher = IntegrityWatcher(pair.integrity, clock)
        rules = os.path.join(home, "etc/rules/local_rules.xml")
        rng = random.Random(15)
        for i in range(1000):
            with open(rules, "wb") as f:
                f.write(f"<group name='edit-{i}'/>\n".encode())
            watcher._event(None, FilePath(rules.encode()), inotify.IN_CLOSE_WRITE)
            clock.advance(rng.choice((0, 0, 0.001, 0.003, 0.06)))
            if rng.random() < 0.3:
                runner.step()
        clock.advance(1)
        runner.drain()
        local = pair.integrity.local
        assert local is not None
        self.assertEqual(local.files["etc/rules/local_rules.xml"].hash, file_digest(rules))
        pair.master.runner = SynchronousRunner()
        pair.connect()
        pair.settle()
        self.assertTrue(pair.in_sync())

    def test_item_directories_lists_roots_and_subdirectories(self) -> None:
        """Recursive items are watched with every subdirectory, others only at the root."""
        from wazuhcluster.integrity.master_side import item_directories

        pair = IntegrityPair(self)
        write_files(pair.master_config.home, {"etc/shared/g1/sub/a.conf": b"x"})
        directories = item_directories(pair.master_config.home, pair.integrity.items)
        home = pair.master_config.home
        self.assertIn(os.path.join(home, "etc/shared/g1/sub"), directories)
        self.assertIn(os.path.join(home, "etc/"), directories)
        self.assertNotIn(os.path.join(home, "queue/cluster"), directories)


class ConcurrencyBoundTests(SynchronousTestCase):
    """``max_concurrent_integrity_tasks``: a change seen by many workers at once does not
    make the master run one task per worker together; the rest wait in line."""

    def setUp(self) -> None:
        self.pair = IntegrityPair(self, master_json={"wazuhcluster": {
            "max_concurrent_integrity_tasks": 2}})
        write_files(self.pair.master_config.home, MASTER_FILES)
        self.pair.recalculate()
        self.fakes = [self.pair.fake_worker(f"worker-{i}", capabilities=["sync_now"])
                      for i in (2, 3, 4)]

    def ask(self, fake: Any) -> bytes:
        answer: bytes = self.successResultOf(self.pair.request(fake.protocol, SYN_I_W_M_P, b""))
        return answer

    def start(self, fake: Any) -> bytes:
        task: bytes = self.successResultOf(self.pair.request(fake.protocol, SYN_I_W_M, b""))
        return task

    def test_third_worker_waits_then_is_called_in(self) -> None:
        """With two tasks running a third permission is refused; when one task ends the
        worker in line gets sync_now and then its permission."""
        first, second, third = self.fakes
        self.assertEqual([self.ask(first), self.ask(second)], [b"True", b"True"])
        task = self.start(first)
        self.start(second)
        self.assertEqual(self.pair.integrity.busy_tasks(), 2)
        self.assertEqual(self.ask(third), b"False")
        self.assertNotIn(SYNC_NOW, third.requests)
        # the first worker's task ends (here with an error it reports)
        self.successResultOf(self.pair.request(first.protocol, SYN_I_W_M_R,
                                               task + b" " + b'{"message": "test"}'))
        self.flushLoggedErrors()
        self.assertEqual(third.requests.count(SYNC_NOW), 1)
        self.assertEqual(self.ask(third), b"True")

    def test_grants_count_before_the_task_starts(self) -> None:
        """Two granted permissions fill the slots even before syn_i_w_m arrives; a grant
        never followed by syn_i_w_m frees its slot after timeout_cluster_request."""
        first, second, third = self.fakes
        self.assertEqual([self.ask(first), self.ask(second)], [b"True", b"True"])
        self.assertEqual(self.ask(third), b"False")
        self.pair.clock.advance(self.pair.master_config.intervals.timeout_cluster_request + 1)
        self.assertEqual(self.ask(third), b"True")

    def test_a_lost_worker_frees_its_slot(self) -> None:
        """A worker that disconnects while holding a slot lets the next one in."""
        first, second, third = self.fakes
        self.ask(first)
        self.start(first)
        self.ask(second)
        self.start(second)
        self.assertEqual(self.ask(third), b"False")
        assert first.protocol is not None
        first.protocol.transport.loseConnection()
        self.pair.settle()
        self.flushLoggedErrors()
        self.assertEqual(third.requests.count(SYNC_NOW), 1)
        self.assertEqual(self.ask(third), b"True")

    def test_a_slot_freed_is_kept_for_the_worker_in_line(self) -> None:
        """A newcomer asking between the call-in and the called worker's request does not
        take its slot (no barging): it waits in line behind it."""
        first, second, third = self.fakes
        fourth = self.pair.fake_worker("worker-5", capabilities=["sync_now"])
        self.ask(first)
        task = self.start(first)
        self.ask(second)
        self.start(second)
        self.assertEqual(self.ask(third), b"False")
        self.successResultOf(self.pair.request(first.protocol, SYN_I_W_M_R,
                                               task + b" " + b'{"message": "test"}'))
        self.flushLoggedErrors()
        self.assertEqual(third.requests.count(SYNC_NOW), 1)
        self.assertEqual(self.ask(fourth), b"False")  # the slot is the third worker's
        self.assertEqual(self.ask(third), b"True")

    def test_an_unused_call_in_expires_and_the_line_moves_on(self) -> None:
        """A worker called in that never asks loses its slot after timeout_cluster_request;
        the next permission request hands it to the next worker in line."""
        first, second, third = self.fakes
        fourth = self.pair.fake_worker("worker-5", capabilities=["sync_now"])
        self.ask(first)
        task = self.start(first)
        self.ask(second)
        self.start(second)
        self.assertEqual([self.ask(third), self.ask(fourth)], [b"False", b"False"])
        self.successResultOf(self.pair.request(first.protocol, SYN_I_W_M_R,
                                               task + b" " + b'{"message": "test"}'))
        self.flushLoggedErrors()
        self.assertEqual(third.requests.count(SYNC_NOW), 1)  # ... and it never asks
        self.pair.clock.advance(self.pair.master_config.intervals.timeout_cluster_request + 1)
        self.assertEqual(self.ask(fourth), b"True")
