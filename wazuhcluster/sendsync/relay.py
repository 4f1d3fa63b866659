"""The master side of sendsync: run ``{"daemon_name", "message"}`` requests against the
daemon sockets, many at a time but never more than ``max_concurrent`` (Wazuh 4.7.5 runs them
strictly one after another, so one slow daemon stalls every enrolment).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import DeferredSemaphore

from wazuhcluster.errors import ConfigError
from wazuhcluster.sendsync.daemon import DaemonError, DaemonUnreachable, ask_daemon
from wazuhcluster.settings import section

#: The daemons a sendsync request may name, and their sockets relative to the home.
DAEMON_SOCKETS: dict[str, str] = {
    "authd": "queue/sockets/auth",
    "remoted": "queue/sockets/remote",
    "task-manager": "queue/tasks/task",
    "wazuh-db": "queue/db/wdb",
}

#: Settings of section ``sendsync`` of etc/wazuhcluster.yaml, with their defaults.
DEFAULTS: dict[str, Any] = {
    "sockets": {},  # daemon name -> socket path (relative to the home, or absolute)
    "timeout": 30.0,  # seconds to wait for a daemon's answer
    "max_concurrent": 16,  # requests talking to daemons at the same time
    "max_queued": 1024,  # requests waiting for a slot; more are refused at once
}


class SendSyncError(Exception):
    """A sendsync request that cannot be answered; ``str()`` is the text the client gets."""


@attrs.frozen
class SendSyncSettings:
    """The ``sendsync`` settings, checked."""

    sockets: Mapping[str, str]
    timeout: float
    max_concurrent: int
    max_queued: int

    @classmethod
    def from_settings(cls, home: str, settings: Mapping[str, Mapping[str, Any]]
                      ) -> SendSyncSettings:
        """Read section ``sendsync``; a bad value raises ConfigError naming the key."""
        values = section(settings, "sendsync", DEFAULTS)
        where = "etc/wazuhcluster.yaml: sendsync"
        overrides = values["sockets"] or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}.sockets must be a mapping of daemon name to socket "
                              f"path ({', '.join(DAEMON_SOCKETS)})")
        sockets: dict[str, str] = {}
        for name, default in DAEMON_SOCKETS.items():
            sockets[name] = os.path.join(home, default)
        for name, path in overrides.items():
            if name not in DAEMON_SOCKETS:
                raise ConfigError(f"{where}.sockets.{name} is not a known daemon: use one of "
                                  f"{', '.join(DAEMON_SOCKETS)}")
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{where}.sockets.{name} must be a socket path")
            sockets[name] = os.path.join(home, path)  # an absolute path stays as it is
        timeout = values["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{where}.timeout must be a positive number of seconds")
        counts = {}
        for key in ("max_concurrent", "max_queued"):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key} must be a positive integer")
            counts[key] = value
        return cls(sockets=sockets, timeout=float(timeout), **counts)


@attrs.frozen
class DaemonRequest:
    """A parsed sendsync request."""

    daemon_name: str
    message: bytes


def parse_request(payload: bytes) -> DaemonRequest:
    """Parse ``{"daemon_name": ..., "message": <object or string>}``.

    The message goes to the daemon as it is if it is a string, JSON-serialised (Python's
    default separators, as Wazuh's framework writes it) otherwise.

    :raises SendSyncError: not JSON, not an object, or an unknown daemon.
    """
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise SendSyncError("Error 3036 - JSON could not be decoded: sendsync request is "
                            "not valid JSON") from None
    if not isinstance(data, dict) or "daemon_name" not in data or "message" not in data:
        raise SendSyncError('Error 3036 - JSON could not be decoded: sendsync request must '
                            'be an object with "daemon_name" and "message"')
    name = data["daemon_name"]
    if not isinstance(name, str) or name not in DAEMON_SOCKETS:
        raise SendSyncError(f"Error 1000 - Internal error: unknown daemon {str(name)[:64]!r} "
                            f"(known: {', '.join(DAEMON_SOCKETS)})")
    message = data["message"]
    text = message if isinstance(message, str) else json.dumps(message)
    return DaemonRequest(name, text.encode("utf-8"))


def daemon_error_text(path: str, error: DaemonError) -> str:
    """The ``err`` text for a daemon that could not be asked, with Wazuh 4.7.5's codes and
    words first (1013 socket missing or refusing, 1014 any other failure; Wazuh names the
    socket by its base name), then our detail in parentheses."""
    socket = os.path.basename(path)
    if isinstance(error, DaemonUnreachable):
        return f"Error 1013 - Unable to connect with socket: {socket} ({error})"
    return f"Error 1014 - Error communicating with socket: {socket} ({error})"


class SendSyncRelay:
    """Runs sendsync requests against the daemon sockets of this node.

    :param reactor: connects to the sockets and times the answers.
    :param settings: socket paths, timeout and bounds.
    :param ask: asks one daemon (``ask_daemon``; tests pass a stand-in).
    """

    def __init__(self, reactor: Any, settings: SendSyncSettings,
                 ask: Callable[..., Awaitable[bytes]] = ask_daemon) -> None:
        self._reactor = reactor
        self._ask = ask
        self.settings = settings
        self._slots = DeferredSemaphore(settings.max_concurrent)
        self.active = 0  # requests holding a slot

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._slots.waiting)

    async def forward(self, payload: bytes) -> bytes:
        """Answer one sendsync request with the daemon's raw answer.

        :raises SendSyncError: with the text for the client.
        """
        request = parse_request(payload)
        if self._slots.tokens == 0 and self.queued >= self.settings.max_queued:
            raise SendSyncError(f"Error 1000 - Internal error: too many sendsync requests "
                                f"waiting ({self.settings.max_queued}), try again later")
        await self._slots.acquire()
        self.active += 1
        try:
            path = self.settings.sockets[request.daemon_name]
            try:
                return await self._ask(self._reactor, path, request.message,
                                        self.settings.timeout)
            except DaemonError as e:
                raise SendSyncError(daemon_error_text(path, e)) from None
        finally:
            self.active -= 1
            self._slots.release()
