"""The registration port over real TLS on 127.0.0.1: answers, password, agent certificates."""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.enrolment.certs import TestCA
from tests.support import node_config, short_tempdir
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.messages import encode_request
from wazuhcluster.enrolment.registrar import keys_path
from wazuhcluster.enrolment.service import EnrolmentService, read_password
from wazuhcluster.errors import ConfigError

reactor: Any = _reactor


class ThreadRunner:
    """Runs blocking calls in the reactor's thread pool."""

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThread(f, *args, **kwargs)


class FakeMaster(MultiService):
    """What the enrolment service needs of a master role node."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.runner = ThreadRunner()
        self.agent_db = None
        self.tag = "Master"


class ServiceTestBase(TestCase):
    """A master home and a started enrolment service on a free port."""

    async def start(self, password_file: str | None = None, **auth: Any) -> EnrolmentService:
        base = short_tempdir(self)
        self.config = node_config(base)
        self.home = self.config.home
        if password_file is not None:
            with open(os.path.join(self.home, "etc", "authd.pass"), "w") as f:
                f.write(password_file)
        auth.setdefault("ssl_manager_cert", os.path.join(self.home, "etc", "sslmanager.cert"))
        auth.setdefault("ssl_manager_key", os.path.join(self.home, "etc", "sslmanager.key"))
        node = FakeMaster(self.config)
        self.service = EnrolmentService(node, reactor, AuthConfig(port=0, **auth))
        self.service.setServiceParent(node)
        node.startService()
        self.addCleanup(node.stopService)
        assert self.service.tls is not None
        waiting: Any = self.service.tls._waitingForPort
        port = await waiting
        self.port = port.getHost().port
        return self.service

    async def ask(self, request: bytes, **context: Any) -> Any:
        return await enrol(reactor, "127.0.0.1", self.port, request,
                           context=make_context(**context) if context else None)


class ProtocolOverTLSTests(ServiceTestBase):
    """The wire answers."""

    async def test_enrol_and_refusals(self) -> None:
        """A new agent gets its key; the manager certificate was created at start."""
        await self.start()
        self.assertTrue(os.path.exists(os.path.join(self.home, "etc", "sslmanager.cert")))
        answer = await self.ask(encode_request("agent-1", groups="default"))
        self.assertEqual((answer.agent_id, answer.name, answer.ip), ("001", "agent-1", "any"))
        self.assertEqual([(ln.name, ln.key) for ln in read_keys(keys_path(self.home))],
                         [("agent-1", answer.key)])
        answer = await self.ask(encode_request("agent-1"))
        self.assertEqual(answer.error, "Duplicate agent name: agent-1")
        answer = await self.ask(encode_request("a"))
        self.assertEqual(answer.error, "Invalid agent name: a")
        answer = await self.ask(encode_request("agent-2", groups="missing"))
        self.assertEqual(answer.error, "Invalid group: missing")
        answer = await self.ask(encode_request("agent-3", ip="src"))
        self.assertEqual((answer.agent_id, answer.ip), ("002", "127.0.0.1"))
        self.assertEqual(self.service.factory.enrolled, 2)

    async def test_password_file(self) -> None:
        """The password of etc/authd.pass is the one required; an empty file is refused."""
        service = await self.start(password_file="topsecret\n", use_password=True)
        self.assertEqual(service.factory.password, "topsecret")
        answer = await self.ask(encode_request("agent-1", password="topsecret"))
        self.assertEqual(answer.agent_id, "001")
        with open(os.path.join(self.home, "etc", "authd.pass"), "w") as f:
            f.write("\n")
        with self.assertRaises(ConfigError) as caught:
            read_password(self.home)
        self.assertIn("empty password", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    async def test_password(self) -> None:
        """With use_password, requests without or with a wrong password are refused."""
        service = await self.start(use_password=True)
        password = service.factory.password
        assert password is not None
        answer = await self.ask(encode_request("agent-1"))
        self.assertEqual(answer.error, "Invalid password")
        answer = await self.ask(encode_request("agent-1", password="nope"))
        self.assertEqual(answer.error, "Invalid password")
        answer = await self.ask(encode_request("agent-1", password=password))
        self.assertEqual(answer.agent_id, "001")
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class CertificateTests(ServiceTestBase):
    """ssl_agent_ca and ssl_verify_host."""

    def setUp(self) -> None:
        directory = self.mktemp()
        self.ca = TestCA(directory, "agents-ca")
        self.other = TestCA(directory, "other-ca")
        self.good = self.ca.issue("agent-ok", ips=("127.0.0.1",))
        self.elsewhere = self.ca.issue("agent-elsewhere", ips=("10.9.9.9",))
        self.foreign = self.other.issue("agent-foreign", ips=("127.0.0.1",))

    async def test_ca_required(self) -> None:
        """No certificate or one from another CA: the connection closes without an answer."""
        await self.start(ssl_agent_ca=self.ca.path + ".pem")
        answer = await self.ask(encode_request("agent-1"))
        self.assertEqual(answer.error, "connection closed without an answer")
        answer = await self.ask(encode_request("agent-1"), cert=self.foreign[0],
                                key=self.foreign[1])
        self.assertEqual(answer.error, "connection closed without an answer")
        answer = await self.ask(encode_request("agent-1"), cert=self.elsewhere[0],
                                key=self.elsewhere[1])
        self.assertEqual(answer.agent_id, "001")  # no host check without ssl_verify_host

    async def test_verify_host(self) -> None:
        """With ssl_verify_host the certificate must name the source address."""
        await self.start(ssl_agent_ca=self.ca.path + ".pem", ssl_verify_host=True)
        answer = await self.ask(encode_request("agent-1"), cert=self.elsewhere[0],
                                key=self.elsewhere[1])
        self.assertEqual(answer.error, "connection closed without an answer")
        self.assertEqual(self.service.factory.refused_certificates, 1)
        answer = await self.ask(encode_request("agent-1"), cert=self.good[0], key=self.good[1])
        self.assertEqual(answer.agent_id, "001")

    async def test_manager_verified_by_agent(self) -> None:
        """An agent holding the manager's certificate as CA accepts it."""
        await self.start()
        answer = await self.ask(encode_request("agent-1"),
                                ca=os.path.join(self.home, "etc", "sslmanager.cert"))
        self.assertEqual(answer.agent_id, "001")


class LimitTests(ServiceTestBase):
    """Connection limit and request timeout."""

    async def test_too_many_connections(self) -> None:
        """Beyond max_connections a connection is closed at once."""
        await self.start(max_connections=1, request_timeout=30.0)
        closed: Deferred[None] = Deferred()

        @attrs.define
        class Idle(Protocol):
            def connectionLost(self, reason: Any = None) -> None:
                closed.callback(None)

        idle = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                     Idle())
        while self.service.factory.active < 1:
            await deferLaterZero()
        answer = await self.ask(encode_request("agent-1"))
        self.assertEqual(answer.error, "connection closed without an answer")
        self.assertEqual(self.service.factory.refused_connections, 1)
        idle.transport.loseConnection()
        await closed


def deferLaterZero() -> Deferred[None]:
    from twisted.internet.task import deferLater
    return deferLater(reactor, 0.01, lambda: None)
