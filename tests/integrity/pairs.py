"""In-memory master/worker pairs for the integrity feature tests (Clock + iosim)."""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.config import ClusterConfig
from wazuhcluster.errors import UnknownCommand
from wazuhcluster.integrity import master_side
from wazuhcluster.integrity.items import parse_cluster_items
from wazuhcluster.integrity.master_side import IntegrityMaster
from wazuhcluster.integrity.metadata import scan_items
from wazuhcluster.integrity.worker_side import IntegrityWorker
from wazuhcluster.interfaces import IPeer
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    CAPS,
    HELLO,
    SYN_M_C,
    SYN_M_C_E,
    SYN_M_C_OK,
    SYN_M_C_R,
    SYNC_NOW,
    Reply,
)
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode

#: Small files for trees: path -> content.
Tree = dict[str, bytes]


def write_files(home: str, files: Tree) -> None:
    """Create or overwrite ``files`` under ``home``."""
    for relative, content in files.items():
        path = os.path.join(home, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def item_digests(config: ClusterConfig) -> dict[str, str]:
    """``path -> BLAKE2b`` of every cluster item file of a node."""
    result = scan_items(config.home, parse_cluster_items(config.files))
    return {path: entry.hash for path, entry in result.files.items()}


class IntegrityPair:
    """A master and a worker node with the integrity feature, connected in memory.

    :param case: the running test (for temporary directories).
    :param master_json: cluster.json overrides of the master.
    :param worker_json: cluster.json overrides of the worker.
    """

    def __init__(self, case: SynchronousTestCase, master_json: dict[str, Any] | None = None,
                 worker_json: dict[str, Any] | None = None,
                 extractions: Any = None) -> None:
        self.case = case
        self.clock = Clock()
        self.base = short_tempdir(case)
        self.master_config = node_config(self.base, cluster_json=master_json)
        self.master = MasterNode(self.master_config, self.clock, SynchronousRunner())
        master_side.install(self.master, self.clock)
        integrity = self.master.extensions[-1]
        assert isinstance(integrity, IntegrityMaster)
        self.integrity = integrity
        self.worker_config = node_config(self.base, node_name="worker-1", role="worker",
                                         cluster_json=worker_json)
        self.worker = WorkerNode(self.worker_config, self.clock, SynchronousRunner())
        self.worker_integrity = IntegrityWorker(self.worker, self.clock, barrier=None,
                                                extractions=extractions)
        self.worker.extensions.append(self.worker_integrity)
        self.pumps: list[Any] = []
        self.server, self.client, pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        self.pumps.append(pump)

    def settle(self, rounds: int = 40) -> None:
        """Deliver every byte and every zero-delay call until nothing moves."""
        for _ in range(rounds):
            for pump in self.pumps:
                pump.flush()
            self.clock.advance(0)

    def recalculate(self) -> None:
        """Run the master's local integrity now and deliver what follows."""
        self.integrity.recalculation.request()
        self.settle()

    def connect(self) -> None:
        """Hello (and capabilities); the worker then checks at once."""
        d = self.worker.hello(self.client)
        self.settle()
        self.case.successResultOf(d)

    def checks_only(self) -> None:
        """Make the master treat our worker as one without direct pushes (it asks for a
        check after each change, as before ``push_direct``)."""
        session = self.master.registry.get("worker-1")
        assert session is not None
        session.capabilities = session.capabilities - {master_side.PUSH_DIRECT_CAPABILITY}

    def in_sync(self) -> bool:
        """True when the worker's item files are exactly the master's."""
        return item_digests(self.master_config) == item_digests(self.worker_config)

    def fake_worker(self, name: str, capabilities: list[str] | None = None) -> FakeWorker:
        """Connect a scripted worker called ``name`` (a stand-in for a Wazuh 4.7.5 worker)."""
        home = os.path.join(self.base, name)
        os.makedirs(os.path.join(home, "queue", "cluster", name), exist_ok=True)
        handler = FakeWorker(home, name, self.clock)
        server, client, pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: ClusterProtocol(handler, self.clock,
                                    codec=FernetCodec(self.master_config.key)), self.clock)
        self.pumps.append(pump)
        handler.protocol = client
        handler.master_commands = server.handler
        d = client.request(HELLO, f"{name} wazuh worker 4.7.5".encode())
        self.settle()
        self.case.successResultOf(d)
        if capabilities is not None:
            d = client.request(CAPS, messages.encode_json(capabilities))
            self.settle()
            self.case.successResultOf(d)
        return handler

    def request(self, peer: IPeer, command: bytes, payload: bytes) -> Deferred[bytes]:
        """Send a request and deliver everything that follows."""
        d = peer.request(command, payload)
        self.settle()
        return d


class ThreadedExtractions:
    """Stands in for the worker's extraction thread under a Clock: each extraction runs on
    a real pool thread; :meth:`finish` waits for them and fires their results on the
    test's thread."""

    def __init__(self) -> None:
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="test-extractions")
        self.pool.start()
        self.pending: list[tuple[threading.Event, Deferred[Any], list[Any]]] = []
        self.started = 0

    def follow(self, followed: Any, stage: Any) -> Deferred[Any]:
        """Start ``stage(followed)`` on the pool."""
        done = threading.Event()
        outcome: list[Any] = []

        def report(success: bool, result: Any) -> None:
            outcome.extend((success, result))
            done.set()
        self.pool.callInThreadWithCallback(report, stage, followed)
        self.started += 1
        d: Deferred[Any] = Deferred()
        self.pending.append((done, d, outcome))
        return d

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for every extraction to end and deliver its outcome."""
        while self.pending:
            done, d, outcome = self.pending.pop(0)
            assert done.wait(timeout), "an extraction did not end"
            success, result = outcome
            if success:
                d.callback(result)
            else:
                d.errback(result)

    def stop(self) -> None:
        """Join the pool's threads."""
        self.pool.stop()


class FakeWorker:
    """A scripted worker handler: records requests, receives pushes like Wazuh 4.7.5 does."""

    def __init__(self, home: str, name: str, clock: Clock) -> None:
        self.requests: list[bytes] = []
        self.protocol: ClusterProtocol | None = None
        self.master_commands: Any = None  # the master's MasterCommands of this connection
        self.peer: IPeer | None = None
        self.files = FileReceiver(home, SynchronousRunner().run)
        self.files.directory_name = name.encode()
        self.common = CommonResponders(StringStore(clock), self.files, lambda: name)
        self.pushed: list[bytes] = []

    def connection_made(self, peer: IPeer) -> None:
        """Remember the link."""
        self.peer = peer

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Answer like a reference worker: task ids for syn_m_c, read syn_m_c_e containers."""
        self.requests.append(command)
        generic = self.common.responders().get(command)
        if generic is not None:
            return Deferred.fromCoroutine(generic(payload))
        if command == SYN_M_C:
            return succeed(Reply.ok(b"11239133-a865-4878-8f0e-cc5de47077af"))
        if command == SYN_M_C_E:
            _, path = messages.split_id(payload)
            local = self.files.claim(path.decode())
            with open(local, "rb") as f:
                self.pushed.append(f.read())
            os.unlink(local)
            return succeed(Reply.ok(b"File correctly received"))
        if command in (SYN_M_C_OK, SYNC_NOW, SYN_M_C_R):
            return succeed(Reply.ok(b"Thanks"))
        return fail(UnknownCommand(command))

    def peer_lost(self, reason: Failure) -> None:
        """Nothing to release."""
