"""Worker side of the integrity check and sync, and ``wzc_syncnow``.

:class:`IntegrityWorker` (an :class:`~wazuhcluster.interfaces.IWorkerExtension`):

* the "Integrity check": ask ``syn_i_w_m_p``; if granted, compute our metadata (digest
  cache kept between rounds), write the metadata-only container, ``syn_i_w_m``, send it with
  the file sub-protocol and ``syn_i_w_m_e``. A check then waits for the master's verdict
  (``syn_m_c_ok``, ``syn_m_c_r``, or the push it sends being applied), so that one check
  never overlaps the application of its own push;
* checks run through a :class:`~wazuhcluster.integrity.scheduling.Coalescer`: the timer,
  the connection coming up and ``wzc_syncnow`` from our master all request a check; never
  two at once, and a request during a check schedules exactly one more;
* the "Integrity sync": ``syn_m_c`` creates a task that waits for ``syn_m_c_e`` naming a
  file completely received on this connection, then applies the push off the reactor with
  :func:`~wazuhcluster.integrity.apply.apply_push` (confined, atomic renames; two
  ``sync()`` barriers instead of an fsync per file). The master always wins; we never send
  files back.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.checksums.threaded import ThreadedRunner
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.integrity.apply import (
    ApplyResult,
    apply_push,
    apply_staged,
    discard_staged,
    stage_stream,
)
from wazuhcluster.integrity.container import (
    ContainerLimits,
    ExtractedContainer,
    write_metadata_container,
)
from wazuhcluster.integrity.errors import IntegrityError
from wazuhcluster.integrity.items import ClusterItems, parse_cluster_items
from wazuhcluster.integrity.master_side import (
    PUSH_DIRECT_CAPABILITY,
    PUSH_QUEUE_CAPABILITY,
    error_wire,
    unlink_quietly,
)
from wazuhcluster.integrity.metadata import CachedDigest, ScanResult, scan_items
from wazuhcluster.integrity.scheduling import Coalescer
from wazuhcluster.interfaces import IPeer, IWorkerExtension
from wazuhcluster.logsafe import peer_text
from wazuhcluster.ownership import OwnershipDecision, resolve_ownership
from wazuhcluster.periodic import periodic
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import (
    CANCEL_TASK,
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
from wazuhcluster.protocol.handler import ConnectionLostError
from wazuhcluster.protocol.transfers import FileReceiver, FollowedFile, FollowError, send_file

if TYPE_CHECKING:
    from wazuhcluster.worker.commands import WorkerCommands
    from wazuhcluster.worker.node import WorkerNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply]]

#: What the master's answer to a check was.
VERDICT_OK = "ok"
VERDICT_PUSH = "push"
VERDICT_ERROR = "error"

#: A push still counts as arriving while the master sends at least this much per period.
PUSH_PROGRESS_BYTES = 64 * 1024
#: How many times the wait for a push is extended while it keeps arriving.
MAX_PUSH_EXTENSIONS = 30


class DiskFullError(ClusterError):
    """No space left to write the integrity-check container."""

    def __init__(self, directory: str) -> None:
        super().__init__(3001, f"No space left on device in {directory}: the integrity check "
                               "needs room for its metadata container there (a few MB); free "
                               "space and checks resume by themselves")


class _Disconnected(ClusterError):
    """The master link went away while a push was waiting for its container."""

    def __init__(self) -> None:
        super().__init__(3023, "disconnected from the master")


def stage_followed(home: str, node_name: str, items: ClusterItems, followed: FollowedFile, *,
                   limits: ContainerLimits) -> ExtractedContainer:
    """Extract a push container while it arrives (on the extraction thread)."""
    with followed.open() as reader:
        return stage_stream(home, node_name, items, cast(BinaryIO, reader), limits,
                            fsync=False)


class Extractions(Service):
    """The worker's thread for extracting a push container while it arrives.

    Its own thread, not the node's pool: the extraction waits for bytes that the pool's
    threads append, and with ``process_pool_size`` 1 it would wait for itself. One
    thread is enough: pushes to a worker come one at a time. At stop every file still
    followed is failed first, so that the thread ends and the pool can be joined.
    """

    name = "integrity-extract"

    def __init__(self, reactor: Any) -> None:
        self._runner = ThreadedRunner(reactor, max_threads=1,
                                      pool_name="wazuhcluster-extract")
        self._following: set[FollowedFile] = set()

    def startService(self) -> None:
        super().startService()
        self._runner.startService()

    def stopService(self) -> None:
        super().stopService()
        for followed in list(self._following):
            followed.fail("the node is stopping")
        self._runner.stopService()

    def follow(self, followed: FollowedFile,
               stage: Callable[[FollowedFile], ExtractedContainer]
               ) -> Deferred[ExtractedContainer]:
        """Run ``stage(followed)`` on the extraction thread."""
        self._following.add(followed)

        def done(result: Any) -> Any:
            self._following.discard(followed)
            return result
        d: Deferred[ExtractedContainer] = self._runner.run(stage, followed)
        return d.addBoth(done)


class _Streamed:
    """One push task's container, extracted while it arrives (if the next file announced
    on the link after ``syn_m_c`` turns out to be it)."""

    def __init__(self, files: FileReceiver) -> None:
        self.files = files
        self.followed: FollowedFile | None = None
        self.staged: Deferred[ExtractedContainer] | None = None
        self.tap: Callable[[bytes, FollowedFile], None] | None = None

    def take(self, path: str) -> Deferred[ExtractedContainer] | None:
        """The staging of ``path`` (the file the master named), or None if it was not
        followed."""
        if self.followed is None or self.followed.path != path or self.staged is None:
            return None
        staged, self.staged = self.staged, None
        return staged

    def end(self, discard: Callable[[ExtractedContainer], Any]) -> None:
        """Stop following: disarm the tap, end the reader, discard what was not taken."""
        if self.tap is not None and self.files.follow_next is self.tap:
            self.files.follow_next = None
        if self.followed is not None:
            self.followed.fail("the push ended without it")
        staged, self.staged = self.staged, None
        if staged is not None:
            staged.addCallback(discard)
            staged.addErrback(lambda _: None)


def scan_and_write(home: str, items: ClusterItems, cache: dict[str, CachedDigest], path: str,
                   compress_level: int) -> ScanResult:
    """Compute our metadata and write it as a metadata-only container at ``path``."""
    result = scan_items(home, items, cache)
    with open(path, "wb") as dest:
        write_metadata_container(dest, result.files, compress_level=compress_level)
    return result


@implementer(IWorkerExtension)
class IntegrityWorker:
    """The worker's integrity feature.

    :param node: the worker node (config, ``run``, ``tag``).
    :param clock: the reactor's time.
    :param barrier: makes staged files durable before they are renamed into place, and
        the renames durable afterwards (``os.sync``; ``None`` in unit tests).
    :param owner: ``(uid, gid)`` given to received files (see :mod:`wazuhcluster.ownership`),
        or ``None`` to leave them to the running user.
    """

    _log = Logger()
    #: Announced in ``wzc_caps``: the master may push changed files without asking for a
    #: check first (a ``syn_m_c`` of its own; we apply it like any push).
    capabilities = (PUSH_DIRECT_CAPABILITY, PUSH_QUEUE_CAPABILITY)

    def __init__(self, node: WorkerNode, clock: IReactorTime,
                 barrier: Callable[[], None] | None = os.sync,
                 owner: tuple[int, int] | None = None,
                 extractions: Extractions | None = None) -> None:
        self._barrier = barrier
        #: extracts a push while it arrives (None: only once it has arrived)
        self._extractions = extractions
        #: ``(uid, gid)`` given to received files, or None (see :mod:`wazuhcluster.ownership`).
        self.owner = owner
        self._node = node
        self._disk_full = False  # the last check failed for lack of space (logged once)
        self._clock = clock
        self._config = node.config
        self.items = parse_cluster_items(node.config.files)
        self._cache: dict[str, CachedDigest] = {}
        self._peer: IPeer | None = None
        self._commands: WorkerCommands | None = None
        self._answer: Deferred[str] | None = None
        self._push_done: Deferred[None] | None = None
        self._tasks: dict[str, Deferred[str]] = {}
        self.pushes_in_progress = 0
        #: pushes are applied one at a time, in the order their containers were named
        #: (``push_queue``: the master may send the next while one is being applied)
        self._applying = DeferredLock()
        self.checks = Coalescer(self._integrity_check, f"[{node.tag}] [Integrity check]")
        self._limits = ContainerLimits.for_zip_size(node.config.intervals.max_zip_size)
        self.last_apply: ApplyResult | None = None

    @property
    def _tag(self) -> str:
        return self._node.tag

    # -- IWorkerExtension -----------------------------------------------------------------------
    def worker_responders(self, commands: WorkerCommands) -> dict[bytes, Responder]:
        """The integrity responders of one master link."""
        self._commands = commands
        return {
            SYN_M_C_OK: self._sync_not_required,
            SYN_M_C: functools.partial(self._start_push, commands),
            SYN_M_C_E: functools.partial(self._push_file_ready, commands),
            SYN_M_C_R: self._master_error,
            SYNC_NOW: self._sync_now,
        }

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        """The link is up: check at once instead of waiting for the timer."""
        self._peer = peer
        self.checks.request()

    def disconnected(self) -> None:
        """The link is gone: end the waits of the current check and pushes."""
        self._peer = None
        self._settle(VERDICT_ERROR)
        tasks, self._tasks = self._tasks, {}
        for waiter in tasks.values():
            if not waiter.called:
                waiter.errback(_Disconnected())

    # -- the integrity check ----------------------------------------------------------------------
    async def tick(self) -> None:
        """TimerService tick: request a check (never raises).

        The tick does not wait for the check: a check may wait up to
        ``timeout_receiving_file`` for the master's verdict, and at shutdown its last step
        could wait on a thread pool that has already stopped; the timer must not hold up
        ``stopService``. The coalescer keeps checks from overlapping.
        """
        with self._log.failuresHandled("[{tag}] [Integrity check] Tick failed", tag=self._tag):
            self.checks.request()

    async def _integrity_check(self) -> None:
        peer, commands = self._peer, self._commands
        if peer is None or commands is None:
            return
        while self.pushes_in_progress and self._push_done is not None:
            # A check must not scan a tree a push is changing; it runs once the push is
            # applied (a push the master started itself has no check waiting for it, and
            # the master's sync_now for what changed meanwhile arrives during the apply).
            self._log.debug("[{tag}] [Integrity check] Still applying a push; checking after "
                            "it.", tag=self._tag)
            await self._push_done
            peer, commands = self._peer, self._commands
            if peer is None or commands is None:
                return
        with self._log.failuresHandled("[{tag}] [Integrity check] Unexpected error",
                                       tag=self._tag):
            try:
                answer = await self._upload(peer, commands)
            except DiskFullError as e:
                if not self._disk_full:  # one line, not one per check
                    self._log.error("[{tag}] [Integrity check] {error}", tag=self._tag,
                                    error=str(e))
                self._disk_full = True
                return
            except ClusterError as e:
                if isinstance(e, ConnectionLostError):
                    return  # the link went away; the node logged it
                self._log.error("[{tag}] [Integrity check] Error: {error}", tag=self._tag,
                                error=str(e))
                return
            if self._disk_full:
                self._disk_full = False
                self._log.info("[{tag}] [Integrity check] Space is available again.",
                               tag=self._tag)
            if answer is None:
                return
            await self._wait_verdict(answer)

    async def _upload(self, peer: IPeer, commands: WorkerCommands) -> Deferred[str] | None:
        """Permission, metadata, upload; return the Deferred of the master's verdict."""
        reply = await peer.request(SYN_I_W_M_P, b"")
        if reply != b"True":
            self._log.info("[{tag}] [Integrity check] Master didn't grant permission to start "
                           "a new synchronization.", tag=self._tag)
            return None
        started = self._clock.seconds()
        self._log.info("[{tag}] [Integrity check] Starting.", tag=self._tag)
        node_name = self._config.node_name
        name = f"{node_name}-{started}-{uuid.uuid4().hex}.zip"
        local_path = os.path.join(self._config.home, "queue", "cluster", node_name, name)
        relpath = f"/queue/cluster/{node_name}/{name}"
        task_id: str | None = None
        answer: Deferred[str] = Deferred()
        try:
            try:
                result: ScanResult = await self._node.run(
                    scan_and_write, self._config.home, self.items, self._cache, local_path,
                    self._config.intervals.compress_level)
                self._cache = result.cache
                task_id = (await peer.request(SYN_I_W_M, b"")).decode("ascii", "replace")
                cancelled = commands.common.cancelled_tasks
                await send_file(peer, local_path, relpath.encode(), self._node.run,
                                is_cancelled=lambda: task_id in cancelled)
                self._answer = answer
                await peer.request(SYN_I_W_M_E, f"{task_id} {relpath[1:]}".encode())
            finally:
                await self._node.run(unlink_quietly, local_path)
        except (ClusterError, IntegrityError, OSError) as e:
            if self._answer is answer:
                self._answer = None
            if not isinstance(e, ConnectionLostError):
                report = peer.request(SYN_I_W_M_R, f"{task_id or 'None'} ".encode()
                                      + error_wire(e))
                report.addErrback(lambda _: None)
            if isinstance(e, ClusterError):
                raise
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise DiskFullError(os.path.dirname(local_path)) from e
            raise ClusterError(3001, str(e)) from e
        self._log.info("[{tag}] [Integrity check] Finished in {seconds:.3f}s.", tag=self._tag,
                       seconds=self._clock.seconds() - started, files=len(result.files))
        return answer

    async def _wait_verdict(self, answer: Deferred[str]) -> None:
        """Wait for syn_m_c_ok / syn_m_c_r, or for the push the master sends to be applied."""
        timeout = self._config.intervals.timeout_receiving_file
        try:
            verdict = await answer.addTimeout(timeout, self._clock)
        except defer.TimeoutError:
            self._log.warn("[{tag}] [Integrity check] No answer from the master within "
                           "{timeout} s.", tag=self._tag, timeout=timeout)
            return
        finally:
            if self._answer is answer:
                self._answer = None
        if verdict == VERDICT_PUSH and self._push_done is not None:
            await self._push_done

    def _settle(self, verdict: str) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.called:
            answer.callback(verdict)

    # -- responders --------------------------------------------------------------------------------
    async def _sync_not_required(self, payload: bytes) -> Reply:
        """``syn_m_c_ok``: our files are the master's."""
        self._log.info("[{tag}] [Integrity check] The master has verified that the integrity is"
                       " right.", tag=self._tag)
        self._settle(VERDICT_OK)
        return Reply.ok(b"Thanks")

    async def _sync_now(self, payload: bytes) -> Reply:
        """``wzc_syncnow``: our master saw a change; check now (coalesced)."""
        self._log.debug("[{tag}] [Integrity check] The master asked for a check now.",
                        tag=self._tag)
        self.checks.request()
        return Reply.ok(b"Check scheduled")

    async def _start_push(self, commands: WorkerCommands, payload: bytes) -> Reply:
        """``syn_m_c``: create a task that waits for the push container."""
        task_id = str(uuid.uuid4())
        waiter: Deferred[str] = Deferred()
        self._tasks[task_id] = waiter
        done: Deferred[None] = Deferred()
        self._push_done = done
        self.pushes_in_progress += 1
        d = Deferred.fromCoroutine(self._push_task(commands, task_id, waiter))
        d.addErrback(lambda f: self._log.failure("[{tag}] [Integrity sync] Unexpected error", f,
                                                 tag=self._tag))
        d.addBoth(self._push_finished, done)
        self._settle(VERDICT_PUSH)
        return Reply.ok(task_id.encode())

    def _push_finished(self, _: object, done: Deferred[None]) -> None:
        self.pushes_in_progress -= 1
        if self._push_done is done:
            self._push_done = None
        done.callback(None)

    async def _push_file_ready(self, commands: WorkerCommands, payload: bytes) -> Reply:
        """``syn_m_c_e <task> <relpath>``: only a file completely received here is accepted."""
        raw_task, raw_path = messages.split_id(payload)
        task_id = raw_task.decode("ascii", "replace")
        waiter = self._tasks.pop(task_id, None)
        if waiter is None:
            raise ClusterError(3027, peer_text(task_id, 64))
        try:
            path = commands.files.claim(raw_path.decode("utf-8", "replace"))
        except ClusterError as e:
            self._clock.callLater(0, self._fire, waiter, Failure(e))
            raise
        self._clock.callLater(0, self._fire, waiter, path)
        return Reply.ok(b"File correctly received")

    @staticmethod
    def _fire(waiter: Deferred[str], value: str | Failure) -> None:
        if waiter.called:
            return
        if isinstance(value, Failure):
            waiter.errback(value)
        else:
            waiter.callback(value)

    async def _master_error(self, payload: bytes) -> Reply:
        """``syn_m_c_r <task|None> <error>``: the master could not finish its answer."""
        raw_task, raw_error = messages.split_id(payload)
        error = RemoteCommandError.from_payload(raw_error)
        self._log.error("[{tag}] [Integrity sync] Error reported by the master: {error}",
                        tag=self._tag, error=str(error))
        waiter = self._tasks.pop(raw_task.decode("ascii", "replace"), None)
        if waiter is not None and not waiter.called:
            waiter.errback(error)
        else:
            self._settle(VERDICT_ERROR)
        return Reply.ok(b"Error received")

    # -- applying a push ---------------------------------------------------------------------------
    def _wait_for_push(self, waiter: Deferred[str], peer: Any,
                       timeout: float) -> Deferred[str]:
        """``waiter``, failed with TimeoutError after ``timeout`` seconds without progress.

        Wazuh gives the whole container a fixed time, so over a slow link a big push can never
        arrive (an endless receive/timeout/retry loop). Here the deadline moves on while the
        master keeps sending (at least PUSH_PROGRESS_BYTES per period, not just keepalives),
        at most MAX_PUSH_EXTENSIONS times.
        """
        seen = [int(getattr(peer, "bytes_received", 0))]
        timers: list[Any] = []

        def expire() -> None:
            if waiter.called:
                return
            now = int(getattr(peer, "bytes_received", 0))
            progressed = now - seen[0] >= PUSH_PROGRESS_BYTES
            seen[0] = now
            if progressed and len(timers) <= MAX_PUSH_EXTENSIONS:
                timers.append(self._clock.callLater(timeout, expire))
                return
            waiter.errback(defer.TimeoutError(f"no push within {timeout} s"))

        timers.append(self._clock.callLater(timeout, expire))

        def stop(result: Any) -> Any:
            if timers[-1].active():
                timers[-1].cancel()
            return result
        return waiter.addBoth(stop)

    async def _push_task(self, commands: WorkerCommands, task_id: str,
                         waiter: Deferred[str]) -> None:
        peer = commands.peer
        assert peer is not None
        timeout = self._config.intervals.timeout_receiving_file
        streamed = self._follow_push(commands.files)
        try:
            try:
                path = await self._wait_for_push(waiter, peer, timeout)
            except defer.TimeoutError:
                self._tasks.pop(task_id, None)
                error = ClusterError(3039, "integrity sync")
                cancel = peer.request(CANCEL_TASK, task_id.encode() + b" " + error.to_wire())
                cancel.addErrback(lambda _: None)
                raise error from None
            started = self._clock.seconds()
            self._log.info("[{tag}] [Integrity sync] Starting.", tag=self._tag)
            await self._applying.acquire()
            try:
                result = await self._apply(path, streamed)
            finally:
                self._applying.release()
                await self._node.run(unlink_quietly, path)
        except (ClusterError, IntegrityError, OSError) as e:
            if isinstance(e, ConnectionLostError | _Disconnected):
                return
            self._log.error("[{tag}] [Integrity sync] Error: {error}", tag=self._tag,
                            error=str(e))
            report = peer.request(SYN_I_W_M_R, b"None " + error_wire(
                e if not isinstance(e, RemoteCommandError) else ClusterError(1000, str(e))))
            report.addErrback(lambda _: None)
            return
        finally:
            streamed.end(lambda extracted: self._node.run(discard_staged, extracted))
        self.last_apply = result
        # We know what we just wrote: the next check need not read these files again.
        self._cache = {**self._cache, **result.installed}
        self._log.info("[{tag}] [Integrity sync] Files to create: {created} | Files to update: "
                       "{updated} | Files to delete: {deleted}", tag=self._tag,
                       created=len(result.created), updated=len(result.updated),
                       deleted=len(result.deleted))
        for refusal in (*result.refused, *result.failed)[:20]:
            self._log.warn("[{tag}] [Integrity sync] Not applied: {path}: {reason}",
                           tag=self._tag, path=refusal.path, reason=refusal.reason)
        self._log.debug("[{tag}] [Integrity sync] Steps: {steps}.", tag=self._tag,
                        steps=", ".join(f"{step} {seconds:.3f}s"
                                        for step, seconds in result.timings.items()))
        self._log.info("[{tag}] [Integrity sync] Finished in {seconds:.3f}s.", tag=self._tag,
                       seconds=self._clock.seconds() - started)

    def _follow_push(self, files: FileReceiver) -> _Streamed:
        """Extract the next file announced on the link while it arrives: after ``syn_m_c``
        the master sends the push container (Wazuh's master too). Only a staging
        directory is written until the file is complete, its checksum matched and
        ``syn_m_c_e`` named it; anything else is discarded."""
        streamed = _Streamed(files)
        extractions = self._extractions
        if extractions is None:
            return streamed
        home, node_name, items = self._config.home, self._config.node_name, self.items
        limits = self._limits

        def tap(relpath: bytes, followed: FollowedFile) -> None:
            streamed.tap = None
            streamed.followed = followed
            streamed.staged = extractions.follow(followed, functools.partial(
                stage_followed, home, node_name, items, limits=limits))

        streamed.tap = tap
        files.follow_next = tap
        return streamed

    async def _apply(self, path: str, streamed: _Streamed) -> ApplyResult:
        """Apply the push container at ``path`` (its staging if it was extracted while
        it arrived)."""
        staged = streamed.take(path)
        if staged is not None:
            waited = self._clock.seconds()
            try:
                extracted = await staged
            except FollowError:  # not expected for a complete file: extract it again
                pass
            else:
                self._log.debug("[{tag}] [Integrity sync] Container extracted while it "
                                "arrived.", tag=self._tag)
                result: ApplyResult = await self._node.run(
                    apply_staged, self._config.home, self.items, extracted, fsync=False,
                    barrier=self._barrier, owner=self.owner,
                    extract_seconds=self._clock.seconds() - waited)
                return result
        result = await self._node.run(
            apply_push, self._config.home, self.items, path, self._config.node_name,
            limits=self._limits, fsync=False, barrier=self._barrier, owner=self.owner)
        return result


class _OwnershipNotice(Service):
    """Says at start-up who will own received files, or why their owner is left alone.

    It first gives a scratch file in ``queue/cluster/`` that owner: a process without the
    right to (e.g. root without CAP_CHOWN under a sandboxing unit) would otherwise fail every
    received file; ownership is then skipped with the reason.
    """

    name = "ownership-notice"
    _log = Logger()

    def __init__(self, tag: str, decision: OwnershipDecision, worker: IntegrityWorker,
                 home: str) -> None:
        self._tag = tag
        self._decision = decision
        self._worker = worker
        self._home = home

    def startService(self) -> None:
        super().startService()
        owner = self._decision.owner
        why = self._decision.warning
        if owner is not None:
            why = probe_chown(os.path.join(self._home, "queue", "cluster"), owner.uid, owner.gid)
            if why is not None:
                why = f"cannot give files to {owner.user}:{owner.group} ({why})"
                self._worker.owner = None
        if why is None and owner is not None:
            self._log.info("[{tag}] [Integrity sync] Received files are given to {user}:{group}.",
                           tag=self._tag, user=owner.user, group=owner.group)
        else:
            self._log.warn("[{tag}] [Integrity sync] Ownership not applied: {why}",
                           tag=self._tag, why=why)


def probe_chown(directory: str, uid: int, gid: int) -> str | None:
    """Try giving a scratch file in ``directory`` to ``uid:gid``; the reason if we cannot."""
    try:
        fd, path = tempfile.mkstemp(prefix=".ownership-probe-", dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    try:
        os.fchown(fd, uid, gid)
    except OSError as e:
        return f"{e.strerror or e}; as root this needs the CAP_CHOWN capability"
    finally:
        os.close(fd)
        os.unlink(path)
    return None


def install(node: WorkerNode, reactor: Any) -> None:
    """Plug the integrity feature into a worker node: extension and "integrity-check" timer.

    :raises ConfigError: ``ownership`` in etc/wazuhcluster.yaml names a missing user or group.
    """
    decision = resolve_ownership(node.config.settings)
    owner = decision.owner
    extractions = Extractions(reactor)
    extractions.setServiceParent(node)
    worker = IntegrityWorker(node, reactor,
                             owner=None if owner is None else (owner.uid, owner.gid),
                             extractions=extractions)
    _OwnershipNotice(node.tag, decision, worker, node.config.home).setServiceParent(node)
    node.extensions.append(worker)
    periodic("integrity-check", node.config.intervals.sync_integrity, worker.tick,
             reactor).setServiceParent(node)
