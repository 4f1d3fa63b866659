"""MasterCommands: responders for the requests a worker sends, one object per connection."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.config import name_problem
from wazuhcluster.errors import ClusterError, RemoteCommandError, UnknownCommand
from wazuhcluster.integrity.container import ContainerLimits
from wazuhcluster.interfaces import ICommandHandler, IPeer
from wazuhcluster.logsafe import peer_text
from wazuhcluster.master.registry import WorkerSession
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    CAPS,
    ECHO_CLIENT,
    ECHO_MASTER,
    GET_HEALTH,
    GET_NODES,
    HELLO,
    OK,
    OK_MASTER,
    Reply,
)
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore

if TYPE_CHECKING:
    from wazuhcluster.master.node import MasterNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]

#: What our master announces in reply to ``wzc_caps``.
MASTER_CAPABILITIES = ("sync_now",)


@implementer(ICommandHandler)
class MasterCommands:
    """Requests a worker may send to the master, for one worker connection."""

    _log = Logger()

    def __init__(self, node: MasterNode) -> None:
        self._node = node
        self._config = node.config
        self.peer: IPeer | None = None
        self.session: WorkerSession | None = None
        self._hello_timer: IDelayedCall | None = None
        self.strings = StringStore(node.clock, max_string=self._config.ext.max_message_size,
                                   max_total=self._config.ext.max_pending_strings_bytes)
        self.files = FileReceiver(self._config.home, node.run,
                                  max_file=ContainerLimits.for_zip_size(
                                      self._config.intervals.max_zip_size).max_container_size)
        self.common = CommonResponders(self.strings, self.files, lambda: self.tag)
        self._before_hello: dict[bytes, Responder] = {HELLO: self._hello}
        self._responders: dict[bytes, Responder] = {
            **self.common.responders(),
            ECHO_CLIENT: self._keepalive,
            GET_NODES: self._get_nodes,
            GET_HEALTH: self._get_health,
            CAPS: self._capabilities,
        }
        for extension in node.extensions:
            self._responders.update(extension.master_responders(self))

    @property
    def tag(self) -> str:
        """Wazuh log tag of this connection."""
        return f"Worker {self.session.name}" if self.session else "Master"

    # -- ICommandHandler ------------------------------------------------------------------
    def connection_made(self, peer: IPeer) -> None:
        """Bound the unauthenticated phase: small frames, and a deadline for ``hello``."""
        self.peer = peer
        self._node.hello_gate.enter(peer, peer.peer_address)
        peer.set_limits(max_frame_payload=self._config.ext.pre_hello_max_payload,
                        max_message=self._config.ext.pre_hello_max_payload)
        self._hello_timer = self._node.clock.callLater(
            self._config.ext.hello_timeout, self._hello_overdue)

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        """Dispatch one request."""
        table = self._responders if self.session is not None else self._before_hello
        responder = table.get(command)
        if responder is None:
            if self.session is None and command in self._responders:
                return fail(ClusterError(3000, "send hello first"))
            return fail(UnknownCommand(command))
        return Deferred.fromCoroutine(responder(payload))

    def peer_lost(self, reason: Failure) -> None:
        """Unregister the worker and cancel its work."""
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        if self.peer is not None:
            self._node.hello_gate.leave(self.peer)
        self.files.close_all()
        if self.session is not None and self._node.registry.leave(self.session):
            self._log.info("[{tag}] [Main] Worker disconnected ({reason}).", tag=self.tag,
                           reason=reason.getErrorMessage())
            for extension in self._node.extensions:
                extension.worker_lost(self.session)

    # -- responders -----------------------------------------------------------------------
    def _hello_overdue(self) -> None:
        self._hello_timer = None
        if self.session is None and self.peer is not None:
            self.peer.disconnect(f"no hello within {self._config.ext.hello_timeout} s")

    async def _hello(self, payload: bytes) -> Reply:
        hello = messages.parse_hello(payload)
        peer = self.peer
        assert peer is not None
        try:
            await self._validate_hello(hello, peer)
        except ClusterError as e:
            self._log.error("[Master] [Main] Refused worker {worker} from {peer}: {error}",
                            worker=peer_text(hello.name), peer=peer.peer_address,
                            error=peer_text(str(e), 300))
            raise
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None
        self._node.hello_gate.leave(peer)
        now = self._node.clock.seconds()
        session = WorkerSession(name=hello.name, version=hello.version,
                                node_type=hello.node_type, ip=peer.peer_address, peer=peer,
                                connected_since=now, last_keepalive=now)
        # queue/cluster/<name>/ is made by the first file this worker sends or we push.
        self.files.directory_name = hello.name.encode()
        peer.set_limits(max_frame_payload=self._config.ext.max_frame_payload,
                        max_message=self._config.ext.max_message_size)
        self._node.registry.join(session)
        self.session = session
        self._log.info("[{tag}] [Main] Connected from {peer}, version {version}.",
                       tag=self.tag, peer=peer.peer_address, version=hello.version)
        return Reply.ok(f"Client {hello.name} added".encode())

    async def _validate_hello(self, hello: messages.Hello, peer: IPeer) -> None:
        config = self._config
        for check in self._node.hello_checks:
            check(hello, peer)
        problem = name_problem(hello.name)
        if problem is not None:
            raise ClusterError(3000, f"invalid node name: {problem}")
        if hello.name == config.node_name:
            raise ClusterError(3029, hello.name)
        if hello.cluster != config.name:
            raise ClusterError(3030, f"Worker name: {hello.name}; Cluster name: "
                                     f"{hello.cluster}; master cluster: {config.name}")
        if hello.version != config.version:
            raise ClusterError(3031, f"Worker version: {hello.version}; Master version: "
                                     f"{config.version}")
        existing = self._node.registry.get(hello.name)
        if existing is None:
            return
        # The name is taken. If the old connection is dead but not yet noticed (a worker
        # that lost its network and came back), probe it: a live worker answers echo-m at
        # once; a dead one does not, and is replaced instead of refusing the new one.
        try:
            await existing.peer.request(ECHO_MASTER, b"keepalive",
                                        timeout=config.ext.duplicate_probe_timeout)
        except RemoteCommandError:
            pass  # it answered, even if only with an error: it is alive
        except ClusterError:
            if self._node.registry.get(hello.name) is existing:
                self._log.warn("[Master] [Main] Worker {worker}: old connection from {old} "
                               "did not answer; replaced by the one from {new}.",
                               worker=hello.name, old=existing.ip, new=peer.peer_address)
                self._node.registry.leave(existing)
                existing.peer.disconnect("replaced by a new connection with the same name")
                for extension in self._node.extensions:
                    extension.worker_lost(existing)
            if self._node.registry.get(hello.name) is None:
                return
        raise ClusterError(3028, hello.name)

    async def _keepalive(self, payload: bytes) -> Reply:
        assert self.session is not None
        self.session.last_keepalive = self._node.clock.seconds()
        self._log.debug("[{tag}] [Keep alive] Keepalive received.", tag=self.tag)
        return Reply(OK_MASTER, payload)

    async def _get_nodes(self, payload: bytes) -> Reply:
        answer = self._node.get_nodes(messages.parse_json(payload, "get_nodes"))
        return Reply.ok(messages.encode_json(answer))

    async def _get_health(self, payload: bytes) -> Reply:
        answer = await self._node.get_health(messages.parse_json(payload, "get_health"))
        return Reply.ok(messages.encode_json(answer))

    async def _capabilities(self, payload: bytes) -> Reply:
        assert self.session is not None
        self.session.capabilities = messages.parse_capabilities(payload)
        self._log.debug("[{tag}] [Main] Capabilities: {caps}", tag=self.tag,
                        caps=sorted(self.session.capabilities))
        extra = [c for e in self._node.extensions for c in getattr(e, "capabilities", ())]
        return Reply(OK, messages.encode_json(list(MASTER_CAPABILITIES) + extra))
