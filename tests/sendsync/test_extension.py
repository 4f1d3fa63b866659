"""Sendsync on both roles with fake links (Clock; no sockets)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wazuhcluster.config import Role
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import ILocalExtension, IMasterExtension, IWorkerExtension
from wazuhcluster.protocol.commands import Reply
from wazuhcluster.protocol.transfers import StringStore
from wazuhcluster.sendsync.daemon import DaemonUnreachable
from wazuhcluster.sendsync.extension import (
    MAX_CLIENT_ANSWER,
    ClientAnswers,
    SendSyncMaster,
    SendSyncWorker,
)
from wazuhcluster.sendsync.relay import SendSyncRelay, SendSyncSettings

REQUEST = json.dumps({"daemon_name": "authd", "message": {"function": "add"}}).encode()


class FakePeer:
    """Records what is sent; answers requests from ``answers`` (or fails them)."""

    def __init__(self, answers: dict[bytes, bytes] | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.answers = answers or {}
        self.broken = False

    def notify(self, command: bytes, payload: bytes) -> Deferred[None]:
        self.sent.append(("notify", command, payload))
        return succeed(None)

    def request(self, command: bytes, payload: bytes, timeout: float | None = None
                ) -> Deferred[bytes]:
        self.sent.append(("request", command, payload))
        if self.broken:
            return fail(ClusterError(3020))
        return succeed(self.answers.get(command, b"ok"))


class FakeSession:
    """A registered worker (hashable by identity, as WorkerSession)."""

    def __init__(self, name: str, peer: FakePeer) -> None:
        self.name = name
        self.peer = peer


def local_client(client_id: int = 7) -> Any:
    return SimpleNamespace(client_id=client_id, peer=FakePeer())


class ClientAnswersTests(SynchronousTestCase):
    """Exactly one frame per waiting client."""

    def test_one_frame_then_forgotten(self) -> None:
        answers = ClientAnswers(Clock(), 60)
        client = local_client()
        answers.wait(7, client.peer)
        self.assertRaises(ClusterError, answers.wait, 7, client.peer)
        self.assertTrue(answers.deliver(7, True, b"ok {}"))
        self.assertFalse(answers.deliver(7, True, b"again"))
        self.assertEqual(client.peer.sent, [("notify", b"ok", b"ok {}")])

    def test_timeout_gives_err(self) -> None:
        clock = Clock()
        answers = ClientAnswers(clock, 60)
        client = local_client()
        answers.wait(7, client.peer)
        clock.advance(59)
        self.assertEqual(client.peer.sent, [])
        clock.advance(1)
        self.assertEqual(client.peer.sent[0][:2], ("notify", b"err"))
        self.assertIn(b"3020", client.peer.sent[0][2])
        self.assertEqual(len(answers), 0)

    def test_answer_too_big_for_a_c_client(self) -> None:
        answers = ClientAnswers(Clock(), 60)
        client = local_client()
        answers.wait(7, client.peer)
        answers.deliver(7, True, b"x" * (MAX_CLIENT_ANSWER + 1))
        self.assertEqual(client.peer.sent[0][1], b"err")
        self.assertIn(b"exceeds the 65536 byte client buffer", client.peer.sent[0][2])
        answers.wait(8, client.peer)
        answers.deliver(8, True, b"x" * MAX_CLIENT_ANSWER)
        self.assertEqual(client.peer.sent[1][1], b"ok")


def worker_node(clock: Clock) -> Any:
    node = SimpleNamespace(clock=clock, tag="Worker w1", requests=[], link_up=True,
                           config=SimpleNamespace(role=Role.WORKER, node_name="w1"))

    def request_master(command: bytes, payload: bytes) -> Deferred[bytes]:
        node.requests.append((command, payload))
        if not node.link_up:
            return fail(ClusterError(3023))
        return succeed(b"Added request to SendSync requests queue")
    node.request_master = request_master
    return node


class WorkerTests(SynchronousTestCase):
    """Worker: local client -> master; sendsyn_res / sendsyn_err -> the client."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.node = worker_node(self.clock)
        self.feature = SendSyncWorker(self.node, timeout=90)
        self.client = local_client(42)
        self.local = self.feature.local_responders(self.client)
        self.link = SimpleNamespace(strings=StringStore(self.clock))
        self.remote = self.feature.worker_responders(self.link)

    def test_interfaces(self) -> None:
        verifyObject(IWorkerExtension, self.feature)
        verifyObject(ILocalExtension, self.feature)

    def _call(self, table: dict[bytes, Any], command: bytes, payload: bytes) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(table[command](payload)))

    def test_sendsync_round_trip(self) -> None:
        self.assertIsNone(self._call(self.local, b"sendsync", REQUEST))  # no reply (C client)
        self.assertEqual(self.node.requests, [(b"sendsync", b"42 " + REQUEST)])
        string_id = self.link.strings.new(b"13")
        self.link.strings.update(string_id + b" ok {\"id\":1}")
        reply = self._call(self.remote, b"sendsyn_res", b"42 " + string_id)
        self.assertEqual(reply, Reply(b"ok", b"Response forwarded to worker"))
        self.assertEqual(self.client.peer.sent, [("notify", b"ok", b'ok {"id":1}')])

    def test_sendasync_replies_at_once(self) -> None:
        reply = self._call(self.local, b"sendasync", REQUEST)
        self.assertEqual(reply, Reply(b"ok", b"Added request to sendsync requests queue"))
        self._call(self.remote, b"sendsyn_err", b"42 Error 1000 - Internal error: authd: x")
        self.assertEqual(self.client.peer.sent,
                         [("notify", b"err", b"Error 1000 - Internal error: authd: x")])

    def test_not_connected(self) -> None:
        self.node.link_up = False
        self._call(self.local, b"sendsync", REQUEST)
        self.assertEqual(self.client.peer.sent[0][1], b"err")
        self.assertIn(b"Error 3023", self.client.peer.sent[0][2])
        self.assertEqual(len(self.feature.answers), 0)

    def test_invalid_json_never_leaves_the_worker(self) -> None:
        self._call(self.local, b"sendsync", b"{oops")
        self.assertEqual(self.node.requests, [])
        self.assertEqual(self.client.peer.sent[0][1], b"err")
        self.assertIn(b"JSON", self.client.peer.sent[0][2])

    def test_master_link_lost(self) -> None:
        self._call(self.local, b"sendsync", REQUEST)
        self.feature.disconnected()
        self.assertEqual(self.client.peer.sent[0][1], b"err")
        self.assertIn(b"3023", self.client.peer.sent[0][2])

    def test_answer_never_comes(self) -> None:
        self._call(self.local, b"sendsync", REQUEST)
        self.clock.advance(90)
        self.assertEqual(self.client.peer.sent[0][1], b"err")

    def test_answer_for_unknown_client_is_dropped(self) -> None:
        reply = self._call(self.remote, b"sendsyn_err", b"999 whatever")
        self.assertEqual(reply.command, b"ok")
        self.failureResultOf(Deferred.fromCoroutine(self.remote[b"sendsyn_err"](b"x y")),
                             ClusterError)


class MasterTests(SynchronousTestCase):
    """Master: a worker's sendsync goes to the daemon; the answer goes back as a string."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.asked: list[tuple[str, bytes, Deferred[bytes]]] = []
        settings = SendSyncSettings.from_settings("/h", {})
        self.relay = SendSyncRelay(None, settings, ask=self._ask)
        node = SimpleNamespace(clock=self.clock, config=SimpleNamespace(role=Role.MASTER),
                               registry=SimpleNamespace(get=lambda name: None))
        self.feature = SendSyncMaster(node, self.relay)
        self.worker_peer = FakePeer({b"new_str": b"s1"})
        self.session = FakeSession("w1", self.worker_peer)
        self.commands = SimpleNamespace(session=self.session, peer=self.worker_peer)
        self.table = self.feature.master_responders(self.commands)

    async def _ask(self, reactor: Any, path: str, message: bytes, timeout: float) -> bytes:
        d: Deferred[bytes] = Deferred()
        self.asked.append((path, message, d))
        return await d

    def test_interfaces(self) -> None:
        verifyObject(IMasterExtension, self.feature)
        verifyObject(ILocalExtension, self.feature)

    def _sendsync(self, payload: bytes) -> Reply:
        result: Reply = self.successResultOf(Deferred.fromCoroutine(
            self.table[b"sendsync"](payload)))
        return result

    def test_answer_as_string(self) -> None:
        reply = self._sendsync(b"42 " + REQUEST)
        self.assertEqual(reply, Reply(b"ok", b"Added request to SendSync requests queue"))
        self.assertEqual(self.asked[0][:2], ("/h/queue/sockets/auth", b'{"function": "add"}'))
        self.asked[0][2].callback(b'ok {"id": "001"}')
        self.assertEqual([s[1:] for s in self.worker_peer.sent], [
            (b"new_str", b"16"), (b"str_upd", b's1 ok {"id": "001"}'),
            (b"sendsyn_res", b"42 s1")])

    def test_errors_as_sendsyn_err(self) -> None:
        self._sendsync(b"42 " + REQUEST)
        self.asked[0][2].errback(DaemonUnreachable("cannot connect to /h/queue/sockets/auth: "
                                                   "No such file or directory"))
        self._sendsync(b"43 " + json.dumps({"daemon_name": "x", "message": ""}).encode())
        sent = [s[1:] for s in self.worker_peer.sent]
        # Wazuh 4.7.5's code and words first (what its master answers), our detail after
        self.assertEqual(sent[0], (b"sendsyn_err", b"42 Error 1013 - Unable to connect with "
                                   b"socket: auth (cannot connect to /h/queue/sockets/auth: "
                                   b"No such file or directory)"))
        self.assertEqual(sent[1][0], b"sendsyn_err")
        self.assertTrue(sent[1][1].startswith(b"43 Error 1000 - Internal error: unknown "
                                              b"daemon 'x'"))

    def test_malformed_payload(self) -> None:
        self.failureResultOf(Deferred.fromCoroutine(self.table[b"sendsync"](REQUEST)),
                             ClusterError)

    def test_worker_lost_cancels(self) -> None:
        self._sendsync(b"42 " + REQUEST)
        self.feature.worker_lost(self.session)
        self.assertTrue(self.asked[0][2].called)  # the daemon request was cancelled
        self.assertEqual(self.worker_peer.sent, [])
        self.assertEqual(self.relay.active, 0)

    def test_answer_undeliverable_is_logged_not_raised(self) -> None:
        self.worker_peer.broken = True
        self._sendsync(b"42 " + REQUEST)
        self.asked[0][2].callback(b"ok")
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_local_client_on_master(self) -> None:
        client = local_client(5)
        local = self.feature.local_responders(client)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(
            local[b"sendsync"](REQUEST))))
        self.asked[0][2].callback(b"ok done")
        self.assertEqual(client.peer.sent, [("notify", b"ok", b"ok done")])
        other = local_client(6)
        local = self.feature.local_responders(other)
        reply = self.successResultOf(Deferred.fromCoroutine(local[b"sendasync"](b"[]")))
        self.assertEqual(reply.command, b"ok")
        self.assertEqual(other.peer.sent[0][1], b"err")
