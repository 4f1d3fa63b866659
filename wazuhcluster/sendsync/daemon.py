"""One request to a local daemon's Unix socket: ``uint32 little-endian length + bytes`` each
way (wazuh-authd, wazuh-remoted, the task manager and wazuh-db all speak it; the codec is
``wazuhcluster.protocol.lenprefix``). ``ask_daemon`` connects with a Twisted endpoint, sends
one message and fires with the one answer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, LengthPrefixError, encode

#: wazuh-db and the daemons answer at most about 64 KiB; leave room for bigger answers.
DEFAULT_MAX_ANSWER = 16 * 1024 * 1024


class DaemonError(Exception):
    """A daemon could not be asked (socket missing, refused, closed early, timeout, ...)."""


class DaemonUnreachable(DaemonError):
    """The daemon's socket is missing or refuses connections (Wazuh's error 1013)."""


class FrameTooLarge(DaemonError):
    """The daemon announced an answer above the limit (refused before any allocation)."""


class _OneShot(Protocol):
    """Sends one message, fires ``answer`` with the first message received, then closes."""

    def __init__(self, message: bytes, max_answer: int) -> None:
        self._message = message
        self._decoder = LengthPrefixDecoder(max_answer)
        self.answer: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        self.transport.write(encode(self._message))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called:
            return
        try:
            messages = self._decoder.feed(data)
        except LengthPrefixError as e:
            self.answer.errback(FrameTooLarge(str(e)))
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if messages:
            self.answer.callback(messages[0])
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answer.called:
            self.answer.errback(DaemonError("the daemon closed the connection without "
                                            "answering"))


async def ask_daemon(reactor: Any, path: str, message: bytes, timeout: float,
                     max_answer: int = DEFAULT_MAX_ANSWER) -> bytes:
    """Send ``message`` to the daemon listening on ``path``; return its answer.

    :raises DaemonError: the socket is missing or refuses, the daemon closes without an
        answer, the answer is too large, or nothing arrives within ``timeout`` seconds.
    """
    protocol = _OneShot(message, max_answer)
    endpoint = UNIXClientEndpoint(reactor, path, timeout=max(1, int(timeout)))
    try:
        await connectProtocol(endpoint, protocol)
    except (ConnectError, OSError) as e:
        raise DaemonUnreachable(f"cannot connect to {path}: {_reason(e)}") from None
    protocol.answer.addTimeout(timeout, reactor)
    try:
        return await protocol.answer
    except DeferredTimeout:
        raise DaemonError(f"no answer from {path} within {timeout:g} s") from None


def _reason(error: BaseException) -> str:
    os_error = getattr(error, "osError", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
