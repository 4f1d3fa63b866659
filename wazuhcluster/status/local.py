"""``wzc_status`` on the local socket (an :class:`ILocalExtension`), and ``install``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from zope.interface import implementer

from wazuhcluster.interfaces import ILocalExtension, ITurnMeter
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import Reply
from wazuhcluster.status.lag import ReactorLag

WZC_STATUS = b"wzc_status"


@implementer(ILocalExtension)
class StatusCommand:
    """Answers ``wzc_status`` with the node's name, role and reactor lag."""

    def __init__(self, node: Any, lag: ReactorLag) -> None:
        self._node = node
        self.lag = lag

    def local_responders(self, commands: Any) -> dict[bytes, Callable[
            [bytes], Coroutine[Any, Any, Reply]]]:
        """``wzc_status``, the same for every local client."""
        return {WZC_STATUS: self._status}

    async def _status(self, payload: bytes) -> Reply:
        config = self._node.config
        return Reply.ok(messages.encode_json({
            "node": config.node_name, "type": config.role.value,
            "reactor_lag": self.lag.as_dict()}))


def install(node: Any, clock: Any,
            turns: Callable[[], ITurnMeter | None] | None = None) -> StatusCommand:
    """Run a ReactorLag under the role node (its lag told to ``node.events``; ``turns``: the
    node's turn meter, see :class:`~wazuhcluster.status.lag.ReactorLag`) and answer
    ``wzc_status`` on its local socket."""
    lag = ReactorLag(clock, report=node.events.reactor_lag, turns=turns)
    lag.setName("reactor-lag")
    lag.setServiceParent(node)
    command = StatusCommand(node, lag)
    node.local_extensions.append(command)
    return command
