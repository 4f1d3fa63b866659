"""The master link's reconnect line: host:port, the reason, the delay rounded."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.worker.service import make_worker_service


class ReconnectLineTests(SynchronousTestCase):
    """What the worker logs when it schedules a retry."""

    def test_retry_line_names_address_reason_and_rounded_delay(self) -> None:
        """No endpoint repr, no 17-digit delay: host:port, reason, one decimal."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = MemoryReactorClock()
        config = node_config(short_tempdir(self), node_name="worker1", role="worker")
        node = make_worker_service(config, reactor, SynchronousRunner())
        node.startService()
        self.addCleanup(node.stopService)
        for _ in range(3):
            _, _, factory, *_ = reactor.tcpClients[-1]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            reactor.advance(60)
        lines = [formatEvent(e) for e in events]
        retries = [line for line in lines if "retry" in line]
        self.assertEqual(len(retries), 3, lines)
        for line in retries:
            self.assertNotIn("object at 0x", line)
            self.assertIn(f"{config.master_address}:{config.port}", line)
            self.assertIn("Connection was refused", line)
            self.assertRegex(line, r"in \d+\.\d s\.$")
        self.assertFalse([line for line in lines if "TCP4ClientEndpoint" in line])
