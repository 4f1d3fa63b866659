"""The registration port's protocol object without TLS: worker forwarding answers, timeouts."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.forward import ForwardResult
from wazuhcluster.enrolment.messages import EnrolRequest
from wazuhcluster.enrolment.service import EnrolFactory


class FakeForwarder:
    """Answers each enrolment with the next result."""

    def __init__(self, *results: ForwardResult) -> None:
        self.results = list(results)
        self.requests: list[EnrolRequest] = []

    def enrol(self, request: EnrolRequest) -> Deferred[ForwardResult]:
        self.requests.append(request)
        return succeed(self.results.pop(0))


class WorkerPortTests(SynchronousTestCase):
    """A worker's registration port."""

    def connect(self, factory: EnrolFactory) -> tuple[Any, StringTransport]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    def factory(self, forwarder: FakeForwarder, **auth: Any) -> EnrolFactory:
        self.clock = Clock()
        return EnrolFactory(AuthConfig(**auth), self.clock, "Worker w1", "v4.7.5", None, None,
                            forwarder)  # type: ignore[arg-type]

    def test_forwarded_success(self) -> None:
        """The master's id and key go back in authd's answer; the request carries the
        source address with use_source_ip."""
        forwarder = FakeForwarder(ForwardResult("012", "10.0.0.9", "k" * 64))
        factory = self.factory(forwarder, use_source_ip=True)
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"OSSEC A:'agent-1' G:'web'\n")
        self.assertEqual(transport.value(), b"OSSEC K:'012 agent-1 10.0.0.9 " + b"k" * 64 + b"'")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(forwarder.requests, [EnrolRequest("agent-1", "10.0.0.9", ("web",))])
        self.assertEqual(factory.enrolled, 1)

    def test_forwarded_refusal(self) -> None:
        """The master's message reaches the agent as authd's refusal."""
        factory = self.factory(FakeForwarder(ForwardResult(error="Duplicate name")))
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"OSSEC A:'agent-1'")
        self.assertEqual(transport.value(),
                         b"ERROR: Duplicate nameERROR: Unable to add agent")
        self.assertEqual(factory.refusals, 1)

    def test_local_refusal_not_forwarded(self) -> None:
        """Requests the worker can refuse itself never reach the master."""
        forwarder = FakeForwarder()
        protocol, transport = self.connect(self.factory(forwarder))
        protocol.dataReceived(b"OSSEC A:'x'")
        self.assertEqual(transport.value(),
                         b"ERROR: Invalid agent name: xERROR: Unable to add agent")
        self.assertEqual(forwarder.requests, [])

    def test_silent_client_and_limit(self) -> None:
        """A silent connection is cut after request_timeout; beyond max_connections a
        connection is closed at once; closing frees the slot."""
        factory = self.factory(FakeForwarder(), request_timeout=5.0, max_connections=1)
        first, first_transport = self.connect(factory)
        second, second_transport = self.connect(factory)
        self.assertTrue(second_transport.disconnecting)
        self.assertEqual(factory.refused_connections, 1)
        second.connectionLost(None)
        self.clock.advance(5.0)
        self.assertTrue(first_transport.disconnecting)
        first.connectionLost(None)
        self.assertEqual(factory.active, 0)
