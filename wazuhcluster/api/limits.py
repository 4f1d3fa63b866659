"""Login lockout per address and the request-per-minute limit, on an injected clock."""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime


@attrs.define
class _Attempts:
    count: int
    first: float


class LoginGuard:
    """Failed logins per address: after ``max_attempts`` failures the address is blocked until
    ``block_time`` seconds after its first counted failure (Wazuh's rule)."""

    def __init__(self, clock: IReactorTime, max_attempts: int, block_time: float) -> None:
        self._clock = clock
        self._max = max_attempts
        self._block_time = block_time
        self._attempts: dict[str, _Attempts] = {}
        self._blocked: set[str] = set()

    def is_blocked(self, address: str) -> bool:
        """Unblock when the time has passed; then say whether ``address`` is blocked."""
        entry = self._attempts.get(address)
        if entry is not None and self._clock.seconds() - self._block_time >= entry.first:
            del self._attempts[address]
            self._blocked.discard(address)
        return address in self._blocked

    def failed(self, address: str) -> None:
        """Count one failed login."""
        entry = self._attempts.get(address)
        if entry is None:
            entry = self._attempts[address] = _Attempts(0, self._clock.seconds())
        entry.count += 1
        if self._max and entry.count >= self._max:
            self._blocked.add(address)


class RequestLimiter:
    """At most ``per_minute`` requests in each one-minute window (0 disables it)."""

    def __init__(self, clock: IReactorTime, per_minute: int) -> None:
        self._clock = clock
        self._max = per_minute
        self._window_start: float | None = None
        self._count = 0

    def allow(self) -> bool:
        if self._max <= 0:
            return True
        now = self._clock.seconds()
        if self._window_start is None or now - 60 > self._window_start:
            self._window_start = now
            self._count = 0
        self._count += 1
        return self._count <= self._max
