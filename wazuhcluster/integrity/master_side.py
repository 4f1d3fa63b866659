"""Master side of the integrity check and sync, and push on change.

Pieces, all owned by the master node:

* :class:`IntegrityMaster` (an :class:`~wazuhcluster.interfaces.IMasterExtension`): the
  "Local integrity" recomputation (one cached :class:`ScanResult` serves every worker), the
  per-worker lock and per-cycle permission list, and the responders for ``syn_i_w_m_p``,
  ``syn_i_w_m``, ``syn_i_w_m_e`` and ``syn_i_w_m_r``. Each granted check runs as a task:
  wait for the worker's metadata container, compare, then answer ``syn_m_c_ok`` or push the
  differences (``syn_m_c``, file transfer, ``syn_m_c_e``), with Wazuh's zip limit and its
  adaptive adjustment;
* :class:`IntegrityWatcher`: inotify on the item directories; a file closed after writing
  (or moved, deleted) triggers a recomputation of the named files within a few ms, bursts
  coalesced (at most 50 ms after the first event); a file still open for writing waits for
  0.2 s of quiet (at most 1 s);
* push on change (beyond Wazuh): when a recomputation finds different content, every
  connected worker that announced ``sync_now`` is told to check now (``wzc_syncnow``); a
  worker whose lock is held gets it when the lock is released.
* direct push (between our nodes, ``push_direct``): to an idle worker that announced it,
  the files a recomputation changed are pushed at once, without a check before (no scan,
  upload, decode or comparison); busy workers take the check path above, and so do bursts
  still being written unless the worker takes queued pushes (``push_queue``) and the
  master knows its files: then what differs is pushed after the burst's next
  recomputation, and what is written meanwhile follows push after push.
* a bound on concurrent tasks (``max_concurrent_integrity_tasks``): beyond it a permission
  request is answered False and the worker waits in line; each task that ends sends
  ``sync_now`` to the next worker in line (workers without it ask again at their next tick).
  Without it, a change seen by 100 workers at once makes the master build 100 containers
  together and starves its reactor (timeouts, liveness failures, reconnections).

Blocking work (scans, reading the worker's container, comparing, writing the push, deleting
files) goes through ``node.run``; every network wait has a timeout.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, inotify, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.python.runtime import platform
from zope.interface import implementer

from wazuhcluster.errors import ClusterError, InternalError, RemoteCommandError
from wazuhcluster.integrity import jsonpieces
from wazuhcluster.integrity.compare import Comparison, compare_metadata
from wazuhcluster.integrity.container import (
    ContainerLimits,
    RecordCache,
    SyncContainer,
    decode_container,
    write_sync_container,
)
from wazuhcluster.integrity.errors import IntegrityError, UnsafePathError
from wazuhcluster.integrity.items import ClusterItems, parse_cluster_items, validate_peer_path
from wazuhcluster.integrity.metadata import (
    CachedDigest,
    FileEntry,
    ScanResult,
    metadata_from_json,
    rescan_paths,
    scan_items,
)
from wazuhcluster.integrity.scheduling import Coalescer
from wazuhcluster.interfaces import IMasterExtension, IPeer
from wazuhcluster.logsafe import peer_text
from wazuhcluster.periodic import periodic
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    CANCEL_TASK,
    FILE_UPD,
    SYN_I_W_M,
    SYN_I_W_M_E,
    SYN_I_W_M_P,
    SYN_I_W_M_R,
    SYN_M_C,
    SYN_M_C_E,
    SYN_M_C_OK,
    SYN_M_C_R,
    SYNC_NOW,
    Reply,
)
from wazuhcluster.protocol.handler import is_connection_closed
from wazuhcluster.protocol.transfers import GrowingFile, send_file

if TYPE_CHECKING:
    from wazuhcluster.master.commands import MasterCommands
    from wazuhcluster.master.node import MasterNode
    from wazuhcluster.master.registry import WorkerSession

#: Longest a check waits for a recomputation already under way or scheduled by the watcher
#: (which looks at a closed file within milliseconds): while files keep being written, each
#: round pushes what is complete, and the rounds overlap the writing.
FRESH_SCAN_WAIT = 0.1
FRESH_SCAN_POLL = 0.005
#: ``file_upd`` size of a push. Fernet holds the GIL while it encrypts a message (about
#: 17 ms of 5 MiB here, a reactor stall even from a pool thread; a cold 5 MiB buffer costs
#: several times that), and 1 MiB messages cost about 20 % less CPU at both ends; the first
#: chunk also leaves as soon as 1 MiB of the container is final.
PUSH_CHUNK = 1024 * 1024
#: The capability a worker announces to receive ``wzc_syncnow``.
SYNC_NOW_CAPABILITY = "sync_now"
#: The capability one of our workers announces to receive a push the master starts itself
#: (``syn_m_c`` without a check before it): after a recomputation that changed some files,
#: the master sends just those files (and deletions) instead of asking for a check, which
#: would cost the worker a scan and an upload of every file's metadata, and the master a
#: decode and a comparison. A Wazuh worker never announces it and is asked nothing new.
PUSH_DIRECT_CAPABILITY = "push_direct"
#: The capability one of our workers announces to take a push while it still applies the
#: previous one: it applies pushes one at a time, in the order their containers arrived.
#: Files that changed while a push was being sent then go in a push of their own right
#: after it, compared with what the worker will have once the pushes sent are applied,
#: instead of a ``wzc_syncnow``, a scan and an upload of every file's metadata by the
#: worker once it has applied the first push, and a comparison here. So does a burst of
#: changes still being written, to an idle worker (:meth:`IntegrityMaster._push_difference`).
PUSH_QUEUE_CAPABILITY = "push_queue"
#: What the master logs when it pushes the difference from what such a worker will have.
CHANGES_DURING_PUSH_PUSHED = ("[{tag}] [Integrity sync] Files changed during the last push; "
                              "pushing them at once.")
BURST_PUSHED = "[{tag}] [Integrity sync] Files changed; pushing what differs from its files."
#: A direct push of at most this many files and deletions is started even when every task
#: slot is taken: its container is a few small records, so many of them at once cannot
#: starve the master the way many full containers would (the reason for the slots).
SMALL_DIRECT_PUSH = 16
#: ... and of at most this many bytes of files: one changed client.keys of 200 000 agents
#: (17 MB) pushed at once to 100 idle workers held the master's reactor for seconds and
#: its memory near 500 MB on the scale bed; a bigger push takes a task slot like a check.
SMALL_DIRECT_PUSH_BYTES = 1 << 20
#: The record cache's directory under queue/cluster ('@' is not allowed in a node name, so no
#: worker's directory can be called that).
RECORD_CACHE_DIR = "@records"
Responder = Callable[[bytes], Coroutine[Any, Any, Reply]]


@attrs.define(eq=False)
class WorkerIntegrity:
    """Integrity state of one worker connection (dies with it)."""

    session: WorkerSession
    commands: MasterCommands
    zip_limit: int
    lock: str | None = None  # id of the task holding the lock
    lock_since: float = 0.0
    tasks: dict[str, Deferred[str]] = attrs.Factory(dict)  # task -> claimed container path
    push_task: str | None = None  # the worker's task id of the push in progress
    nudge_pending: bool = False  # content changed while locked: send sync_now on release
    rounds: int = 0
    failures: int = 0  # integrity tasks failed in a row
    retry_after: float = 0.0  # no permission before this time (backoff after failures)
    granted_at: float | None = None  # permission granted, syn_i_w_m not received yet
    called_at: float | None = None  # a slot is kept for it: called in from the line
    asked_at: float | None = None  # sync_now sent, no permission asked since
    #: what the worker will have once every push sent to it is applied (its last check's
    #: upload, updated by each push since); None when unknown (no check yet, a push failed)
    assumed: dict[str, FileEntry] | None = None


class WorkerReportedError(RemoteCommandError):
    """An error the worker reported itself (``syn_i_w_m_r``): it needs no ``syn_m_c_r``."""


@attrs.frozen
class LocalScan:
    """The outcome of one "Local integrity" run, computed off the reactor."""

    result: ScanResult
    digests: dict[str, tuple[str, str]]
    changed: bool
    #: what changed since the previous result (for a direct push), or None if unknown
    delta: Comparison | None = None


def _delta(items: ClusterItems, before: ScanResult | None, after: ScanResult,
           previous: dict[str, tuple[str, str]] | None,
           digests: dict[str, tuple[str, str]],
           paths: frozenset[str] | None = None) -> Comparison | None:
    """The files of ``after`` whose digest or item differs from ``before`` (``missing``
    when new, ``shared`` when changed) and the files ``before`` had and ``after`` has not
    (``extra``, unless their item keeps worker-only files). ``paths`` limits the look to
    those paths (the named files of a rescan)."""
    if before is None or previous is None:
        return None
    if paths is None:
        paths = frozenset(previous.keys() | digests.keys())
    missing: dict[str, FileEntry] = {}
    shared: dict[str, FileEntry] = {}
    extra: dict[str, FileEntry] = {}
    for path in paths:
        old, new = previous.get(path), digests.get(path)
        if old == new:
            continue
        if new is not None:
            (missing if old is None else shared)[path] = after.files[path]
            continue
        entry = before.files.get(path)
        item = None if entry is None else items.get(entry.cluster_item_key)
        if entry is not None and item is not None and not item.extra_valid:
            extra[path] = entry
    return Comparison(missing=missing, extra=extra, shared=shared)


def _scan(home: str, items: ClusterItems, previous: dict[str, tuple[str, str]] | None,
          cache: dict[str, CachedDigest], local: ScanResult | None = None,
          paths: frozenset[bytes] | None = None) -> LocalScan:
    """Scan the items (reusing digests) and tell whether any content changed.

    With ``local`` and ``paths`` (files the watcher saw change), only those files are
    looked at (:func:`rescan_paths`), unless one of them needs the full scan.
    """
    result = None
    if local is not None and paths is not None:
        result = rescan_paths(home, items, local, paths)
        if result is not None and result.touched is not None and previous is not None:
            # Only the named files can differ from ``local`` (whose digests ``previous``
            # holds): update a copy instead of rebuilding 10 000 entries per event burst.
            digests = dict(previous)
            for path in result.touched:
                entry = result.files.get(path)
                if entry is None:
                    digests.pop(path, None)
                else:
                    digests[path] = (entry.hash, entry.cluster_item_key)
            changed = any(digests.get(path) != previous.get(path) for path in result.touched)
            delta = _delta(items, local, result, previous, digests,
                           frozenset(result.touched)) if changed else None
            return LocalScan(result, digests, changed, delta)
    if result is None:
        result = scan_items(home, items, cache)
    digests = {path: (entry.hash, entry.cluster_item_key) for path, entry in result.files.items()}
    changed = digests != previous
    delta = _delta(items, local, result, previous, digests) if changed else None
    return LocalScan(result, digests, changed, delta)


class _DiscardRecords:
    """Record sink that ignores file records (a worker's upload carries metadata only)."""

    def begin(self, name: str) -> bool:
        """Discard the record."""
        return False

    def write(self, data: bytes) -> None:
        """Not called for discarded records."""

    def end(self) -> None:
        """Nothing to do."""


def read_worker_metadata(path: str, limits: ContainerLimits) -> dict[str, FileEntry]:
    """Decode a worker's integrity-check container and delete it (blocking)."""
    try:
        with open(path, "rb") as stream:
            raw = decode_container(stream, _DiscardRecords(), limits)
    finally:
        unlink_quietly(path)
    try:
        value = jsonpieces.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as e:
        raise ClusterError(3036, f"worker files_metadata.json: {e}") from None
    return metadata_from_json(value)


def compare_for_worker(master: dict[str, FileEntry], worker: dict[str, FileEntry],
                       items: ClusterItems) -> tuple[Comparison, list[str]]:
    """Classify the worker's files; drop (and return) worker-only paths we would refuse."""
    comparison = compare_metadata(master, worker, items)
    refused = []
    extra = {}
    for path, entry in comparison.extra.items():
        try:
            validate_peer_path(path, items)
        except UnsafePathError:
            refused.append(path)
            continue
        extra[path] = entry
    if refused:
        comparison = Comparison(missing=comparison.missing, extra=extra,
                                shared=comparison.shared)
    return comparison, refused


def write_push(path: str, home: str, comparison: Comparison, max_size: int,
               compress_level: int, growing: GrowingFile | None = None,
               cache: RecordCache | None = None) -> SyncContainer:
    """Write the push container for one worker at ``path`` (blocking).

    With ``growing``, report the final part of the file as it grows (see
    :func:`~wazuhcluster.protocol.transfers.send_file`) and stop early once the sender
    has abandoned it. ``cache`` holds the records of big files already compressed for
    other workers.
    """
    with open(path, "w+b") as dest:
        container = write_sync_container(
            dest, home, comparison, max_size=max_size, compress_level=compress_level,
            progress=None if growing is None else growing.advance,
            stop=None if growing is None else (lambda: growing.abandoned), cache=cache)
        if growing is not None:
            growing.finish(dest.tell())
        return container


def after_push(base: dict[str, FileEntry], pushed: Comparison) -> dict[str, FileEntry]:
    """What a worker that had ``base`` has once it applied a push of ``pushed`` (the
    container's metadata: the files it holds, the deletions)."""
    after = dict(base)
    after.update(pushed.missing)
    after.update(pushed.shared)
    for path in pushed.extra:
        after.pop(path, None)
    return after


def create_empty(path: str) -> None:
    """Create (or empty) the file at ``path`` (and its directory, made on first use)."""
    os.makedirs(os.path.dirname(path), mode=0o770, exist_ok=True)
    with open(path, "wb"):
        pass


def unlink_quietly(path: str) -> None:
    """Delete a file; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@implementer(IPeer)
class _CountingPeer:
    """Wraps a peer to count the file bytes sent with ``file_upd`` (for the zip limit)."""

    def __init__(self, peer: IPeer, relpath: bytes) -> None:
        self._peer = peer
        self._prefix = len(relpath) + 1
        self.peer_address = peer.peer_address
        self.sent = 0

    @property
    def last_received(self) -> float:
        """Forwarded."""
        return float(self._peer.last_received)

    @property
    def bytes_received(self) -> int:
        """Forwarded."""
        return int(self._peer.bytes_received)

    def request(self, command: bytes, payload: bytes,
                timeout: float | None = None) -> Deferred[bytes]:
        """Forward a request, counting file content."""
        if command == FILE_UPD:
            self.sent += len(payload) - self._prefix
        return self._peer.request(command, payload, timeout)

    def notify(self, command: bytes, payload: bytes) -> Deferred[None]:
        """Forward."""
        return self._peer.notify(command, payload)

    def delivering(self, within: float) -> bool:
        """Forwarded."""
        return bool(self._peer.delivering(within))

    def set_limits(self, max_frame_payload: int | None = None,
                   max_message: int | None = None) -> None:
        """Forward."""
        self._peer.set_limits(max_frame_payload, max_message)

    def disconnect(self, reason: str) -> None:
        """Forward."""
        self._peer.disconnect(reason)


def error_wire(error: BaseException) -> bytes:
    """The JSON exception object sent in ``…_r`` and ``cancel_task`` payloads."""
    if isinstance(error, ClusterError):
        return error.to_wire()
    return InternalError(str(error)).to_wire()


def _fire(waiter: Deferred[str], value: str | Failure) -> None:
    """Fire ``waiter`` unless it already fired (timed out meanwhile)."""
    if waiter.called:
        return
    if isinstance(value, Failure):
        waiter.errback(value)
    else:
        waiter.callback(value)


@implementer(IMasterExtension)
class IntegrityMaster:
    """The master's integrity feature.

    :param node: the master node (config, registry, ``run``).
    :param clock: the reactor's time.
    """

    _log = Logger()

    def __init__(self, node: MasterNode, clock: IReactorTime) -> None:
        self._node = node
        self._clock = clock
        self._config = node.config
        self.items = parse_cluster_items(node.config.files)
        self.local: ScanResult | None = None
        self.generation = 0
        self._digests: dict[str, tuple[str, str]] | None = None
        self._checked: set[WorkerSession] = set()
        self._workers: dict[WorkerSession, WorkerIntegrity] = {}
        #: workers refused for lack of a free task slot, in the order they asked
        self._waiting: dict[WorkerSession, None] = {}
        self.recalculation = Coalescer(self._recalculate, "[Master] [Local integrity]")
        # Files the watcher saw change since the last recomputation started. The next
        # recomputation looks at these only, unless ``_full`` is set (timer, directory
        # events, lost events) or nothing was named (any other request): the whole tree.
        self._changed: set[bytes] = set()
        self._full = True
        self.watcher: IntegrityWatcher | None = None  # set by install() when inotify works
        intervals = node.config.intervals
        self._limits = ContainerLimits.for_zip_size(intervals.max_zip_size)
        #: records of big files compressed once for every worker (created on first use)
        self.records = RecordCache(os.path.join(node.config.home, "queue", "cluster",
                                                RECORD_CACHE_DIR))

    # -- IMasterExtension ---------------------------------------------------------------------
    def master_responders(self, commands: MasterCommands) -> dict[bytes, Responder]:
        """The integrity responders of one worker connection."""
        return {
            SYN_I_W_M_P: functools.partial(self._permission, commands),
            SYN_I_W_M: functools.partial(self._start_check, commands),
            SYN_I_W_M_E: functools.partial(self._check_file_ready, commands),
            SYN_I_W_M_R: functools.partial(self._check_error, commands),
        }

    def worker_lost(self, session: WorkerSession) -> None:
        """Drop the worker's lock and fail its waiting tasks."""
        self._checked.discard(session)
        self._waiting.pop(session, None)
        state = self._workers.pop(session, None)
        if state is None:
            return
        tasks, state.tasks = state.tasks, {}
        for waiter in tasks.values():
            _fire(waiter, Failure(ClusterError(3018, "worker disconnected")))
        state.lock = None
        state.granted_at = None
        self._admit_waiting()

    def health_status(self, session: WorkerSession) -> dict[str, Any]:
        """``sync_integrity_free`` is live: the lock of the worker's integrity task."""
        state = self._workers.get(session)
        return {"sync_integrity_free": state is None or state.lock is None}

    def state_of(self, session: WorkerSession) -> WorkerIntegrity | None:
        """The integrity state of a connected worker (tests and diagnostics)."""
        return self._workers.get(session)

    # -- Local integrity ------------------------------------------------------------------------
    async def tick(self) -> None:
        """TimerService tick: recompute the local metadata (never raises)."""
        with self._log.failuresHandled("[Master] [Local integrity] Tick failed"):
            self._full = True  # the timer always scans the whole tree
            await self.recalculation.request()

    def files_changed(self, paths: set[bytes] | None) -> Deferred[None]:
        """The watcher saw ``paths`` change (None: it cannot tell which): recompute.

        The recomputation that starts next looks at these files only (unless something
        asked for a full scan meanwhile); changes seen while one runs are kept for the
        one after it, so the last change is never missed.
        """
        if paths is None:
            self._full = True
        else:
            self._changed |= paths
        return self.recalculation.request()

    async def _recalculate(self) -> None:
        with self._log.failuresHandled("[Master] [Local integrity] Error calculating local "
                                       "file integrity"):
            started = self._clock.seconds()
            self._log.debug("[Master] [Local integrity] Starting.")
            cache = self.local.cache if self.local is not None else {}
            # Taken on the reactor thread before the scan starts: a change reported from
            # now on belongs to the next recomputation.
            changed, full = self._changed, self._full
            self._changed, self._full = set(), False
            paths = None if full or not changed or self.local is None else frozenset(changed)
            try:
                scan: LocalScan = await self._node.run(_scan, self._config.home, self.items,
                                                       self._digests, cache, self.local, paths)
            except BaseException:
                self._full = True  # what this run was to look at: the next one scans all
                raise
            self.local = scan.result
            self._digests = scan.digests
            self._checked.clear()
            for skipped in scan.result.skipped[:20]:
                self._log.debug("[Master] [Local integrity] Skipped {path}: {reason}",
                                path=skipped.path, reason=skipped.reason)
            self._log.info("[Master] [Local integrity] Finished in {seconds:.3f}s. Calculated "
                           "metadata of {count} files.", seconds=self._clock.seconds() - started,
                           count=len(scan.result.files), hashed=scan.result.hashed)
            if scan.changed:
                self.generation += 1
                self._announce(scan.delta)

    def _announce(self, delta: Comparison | None = None) -> None:
        """Tell every capable worker to check now (or as soon as its lock is released);
        a worker that takes direct pushes gets ``delta`` pushed instead, unless more
        changes are on their way (a burst still being written: the watcher or another
        recomputation pending), when one check that waits for the next recomputation
        gathers more of them than a direct push of this one's would."""
        if self.recalculation.pending or (self.watcher is not None and self.watcher.pending):
            delta = None
        for session in self._node.registry:
            if SYNC_NOW_CAPABILITY not in session.capabilities:
                continue
            state = self._workers.get(session)
            if state is not None and state.lock is not None:
                state.nudge_pending = True
                continue
            if (delta is not None and state is not None
                    and PUSH_DIRECT_CAPABILITY in session.capabilities
                    and self._direct_push(state, delta)):
                continue
            if delta is None and state is not None and self._push_difference(state):
                continue
            self._sync_now(session)

    def _idle(self, state: WorkerIntegrity) -> bool:
        """True if the master may start a push of its own to this worker: no lock, not
        in line, not asked to check and not come yet (its check would wait behind each
        new push), no permission just granted, no call-in from the line, no back-off."""
        now = self._clock.seconds()
        grace = self._config.intervals.timeout_cluster_request
        return not (state.lock is not None or state.session in self._waiting
                    or (state.asked_at is not None and now - state.asked_at < grace)
                    or (state.granted_at is not None and now - state.granted_at < grace)
                    or (state.called_at is not None and now - state.called_at < grace)
                    or now < state.retry_after)

    def _push_difference(self, state: WorkerIntegrity) -> bool:
        """A burst still being written, to an idle worker that takes queued pushes and
        whose files the master knows (``assumed``): start a push of what differs, after
        the burst's next recomputation (:meth:`_chain_task`), instead of asking for a
        check. False (the caller asks for a check) if any of that does not hold or no
        task slot is free."""
        if (PUSH_QUEUE_CAPABILITY not in state.session.capabilities
                or state.assumed is None or self.local is None or not self._idle(state)
                or self.busy_tasks() >= self._config.ext.max_concurrent_integrity_tasks):
            return False
        self._chain(state, BURST_PUSHED)
        return True

    def _direct_push(self, state: WorkerIntegrity, delta: Comparison) -> bool:
        """Push ``delta`` to an idle worker without a check first; False if it is not
        :meth:`_idle` or no slot is free for a bigger push: the caller then asks it to
        check, as for any worker."""
        now = self._clock.seconds()
        if not self._idle(state):
            return False
        if (not self._small_push(delta)
                and self.busy_tasks() >= self._config.ext.max_concurrent_integrity_tasks):
            return False
        task_id = str(uuid.uuid4())
        state.lock = task_id
        state.lock_since = now
        state.granted_at = None
        self._log.debug("[{tag}] [Integrity sync] Files changed; pushing them directly.",
                        tag=state.commands.tag)
        d = Deferred.fromCoroutine(self._direct_task(state, task_id, delta))
        d.addCallbacks(self._integrity_succeeded, self._integrity_failed,
                       callbackArgs=(state,), errbackArgs=(state,))
        return True

    def _small_push(self, delta: Comparison) -> bool:
        """True if ``delta`` is few files and few bytes (sizes from the master's last
        scan; a file it does not know counts as big)."""
        if len(delta.missing) + len(delta.shared) + len(delta.extra) > SMALL_DIRECT_PUSH:
            return False
        cache = self.local.cache if self.local is not None else {}
        total = 0
        for relative in (*delta.missing, *delta.shared):
            known = cache.get(relative)
            if known is None:
                return False
            total += known.size
            if total > SMALL_DIRECT_PUSH_BYTES:
                return False
        return True

    async def _direct_task(self, state: WorkerIntegrity, task_id: str,
                           delta: Comparison) -> None:
        try:
            state.rounds += 1
            await self._push(state, delta, base=state.assumed)
        finally:
            self._release(state, task_id)

    def _chain(self, state: WorkerIntegrity, reason: str = CHANGES_DURING_PUSH_PUSHED) -> None:
        """Push what differs from what the worker will have (see
        :data:`PUSH_QUEUE_CAPABILITY`): what changed during the push just sent, or a
        burst (:meth:`_push_difference`). ``reason`` (a log format with ``{tag}``) is
        logged if there is a push."""
        task_id = str(uuid.uuid4())
        state.lock = task_id
        state.lock_since = self._clock.seconds()
        state.granted_at = None
        d = Deferred.fromCoroutine(self._chain_task(state, task_id, reason))
        d.addCallbacks(self._integrity_succeeded, self._integrity_failed,
                       callbackArgs=(state,), errbackArgs=(state,))

    async def _chain_task(self, state: WorkerIntegrity, task_id: str, reason: str) -> None:
        try:
            await self._fresh_local_integrity()
            local, base = self.local, state.assumed
            if local is None or base is None:  # pragma: no cover - checked by the caller
                state.nudge_pending = True  # ask for a check instead, on release
                return
            comparison, _ = await self._node.run(compare_for_worker, local.files, base,
                                                 self.items)
            if comparison.is_empty:
                return
            state.rounds += 1
            self._log.debug(reason, tag=state.commands.tag)
            await self._push(state, comparison, base=base)
        finally:
            self._release(state, task_id)

    def _sync_now(self, session: WorkerSession) -> None:
        state = self._workers.get(session)
        if state is not None:
            state.asked_at = self._clock.seconds()
        self._log.debug("[Worker {worker}] [Integrity check] Files changed; asking the worker "
                        "to check now.", worker=session.name)
        d = session.peer.request(SYNC_NOW, b"")
        d.addErrback(self._sync_now_failed, session)

    def _sync_now_failed(self, failure: Failure, session: WorkerSession) -> None:
        self._log.debug("[Worker {worker}] [Integrity check] Could not send sync_now: {error}",
                        worker=session.name, error=failure.getErrorMessage())

    # -- responders ------------------------------------------------------------------------------
    def _state(self, commands: MasterCommands) -> WorkerIntegrity:
        session = commands.session
        if session is None:
            raise ClusterError(3000, "send hello first")
        state = self._workers.get(session)
        if state is None:
            state = WorkerIntegrity(session, commands,
                                    zip_limit=self._config.intervals.max_zip_size)
            self._workers[session] = state
        return state

    async def _permission(self, commands: MasterCommands, payload: bytes) -> Reply:
        """``syn_i_w_m_p``: True once per recomputation cycle, and only if unlocked."""
        state = self._state(commands)
        now = self._clock.seconds()
        state.asked_at = None
        limit = self._config.intervals.max_locked_integrity_time
        if state.lock is not None and now - state.lock_since > limit:
            self._log.warn("[{tag}] [Integrity check] Integrity lock held for more than {limit}"
                           " s; releasing it.", tag=commands.tag, limit=limit)
            stale = state.tasks.pop(state.lock, None)
            if stale is not None:
                _fire(stale, Failure(ClusterError(3039, "integrity lock expired")))
            state.lock = None
            state.retry_after = 0.0  # an expired lock is answered at once, as Wazuh does
        self._admit_waiting()  # slots freed by expiry are handed out in order first
        granted = (self.local is not None and state.session not in self._checked
                   and state.lock is None and now >= state.retry_after)
        called, state.called_at = state.called_at is not None, None
        if granted and not called and (
                self._waiting
                or self.busy_tasks() >= self._config.ext.max_concurrent_integrity_tasks):
            # no free slot, or others wait in line first: not "checked" in this cycle; the
            # worker waits in line (a slot freed while it is called in is kept for it)
            granted = False
            self._waiting[state.session] = None
            self._log.debug("[{tag}] [Integrity check] {busy} integrity tasks running; the "
                            "worker waits for a free slot.", tag=commands.tag,
                            busy=self.busy_tasks())
        else:
            self._checked.add(state.session)
        if granted:
            state.granted_at = now
            self._waiting.pop(state.session, None)
        self._log.debug("[{tag}] [Integrity check] Permission to synchronize: {granted}",
                        tag=commands.tag, granted=granted)
        return Reply.ok(b"True" if granted else b"False")

    async def _start_check(self, commands: MasterCommands, payload: bytes) -> Reply:
        """``syn_i_w_m``: take the lock and start a task waiting for the metadata upload."""
        state = self._state(commands)
        if state.lock is not None:
            raise ClusterError(3000, "an integrity check of this worker is already running")
        task_id = str(uuid.uuid4())
        now = self._clock.seconds()
        state.granted_at = None
        state.lock = task_id
        state.lock_since = now
        waiter: Deferred[str] = Deferred()
        state.tasks[task_id] = waiter
        state.session.status["last_check_integrity"] = {"date_start_master": now,
                                                        "date_end_master": 0.0}
        self._log.info("[{tag}] [Integrity check] Starting.", tag=commands.tag)
        d = Deferred.fromCoroutine(self._integrity_task(state, task_id, waiter, now))
        d.addCallbacks(self._integrity_succeeded, self._integrity_failed,
                       callbackArgs=(state,), errbackArgs=(state,))
        return Reply.ok(task_id.encode())

    async def _check_file_ready(self, commands: MasterCommands, payload: bytes) -> Reply:
        """``syn_i_w_m_e <task> <relpath>``: hand a completely received upload to its task."""
        state = self._state(commands)
        raw_task, raw_path = messages.split_id(payload)
        task_id = raw_task.decode("ascii", "replace")
        waiter = state.tasks.pop(task_id, None)
        if waiter is None:
            # As Wazuh: the named file goes (but only one this connection received).
            with contextlib.suppress(ClusterError):
                unlink_later = commands.files.claim(raw_path.decode("utf-8", "replace"))
                await self._node.run(unlink_quietly, unlink_later)
            raise ClusterError(3027, peer_text(task_id, 64))
        try:
            path = commands.files.claim(raw_path.decode("utf-8", "replace"))
        except ClusterError as e:
            self._clock.callLater(0, _fire, waiter, Failure(e))
            raise
        # Fire after this reply is on its way, as the reference does.
        self._clock.callLater(0, _fire, waiter, path)
        return Reply.ok(b"File correctly received")

    async def _check_error(self, commands: MasterCommands, payload: bytes) -> Reply:
        """``syn_i_w_m_r <task|None> <error>``: the worker failed; end its task."""
        state = self._state(commands)
        raw_task, raw_error = messages.split_id(payload)
        error = WorkerReportedError.from_payload(raw_error)
        self._log.error("[{tag}] [Integrity sync] Error reported by the worker: {error}",
                        tag=commands.tag, error=str(error))
        waiter = state.tasks.pop(raw_task.decode("ascii", "replace"), None)
        if waiter is None and state.lock is not None:
            # "None" or an unknown task: Wazuh releases the integrity lock; so do we, by
            # failing the task that holds it (its error path frees the lock).
            waiter = state.tasks.pop(state.lock, None)
        if waiter is not None:
            _fire(waiter, Failure(error))
        return Reply.ok(b"Error received")

    # -- the integrity task ----------------
    async def _integrity_task(self, state: WorkerIntegrity, task_id: str,
                              waiter: Deferred[str], started: float) -> None:
        """Wait for the upload, compare, then answer ``syn_m_c_ok`` or push."""
        commands = state.commands
        peer = state.session.peer
        intervals = self._config.intervals
        try:
            try:
                path = await waiter.addTimeout(intervals.timeout_receiving_file, self._clock)
            except defer.TimeoutError:
                state.tasks.pop(task_id, None)
                error = ClusterError(3039, f"integrity check of {state.session.name}")
                cancel = peer.request(CANCEL_TASK, task_id.encode() + b" " + error.to_wire())
                cancel.addErrback(lambda _: None)
                raise error from None
            worker_files = await self._node.run(read_worker_metadata, path, self._limits)
            await self._fresh_local_integrity()
            local = self.local
            if local is None:
                raise ClusterError(3000, "local integrity not calculated yet")
            state.nudge_pending = False  # this comparison uses the newest metadata
            comparison, refused = await self._node.run(compare_for_worker, local.files,
                                                       worker_files, self.items)
            for path in refused[:20]:
                self._log.warn("[{tag}] [Integrity check] Ignoring unsafe worker path "
                               "{path!r}", tag=commands.tag, path=path)
            now = self._clock.seconds()
            state.session.status["last_check_integrity"] = {"date_start_master": started,
                                                            "date_end_master": now}
            state.rounds += 1
            _events(self._node).sync_done(state.session.name, "integrity_check", started, now,
                                          True, {})
            if comparison.is_empty:
                self._log.info("[{tag}] [Integrity check] Finished in {seconds:.3f}s. Sync not "
                               "required.", tag=commands.tag, seconds=now - started)
                state.assumed = worker_files
                await peer.request(SYN_M_C_OK, b"")
                return
            self._log.info("[{tag}] [Integrity check] Finished in {seconds:.3f}s. Sync "
                           "required.", tag=commands.tag, seconds=now - started)
            await self._push(state, comparison, base=worker_files)
        finally:
            self._release(state, task_id)

    async def _fresh_local_integrity(self) -> None:
        """Wait (at most FRESH_SCAN_WAIT s) for a recomputation the watcher is about to run.

        While files are still being written, a check that arrives just before the
        watcher's recomputation would be answered from a scan that is already stale, and
        the files found a moment later would need a whole extra round (check, push,
        apply) after this one.
        """
        deadline = self._clock.seconds() + FRESH_SCAN_WAIT
        while self._clock.seconds() < deadline and (
                self.recalculation.running or self.recalculation.pending
                or (self.watcher is not None and self.watcher.pending)):
            await task.deferLater(self._clock, FRESH_SCAN_POLL, lambda: None)

    async def _push(self, state: WorkerIntegrity, comparison: Comparison,
                    base: dict[str, FileEntry] | None = None) -> None:
        """Build the container within the zip limit, send it, and adapt the limit.

        ``base`` is what the worker has before this push (None: unknown); once the push is
        sent, ``state.assumed`` is what it will have after it."""
        state.assumed = None  # until this push has been sent whole
        commands = state.commands
        session = state.session
        peer = session.peer
        intervals = self._config.intervals
        started = self._clock.seconds()
        self._log.info("[{tag}] [Integrity sync] Starting.", tag=commands.tag)
        self._log.info("[{tag}] [Integrity sync] Files to create in worker: {missing} | Files to "
                       "update in worker: {shared} | Files to delete in worker: {extra}",
                       tag=commands.tag, missing=len(comparison.missing),
                       shared=len(comparison.shared), extra=len(comparison.extra))
        previous_end = session.status["last_sync_integrity"].get("date_end_master", 0.0)
        session.status["last_sync_integrity"] = {
            "date_start_master": started, "date_end_master": previous_end,
            "total_extra_valid": 0,
            "total_files": {"missing": len(comparison.missing), "shared": len(comparison.shared),
                            "extra": len(comparison.extra)}}
        name = f"{session.name}-{started}-{uuid.uuid4().hex}.zip"
        local_path = os.path.join(self._config.home, "queue", "cluster", session.name, name)
        relpath = f"/queue/cluster/{session.name}/{name}"
        # The container is sent while it is being written: the writer (on the pool)
        # reports how far its bytes are final and send_file reads up to there.
        growing = GrowingFile()
        write_failed = False

        def writer_failed(failure: Failure) -> Failure:
            nonlocal write_failed
            write_failed = True
            return failure

        await self._node.run(create_empty, local_path)
        writing: Deferred[SyncContainer] = self._node.run(
            write_push, local_path, self._config.home, comparison, state.zip_limit,
            intervals.compress_level, growing, self.records)
        writing.addErrback(writer_failed)
        try:
            worker_task = (await peer.request(SYN_M_C, b"")).decode("ascii", "replace")
            state.push_task = worker_task
            counting = _CountingPeer(peer, relpath.encode())
            cancelled = commands.common.cancelled_tasks
            sending = self._clock.seconds()
            await send_file(counting, local_path, relpath.encode(), self._node.run,
                            is_cancelled=lambda: worker_task in cancelled or write_failed,
                            growing=growing, clock=self._clock, chunk_size=PUSH_CHUNK)
            container: SyncContainer = await writing
            self._log.debug("[{tag}] [Integrity sync] Container of {count} files ({size} bytes) "
                            "written and sent in {seconds:.3f}s.", tag=commands.tag,
                            count=len(container.included), size=container.size,
                            seconds=self._clock.seconds() - sending)
            self._report_container(commands.tag, container, state.zip_limit)
            if container.deferred:
                state.nudge_pending = True  # the rest goes in the next round, at once
            was_cancelled = worker_task in cancelled
            cancelled.discard(worker_task)
            self._adapt_limit(state, was_cancelled, counting.sent,
                              self._clock.seconds() - sending)
            if was_cancelled:
                state.push_task = None
                return
            await peer.request(SYN_M_C_E, f"{worker_task} {relpath[1:]}".encode())
            state.push_task = None
            if base is not None:  # a copy of the worker's file list: off the reactor
                state.assumed = await self._node.run(after_push, base, container.comparison)
        finally:
            growing.abandoned = True  # a writer still running stops at the next file
            writing.addErrback(lambda _: None)
            if not writing.called:
                await writing
            await self._node.run(unlink_quietly, local_path)
        now = self._clock.seconds()
        session.status["last_sync_integrity"]["date_end_master"] = now
        _events(self._node).sync_done(
            session.name, "integrity_sync", started, now, True,
            {"created": len(comparison.missing), "updated": len(comparison.shared),
             "deleted": len(comparison.extra), "bytes": counting.sent})
        self._log.info("[{tag}] [Integrity sync] Finished in {seconds:.3f}s.", tag=commands.tag,
                       seconds=now - started)

    def _report_container(self, tag: str, container: SyncContainer, limit: int) -> None:
        if container.deferred:
            self._log.info("[{tag}] [Integrity sync] Zip limit of {limit} bytes reached: "
                           "{count} files will be sent in the next rounds.", tag=tag,
                           limit=limit, count=len(container.deferred))
        for path in container.too_large:
            self._log.warn("[{tag}] [Integrity sync] File too large to be synced: {path}",
                           tag=tag, path=path)
        for path in (*container.unreadable, *container.unencodable):
            self._log.warn("[{tag}] [Integrity sync] File could not be added to the "
                           "container: {path}", tag=tag, path=path)

    def _adapt_limit(self, state: WorkerIntegrity, cancelled: bool, sent: int,
                     elapsed: float) -> None:
        """Wazuh's adaptive zip limit."""
        intervals = self._config.intervals
        tolerance = intervals.zip_limit_tolerance
        if cancelled:
            state.zip_limit = max(intervals.min_zip_size, int(sent * (1 - tolerance)))
            self._log.warn("[{tag}] [Integrity sync] The worker cancelled the transfer; zip "
                           "limit lowered to {limit} bytes.", tag=state.commands.tag,
                           limit=state.zip_limit)
        elif (state.zip_limit < intervals.max_zip_size
              and elapsed < intervals.timeout_receiving_file * (1 - tolerance)):
            state.zip_limit = min(intervals.max_zip_size, int(state.zip_limit / (1 - tolerance)))
            self._log.debug("[{tag}] [Integrity sync] Zip limit raised to {limit} bytes.",
                            tag=state.commands.tag, limit=state.zip_limit)

    def busy_tasks(self) -> int:
        """Integrity tasks running, or granted and about to start (a grant not followed by
        ``syn_i_w_m`` within timeout_cluster_request no longer counts, nor does a slot kept
        for a worker called in from the line that did not ask within that time)."""
        now = self._clock.seconds()
        grace = self._config.intervals.timeout_cluster_request
        return sum(1 for state in self._workers.values()
                   if state.lock is not None
                   or (state.granted_at is not None and now - state.granted_at < grace)
                   or (state.called_at is not None and now - state.called_at < grace))

    def _admit_waiting(self) -> None:
        """Send sync_now to the workers first in line, while task slots are free."""
        free = self._config.ext.max_concurrent_integrity_tasks - self.busy_tasks()
        for session in list(self._waiting):
            if free <= 0:
                break
            del self._waiting[session]
            state = self._workers.get(session)
            if (state is None or state.lock is not None
                    or SYNC_NOW_CAPABILITY not in session.capabilities):
                continue  # gone, busy, or a Wazuh worker that asks again at its tick
            self._checked.discard(session)
            state.called_at = self._clock.seconds()
            self._sync_now(session)
            free -= 1

    def _release(self, state: WorkerIntegrity, task_id: str) -> None:
        """Free the lock held by ``task_id``; send a pending sync_now, then let the next
        workers in line in."""
        state.tasks.pop(task_id, None)
        if state.lock != task_id:
            return
        state.lock = None
        if (state.nudge_pending and self._workers.get(state.session) is state
                and SYNC_NOW_CAPABILITY in state.session.capabilities):
            state.nudge_pending = False
            self._checked.discard(state.session)
            if self.busy_tasks() >= self._config.ext.max_concurrent_integrity_tasks:
                self._waiting[state.session] = None
            elif (PUSH_QUEUE_CAPABILITY in state.session.capabilities
                    and state.assumed is not None and self.local is not None):
                self._chain(state)
            else:
                self._sync_now(state.session)
        self._admit_waiting()

    def _integrity_succeeded(self, ignored: None, state: WorkerIntegrity) -> None:
        state.failures = 0
        state.retry_after = 0.0

    def _integrity_failed(self, failure: Failure, state: WorkerIntegrity) -> None:
        """A task failed: log it, tell the worker with ``syn_m_c_r`` (unless it reported the
        error itself) and back off: after n failures in a row the next check is allowed
        only after min(sync_retry_initial_delay * 2**(n-1), sync_retry_max_delay) s."""
        tag = state.commands.tag
        if is_connection_closed(failure) or self._workers.get(state.session) is not state:
            self._log.debug("[{tag}] [Integrity sync] Stopped: {error}", tag=tag,
                            error=failure.getErrorMessage())
            return
        ext = self._config.ext
        state.failures += 1
        started = state.session.status["last_check_integrity"].get("date_start_master", 0.0)
        _events(self._node).sync_done(state.session.name, "integrity_sync",
                                      started or self._clock.seconds(), self._clock.seconds(),
                                      False, {})
        delay = min(ext.sync_retry_initial_delay * 2 ** min(state.failures - 1, 30),
                    ext.sync_retry_max_delay)
        state.retry_after = self._clock.seconds() + delay
        if failure.check(ClusterError, IntegrityError, OSError):
            self._log.error("[{tag}] [Integrity sync] Error: {error}. Failed {count} time(s) in"
                            " a row; next attempt in {delay:.0f} s at the earliest.", tag=tag,
                            error=failure.getErrorMessage(), count=state.failures,
                            delay=delay)
        else:
            self._log.failure("[{tag}] [Integrity sync] Unexpected error", failure, tag=tag)
        task = state.push_task or "None"
        state.push_task = None
        if failure.check(WorkerReportedError):
            return  # the worker reported it (syn_i_w_m_r): nothing to tell it
        d = state.session.peer.request(SYN_M_C_R, task.encode() + b" "
                                       + error_wire(failure.value or Exception("sync failed")))
        d.addErrback(lambda f: self._log.debug("[{tag}] [Integrity sync] Could not send "
                                               "syn_m_c_r: {error}", tag=tag,
                                               error=f.getErrorMessage()))


def _events(node: Any) -> Any:
    """The node's IClusterEvents (a fan-out with no observers on bare test nodes)."""
    events = getattr(node, "events", None)
    if events is None:
        from wazuhcluster.events import EventFanout
        events = node.events = EventFanout()
    return events


# -- file-system watcher ------------------
def item_directories(home: str, items: ClusterItems) -> list[str]:
    """Every existing directory to watch: item roots and, for recursive items, subdirs."""
    found: list[str] = []
    for item in items.items:
        root = os.path.join(home, item.key) if item.key else home
        if os.path.islink(root.rstrip("/")) or not os.path.isdir(root):
            continue
        if not item.recursive:
            found.append(root)
            continue
        for directory, subdirs, _ in os.walk(root):
            found.append(directory)
            subdirs[:] = [d for d in subdirs
                          if not os.path.islink(os.path.join(directory, d))]
    return sorted(set(found))


#: Events after which a file is complete: recompute almost at once.
SETTLED_EVENTS = (inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
                  | inotify.IN_DELETE | inotify.IN_ATTRIB)
#: Events after which the watcher cannot name the changed files: the next recomputation
#: scans the whole tree (a directory moved or deleted, a watch gone, lost events)...
TREE_EVENTS = (inotify.IN_ISDIR | inotify.IN_MOVE_SELF | inotify.IN_DELETE_SELF
               | inotify.IN_Q_OVERFLOW | inotify.IN_IGNORED | inotify.IN_UNMOUNT)
#: ... except a directory created: the recomputation walks that directory alone (Twisted
#: watches it from then on; what was written in it before is found by the walk).
NEW_DIRECTORY = inotify.IN_CREATE | inotify.IN_ISDIR
#: The kernel's watch descriptor of an IN_Q_OVERFLOW event ((uint32) -1).
OVERFLOW_WD = 0xFFFFFFFF


class IntegrityWatcher(Service):
    """Recomputes local integrity as soon as files under an item directory change.

    A file that is complete (closed after writing, moved in or out, deleted, its mode
    changed) triggers a recomputation ``quick`` seconds after the last such event (at most
    ``quick_max`` after the first), which looks at the named files only. A file still being
    written (``IN_MODIFY``/``IN_CREATE`` with no close yet) waits for ``delay`` of quiet (at
    most ``max_delay`` after the first event), as a writer that keeps its file open gets
    picked up too. Every event seen after a recomputation started leads to another one, so
    the last change of a burst is always in the last recomputation.

    :param master: the integrity feature whose recomputation to trigger.
    :param reactor: a reactor with file-descriptor support (inotify).
    :param delay: quiet time after the last unsettled event before recomputing.
    :param max_delay: longest time between the first unsettled event and a recomputation.
    :param quick: quiet time after the last settled event before recomputing.
    :param quick_max: longest time between the first settled event and a recomputation.
    """

    name = "integrity-watch"
    _log = Logger()

    def __init__(self, master: IntegrityMaster, reactor: Any, delay: float = 0.2,
                 max_delay: float = 1.0, quick: float = 0.002,
                 quick_max: float = 0.05) -> None:
        self._master = master
        self._reactor = reactor
        self._delay = delay
        self._max_delay = max_delay
        self._quick = quick
        self._quick_max = quick_max
        self._notifier: inotify.INotify | None = None
        self._timer: IDelayedCall | None = None
        self._urgent = False  # the timer is set for a settled event
        self._first_event = 0.0
        self._first_settled = 0.0
        self._paths: set[bytes] | None = set()  # None: cannot tell which files changed
        self.events = 0
        self.triggers = 0

    def startService(self) -> None:
        super().startService()
        self._watch()

    def stopService(self) -> None:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            notifier.loseConnection()

    def _watch(self) -> None:
        d = Deferred.fromCoroutine(self._add_watches())
        d.addErrback(lambda f: self._log.failure("[Master] [Local integrity] Could not watch "
                                                 "the cluster item directories", f))

    async def _add_watches(self) -> None:
        master = self._master
        directories = await master._node.run(item_directories, master._config.home,
                                             master.items)
        if not self.running:
            return
        notifier = _Notifier(self._reactor, self._notifier_lost, self._overflow,
                             self._path_event)
        notifier.startReading()
        self._notifier = notifier
        mask = (inotify.IN_CREATE | inotify.IN_CLOSE_WRITE | inotify.IN_MODIFY
                | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO | inotify.IN_DELETE
                | inotify.IN_ATTRIB | inotify.IN_MOVE_SELF)
        watched = 0
        for directory in directories:
            try:
                notifier.watch(FilePath(directory), mask=mask, autoAdd=True,
                               callbacks=[self._event])
                watched += 1
            except inotify.INotifyError as e:
                self._log.debug("[Master] [Local integrity] Cannot watch {path}: {error}",
                                path=directory, error=str(e))
        self._log.debug("[Master] [Local integrity] Watching {count} directories for changes.",
                        count=watched)
        # Anything that changed before the watches were in place: one full scan.
        self._event(None, None, inotify.IN_Q_OVERFLOW)

    def _notifier_lost(self, notifier: inotify.INotify) -> None:
        """Twisted closes the whole notifier when a watched directory is deleted: rewatch."""
        if notifier is not self._notifier or not self.running:
            return
        self._notifier = None
        self._log.debug("[Master] [Local integrity] A watched directory went away; "
                        "watching again.")
        self._reactor.callLater(0, self._watch)
        self._event(None, None, inotify.IN_DELETE_SELF)

    def _overflow(self) -> None:
        """The kernel dropped events: we cannot tell which files changed."""
        self._log.debug("[Master] [Local integrity] inotify queue overflow; scanning all.")
        self._event(None, None, inotify.IN_Q_OVERFLOW)

    def _event(self, ignored: object, path: FilePath[bytes] | None, mask: int) -> None:
        """Any change (Twisted's callback form): see :meth:`_path_event`."""
        self._path_event(None if path is None else path.path, mask)

    def _path_event(self, path: bytes | None, mask: int) -> None:
        """Any change: note the file and schedule a recomputation.

        Runs on the reactor thread once per inotify event (three per small file written:
        create, modify, close), so it only adds to a set and moves one timer.
        """
        self.events += 1
        if path is None or (mask & TREE_EVENTS and mask != NEW_DIRECTORY):
            self._paths = None
        elif self._paths is not None:
            self._paths.add(path)
        now = self._reactor.seconds()
        timer = self._timer
        active = timer is not None and timer.active()
        if not active:
            self._first_event = now
            self._urgent = False
        if mask & (SETTLED_EVENTS | TREE_EVENTS) or path is None:
            if not self._urgent:
                self._first_settled = now
            self._urgent = True
            due = min(now + self._quick, self._first_settled + self._quick_max)
        elif self._urgent:
            return  # a settled file's recomputation is due soon; this one joins it
        else:
            due = min(now + self._delay, self._first_event + self._max_delay)
        due = max(due, now)
        if timer is not None and active:
            timer.reset(due - now)
        else:
            self._timer = self._reactor.callLater(due - now, self._trigger)

    @property
    def pending(self) -> bool:
        """True while a recomputation is scheduled (events seen, not yet handed over)."""
        return self._timer is not None and self._timer.active()

    def _trigger(self) -> None:
        self._timer = None
        self._urgent = False
        self.triggers += 1
        paths, self._paths = self._paths, set()
        self._master.files_changed(paths)


_EVENT = struct.Struct("=LLLL")


class _Notifier(inotify.INotify):  # type: ignore[misc]
    """INotify that reports when it closes (Twisted closes it on IN_DELETE_SELF), and
    parses events without Twisted's per-event costs.

    Twisted's reader copies the rest of its buffer after every event and builds a
    ``FilePath`` (``abspath``, name checks) for each; a burst of 10 000 new files is 30 000
    events, all parsed on the reactor thread. With ``on_path``, ordinary events go to
    ``on_path(path_bytes, mask)`` straight from one pass over the buffer; the events
    Twisted must see itself (a watched directory deleted, a directory created under an
    ``autoAdd`` watch) still go through Twisted's code.
    """

    def __init__(self, reactor: Any, lost: Callable[[inotify.INotify], None],
                 overflow: Callable[[], None],
                 on_path: Callable[[bytes | None, int], None] | None = None) -> None:
        super().__init__(reactor)
        self._lost = lost
        self._on_path = on_path
        # wd -> (its watch point, the watched directory as bytes without a trailing "/")
        self._directories: dict[int, tuple[object, bytes]] = {}
        # Twisted drops events whose watch descriptor it does not know, among them the
        # kernel's IN_Q_OVERFLOW (wd -1): a pseudo watch point receives it instead.
        self._watchpoints[OVERFLOW_WD] = _OverflowWatch(overflow)

    def _doRead(self, in_: bytes) -> None:
        if self._on_path is None:
            super()._doRead(in_)
            return
        buffer = self._buffer + in_ if self._buffer else in_
        end = len(buffer)
        offset = 0
        watchpoints = self._watchpoints
        while end - offset >= _EVENT.size:
            wd, mask, _cookie, size = _EVENT.unpack_from(buffer, offset)
            start = offset + _EVENT.size
            if end - start < size:
                break  # incomplete event: wait for the rest
            offset = start + size
            iwp = watchpoints.get(wd)
            if iwp is None:
                continue
            if isinstance(iwp, _OverflowWatch) or mask & inotify.IN_DELETE_SELF or (
                    iwp.autoAdd and mask & inotify.IN_ISDIR and mask & inotify.IN_CREATE):
                self._buffer = b""
                super()._doRead(buffer[start - _EVENT.size:offset])  # Twisted's handling
                continue
            known = self._directories.get(wd)
            if known is not None and known[0] is iwp:
                directory = known[1]
            else:  # first event of this watch (a descriptor number can be reused)
                directory = iwp.path.asBytesMode().path.rstrip(b"/")
                self._directories[wd] = (iwp, directory)
            name = buffer[start:offset].rstrip(b"\0") if size else b""
            self._on_path(directory + b"/" + name if name else directory or b"/", mask)
        self._buffer = buffer[offset:]

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._lost(self)


class _OverflowWatch:
    """Stands in Twisted's watch-point table for the overflow event's descriptor."""

    autoAdd = False

    def __init__(self, overflow: Callable[[], None]) -> None:
        self._overflow = overflow
        self.path = FilePath(b"/")

    def _notify(self, path: object, mask: int) -> None:
        self._overflow()


def install(node: MasterNode, reactor: Any) -> None:
    """Plug the integrity feature into a master node: extension, timer, watcher."""
    master = IntegrityMaster(node, reactor)
    node.extensions.append(master)
    periodic("local-integrity", node.config.intervals.recalculate_integrity, master.tick,
             reactor).setServiceParent(node)
    if IReactorFDSet.providedBy(reactor) and platform.supportsINotify():
        watcher = IntegrityWatcher(master, reactor)
        watcher.setServiceParent(node)
        master.watcher = watcher
