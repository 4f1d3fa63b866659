"""TCP_INFO on a real loopback socket pair (the slow-link case itself is shown by the test
bed's shaped link, tests/integration/test_testbed.py)."""

from __future__ import annotations

import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.protocol.tcpinfo import _socket_of, acknowledging


class _Wrapper:
    """A TLS-like wrapper: the TCP transport sits one level down."""

    def __init__(self, inner: Any) -> None:
        self.transport = inner


class _Tcp:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


class TcpInfoTests(SynchronousTestCase):
    def setUp(self) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.client = socket.create_connection(listener.getsockname())
        self.server, _ = listener.accept()
        listener.close()
        for s in (self.client, self.server):
            self.addCleanup(s.close)

    def test_idle_link_is_not_delivering(self) -> None:
        """Nothing in flight: no evidence of a busy link."""
        self.assertFalse(acknowledging(_Tcp(self.client), 5.0))

    def test_full_window_of_a_live_peer_is_delivering(self) -> None:
        """A peer that does not read (busy or slow) fills its window; its TCP still
        acknowledges, and our send queue is not empty: the link counts as delivering."""
        self.client.setblocking(False)
        try:
            while True:
                self.client.send(b"x" * 65536)
        except BlockingIOError:
            pass
        self.assertTrue(acknowledging(_Tcp(self.client), 5.0))
        self.assertFalse(acknowledging(_Tcp(self.server), 5.0))  # nothing queued that way

    def test_socket_found_through_a_wrapper(self) -> None:
        self.assertIs(_socket_of(_Wrapper(_Tcp(self.client))), self.client)
        self.assertIsNone(_socket_of(_Wrapper(None)))
        self.assertFalse(acknowledging(object(), 5.0))
