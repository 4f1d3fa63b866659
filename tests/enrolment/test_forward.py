"""The worker's forwarder: sendsync request, answers, waiting while the master is away."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.forward import (
    Forwarder,
    SendsyncError,
    _OneFrame,
    add_payload,
    parse_authd_answer,
)
from wazuhcluster.enrolment.messages import MASTER_UNREACHABLE, EnrolRequest
from wazuhcluster.protocol.frames import HEADER, command_field, encode_header

REQUEST = EnrolRequest("agent-1", "any", ("web",), None, "h" * 40)


class FakeSend:
    """Answers queued per attempt: bytes (an ``ok`` answer) or an exception."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, reactor: Any, path: str, payload: dict[str, Any],
                 timeout: float) -> Deferred[bytes]:
        self.payloads.append(payload)
        answer = self.answers.pop(0) if self.answers else SendsyncError("master down")
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


OK = json.dumps({"error": 0, "data": {"id": "007", "name": "agent-1", "ip": "any",
                                      "key": "k" * 64}}).encode()


class PayloadTests(SynchronousTestCase):
    """What goes to the master and what comes back."""

    def test_payload(self) -> None:
        """authd's sendsync request with the worker-made key."""
        self.assertEqual(add_payload(REQUEST, "K"), {
            "daemon_name": "authd", "message": {"function": "add", "arguments": {
                "name": "agent-1", "ip": "any", "groups": "web", "key_hash": "h" * 40,
                "key": "K"}}})

    def test_answers(self) -> None:
        """Success, authd error (its message reaches the agent), malformed."""
        self.assertEqual(parse_authd_answer(OK).agent_id, "007")
        self.assertEqual(parse_authd_answer(b'{"error":9008,"message":"Duplicate name"}').error,
                         "Duplicate name")
        for bad in (b"nope", b"[]", b'{"error":0}', b'{"error":0,"data":{"id":1}}'):
            self.assertEqual(parse_authd_answer(bad).error, "Invalid message format")

    def test_one_frame_client(self) -> None:
        """The C-style exchange: one sendsync frame out, one frame in (ok or err)."""
        done: Deferred[tuple[bytes, bytes]] = Deferred()
        frame = encode_header(5, 3, command_field(b"sendsync")) + b"abc"
        protocol = _OneFrame(frame, done)
        transport = StringTransport()
        protocol.makeConnection(transport)
        _counter, length, field = HEADER.unpack_from(transport.value())
        self.assertEqual((length, field), (3, b"sendsync ---"))
        answer = encode_header(9, 2, command_field(b"ok")) + b"{}"
        protocol.dataReceived(answer[:7])
        self.assertNoResult(done)
        protocol.dataReceived(answer[7:])
        self.assertEqual(self.successResultOf(done), (b"ok", b"{}"))
        done = Deferred()
        protocol = _OneFrame(frame, done)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(encode_header(9, 1_000_000, command_field(b"ok")))
        self.failureResultOf(done, SendsyncError)


class WaitingTests(SynchronousTestCase):
    """Waiting for the master within the deadline and the bound."""

    def forwarder(self, send: FakeSend, deadline: float = 10.0,
                  max_waiting: int = 5) -> tuple[Forwarder, Clock]:
        clock = Clock()
        return Forwarder(clock, "/nowhere", "Worker w1", deadline, max_waiting,
                         retry_delay=1.0, send=send), clock

    def test_answer_at_once(self) -> None:
        """Master up: one exchange."""
        send = FakeSend(OK)
        forwarder, _ = self.forwarder(send)
        result = self.successResultOf(Deferred.fromCoroutine(forwarder.enrol(REQUEST)))
        self.assertEqual((result.agent_id, result.key), ("007", "k" * 64))
        self.assertEqual(len(send.payloads), 1)

    def test_waits_then_completes_with_same_key(self) -> None:
        """Master away for 3 s: the request is retried with the same key and completes."""
        send = FakeSend(SendsyncError("down"), SendsyncError("down"), SendsyncError("down"), OK)
        forwarder, clock = self.forwarder(send)
        d = Deferred.fromCoroutine(forwarder.enrol(REQUEST))
        self.assertNoResult(d)
        self.assertEqual(forwarder.waiting, 1)
        clock.advance(1)
        clock.advance(1)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d).agent_id, "007")
        self.assertEqual(forwarder.waiting, 0)
        keys = {p["message"]["arguments"]["key"] for p in send.payloads}
        self.assertEqual(len(keys), 1)
        self.assertEqual(len(send.payloads), 4)

    def test_deadline(self) -> None:
        """Past the deadline the agent gets Wazuh's error."""
        forwarder, clock = self.forwarder(FakeSend(), deadline=3.0)
        d = Deferred.fromCoroutine(forwarder.enrol(REQUEST))
        clock.pump([1.0] * 3)
        self.assertEqual(self.successResultOf(d).error, MASTER_UNREACHABLE)
        self.assertEqual(forwarder.waiting, 0)

    def test_bound(self) -> None:
        """Beyond max_waiting requests, a new one is refused at once."""
        forwarder, clock = self.forwarder(FakeSend(), max_waiting=2)
        waiting = [Deferred.fromCoroutine(forwarder.enrol(REQUEST)) for _ in range(2)]
        third = Deferred.fromCoroutine(forwarder.enrol(REQUEST))
        self.assertEqual(self.successResultOf(third).error, MASTER_UNREACHABLE)
        for d in waiting:
            self.assertNoResult(d)
        clock.pump([1.0] * 11)
        for d in waiting:
            self.assertEqual(self.successResultOf(d).error, MASTER_UNREACHABLE)
