"""EventFanout: the node's ``events`` (IClusterEvents), told to every observer added."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.interfaces import IClusterEvents


@implementer(IClusterEvents)
class EventFanout:
    """Forwards each event to the observers added with ``add``; an observer that raises is
    logged and never breaks the caller (a sync, a frame being read)."""

    _log = Logger()

    def __init__(self) -> None:
        self.observers: list[IClusterEvents] = []

    def add(self, observer: IClusterEvents) -> None:
        """Tell ``observer`` every later event."""
        self.observers.append(observer)

    def sync_done(self, worker: str, kind: str, started: float, ended: float, ok: bool,
                  counts: Mapping[str, int]) -> None:
        for o in self.observers:
            with self._log.failuresHandled("[Cluster] [Main] Event observer failed"):
                o.sync_done(worker, kind, started, ended, ok, counts)

    def link_traffic(self, direction: str, frames: int, nbytes: int) -> None:
        # Told for every read and write of every link: a plain ``try`` (the context
        # manager of the other events cost ~4 % of a relaying worker's CPU).
        for o in self.observers:
            try:
                o.link_traffic(direction, frames, nbytes)
            except Exception:  # noqa: BLE001 (an observer never breaks the link)
                self._log.failure("[Cluster] [Main] Event observer failed")

    def connection_dropped(self, reason: str) -> None:
        for o in self.observers:
            with self._log.failuresHandled("[Cluster] [Main] Event observer failed"):
                o.connection_dropped(reason)

    def dapi_request(self, function: str, outcome: str) -> None:
        for o in self.observers:
            with self._log.failuresHandled("[Cluster] [Main] Event observer failed"):
                o.dapi_request(function, outcome)

    def reactor_lag(self, seconds: float) -> None:
        for o in self.observers:
            with self._log.failuresHandled("[Cluster] [Main] Event observer failed"):
                o.reactor_lag(seconds)
