"""Wazuh's file-sync "zip" container: writer and bounded reader.

Format (not a ZIP archive)::

    record    := path_utf8 "|//@@//|" zlib(file_bytes, level) "|@@//@@|"
    container := record* "files_metadata.json" "|//@@//|" zlib(json.dumps(metadata))

Writer (:class:`ContainerWriter`): streams each file from disk through a
``zlib.compressobj`` straight into the destination file, so neither a file nor the
container is ever held in memory. For compression levels 1-9 the output is byte-identical
to Wazuh's one-shot ``zlib.compress`` (level 0 yields a valid but differently blocked
stream), except that a file whose start does not compress is stored (level 0; see
:func:`_stored_first`). Size control follows Wazuh 4.7.5: a file whose raw size exceeds
``max_size`` is skipped (:attr:`AddOutcome.TOO_LARGE`); records are appended while the
running total of record sizes stays ``<= max_size``; the first record that does not fit and
every later file are :attr:`AddOutcome.DEFERRED` to a later round; the metadata record is not
counted. A record that would not fit is cut off as soon as that is certain and the file is
truncated back, so nothing of it stays in the container.

Separators inside content (a Wazuh 4.7.5 weakness). The reference reader splits the byte stream on
``|@@//@@|`` and would cut a record whose compressed bytes contain it (with
``compress_level`` 0 any file that contains the separator does; at other levels it needs
crafted content). We handle it on both sides:

* our writer scans each compressed record (across chunk boundaries, including the join
  with the trailing separator) and, if the separator would appear anywhere but at the
  record end, re-compresses the file with other zlib parameters (another level, then other
  strategies). Any zlib stream is accepted by every reader, so the output stays
  compatible. If every variant contains it the file is reported
  :attr:`AddOutcome.UNENCODABLE` and left out. Path names cannot contain a separator
  because both contain ``//`` (an empty component, refused by the path validator);
* our reader does not split on separators at all: after ``name|//@@//|`` it feeds bytes to
  a ``zlib.decompressobj`` until the zlib stream reports its own end (streams are
  self-delimiting and checksummed), then requires ``|@@//@@|`` or, after
  ``files_metadata.json``, the end of the container. A reference container whose data
  happens to contain a separator is therefore still read correctly.

Reader (:func:`decode_container`, :func:`extract_container`, :func:`read_container_bytes`):
reads in bounded windows and enforces :class:`ContainerLimits` (container size, number of
entries, decompressed size per entry and in total, metadata size, name length). Output is
produced with ``max_length`` so a zlib bomb is refused after at most one window of output.
Every malformed, truncated or over-limit input raises :class:`ContainerError`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO, Protocol

import attrs

from wazuhcluster.integrity import jsonpieces
from wazuhcluster.integrity.compare import Comparison
from wazuhcluster.integrity.errors import ContainerError, UnsafePathError
from wazuhcluster.integrity.items import ClusterItems, Refusal, path_problem, validate_peer_path
from wazuhcluster.integrity.metadata import FileEntry, metadata_to_json

PATH_SEP = b"|//@@//|"
FILE_SEP = b"|@@//@@|"
METADATA_NAME = "files_metadata.json"

#: Bytes read from a source file (writer) or from the container (reader) at a time.
IO_CHUNK_SIZE = 1024 * 1024
#: Files up to this size are read whole and compressed in one call by the writer.
SMALL_FILE_SIZE = 256 * 1024
#: How often (in bytes of container) a writer with a progress callback reports final bytes.
PROGRESS_STEP = 1024 * 1024
#: Files from this size on are probed before they are compressed (:func:`_stored_first`).
STORE_PROBE_MIN = 2 * 1024
#: How much of it the probe looks at.
STORE_PROBE_SIZE = 256
#: More distinct byte values than this in those bytes: stored. Random or compressed bytes
#: hold about 162 (sd 5); text rarely 90 (even random printable ASCII: about 88).
STORE_PROBE_DISTINCT = 128
#: Largest content whose stored zlib stream is built here rather than by zlib: one stored
#: block, the same bytes as ``zlib.compress(data, 0)`` (zlib splits bigger ones its own way).
STORED_BLOCK_MAX = 65531
#: Largest piece of decompressed output produced at once by the reader.
OUTPUT_CHUNK_SIZE = 256 * 1024
#: Largest piece of container bytes fed to the decompressor at once by the reader.
FEED_SIZE = 64 * 1024
#: The first piece fed for each record: most synced files are small, and feeding a whole
#: FEED_SIZE to a record of a few KiB copies (and gives back) mostly the next records.
FIRST_FEED_SIZE = 8 * 1024

_MIB = 1024 * 1024
_GIB = 1024 * _MIB
_METADATA_LIMIT = 256 * _MIB
_SOURCE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class AddOutcome(enum.Enum):
    """What happened to one file offered to :meth:`ContainerWriter.add_file`."""

    INCLUDED = "included"
    DEFERRED = "deferred"  # did not fit in this container; retry next round
    TOO_LARGE = "too large"  # raw size above max_size; never synchronised
    VANISHED = "vanished"  # the source file does not exist (any more)
    UNREADABLE = "unreadable"  # any other error opening or reading the source
    UNENCODABLE = "unencodable"  # every compression variant contained a separator


class ContainerWriter:
    """Append records to a container file; call :meth:`finish` exactly once at the end.

    ``dest`` must be a seekable, truncatable binary file positioned where the container
    starts (normally an empty file opened with ``"w+b"``). ``max_size`` is the current
    zip limit ``L`` (``None``: unlimited).
    """

    def __init__(
        self, dest: BinaryIO, *, compress_level: int = 1, max_size: int | None = None,
        cache: RecordCache | None = None,
    ) -> None:
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress level must be 0-9, not {compress_level}")
        self._dest = dest
        self._cache = cache
        self._level = compress_level
        self._max_size = max_size
        self._size = 0
        self._exceeded = False
        self._finished = False
        self._names: set[str] = set()

    @property
    def size(self) -> int:
        """Bytes of file records written so far (the quantity compared with ``max_size``)."""
        return self._size

    def add_file(self, name: str, source_path: str) -> AddOutcome:
        """Compress the regular file ``source_path`` as the record ``name``.

        Symbolic links and non-regular files are :attr:`AddOutcome.UNREADABLE`.
        Errors writing the destination propagate as ``OSError``.
        """

        opened: list[int] = []

        def open_source() -> BinaryIO:
            fd = opened.pop() if opened else os.open(source_path, _SOURCE_FLAGS)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"not a regular file: {source_path}")
                return os.fdopen(fd, "rb", buffering=0)
            except BaseException:
                os.close(fd)
                raise

        self._check_name(name)
        if self._exceeded:
            return AddOutcome.DEFERRED
        # A small file (most synced files are a few KiB) is read whole and compressed in
        # one call: fewer system calls and objects per record than the streaming path.
        try:
            fd = os.open(source_path, _SOURCE_FLAGS)
        except FileNotFoundError:
            return AddOutcome.VANISHED
        except OSError:
            return AddOutcome.UNREADABLE
        # (a file the record cache may hold is never "small": it goes the cached way)
        small = SMALL_FILE_SIZE if self._cache is None else min(SMALL_FILE_SIZE,
                                                                 self._cache.min_size - 1)
        try:
            data = _read_small(fd, self._max_size, small)
        except OSError:
            os.close(fd)
            return AddOutcome.UNREADABLE
        if data is None:  # large (or not a regular file): stream it from this descriptor
            opened.append(fd)
            try:
                return self._add_large(name, source_path, open_source)
            finally:
                for fd in opened:
                    os.close(fd)
        os.close(fd)
        if isinstance(data, AddOutcome):
            return data
        return self._add_in_memory(name, data)

    def _add_large(self, name: str, source_path: str,
                   open_source: Callable[[], BinaryIO]) -> AddOutcome:
        """Stream a large file into the container, or copy its record from the cache when
        the same file (size, times, inode, level) was compressed for an earlier container."""
        cache = self._cache
        if cache is None:
            return self._add(name, open_source)
        try:
            before = os.stat(source_path, follow_symlinks=False)
        except OSError:
            return self._add(name, open_source)
        if not stat.S_ISREG(before.st_mode) or before.st_size < cache.min_size:
            return self._add(name, open_source)
        key = (before.st_size, before.st_mtime_ns, before.st_ctime_ns, before.st_ino,
               before.st_dev, self._level)
        with cache.locked(name):  # a second writer waits for the first compression
            cached = cache.get(name, key)
            start = self._dest.tell()
            if cached is not None:
                outcome = self._add_cached(name, before.st_size, *cached)
                if outcome is not None:
                    return outcome
                cache.drop(name)  # its copy went away: compress as usual
            outcome = self._add(name, open_source)
            if outcome is AddOutcome.INCLUDED:
                try:
                    after = os.stat(source_path, follow_symlinks=False)
                except OSError:
                    return outcome
                if (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino,
                        after.st_dev, self._level) == key:  # not changed while read
                    cache.put(name, key, self._dest, start, self._dest.tell())
            return outcome

    def _add_cached(self, name: str, raw_size: int, record_path: str,
                    length: int) -> AddOutcome | None:
        """Copy a record compressed for an earlier container (same file, same level): the
        same bytes and the same outcome as compressing the file again. None (and nothing
        written) when the cached copy cannot be read."""
        self._check_name(name)
        if self._exceeded:
            return AddOutcome.DEFERRED
        if self._max_size is not None:
            if raw_size > self._max_size:
                return AddOutcome.TOO_LARGE
            if length > self._max_size - self._size:
                self._exceeded = True
                return AddOutcome.DEFERRED
        start = self._dest.tell()
        copied = 0
        try:
            with open(record_path, "rb") as record:
                while True:
                    chunk = record.read(IO_CHUNK_SIZE)
                    if not chunk:
                        break
                    self._dest.write(chunk)
                    copied += len(chunk)
        except FileNotFoundError:
            copied = -1
        if copied != length:
            self._dest.seek(start)
            self._dest.truncate()
            return None
        self._size += length
        self._names.add(name)
        return AddOutcome.INCLUDED

    def add_bytes(self, name: str, data: bytes) -> AddOutcome:
        """Add a record whose content is ``data`` (small inputs and tests)."""
        if len(data) <= SMALL_FILE_SIZE:
            self._check_name(name)
            if self._exceeded:
                return AddOutcome.DEFERRED
            if self._max_size is not None and len(data) > self._max_size:
                return AddOutcome.TOO_LARGE
            return self._add_in_memory(name, data)
        return self._add(name, lambda: io.BytesIO(data))

    def _check_name(self, name: str) -> None:
        """Refuse an unsafe, reserved or repeated record name."""
        if self._finished:
            raise ValueError("container already finished")
        problem = path_problem(name)
        if problem is not None or name == METADATA_NAME:
            raise UnsafePathError(name, problem or "reserved name")
        if name in self._names:
            raise ValueError(f"duplicate record {name!r}")

    def _add_in_memory(self, name: str, data: bytes) -> AddOutcome:
        """Write the record of a small content held in memory (name already checked).

        The same variants, separator rule and size accounting as :meth:`_write_record`;
        with the default strategy ``zlib.compress`` gives the same bytes as the streaming
        compressor fed one chunk.
        """
        header = name.encode() + PATH_SEP
        variants = _variants(self._level)
        if _stored_first(data, self._level):
            variants = [(0, zlib.Z_DEFAULT_STRATEGY), *variants]
        for level, strategy in variants:
            if level == 0 and strategy == zlib.Z_DEFAULT_STRATEGY and len(
                    data) <= STORED_BLOCK_MAX:
                out = _stored_stream(data)
            elif strategy == zlib.Z_DEFAULT_STRATEGY:
                out = zlib.compress(data, level)
            else:
                compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 8, strategy)
                out = compressor.compress(data) + compressor.flush()
            record = header + out + FILE_SEP
            if record.find(FILE_SEP, len(header)) != len(header) + len(out):
                continue  # the separator appears inside the data: another variant
            if self._max_size is not None and len(record) > self._max_size - self._size:
                self._exceeded = True
                return AddOutcome.DEFERRED
            self._dest.write(record)
            self._size += len(record)
            self._names.add(name)
            return AddOutcome.INCLUDED
        return AddOutcome.UNENCODABLE

    def finish(self, metadata: object) -> None:
        """Write the closing ``files_metadata.json`` record (``json.dumps`` defaults)."""
        if self._finished:
            raise ValueError("container already finished")
        payload = jsonpieces.dumps(metadata).encode()  # json.dumps, in GIL-friendly pieces
        start = self._dest.tell()
        for level, strategy in _variants(self._level):
            self._dest.seek(start)
            self._dest.truncate()
            self._dest.write(METADATA_NAME.encode() + PATH_SEP)
            guard = _SeparatorGuard()
            compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 8, strategy)
            for out in (compressor.compress(payload), compressor.flush()):
                guard.feed(out)
                self._dest.write(out)
            if guard.clean_at_end(b""):
                self._dest.flush()
                self._finished = True
                return
        raise ContainerError("metadata cannot be encoded without a separator")

    def _add(self, name: str, open_source: Callable[[], BinaryIO]) -> AddOutcome:
        """Write one record, honouring the size limit and the separator guard."""
        self._check_name(name)
        if self._exceeded:
            return AddOutcome.DEFERRED
        start = self._dest.tell()
        header = name.encode() + PATH_SEP
        variants = _variants(self._level)
        if self._level and _stored_first(_head(open_source), self._level):
            variants = [(0, zlib.Z_DEFAULT_STRATEGY), *variants]
        for attempt, (level, strategy) in enumerate(variants):
            try:
                outcome = self._write_record(
                    start, header, open_source, level, strategy, rewind=attempt > 0
                )
            except _SourceError as e:
                # Only errors of the source are absorbed; destination errors propagate.
                outcome = (
                    AddOutcome.VANISHED
                    if isinstance(e.__cause__, FileNotFoundError)
                    else AddOutcome.UNREADABLE
                )
            if outcome is not None:
                if outcome is not AddOutcome.INCLUDED:
                    self._dest.seek(start)
                    self._dest.truncate()
                if outcome is AddOutcome.DEFERRED:
                    self._exceeded = True
                if outcome is AddOutcome.INCLUDED:
                    self._names.add(name)
                return outcome
        self._dest.seek(start)
        self._dest.truncate()
        return AddOutcome.UNENCODABLE

    def _write_record(
        self,
        start: int,
        header: bytes,
        open_source: Callable[[], BinaryIO],
        level: int,
        strategy: int,
        rewind: bool,
    ) -> AddOutcome | None:
        """Try one compression variant; ``None`` means "a separator appeared, retry".

        The container ends at ``start`` when a record is first tried (every outcome but
        INCLUDED truncates back to it), so only a retry (``rewind``) seeks and truncates:
        truncating flushes the buffered writer, a system call or two per record.
        """
        budget = None if self._max_size is None else self._max_size - self._size
        try:
            source = open_source()
        except OSError as e:
            raise _SourceError() from e
        with source:
            if self._max_size is not None and _size_of(source) > self._max_size:
                return AddOutcome.TOO_LARGE
            if rewind:
                self._dest.seek(start)
                self._dest.truncate()
            self._dest.write(header)
            written = len(header)
            raw = 0
            guard = _SeparatorGuard()
            compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 8, strategy)
            while True:
                try:
                    chunk = source.read(IO_CHUNK_SIZE)
                except OSError as e:
                    raise _SourceError() from e
                if not chunk:
                    break
                raw += len(chunk)
                if self._max_size is not None and raw > self._max_size:
                    return AddOutcome.TOO_LARGE
                out = compressor.compress(chunk)
                if not guard.feed(out):
                    return None
                self._dest.write(out)
                written += len(out)
                if budget is not None and written + len(FILE_SEP) > budget:
                    return AddOutcome.DEFERRED
            out = compressor.flush()
            if not guard.feed(out) or not guard.clean_at_end(FILE_SEP):
                return None
            self._dest.write(out + FILE_SEP)
            written += len(out) + len(FILE_SEP)
        if budget is not None and written > budget:
            return AddOutcome.DEFERRED
        self._size += written
        return AddOutcome.INCLUDED


def _read_small(fd: int, max_size: int | None,
                small: int = SMALL_FILE_SIZE) -> bytes | AddOutcome | None:
    """The whole content of a small regular file, or None to stream it instead.

    ``AddOutcome.TOO_LARGE`` if it is (or grew) larger than ``max_size``. Reads until the
    end of the file, so a file that grew since ``fstat`` is read whole or streamed.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > small:
        return None
    if max_size is not None and st.st_size > max_size:
        return AddOutcome.TOO_LARGE
    parts: list[bytes] = []
    total = 0
    while chunk := os.read(fd, st.st_size + 1 if not parts else IO_CHUNK_SIZE):
        parts.append(chunk)
        total += len(chunk)
        if total > small:
            os.lseek(fd, 0, os.SEEK_SET)
            return None  # it grew: the streaming path reads it from the start
    if max_size is not None and total > max_size:
        return AddOutcome.TOO_LARGE
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _size_of(source: BinaryIO) -> int:
    """Current size of a source stream (0 when unknown; reading still enforces limits)."""
    if isinstance(source, io.BytesIO):
        return source.getbuffer().nbytes
    try:
        return os.fstat(source.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        return 0


class _SourceError(Exception):
    """Opening or reading a source file failed (the cause holds the ``OSError``)."""


class _SeparatorGuard:
    """Detects ``FILE_SEP`` in a byte stream fed in pieces."""

    def __init__(self) -> None:
        self._tail = b""
        self.found = False

    def feed(self, data: bytes) -> bool:
        """Scan more output; return False once the separator has been seen."""
        if not self.found and data:
            window = self._tail + data
            if FILE_SEP in window:
                self.found = True
            self._tail = window[-(len(FILE_SEP) - 1) :]
        return not self.found

    def clean_at_end(self, trailer: bytes) -> bool:
        """True if the stream followed by ``trailer`` shows the separator only at its end."""
        if self.found:
            return False
        window = self._tail + trailer
        first = window.find(FILE_SEP)
        return first == -1 if not trailer else first == len(self._tail)


def _head(open_source: Callable[[], BinaryIO]) -> bytes:
    """The first :data:`STORE_PROBE_MIN` bytes of a source to stream (empty if it cannot be
    read now: the record's own read then reports why)."""
    try:
        with open_source() as source:
            return source.read(STORE_PROBE_MIN) or b""
    except OSError:
        return b""


def _stored_first(data: bytes, level: int) -> bool:
    """Whether a file's content is better stored (zlib level 0) than compressed.

    Content that is already compressed or random (archives, images, keys) does not shrink,
    and deflate spends most of its time on exactly such input (26 us for 4 KiB of random
    bytes at level 1, 6 us for 4 KiB of XML, 2 us to store either, on the bench machine)
    only to fall back to stored blocks of the same size. The probe counts the distinct byte
    values among the first :data:`STORE_PROBE_SIZE` bytes (about 5 us): more than
    :data:`STORE_PROBE_DISTINCT` means random-looking bytes, and the record is stored.
    (It used to deflate the first 512 bytes, which cost 30-70 us a file here: zlib sets
    up 256 KiB of state per call and builds its Huffman trees even for 512 bytes.)
    A wrong guess costs only size, never correctness: every reader takes any zlib stream,
    and the separator check still applies (a stored record holding the separator falls
    back to the configured compression).
    """
    if level == 0 or len(data) < STORE_PROBE_MIN:
        return False
    return len(set(data[:STORE_PROBE_SIZE])) > STORE_PROBE_DISTINCT


def _stored_stream(data: bytes) -> bytes:
    """``zlib.compress(data, 0)`` for at most :data:`STORED_BLOCK_MAX` bytes, without
    zlib's per-call set-up: the zlib header, one final stored block, the Adler-32."""
    size = len(data)
    assert size <= STORED_BLOCK_MAX
    return b"".join((_STORED_HEADER, _STORED_LENGTHS.pack(size, size ^ 0xFFFF), data,
                     _ADLER.pack(zlib.adler32(data))))


_STORED_HEADER = b"\x78\x01\x01"  # zlib header for level 0, then BFINAL=1 BTYPE=00
_STORED_LENGTHS = struct.Struct("<HH")
_ADLER = struct.Struct(">I")


def _variants(level: int) -> list[tuple[int, int]]:
    """Compression parameters to try, the configured ones first."""
    fallback = level or 6
    return [
        (level, zlib.Z_DEFAULT_STRATEGY),
        (9 if level != 9 else 1, zlib.Z_DEFAULT_STRATEGY),
        (fallback, zlib.Z_FILTERED),
        (fallback, zlib.Z_HUFFMAN_ONLY),
        (fallback, zlib.Z_FIXED),
    ]


class RecordCache:
    """Compressed records of big files, shared by the containers the master writes.

    Every worker that lacks a file gets a container of its own (the metadata differs), but
    the record of a file is the same bytes for every worker: the path, the zlib stream of its
    content at the configured level, the separator. With 100 workers and a 17 MB
    ``client.keys`` the master compressed that file 100 times (about 0.25 CPU s each). A
    record of a file of at least ``min_size`` bytes is kept in ``directory`` (on disk, not
    in the master's memory) under the file's identity: size, mtime and ctime in ns, inode,
    device and the compression level; any change to the file changes that identity (a
    rename gives a new inode, a write a new ctime), so a stale record is never used. A
    record is kept only if the file's identity was the same before and after it was read.
    At most ``max_entries`` records (one per path) and ``max_bytes`` are kept, oldest out
    first. Thread-safe: containers are written on the node's pool.
    """

    def __init__(self, directory: str, *, min_size: int = 1024 * 1024, max_entries: int = 32,
                 max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.min_size = min_size
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[str, tuple[tuple[int, ...], str, int]] = {}
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._serial = 0
        self.hits = 0
        self.stored = 0
        self._cleared = False

    def locked(self, name: str) -> threading.Lock:
        """The lock of one record name (held while it is looked up or compressed)."""
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def get(self, name: str, key: tuple[int, ...]) -> tuple[str, int] | None:
        """``(record file, length)`` of the record of ``name`` for ``key``, or None."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] != key:
                return None
            self.hits += 1
            return entry[1], entry[2]

    def drop(self, name: str) -> None:
        """Forget the record of ``name``."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is not None:
            _remove_quietly(entry[1])

    def put(self, name: str, key: tuple[int, ...], dest: BinaryIO, start: int,
            end: int) -> None:
        """Keep the record ``dest[start:end]`` (just written) for ``name`` and ``key``."""
        length = end - start
        if length > self.max_bytes:
            return
        self._prepare()
        with self._lock:
            self._serial += 1
            path = os.path.join(self.directory, f"record-{self._serial}")
        position = dest.tell()
        try:
            dest.flush()
            dest.seek(start)
            with open(path, "wb") as out:
                left = length
                while left:
                    chunk = dest.read(min(left, IO_CHUNK_SIZE))
                    if not chunk:
                        raise OSError("record shorter than written")
                    out.write(chunk)
                    left -= len(chunk)
        except OSError:
            _remove_quietly(path)
            return
        finally:
            dest.seek(position)
        with self._lock:
            old = self._entries.pop(name, None)
            self._entries[name] = (key, path, length)
            self.stored += 1
            dropped = [old[1]] if old is not None else []
            while self._entries and (len(self._entries) > self.max_entries or sum(
                    e[2] for e in self._entries.values()) > self.max_bytes):
                oldest = next(iter(self._entries))
                dropped.append(self._entries.pop(oldest)[1])
        for path_ in dropped:
            _remove_quietly(path_)

    def _prepare(self) -> None:
        """Create the directory; the first time, empty it (records of an earlier run)."""
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        with self._lock:
            if self._cleared:
                return
            self._cleared = True
        for entry in os.listdir(self.directory):
            if entry.startswith("record-"):
                _remove_quietly(os.path.join(self.directory, entry))


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@attrs.frozen
class SyncContainer:
    """Outcome of :func:`write_sync_container`.

    ``comparison`` is what was written as ``files_metadata.json``: the input minus the
    files that did not make it (a vanished ``shared`` file moved to ``extra``).
    """

    comparison: Comparison
    included: tuple[str, ...]
    deferred: tuple[str, ...]
    too_large: tuple[str, ...]
    vanished: tuple[str, ...]
    unreadable: tuple[str, ...]
    unencodable: tuple[str, ...]
    size: int


def write_sync_container(
    dest: BinaryIO,
    home: str,
    comparison: Comparison,
    *,
    max_size: int,
    compress_level: int = 1,
    order: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    cache: RecordCache | None = None,
) -> SyncContainer:
    """Write a master push: every ``missing``/``shared`` file, then the adjusted metadata.

    Files are read from ``home``. ``order`` is the order of the file records (default:
    sorted). Differences from Wazuh 4.7.5: a file that exists but cannot be read is only
    dropped (Wazuh would move a ``shared`` one to ``extra`` and so delete the worker's
    copy); a vanished file is treated exactly like Wazuh.

    ``progress`` (if given) is called, from the writing thread, with the size up to which
    ``dest`` holds final bytes (flushed, never truncated again) about every
    :data:`PROGRESS_STEP` bytes and once at the end with the complete size, so that the
    container can be sent while it is being written. ``stop`` is polled between files:
    once it returns True the remaining files are deferred (the reader went away).
    ``cache`` shares the records of big files between containers (:class:`RecordCache`).
    """
    names = list(order) if order is not None else sorted({*comparison.missing, *comparison.shared})
    writer = ContainerWriter(dest, compress_level=compress_level, max_size=max_size,
                             cache=cache)
    outcomes: dict[AddOutcome, list[str]] = {outcome: [] for outcome in AddOutcome}
    adjusted = comparison
    reported = 0
    for name in names:
        if stop is not None and stop():
            outcome = AddOutcome.DEFERRED
        else:
            outcome = writer.add_file(name, os.path.join(home, name))
        outcomes[outcome].append(name)
        if outcome is not AddOutcome.INCLUDED:
            adjusted = adjusted.without(name, vanished=outcome is AddOutcome.VANISHED)
        elif progress is not None and dest.tell() - reported >= PROGRESS_STEP:
            dest.flush()
            reported = dest.tell()
            progress(reported)
    writer.finish(adjusted.to_json())
    if progress is not None:
        progress(dest.tell())
    return SyncContainer(
        comparison=adjusted,
        included=tuple(outcomes[AddOutcome.INCLUDED]),
        deferred=tuple(outcomes[AddOutcome.DEFERRED]),
        too_large=tuple(outcomes[AddOutcome.TOO_LARGE]),
        vanished=tuple(outcomes[AddOutcome.VANISHED]),
        unreadable=tuple(outcomes[AddOutcome.UNREADABLE]),
        unencodable=tuple(outcomes[AddOutcome.UNENCODABLE]),
        size=writer.size,
    )


def write_metadata_container(
    dest: BinaryIO, metadata: Mapping[str, FileEntry], *, compress_level: int = 1
) -> None:
    """Write a worker's integrity-check upload: only the ``files_metadata.json`` record."""
    ContainerWriter(dest, compress_level=compress_level).finish(metadata_to_json(metadata))


# --------------------------------------------------------------------------- reader


@attrs.frozen
class ContainerLimits:
    """Hard bounds applied while reading a container received from a peer."""

    max_container_size: int = _GIB + 256 * _MIB
    max_entries: int = 1_000_000
    max_entry_size: int = _GIB
    max_total_size: int = 4 * _GIB
    max_metadata_size: int = _METADATA_LIMIT
    max_name_length: int = 4096

    @classmethod
    def for_zip_size(cls, max_zip_size: int) -> ContainerLimits:
        """Limits matching a sender whose zip limit is ``max_zip_size`` (``cluster.json``).

        A sender never includes a file larger than its limit, and the metadata record is
        not counted against it.
        """
        return cls(
            max_container_size=max_zip_size + _METADATA_LIMIT,
            max_entry_size=max_zip_size,
            max_total_size=max(4 * max_zip_size, 4 * _GIB),
        )


class RecordSink(Protocol):
    """Receives the records of a container as :func:`decode_container` parses them."""

    def begin(self, name: str) -> bool:
        """Start a file record; return False to have its content discarded."""

    def write(self, data: bytes) -> None:
        """Receive the next piece of decompressed content of the current record."""

    def end(self) -> None:
        """The current record is complete (its zlib stream ended and checked out)."""


def decode_container(stream: BinaryIO, sink: RecordSink, limits: ContainerLimits) -> bytes:
    """Parse a container, feed the file records to ``sink``; return the metadata bytes.

    Names are decoded as UTF-8 with ``surrogateescape`` (invalid bytes then fail path
    validation). Raises :class:`ContainerError` for anything malformed or over a limit.
    """
    source = _Input(stream, limits.max_container_size)
    if source.at_eof():
        raise ContainerError("empty container")
    entries = 0
    total = 0
    while True:
        raw_name = source.read_until(PATH_SEP, limits.max_name_length)
        name = raw_name.decode("utf-8", "surrogateescape")
        if name == METADATA_NAME:
            collected = bytearray()
            _inflate(source, collected.extend, limits.max_metadata_size, None)
            if not source.at_eof():
                raise ContainerError("data after the files_metadata.json record")
            return bytes(collected)
        entries += 1
        if entries > limits.max_entries:
            raise ContainerError(f"more than {limits.max_entries} entries")
        keep = sink.begin(name)
        total += _inflate(
            source,
            sink.write if keep else _discard,
            limits.max_entry_size,
            limits.max_total_size - total,
        )
        if not source.consume(FILE_SEP):
            raise ContainerError(f"record {name!r} is not followed by a separator")
        sink.end()
        if source.at_eof():
            raise ContainerError("container has no files_metadata.json record")


@attrs.frozen
class DecodedContainer:
    """A container decoded in memory (:func:`read_container_bytes`)."""

    files: dict[str, bytes]
    metadata: object


def read_container_bytes(data: bytes, limits: ContainerLimits | None = None) -> DecodedContainer:
    """Decode a small container held in memory (e.g. a worker's metadata upload).

    Names are not validated against items; duplicates raise :class:`ContainerError`.
    """
    sink = _MemorySink()
    raw = decode_container(io.BytesIO(data), sink, limits or ContainerLimits())
    return DecodedContainer(files=sink.files, metadata=_parse_json(raw))


@attrs.frozen
class StagedFile:
    """A container entry extracted to the staging directory."""

    path: str  # absolute path of the staged copy
    size: int
    digest: str  # BLAKE2b-512 hexdigest of the content
    mtime_ns: int = 0  # of the staged copy (a rename keeps it)


@attrs.frozen
class ExtractedContainer:
    """Result of :func:`extract_container`.

    ``files`` maps each validated entry name to its staged copy (container order);
    ``refused`` lists entries whose names were refused (their content was discarded).
    """

    staging_dir: str
    files: dict[str, StagedFile]
    refused: tuple[Refusal, ...]
    metadata: object


def extract_container(
    container_path: str,
    staging_dir: str,
    items: ClusterItems,
    limits: ContainerLimits,
    *,
    fsync: bool = True,
) -> ExtractedContainer:
    """Stream every entry of a container file into ``staging_dir`` (which must exist).

    Each accepted entry is written to a new file named by its index (the peer's name is
    never used as a file name), fsynced when ``fsync`` is true and hashed on the way.
    Entry names are checked with :func:`validate_peer_path`; refused names are reported
    and nothing is written for them. Raises :class:`ContainerError`; on error the staged
    files are left for the caller to remove with the staging directory.
    """
    with open(container_path, "rb") as stream:
        return extract_stream(stream, staging_dir, items, limits, fsync=fsync)


def extract_stream(
    stream: BinaryIO,
    staging_dir: str,
    items: ClusterItems,
    limits: ContainerLimits,
    *,
    fsync: bool = True,
) -> ExtractedContainer:
    """:func:`extract_container` from a stream (e.g. a container still arriving)."""
    sink = _StagingSink(staging_dir, items, fsync)
    try:
        raw = decode_container(stream, sink, limits)
    finally:
        sink.close()
    return ExtractedContainer(
        staging_dir=staging_dir,
        files=sink.files,
        refused=tuple(sink.refused),
        metadata=_parse_json(raw),
    )


def _discard(data: bytes) -> None:
    """Sink for content that is decompressed only to find the end of its record."""


def _parse_json(raw: bytes) -> object:
    """Parse the metadata record."""
    try:
        return jsonpieces.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ContainerError(f"files_metadata.json is not valid JSON: {e}") from None


def _inflate(
    source: _Input, out: Callable[[bytes], object], max_size: int, max_total: int | None
) -> int:
    """Decompress one zlib stream from ``source`` into ``out``; return its size.

    Leaves ``source`` positioned right after the end of the zlib stream.
    """
    inflater = zlib.decompressobj()
    size = 0
    feed = FIRST_FEED_SIZE
    while not inflater.eof:
        data = source.chunk(feed)
        feed = FEED_SIZE
        if not data:
            raise ContainerError("truncated record")
        while True:
            try:
                piece = inflater.decompress(data, OUTPUT_CHUNK_SIZE)
            except zlib.error as e:
                raise ContainerError(f"corrupt zlib data: {e}") from None
            size += len(piece)
            if size > max_size:
                raise ContainerError(f"entry larger than {max_size} bytes once decompressed")
            if max_total is not None and size > max_total:
                raise ContainerError("total decompressed size over the limit")
            if piece:
                out(piece)
            data = inflater.unconsumed_tail
            if inflater.eof or (not data and len(piece) < OUTPUT_CHUNK_SIZE):
                break
    source.unread(inflater.unused_data)
    return size


class _Input:
    """A bounded, buffered reader over the container stream.

    The buffer is consumed by moving a position (compacted when the next window is read),
    and :meth:`chunk` hands out at most :data:`FEED_SIZE` bytes, so a container of many
    small records costs O(size) copying, not O(records x window).
    """

    def __init__(self, stream: BinaryIO, max_size: int) -> None:
        self._stream = stream
        self._max_size = max_size
        self._read = 0
        self._buffer = bytearray()
        self._pos = 0
        self._last = 0  # size of the piece most recently returned by chunk()

    def _available(self) -> int:
        return len(self._buffer) - self._pos

    def _fill(self) -> bool:
        """Read one more window; return False at end of stream."""
        data = self._stream.read(IO_CHUNK_SIZE)
        if not data:
            return False
        self._read += len(data)
        if self._read > self._max_size:
            raise ContainerError(f"container larger than {self._max_size} bytes")
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
            self._last = 0
        self._buffer += data
        return True

    def at_eof(self) -> bool:
        """True when no byte is left."""
        return not self._available() and not self._fill()

    def chunk(self, limit: int = FEED_SIZE) -> bytes:
        """Return (and consume) the next buffered bytes (at most ``limit``); b"" at the end."""
        if not self._available() and not self._fill():
            return b""
        end = min(len(self._buffer), self._pos + limit)
        data = bytes(self._buffer[self._pos : end])
        self._pos = end
        self._last = len(data)
        return data

    def unread(self, data: bytes) -> None:
        """Give back the tail of the piece most recently returned by :meth:`chunk`."""
        if not data:
            return
        if len(data) > self._last or self._buffer[self._pos - len(data) : self._pos] != data:
            raise AssertionError("unread() only takes back the tail of the last chunk")
        self._pos -= len(data)
        self._last = 0

    def read_until(self, separator: bytes, max_length: int) -> bytes:
        """Return the bytes before ``separator`` and consume both."""
        searched = 0
        while True:
            index = self._buffer.find(
                separator, self._pos + max(0, searched - len(separator) + 1)
            )
            if index != -1:
                if index - self._pos > max_length:
                    raise ContainerError("entry name too long")
                data = bytes(self._buffer[self._pos : index])
                self._pos = index + len(separator)
                return data
            searched = self._available()
            if searched > max_length + len(separator):
                raise ContainerError("entry name too long")
            if not self._fill():
                raise ContainerError("truncated record header")

    def consume(self, expected: bytes) -> bool:
        """Consume ``expected`` if the input continues with it."""
        while self._available() < len(expected):
            if not self._fill():
                return False
        if self._buffer[self._pos : self._pos + len(expected)] != expected:
            return False
        self._pos += len(expected)
        return True


class _MemorySink:
    """Collects records in memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._name = ""
        self._data = bytearray()

    def begin(self, name: str) -> bool:
        """Start collecting a record."""
        if name in self.files:
            raise ContainerError(f"duplicate entry {name!r}")
        self._name = name
        self._data = bytearray()
        return True

    def write(self, data: bytes) -> None:
        """Append content."""
        self._data += data

    def end(self) -> None:
        """Store the record."""
        self.files[self._name] = bytes(self._data)


class _StagingSink:
    """Writes validated records to numbered files in a staging directory."""

    def __init__(self, staging_dir: str, items: ClusterItems, fsync: bool) -> None:
        self._dir = staging_dir
        self._items = items
        self._fsync = fsync
        self.files: dict[str, StagedFile] = {}
        self.refused: list[Refusal] = []
        self._seen: set[str] = set()
        self._fd: int | None = None
        self._path = ""
        self._name = ""
        self._size = 0
        self._digest = hashlib.blake2b()

    def begin(self, name: str) -> bool:
        """Validate the name and open a new staged file for it."""
        if name in self._seen:
            raise ContainerError(f"duplicate entry {name!r}")
        self._seen.add(name)
        try:
            validate_peer_path(name, self._items)
        except UnsafePathError as e:
            self.refused.append(Refusal(name, e.reason))
            return False
        self._name = name
        self._path = os.path.join(self._dir, f"{len(self.files):08d}")
        self._fd = os.open(
            self._path,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        self._size = 0
        self._digest = hashlib.blake2b()
        return True

    def write(self, data: bytes) -> None:
        """Write and hash a piece of content."""
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        self._digest.update(data)

    def end(self) -> None:
        """Close the staged file, if this record was accepted."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._fsync:
                os.fsync(fd)
            mtime_ns = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
        self.files[self._name] = StagedFile(
            self._path, self._size, self._digest.hexdigest(), mtime_ns
        )

    def close(self) -> None:
        """Release a file left open by an interrupted record."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
