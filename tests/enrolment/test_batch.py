"""Enrolments forwarded in batches between our nodes (``wzc_en_add``), sendsync otherwise."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.batch import (
    ENROL_BATCH,
    ENROL_BATCH_CAPABILITY,
    MAX_ITEMS,
    MasterEnrolBatch,
    WorkerEnrolBatch,
    decode_batch,
)
from wazuhcluster.enrolment.forward import (
    Forwarder,
    SendsyncError,
    add_payload,
    parse_authd_answer,
)
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.localsock import dispatch
from wazuhcluster.enrolment.messages import EnrolRequest
from wazuhcluster.enrolment.registrar import Registrar, keys_path
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IMasterExtension, IWorkerExtension


def payload(name: str, key: str = "k" * 64, groups: tuple[str, ...] = ()) -> dict[str, Any]:
    return add_payload(EnrolRequest(name, "any", groups, None, None), key)


class MasterSideTests(SynchronousTestCase):
    """The master answers each message as authd's socket does, in one registrar batch."""

    def setUp(self) -> None:
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "etc", "shared", "default"))
        open(keys_path(self.home), "w").close()
        self.registrar = Registrar(self.home, AuthConfig(), SynchronousRunner(), None, Clock(),
                                   manager_name="the-manager")
        self.master = MasterEnrolBatch(self.registrar)
        verifyObject(IMasterExtension, self.master)
        self.assertIn(ENROL_BATCH_CAPABILITY, self.master.capabilities)
        self.respond = self.master.master_responders(None)[ENROL_BATCH]

    def test_answers_in_order_like_the_socket(self) -> None:
        items = [payload("a1", "1" * 64)["message"], payload("b1", "4" * 64)["message"],
                 payload("a2", "2" * 64, ("nogroup",))["message"],
                 payload("a1", "3" * 64)["message"]]
        reply = self.successResultOf(Deferred.fromCoroutine(
            self.respond(json.dumps(items).encode())))
        self.assertEqual(reply.command, b"ok")
        answers = json.loads(reply.payload)
        self.assertEqual(len(answers), 4)
        self.assertEqual(answers[0], {"error": 0, "data": {"id": "001", "name": "a1",
                                                           "ip": "any", "key": "1" * 64}})
        self.assertEqual(answers[1]["data"]["id"], "002")
        self.assertEqual(answers[2], {"error": 9014, "message": "Invalid Group(s) Name(s)"})
        self.assertEqual(answers[3], {"error": 9008, "message": "Duplicate name"})
        self.assertEqual(self.registrar.batches, 1)  # one client.keys rewrite for the batch
        self.assertEqual([ln.name for ln in read_keys(keys_path(self.home))], ["a1", "b1"])
        # authd's socket answers the same messages the same way (a retry: same key, same
        # agent; a refusal: the same object).
        for index in (0, 2, 3):
            again = self.successResultOf(Deferred.fromCoroutine(
                dispatch(self.registrar, json.dumps(items[index]).encode())))
            self.assertEqual(again, answers[index])

    def test_bad_requests_refused(self) -> None:
        for bad in (b"{", b"{}", b"[]", json.dumps([{"function": "remove"}]).encode(),
                    json.dumps([payload("x")["message"]] * (MAX_ITEMS + 1)).encode()):
            self.assertRaises(ClusterError, decode_batch, bad)
            self.failureResultOf(Deferred.fromCoroutine(self.respond(bad)), ClusterError)
        self.assertEqual(self.registrar.batches, 0)


class FakeMaster:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, list[Any], Deferred[bytes]]] = []

    def __call__(self, command: bytes, body: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.requests.append((command, json.loads(body), d))
        return d


class WorkerSideTests(SynchronousTestCase):
    """The worker batches only towards a master that announced it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.master = FakeMaster()
        self.fallback_calls: list[dict[str, Any]] = []
        self.worker = WorkerEnrolBatch(self.master, self.clock, fallback=self._fallback)
        verifyObject(IWorkerExtension, self.worker)

    def _fallback(self, reactor: Any, path: str, body: dict[str, Any],
                  timeout: float) -> Deferred[bytes]:
        self.fallback_calls.append(body)
        return succeed(b'{"error":0,"data":{"id":"009","name":"w","ip":"any","key":"k"}}')

    def send(self, name: str) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self.worker.send(self.clock, "/sock", payload(name), 30))

    def test_sendsync_without_the_capability(self) -> None:
        """A real Wazuh master (no capability): every enrolment goes by sendsync."""
        self.worker.connected(None, frozenset({"sync_now"}))  # type: ignore[arg-type]
        self.successResultOf(self.send("w"))
        self.clock.advance(0)
        self.assertEqual((len(self.fallback_calls), self.master.requests), (1, []))
        self.assertEqual(self.fallback_calls[0]["daemon_name"], "authd")

    def test_one_request_per_turn_and_the_next_waits(self) -> None:
        self.worker.connected(None, frozenset({ENROL_BATCH_CAPABILITY}))  # type: ignore[arg-type]
        first = [self.send(f"a{i}") for i in range(3)]
        self.assertEqual(self.master.requests, [])  # sent after this reactor turn
        self.clock.advance(0)
        self.assertEqual(len(self.master.requests), 1)
        command, items, d = self.master.requests[0]
        self.assertEqual(command, b"wzc_en_add")
        self.assertEqual([i["arguments"]["name"] for i in items], ["a0", "a1", "a2"])
        self.assertEqual(items[0], payload("a0")["message"])  # what sendsync would carry
        second = [self.send(f"b{i}") for i in range(2)]
        self.clock.advance(0)
        self.assertEqual(len(self.master.requests), 1)  # waits for the batch in flight
        answers = [{"error": 0, "data": {"id": f"00{i}", "name": f"a{i}", "ip": "any",
                                         "key": "k"}} for i in range(2)]
        d.callback(json.dumps([*answers, {"error": 9008, "message": "Duplicate name"}]).encode())
        results = [parse_authd_answer(self.successResultOf(f)) for f in first]
        self.assertEqual([r.agent_id for r in results], ["000", "001", None])
        self.assertEqual(results[2].error, "Duplicate name")
        self.clock.advance(0)
        self.assertEqual([i["arguments"]["name"] for i in self.master.requests[1][1]],
                         ["b0", "b1"])
        self.master.requests[1][2].errback(ClusterError(3023))
        for f in second:
            self.failureResultOf(f, SendsyncError)
        self.assertEqual(self.worker.batches, 2)

    def test_wrong_answer_count_fails_the_batch(self) -> None:
        self.worker.connected(None, frozenset({ENROL_BATCH_CAPABILITY}))  # type: ignore[arg-type]
        sent = [self.send("a"), self.send("b")]
        self.clock.advance(0)
        self.master.requests[0][2].callback(b'[{"error":0}]')
        for f in sent:
            self.failureResultOf(f, SendsyncError)

    def test_link_lost_means_sendsync_until_told_again(self) -> None:
        self.worker.connected(None, frozenset({ENROL_BATCH_CAPABILITY}))  # type: ignore[arg-type]
        self.worker.disconnected()
        self.successResultOf(self.send("w"))
        self.assertEqual(len(self.fallback_calls), 1)

    def test_forwarder_retries_a_failed_batch_with_the_same_key(self) -> None:
        """A lost batch answer: the forwarder sends the same message (same key) again, so
        the master answers the agent already made instead of making a second one."""
        self.worker.connected(None, frozenset({ENROL_BATCH_CAPABILITY}))  # type: ignore[arg-type]
        forwarder = Forwarder(self.clock, "/sock", "Worker w1", deadline=60, max_waiting=10,
                              retry_delay=1.0, send=self.worker.send)
        result = Deferred.fromCoroutine(forwarder.enrol(EnrolRequest("a", "any", (), None,
                                                                     None)))
        self.clock.advance(0)
        self.master.requests[0][2].errback(ClusterError(3020))
        self.clock.advance(1.0)
        self.clock.advance(0)
        self.assertEqual(len(self.master.requests), 2)
        self.assertEqual(self.master.requests[0][1], self.master.requests[1][1])
        self.master.requests[1][2].callback(
            b'[{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"kk"}}]')
        self.assertEqual(self.successResultOf(result).agent_id, "001")
