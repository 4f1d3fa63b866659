"""LocalAPIFactory and LocalSocketService: the local Unix-socket API of a node."""

from __future__ import annotations

import os
import secrets
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from wazuhcluster.localapi.commands import LocalCommands
from wazuhcluster.protocol.handler import ClusterProtocol


class LocalAPIFactory(Factory):
    """Builds one plain (unencrypted) ClusterProtocol per local client."""

    noisy = False

    def __init__(self, node: Any) -> None:
        self._node = node
        self.clients: dict[int, LocalCommands] = {}

    def buildProtocol(self, addr: IAddress | None) -> ClusterProtocol:
        while True:
            client_id = secrets.randbelow(2**20)
            if client_id not in self.clients:  # no silent collision
                break
        commands = LocalCommands(self._node, client_id, self._forget)
        self.clients[client_id] = commands
        config = self._node.config
        commands.strings.account = account = self._node.memory.account(
            reserve=self._node.config.ext.max_frame_payload)
        return ClusterProtocol(
            commands, self._node.clock, codec=None, memory=account,
            request_timeout=config.intervals.timeout_cluster_request,
            max_frame_payload=config.ext.max_frame_payload,
            max_message=config.ext.max_message_size,
            partial_frame_timeout=config.ext.partial_frame_timeout, trace=config.debug >= 2,
            tag=f"Local {client_id}")

    def _forget(self, client_id: int) -> None:
        self.clients.pop(client_id, None)


class LocalSocketService(Service):
    """Listens on ``queue/cluster/c-internal.sock``: directory 0770, socket 0660.

    A stale socket file left by a crashed run is removed through the pid lock file.
    """

    name = "local-api"
    _log = Logger()

    def __init__(self, reactor: Any, path: str, factory: Factory) -> None:
        self._reactor = reactor
        self._path = path
        self._factory = factory
        self._port: IListeningPort | None = None
        self.when_listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        directory = os.path.dirname(self._path)
        os.makedirs(directory, mode=0o770, exist_ok=True)
        os.chmod(directory, 0o770)
        endpoint = UNIXServerEndpoint(self._reactor, self._path, wantPID=True)
        failed: list[Failure] = []
        self.when_listening = endpoint.listen(self._factory)
        self.when_listening.addCallbacks(self._listening, failed.append)
        if failed:  # UNIX listening fails synchronously: stop start-up with one line
            raise SystemExit(f"wazuhcluster: cannot listen on {self._path} "
                             f"({failed[0].getErrorMessage()}): is another process using this "
                             "home? stop it, or remove the stale socket and its .lock")

    def _listening(self, port: IListeningPort) -> IListeningPort:
        if os.path.exists(self._path):  # absent only under a memory reactor in tests
            os.chmod(self._path, 0o660)
        self._port = port
        self._log.info("[Local Server] [Main] Serving on {path}", path=self._path)
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()  # type: ignore[return-value]
        return None
