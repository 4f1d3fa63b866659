"""WorkerNode: the worker role. Owns the master link and the worker's periodic work."""

from __future__ import annotations

import os
import random
from typing import Any, cast

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from wazuhcluster.config import ClusterConfig
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IBlockingRunner, IPeer, IWorkerExtension
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import CAPS, ECHO_CLIENT, HELLO
from wazuhcluster.protocol.handler import ClusterProtocol, ConnectionLostError
from wazuhcluster.rolenode import RoleNode

#: Seconds before a new connection attempt after one that nobody answered (plus up to as
#: much again of jitter).
RETRY_AFTER_TIMEOUT = 0.5

#: What our worker announces to a master that understands ``wzc_caps``.
WORKER_CAPABILITIES = ("sync_now",)


class WorkerNode(RoleNode):
    """The worker role; children: the master link (ClientService) and the sync loops.

    :param config: the node configuration.
    :param clock: the reactor's time.
    :param runner: runs blocking work off the reactor.
    """

    _log = Logger()

    def __init__(self, config: ClusterConfig, clock: IReactorTime,
                 runner: IBlockingRunner) -> None:
        super().__init__(config, clock, runner, "worker")
        self.extensions: list[IWorkerExtension] = []
        self.peer: ClusterProtocol | None = None
        self.connected_since = 0.0
        self.master_capabilities: frozenset[str] = frozenset()
        self.failed_keepalives = 0
        self.refusals = 0
        self.auto_hello = False  # the composition root turns it on
        self._last_keepalive_sent = 0.0
        self._keepalive_in_flight = False
        self.link: ClientService | None = None
        self.link_address = ""  # host:port of the master, set by the link's endpoint
        self.last_link_error = "not connected yet"
        #: The last connection attempt found no answer within ``connect_timeout`` (a master
        #: cut off silently): the next attempt comes soon (:meth:`retry_delay`).
        self.last_attempt_timed_out = False
        #: The reconnection backoff (set by the composition root with the link).
        self.retry_policy: Any = None
        self._waiting: list[Deferred[ClusterProtocol]] = []

    @property
    def tag(self) -> str:
        """Wazuh log tag of the master link."""
        return f"Worker {self.config.node_name}"

    def startService(self) -> None:
        config = self.config
        self._log.info("[{tag}] [Main] Starting worker {node} of cluster {cluster}: master "
                       "{address}:{port}, version {version}.", tag=self.tag,
                       node=config.node_name, cluster=config.name,
                       address=config.master_address, port=config.port, version=config.version)
        super().startService()

    # -- the master link ------------------------------------------------------------------
    def link_made(self, peer: IPeer) -> None:
        """A TCP connection to the master is up: start the handshake if we drive it.

        The handshake is not ClientService's ``prepareConnection``: with Twisted 26.10 a
        failed preparation leaves ClientService unable to handle the later disconnect
        (NoTransition). Instead a refused hello closes the connection, and the retry delay
        grows with ``refusals`` through the retry policy (see worker/service.py).
        """
        if self.auto_hello:
            d = self.hello(cast(ClusterProtocol, peer))
            d.addErrback(lambda f: f.trap(ClusterError))
            d.addErrback(lambda f: self._log.failure("[Worker] [Main] Handshake failed", f))

    def retry_delay(self, policy: Any, attempt: int) -> float:
        """ClientService retry policy: back off on TCP failures *and* on refused hellos.

        ClientService counts attempts from 1 again after each TCP connection, so a master
        that accepts TCP and then drops the hello (a wrong key) would be retried at the
        initial delay forever: ``refusals`` counts those, and the delay grows with them.

        Also logs the retry: the master's ``host:port``, why the last attempt or connection
        ended, and the delay rounded to a tenth of a second.
        """
        if self.last_attempt_timed_out and not self.refusals:
            # Nobody answered: the attempt itself already waited connect_timeout, and the
            # link may come back at any moment (a healed partition must rejoin within
            # seconds). Try again within a second: a SYN at least every 2 s (jittered: workers
            # cut off together do not come back together). Refused or dropped connections
            # still back off.
            delay = RETRY_AFTER_TIMEOUT + random.random() * RETRY_AFTER_TIMEOUT
        else:
            delay = policy(max(attempt, self.refusals))
        self._log.info("[{tag}] [Main] Could not connect to master at {address}: {reason}. "
                       "Scheduling retry {attempt} in {delay:.1f} s.", tag=self.tag,
                       address=self.link_address or self.config.master_address,
                       reason=self.last_link_error, attempt=attempt, delay=delay)
        return delay

    def link_failed(self, address: str, reason: str, timed_out: bool = False) -> None:
        """A connection attempt to ``address`` failed (called by the link's endpoint);
        ``timed_out``: nobody answered within ``connect_timeout``."""
        self.link_address = address
        self.last_link_error = reason.rstrip(".")
        self.last_attempt_timed_out = timed_out

    def hello(self, peer: ClusterProtocol) -> Deferred[None]:
        """Introduce ourselves; fails (and closes the connection) if the master refuses."""
        return Deferred.fromCoroutine(self._hello(peer))

    async def _hello(self, peer: ClusterProtocol) -> None:
        config = self.config
        payload = messages.encode_hello(messages.Hello(config.node_name, config.name, "worker",
                                                       config.version))
        try:
            await peer.request(HELLO, payload)
        except ClusterError as e:
            self.refusals += 1
            self.last_link_error = f"hello refused ({e})"
            if getattr(peer, "link_failure", None) is not None:
                pass  # a TLS failure: logged already, with its reason
            elif isinstance(e, ConnectionLostError):
                self._log.error("[Worker] [Main] Could not connect to master: the master dropped "
                                "the link during hello; a wrong key is the usual cause "
                                "(<cluster><key> must be the master's); refused {n} time(s) in "
                                "a row, retrying more slowly.", n=self.refusals)
            else:
                self._log.error("[Worker] [Main] Could not connect to master: {error}.",
                                error=str(e))
            peer.disconnect("hello refused")
            raise
        directory = os.path.join(config.home, "queue", "cluster", config.node_name)
        os.makedirs(directory, mode=0o770, exist_ok=True)
        os.chmod(directory, 0o770)
        self.peer = peer
        self.refusals = 0
        self.connected_since = self.clock.seconds()
        self._last_keepalive_sent = self.connected_since
        self.failed_keepalives = 0
        self._log.info("[{tag}] [Main] Successfully connected to master.", tag=self.tag)
        try:
            extra = [c for e in self.extensions for c in getattr(e, "capabilities", ())]
            reply = await peer.request(CAPS, messages.encode_json(list(WORKER_CAPABILITIES)
                                                                  + extra))
            self.master_capabilities = messages.parse_capabilities(reply)
        except ClusterError:
            self.master_capabilities = frozenset()  # a real Wazuh master: no extensions
        if self.peer is not peer:
            return
        for extension in self.extensions:
            extension.connected(peer, self.master_capabilities)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(peer)

    def link_lost(self, commands: Any, reason: Failure) -> None:
        """Called by the link's command table when the connection closes."""
        peer = self.peer
        if peer is None or peer.handler is not commands:
            return
        self.peer = None
        self.master_capabilities = frozenset()
        self.last_link_error = f"connection lost ({reason.getErrorMessage().rstrip('.')})"
        self.last_attempt_timed_out = False
        if reason.check(ConnectionDone):
            self._log.info("[{tag}] [Main] Disconnected from master: the master closed the "
                           "connection.", tag=self.tag)
        else:
            self._log.error("[{tag}] [Main] Disconnected from master: {reason}", tag=self.tag,
                            reason=reason.getErrorMessage())
        for extension in self.extensions:
            extension.disconnected()

    def when_connected(self) -> Deferred[ClusterProtocol]:
        """Fire with the master link once it is up (at once if it is)."""
        if self.peer is not None:
            d: Deferred[ClusterProtocol] = Deferred()
            d.callback(self.peer)
            return d
        waiter: Deferred[ClusterProtocol] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(waiter)
        return waiter

    def request_master(self, command: bytes, payload: bytes) -> Deferred[bytes]:
        """Send a request to the master, or fail with 3023 if not connected."""
        if self.peer is None:
            return fail(ClusterError(3023))
        return self.peer.request(command, payload)

    # -- periodic ------------------------------------------------------------------------
    async def send_keepalive(self) -> None:
        """Keepalive tick: ``echo-c``; disconnect after max_failed_keepalive_attempts.

        The loop ticks every second; it sends ``echo-c`` when keep_alive seconds have passed
        since the last one (Wazuh's cadence) or when the master has sent nothing for
        idle_probe_after seconds. An idle probe that gets no answer and sees no other byte
        from the master within liveness_timeout closes the link at once: a dead or silently
        cut-off master is noticed in under 10 s by default (Wazuh: ~160 s). A link busy with
        a sync keeps delivering bytes and is never probed.
        """
        with self._log.failuresHandled("[{tag}] [Keep Alive] Keepalive tick failed",
                                       tag=self.tag):
            peer = self.peer
            if peer is None or self._keepalive_in_flight:
                return
            now = self.clock.seconds()
            due = now - self._last_keepalive_sent >= self.config.intervals.keep_alive
            idle = now - peer.last_received >= self.config.ext.idle_probe_after
            if not (due or idle):
                return
            self._last_keepalive_sent = now
            self._keepalive_in_flight = True
            timeout = min(10.0, self.config.intervals.timeout_cluster_request)
            if idle:
                timeout = min(timeout, self.config.ext.liveness_timeout)
            try:
                reply = await peer.request(ECHO_CLIENT, b"keepalive", timeout=timeout)
            except ClusterError as e:
                if peer is not self.peer:
                    return
                if (idle and peer.last_received < now
                        and not peer.delivering(self.config.ext.liveness_timeout)):
                    self._log.error("[{tag}] [Keep Alive] Nothing received from the master for "
                                    "{silent:.1f} s and no answer to a liveness probe ({error});"
                                    " closing the connection.", tag=self.tag, error=str(e),
                                    silent=self.clock.seconds() - peer.last_received)
                    peer.disconnect("master silent")
                    return
                self.failed_keepalives += 1
                self._log.error("[{tag}] [Keep Alive] Error sending keepalive ({count}/{limit}):"
                                " {error}", tag=self.tag, count=self.failed_keepalives,
                                limit=self.config.intervals.max_failed_keepalive_attempts,
                                error=str(e))
                if (self.failed_keepalives
                        >= self.config.intervals.max_failed_keepalive_attempts):
                    peer.disconnect("too many failed keepalives")
                return
            finally:
                self._keepalive_in_flight = False
            self.failed_keepalives = 0
            self._log.info("[{tag}] [Keep Alive] Successful response from master: {reply}",
                           tag=self.tag, reply=reply[:64].decode("utf-8", "replace"))
