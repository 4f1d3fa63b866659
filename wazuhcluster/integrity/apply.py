"""Worker side: confined, atomic application of a master push.

:func:`apply_push` extracts a received container into a fresh staging directory
``<home>/queue/cluster/<node>/staging-<random>/`` (every entry fsynced), parses its
``files_metadata.json`` and then calls :func:`apply_extracted`, which:

1. validates every ``missing``/``shared``/``extra`` path: strict shape, inside an item,
   the master's ``cluster_item_key`` equal to the item our ``cluster.json`` assigns, and
   (for writes) present in the container. Refused paths are reported, nothing is
   written or deleted for them;
2. moves each staged file into place with ``os.replace`` after ``chmod`` to the item's
   permissions, then fsyncs the parent directory. Directories are walked from the home
   with ``O_NOFOLLOW`` directory descriptors, so a path whose existing component is a
   symbolic link is refused and nothing can be written outside the home even if a
   directory is swapped for a link meanwhile. Missing directories are created with mode
   0770. If the staging directory is on another filesystem (``EXDEV``) the file is first
   copied to ``<dir>/.<name>.tmp`` next to the target, fsynced, and renamed from there;
3. unlinks ``extra`` files (never directories; excluded names are refused by validation);
4. for items with ``remove_subdirs_if_empty``, removes each directory that held an
   ``extra`` file if it is now empty or holds only ``excluded_files`` names, then goes up
   one level and repeats, never removing the item directory itself (Wazuh 4.7.5 checks
   only the direct parent and could remove the item directory);
5. the staging directory is always removed; :func:`recover_staging` removes staging
   directories left behind by a crash.

Each target is replaced by a single rename, so after a failure or a crash at any point
each file is either the old version or the new one, never a partial write. Per-file
errors are reported in :attr:`ApplyResult.failed` and the remaining files are processed,
as Wazuh does. ``merged`` entries are treated as ordinary files. The master's ``mod_time``
is not applied (nor is it by Wazuh). With ``owner`` (a ``(uid, gid)`` pair, see
:mod:`wazuhcluster.ownership`) each installed file and each directory created for one gets that
owner and group before it becomes visible, as Wazuh's worker gives them the ``wazuh`` user;
without it they keep the owner of the running process.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

import attrs

from wazuhcluster.integrity.compare import Comparison
from wazuhcluster.integrity.container import (
    ContainerLimits,
    ExtractedContainer,
    StagedFile,
    extract_stream,
)
from wazuhcluster.integrity.items import (
    ClusterItem,
    ClusterItems,
    Refusal,
    path_problem,
)
from wazuhcluster.integrity.metadata import CachedDigest, FileEntry

STAGING_PREFIX = "staging-"
#: Mode of directories created while applying a push.
DIRECTORY_MODE = 0o770

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1024 * 1024
#: Pushes up to this many files and deletions are fsynced file by file, not by ``barrier``.
SMALL_PUSH_FILES = 16

#: Signature of the rename used to move files into place (``os.replace``-compatible).
ReplaceFunction = Callable[..., None]


@attrs.frozen
class ApplyResult:
    """What :func:`apply_extracted` did, path by path."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    removed_dirs: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    failed: tuple[Refusal, ...] = ()
    #: What each created or updated file now holds (size, mtime, digest of the content
    #: written), so that the next scan need not read it again.
    installed: dict[str, CachedDigest] = attrs.field(factory=dict, eq=False)
    #: Seconds spent in each step of :func:`apply_push` (for the debug log).
    timings: dict[str, float] = attrs.field(factory=dict, eq=False)

    def counts(self) -> dict[str, int]:
        """Return the number of paths in each category (for logs and replies)."""
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "removed_dirs": len(self.removed_dirs),
            "refused": len(self.refused),
            "failed": len(self.failed),
        }


class _Refused(Exception):
    """Internal: the current path must be refused for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def node_directory(home: str, node_name: str) -> str:
    """Return ``<home>/queue/cluster/<node_name>`` after checking the node name."""
    if path_problem(node_name) is not None or "/" in node_name:
        raise ValueError(f"unusable node name {node_name!r}")
    return os.path.join(home, "queue", "cluster", node_name)


def make_staging_dir(home: str, node_name: str) -> str:
    """Create and return a new, private staging directory for one push."""
    parent = node_directory(home, node_name)
    os.makedirs(parent, mode=DIRECTORY_MODE, exist_ok=True)
    path = os.path.join(parent, STAGING_PREFIX + secrets.token_hex(8))
    os.mkdir(path, 0o700)
    return path


def recover_staging(home: str) -> list[str]:
    """Remove staging directories left by an interrupted apply; return what was removed.

    Call at start-up, before any push is applied. Only ``staging-*`` directories directly
    inside ``<home>/queue/cluster/<node>/`` are removed; symbolic links are not followed.
    """
    removed: list[str] = []
    root = os.path.join(home, "queue", "cluster")
    try:
        nodes = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    for node in nodes:
        if not node.is_dir(follow_symlinks=False):
            continue
        with os.scandir(node.path) as entries:
            leftovers = [
                e.path
                for e in entries
                if e.name.startswith(STAGING_PREFIX) and e.is_dir(follow_symlinks=False)
            ]
        for path in leftovers:
            shutil.rmtree(path)
            removed.append(path)
    return removed


def apply_push(
    home: str,
    items: ClusterItems,
    container_path: str,
    node_name: str,
    *,
    limits: ContainerLimits,
    verify_hashes: bool = False,
    fsync: bool = True,
    replace_file: ReplaceFunction = os.replace,
    barrier: Callable[[], None] | None = None,
    owner: tuple[int, int] | None = None,
) -> ApplyResult:
    """Extract and apply a master push received as ``container_path``.

    Raises :class:`~wazuhcluster.integrity.errors.ContainerError` or
    :class:`~wazuhcluster.integrity.errors.MetadataError` before anything is changed if the
    container is unusable. The container file itself is left for the caller to delete.

    ``barrier`` (e.g. ``os.sync``) is called once after every entry has been staged and
    before the first rename, and once after the last change: with ``fsync=False`` this
    makes the push durable with two flushes instead of two per file, and every rename
    still happens only after the new content is on disk. A push of at most
    :data:`SMALL_PUSH_FILES` files and deletions is made durable with an fsync per staged
    file (before its rename) and per changed directory (after) instead.
    """
    started = time.perf_counter()
    with open(container_path, "rb") as stream:
        extracted = stage_stream(home, node_name, items, stream, limits, fsync=fsync)
    return apply_staged(home, items, extracted, verify_hashes=verify_hashes, fsync=fsync,
                        replace_file=replace_file, barrier=barrier, owner=owner,
                        extract_seconds=time.perf_counter() - started)


def stage_stream(home: str, node_name: str, items: ClusterItems, stream: BinaryIO,
                 limits: ContainerLimits, *, fsync: bool = True) -> ExtractedContainer:
    """Extract a push container from ``stream`` into a new staging directory.

    The stream may be a container still arriving (a
    :class:`~wazuhcluster.protocol.transfers.FollowedFile` reader): nothing outside the
    staging directory is touched, so extraction can start before the container is complete
    and checked; :func:`apply_staged` installs the result once it is. On any error the
    staging directory is removed.
    """
    staging = make_staging_dir(home, node_name)
    try:
        return extract_stream(stream, staging, items, limits, fsync=fsync)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def discard_staged(extracted: ExtractedContainer) -> None:
    """Remove a staged push that will not be applied."""
    shutil.rmtree(extracted.staging_dir, ignore_errors=True)


def apply_staged(
    home: str,
    items: ClusterItems,
    extracted: ExtractedContainer,
    *,
    verify_hashes: bool = False,
    fsync: bool = True,
    replace_file: ReplaceFunction = os.replace,
    barrier: Callable[[], None] | None = None,
    owner: tuple[int, int] | None = None,
    extract_seconds: float = 0.0,
) -> ApplyResult:
    """Apply a push staged by :func:`stage_stream` (see :func:`apply_push`), then remove
    its staging directory. ``extract_seconds`` is reported as the "extract" step."""
    timings: dict[str, float] = {"extract": extract_seconds}
    started = time.perf_counter()
    try:
        comparison = Comparison.from_json(extracted.metadata)
        # A small push (a rules edit) is made durable file by file: a few fsyncs cost
        # less than sync(), which waits for everything dirty on the machine.
        small = (barrier is not None and not fsync
                 and len(extracted.files) + len(comparison.extra) <= SMALL_PUSH_FILES)
        if small:
            for staged in extracted.files.values():
                _fsync_file(staged.path)
        elif barrier is not None:
            barrier()
        timings["barrier"] = time.perf_counter() - started
        result = apply_extracted(
            home,
            items,
            extracted,
            comparison,
            verify_hashes=verify_hashes,
            fsync=fsync or small,
            replace_file=replace_file,
            owner=owner,
        )
        timings["install"] = time.perf_counter() - started - timings["barrier"]
        if barrier is not None and not small:
            barrier()
        timings["final_barrier"] = (time.perf_counter() - started - timings["barrier"]
                                    - timings["install"])
        result.timings.update(timings)
        return result
    finally:
        discard_staged(extracted)


def _fsync_file(path: str) -> None:
    """Flush one staged file's content to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_extracted(
    home: str,
    items: ClusterItems,
    extracted: ExtractedContainer,
    comparison: Comparison,
    *,
    verify_hashes: bool = False,
    fsync: bool = True,
    replace_file: ReplaceFunction = os.replace,
    owner: tuple[int, int] | None = None,
) -> ApplyResult:
    """Apply ``comparison`` using the staged files of ``extracted`` (see module docstring).

    With ``verify_hashes`` a staged file whose BLAKE2b digest differs from the master's
    ``hash`` is refused (a reference master may legitimately send such a file when it
    changed during the round, so this is off by default). ``replace_file`` performs the
    final renames; tests inject failures through it.
    """
    refused = list(extracted.refused)
    failed: list[Refusal] = []
    created: list[str] = []
    updated: list[str] = []
    deleted: list[str] = []
    removed_dirs: list[str] = []

    writes: list[tuple[str, ClusterItem, StagedFile]] = []
    for path, entry in [*comparison.missing.items(), *comparison.shared.items()]:
        try:
            item = _checked_item(path, entry, items)
            staged = extracted.files.get(path)
            if staged is None:
                raise _Refused("not in container")
            if verify_hashes and staged.digest != entry.hash:
                raise _Refused("hash mismatch")
        except _Refused as e:
            refused.append(Refusal(path, e.reason))
            continue
        writes.append((path, item, staged))
    listed = set(comparison.missing) | set(comparison.shared)
    for name in extracted.files:
        if name not in listed:
            refused.append(Refusal(name, "not listed in metadata"))

    removals: list[tuple[str, ClusterItem]] = []
    for path, entry in comparison.extra.items():
        try:
            item = _checked_item(path, entry, items)
            if path in listed:
                raise _Refused("listed as both extra and missing/shared")
            if item.extra_valid:
                raise _Refused("item keeps worker-only files (extra_valid)")
        except _Refused as e:
            refused.append(Refusal(path, e.reason))
            continue
        removals.append((path, item))

    installed: dict[str, CachedDigest] = {}
    home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parents = _Parents(home_fd, owner)
        try:
            for path, item, staged in writes:
                try:
                    existed = _install(parents, path, item, staged.path, fsync, replace_file,
                                       owner)
                except _Refused as e:
                    refused.append(Refusal(path, e.reason))
                except OSError as e:
                    failed.append(Refusal(path, _describe(e)))
                else:
                    (updated if existed else created).append(path)
                    installed[path] = CachedDigest(staged.size, staged.mtime_ns, staged.digest)
        finally:
            parents.close()

        emptied: dict[str, ClusterItem] = {}
        for path, item in removals:
            try:
                if _remove(home_fd, path, fsync):
                    deleted.append(path)
            except _Refused as e:
                refused.append(Refusal(path, e.reason))
                continue
            except OSError as e:
                failed.append(Refusal(path, _describe(e)))
                continue
            if item.remove_subdirs_if_empty:
                emptied[path.rpartition("/")[0]] = item

        for directory in sorted(emptied, key=lambda d: d.count("/"), reverse=True):
            try:
                removed_dirs.extend(
                    _prune(home_fd, directory, emptied[directory], items.excluded_files)
                )
            except (_Refused, OSError) as e:
                reason = e.reason if isinstance(e, _Refused) else _describe(e)
                failed.append(Refusal(directory + "/", reason))
    finally:
        os.close(home_fd)

    return ApplyResult(
        created=tuple(created),
        updated=tuple(updated),
        deleted=tuple(deleted),
        removed_dirs=tuple(removed_dirs),
        refused=tuple(refused),
        failed=tuple(failed),
        installed=installed,
    )


def _checked_item(path: str, entry: FileEntry, items: ClusterItems) -> ClusterItem:
    """Validate a path from the master and return its item, or raise :class:`_Refused`."""
    problem = path_problem(path)
    if problem is not None:
        raise _Refused(problem)
    item = items.item_for(path)
    if item is None:
        raise _Refused("outside cluster items")
    if entry.cluster_item_key != item.key:
        raise _Refused(f"cluster_item_key {entry.cluster_item_key!r} is not {item.key!r}")
    return item


@contextmanager
def _parent_dir(home_fd: int, path: str, *, create: bool,
                owner: tuple[int, int] | None = None) -> Iterator[int | None]:
    """Open the directory containing ``path`` without following symbolic links.

    Yields its descriptor, or ``None`` if a component is missing and ``create`` is false.
    """
    components = path.split("/")[:-1]
    fd = os.dup(home_fd)
    try:
        for component in components:
            try:
                next_fd = os.open(component, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                os.mkdir(component, DIRECTORY_MODE, dir_fd=fd)
                os.chmod(component, DIRECTORY_MODE, dir_fd=fd)
                if owner is not None:
                    os.chown(component, *owner, dir_fd=fd, follow_symlinks=False)
                next_fd = os.open(component, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(component, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise _Refused("symlink in path") from None
                raise _Refused("path component is not a directory") from None
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


class _Parents:
    """Descriptors of the directories files are installed into, opened once per apply.

    Each is opened like :func:`_parent_dir` (from the home, never following a symbolic
    link); a push of many files into one directory then costs one walk, not one per file.
    """

    def __init__(self, home_fd: int, owner: tuple[int, int] | None = None) -> None:
        self._home_fd = home_fd
        self._owner = owner
        self._fds: dict[str, int] = {}

    def open(self, path: str) -> int:
        """The directory that will hold ``path`` (created if missing)."""
        parent = path.rpartition("/")[0]
        fd = self._fds.get(parent)
        if fd is None:
            with _parent_dir(self._home_fd, path, create=True, owner=self._owner) as dir_fd:
                assert dir_fd is not None
                fd = os.dup(dir_fd)
            self._fds[parent] = fd
        return fd

    def close(self) -> None:
        """Close every descriptor."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def _target_exists(dir_fd: int, name: str) -> bool:
    """Return whether ``name`` exists; refuse directories (we only replace files)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise _Refused("target is a directory")
    return True


def _install(
    parents: _Parents,
    path: str,
    item: ClusterItem,
    staged_path: str,
    fsync: bool,
    replace_file: ReplaceFunction,
    owner: tuple[int, int] | None = None,
) -> bool:
    """Move one staged file into place; return whether a previous file was replaced."""
    name = path.rsplit("/", 1)[-1]
    dir_fd = parents.open(path)
    existed = _target_exists(dir_fd, name)
    if owner is not None:
        os.chown(staged_path, *owner, follow_symlinks=False)
    os.chmod(staged_path, item.permissions)  # after chown, which may clear setgid bits
    try:
        replace_file(staged_path, name, dst_dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        _replace_via_copy(dir_fd, name, staged_path, item.permissions, fsync, replace_file,
                          owner)
    if fsync:
        os.fsync(dir_fd)
    return existed


def _replace_via_copy(
    dir_fd: int,
    name: str,
    staged_path: str,
    mode: int,
    fsync: bool,
    replace_file: ReplaceFunction,
    owner: tuple[int, int] | None = None,
) -> None:
    """Cross-filesystem fallback: copy next to the target, then rename in place."""
    temporary = f".{name}.tmp"
    with suppress(FileNotFoundError):
        os.unlink(temporary, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(temporary, flags, 0o600, dir_fd=dir_fd)
    try:
        with open(staged_path, "rb") as source:
            while chunk := source.read(_COPY_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        if owner is not None:
            os.fchown(out, *owner)
        os.fchmod(out, mode)
        # Always: with ``barrier`` (fsync False) the barrier before the renames ran before
        # this copy existed, so nothing else makes its content durable before the rename.
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(temporary, dir_fd=dir_fd)
        raise
    os.close(out)
    try:
        replace_file(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(temporary, dir_fd=dir_fd)
        raise


def _remove(home_fd: int, path: str, fsync: bool) -> bool:
    """Unlink one ``extra`` file; return False if it was already absent."""
    name = path.rsplit("/", 1)[-1]
    with _parent_dir(home_fd, path, create=False) as dir_fd:
        if dir_fd is None or not _target_exists(dir_fd, name):
            return False
        os.unlink(name, dir_fd=dir_fd)
        if fsync:
            os.fsync(dir_fd)
    return True


def _prune(
    home_fd: int, directory: str, item: ClusterItem, excluded_files: frozenset[str]
) -> list[str]:
    """Remove ``directory`` and emptied ancestors below the item directory."""
    removed: list[str] = []
    root = item.key.rstrip("/")
    while directory and directory != root and directory.startswith(item.key):
        name = directory.rsplit("/", 1)[-1]
        with _parent_dir(home_fd, directory, create=False) as parent_fd:
            if parent_fd is None:
                return removed
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                return removed
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    return removed  # a link or a file now: not ours to remove
                raise
            try:
                leftovers = []
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.name not in excluded_files or not entry.is_file(
                            follow_symlinks=False
                        ):
                            return removed
                        leftovers.append(entry.name)
                for leftover in leftovers:
                    os.unlink(leftover, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent_fd)
        removed.append(directory + "/")
        directory = directory.rpartition("/")[0]
    return removed


def _describe(error: OSError) -> str:
    """Short text for an ``OSError`` in a result."""
    return error.strerror or str(error)
