"""SyncHistory: the syncs of the last hour, kept by the node (an IClusterEvents observer)."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from wazuhcluster.interfaces import IClusterEvents

#: How long a sync stays in the history, and how many are kept at most (a bounded ring:
#: 3 kinds every 10 s for 50 workers is 54 000 an hour; the oldest go first).
KEEP_SECONDS = 3600.0
MAX_RECORDS = 20000


class SyncView(dict[str, Any]):
    """One sync as the page's data holds it (:meth:`SyncRecord.to_dict`), made once per sync
    and shared by every page that shows it: nothing may change it. It carries its JSON text
    (``json``), so that ``/ui/data`` joins texts instead of encoding every sync of the hour
    again, and the page's last SVG fragment for it (``fragment``, with the key it was drawn
    for: see :func:`wazuhcluster.ui.page.chart`)."""

    __slots__ = ("fragment", "json")

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.json = json.dumps(self)
        self.fragment: tuple[Any, str] | None = None


@attrs.frozen
class SyncRecord:
    """One sync with a worker (clock seconds)."""

    worker: str
    kind: str
    started: float
    ended: float
    ok: bool
    counts: Mapping[str, int]
    _view: SyncView | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def view(self) -> SyncView:
        """:meth:`to_dict` as a :class:`SyncView`, made on the first call and kept."""
        if self._view is None:
            object.__setattr__(self, "_view", SyncView(self.to_dict()))
        assert self._view is not None
        return self._view

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "kind": self.kind, "started": self.started,
                "ended": self.ended, "duration": self.duration, "ok": self.ok,
                "counts": {k: int(v) for k, v in self.counts.items()}}


@implementer(IClusterEvents)
class SyncHistory:
    """The last hour of syncs, in a ring of at most ``max_records``."""

    def __init__(self, clock: IReactorTime, keep: float = KEEP_SECONDS,
                 max_records: int = MAX_RECORDS) -> None:
        self._clock = clock
        self.keep = keep
        self._records: collections.deque[SyncRecord] = collections.deque(maxlen=max_records)

    def _prune(self) -> None:
        horizon = self._clock.seconds() - self.keep
        while self._records and self._records[0].ended < horizon:
            self._records.popleft()

    def recent(self) -> list[SyncRecord]:
        """The syncs that ended in the last ``keep`` seconds, oldest first."""
        self._prune()
        return list(self._records)

    def last(self, worker: str, kind: str, ok: bool | None = True) -> SyncRecord | None:
        """The newest sync of ``kind`` with ``worker`` still in the history."""
        for record in reversed(self.recent()):
            if record.worker == worker and record.kind == kind and (ok is None
                                                                    or record.ok == ok):
                return record
        return None

    # -- IClusterEvents ---------------------------------------------------------------------
    def sync_done(self, worker: str, kind: str, started: float, ended: float, ok: bool,
                  counts: Mapping[str, int]) -> None:
        self._records.append(SyncRecord(worker, kind, started, ended, ok, dict(counts)))
        self._prune()

    def link_traffic(self, direction: str, frames: int, nbytes: int) -> None:
        pass

    def connection_dropped(self, reason: str) -> None:
        pass

    def dapi_request(self, function: str, outcome: str) -> None:
        pass

    def reactor_lag(self, seconds: float) -> None:
        pass
