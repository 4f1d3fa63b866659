"""File metadata ("integrity control") of the cluster items under a home directory.

:func:`scan_items` walks every item of ``cluster.json`` below ``WAZUH_PATH`` and returns,
per relative path, a :class:`FileEntry` whose JSON form (:meth:`FileEntry.to_json`) has
exactly the fields and field order of Wazuh 4.7.5::

    {"mod_time": <st_mtime float>, "cluster_item_key": "etc/shared/", "merged": false,
     "hash": <BLAKE2b-512 hexdigest>}

(plus ``merge_type``/``merge_name`` between ``merged`` and ``hash`` for the legacy
``.merged`` names).

Digest reuse: the caller passes the :class:`CachedDigest` map returned by the previous
scan. A file whose size and ``st_mtime_ns`` did not change keeps its previous digest
without being read, so a warm scan costs one ``scandir``/``stat`` per file. As in Wazuh,
a content change that keeps both size and mtime is therefore not detected.

Symbolic links are never followed or hashed, nor are FIFOs, sockets and devices; they are
reported in :attr:`ScanResult.skipped`. An item whose directory (or any directory between
the home and it) is a symbolic link is skipped as a whole, so the scan never leaves the
home directory. Names that a peer would refuse (see
:func:`wazuhcluster.integrity.items.path_problem`) are skipped too, so we never offer a
file that our own workers would refuse.
"""

from __future__ import annotations

import hashlib
import operator
import os
import stat
from collections.abc import Iterable, Iterator, Mapping

import attrs

from wazuhcluster.integrity.errors import MetadataError
from wazuhcluster.integrity.items import MAX_PATH_BYTES, ClusterItem, ClusterItems, path_problem

#: Read size used when hashing files.
HASH_CHUNK_SIZE = 1024 * 1024
#: Placeholder ``merge_type`` Wazuh puts on ``.merged`` files.
MERGE_TYPE_PLACEHOLDER = "TYPE"

_S_IFMT = 0o170000
_NAME = operator.attrgetter("name")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@attrs.frozen
class FileEntry:
    """Metadata of one synchronised file, as exchanged between nodes."""

    mod_time: float
    cluster_item_key: str
    merged: bool
    hash: str
    merge_type: str | None = None
    merge_name: str | None = None

    def to_json(self) -> dict[str, object]:
        """Return the JSON object with Wazuh's field names and field order."""
        result: dict[str, object] = {
            "mod_time": self.mod_time,
            "cluster_item_key": self.cluster_item_key,
            "merged": self.merged,
        }
        if self.merge_type is not None:
            result["merge_type"] = self.merge_type
        if self.merge_name is not None:
            result["merge_name"] = self.merge_name
        result["hash"] = self.hash
        return result

    @classmethod
    def from_json(cls, value: object) -> FileEntry:
        """Parse one entry received from a peer; raise :class:`MetadataError` if malformed.

        Unknown extra fields are ignored.
        """
        if not isinstance(value, dict):
            raise MetadataError(f"metadata entry is not an object: {type(value).__name__}")
        mod_time = value.get("mod_time")
        if isinstance(mod_time, bool) or not isinstance(mod_time, int | float):
            raise MetadataError("metadata entry has no numeric mod_time")
        key = value.get("cluster_item_key")
        merged = value.get("merged", False)
        digest = value.get("hash")
        if not isinstance(key, str):
            raise MetadataError("metadata entry has no cluster_item_key string")
        if not isinstance(merged, bool):
            raise MetadataError("metadata entry 'merged' is not a boolean")
        if not isinstance(digest, str):
            raise MetadataError("metadata entry has no hash string")
        merge_type = value.get("merge_type")
        merge_name = value.get("merge_name")
        if merge_type is not None and not isinstance(merge_type, str):
            raise MetadataError("metadata entry 'merge_type' is not a string")
        if merge_name is not None and not isinstance(merge_name, str):
            raise MetadataError("metadata entry 'merge_name' is not a string")
        return cls(
            mod_time=float(mod_time),
            cluster_item_key=key,
            merged=merged,
            hash=digest,
            merge_type=merge_type,
            merge_name=merge_name,
        )


@attrs.frozen
class CachedDigest:
    """What a scan remembers about a file to avoid hashing it again."""

    size: int
    mtime_ns: int
    digest: str
    #: The entry the scan built for the file, reused as long as size and mtime match.
    entry: FileEntry | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class SkippedPath:
    """A path under an item that the scan did not include, and why."""

    path: str
    reason: str


@attrs.frozen
class ScanResult:
    """Outcome of :func:`scan_items`.

    ``files`` is the metadata dictionary (path -> entry, items in ``cluster.json`` order,
    names sorted within each directory); ``cache`` is what to pass to the next scan;
    ``hashed`` counts the files that were actually read this time. ``touched`` (from
    :func:`rescan_paths` only) names the only paths whose entries may differ from the
    previous result; ``None`` after a full scan.
    """

    files: dict[str, FileEntry]
    cache: dict[str, CachedDigest]
    skipped: tuple[SkippedPath, ...]
    hashed: int
    touched: frozenset[str] | None = None


def metadata_to_json(files: Mapping[str, FileEntry]) -> dict[str, object]:
    """Return the JSON form of a metadata dictionary (``files_metadata.json``)."""
    return {path: entry.to_json() for path, entry in files.items()}


def metadata_from_json(value: object) -> dict[str, FileEntry]:
    """Parse a metadata dictionary received from a peer.

    Paths are not validated here (see :func:`wazuhcluster.integrity.items.validate_peer_path`);
    only the shape is checked. Raises :class:`MetadataError`.
    """
    if not isinstance(value, dict):
        raise MetadataError("metadata is not an object")
    result: dict[str, FileEntry] = {}
    for path, entry in value.items():
        result[path] = FileEntry.from_json(entry)
    return result


def file_digest(path: str, chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """Return the BLAKE2b-512 hexdigest of a regular file, read in ``chunk_size`` pieces.

    Symbolic links are refused (``OSError`` with ``ELOOP``) and so is anything that is not
    a regular file (``OSError``).
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
        digest = hashlib.blake2b()
        while True:
            chunk = os.read(fd, chunk_size)
            if not chunk:
                break
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def scan_items(
    home: str,
    items: ClusterItems,
    cache: Mapping[str, CachedDigest] | None = None,
) -> ScanResult:
    """Compute the metadata of every cluster item file under ``home`` (``WAZUH_PATH``).

    ``cache`` is the :attr:`ScanResult.cache` of a previous scan (it is not modified).
    Unreadable or vanishing files are reported as skipped; this function does not log.
    """
    previous: Mapping[str, CachedDigest] = cache if cache is not None else {}
    files: dict[str, FileEntry] = {}
    new_cache: dict[str, CachedDigest] = {}
    skipped: list[SkippedPath] = []
    hashed = 0
    for item in items.items:
        hashed += _collect(home, item, items, skipped, previous, files, new_cache)
    return ScanResult(files=files, cache=new_cache, skipped=tuple(skipped), hashed=hashed)


def _collect(home: str, item: ClusterItem, items: ClusterItems, skipped: list[SkippedPath],
             previous: Mapping[str, CachedDigest], files: dict[str, FileEntry],
             cache: dict[str, CachedDigest], start: str | None = None) -> int:
    """Put the entry of every file the item covers (under ``start``, see
    :func:`_item_files`) in ``files`` and ``cache``, hashing those whose size or mtime
    differ from ``previous``; return how many were hashed."""
    hashed = 0
    for relative, absolute, st, known in _item_files(home, item, items, skipped, previous,
                                                     files, cache, start):
        if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
            digest = known.digest
        else:
            try:
                digest = file_digest(absolute)
            except OSError as e:
                skipped.append(SkippedPath(relative, f"unreadable: {e.strerror or e}"))
                continue
            hashed += 1
        entry = _entry(item, relative.rsplit("/", 1)[-1], absolute, st, digest)
        cache[relative] = CachedDigest(st.st_size, st.st_mtime_ns, digest, entry)
        files[relative] = entry
    return hashed


def _entry(item: ClusterItem, name: str, absolute: str, st: os.stat_result,
           digest: str) -> FileEntry:
    merged = ".merged" in name
    return FileEntry(
        mod_time=st.st_mtime,
        cluster_item_key=item.key,
        merged=merged,
        hash=digest,
        merge_type=MERGE_TYPE_PLACEHOLDER if merged else None,
        merge_name=absolute if merged else None,
    )


def rescan_paths(home: str, items: ClusterItems, previous: ScanResult,
                 paths: Iterable[str | bytes]) -> ScanResult | None:
    """Update ``previous`` for the named files only (stat and hash each, nothing else).

    ``paths`` are absolute paths under ``home`` that an inotify watch reported changed,
    created, moved or deleted. The result equals what :func:`scan_items` would return for
    the tree (same entries, digests and cache; the order of new entries may differ), or
    ``None`` when a path needs the full scan's judgement: a directory, a symbolic link or
    anything but a regular file, a directory on the way that is not a real directory, an
    unsafe or too long name, or a file that cannot be read. Each named file is hashed
    again even if its size and mtime did not change (the event says its content did).

    A named path that is a directory (one just created) is walked as the full scan walks
    it, the cache serving for files it knows; anything the full scan would skip in it
    (a symbolic link, an unsafe name, an unreadable file) gives ``None`` as well.
    """
    files = dict(previous.files)
    cache = dict(previous.cache)
    touched: set[str] = set()
    walked: list[str] = []
    real_dirs: dict[str, bool] = {}
    hashed = 0
    root = os.path.abspath(home)
    for path in paths:
        absolute = os.path.abspath(os.fsdecode(path))
        if not absolute.startswith(root + os.sep):
            continue  # not under the home: nothing of ours
        relative = absolute[len(root) + 1:]
        if os.sep != "/":  # pragma: no cover - POSIX only
            relative = relative.replace(os.sep, "/")
        touched.add(relative)
        absolute = os.path.join(home, relative)  # as scan_items spells it (merge_name)
        item = items.item_for(relative)
        if item is None and not _is_directory(absolute):
            continue  # not a cluster file (excluded, or not covered by any item)
        directory, _, name = relative.rpartition("/")
        if not _real_directories(root, directory, real_dirs):
            return None
        try:
            st = os.lstat(absolute)
        except FileNotFoundError:
            files.pop(relative, None)
            cache.pop(relative, None)
            continue
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            walk = _rescan_directory(home, items, relative + "/", previous, files, cache,
                                     touched)
            if walk is None:
                return None
            hashed += walk
            walked.append(relative + "/")
            continue
        if not stat.S_ISREG(st.st_mode) or item is None:
            return None
        prefix = directory + "/" if directory else ""
        problem = (path_problem(name) if not prefix or path_problem(directory) is None
                   else path_problem(relative))
        if problem is not None or len(relative.encode()) > MAX_PATH_BYTES:
            return None
        try:
            digest = file_digest(absolute)
        except FileNotFoundError:
            files.pop(relative, None)
            cache.pop(relative, None)
            continue
        except OSError:
            return None
        hashed += 1
        entry = _entry(item, name, absolute, st, digest)
        cache[relative] = CachedDigest(st.st_size, st.st_mtime_ns, digest, entry)
        files[relative] = entry
    skipped = tuple(s for s in previous.skipped if s.path not in touched
                    and not any(s.path.startswith(prefix) for prefix in walked))
    return ScanResult(files=files, cache=cache, skipped=skipped, hashed=hashed,
                      touched=frozenset(touched))


def _is_directory(path: str) -> bool:
    """True if ``path`` is a directory (not a symbolic link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _rescan_directory(home: str, items: ClusterItems, prefix: str, previous: ScanResult,
                      files: dict[str, FileEntry], cache: dict[str, CachedDigest],
                      touched: set[str]) -> int | None:
    """Replace, in ``files`` and ``cache``, the entries under the directory ``prefix``
    (relative, with a trailing "/") with what the full scan finds there now; add every
    path that was or is there to ``touched``. Return how many files were hashed, or None
    if the full scan skips anything there (it must judge, and report it)."""
    for relative in [p for p in files if p.startswith(prefix)]:
        del files[relative]
        cache.pop(relative, None)
        touched.add(relative)
    skipped: list[SkippedPath] = []
    found: dict[str, FileEntry] = {}
    found_cache: dict[str, CachedDigest] = {}
    hashed = 0
    for item in items.items:
        if item.key.startswith(prefix):
            start = None  # the item's root is in there: the whole item
        elif prefix.startswith(item.key) and item.recursive:
            start = prefix
        else:
            continue
        hashed += _collect(home, item, items, skipped, previous.cache, found, found_cache,
                           start)
    if skipped:
        return None
    files.update(found)
    cache.update(found_cache)
    touched.update(found)
    return hashed


def _real_directories(root: str, directory: str, known: dict[str, bool]) -> bool:
    """True if ``root/directory`` and every directory between them is a real directory."""
    if not directory:
        return True
    if directory in known:
        return known[directory]
    parent = directory.rpartition("/")[0]
    ok = _real_directories(root, parent, known)
    if ok:
        try:
            ok = stat.S_ISDIR(os.lstat(os.path.join(root, directory)).st_mode)
        except OSError:
            ok = False
    known[directory] = ok
    return ok


def _item_files(
    home: str, item: ClusterItem, items: ClusterItems, skipped: list[SkippedPath],
    known: Mapping[str, CachedDigest] | None = None,
    files: dict[str, FileEntry] | None = None,
    cache: dict[str, CachedDigest] | None = None,
    start: str | None = None,
) -> Iterator[tuple[str, str, os.stat_result, CachedDigest | None]]:
    """Yield ``(relative path, absolute path, lstat, known[relative])`` of every file the
    item covers (with ``start``, a directory under the item root spelled with a trailing
    "/", only those under it).

    A path in ``known`` (the previous scan's cache: the same items included it before) is
    not checked again for exclusion, ownership and safe naming, which depend on the
    path alone; its type is. With ``files`` and ``cache``, a known file whose size and
    mtime did not change is not yielded: its previous entry and cache record go straight
    into them.
    """
    shortcut = files is not None and cache is not None
    out_files: dict[str, FileEntry] = files if files is not None else {}
    out_cache: dict[str, CachedDigest] = cache if cache is not None else {}
    key = item.key
    if known is None:
        known = {}
    begin = item.key if start is None else start
    root = os.path.join(home, begin) if begin else home
    if begin:
        # Every directory between the home and the item root must be a real directory.
        current = home
        for component in begin.rstrip("/").split("/"):
            current = os.path.join(current, component)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                return
            except OSError as e:
                skipped.append(SkippedPath(begin, f"unreadable: {e.strerror or e}"))
                return
            if stat.S_ISLNK(st.st_mode):
                skipped.append(SkippedPath(begin, "item directory is a symlink"))
                return
            if not stat.S_ISDIR(st.st_mode):
                skipped.append(SkippedPath(begin, "item path is not a directory"))
                return
    pending = [(root, begin)]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=_NAME)
        except OSError as e:
            skipped.append(SkippedPath(prefix, f"unreadable directory: {e.strerror or e}"))
            continue
        subdirectories = []
        # Items that may own a file of this directory, most specific first: the same
        # answer as ``items.item_for`` per file, computed once per directory.
        owners = sorted(
            (it for it in items.items
             if prefix.startswith(it.key) and (it.recursive or prefix == it.key)),
            key=lambda it: len(it.key), reverse=True)
        prefix_ok = not prefix or path_problem(prefix.rstrip("/")) is None
        for entry in entries:
            name = entry.name
            relative = prefix + name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:
                skipped.append(SkippedPath(relative, f"unreadable: {e.strerror or e}"))
                continue
            if (st.st_mode & _S_IFMT) == stat.S_IFREG:
                cached = known.get(relative)
                if cached is not None:
                    previous = cached.entry
                    if (shortcut and previous is not None and cached.size == st.st_size
                            and cached.mtime_ns == st.st_mtime_ns
                            and previous.cluster_item_key == key):
                        # Nothing changed: the previous objects serve again as they are.
                        out_files[relative] = previous
                        out_cache[relative] = cached
                        continue
                    yield relative, entry.path, st, cached
                    continue
            if stat.S_ISDIR(st.st_mode):
                if item.recursive:
                    subdirectories.append((entry.path, relative + "/"))
                continue
            if items.is_excluded(name) or next(
                    (it for it in owners if it.covers_name(name)), None) is not item:
                continue  # excluded, not selected, or owned by a more specific item
            if stat.S_ISLNK(st.st_mode):
                skipped.append(SkippedPath(relative, "symlink"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(SkippedPath(relative, "not a regular file"))
                continue
            problem = path_problem(name) if prefix_ok else path_problem(relative)
            if problem is None and len(relative.encode()) > MAX_PATH_BYTES:
                problem = "too long"
            if problem is not None:
                skipped.append(SkippedPath(relative, f"unsafe name: {problem}"))
                continue
            yield relative, entry.path, st, None
        # Depth-first, in name order (reversed because ``pending`` is a stack).
        pending.extend(reversed(subdirectories))
