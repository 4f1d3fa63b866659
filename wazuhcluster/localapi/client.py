"""A local-socket client: what the control CLI (and the REST API) use to ask a node."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.errors import ClusterError, UnknownCommand
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.localapi.commands import SENT_TO_MASTER
from wazuhcluster.protocol.commands import (
    CONTROL_RES,
    DAPI_EARLY,
    DAPI_ERR,
    DAPI_RES,
    EARLY_ANSWER,
    EARLY_IS_ANSWER,
    ERR,
    NEW_STR,
    OK,
    STR_UPD,
    Reply,
)
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.protocol.transfers import StringStore

#: Commands whose final answer arrives later as a request from the node.
SEND_F_RES = b"send_f_res"
ASYNC_COMMANDS = frozenset({b"dapi", b"dapi_fwd", b"send_file", b"sendasync"})

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]


@implementer(ICommandHandler)
class LocalClientCommands:
    """What a node may send to a local client: the final answers of asynchronous requests."""

    def __init__(self, clock: Any) -> None:
        self.final: Deferred[bytes] = Deferred()
        self.waiting = False  # someone awaits ``final``
        #: the node's ``wzc_early`` bytes: the answer of a ``wzc_dapi_e`` whose reply is "="
        self.early: bytes | None = None
        self.strings = StringStore(clock)
        self._responders: dict[bytes, Responder] = {
            NEW_STR: self._new_str, STR_UPD: self._str_upd, CONTROL_RES: self._control_res,
            DAPI_RES: self._dapi_res, DAPI_ERR: self._dapi_err, OK: self._ok, ERR: self._err,
            SEND_F_RES: self._dapi_res,  # send_file's outcome, delivered like a DAPI answer
            EARLY_ANSWER: self._early,
        }

    def connection_made(self, peer: IPeer) -> None:
        """Nothing to do."""

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Dispatch one request from the node."""
        responder = self._responders.get(command)
        if responder is None:
            return fail(UnknownCommand(command))
        return Deferred.fromCoroutine(responder(payload))

    def peer_lost(self, reason: Failure) -> None:
        """Fail the wait for a final answer."""
        if self.waiting and not self.final.called:
            self.final.errback(ClusterError(3009, "connection closed by the node"))

    def _answer(self, payload: bytes) -> None:
        if not self.final.called:
            self.final.callback(payload)

    async def _early(self, payload: bytes) -> None:
        """``wzc_early``: kept, not yet the answer (no reply: the node expects none)."""
        self.early = payload

    def early_answer(self) -> bytes:
        """The ``wzc_early`` bytes a reply ``ok "="`` names (and forget them)."""
        early, self.early = self.early, None
        if early is None:
            raise ClusterError(3036, "the node answered with early bytes it never sent")
        return early

    async def _new_str(self, payload: bytes) -> Reply:
        return Reply(OK, self.strings.new(payload))

    async def _str_upd(self, payload: bytes) -> Reply:
        self.strings.update(payload)
        return Reply(OK, b"String updated")

    async def _control_res(self, payload: bytes) -> Reply:
        self._answer(payload)
        return Reply(OK, b"Response received")

    async def _dapi_res(self, payload: bytes) -> Reply:
        self._answer(self.strings.take(payload))
        return Reply(OK, b"Distributed api response received")

    async def _dapi_err(self, payload: bytes) -> Reply:
        self._answer(payload)
        return Reply(OK, b"Response received")

    async def _ok(self, payload: bytes) -> Reply:
        self._answer(payload)
        return Reply(OK, b"Sendsync response received")

    async def _err(self, payload: bytes) -> Reply:
        self._answer(payload)
        return Reply(OK, b"Error response received")


async def local_request(reactor: Any, socket_path: str, command: bytes, payload: bytes,
                        timeout: float = 20.0, final_timeout: float = 200.0) -> bytes:
    """Send one request over the local socket and return its final answer.

    :raises ClusterError: 3012 when the node is not running; the remote error otherwise.
    """
    commands = LocalClientCommands(reactor)
    protocol = ClusterProtocol(commands, reactor, codec=None, request_timeout=timeout,
                               accept_reply_requests=True, tag="Local client")
    try:
        await connectProtocol(UNIXClientEndpoint(reactor, socket_path, timeout=5), protocol)
    except (ConnectError, OSError) as e:
        raise ClusterError(3012, f"{socket_path}: {e}") from None
    try:
        reply = await protocol.request(command, payload)
        if command == DAPI_EARLY:
            return commands.early_answer() if reply == EARLY_IS_ANSWER else reply
        if command in ASYNC_COMMANDS or reply == SENT_TO_MASTER:
            commands.waiting = True
            commands.final.addTimeout(final_timeout, reactor)
            reply = await commands.final
        return reply
    finally:
        if protocol.transport is not None:
            protocol.transport.loseConnection()
