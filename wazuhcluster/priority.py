"""The master's scheduling priority (cluster.json ``wazuhcluster.master_nice``).

Every worker waits on the master: for its keepalive answers, its pushes, its DAPI answers. On a
box whose cores are all busy the kernel gives each runnable thread about the same share, and
with a hundred busy processes beside it the master's reactor got a few percent of a core while
its turns needed more: its worst turn grew to 0.6 s (docs/testbed.md, run 21). Cluster
membership daemons raise their own priority for this reason (corosync runs at a real-time
one); the master raises its niceness to ``master_nice`` (-10 by default), on every thread it
has at start-up: the thread pools' threads, started later by the reactor's thread, inherit it.
The whole process, not the reactor thread alone: a pool thread holding the GIL that the
kernel has put aside would otherwise keep the reactor waiting (a priority inversion).

A master that already runs at a lower niceness (systemd's ``Nice=``, ``nice -n``) is left as
it is; so is one not allowed to raise it (not root, no ``CAP_SYS_NICE``): it logs one line
and goes on. ``master_nice`` 0 turns this off. When the service stops, every thread it
changed gets its niceness back.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger


def thread_ids() -> list[int]:
    """The ids of this process's threads (Linux: ``/proc/self/task``); elsewhere ``[0]``,
    which ``setpriority`` takes as the whole process."""
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return [0]


class ProcessPriority(Service):
    """Raises the process to ``nice`` at start (see the module's text); undoes it at stop.

    :param nice: the niceness to run at (-20..19); 0 leaves the process as it is.
    :param tag: the log tag (``Master``).
    :param getpriority: ``os.getpriority``-like, for tests.
    :param setpriority: ``os.setpriority``-like, for tests.
    :param threads: returns the thread ids to change, for tests.
    """

    name = "priority"
    _log = Logger()

    def __init__(self, nice: int, tag: str = "Master", *,
                 getpriority: Callable[[int, int], int] | None = None,
                 setpriority: Callable[[int, int, int], None] | None = None,
                 threads: Callable[[], Iterable[int]] = thread_ids) -> None:
        self._nice = nice
        self._tag = tag
        self._get = getpriority or os.getpriority
        self._set = setpriority or os.setpriority
        self._threads = threads
        self._applied = False
        self._report: Callable[[], None] | None = None
        #: thread id -> the niceness it had before we changed it
        self.changed: dict[int, int] = {}

    def privilegedStartService(self) -> None:
        self._apply()  # before twistd gives up root (--uid), if it does
        super().privilegedStartService()

    def startService(self) -> None:
        self._apply()
        super().startService()
        # Said here, not when applied: cluster.log (an earlier sibling) is open by now.
        report, self._report = self._report, None
        if report is not None:
            report()

    def stopService(self) -> Any:
        for tid, before in self.changed.items():
            with contextlib.suppress(OSError):  # the thread has ended
                self._set(os.PRIO_PROCESS, tid, before)  # lowering is always allowed
        self.changed = {}
        self._applied = False
        return super().stopService()

    def _apply(self) -> None:
        if self._applied or self._nice == 0:
            return
        self._applied = True
        refused: OSError | None = None
        current = None
        for tid in self._threads():
            try:
                before = self._get(os.PRIO_PROCESS, tid)
            except OSError:
                continue  # ended meanwhile
            current = before if current is None else min(current, before)
            if before <= self._nice:
                continue
            try:
                self._set(os.PRIO_PROCESS, tid, self._nice)
            except PermissionError as e:
                refused = e
                break
            except OSError:
                continue
            self.changed[tid] = before
        self._report = functools.partial(self._say, refused, current)

    def _say(self, refused: OSError | None, current: int | None) -> None:
        if refused is not None:
            self._log.info("[{tag}] [Main] Running at niceness {current}: raising it to "
                           "{nice} (master_nice) is not permitted ({error}); start the master "
                           "as root or with CAP_SYS_NICE, or set master_nice to 0.",
                           tag=self._tag, current=current, nice=self._nice,
                           error=refused.strerror)
        elif self.changed:
            self._log.info("[{tag}] [Main] Running at niceness {nice} (master_nice), raised "
                           "from {before}.", tag=self._tag, nice=self._nice,
                           before=max(self.changed.values()))
