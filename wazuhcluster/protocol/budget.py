"""MemoryBudget: one node-wide limit on the bytes peers make us hold in memory.

Every connection (cluster and local socket) has a :class:`MemoryAccount` in the node's
budget. It is charged with what the peer alone decides to make us keep: partial frames,
divided messages not yet complete, complete messages waiting to be handled, and long
strings (``new_str``/``str_upd``). A charge that would take the connection beyond its
share, or the node beyond its total, is refused: the caller drops that message with an
error or closes that connection; the node itself never runs out of memory because of peers.
"""

from __future__ import annotations


class MemoryBudget:
    """The node-wide budget.

    :param total: bytes all connections together may hold.
    :param per_connection: bytes one connection may hold.
    """

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.used = 0
        self.peak = 0
        self.refusals = 0

    def account(self, reserve: int = 0) -> MemoryAccount:
        """A new account for one connection (see :class:`MemoryAccount` for ``reserve``)."""
        return MemoryAccount(self, reserve)


class MemoryAccount:
    """What one connection holds, by kind (``frames``, ``strings``, ...).

    :param reserve: bytes of the share kept for incoming ``frames`` (one frame): other
        kinds are refused before the share is full, so that a long string that would not
        fit is answered with an error instead of the next frame closing the connection.
    """

    def __init__(self, budget: MemoryBudget, reserve: int = 0) -> None:
        self.budget = budget
        self.reserve = reserve
        self._held: dict[str, int] = {}
        self.held = 0

    def refusal(self, kind: str, size: int) -> str | None:
        """Why holding ``size`` bytes of ``kind`` (instead of the current amount) would break
        the budget, or ``None`` if it fits."""
        budget = self.budget
        change = size - self._held.get(kind, 0)
        if change <= 0:
            return None
        share = budget.per_connection - (0 if kind == "frames" else self.reserve)
        if self.held + change > share:
            return (f"this connection would hold {self.held + change} bytes in memory, more "
                    f"than its share of {share} (memory_per_connection)")
        if budget.used + change > budget.total:
            return (f"all connections together would hold {budget.used + change} bytes in "
                    f"memory, more than the node's budget of {budget.total} (memory_budget)")
        return None

    def set(self, kind: str, size: int) -> str | None:
        """Record that ``size`` bytes of ``kind`` are held now (they are, whatever the
        budget says); return why that breaks the budget, or ``None``."""
        reason = self.refusal(kind, size)
        change = size - self._held.get(kind, 0)
        if size:
            self._held[kind] = size
        else:
            self._held.pop(kind, None)
        self.held += change
        self.budget.used += change
        self.budget.peak = max(self.budget.peak, self.budget.used)
        if reason is not None:
            self.budget.refusals += 1
        return reason

    def close(self) -> None:
        """The connection is gone: give everything back."""
        self.budget.used -= self.held
        self.held = 0
        self._held.clear()
