"""WorkerCommands: responders for the requests the master sends to this worker."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.errors import UnknownCommand
from wazuhcluster.integrity.container import ContainerLimits
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.protocol.commands import ECHO_MASTER, OK_CLIENT, Reply
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore

if TYPE_CHECKING:
    from wazuhcluster.worker.node import WorkerNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]


@implementer(ICommandHandler)
class WorkerCommands:
    """Requests the master may send on the master link (one object per connection)."""

    _log = Logger()

    def __init__(self, node: WorkerNode) -> None:
        self._node = node
        config = node.config
        self.peer: IPeer | None = None
        self.strings = StringStore(node.clock, max_string=config.ext.max_message_size,
                                   max_total=config.ext.max_pending_strings_bytes)
        # A sync container holds up to max_zip_size of files plus its metadata record.
        self.files = FileReceiver(config.home, node.run, max_file=ContainerLimits.for_zip_size(
            config.intervals.max_zip_size).max_container_size, keep_directory=True)
        self.files.directory_name = config.node_name.encode()
        self.common = CommonResponders(self.strings, self.files, lambda: self.tag)
        self._responders: dict[bytes, Responder] = {
            **self.common.responders(),
            ECHO_MASTER: self._echo_master,
        }
        for extension in node.extensions:
            self._responders.update(extension.worker_responders(self))

    @property
    def tag(self) -> str:
        """Wazuh log tag of the master link."""
        return f"Worker {self._node.config.node_name}"

    def connection_made(self, peer: IPeer) -> None:
        """Remember the link and let the node start the handshake."""
        self.peer = peer
        self._node.link_made(peer)

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Dispatch one request from the master."""
        responder = self._responders.get(command)
        if responder is None:
            return fail(UnknownCommand(command))
        return Deferred.fromCoroutine(responder(payload))

    def peer_lost(self, reason: Failure) -> None:
        """The master link is gone."""
        self.files.close_all()
        self._node.link_lost(self, reason)

    async def _echo_master(self, payload: bytes) -> Reply:
        return Reply(OK_CLIENT, payload)
