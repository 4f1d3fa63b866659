"""The generic responders every connection serves: echo and cancel_task."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.commands import CANCEL_TASK, ECHO, OK, Reply
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore


class CommonResponderTests(SynchronousTestCase):
    """echo and cancel_task as Wazuh defines them."""

    def setUp(self) -> None:
        files = FileReceiver(short_tempdir(self), SynchronousRunner().run)
        self.common = CommonResponders(StringStore(Clock()), files, lambda: "Worker w1")
        self.table = self.common.responders()

    def call(self, command: bytes, payload: bytes) -> object:
        """Run one responder to completion."""
        return self.successResultOf(Deferred.fromCoroutine(self.table[command](payload)))

    def test_echo_returns_the_payload(self) -> None:
        """echo answers ok with the same bytes."""
        self.assertEqual(self.call(ECHO, b"hello world"), Reply(OK, b"hello world"))

    def test_cancel_task_marks_the_task(self) -> None:
        """cancel_task <id> <error> records the task as interrupted and answers Wazuh's text."""
        error = ClusterError(3039, "timeout").to_wire()
        reply = self.call(CANCEL_TASK, b"0f8fad5b-d9cb-469f-a165-70867728950e " + error)
        self.assertEqual(reply, Reply(OK, b"Request received correctly"))
        self.assertEqual(self.common.cancelled_tasks, {"0f8fad5b-d9cb-469f-a165-70867728950e"})

    def test_cancel_task_none_is_only_logged(self) -> None:
        """A task id of None is logged and changes nothing."""
        self.call(CANCEL_TASK, b"None {}")
        self.assertEqual(self.common.cancelled_tasks, set())
