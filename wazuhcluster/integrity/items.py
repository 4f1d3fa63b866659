"""Cluster items: which files under ``WAZUH_PATH`` are synchronised, and path validation.

The ``files`` object of ``cluster.json`` is parsed into
frozen value objects. :meth:`ClusterItems.item_for` answers "which item does this relative
path belong to" with the same rules as Wazuh 4.7.5's directory walk:

* the path must start with the item key (``etc/shared/``);
* a non-recursive item only covers files directly inside its directory;
* ``files: ["all"]`` (exactly that list) covers every name, any other list is a set of base
  names matched in every subdirectory (``var/multigroups/`` only takes ``merged.mg``);
* base names listed in ``excluded_files`` and names ending with one of
  ``excluded_extensions`` are never covered, wherever they are in the tree.

When several items match (never the case with the shipped ``cluster.json``) the one with
the longest key wins.

:func:`validate_peer_path` is the strict gate for every path that comes from a peer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources

import attrs

from wazuhcluster.integrity.errors import ItemsConfigError, UnsafePathError

#: Longest relative path (in UTF-8 bytes) accepted from a peer.
MAX_PATH_BYTES = 4096
#: Longest single path component (in UTF-8 bytes), the usual ``NAME_MAX``.
MAX_COMPONENT_BYTES = 255
#: Directories whose candidate items :meth:`ClusterItems.item_for` remembers.
_DIRECTORY_CACHE_SIZE = 4096

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
#: Paths :func:`path_problem` accepts at a glance: printable ASCII components (no "/" or
#: "\\") of 1 to 255 characters that do not start with "." (so never "." or ".."), or
#: ".x"-style names whose second character is not ".". Anything else takes the full check.
_PLAIN_COMPONENT = r"(?:[!-\-0-\[\]-~][!-.0-\[\]-~]{0,254}|\.[!-\-0-\[\]-~][!-.0-\[\]-~]{0,253})"
_PLAIN_PATH = re.compile(_PLAIN_COMPONENT + "(?:/" + _PLAIN_COMPONENT + ")*")

_RESERVED_KEYS = frozenset({"excluded_files", "excluded_extensions"})


@attrs.frozen
class ClusterItem:
    """One synchronised directory of ``cluster.json['files']``.

    ``files`` is ``None`` when every file name is covered (``["all"]``), otherwise the set
    of base names covered.
    """

    key: str
    permissions: int
    files: frozenset[str] | None
    recursive: bool
    remove_subdirs_if_empty: bool
    extra_valid: bool
    source: str = "master"
    restart: bool = False
    description: str = ""

    def covers_name(self, name: str) -> bool:
        """Return whether the item's ``files`` list selects the base name ``name``."""
        return self.files is None or name in self.files


@attrs.frozen
class ClusterItems:
    """All items of ``cluster.json['files']`` plus the global exclusion lists.

    ``items`` keeps the order of ``cluster.json``; metadata is produced in that order.
    """

    items: tuple[ClusterItem, ...]
    excluded_files: frozenset[str]
    excluded_extensions: tuple[str, ...]
    #: directory -> the items whose key covers it, longest key first (:meth:`item_for`)
    _by_directory: dict[str, tuple[ClusterItem, ...]] = attrs.field(
        factory=dict, init=False, eq=False, repr=False)

    def get(self, key: str) -> ClusterItem | None:
        """Return the item whose key is exactly ``key``, or ``None``."""
        for item in self.items:
            if item.key == key:
                return item
        return None

    def is_excluded(self, name: str) -> bool:
        """Return whether base name ``name`` is excluded by name or by suffix."""
        return name in self.excluded_files or name.endswith(self.excluded_extensions)

    def item_for(self, path: str) -> ClusterItem | None:
        """Return the item a relative path (``etc/shared/default/agent.conf``) belongs to.

        ``None`` when no item covers it, including excluded names. The path is assumed to
        be well formed; use :func:`validate_peer_path` for untrusted input.
        """
        directory, _, name = path.rpartition("/")
        if not name or self.is_excluded(name):
            return None
        candidates = self._by_directory.get(directory)
        if candidates is None:
            candidates = self._candidates(directory)
        for item in candidates:
            if item.covers_name(name):
                return item
        return None

    def _candidates(self, directory: str) -> tuple[ClusterItem, ...]:
        """The items a file directly in ``directory`` can belong to, longest key first
        (remembered: a sync meets the same few directories thousands of times)."""
        prefix = directory + "/" if directory else ""
        found = [item for item in self.items
                 if prefix.startswith(item.key)
                 and (item.recursive or len(prefix) == len(item.key))]
        # sorted() is stable: among equal keys the first in cluster.json wins, as before
        candidates = tuple(sorted(found, key=lambda item: -len(item.key)))
        if len(self._by_directory) < _DIRECTORY_CACHE_SIZE:
            self._by_directory[directory] = candidates
        return candidates


def parse_cluster_items(files: Mapping[str, object]) -> ClusterItems:
    """Parse the ``files`` object of ``cluster.json``.

    Raises :class:`ItemsConfigError` when a value has the wrong type or an item key is
    not a relative directory path ending with ``/``.
    """
    excluded_files = _string_list(files.get("excluded_files", []), "excluded_files")
    excluded_extensions = _string_list(files.get("excluded_extensions", []), "excluded_extensions")
    items = []
    for key, raw in files.items():
        if key in _RESERVED_KEYS:
            continue
        items.append(_parse_item(key, raw))
    return ClusterItems(
        items=tuple(items),
        excluded_files=frozenset(excluded_files),
        excluded_extensions=tuple(excluded_extensions),
    )


def load_cluster_items(cluster_json_path: str | None = None) -> ClusterItems:
    """Load the items from a ``cluster.json`` file (default: the one shipped in the package)."""
    if cluster_json_path is None:
        text = resources.files("wazuhcluster").joinpath("data/cluster.json").read_text("utf-8")
    else:
        with open(cluster_json_path, encoding="utf-8") as f:
            text = f.read()
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("files"), dict):
        raise ItemsConfigError("cluster.json has no 'files' object")
    return parse_cluster_items(document["files"])


def path_problem(path: str) -> str | None:
    """Return why ``path`` is not an acceptable relative path, or ``None`` if it is.

    This checks the shape only (not membership of an item): it rejects empty paths,
    absolute paths, backslashes, NUL and other control characters, empty, ``.`` and
    ``..`` components, text that is not encodable as UTF-8 and over-long names. Both
    container separators contain ``//`` so they are rejected as empty components.
    """
    if len(path) <= MAX_PATH_BYTES and _PLAIN_PATH.fullmatch(path):
        return None  # the common case, decided by one regular expression
    return _path_problem_in_full(path)


def _path_problem_in_full(path: str) -> str | None:
    """:func:`path_problem`, every rule checked one by one (and the reason named)."""
    if not path:
        return "empty"
    if path.startswith("/"):
        return "absolute"
    if "\x00" in path:
        return "nul byte"
    if "\\" in path:
        return "backslash"
    if _CONTROL_CHARACTERS.search(path):
        return "control character"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "not utf-8"
    if len(encoded) > MAX_PATH_BYTES:
        return "too long"
    for component in path.split("/"):
        if component == "":
            return "empty component"
        if component == ".":
            return "dot component"
        if component == "..":
            return "parent component"
        if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return "component too long"
    return None


def validate_peer_path(path: object, items: ClusterItems) -> str:
    """Check a relative path received from a peer and return it.

    The path must have an acceptable shape (:func:`path_problem`) and belong to one of
    ``items`` (:meth:`ClusterItems.item_for`). Anything else raises
    :class:`UnsafePathError` with the reason. Accepted paths are already in normal form
    (no ``.``/``..``/empty components), so the returned string equals the input.
    """
    if not isinstance(path, str):
        raise UnsafePathError(repr(path), "not a string")
    problem = path_problem(path)
    if problem is not None:
        raise UnsafePathError(path, problem)
    if items.item_for(path) is None:
        raise UnsafePathError(path, "outside cluster items")
    return path


def _parse_item(key: str, raw: object) -> ClusterItem:
    """Parse one item of ``cluster.json['files']``."""
    if not isinstance(raw, dict):
        raise ItemsConfigError(f"item {key!r} is not an object")
    if key != "" and (not key.endswith("/") or path_problem(key[:-1]) is not None):
        raise ItemsConfigError(f"item key {key!r} is not a relative directory ending in '/'")
    files = _string_list(raw.get("files", ["all"]), f"{key}.files")
    return ClusterItem(
        key=key,
        permissions=_permissions(raw.get("permissions"), key),
        files=None if files == ["all"] else frozenset(files),
        recursive=_flag(raw, "recursive", key),
        remove_subdirs_if_empty=_flag(raw, "remove_subdirs_if_empty", key),
        extra_valid=_flag(raw, "extra_valid", key),
        source=str(raw.get("source", "master")),
        restart=_flag(raw, "restart", key),
        description=str(raw.get("description", "")),
    )


def _permissions(value: object, key: str) -> int:
    """Parse a permission value such as ``"0o640"`` (base auto-detected) or an int."""
    if isinstance(value, bool):
        raise ItemsConfigError(f"item {key!r}: bad permissions {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value, 0)
        except ValueError:
            raise ItemsConfigError(f"item {key!r}: bad permissions {value!r}") from None
    else:
        raise ItemsConfigError(f"item {key!r}: bad permissions {value!r}")
    if not 0 <= mode <= 0o7777:
        raise ItemsConfigError(f"item {key!r}: permissions out of range {value!r}")
    return mode


def _flag(raw: Mapping[str, object], name: str, key: str) -> bool:
    """Read an optional boolean field of an item (default ``False``)."""
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise ItemsConfigError(f"item {key!r}: {name} must be a boolean")
    return value


def _string_list(value: object, what: str) -> list[str]:
    """Check that ``value`` is a list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ItemsConfigError(f"{what} must be a list of strings")
    return list(value)


@attrs.frozen
class Refusal:
    """A path that was refused (nothing was written or deleted for it), and why."""

    path: str
    reason: str
