"""A worker forwards enrolments to the master, as Wazuh's authd does on a worker.

The forwarder is a C-style local client of the node's own cluster socket
(``queue/cluster/c-internal.sock``): it sends one ``sendsync`` frame carrying
``{"daemon_name": "authd", "message": {"function": "add", "arguments": {...}}}`` and reads
exactly one frame back, ``ok <authd's JSON answer>`` or ``err <text>``. The node relays the
request to the master, whose registrar answers through authd's local socket.

Beyond Wazuh (which answers "Cannot comunicate with master" at once): while the master cannot
be reached the request is kept and retried every ``retry_delay`` seconds, up to ``deadline``
seconds and at most ``max_waiting`` requests at a time; past either bound the agent gets
Wazuh's error. The worker generates the agent key itself and sends it (authd's ``key``
argument), so a retry after a lost answer is recognised by the master and answered with the
same agent instead of creating a second one.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from wazuhcluster.enrolment.messages import MASTER_UNREACHABLE, EnrolRequest
from wazuhcluster.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    command_field,
    encode_header,
    parse_command_field,
)

#: The largest answer frame read back (a C client reads into a 64 KiB buffer).
MAX_ANSWER = 65536


class SendsyncError(Exception):
    """The request did not get an answer from the master (connection, ``err`` frame, ...)."""


@attrs.frozen
class ForwardResult:
    """The master's answer: id, ip and key on success, else the agent's error text."""

    agent_id: str | None = None
    ip: str | None = None
    key: str | None = None
    error: str | None = None


class _OneFrame(Protocol):
    """Send one frame, read one frame."""

    transport: Any

    def __init__(self, frame: bytes, done: Deferred[tuple[bytes, bytes]]) -> None:
        self._frame = frame
        self._done = done
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self._frame)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < HEADER_SIZE or self._done.called:
            return
        _, length, field = HEADER.unpack_from(self._buffer)
        if length > MAX_ANSWER:
            self._done.errback(SendsyncError(f"answer of {length} bytes refused"))
            self.transport.loseConnection()
            return
        if len(self._buffer) >= HEADER_SIZE + length:
            command, _ = parse_command_field(field)
            self._done.callback((command, self._buffer[HEADER_SIZE:HEADER_SIZE + length]))
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.errback(SendsyncError("the cluster socket closed without an answer"))


async def sendsync(reactor: Any, socket_path: str, payload: dict[str, Any],
                   timeout: float) -> bytes:
    """One C-style ``sendsync`` exchange; returns the ``ok`` answer's payload.

    :raises SendsyncError: no answer (socket missing, closed, ``err`` frame, timeout).
    """
    body = json.dumps(payload, separators=(",", ":")).encode()
    frame = encode_header(secrets.randbelow(2**31), len(body), command_field(b"sendsync")) + body
    done: Deferred[tuple[bytes, bytes]] = Deferred()
    try:
        await connectProtocol(UNIXClientEndpoint(reactor, socket_path, timeout=10),
                              _OneFrame(frame, done))
    except Exception as e:  # noqa: BLE001 - any connect failure means "no answer"
        raise SendsyncError(f"cannot connect to {socket_path}: {e}") from None
    done.addTimeout(timeout, reactor)
    try:
        command, answer = await done
    except SendsyncError:
        raise
    except Exception as e:  # noqa: BLE001 - timeout or connection loss
        raise SendsyncError(str(e) or type(e).__name__) from None
    if command != b"ok":
        raise SendsyncError(answer.decode("utf-8", errors="replace")[:300])
    return answer


def add_payload(request: EnrolRequest, key: str) -> dict[str, Any]:
    """The sendsync request for one enrolment."""
    arguments: dict[str, Any] = {"name": request.name, "ip": request.ip}
    if request.groups:
        arguments["groups"] = ",".join(request.groups)
    if request.key_hash:
        arguments["key_hash"] = request.key_hash
    arguments["key"] = key
    return {"daemon_name": "authd", "message": {"function": "add", "arguments": arguments}}


def parse_authd_answer(answer: bytes) -> ForwardResult:
    """authd's JSON answer to an add, as the agent will see it."""
    try:
        data = json.loads(answer)
    except ValueError:
        return ForwardResult(error="Invalid message format")
    if not isinstance(data, dict) or "error" not in data:
        return ForwardResult(error="Invalid message format")
    if data["error"] != 0:
        return ForwardResult(error=str(data.get("message", "(undefined)")))
    body = data.get("data")
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(
            body.get("key"), str):
        return ForwardResult(error="Invalid message format")
    return ForwardResult(agent_id=body["id"], ip=str(body.get("ip", "")), key=body["key"])


class Forwarder:
    """Forwards enrolments from a worker's registration port to the master.

    :param reactor: connects the local socket and times the retries.
    :param socket_path: the node's ``c-internal.sock``.
    :param deadline: seconds a request may wait for the master.
    :param max_waiting: requests allowed to wait for the master at once.
    :param send: the exchange (default :func:`sendsync`; tests inject a fake).
    """

    _log = Logger()

    def __init__(self, reactor: Any, socket_path: str, tag: str, deadline: float,
                 max_waiting: int, retry_delay: float = 1.0,
                 attempt_timeout: float = 60.0, send: Any = None) -> None:
        self._reactor = reactor
        self._socket_path = socket_path
        self._tag = tag
        self.deadline = deadline
        self.max_waiting = max_waiting
        self._retry_delay = retry_delay
        self._attempt_timeout = attempt_timeout
        self._send = send or sendsync  # (reactor, path, payload, timeout) -> answer bytes
        self.waiting = 0
        self.forwarded = 0

    async def enrol(self, request: EnrolRequest) -> ForwardResult:
        """Forward one enrolment; wait for the master within the bounds."""
        key = secrets.token_hex(32)
        payload = add_payload(request, key)
        give_up = self._reactor.seconds() + self.deadline
        waiting = False
        try:
            while True:
                remaining = give_up - self._reactor.seconds()
                try:
                    answer = await self._send(self._reactor, self._socket_path, payload,
                                            max(1.0, min(self._attempt_timeout, remaining)))
                except SendsyncError as e:
                    if not waiting:
                        if self.waiting >= self.max_waiting:
                            self._log.warn("[{tag}] [Agent enrolment] Enrolment of '{name}': "
                                           "master unreachable ({error}) and {n} enrolments "
                                           "already waiting.", tag=self._tag,
                                           name=request.name, error=str(e), n=self.waiting)
                            return ForwardResult(error=MASTER_UNREACHABLE)
                        waiting = True
                        self.waiting += 1
                        self._log.info("[{tag}] [Agent enrolment] Enrolment of '{name}' waits "
                                       "for the master ({error}).", tag=self._tag,
                                       name=request.name, error=str(e))
                    if self._reactor.seconds() + self._retry_delay > give_up:
                        self._log.warn("[{tag}] [Agent enrolment] Enrolment of '{name}': "
                                       "master unreachable for {deadline} s, refused.",
                                       tag=self._tag, name=request.name,
                                       deadline=self.deadline)
                        return ForwardResult(error=MASTER_UNREACHABLE)
                    await deferLater(self._reactor, self._retry_delay, lambda: None)
                    continue
                self.forwarded += 1
                return parse_authd_answer(answer)
        finally:
            if waiting:
                self.waiting -= 1
