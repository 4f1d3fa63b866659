"""The master's niceness (``wazuhcluster.master_nice``): raised on every thread at start,
given back at stop, left alone when already lower or not permitted, and part of the master's
tree only."""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.config import ConfigError
from wazuhcluster.node import make_node_service
from wazuhcluster.priority import ProcessPriority, thread_ids


class FakeKernel:
    """Niceness per thread id; refuses to lower one unless ``privileged``."""

    def __init__(self, nice: dict[int, int], privileged: bool = True) -> None:
        self.nice = dict(nice)
        self.privileged = privileged
        self.calls: list[tuple[int, int]] = []

    def get(self, which: int, tid: int) -> int:
        assert which == os.PRIO_PROCESS
        if tid not in self.nice:
            raise ProcessLookupError(3, "No such process")
        return self.nice[tid]

    def set(self, which: int, tid: int, value: int) -> None:
        assert which == os.PRIO_PROCESS
        self.calls.append((tid, value))
        if tid not in self.nice:
            raise ProcessLookupError(3, "No such process")
        if value < self.nice[tid] and not self.privileged:
            raise PermissionError(13, "Permission denied")
        self.nice[tid] = value

    def service(self, nice: int, threads: list[int] | None = None) -> ProcessPriority:
        return ProcessPriority(nice, getpriority=self.get, setpriority=self.set,
                               threads=lambda: list(self.nice) if threads is None else threads)


def logged(testcase: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events]


class ProcessPriorityTests(SynchronousTestCase):
    def test_every_thread_is_raised_and_given_back_at_stop(self) -> None:
        kernel = FakeKernel({101: 0, 102: 0, 103: 5})
        events = logged(self)
        service = kernel.service(-10)
        service.privilegedStartService()
        self.assertEqual(kernel.nice, {101: -10, 102: -10, 103: -10})
        # Said once the tree starts (cluster.log, an earlier sibling, is open by then).
        self.assertEqual([line for line in lines(events) if "master_nice" in line], [])
        service.startService()
        self.assertEqual(len(kernel.calls), 3)  # once, not again at startService
        self.assertIn("[Master] [Main] Running at niceness -10 (master_nice), raised from 5.",
                      lines(events))
        service.stopService()
        self.assertEqual(kernel.nice, {101: 0, 102: 0, 103: 5})

    def test_a_thread_already_lower_is_left_alone(self) -> None:
        kernel = FakeKernel({101: -15, 102: 0})
        service = kernel.service(-10)
        service.startService()
        self.assertEqual(kernel.nice, {101: -15, 102: -10})
        service.stopService()
        self.assertEqual(kernel.nice, {101: -15, 102: 0})

    def test_zero_changes_nothing(self) -> None:
        kernel = FakeKernel({101: 0, 102: 3})
        service = kernel.service(0)
        service.startService()
        service.stopService()
        self.assertEqual(kernel.calls, [])

    def test_not_permitted_is_one_line_and_the_master_goes_on(self) -> None:
        kernel = FakeKernel({101: 0, 102: 0}, privileged=False)
        events = logged(self)
        service = kernel.service(-10)
        service.startService()
        self.assertTrue(service.running)
        self.assertEqual(kernel.nice, {101: 0, 102: 0})
        said = [line for line in lines(events) if "master_nice" in line]
        self.assertEqual(said, [
            "[Master] [Main] Running at niceness 0: raising it to -10 (master_nice) is not "
            "permitted (Permission denied); start the master as root or with CAP_SYS_NICE, or "
            "set master_nice to 0."])
        service.stopService()
        self.assertEqual(kernel.nice, {101: 0, 102: 0})

    def test_a_thread_that_ended_meanwhile_is_skipped(self) -> None:
        kernel = FakeKernel({101: 0})
        service = kernel.service(-10, threads=[101, 999])
        service.startService()
        self.assertEqual(kernel.nice, {101: -10})
        del kernel.nice[101]  # ended before the stop
        service.stopService()

    def test_thread_ids_lists_this_process_s_threads(self) -> None:
        ids = thread_ids()
        if ids == [0]:
            raise self.skipTest("no /proc/self/task on this system")
        self.assertIn(threading.get_native_id(), ids)
        self.assertIn(os.getpid(), ids)


class ConfigAndTreeTests(SynchronousTestCase):
    def test_default_and_range(self) -> None:
        base = short_tempdir(self)
        self.assertEqual(node_config(base).ext.master_nice, -10)
        self.assertEqual(node_config(base, node_name="m2", cluster_json={
            "wazuhcluster": {"master_nice": 0}}).ext.master_nice, 0)
        for bad in (-21, 20, 1.5):
            with self.assertRaises(ConfigError) as e:
                node_config(base, node_name=f"m{bad}".replace(".", "_"), cluster_json={
                    "wazuhcluster": {"master_nice": bad}})
            self.assertIn("wazuhcluster.master_nice", str(e.exception))
            self.assertIn("-20 to 19", str(e.exception))

    def test_only_the_master_has_it(self) -> None:
        base = short_tempdir(self)
        master = make_node_service(node_config(base), MemoryReactorClock(),
                                   runner=SynchronousRunner(), log_to_file=False)
        self.assertIsInstance(master.getServiceNamed("priority"), ProcessPriority)
        worker = make_node_service(node_config(base, node_name="w1", role="worker"),
                                   MemoryReactorClock(), runner=SynchronousRunner(),
                                   log_to_file=False)
        self.assertNotIn("priority", [s.name for s in worker])
        off = make_node_service(node_config(base, node_name="m0", cluster_json={
            "wazuhcluster": {"master_nice": 0}}), MemoryReactorClock(),
            runner=SynchronousRunner(), log_to_file=False)
        self.assertNotIn("priority", [s.name for s in off])
