"""LocalCommands: the local Unix-socket API (plain framing), one object per client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.config import Role
from wazuhcluster.errors import ClusterError, RemoteCommandError, UnknownCommand
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    CONTROL_RES,
    ECHO_CLIENT,
    GET_CONFIG,
    GET_HEALTH,
    GET_NODES,
    OK,
    OK_MASTER,
    Reply,
)
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]
SENT_TO_MASTER = b"Sent request to master node"


@implementer(ICommandHandler)
class LocalCommands:
    """Requests from a local client (the REST API, the control CLI, C daemons).

    :param node: the role node (MasterNode or WorkerNode).
    :param client_id: this connection's id, unique among live local clients.
    """

    _log = Logger()

    def __init__(self, node: Any, client_id: int, on_close: Callable[[int], None]) -> None:
        self._node = node
        self.client_id = client_id
        self._on_close = on_close
        self.peer: IPeer | None = None
        self._idle: IDelayedCall | None = None
        #: Called when the client goes away (features cancel the work done for it).
        self.on_lost: list[Callable[[], None]] = []
        config = node.config
        self.strings = StringStore(node.clock, max_string=config.ext.max_message_size,
                                   max_total=config.ext.max_pending_strings_bytes)
        self.files = FileReceiver(config.home, node.run)  # no directory: transfers refused
        self._responders: dict[bytes, Responder] = {
            **CommonResponders(self.strings, self.files, lambda: self.tag).responders(),
            ECHO_CLIENT: self._keepalive,
            GET_CONFIG: self._get_config,
            GET_NODES: self._get_nodes,
            GET_HEALTH: self._get_health,
        }
        for extension in node.local_extensions:
            self._responders.update(extension.local_responders(self))

    @property
    def tag(self) -> str:
        """Wazuh log tag of this local client."""
        return f"Local {self.client_id}"

    def connection_made(self, peer: IPeer) -> None:
        """Start the idle timer."""
        self.peer = peer
        self._touch()

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Dispatch one local request."""
        self._touch()
        responder = self._responders.get(command)
        if responder is None:
            return fail(UnknownCommand(command))
        return Deferred.fromCoroutine(responder(payload))

    def peer_lost(self, reason: Failure) -> None:
        """Forget this client."""
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._on_close(self.client_id)
        lost, self.on_lost = self.on_lost, []
        for callback in lost:
            callback()

    def _touch(self) -> None:
        limit = self._node.config.intervals.max_allowed_time_without_keepalive
        if self._idle is not None and self._idle.active():
            self._idle.reset(limit)
        else:
            self._idle = self._node.clock.callLater(limit, self._expire)

    def _expire(self) -> None:
        if self.peer is not None:
            self.peer.disconnect("local client idle for too long")

    async def _keepalive(self, payload: bytes) -> Reply:
        return Reply(OK_MASTER, payload)

    async def _get_config(self, payload: bytes) -> Reply:
        return Reply.ok(messages.encode_json(self._node.config.public_dict()))

    async def _get_nodes(self, payload: bytes) -> Reply:
        if self._node.config.role is Role.MASTER:
            answer = self._node.get_nodes(messages.parse_json(payload, "get_nodes"))
            return Reply.ok(messages.encode_json(answer))
        return self._forward(GET_NODES, payload)

    async def _get_health(self, payload: bytes) -> Reply:
        if self._node.config.role is Role.MASTER:
            answer = await self._node.get_health(messages.parse_json(payload, "get_health"))
            return Reply.ok(messages.encode_json(answer))
        return self._forward(GET_HEALTH, payload)

    def _forward(self, command: bytes, payload: bytes) -> Reply:
        """Worker: ask the master, answer later with ``control_res``."""
        if self._node.peer is None:
            raise ClusterError(3023)
        d = Deferred.fromCoroutine(self._relay(command, payload))
        d.addErrback(lambda f: self._log.failure("[{tag}] [Main] Relay failed", f, tag=self.tag))
        return Reply(OK, SENT_TO_MASTER)

    async def _relay(self, command: bytes, payload: bytes) -> None:
        try:
            answer = await self._node.request_master(command, payload)
        except RemoteCommandError as e:
            answer = e.to_wire()  # the client decodes the error object (no 200 s wait)
        except ClusterError as e:
            answer = e.to_wire()
        if self.peer is not None:
            with contextlib.suppress(ClusterError):  # the client may have gone away
                await self.peer.request(CONTROL_RES, answer)
