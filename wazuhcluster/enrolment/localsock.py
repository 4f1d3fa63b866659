"""authd's local socket ``queue/sockets/auth``, served by the master's registrar.

One request per connection: a 4-byte little-endian length, then a JSON object
``{"function": "add"|"remove"|"get", "arguments": {...}}``; one answer in the same framing,
``{"error": 0, "data": ...}`` or ``{"error": <code>, "message": <text>}`` with authd's codes
(9001-9015), then the server closes. The master's ``sendsync`` handler forwards the ``message``
of a worker's authd request here unchanged, so workers of either implementation reach it.

Deliberate difference: an ``add`` whose ``key`` equals the key an agent of the same name and IP
already has is answered with that agent again (a retry after a lost answer), where authd says
"Duplicate name"; no other request can know an agent's key.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from wazuhcluster.enrolment.authconfig import ForceOptions, parse_interval
from wazuhcluster.enrolment.keystore import AddOp, Outcome
from wazuhcluster.enrolment.messages import normalise_ip, split_groups
from wazuhcluster.enrolment.registrar import Registrar, outcome_json

LENGTH = struct.Struct("<I")
#: authd reads at most this much of one request.
MAX_LOCAL_REQUEST = 65536
#: The request is read within this many seconds, or the connection is closed.
READ_TIMEOUT = 30.0

_ERRORS = {
    "internal": (9001, "Internal error"),
    "json": (9002, "Parsing JSON input"),
    "function": (9003, "No such function"),
    "argument": (9004, "No such argument"),
    "name": (9005, "No such name"),
    "ip": (9006, "No such IP"),
    "key": (9009, "Issue generating key"),
    "id": (9010, "No such agent ID"),
    "group": (9014, "Invalid Group(s) Name(s)"),
}


class LocalRequestError(Exception):
    """A local request authd refuses before touching the keys."""

    def __init__(self, kind: str) -> None:
        self.code, self.message = _ERRORS[kind]
        super().__init__(self.message)


def error_json(code: int, message: str) -> dict[str, Any]:
    """authd's error answer."""
    return {"error": code, "message": message}


def _seconds(value: Any) -> int:
    if isinstance(value, bool):
        raise LocalRequestError("json")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        seconds = parse_interval(value)
        if seconds is not None:
            return seconds
    raise LocalRequestError("json")


def parse_force(value: Any) -> ForceOptions:
    """The ``force`` object of an add request."""
    if not isinstance(value, dict):
        raise LocalRequestError("json")
    try:
        disconnected = value["disconnected_time"]
        if not isinstance(disconnected, dict):
            raise LocalRequestError("json")
        return ForceOptions(
            enabled=bool(value["enabled"]), key_mismatch=bool(value["key_mismatch"]),
            disconnected_time_enabled=bool(disconnected["enabled"]),
            disconnected_time=_seconds(disconnected.get("value", 3600)),
            after_registration_time=_seconds(value.get("after_registration_time", 3600)))
    except KeyError:
        raise LocalRequestError("json") from None


def parse_add(arguments: Any) -> AddOp:
    """An ``add`` request's arguments as an operation."""
    if not isinstance(arguments, dict):
        raise LocalRequestError("argument")
    name = arguments.get("name")
    if not isinstance(name, str):
        raise LocalRequestError("name")
    ip = arguments.get("ip")
    if not isinstance(ip, str):
        raise LocalRequestError("ip")
    normal = normalise_ip(ip)
    if normal is None:
        raise LocalRequestError("ip")
    groups = arguments.get("groups")
    if groups is not None and (not isinstance(groups, str) or not split_groups(groups)):
        raise LocalRequestError("group")
    key = arguments.get("key")
    if key is not None and (not isinstance(key, str) or not key or " " in key
                            or len(key) > 128):
        raise LocalRequestError("key")
    agent_id: int | None = None
    if arguments.get("id") is not None:
        raw_id = arguments["id"]
        if not isinstance(raw_id, str) or not raw_id.isdigit() or int(raw_id) == 0:
            raise LocalRequestError("id")
        agent_id = int(raw_id)
    key_hash = arguments.get("key_hash")
    force = parse_force(arguments["force"]) if arguments.get("force") is not None else None
    return AddOp(name=name, ip=normal, groups=split_groups(groups) if groups else None,
                 key=key, key_hash=key_hash if isinstance(key_hash, str) else None,
                 agent_id=agent_id, force=force)


async def dispatch(registrar: Registrar, data: bytes) -> dict[str, Any]:
    """Answer one local request."""
    try:
        request = json.loads(data)
    except ValueError:
        return error_json(*_ERRORS["json"])
    if not isinstance(request, dict):
        return error_json(*_ERRORS["json"])
    function = request.get("function")
    if function is None:
        return error_json(*_ERRORS["function"])
    arguments = request.get("arguments")
    try:
        if function == "add":
            outcome = await registrar.add(parse_add(arguments))
            return outcome_json(outcome)
        if function == "remove":
            if not isinstance(arguments, dict):
                raise LocalRequestError("argument")
            raw_id = arguments.get("id")
            if not isinstance(raw_id, str) or not raw_id.isdigit():
                raise LocalRequestError("id")
            outcome = await registrar.remove(int(raw_id), arguments.get("purge") is True or None)
            return _remove_json(outcome)
        if function == "get":
            if not isinstance(arguments, dict):
                raise LocalRequestError("argument")
            raw_id = arguments.get("id")
            if not isinstance(raw_id, str) or not raw_id.isdigit():
                raise LocalRequestError("id")
            line = await registrar.get(int(raw_id))
            if line is None:
                return error_json(9011, "Agent ID not found")
            return outcome_json(Outcome(line=line))
    except LocalRequestError as e:
        return error_json(e.code, e.message)
    return error_json(*_ERRORS["internal"])


def _remove_json(outcome: Outcome) -> dict[str, Any]:
    if outcome.line is None:
        return error_json(outcome.code, outcome.message)
    return {"error": 0, "data": "Agent deleted successfully."}


class AuthLocalProtocol(Protocol):
    """One local client: read one framed request, answer, close."""

    transport: Any

    _log = Logger()

    def __init__(self, registrar: Registrar, clock: Any) -> None:
        self._registrar = registrar
        self._clock = clock
        self._buffer = b""
        self._expected: int | None = None
        self._answered = False
        self._timer: Any = None

    def connectionMade(self) -> None:
        """Start the read deadline."""
        self._timer = self._clock.callLater(READ_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Collect the request; refuse one too large before buffering it."""
        if self._answered:
            return
        self._buffer += data
        if self._expected is None and len(self._buffer) >= LENGTH.size:
            (self._expected,) = LENGTH.unpack_from(self._buffer)
            self._buffer = self._buffer[LENGTH.size:]
            if self._expected > MAX_LOCAL_REQUEST or self._expected == 0:
                self._answered = True
                self.transport.loseConnection()
                return
        if self._expected is not None and len(self._buffer) >= self._expected:
            self._answered = True
            payload = self._buffer[:self._expected]
            self._buffer = b""
            Deferred.fromCoroutine(dispatch(self._registrar, payload)).addCallbacks(
                self._send, self._failed)

    def _send(self, answer: dict[str, Any]) -> None:
        body = json.dumps(answer, separators=(",", ":")).encode()
        if self.transport is not None:
            self.transport.write(LENGTH.pack(len(body)) + body)
            self.transport.loseConnection()

    def _failed(self, failure: Failure) -> None:
        self._log.failure("[Master] [Agent enrolment] Local request failed", failure)
        self._send(error_json(*_ERRORS["internal"]))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Cancel the read deadline."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class AuthLocalFactory(Factory):
    """Builds one :class:`AuthLocalProtocol` per local client."""

    def __init__(self, registrar: Registrar, clock: Any) -> None:
        self._registrar = registrar
        self._clock = clock

    def buildProtocol(self, addr: Any) -> AuthLocalProtocol:
        """A protocol for one client."""
        return AuthLocalProtocol(self._registrar, self._clock)


class _AuthClient(Protocol):

    transport: Any
    def __init__(self, request: bytes, done: Deferred[dict[str, Any]]) -> None:
        self._request = request
        self._done = done
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(LENGTH.pack(len(self._request)) + self._request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self._buffer)
            if size > 1024 * 1024:
                self.transport.loseConnection()
            elif len(self._buffer) >= LENGTH.size + size and not self._done.called:
                self._done.callback(json.loads(self._buffer[LENGTH.size:LENGTH.size + size]))
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.errback(ConnectionError("authd closed the connection without answering"))


async def auth_request(reactor: Any, path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to an authd local socket and return its answer (tools, tests)."""
    from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

    done: Deferred[dict[str, Any]] = Deferred()
    body = json.dumps(request, separators=(",", ":")).encode()
    await connectProtocol(UNIXClientEndpoint(reactor, path, timeout=10),
                          _AuthClient(body, done))
    return await done
