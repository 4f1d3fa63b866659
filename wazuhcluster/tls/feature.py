"""Link security of a node: TLS on the cluster link, verified node names, key rotation, reload.

Plugged into the role nodes by :func:`install_master` / :func:`install_worker` (called from
the role services). What it adds on the wire, between our nodes only (after ``wzc_caps``):

* capability ``keyring``: ``wzc_keys`` (request, JSON list of key ids) tells the peer which
  cluster keys we hold; the answer lists the peer's. Each side then sends with the newest
  common key (see :mod:`wazuhcluster.tls.keyring`).
* capability ``tls_plain``: on a TLS link, each side sends ``wzc_plain`` (a notification,
  still Fernet-encrypted) and sends every later payload without Fernet; receiving it switches
  Fernet off for what the peer sends after it. Frames stay the same.

Reload (SIGHUP, or ``wzc_reload`` on the local socket as ``wazuhcluster-control --reload``
sends): certificates, CA, CRL and the cluster key are read again; new connections use them,
links whose certificate is now revoked or expired are closed, and a changed key is announced.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, cast

from cryptography import x509
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.config import ClusterConfig, ClusterDisabled, load_config
from wazuhcluster.errors import ClusterError, ConfigError
from wazuhcluster.interfaces import ILocalExtension, IMasterExtension, IPeer, IWorkerExtension
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import Reply
from wazuhcluster.settings import load_settings
from wazuhcluster.tls.contexts import ClientCreator, ServerCreator, certificate_matches_name
from wazuhcluster.tls.heap import keep_freed_buffers
from wazuhcluster.tls.keyring import KeyRing, LinkCodec
from wazuhcluster.tls.link import (
    CERT_REFUSED,
    HANDSHAKE_FAILED,
    NAME_MISMATCH,
    TLS_REQUIRED,
    SniffingFactory,
    TlsClientEndpoint,
)
from wazuhcluster.tls.settings import Mode, TlsMaterial, TlsSettings, load_material, parse_settings

WZC_KEYS = b"wzc_keys"
WZC_PLAIN = b"wzc_plain"
WZC_RELOAD = b"wzc_reload"  # local socket only
CAP_KEYRING = "keyring"
CAP_TLS_PLAIN = "tls_plain"

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]


def is_tls(peer: Any) -> bool:
    """True if ``peer`` (a ClusterProtocol) runs over TLS."""
    return ISSLTransport.providedBy(getattr(peer, "transport", None))


def peer_certificate(peer: Any) -> x509.Certificate | None:
    """The certificate the peer presented, if the link is TLS."""
    if not is_tls(peer):
        return None
    cert = peer.transport.getPeerCertificate()
    return None if cert is None else cert.to_cryptography()


class LinkSecurity:
    """State shared by both roles: settings, material, key ring, reload.

    :param config: the node configuration.
    :param clock: the reactor's time.
    :param tag: log tag prefix, e.g. ``Master`` or ``Worker worker1``.
    :param runner: runs the blocking file reads of a reload off the reactor.
    """

    _log = Logger()

    def __init__(self, config: ClusterConfig, clock: IReactorTime, tag: str,
                 runner: Callable[..., Deferred[Any]] = maybeDeferred) -> None:
        self.config = config
        self.clock = clock
        self.tag = tag
        self.runner = runner
        self.tls: TlsSettings = parse_settings(config.settings, config.home)
        self.material: TlsMaterial | None = load_material(self.tls) if self.tls.enabled else None
        self.ring = KeyRing(config.key)
        self.creators: list[ServerCreator | ClientCreator] = []
        self.on_reload: list[Callable[[bool], None]] = []  # called with "key changed"
        self._expiry: IDelayedCall | None = None

    def link_codec(self) -> LinkCodec:
        """A codec for one new connection."""
        return LinkCodec(self.ring)

    def revoked_or_expired(self, cert: x509.Certificate | None) -> str | None:
        """Why ``cert`` is no longer acceptable under the current material, or None."""
        if cert is None or self.material is None:
            return None
        if self.material.revoked(cert.serial_number):
            return "the certificate has been revoked"
        if cert.not_valid_after_utc.timestamp() < self.clock.seconds():
            return "the certificate has expired"
        return None

    # -- reload -----------------------------------------------------------------------------
    def read_files(self) -> tuple[TlsSettings, TlsMaterial | None, bytes]:
        """Read settings, certificates, CRL and cluster key (blocking; changes nothing).

        :raises ConfigError: the line says what is wrong.
        """
        home = self.config.home
        tls = parse_settings(load_settings(home), home)
        if tls.mode is not self.tls.mode:
            raise ConfigError(f"tls.mode changed from {self.tls.mode.value!r} to "
                              f"{tls.mode.value!r}: a mode change needs a restart")
        material = load_material(tls) if tls.enabled else None
        try:
            key = load_config(home, config_path=self.config.config_path).key
        except ClusterDisabled as e:
            raise ConfigError(f"the cluster is now disabled ({e}): restart to stop it") from None
        return tls, material, key

    async def reload(self) -> dict[str, Any]:
        """Read certificates, CRL and cluster key again (off the reactor) and use them.

        :raises ConfigError: nothing was changed; the line says why.
        """
        tls, material, key = await self.runner(self.read_files)
        for creator in self.creators:
            assert material is not None
            creator.reload(material)
        self.tls, self.material = tls, material
        now = self.clock.seconds()
        key_changed = self.ring.rotate(key, now, tls.key_overlap)
        self._schedule_expiry()
        self._log.info("[{tag}] [Main] Reloaded: certificates {certs}, CRL {crl}, cluster key "
                       "{key}.", tag=self.tag,
                       certs="re-read" if material is not None else "not used (tls.mode off)",
                       crl=f"{sum(len(list(c)) for c in material.crls)} revoked" if (
                           material is not None and material.crls) else "none",
                       key=(f"replaced (old one accepted for {tls.key_overlap:g} s)"
                            if key_changed else "unchanged"))
        for hook in self.on_reload:
            hook(key_changed)
        return {"tls": tls.mode.value, "key_changed": key_changed,
                "keys_held": len(self.ring.keys)}

    async def reload_logged(self) -> dict[str, Any]:
        """:meth:`reload`, logging a failure as one line instead of raising it."""
        try:
            return await self.reload()
        except ConfigError as e:
            self._log.error("[{tag}] [Main] Reload failed, keeping the previous certificates "
                            "and key: {error}", tag=self.tag, error=str(e))
            return {"error": str(e)}

    def _schedule_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        when = self.ring.next_expiry()
        if when is not None:
            self._expiry = self.clock.callLater(max(0.0, when - self.clock.seconds()),
                                                self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.ring.expire(self.clock.seconds()):
            self._log.info("[{tag}] [Main] The previous cluster key is no longer accepted.",
                           tag=self.tag)
        self._schedule_expiry()

    def stop(self) -> None:
        """Cancel the expiry timer."""
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None


class ReloadSignalService(Service):
    """Reload on SIGHUP (the handler only schedules the reload on the reactor)."""

    name = "tls-reload-signal"

    def __init__(self, security: LinkSecurity, reactor: Any) -> None:
        self._security = security
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(
            lambda: Deferred.fromCoroutine(self._security.reload_logged()))

    def stopService(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        self._security.stop()
        return super().stopService()  # type: ignore[no-any-return]


@implementer(ILocalExtension)
class ReloadCommand:
    """``wzc_reload`` on the local socket."""

    def __init__(self, security: LinkSecurity) -> None:
        self._security = security

    def local_responders(self, commands: Any) -> dict[bytes, Responder]:
        return {WZC_RELOAD: self._reload}

    async def _reload(self, payload: bytes) -> Reply:
        answer = await self._security.reload_logged()
        if "error" in answer:
            raise ClusterError(3004, answer["error"])
        return Reply.ok(messages.encode_json(answer))


def _ids(payload: bytes) -> list[str]:
    value = messages.parse_json(payload, "wzc_keys")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (
            len(value) > 16):
        raise ClusterError(3000, "wzc_keys: expected a list of key ids")
    return cast(list[str], value)


def _codec(peer: Any) -> LinkCodec | None:
    codec = getattr(peer, "codec", None)
    return codec if isinstance(codec, LinkCodec) else None


def start_plain(peer: Any) -> None:
    """Send ``wzc_plain`` and stop encrypting with Fernet right after it."""
    codec = _codec(peer)
    if codec is None or codec.plain_out:
        return
    d = peer.notify(WZC_PLAIN, b"")

    def switch(_: None) -> None:
        codec.plain_out = True
    d.addCallbacks(switch, lambda f: None)


def accept_plain(peer: Any) -> LinkCodec:
    """The peer sent ``wzc_plain``: what it sends from now on is not Fernet-encrypted."""
    codec = _codec(peer)
    if codec is None or not is_tls(peer):
        raise ClusterError(3000, "wzc_plain is only allowed on a TLS link")
    codec.plain_in = True
    return codec


async def exchange_keys(peer: Any, ring: KeyRing) -> None:
    """Tell the peer our key ids; learn theirs."""
    codec = _codec(peer)
    if codec is None:
        return
    reply = await peer.request(WZC_KEYS, messages.encode_json(ring.ids()))
    codec.set_peer_ids(_ids(reply))


# -- master -----------------------------------------------------------------------------------
@implementer(IMasterExtension)
class MasterLinkSecurity:
    """The master's side."""

    capabilities = (CAP_KEYRING, CAP_TLS_PLAIN)
    _log = Logger()

    def __init__(self, node: Any, security: LinkSecurity) -> None:
        self._node = node
        self._security = security

    def master_responders(self, commands: Any) -> dict[bytes, Responder]:
        async def keys(payload: bytes) -> Reply:
            codec = _codec(commands.peer)
            ids = _ids(payload)
            if codec is not None:
                codec.set_peer_ids(ids)
            return Reply.ok(messages.encode_json(self._security.ring.ids()))

        async def plain(payload: bytes) -> None:
            session = commands.session
            if session is None or CAP_TLS_PLAIN not in session.capabilities:
                raise ClusterError(3000, "wzc_plain before wzc_caps")
            accept_plain(commands.peer)
            start_plain(commands.peer)
            self._log.debug("[{tag}] [Main] Fernet switched off inside TLS.", tag=commands.tag)
            return None

        return {WZC_KEYS: keys, WZC_PLAIN: plain}

    def worker_lost(self, session: Any) -> None:
        pass

    def health_status(self, session: Any) -> dict[str, Any]:
        return {}

    def check_hello(self, hello: messages.Hello, peer: IPeer) -> None:
        """Refuse a plain peer in ``require`` mode, a certificate naming another node, a
        revoked or expired one."""
        security = self._security
        if not is_tls(peer):
            if security.tls.mode is Mode.REQUIRE:
                raise ClusterError(TLS_REQUIRED, f"this master accepts TLS connections only "
                                                 f"(tls.mode require); configure tls on "
                                                 f"{hello.name}")
            return
        cert = peer_certificate(peer)
        if cert is None:
            raise ClusterError(CERT_REFUSED, "no client certificate")
        if not certificate_matches_name(cert, hello.name):
            raise ClusterError(NAME_MISMATCH, f"the certificate presented is for "
                                              f"{cert.subject.rfc4514_string()}, not for "
                                              f"{hello.name}")
        why = security.revoked_or_expired(cert)
        if why is not None:
            raise ClusterError(CERT_REFUSED, why)
        version = getattr(getattr(peer, "transport", None), "_tlsConnection", None)
        self._log.info("[Master] [Main] Worker {worker} from {peer}: {version}, certificate "
                       "verified (serial {serial:x}).", worker=hello.name,
                       peer=peer.peer_address, serial=cert.serial_number,
                       version=version.get_protocol_version_name() if version else "TLS")

    def after_reload(self, key_changed: bool) -> None:
        """Close links whose certificate is no longer valid; announce a new key."""
        for session in list(self._node.registry):
            why = self._security.revoked_or_expired(peer_certificate(session.peer))
            if why is not None:
                self._log.warn("[Worker {worker}] [Main] Closing the connection: {why} "
                               "(Error {code}).", worker=session.name, why=why,
                               code=CERT_REFUSED)
                session.peer.disconnect(why)
            elif key_changed and CAP_KEYRING in session.capabilities:
                d = Deferred.fromCoroutine(exchange_keys(session.peer, self._security.ring))
                d.addErrback(self._log_key_failure, session.name)

    def _log_key_failure(self, failure: Any, worker: str) -> None:
        failure.trap(ClusterError)
        self._log.warn("[Worker {worker}] [Main] Could not announce the new cluster key: "
                       "{error}", worker=worker, error=failure.getErrorMessage())


def install_master(node: Any, reactor: Any, factory: Any) -> Factory:
    """Plug link security into a MasterNode; returns the factory to listen with.

    :raises SystemExit: a bad ``tls`` setting or file (one line).
    """
    security = _security(node.config, reactor, "Master", node.run)
    factory.link_codec = security.link_codec
    extension = MasterLinkSecurity(node, security)
    node.extensions.append(extension)
    node.hello_checks.append(extension.check_hello)
    node.local_extensions.append(ReloadCommand(security))
    security.on_reload.append(extension.after_reload)
    node.link_security = security
    ReloadSignalService(security, reactor).setServiceParent(node)
    if not security.tls.enabled:
        return cast(Factory, factory)
    assert security.material is not None
    keep_freed_buffers()  # MiB-size messages without a page fault per 4 KiB (tls/heap.py)
    creator = ServerCreator(security.material)
    security.creators.append(creator)
    return SniffingFactory(factory, creator, reactor, node.config.ext.hello_timeout,
                           on_plain=lambda p: None)


# -- worker -----------------------------------------------------------------------------------
@implementer(IWorkerExtension)
class WorkerLinkSecurity:
    """The worker's side."""

    capabilities = (CAP_KEYRING, CAP_TLS_PLAIN)
    _log = Logger()

    def __init__(self, node: Any, security: LinkSecurity) -> None:
        self._node = node
        self._security = security
        self._master_caps: frozenset[str] = frozenset()

    def worker_responders(self, commands: Any) -> dict[bytes, Responder]:
        async def keys(payload: bytes) -> Reply:
            codec = _codec(commands.peer)
            if codec is not None:
                codec.set_peer_ids(_ids(payload))
            return Reply.ok(messages.encode_json(self._security.ring.ids()))

        async def plain(payload: bytes) -> None:
            accept_plain(commands.peer)
            return None

        return {WZC_KEYS: keys, WZC_PLAIN: plain}

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        self._master_caps = capabilities
        if CAP_TLS_PLAIN in capabilities and is_tls(peer):
            start_plain(peer)
        if CAP_KEYRING in capabilities:
            d = Deferred.fromCoroutine(exchange_keys(peer, self._security.ring))
            d.addErrback(self._log_key_failure)

    def disconnected(self) -> None:
        self._master_caps = frozenset()

    def after_reload(self, key_changed: bool) -> None:
        """Close the link if the master's certificate is no longer valid; announce a key."""
        peer = self._node.peer
        if peer is None:
            return
        why = self._security.revoked_or_expired(peer_certificate(peer))
        if why is not None:
            self._log.warn("[{tag}] [Main] Closing the connection to the master: {why} "
                           "(Error {code}).", tag=self._node.tag, why=why, code=CERT_REFUSED)
            peer.disconnect(why)
        elif key_changed and CAP_KEYRING in self._master_caps:
            d = Deferred.fromCoroutine(exchange_keys(peer, self._security.ring))
            d.addErrback(self._log_key_failure)

    def _log_key_failure(self, failure: Any) -> None:
        failure.trap(ClusterError)
        self._log.warn("[{tag}] [Main] Could not exchange cluster key ids with the master: "
                       "{error}", tag=self._node.tag, error=failure.getErrorMessage())


def install_worker(node: Any, reactor: Any, factory: Any, endpoint: Any) -> Any:
    """Plug link security into a WorkerNode; returns the endpoint to dial the master with.

    :raises SystemExit: a bad ``tls`` setting or file (one line).
    """
    security = _security(node.config, reactor, node.tag, node.run)
    factory.link_codec = security.link_codec
    extension = WorkerLinkSecurity(node, security)
    node.extensions.append(extension)
    node.local_extensions.append(ReloadCommand(security))
    security.on_reload.append(extension.after_reload)
    node.link_security = security
    ReloadSignalService(security, reactor).setServiceParent(node)
    if not security.tls.enabled:
        return endpoint
    assert security.material is not None
    keep_freed_buffers()
    creator = ClientCreator(security.material, node.config.master_address)
    security.creators.append(creator)
    log = Logger()

    def report(line: str) -> None:
        code = CERT_REFUSED if "certificate" in line else HANDSHAKE_FAILED
        log.error("[{tag}] [Main] TLS connection to master {address}:{port} failed: {error}",
                  tag=node.tag, address=node.config.master_address, port=node.config.port,
                  error=str(ClusterError(code, line)))
    return TlsClientEndpoint(endpoint, creator, report)


def _security(config: ClusterConfig, clock: IReactorTime, tag: str,
              runner: Callable[..., Deferred[Any]]) -> LinkSecurity:
    try:
        return LinkSecurity(config, clock, tag, runner)
    except ConfigError as e:
        raise SystemExit(f"wazuhcluster: configuration error: {e}") from None

