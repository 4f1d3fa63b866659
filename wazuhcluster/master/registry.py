"""WorkerRegistry: which workers are connected, since when, and their sync status."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

from wazuhcluster.interfaces import IPeer


def _status() -> dict[str, Any]:
    return {
        "sync_integrity_free": True,
        "last_check_integrity": {"date_start_master": 0.0, "date_end_master": 0.0},
        "last_sync_integrity": {"date_start_master": 0.0, "date_end_master": 0.0,
                                "total_extra_valid": 0,
                                "total_files": {"missing": 0, "shared": 0, "extra": 0}},
        "sync_agent_info_free": True,
        "last_sync_agentinfo": {"date_start_master": 0.0, "date_end_master": 0.0,
                                "n_synced_chunks": 0},
        "last_sync_agentgroup": {"date_start": 0.0, "date_end": 0.0, "n_synced_chunks": 0},
        "last_sync_full_agentgroup": {"date_start": 0.0, "date_end": 0.0,
                                      "n_synced_chunks": 0},
    }


@attrs.define(eq=False)
class WorkerSession:
    """One registered worker connection (times are clock seconds)."""

    name: str
    version: str
    node_type: str
    ip: str
    peer: IPeer
    connected_since: float
    last_keepalive: float
    capabilities: frozenset[str] = frozenset()
    probing: bool = False
    status: dict[str, Any] = attrs.Factory(_status)


class WorkerRegistry:
    """The master's table of registered workers."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerSession] = {}
        self._waiting: dict[str, list[Deferred[WorkerSession]]] = {}

    def __iter__(self) -> Any:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def names(self) -> set[str]:
        """Names of the registered workers."""
        return set(self._workers)

    def get(self, name: str) -> WorkerSession | None:
        """The session registered under ``name``, if any."""
        return self._workers.get(name)

    def join(self, session: WorkerSession) -> None:
        """Register ``session``; its name must be free."""
        if session.name in self._workers:
            raise KeyError(session.name)
        self._workers[session.name] = session
        for waiter in self._waiting.pop(session.name, []):
            waiter.callback(session)

    def leave(self, session: WorkerSession) -> bool:
        """Unregister ``session`` if it is still the one registered under its name."""
        if self._workers.get(session.name) is session:
            del self._workers[session.name]
            return True
        return False

    def when_joined(self, name: str) -> Deferred[WorkerSession]:
        """Fire when a worker called ``name`` is registered (at once if it already is)."""
        session = self._workers.get(name)
        if session is not None:
            d: Deferred[WorkerSession] = Deferred()
            d.callback(session)
            return d
        waiter: Deferred[WorkerSession] = Deferred()
        self._waiting.setdefault(name, []).append(waiter)
        return waiter
