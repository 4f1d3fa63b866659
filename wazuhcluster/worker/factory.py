"""WorkerClientFactory: builds the worker's side of the master link."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from wazuhcluster.protocol.crypto import FernetCodec, PayloadCodec
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.commands import WorkerCommands
from wazuhcluster.worker.node import WorkerNode


class WorkerClientFactory(Factory):
    """One ClusterProtocol with a fresh WorkerCommands per connection attempt."""

    noisy = False

    def __init__(self, node: WorkerNode) -> None:
        self._node = node
        self._codec = FernetCodec(node.config.key)
        #: The codec of each new connection (the tls feature gives each link its own).
        self.link_codec: Callable[[], PayloadCodec] = lambda: self._codec

    def buildProtocol(self, addr: IAddress | None) -> ClusterProtocol:
        config = self._node.config
        commands = WorkerCommands(self._node)
        commands.strings.account = account = self._node.memory.account(
            reserve=self._node.config.ext.max_frame_payload)
        protocol = ClusterProtocol(
            commands, self._node.clock, codec=self.link_codec(), memory=account,
            request_timeout=config.intervals.timeout_cluster_request, runner=self._node.run,
            max_frame_payload=config.ext.max_frame_payload,
            max_message=config.ext.max_message_size,
            max_divided=config.ext.max_divided_messages,
            partial_frame_timeout=config.ext.partial_frame_timeout, trace=config.debug >= 2,
            tag=f"Worker {config.node_name}")
        protocol.events = getattr(self._node, "events", None)  # frames, bytes, drops
        return protocol
