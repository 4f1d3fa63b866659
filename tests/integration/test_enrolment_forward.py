"""Worker forwarding over real sockets on 127.0.0.1 and real UNIX sockets: a worker's
registration port, its C-style ``sendsync`` client, a stand-in for the cluster relay (the
node's local socket and the master's sendsync handler, which speak the wire forms of
docs/protocol.md), and the master's registrar on authd's local socket."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration.test_enrolment_tls import FakeMaster, ThreadRunner
from tests.support import node_config, short_tempdir
from wazuhcluster.enrolment.agent import enrol
from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.localsock import auth_request
from wazuhcluster.enrolment.messages import encode_request
from wazuhcluster.enrolment.registrar import keys_path
from wazuhcluster.enrolment.service import EnrolmentService, auth_socket_path
from wazuhcluster.protocol.frames import HEADER, HEADER_SIZE, command_field, encode_header

reactor: Any = _reactor


class Relay(Protocol):
    """What the worker's local socket and the master do with one C ``sendsync`` frame."""

    transport: Any

    def __init__(self, factory: RelayFactory) -> None:
        self.factory = factory
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < HEADER_SIZE:
            return
        _, length, field = HEADER.unpack_from(self.buffer)
        if len(self.buffer) < HEADER_SIZE + length:
            return
        payload = json.loads(self.buffer[HEADER_SIZE:HEADER_SIZE + length])
        self.factory.requests.append(payload)
        Deferred.fromCoroutine(self.answer(field, payload))

    async def answer(self, field: bytes, payload: dict[str, Any]) -> None:
        if field != command_field(b"sendsync") or not self.factory.master_up:
            self.send(b"err", b"Error 3023 - Worker not connected to master")
            return
        answer = await auth_request(reactor, self.factory.auth_socket, payload["message"])
        if self.factory.lose_next_answer:
            self.factory.lose_next_answer = False
            self.transport.loseConnection()
            return
        self.send(b"ok", json.dumps(answer).encode())

    def send(self, command: bytes, body: bytes) -> None:
        self.transport.write(encode_header(7, len(body), command_field(command)) + body)


class RelayFactory(Factory):
    def __init__(self, auth_socket: str) -> None:
        self.auth_socket = auth_socket
        self.master_up = True
        self.lose_next_answer = False
        self.requests: list[dict[str, Any]] = []

    def buildProtocol(self, addr: Any) -> Relay:
        return Relay(self)


class FakeWorker(MultiService):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.runner = ThreadRunner()
        self.agent_db = None
        self.tag = "Worker w1"


class ForwardingTests(TestCase):
    """Agent → worker port → sendsync → master's authd socket → answer."""

    async def start(self) -> None:
        base = short_tempdir(self)
        master_config = node_config(base)
        worker_config = node_config(base, node_name="w1", role="worker")
        self.master_home = master_config.home
        master = FakeMaster(master_config)
        EnrolmentService(master, reactor, AuthConfig(
            remote_enrollment=False)).setServiceParent(master)
        master.startService()
        self.addCleanup(master.stopService)
        self.relay = RelayFactory(auth_socket_path(self.master_home))
        os.makedirs(os.path.dirname(worker_config.local_socket_path), exist_ok=True)
        port = await UNIXServerEndpoint(reactor, worker_config.local_socket_path).listen(
            self.relay)
        self.addCleanup(port.stopListening)
        worker = FakeWorker(worker_config)
        home = worker_config.home
        self.service = EnrolmentService(worker, reactor, AuthConfig(
            port=0, forward_deadline=20.0, ssl_manager_cert=os.path.join(home, "c.pem"),
            ssl_manager_key=os.path.join(home, "k.pem")))
        self.service.setServiceParent(worker)
        assert self.service.forwarder is not None
        self.service.forwarder._retry_delay = 0.1
        worker.startService()
        self.addCleanup(worker.stopService)
        assert self.service.tls is not None
        waiting: Any = self.service.tls._waitingForPort
        self.port = (await waiting).getHost().port

    async def ask(self, name: str, **kwargs: Any) -> Any:
        return await enrol(reactor, "127.0.0.1", self.port, encode_request(name, **kwargs))

    async def test_forwarded(self) -> None:
        """The agent gets the master's id and key; the request is authd's sendsync form."""
        await self.start()
        os.makedirs(os.path.join(self.master_home, "etc", "shared", "web"))
        answer = await self.ask("agent-1", groups="web")
        self.assertEqual((answer.agent_id, answer.name, answer.ip), ("001", "agent-1", "any"))
        self.assertEqual([(ln.name, ln.key) for ln in read_keys(keys_path(self.master_home))],
                         [("agent-1", answer.key)])
        (request,) = self.relay.requests
        self.assertEqual(request["daemon_name"], "authd")
        self.assertEqual(request["message"]["function"], "add")
        self.assertEqual({k: v for k, v in request["message"]["arguments"].items()
                          if k != "key"}, {"name": "agent-1", "ip": "any", "groups": "web"})
        answer = await self.ask("agent-1")
        self.assertEqual(answer.error, "Duplicate name")
        answer = await self.ask("agent-2", groups="nogroup")
        self.assertEqual(answer.error, "Invalid Group(s) Name(s)")

    async def test_master_away_then_back(self) -> None:
        """While the relay says the master is away the agent waits; then it gets its key."""
        await self.start()
        self.relay.master_up = False
        pending = Deferred.fromCoroutine(self.ask("late-agent"))
        while len(self.relay.requests) < 3:
            await deferLater(0.05)
        self.assertFalse(pending.called)
        self.assertEqual(self.service.forwarder.waiting, 1)  # type: ignore[union-attr]
        self.relay.master_up = True
        answer = await pending
        self.assertEqual((answer.agent_id, answer.name), ("001", "late-agent"))

    async def test_lost_answer_not_enrolled_twice(self) -> None:
        """The master enrols the agent but the answer is lost: the retry gets the same agent
        and client.keys has it once."""
        await self.start()
        self.relay.lose_next_answer = True
        answer = await self.ask("agent-x")
        self.assertEqual(answer.agent_id, "001")
        self.assertEqual(len(self.relay.requests), 2)
        lines = read_keys(keys_path(self.master_home))
        self.assertEqual([(ln.agent_id, ln.name, ln.key) for ln in lines],
                         [(1, "agent-x", answer.key)])


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as later
    return later(reactor, seconds, lambda: None)
