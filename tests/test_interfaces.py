"""Every implementation and fake provides its interface (verifyObject)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.protocol.test_handler import RecordingHandler
from tests.support import node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner, ThreadedRunner
from wazuhcluster.interfaces import IBlockingRunner, ICommandHandler, IPeer
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.commands import LocalCommands
from wazuhcluster.master.commands import MasterCommands
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.commands import WorkerCommands
from wazuhcluster.worker.node import WorkerNode


class InterfaceTests(SynchronousTestCase):
    """verifyObject for the core implementations."""

    def test_core_implementations(self) -> None:
        """Protocols, command tables and runners provide their interfaces."""
        clock = Clock()
        base = short_tempdir(self)
        master = MasterNode(node_config(base), clock, SynchronousRunner())
        worker = WorkerNode(node_config(base, node_name="w1", role="worker"), clock,
                            SynchronousRunner())
        verifyObject(IPeer, ClusterProtocol(RecordingHandler(), clock))
        for handler in (RecordingHandler(), MasterCommands(master), WorkerCommands(worker),
                        LocalCommands(master, 1, lambda i: None), LocalClientCommands(clock)):
            verifyObject(ICommandHandler, handler)
        verifyObject(IBlockingRunner, SynchronousRunner())
        verifyObject(IBlockingRunner, ThreadedRunner(MemoryReactorClock(), 1))
