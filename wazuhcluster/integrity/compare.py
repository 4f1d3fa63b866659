"""Master-side classification of a worker's metadata.

Given the master's metadata ``M`` and a worker's metadata ``W`` (path -> entry):

* ``missing``: paths in ``M`` but not in ``W`` (value from ``M``; the worker creates them);
* ``extra``: paths in ``W`` but not in ``M`` (value from ``W``; the worker deletes them),
  except those whose item has ``extra_valid`` set, which are ignored;
* ``shared``: paths in both whose ``hash`` differs (value from ``M``; the worker
  overwrites them). Equal hashes are ignored whatever the ``mod_time``.

For worker-only and differing paths the worker-supplied ``cluster_item_key`` must name an
item of our ``cluster.json``; otherwise the whole comparison fails with
:class:`CompareError`, as in Wazuh 4.7.5.

Deliberate difference: for a differing file in an ``extra_valid`` item Wazuh 4.7.5 enters a
legacy "merged" path that no real 4.7.5 configuration reaches (every item has
``extra_valid: false``). We classify such files as ``shared``: the master wins.

Ordering: ``missing`` and ``shared`` follow the master's order, ``extra`` the worker's. The
JSON form is ``{"missing": ..., "extra": ..., "shared": ...}`` in that key order, which is
what Wazuh puts in the container.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from wazuhcluster.integrity.errors import CompareError, MetadataError
from wazuhcluster.integrity.items import ClusterItem, ClusterItems
from wazuhcluster.integrity.metadata import FileEntry, metadata_from_json, metadata_to_json

_CLASSES = ("missing", "extra", "shared")


@attrs.frozen
class Comparison:
    """The three classes of differences; treat the dictionaries as read-only."""

    missing: dict[str, FileEntry] = attrs.field(factory=dict)
    extra: dict[str, FileEntry] = attrs.field(factory=dict)
    shared: dict[str, FileEntry] = attrs.field(factory=dict)

    @property
    def is_empty(self) -> bool:
        """True when the worker is in sync (the master answers ``syn_m_c_ok``)."""
        return not (self.missing or self.extra or self.shared)

    def to_json(self) -> dict[str, object]:
        """Return the ``files_metadata.json`` object of a master push."""
        return {
            "missing": metadata_to_json(self.missing),
            "extra": metadata_to_json(self.extra),
            "shared": metadata_to_json(self.shared),
        }

    @classmethod
    def from_json(cls, value: object) -> Comparison:
        """Parse the ``files_metadata.json`` object of a master push.

        A class that is absent is taken as empty; anything else malformed raises
        :class:`MetadataError`. Paths are not validated here.
        """
        if not isinstance(value, dict):
            raise MetadataError("push metadata is not an object")
        unknown = set(value) - set(_CLASSES)
        if unknown:
            raise MetadataError(f"push metadata has unknown classes: {sorted(unknown)}")
        return cls(
            missing=metadata_from_json(value.get("missing", {})),
            extra=metadata_from_json(value.get("extra", {})),
            shared=metadata_from_json(value.get("shared", {})),
        )

    def without(self, path: str, *, vanished: bool = False) -> Comparison:
        """Return a copy with ``path`` taken out of ``missing``/``shared``.

        Used when a file could not be put in the container. When the master's file has
        ``vanished`` and was ``shared``, it moves to ``extra`` so the worker deletes its
        copy (Wazuh 4.7.5 behaviour).
        """
        missing = dict(self.missing)
        shared = dict(self.shared)
        extra = dict(self.extra)
        if path in missing:
            del missing[path]
        elif path in shared:
            entry = shared.pop(path)
            if vanished:
                extra[path] = entry
        return Comparison(missing=missing, extra=extra, shared=shared)


def compare_metadata(
    master: Mapping[str, FileEntry],
    worker: Mapping[str, FileEntry],
    items: ClusterItems,
) -> Comparison:
    """Classify the worker's files against the master's (see the module docstring)."""
    missing = {path: entry for path, entry in master.items() if path not in worker}
    extra: dict[str, FileEntry] = {}
    for path, entry in worker.items():
        if path in master:
            continue
        if not _worker_item(items, path, entry).extra_valid:
            extra[path] = entry
    shared: dict[str, FileEntry] = {}
    for path, entry in master.items():
        theirs = worker.get(path)
        if theirs is None or theirs.hash == entry.hash:
            continue
        _worker_item(items, path, theirs)
        shared[path] = entry
    return Comparison(missing=missing, extra=extra, shared=shared)


def _worker_item(items: ClusterItems, path: str, entry: FileEntry) -> ClusterItem:
    """Look up the item a worker entry claims; unknown keys fail the comparison."""
    item = items.get(entry.cluster_item_key)
    if item is None:
        raise CompareError(
            f"worker entry {path!r} names unknown cluster item {entry.cluster_item_key!r}"
        )
    return item
