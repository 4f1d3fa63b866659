"""``ClientKeysWatcher``: keep the agent database in step with ``etc/client.keys``.

The file changes when the master's operators (or tools) edit it, and on a worker when an
integrity sync replaces it. The watcher reconciles the database with the file at start-up and
whenever the file changes. Changes are noticed two ways:

* inotify on the ``etc`` directory (the file is usually replaced by a rename, which a watch on
  the file itself would miss), where ``twisted.internet.inotify`` is available and the reactor
  can watch file descriptors;
* a cheap ``stat`` of size, mtime and inode every ``interval`` seconds, as a fallback.

Reconciliations never overlap: a change seen while one runs schedules exactly one more.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from wazuhcluster.agents.db import ReconcileResult
from wazuhcluster.interfaces import IAgentDatabase

#: Seconds between two stat() checks of client.keys.
STAT_INTERVAL = 2.0
#: The same while inotify watches the directory: the stat() check is then only a safety
#: net (an event lost to a full inotify queue), and each check wakes an idle node.
INOTIFY_STAT_INTERVAL = 10.0

_Signature = tuple[int, int, int] | None


def keys_signature(path: str) -> _Signature:
    """``(size, mtime_ns, inode)`` of ``path``, or None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class ClientKeysWatcher(Service):
    """Reconciles the agent database with ``client.keys`` at start and on every change.

    :param db: the node's agent database.
    :param clock: gives ``now`` (``date_add`` of new agents) and drives the stat loop.
    :param path: the ``client.keys`` file.
    :param tag: the Wazuh log tag of the node (``Master`` or ``Worker <name>``).
    :param inotify_reactor: a reactor to watch the directory with inotify, or None.
    :param interval: seconds between two stat() checks.
    """

    name = "client-keys-watch"
    _log = Logger()

    def __init__(self, db: IAgentDatabase, clock: IReactorTime, path: str, tag: str,
                 inotify_reactor: Any = None, interval: float = STAT_INTERVAL) -> None:
        self._db = db
        self._clock = clock
        self.path = path
        self._tag = tag
        self._inotify_reactor = inotify_reactor
        self._interval = interval
        self._seen: _Signature | object = object()  # differs from any signature: first poll runs
        self._loop: LoopingCall | None = None
        self._notifier: Any = None
        self._running_reconcile: Deferred[None] | None = None
        self._again = False
        self._held = 0
        self.reconciliations = 0
        self.last_result: ReconcileResult | None = None

    # -- service ----------------------------------------------------------------------------
    def startService(self) -> None:
        """Reconcile now, then watch the file."""
        super().startService()
        self._start_inotify()
        interval = self._interval
        if self._notifier is not None:
            interval = max(interval, INOTIFY_STAT_INTERVAL)
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(interval, now=True).addErrback(
            lambda f: self._log.failure("[{tag}] [Agents] client.keys watch stopped", f,
                                        tag=self._tag))

    def stopService(self) -> Deferred[None] | None:
        """Stop watching; wait for a reconciliation in progress."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._running_reconcile is not None:
            waiting: Deferred[None] = Deferred()

            def done(result: object) -> object:
                waiting.callback(None)
                return result
            self._running_reconcile.addBoth(done)  # type: ignore[call-overload]
            return waiting
        return None

    def _start_inotify(self) -> None:
        """Watch the directory of client.keys with inotify where possible."""
        if self._inotify_reactor is None or not IReactorFDSet.providedBy(self._inotify_reactor):
            return
        try:
            from twisted.internet import inotify
        except ImportError:
            return  # not Linux: the stat loop does the work
        from twisted.python.filepath import FilePath

        try:
            notifier = inotify.INotify(self._inotify_reactor)
            notifier.startReading()
            mask = (inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_CREATE
                    | inotify.IN_DELETE | inotify.IN_MOVED_FROM)
            notifier.watch(FilePath(os.path.dirname(self.path)), mask=mask,
                           callbacks=[self._notified])
        except (OSError, inotify.INotifyError) as e:  # e.g. no inotify watches left
            self._log.info("[{tag}] [Agents] inotify unavailable ({error}); watching "
                           "client.keys by stat() every {interval} s", tag=self._tag,
                           error=str(e), interval=self._interval)
            return
        self._notifier = notifier

    def _notified(self, ignored: Any, filepath: Any, mask: int) -> None:
        """inotify callback: react only to client.keys. Twisted's inotify gives bytes paths:
        the name is decoded before it is compared (compared as bytes with the str name, no
        event ever matched, and only the stat() loop saw changes)."""
        name = filepath.basename()
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if name == os.path.basename(self.path):
            self.poll()

    # -- reconciliation ------------------------------------------------------------------------
    def hold(self) -> None:
        """A writer that updates the database itself is about to replace the file: ignore
        changes until :meth:`release`."""
        self._held += 1

    def release(self, signature: _Signature) -> None:
        """The writer is done and the database already agrees with the file whose signature
        (:func:`keys_signature`) is ``signature`` (None: unknown, reconcile as usual)."""
        self._held = max(0, self._held - 1)
        if signature is not None:
            self._seen = signature
        self.poll()  # a change by someone else meanwhile is still reconciled

    def poll(self) -> None:
        """Reconcile if the file's signature changed since the last reconciliation."""
        if not self.running or self._held:
            return
        signature = keys_signature(self.path)
        if signature == self._seen:
            return
        self._seen = signature
        self.trigger()

    def trigger(self) -> None:
        """Reconcile now, or once more after the reconciliation in progress."""
        if self._running_reconcile is not None:
            self._again = True
            return
        running = Deferred.fromCoroutine(self._reconcile())
        if not running.called:  # an inline database finishes at once
            self._running_reconcile = running

    async def _reconcile(self) -> None:
        """Run reconciliations until no change is pending."""
        try:
            while True:
                self._again = False
                with self._log.failuresHandled("[{tag}] [Agents] Could not reconcile the "
                                               "agent database with {path}", tag=self._tag,
                                               path=self.path):
                    result = await self._db.reconcile_keys_file(self.path,
                                                                int(self._clock.seconds()))
                    self.reconciliations += 1
                    self.last_result = result
                    if result.inserted or result.updated or result.removed:
                        self._log.info(
                            "[{tag}] [Agents] client.keys: {inserted} agents added, {updated} "
                            "changed, {removed} removed.", tag=self._tag,
                            inserted=result.inserted, updated=result.updated,
                            removed=result.removed)
                if not self._again or not self.running:
                    return
        finally:
            self._running_reconcile = None

