"""The registration service: TLS port 1515 on every node, authd's local socket on the master.

An agent connection carries one request and gets one answer, then the service closes it (as
authd does). On the master the request goes to the :class:`~.registrar.Registrar`; on a worker
to the :class:`~.forward.Forwarder` (``sendsync`` to the master). Connections beyond
``max_connections`` are closed at once ("Too many connections"); a connection that sends
nothing within ``request_timeout`` seconds is closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from wazuhcluster.config import Role
from wazuhcluster.enrolment.authconfig import AuthConfig, load_auth_config
from wazuhcluster.enrolment.batch import MasterEnrolBatch, WorkerEnrolBatch
from wazuhcluster.enrolment.forward import Forwarder, ForwardResult
from wazuhcluster.enrolment.keystore import AddOp, Outcome
from wazuhcluster.enrolment.localsock import AuthLocalFactory
from wazuhcluster.enrolment.messages import (
    MAX_REQUEST_SIZE,
    EnrolRequest,
    Refused,
    accepted,
    parse_request,
    refused,
)
from wazuhcluster.enrolment.registrar import Registrar
from wazuhcluster.enrolment.tls import (
    ServerContextFactory,
    certificate_names_host,
    ensure_manager_certificate,
)
from wazuhcluster.errors import ConfigError


def password_path(home: str) -> str:
    """``etc/authd.pass``."""
    return os.path.join(home, "etc", "authd.pass")


def read_password(home: str) -> tuple[str | None, bool]:
    """The enrolment password from etc/authd.pass: (password, from_file); (None, False) when
    the file is absent.

    :raises ConfigError: the file exists and is empty.
    """
    path = password_path(home)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().rstrip("\r\n")
    except FileNotFoundError:
        return None, False
    if len(first) < 2:
        raise ConfigError(f"{path}: empty password: write the password on its first line, or "
                          "remove the file to get a random one")
    return first, True


class EnrolProtocol(Protocol):
    """One agent connection."""

    transport: Any

    _log = Logger()

    def __init__(self, factory: EnrolFactory) -> None:
        self._factory = factory
        self._buffer = b""
        self._handled = False
        self._timer: Any = None
        self._source = ""

    def connectionMade(self) -> None:
        """Count the connection; refuse it beyond the limit."""
        factory = self._factory
        peer = self.transport.getPeer()
        self._source = getattr(peer, "host", "") or ""
        factory.active += 1
        if factory.active > factory.auth.max_connections:
            factory.refused_connections += 1
            self._log.error("[{tag}] [Agent enrolment] Too many connections. Rejecting.",
                            tag=factory.tag)
            self._handled = True
            self.transport.abortConnection()
            return
        self._timer = factory.clock.callLater(factory.auth.request_timeout, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        if not self._handled:
            self._log.info("[{tag}] [Agent enrolment] Client timeout from {ip}",
                           tag=self._factory.tag, ip=self._source)
            self._handled = True
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """The request is what the first read brings (authd reads once)."""
        if self._handled:
            return
        self._handled = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        factory = self._factory
        if len(data) > MAX_REQUEST_SIZE:
            self.transport.abortConnection()
            return
        if factory.auth.ssl_agent_ca and factory.auth.ssl_verify_host and not (
                certificate_names_host(self.transport.getPeerCertificate(), self._source)):
            factory.refused_certificates += 1
            self._log.error("[{tag}] [Agent enrolment] Unable to verify client certificate "
                            "of {ip}.", tag=factory.tag, ip=self._source)
            self.transport.loseConnection()
            return
        Deferred.fromCoroutine(self._serve(data)).addErrback(self._failed)

    async def _serve(self, data: bytes) -> None:
        factory = self._factory
        try:
            request = parse_request(data, password=factory.password, source_ip=self._source,
                                    use_source_ip=factory.auth.use_source_ip,
                                    manager_version=factory.manager_version,
                                    allow_higher_versions=factory.auth.allow_higher_versions)
        except Refused as e:
            self._log.warn("[{tag}] [Agent enrolment] Request from {ip} refused: {error}",
                           tag=factory.tag, ip=self._source, error=e.message)
            factory.refusals += 1
            self._answer(refused(e.message))
            return
        self._log.info("[{tag}] [Agent enrolment] Received request for a new agent ({name}) "
                       "from: {ip}", tag=factory.tag, name=request.name, ip=self._source)
        if factory.registrar is not None:
            outcome = await factory.registrar.add(AddOp(
                name=request.name, ip=request.ip, groups=request.groups,
                key_hash=request.key_hash))
            answer = _outcome_answer(request, outcome)
        else:
            assert factory.forwarder is not None
            self._log.info("[{tag}] [Agent enrolment] Dispatching request to master node",
                           tag=factory.tag)
            answer = _forward_answer(request, await factory.forwarder.enrol(request))
        if answer.startswith(b"OSSEC K:"):
            factory.enrolled += 1
        else:
            factory.refusals += 1
        self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        if self.transport is not None and self.connected:
            self.transport.write(answer)
            self.transport.loseConnection()

    def _failed(self, failure: Failure) -> None:
        self._log.failure("[{tag}] [Agent enrolment] Request failed", failure,
                          tag=self._factory.tag)
        self._answer(refused("Internal manager error"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Release the slot."""
        self._factory.active -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _outcome_answer(request: EnrolRequest, outcome: Outcome) -> bytes:
    if outcome.line is None:
        return refused(outcome.agent_error or outcome.message)
    line = outcome.line
    return accepted(line.id_text, line.name, line.ip, line.key)


def _forward_answer(request: EnrolRequest, result: ForwardResult) -> bytes:
    if result.error is not None or result.agent_id is None or result.key is None:
        return refused(result.error or "Invalid message format")
    return accepted(result.agent_id, request.name, result.ip or request.ip, result.key)


class EnrolFactory(Factory):
    """Shared state of the registration port."""

    def __init__(self, auth: AuthConfig, clock: Any, tag: str, manager_version: str,
                 password: str | None, registrar: Registrar | None,
                 forwarder: Forwarder | None) -> None:
        self.auth = auth
        self.clock = clock
        self.tag = tag
        self.manager_version = manager_version
        self.password = password
        self.registrar = registrar
        self.forwarder = forwarder
        self.active = 0
        self.enrolled = 0
        self.refusals = 0
        self.refused_connections = 0
        self.refused_certificates = 0

    def buildProtocol(self, addr: Any) -> EnrolProtocol:
        """One protocol per agent connection."""
        return EnrolProtocol(self)


class _Listener(StreamServerEndpointService):
    """A listener whose failure to bind stops start-up with one line."""

    _raiseSynchronously = True
    address = ""
    fix = ""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(f"wazuhcluster: cannot listen on {self.address} "
                             f"({e.socketError}): {self.fix}") from None

    def startService(self) -> None:
        try:
            super().startService()
        except CannotListenError as e:
            raise SystemExit(f"wazuhcluster: cannot listen on {self.address} "
                             f"({e.socketError}): {self.fix}") from None


class EnrolmentService(MultiService):
    """``enrolment``: the registration port (and on the master authd's local socket)."""

    _log = Logger()

    def __init__(self, node: Any, reactor: Any, auth: AuthConfig) -> None:
        super().__init__()
        self.setName("enrolment")
        config = node.config
        self.auth = auth
        self._tag = node.tag if isinstance(getattr(node, "tag", None), str) else (
            "Master" if config.role is Role.MASTER else f"Worker {config.node_name}")
        self._home = config.home
        self._reactor = reactor
        self.registrar: Registrar | None = None
        self.forwarder: Forwarder | None = None
        self.batch_master: MasterEnrolBatch | None = None
        self.batch_worker: WorkerEnrolBatch | None = None
        if config.role is Role.MASTER:
            try:
                watcher = node.getServiceNamed("client-keys-watch")
            except KeyError:
                watcher = None
            self.registrar = Registrar(config.home, auth, node.runner, node.agent_db, reactor,
                                       tag=self._tag, watcher=watcher)
            socket_path = auth_socket_path(config.home)
            local = _Listener(UNIXServerEndpoint(reactor, socket_path, mode=0o660,
                                                 wantPID=False),
                              AuthLocalFactory(self.registrar, reactor))
            local.address = socket_path
            local.fix = "stop the process using it (another authd?) or remove the socket"
            local.setName("auth-local-socket")
            local.setServiceParent(self)
            # Our workers send their enrolments in batches (wzc_en_add), see batch.py.
            if hasattr(node, "extensions"):  # a role node (tests may give a bare stand-in)
                self.batch_master = MasterEnrolBatch(self.registrar)
                node.extensions.append(self.batch_master)
        else:
            # Towards our master: batches of enrolments; towards Wazuh's: sendsync.
            send = None  # sendsync through the local cluster socket
            if hasattr(node, "extensions"):
                self.batch_worker = WorkerEnrolBatch(node.request_master, reactor)
                node.extensions.append(self.batch_worker)
                send = self.batch_worker.send
            self.forwarder = Forwarder(reactor, config.local_socket_path, self._tag,
                                       auth.forward_deadline, auth.max_waiting, send=send)
        password, from_file = (None, False)
        if auth.use_password:
            password, from_file = read_password(config.home)
            if password is None:
                password = secrets.token_hex(16)
        self._password_from_file = from_file
        self.factory = EnrolFactory(auth, reactor, self._tag, "v" + config.version.lstrip("v"),
                                    password, self.registrar, self.forwarder)
        self.tls: _Listener | None = None
        self._prepared = False

    def privilegedStartService(self) -> None:
        """Create the certificate if missing, then bind the TLS port (before dropping rights)."""
        self._prepare()
        super().privilegedStartService()

    def startService(self) -> None:
        """Start listening and say how agents authenticate."""
        self._prepare()
        super().startService()
        if self.tls is None:
            return
        if self.factory.password is None:
            self._log.info("[{tag}] [Agent enrolment] Accepting connections on port {port}. "
                           "No password required.", tag=self._tag, port=self.auth.port)
        elif self._password_from_file:
            self._log.info("[{tag}] [Agent enrolment] Accepting connections on port {port}. "
                           "Using password specified on file: {path}", tag=self._tag,
                           port=self.auth.port, path=password_path(self._home))
        else:
            self._log.info("[{tag}] [Agent enrolment] Accepting connections on port {port}. "
                           "Random password chosen for agent authentication: {password}",
                           tag=self._tag, port=self.auth.port, password=self.factory.password)

    def _prepare(self) -> None:
        if self.registrar is not None and not self._prepared:
            path = auth_socket_path(self._home)
            os.makedirs(os.path.dirname(path), mode=0o770, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket of an earlier run (the home lock is ours)
        self._prepared = True
        self._add_tls_listener()

    def _add_tls_listener(self) -> None:
        if self.tls is not None or not self.auth.remote_enrollment:
            return
        if ensure_manager_certificate(self.auth.ssl_manager_cert, self.auth.ssl_manager_key):
            self._log.info("[{tag}] [Agent enrolment] Created the manager certificate {path}",
                           tag=self._tag, path=self.auth.ssl_manager_cert)
        try:
            context = ServerContextFactory(self.auth)
        except Exception as e:  # noqa: BLE001 - OpenSSL errors have no common base worth naming
            raise SystemExit(f"wazuhcluster: configuration error: <auth>: cannot use "
                             f"{self.auth.ssl_manager_cert} / {self.auth.ssl_manager_key} / "
                             f"ciphers {self.auth.ciphers!r} ({e}): fix or remove them") from None
        self.tls = _Listener(SSL4ServerEndpoint(self._reactor, self.auth.port, context,
                                                backlog=128), self.factory)
        self.tls.address = f"0.0.0.0:{self.auth.port}"
        self.tls.fix = "stop the process using it (Wazuh's authd?) or change <auth><port>"
        self.tls.setName("enrolment-listener")
        self.tls.setServiceParent(self)


def auth_socket_path(home: str) -> str:
    """authd's local socket ``queue/sockets/auth``."""
    return os.path.join(home, "queue", "sockets", "auth")


def install(node: Any, reactor: Any) -> EnrolmentService | None:
    """Plug the registration service into a role node (None when ``<auth>`` disables it)."""
    config = node.config
    try:
        auth = load_auth_config(config.config_path, config.home, config.settings)
        if auth.disabled:
            return None
        service = EnrolmentService(node, reactor, auth)
    except ConfigError as e:
        raise SystemExit(f"wazuhcluster: configuration error: {e}") from None
    service.setServiceParent(node)
    node.enrolment = service
    return service
