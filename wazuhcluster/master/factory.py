"""ClusterServerFactory: one ClusterProtocol with one MasterCommands per worker connection."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from wazuhcluster.master.commands import MasterCommands
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.crypto import FernetCodec, PayloadCodec
from wazuhcluster.protocol.handler import ClusterProtocol


class ClusterServerFactory(Factory):
    """Builds the master's side of each worker connection."""

    noisy = False

    def __init__(self, node: MasterNode) -> None:
        self._node = node
        self._codec = FernetCodec(node.config.key)
        #: The codec of each new connection (the tls feature gives each link its own).
        self.link_codec: Callable[[], PayloadCodec] = lambda: self._codec

    def buildProtocol(self, addr: IAddress | None) -> ClusterProtocol | None:
        config = self._node.config
        host = getattr(addr, "host", None)
        if host is not None and not self._node.hello_gate.admit(host):
            return None  # Twisted closes the connection at once
        commands = MasterCommands(self._node)
        commands.strings.account = account = self._node.memory.account(
            reserve=self._node.config.ext.max_frame_payload)
        protocol = ClusterProtocol(
            commands, self._node.clock, codec=self.link_codec(), memory=account,
            request_timeout=config.intervals.timeout_cluster_request, runner=self._node.run,
            max_frame_payload=config.ext.max_frame_payload,
            max_message=config.ext.max_message_size,
            max_divided=config.ext.max_divided_messages,
            partial_frame_timeout=config.ext.partial_frame_timeout, trace=config.debug >= 2,
            tag="Master")
        protocol.events = getattr(self._node, "events", None)  # frames, bytes, drops
        return protocol
