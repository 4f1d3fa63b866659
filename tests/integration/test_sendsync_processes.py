"""Sendsync between real processes: a C-style client on a worker reaches a stand-in daemon
socket on the master and reads the answer as one frame; the same on the master; a missing
daemon socket gives an ``err`` frame, not a hang.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration.harness import Cluster, NodeProcess
from wazuhcluster.errors import ClusterError
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.frames import Frame, FrameDecoder, command_field, encode_header
from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, encode


class StandInDaemon(Protocol):
    """Answers every length-prefixed message with ``ok <what it received>``."""

    def __init__(self, received: list[bytes]) -> None:
        self._decoder = LengthPrefixDecoder(1 << 20)
        self._received = received

    def dataReceived(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            self._received.append(message)
            assert self.transport is not None
            self.transport.write(encode(b"ok " + message))


class OneFrameClient(Protocol):
    """What wazuh-authd does: send one frame, read exactly one frame."""

    def __init__(self, command: bytes, payload: bytes) -> None:
        self._frame = encode_header(0x1234, len(payload), command_field(command)) + payload
        self._decoder = FrameDecoder()
        self.answer: Deferred[Frame] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._frame)

    def dataReceived(self, data: bytes) -> None:
        frames = self._decoder.feed(data)
        if frames and not self.answer.called:
            self.answer.callback(frames[0])
            assert self.transport is not None
            self.transport.loseConnection()


async def one_frame(node: NodeProcess, command: bytes, request: dict[str, object]) -> Frame:
    client = OneFrameClient(command, json.dumps(request).encode())
    await connectProtocol(UNIXClientEndpoint(reactor, node.socket_path, timeout=5), client)
    client.answer.addTimeout(20, reactor)
    return await client.answer


class SendSyncProcessTests(TestCase):
    """Master + one worker as real processes."""

    timeout = 90

    async def test_sendsync_reaches_master_daemon(self) -> None:
        c = Cluster(self)
        m, (w1,) = await c.start_cluster("w1")
        await c.wait_log(w1, r"Successfully connected to master")
        received: list[bytes] = []
        directory = os.path.join(m.home, "queue", "sockets")
        os.makedirs(directory, exist_ok=True)
        factory = Factory.forProtocol(lambda: StandInDaemon(received))
        port = await UNIXServerEndpoint(reactor, os.path.join(directory, "auth")).listen(
            factory)
        self.addCleanup(port.stopListening)

        message = {"function": "add", "arguments": {"name": "agent1", "ip": "any"}}
        request = {"daemon_name": "authd", "message": message}
        frame = await one_frame(w1, b"sendsync", request)
        self.assertEqual((frame.command, frame.divided), (b"ok", False))
        self.assertEqual(frame.payload, b"ok " + json.dumps(message).encode())
        self.assertEqual(received, [json.dumps(message).encode()])

        frame = await one_frame(m, b"sendsync", request)  # master: straight to the daemon
        self.assertEqual((frame.command, frame.payload),
                         (b"ok", b"ok " + json.dumps(message).encode()))
        self.assertEqual(len(received), 2)

        # remoted has no socket here: a clear err frame, from the worker and the master
        for node in (w1, m):
            frame = await one_frame(node, b"sendsync", {"daemon_name": "remoted",
                                                        "message": {"function": "x"}})
            self.assertEqual(frame.command, b"err")
            self.assertIn(b"Error 1013 - Unable to connect with socket: remote (cannot "
                          b"connect to", frame.payload)
            self.assertIn(b"queue/sockets/remote", frame.payload)

        frame = await one_frame(w1, b"sendsync", {"daemon_name": "analysisd", "message": ""})
        self.assertEqual(frame.command, b"err")
        self.assertIn(b"unknown daemon 'analysisd'", frame.payload)


class SendFileProcessTests(TestCase):
    """``send_file`` from a worker's local client lands in the master's queue/cluster/<w>/."""

    timeout = 60

    async def test_send_file_to_master(self) -> None:
        c = Cluster(self)
        m, (w1,) = await c.start_cluster("w1")
        await c.wait_log(w1, r"Successfully connected to master")
        source = os.path.join(w1.home, "tmp-report.txt")
        with open(source, "wb") as f:
            f.write(b"report \x00\x01" * 1000)
        answer = json.loads(await local_request(reactor, w1.socket_path, b"send_file",
                                                f"{source} master".encode(),
                                                final_timeout=20))
        self.assertEqual(answer["message"], "File sent")
        self.assertTrue(answer["path"].startswith("/queue/cluster/w1/send_file-"))
        with open(m.home + answer["path"], "rb") as f:
            self.assertEqual(f.read(), b"report \x00\x01" * 1000)
        with self.assertRaises(ClusterError) as caught:  # no such file: refused at once
            await local_request(reactor, w1.socket_path, b"send_file",
                                f"{source}.missing master".encode(), final_timeout=5)
        self.assertEqual(caught.exception.code, 3034)
