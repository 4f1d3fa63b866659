"""Sendsync and send_file plugged into the role nodes.

Worker: a local client's ``sendsync``/``sendasync`` goes to the master as
``sendsync "<client id> <json>"``; the master answers later with ``new_str`` +
``sendsyn_res "<client id> <string id>"`` or ``sendsyn_err "<client id> <text>"``, delivered to
the client as ONE request frame ``ok <answer>`` / ``err <text>`` (what C clients read).
Master: a worker's ``sendsync`` and its own local clients' requests go to the daemon sockets
through a SendSyncRelay. Every request ends with an answer or an ``err``: daemon missing,
timeout, master link lost, invalid request.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.config import Role
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import ILocalExtension, IMasterExtension, IPeer, IWorkerExtension
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    ERR,
    OK,
    SENDSYN_ERR,
    SENDSYN_RES,
    SENDSYNC,
    Reply,
)
from wazuhcluster.protocol.frames import HEADER_SIZE
from wazuhcluster.protocol.transfers import send_file, send_string
from wazuhcluster.sendsync.relay import (
    SendSyncError,
    SendSyncRelay,
    SendSyncSettings,
    parse_request,
)

if TYPE_CHECKING:
    from wazuhcluster.master.node import MasterNode
    from wazuhcluster.worker.node import WorkerNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]

SENDASYNC = b"sendasync"
SEND_FILE = b"send_file"
SEND_F_RES = b"send_f_res"
QUEUED = b"Added request to SendSync requests queue"
QUEUED_LOCAL = b"Added request to sendsync requests queue"

#: C clients read one frame into a 64 KiB buffer: a longer answer could not be read.
MAX_CLIENT_FRAME = 64 * 1024
MAX_CLIENT_ANSWER = MAX_CLIENT_FRAME - HEADER_SIZE
#: Seconds a worker waits for the master's answer beyond the daemon timeout.
ANSWER_MARGIN = 30.0


def split_client_id(payload: bytes) -> tuple[int, bytes]:
    """``<client id> <rest>`` → (id, rest); ClusterError 3000 if malformed."""
    head, _, rest = payload.partition(b" ")
    if not head.isdigit() or len(head) > 9:
        raise ClusterError(3000, "expected '<local client id> <data>'")
    return int(head), rest


@attrs.define(eq=False)
class _Pending:
    peer: IPeer
    timer: IDelayedCall | None = None


class ClientAnswers:
    """Local clients waiting for a sendsync answer, by client id; each gets exactly one
    frame (``ok``/``err``), then is forgotten. Shared by both roles."""

    _log = Logger()

    def __init__(self, clock: Any, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._pending: dict[int, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, client_id: int) -> bool:
        return client_id in self._pending

    def wait(self, client_id: int, peer: IPeer) -> None:
        """Register a client; it gets an ``err`` if nothing arrives in time."""
        if client_id in self._pending:
            raise ClusterError(3000, "a sendsync request is already pending on this "
                                     "connection")
        entry = _Pending(peer)
        entry.timer = self._clock.callLater(
            self._timeout, self.deliver, client_id, False,
            b"Error 3020 - Timeout sending request: no sendsync answer from the master")
        self._pending[client_id] = entry

    def deliver(self, client_id: int, ok: bool, data: bytes) -> bool:
        """Send the final frame to the client; False if it is not waiting any more."""
        entry = self._pending.pop(client_id, None)
        if entry is None:
            return False
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        if ok and len(data) > MAX_CLIENT_ANSWER:
            ok, data = False, (f"Error 1000 - Internal error: daemon answer of {len(data)} "
                               f"bytes exceeds the {MAX_CLIENT_FRAME} byte client "
                               f"buffer").encode()
        d = entry.peer.notify(OK if ok else ERR, data)
        d.addErrback(lambda f: None)  # the client went away: nothing to tell
        return True

    def fail_all(self, text: bytes) -> None:
        """Answer every waiting client with ``err text``."""
        for client_id in list(self._pending):
            self.deliver(client_id, False, text)


def _validate(payload: bytes) -> None:
    """Refuse an invalid request at the edge (the client gets a clear err at once)."""
    parse_request(payload)


# -- master ------------------------------------------------------------------------------
@implementer(IMasterExtension, ILocalExtension)
class SendSyncMaster:
    """The master: workers' and local clients' sendsync requests go to the daemon sockets.

    :param node: the master node.
    :param relay: runs requests against the daemon sockets.
    """

    _log = Logger()

    def __init__(self, node: MasterNode, relay: SendSyncRelay) -> None:
        self._node = node
        self.relay = relay
        self.answers = ClientAnswers(node.clock, relay.settings.timeout + ANSWER_MARGIN)
        self._tasks: dict[Any, set[Deferred[None]]] = {}

    # IMasterExtension
    def master_responders(self, commands: Any) -> dict[bytes, Responder]:
        """``sendsync`` from one worker connection."""
        async def sendsync(payload: bytes) -> Reply:
            client_id, request = split_client_id(payload)
            session = commands.session
            d = Deferred.fromCoroutine(self._for_worker(session, client_id, request))
            tasks = self._tasks.setdefault(session, set())
            tasks.add(d)

            def forget(result: Any) -> Any:
                tasks.discard(d)
                return result
            d.addBoth(forget)
            d.addErrback(lambda f: f.trap(CancelledError))  # the worker left
            d.addErrback(lambda f: self._log.failure(
                "[Worker {name}] [SendSync] Unexpected failure", f, name=session.name))
            return Reply(OK, QUEUED)
        return {SENDSYNC: sendsync}

    def worker_lost(self, session: Any) -> None:
        """Stop the worker's requests: nobody is left to answer."""
        for d in list(self._tasks.pop(session, ())):
            d.cancel()

    def health_status(self, session: Any) -> dict[str, Any]:
        """Nothing added to health."""
        return {}

    async def _for_worker(self, session: Any, client_id: int, request: bytes) -> None:
        tag = f"Worker {session.name}"
        try:
            answer, ok = await self.relay.forward(request), True
        except SendSyncError as e:
            answer, ok = str(e).encode(), False
            self._log.debug("[{tag}] [SendSync] {error}", tag=tag, error=str(e))
        peer = session.peer
        try:
            if ok:
                string_id = await send_string(peer, answer)
                await peer.request(SENDSYN_RES, b"%d %s" % (client_id, string_id))
            else:
                await peer.request(SENDSYN_ERR, b"%d %s" % (client_id, answer))
        except ClusterError as e:
            self._log.info("[{tag}] [SendSync] Answer for local client {client} not "
                           "delivered: {error}", tag=tag, client=client_id, error=str(e))

    # ILocalExtension
    def local_responders(self, commands: Any) -> dict[bytes, Responder]:
        """The master's own local clients go straight to the daemon sockets."""
        async def sendsync(payload: bytes) -> Reply | None:
            return self._local(commands, payload, reply=None)

        async def sendasync(payload: bytes) -> Reply | None:
            return self._local(commands, payload, reply=Reply(OK, QUEUED_LOCAL))
        return {SENDSYNC: sendsync, SENDASYNC: sendasync,
                SEND_FILE: lambda payload: _send_file_master(self._node, commands, payload)}

    def _local(self, commands: Any, payload: bytes, reply: Reply | None) -> Reply | None:
        self.answers.wait(commands.client_id, commands.peer)
        d = Deferred.fromCoroutine(self.relay.forward(payload))

        def done(answer: bytes) -> None:
            self.answers.deliver(commands.client_id, True, answer)

        def failed(failure: Any) -> None:
            failure.trap(SendSyncError)
            self.answers.deliver(commands.client_id, False,
                                 str(failure.value).encode())
        d.addCallbacks(done, failed)
        d.addErrback(lambda f: self._log.failure("[Local Server] [SendSync] Unexpected "
                                                 "failure", f))
        return reply


# -- worker ------------------------------------------------------------------------------
@implementer(IWorkerExtension, ILocalExtension)
class SendSyncWorker:
    """The worker: local clients' requests go to the master; answers come back to them.

    :param node: the worker node.
    :param timeout: seconds a client waits for the master's answer before an ``err``.
    """

    _log = Logger()

    def __init__(self, node: WorkerNode, timeout: float) -> None:
        self._node = node
        self.answers = ClientAnswers(node.clock, timeout)

    # IWorkerExtension
    def worker_responders(self, commands: Any) -> dict[bytes, Responder]:
        """``sendsyn_res`` and ``sendsyn_err`` from the master."""
        async def sendsyn_res(payload: bytes) -> Reply:
            client_id, string_id = split_client_id(payload)
            answer = commands.strings.take(string_id)
            if not self.answers.deliver(client_id, True, answer):
                self._log.info("[{tag}] [SendSync] Local client {client} is gone; answer "
                               "dropped", tag=self._node.tag, client=client_id)
            return Reply(OK, b"Response forwarded to worker")

        async def sendsyn_err(payload: bytes) -> Reply:
            client_id, text = split_client_id(payload)
            self.answers.deliver(client_id, False, text)
            return Reply(OK, b"SendSync error forwarded to worker")
        return {SENDSYN_RES: sendsyn_res, SENDSYN_ERR: sendsyn_err}

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        """Nothing to do."""

    def disconnected(self) -> None:
        """Answers in flight will never come: tell the clients now."""
        self.answers.fail_all(str(ClusterError(3023)).encode())

    # ILocalExtension
    def local_responders(self, commands: Any) -> dict[bytes, Responder]:
        """``sendsync``, ``sendasync`` and ``send_file`` for one local client."""
        async def sendsync(payload: bytes) -> Reply | None:
            return self._forward(commands, payload, reply=None)

        async def sendasync(payload: bytes) -> Reply | None:
            return self._forward(commands, payload, reply=Reply(OK, QUEUED_LOCAL))
        return {SENDSYNC: sendsync, SENDASYNC: sendasync,
                SEND_FILE: lambda payload: _send_file_worker(self._node, commands, payload)}

    def _forward(self, commands: Any, payload: bytes, reply: Reply | None) -> Reply | None:
        client_id = commands.client_id
        self.answers.wait(client_id, commands.peer)
        try:
            _validate(payload)
        except SendSyncError as e:
            self.answers.deliver(client_id, False, str(e).encode())
            return reply
        d = self._node.request_master(SENDSYNC, b"%d %s" % (client_id, payload))

        def failed(failure: Any) -> None:
            failure.trap(ClusterError)
            self.answers.deliver(client_id, False, str(failure.value).encode())
        d.addCallbacks(lambda _: None, failed)
        d.addErrback(lambda f: self._log.failure("[{tag}] [SendSync] Unexpected failure", f,
                                                 tag=self._node.tag))
        return reply


# -- send_file (legacy; broken in Wazuh 4.7.5, working here) ------------------------------
def _parse_send_file(payload: bytes) -> tuple[str, str]:
    parts = payload.split(b" ")
    if len(parts) != 2 or not parts[0].startswith(b"/"):
        raise ClusterError(3000, "send_file expects '<absolute path> <node name>'")
    path = os.fsdecode(parts[0])
    if not os.path.isfile(path):
        raise ClusterError(3034, path)
    return path, parts[1].decode("utf-8", "replace")


async def _send_file_worker(node: WorkerNode, commands: Any, payload: bytes) -> Reply:
    path, _ = _parse_send_file(payload)  # the node name is ignored: files go to the master
    peer = node.peer
    if peer is None:
        raise ClusterError(3023)
    relpath = f"/queue/cluster/{node.config.node_name}/{_transfer_name(path)}".encode()
    Deferred.fromCoroutine(_send_and_report(node, peer, commands, path, relpath))
    return Reply(OK, b"Forwarding file to master node")


async def _send_file_master(node: MasterNode, commands: Any, payload: bytes) -> Reply:
    path, name = _parse_send_file(payload)
    session = node.registry.get(name)
    if session is None:
        raise ClusterError(3022, name)
    relpath = f"/queue/cluster/{name}/{_transfer_name(path)}".encode()
    Deferred.fromCoroutine(_send_and_report(node, session.peer, commands, path, relpath))
    return Reply(OK, f"Forwarding file to {name} node".encode())


def _transfer_name(path: str) -> str:
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in os.path.basename(path))
    return f"send_file-{secrets.token_hex(4)}-{base.lstrip('.') or 'file'}"[:200]


async def _send_and_report(node: Any, peer: IPeer, commands: Any, path: str,
                           relpath: bytes) -> None:
    """Send the file, then tell the local client the outcome (``new_str`` + ``send_f_res``)."""
    try:
        await send_file(peer, path, relpath, node.run)
        result: Any = {"message": "File sent", "path": relpath.decode()}
    except (ClusterError, OSError) as e:
        result = {"error": 3000, "message": str(e)}
    client = commands.peer
    if client is None:
        return
    with contextlib.suppress(ClusterError):
        string_id = await send_string(client, messages.encode_json(result))
        await client.request(SEND_F_RES, string_id)


# -- composition ---------------------------------------------------------------------------
def install(node: Any, reactor: Any) -> None:
    """Add sendsync (and send_file) to a master or worker node."""
    settings = SendSyncSettings.from_settings(node.config.home, node.config.settings)
    feature: SendSyncMaster | SendSyncWorker
    if node.config.role is Role.MASTER:
        feature = SendSyncMaster(node, SendSyncRelay(reactor, settings))
    else:
        feature = SendSyncWorker(node, settings.timeout + ANSWER_MARGIN)
    node.extensions.append(feature)
    node.local_extensions.append(feature)
    node.sendsync = feature
