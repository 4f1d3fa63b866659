"""The generic sub-protocols every connection serves: echo, long strings, files,
task cancellation; and the matching senders.

Hardening over Wazuh 4.7.5:

* ``new_str`` lengths are bounded and buffers grow as data arrives (no zero-filled
  pre-allocation an unauthenticated peer could pin); unconsumed strings expire.
* ``new_file`` accepts only ``/queue/cluster/<name>/<file>`` where ``<name>`` is the one
  directory this connection may write to and ``<file>`` a plain file name: the peer never
  chooses a path. Writes run off the reactor; sizes are bounded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import secrets
import threading
from collections.abc import Callable, Coroutine
from typing import IO, Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IPeer
from wazuhcluster.logsafe import peer_text
from wazuhcluster.protocol.budget import MemoryAccount
from wazuhcluster.protocol.chunks import REQUEST_CHUNK
from wazuhcluster.protocol.commands import (
    CANCEL_TASK,
    ECHO,
    ERR,
    ERR_STR,
    FILE_END,
    FILE_UPD,
    NEW_FILE,
    NEW_STR,
    OK,
    STR_UPD,
    Reply,
)

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]
Runner = Callable[..., Any]

_SAFE_NAME = re.compile(rb"^[A-Za-z0-9_][A-Za-z0-9._\-]{0,200}$")


@attrs.define
class _String:
    declared: int
    data: bytearray
    created: float


class StringStore:
    """Long strings received on one connection (``new_str`` / ``str_upd`` / ``err_str``).

    :param max_string: the largest string one ``new_str`` may announce.
    :param max_total: the most bytes all unconsumed strings of this connection may declare.
    :param ttl: seconds after which an unconsumed string is dropped.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, max_string: int = 256 * 1024 * 1024,
                 max_total: int = 512 * 1024 * 1024, ttl: float = 600.0) -> None:
        self._clock = clock
        self._max_string = max_string
        self._max_total = max_total
        self._ttl = ttl
        self._strings: dict[bytes, _String] = {}
        self._held = 0
        #: the connection's share of the node's memory budget (set by the factory)
        self.account: MemoryAccount | None = None

    def __len__(self) -> int:
        return len(self._strings)

    def new(self, payload: bytes) -> bytes:
        """Register a string of the announced length; return its id."""
        self._expire()
        try:
            declared = int(payload)
        except ValueError:
            raise ClusterError(3036, "new_str length is not a number") from None
        if declared < 0 or declared > self._max_string:
            raise ClusterError(3050, f"string of {declared} bytes exceeds {self._max_string}")
        if sum(s.declared for s in self._strings.values()) + declared > self._max_total:
            raise ClusterError(3050, "too many unconsumed strings on this connection")
        while True:
            string_id = str(secrets.randbits(32)).encode()
            if string_id not in self._strings:
                break
        self._strings[string_id] = _String(declared, bytearray(), self._clock.seconds())
        return string_id

    def update(self, payload: bytes) -> None:
        """Append ``<id> <bytes>``; bytes beyond the declared length are dropped."""
        string_id, _, data = payload.partition(b" ")
        entry = self._strings.get(string_id)
        if entry is None:
            raise ClusterError(3035, peer_text(string_id, 64))
        room = entry.declared - len(entry.data)
        added = min(room, len(data))
        if self.account is not None and added:
            refused = self.account.refusal("strings", self._held + added)
            if refused is not None:
                del self._strings[string_id]
                self._forget(entry)
                self._log.warn("[Cluster] [Main] Long string {id} dropped: {reason}",
                               id=peer_text(string_id, 16), reason=refused)
                raise ClusterError(3050, f"string dropped: {refused}")
        entry.data += data[:room]
        self._charge(added)

    def cancel(self, payload: bytes) -> bytes:
        """``err_str``: forget one never-written string of that declared length."""
        try:
            declared = int(payload)
        except ValueError:
            return b"None"
        for string_id, entry in self._strings.items():
            if entry.declared == declared and not entry.data:
                del self._strings[string_id]
                return string_id
        return b"None"

    def take(self, string_id: bytes) -> bytes:
        """Consume a complete string; raise 3035 if unknown."""
        entry = self._strings.pop(string_id.strip(), None)
        if entry is None:
            raise ClusterError(3035, peer_text(string_id, 64))
        self._forget(entry)
        return bytes(entry.data)

    def clear(self) -> None:
        """The connection is gone: drop every string."""
        self._strings.clear()
        self._charge(-self._held)

    def _forget(self, entry: _String) -> None:
        self._charge(-len(entry.data))

    def _charge(self, change: int) -> None:
        self._held += change
        if self.account is not None:
            self.account.set("strings", self._held)

    def _expire(self) -> None:
        limit = self._clock.seconds() - self._ttl
        for string_id in [k for k, v in self._strings.items() if v.created < limit]:
            self._forget(self._strings.pop(string_id))


class FollowError(Exception):
    """A followed file will not be completed (refused, abandoned, connection lost)."""


class FollowedFile:
    """How far a file still being received is written, for a reader on another thread.

    The receiver (reactor thread) reports every append once it is written and flushed,
    then either completes the file (all of it arrived and its checksum matched) or fails
    it. A reader from :meth:`open` reads only bytes reported written, waits for more, sees
    the end once the file is complete, and raises :class:`FollowError` once it failed.
    """

    #: How long a waiting reader sleeps before it looks again (it is woken at once by any
    #: change; this only bounds a wait nobody ends).
    WAIT_SLICE = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._changed = threading.Condition()
        self._written = 0
        self._complete = False
        self._failure: str | None = None

    def advance(self, written: int) -> None:
        """Bytes ``[0, written)`` are in the file."""
        with self._changed:
            self._written = max(self._written, written)
            self._changed.notify_all()

    def complete(self) -> None:
        """Everything arrived and checked out: readers see the end of the file."""
        with self._changed:
            self._complete = True
            self._changed.notify_all()

    def fail(self, reason: str) -> None:
        """The file will not be completed: readers raise :class:`FollowError`."""
        with self._changed:
            if not self._complete and self._failure is None:
                self._failure = reason
            self._changed.notify_all()

    @property
    def failure(self) -> str | None:
        """Why the file failed, or None."""
        with self._changed:
            return self._failure

    def wait(self, position: int) -> int:
        """Block until more than ``position`` bytes are written (return how many) or the
        file is complete (return ``position`` if it ends there); raise if it failed."""
        with self._changed:
            while True:
                if self._failure is not None:
                    raise FollowError(self._failure)
                if self._written > position or self._complete:
                    return self._written
                self._changed.wait(self.WAIT_SLICE)

    def open(self) -> _FollowingReader:
        """A blocking reader over the file (to be used on one thread, then closed)."""
        return _FollowingReader(self)


class _FollowingReader(io.RawIOBase):
    """Reads a :class:`FollowedFile` as it grows (``read`` blocks for new bytes)."""

    def __init__(self, followed: FollowedFile) -> None:
        super().__init__()
        self._followed = followed
        self._fd = os.open(followed.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """At least one byte (blocking until it is written), or b"" at the end."""
        available = self._followed.wait(self._position) - self._position
        if available <= 0:
            return b""
        if size is not None and size >= 0:
            available = min(available, size)
        data = os.pread(self._fd, available, self._position)
        self._position += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


@attrs.define
class _IncomingFile:
    path: str
    handle: IO[bytes]
    digest: Any
    size: int = 0
    #: Appends run on a thread pool; the lock keeps them (and the close) in arrival order
    #: when a sender has several ``file_upd`` in flight.
    lock: DeferredLock = attrs.Factory(DeferredLock)
    #: bytes appended so far (``size`` counts the ones announced)
    written: int = 0
    followed: FollowedFile | None = None

    def fail(self, reason: str) -> None:
        """Tell a reader following this file that it will not be completed."""
        if self.followed is not None:
            self.followed.fail(reason)


class FileReceiver:
    """Files received on one connection, confined to one directory.

    :param home: the node's home (``WAZUH_PATH``).
    :param runner: runs blocking file operations off the reactor.
    :param max_file: the largest file accepted.
    :param keep_directory: keep the connection's directory when it closes (a worker's own
        ``queue/cluster/<name>/``); the master removes each worker's when it is empty.
    """

    _log = Logger()

    def __init__(self, home: str, runner: Runner, max_file: int = 1024 * 1024 * 1024,
                 max_open: int = 4, keep_directory: bool = False) -> None:
        self._home = home
        self._keep_directory = keep_directory
        self._runner = runner
        self._max_file = max_file
        self._max_open = max_open
        self.directory_name: bytes | None = None  # set once the peer is known
        self._open: dict[bytes, _IncomingFile] = {}
        self.received: dict[str, str] = {}  # relative path (no leading /) -> absolute path
        #: Called (once, then cleared) with the next file announced on this connection, so
        #: that a reader can follow it while it arrives (see :class:`FollowedFile`).
        self.follow_next: Callable[[bytes, FollowedFile], None] | None = None

    def resolve(self, relpath: bytes) -> str:
        """Map a peer-supplied path onto our directory, or raise ClusterError."""
        if self.directory_name is None:
            raise ClusterError(3000, "file transfers are not allowed on this connection yet")
        parts = relpath.split(b"/")
        if (len(parts) != 5 or parts[0] != b"" or parts[1] != b"queue" or parts[2] != b"cluster"
                or parts[3] != self.directory_name or not self._safe_file_name(parts[4])):
            raise ClusterError(3000, f"file path refused: {relpath[:200]!r}")
        return os.path.join(self._home, "queue", "cluster", self.directory_name.decode(),
                            parts[4].decode())

    def _safe_file_name(self, name: bytes) -> bool:
        """A plain file name: ``[A-Za-z0-9_][A-Za-z0-9._-]*``, or ``<node>-<that>`` (Wazuh
        names containers ``<worker>-<ts>-<hex>.zip``; node names may hold other characters,
        but they were validated as a single path component)."""
        assert self.directory_name is not None
        prefix = self.directory_name + b"-"
        if name.startswith(prefix):
            name = name[len(prefix):]
        return _SAFE_NAME.match(name) is not None

    async def new_file(self, payload: bytes) -> Reply:
        """``new_file <relpath>``: open the file for writing.

        The connection's directory is created here, by the first file it sends (not at
        hello: a flood of hellos with new names leaves no directories behind).
        """
        relpath = payload.strip()
        path = self.resolve(relpath)
        if relpath in self._open:
            previous = self._open.pop(relpath)
            previous.fail("announced again")
            await self._runner(previous.handle.close)
        if len(self._open) >= self._max_open:
            raise ClusterError(3000, "too many files in transfer on this connection")
        try:
            handle = await self._runner(_open_for_write, path)
        except OSError as e:
            raise self._write_error(e, path, 0) from None
        incoming = _IncomingFile(path, handle, hashlib.sha256())
        self._open[relpath] = incoming
        follow, self.follow_next = self.follow_next, None
        if follow is not None:
            incoming.followed = FollowedFile(path)
            follow(relpath, incoming.followed)
        return Reply(OK, b"Ready to receive new file")

    async def update(self, payload: bytes) -> Reply:
        """``file_upd <relpath> <bytes>``: append a chunk.

        A chunk that cannot be written (disk full, I/O error) removes the partial file at
        once and is answered with an error, so the sender ends its task.
        """
        space = payload.find(b" ")
        relpath = payload if space < 0 else payload[:space]
        incoming = self._open.get(relpath)
        if incoming is None:
            raise ClusterError(3000, "file_upd for a file that was not announced")
        # The chunk as a view of the payload (partition would copy it): hashed and written
        # without a 5 MiB copy.
        data = memoryview(payload)[len(payload) if space < 0 else space + 1:]
        incoming.size += len(data)
        if incoming.size > self._max_file:
            self._open.pop(relpath)
            incoming.fail("too large")
            await self._runner(_discard, incoming.handle, incoming.path)
            raise ClusterError(3050, f"file exceeds {self._max_file} bytes")
        await incoming.lock.acquire()
        try:
            await self._runner(_append, incoming.handle, incoming.digest, data)
            incoming.written += len(data)
            if incoming.followed is not None:
                incoming.followed.advance(incoming.written)
        except OSError as e:
            if self._open.get(relpath) is incoming:
                del self._open[relpath]
            incoming.fail("could not be written")
            with contextlib.suppress(OSError):
                await self._runner(_discard, incoming.handle, incoming.path)
            raise self._write_error(e, incoming.path, incoming.size) from None
        finally:
            incoming.lock.release()
        return Reply(OK, b"File updated")

    def _write_error(self, error: OSError, path: str, size: int) -> ClusterError:
        """One ERROR line for a file we could not write; the error for the peer."""
        directory = os.path.dirname(path)
        if error.errno == errno.ENOSPC:
            self._log.error("[Cluster] [Main] No space left on device in {directory}: a file "
                            "of at least {size} bytes could not be received; the partial file "
                            "was removed. Free at least that much space there; the sync is "
                            "retried by itself.", directory=directory, size=size)
            return ClusterError(3000, f"no space left on device in {directory} (a file of at "
                                      f"least {size} bytes could not be received)")
        self._log.error("[Cluster] [Main] Could not write a received file in {directory}: "
                        "{error}; the partial file was removed.", directory=directory,
                        error=error.strerror or str(error))
        return ClusterError(3000, f"could not write a received file in {directory}: "
                                  f"{error.strerror or error}")

    async def end(self, payload: bytes) -> Reply:
        """``file_end <relpath> <sha256>``: close and verify."""
        relpath, _, digest = payload.partition(b" ")
        incoming = self._open.pop(relpath, None)
        if incoming is None:
            raise ClusterError(3000, "file_end for a file that was not announced")
        await incoming.lock.acquire()  # every earlier file_upd has been written
        incoming.lock.release()
        if incoming.digest.digest() != digest:
            incoming.fail("checksum mismatch")
            await self._runner(_discard, incoming.handle, incoming.path)
            return Reply(ERR, b"File wasn't correctly received. Checksums aren't equal.")
        await self._runner(incoming.handle.close)
        self.received[relpath.decode().lstrip("/")] = incoming.path
        if incoming.followed is not None:
            incoming.followed.complete()
        return Reply(OK, b"File received correctly")

    def claim(self, relpath: str) -> str:
        """Return the local path of a completely received file named by a ``…_e`` command.

        Only files that arrived completely on this connection can be claimed, so a peer
        cannot make us read or delete any other file.
        """
        path = self.received.pop(relpath.strip().lstrip("/"), None)
        if path is None:
            raise ClusterError(3034, peer_text(relpath, 200))
        return path

    def close_all(self) -> Deferred[None] | None:
        """Connection lost: close and remove every partial file and every received file
        nobody claimed, then the connection's directory if that leaves it empty (another
        connection of the same peer may already be using it). Best effort, off the reactor."""
        handles = [(incoming.handle, incoming.path) for incoming in self._open.values()]
        for incoming in self._open.values():
            incoming.fail("connection lost")
        self._open.clear()
        self.follow_next = None
        leftovers = list(self.received.values())
        self.received.clear()
        if self.directory_name is None:
            return None
        directory = os.path.join(self._home, "queue", "cluster", self.directory_name.decode())
        d: Deferred[None] = self._runner(_clean_up, handles, leftovers,
                                         None if self._keep_directory else directory)
        d.addErrback(lambda f: self._log.failure("[Cluster] [Main] Could not clean up {path}",
                                                 f, path=directory))
        return d


def _clean_up(handles: list[tuple[IO[bytes], str]], leftovers: list[str],
              directory: str | None) -> None:
    for handle, path in handles:
        with contextlib.suppress(OSError):
            _discard(handle, path)
    for path in leftovers:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if directory is not None:
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(directory)


def _open_for_write(path: str) -> IO[bytes]:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o770, exist_ok=True)
        os.chmod(directory, 0o770)  # whatever the umask
    return open(path, "wb")


def _append(handle: IO[bytes], digest: Any, data: bytes | memoryview) -> None:
    digest.update(data)
    handle.write(data)
    handle.flush()  # a reader following the file sees every appended byte


def _read_and_hash(handle: IO[bytes], digest: Any, size: int) -> bytes:
    parts = []
    while size > 0:  # an unbuffered read may return less than asked
        part = handle.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    chunk = b"".join(parts)
    digest.update(chunk)
    return chunk


def _discard(handle: IO[bytes], path: str) -> None:
    handle.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class CommonResponders:
    """Responders for the generic commands, shared by every role's command table."""

    _log = Logger()

    def __init__(self, strings: StringStore, files: FileReceiver, tag: Callable[[], str]) -> None:
        self.strings = strings
        self.files = files
        self.cancelled_tasks: set[str] = set()
        self._tag = tag

    def responders(self) -> dict[bytes, Responder]:
        """The command table entries for the generic sub-protocols."""
        return {
            ECHO: self._echo,
            NEW_STR: self._new_str,
            STR_UPD: self._str_upd,
            ERR_STR: self._err_str,
            NEW_FILE: self.files.new_file,
            FILE_UPD: self.files.update,
            FILE_END: self.files.end,
            CANCEL_TASK: self._cancel_task,
        }

    async def _echo(self, payload: bytes) -> Reply:
        return Reply(OK, payload)

    async def _new_str(self, payload: bytes) -> Reply:
        return Reply(OK, self.strings.new(payload))

    async def _str_upd(self, payload: bytes) -> Reply:
        self.strings.update(payload)
        return Reply(OK, b"String updated")

    async def _err_str(self, payload: bytes) -> Reply:
        return Reply(OK, self.strings.cancel(payload))

    async def _cancel_task(self, payload: bytes) -> Reply:
        task_id, _, error = payload.partition(b" ")
        if task_id != b"None":
            self.cancelled_tasks.add(task_id.decode("ascii", "replace"))
        self._log.warn("[{tag}] [Main] Peer cancelled task {task}: {error}", tag=self._tag(),
                       task=peer_text(task_id, 64),
                       error=peer_text(error, 300))
        return Reply(OK, b"Request received correctly")


# -- senders -------------------------------------------------------------------------------
async def send_string(peer: IPeer, data: bytes) -> bytes:
    """Ship ``data`` as a long string; return the id the peer assigned."""
    try:
        string_id = await peer.request(NEW_STR, str(len(data)).encode())
    except ClusterError:
        await peer.request(ERR_STR, str(len(data)).encode())
        raise
    step = REQUEST_CHUNK - len(string_id) - 1
    view = memoryview(data)
    for start in range(0, len(data), step):
        await peer.request(STR_UPD, string_id + b" " + bytes(view[start:start + step]))
    return string_id


class GrowingFile:
    """A file that another thread is still appending to (e.g. a container being written).

    The writer calls :meth:`advance` with the size up to which the file's content is final
    (already written to the OS and never truncated again) and :meth:`finish` at the end;
    :func:`send_file` reads only up to that size and waits for more. Both methods are safe
    to call from any thread (they only store integers).
    """

    def __init__(self) -> None:
        self.ready = 0
        self.finished = False
        self.abandoned = False  # set by the sender when it stops early: the writer may stop

    def advance(self, size: int) -> None:
        """Content up to ``size`` bytes is final."""
        self.ready = size

    def finish(self, size: int) -> None:
        """The file is complete at ``size`` bytes."""
        self.ready = size
        self.finished = True


#: ``file_upd`` requests a sender keeps in flight (the receiver still writes them in order).
SEND_WINDOW = 2
#: How long the sender of a growing file waits before looking for more content.
GROWING_POLL = 0.01


async def send_file(peer: IPeer, path: str, relpath: bytes, runner: Runner,
                    is_cancelled: Callable[[], bool] = lambda: False, *,
                    growing: GrowingFile | None = None, clock: IReactorTime | None = None,
                    window: int = SEND_WINDOW, chunk_size: int = REQUEST_CHUNK) -> None:
    """Send the file at ``path`` as ``relpath`` with new_file / file_upd / file_end.

    The file is read in chunks on the runner: a 1 GiB file is never in memory at once.
    Up to ``window`` ``file_upd`` requests are in flight, so reading and encrypting the
    next chunk overlaps with the peer decrypting and writing the previous one (every
    receiver handles requests of one connection in order). With ``growing`` (and a
    ``clock`` to wait on), the file is sent while it is being written: only content the
    writer has declared final is read, and the transfer ends when the writer has finished.
    ``chunk_size`` bounds each ``file_upd`` payload (at most ``REQUEST_CHUNK``; receivers append
    chunks of any size).
    """
    if growing is not None and clock is None:
        raise ValueError("a growing file needs a clock")
    step = min(chunk_size, REQUEST_CHUNK) - len(relpath) - 1
    if step <= 0:
        raise ValueError("chunk too small for the file name")
    digest = hashlib.sha256()
    in_flight: list[Deferred[bytes]] = []
    # Unbuffered: a buffered reader could read ahead past what a growing file's writer
    # has declared final and later hand out those stale bytes.
    handle = await runner(open, path, "rb", buffering=0)
    try:
        await peer.request(NEW_FILE, relpath)
        offset = 0
        while not is_cancelled():
            size = step
            if growing is not None:
                finished = growing.finished
                available = growing.ready - offset
                if available < step and not finished:
                    if in_flight and in_flight[0].called:
                        await in_flight.pop(0)
                        continue
                    assert clock is not None
                    await task.deferLater(clock, GROWING_POLL, lambda: None)
                    continue
                size = min(step, available)
                if size <= 0:
                    break
            chunk = await runner(_read_and_hash, handle, digest, size)
            if not chunk:
                break
            offset += len(chunk)
            in_flight.append(peer.request(FILE_UPD, relpath + b" " + chunk))
            while len(in_flight) >= max(1, window):
                await in_flight.pop(0)
        while in_flight:
            await in_flight.pop(0)
    finally:
        if growing is not None:
            growing.abandoned = True
        for pending in in_flight:
            pending.addErrback(lambda _: None)
        await runner(handle.close)
    reply = await peer.request(FILE_END, relpath + b" " + digest.digest())
    if reply != b"File received correctly":
        raise ClusterError(3000, "peer did not confirm the file")
