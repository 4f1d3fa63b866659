"""The node's log file: Wazuh's cluster.log (or JSON lines), rotated daily as Wazuh does.

:class:`ClusterLogFile` writes ``logs/cluster.log`` in Wazuh's line format (or, with the JSON
format, ``logs/cluster.json`` with one JSON object per line, for log shippers). At local midnight
the file is renamed aside, a new one is opened, and the old one is compressed off the reactor
into ``logs/cluster/YYYY/Mon/cluster.log-DD.gz`` (directories 0750, archive 0640), the name and
place Wazuh's own daily rotation gives it. Archives older than ``keep_days`` days are deleted.
A file last written on an earlier day (the node was down at midnight) is rotated at start.

Settings (``HOME/etc/wazuhcluster.yaml``)::

    logging:
      format: plain      # or json (also: twistd wazuhcluster --log-format json)
      keep_days: 31      # archives kept; 0 keeps them all
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)

from wazuhcluster.errors import ConfigError
from wazuhcluster.observers import format_cluster_line
from wazuhcluster.settings import section

FORMATS = ("plain", "json")
_LINE = re.compile(r"^(\S+ \S+) (\w+): \[([^\]]*)\] \[([^\]]*)\] (.*)$", re.DOTALL)
ROTATING_SUFFIX = ".rotating-"
#: Twisted's own lines about our listening ports (``LocalAPIFactory starting on '...'``,
#: ``(UNIX Port ... Closed)``): debug, not info, in our log.
_PORT_NOISE = re.compile(r"^(\S+( \(TLS\))? starting on \S+"
                         r"|\((UNIX |TCP |UDP )?Port \S+ Closed\))$")

#: Archives a rotated file: (rotated path, archive path, archive root, keep_days, now).
Archiver = Callable[[str, str, str, int, float], Deferred[None]]


def logging_settings(settings: Mapping[str, Mapping[str, Any]],
                     log_format: str | None = None) -> tuple[str, int]:
    """``(format, keep_days)`` from the ``logging`` section; ``log_format`` (the command line)
    wins over the file.

    :raises ConfigError: an unknown format or a bad ``keep_days``.
    """
    values = section(settings, "logging", {"format": "plain", "keep_days": 31})
    fmt = log_format or values["format"]
    if fmt not in FORMATS:
        raise ConfigError(f"logging format {fmt!r} is invalid: expected 'plain' or 'json' "
                          "(logging.format in etc/wazuhcluster.yaml or --log-format)")
    keep = values["keep_days"]
    if type(keep) is not int or keep < 0:
        raise ConfigError(f"etc/wazuhcluster.yaml: logging.keep_days = {keep!r} is invalid: "
                          "expected a whole number of days, 0 to keep every archive")
    return fmt, keep


def quiet_port_noise(event: LogEvent) -> LogEvent:
    """Twisted's port start/stop lines demoted to debug; other events unchanged."""
    if event.get("log_namespace") == "log_legacy" and event.get("log_level") == LogLevel.info:
        text = formatEvent(event)
        if _PORT_NOISE.match(text):
            return {**event, "log_level": LogLevel.debug}
    return event


def format_json_line(event: LogEvent, debug: int = 0) -> str | None:
    """One event as a JSON object on one line (same filtering and text as cluster.log)."""
    line = format_cluster_line(event, debug)
    if line is None:
        return None
    match = _LINE.match(line.rstrip("\n"))
    if match is None:  # cannot happen with format_cluster_line's output; keep the text
        return json.dumps({"message": line.rstrip("\n")}) + "\n"
    stamp, level, tag, subtag, message = match.groups()
    return json.dumps({"timestamp": stamp, "levelname": level, "tag": tag, "subtag": subtag,
                       "message": message}, ensure_ascii=False) + "\n"


def archive_path(log_path: str, day: time.struct_time) -> str:
    """``logs/cluster/YYYY/Mon/cluster.log-DD.gz`` for the log of ``day``."""
    base = os.path.splitext(log_path)[0]
    return os.path.join(base, str(day.tm_year), calendar.month_abbr[day.tm_mon],
                        f"{os.path.basename(log_path)}-{day.tm_mday:02d}.gz")


def archive(rotated: str, target: str, root: str, keep_days: int, now: float) -> None:
    """Compress ``rotated`` into ``target`` atomically, delete it, prune old archives.

    Blocking: run in a thread.
    """
    directory = os.path.dirname(target)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    for level in (root, os.path.dirname(directory), directory):  # whatever the umask
        os.chmod(level, 0o750)
    final = target
    n = 0
    while os.path.exists(final):  # a second rotation the same day (restart): keep both
        n += 1
        final = target[:-3] + f"_{n}.gz"
    temporary = os.path.join(directory, f".{os.path.basename(final)}.tmp")
    with open(rotated, "rb") as source, open(temporary, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        raw.flush()
        os.fsync(raw.fileno())
    os.chmod(temporary, 0o640)
    os.replace(temporary, final)
    os.unlink(rotated)
    if keep_days:
        prune(root, keep_days, now)


def prune(root: str, keep_days: int, now: float) -> list[str]:
    """Delete archives under ``root`` (``YYYY/Mon/name-DD[_N].gz``) older than ``keep_days``."""
    months = {name: i for i, name in enumerate(calendar.month_abbr) if name}
    today = time.localtime(now)
    limit = time.mktime((today.tm_year, today.tm_mon, today.tm_mday - keep_days,
                         0, 0, 0, 0, 0, -1))
    removed = []
    for year in _listdir(root):
        for month in _listdir(os.path.join(root, year)):
            directory = os.path.join(root, year, month)
            for name in _listdir(directory):
                match = re.search(r"-(\d\d)(?:_\d+)?\.gz$", name)
                if not (match and year.isdigit() and month in months):
                    continue
                day = time.mktime((int(year), months[month], int(match.group(1)),
                                   0, 0, 0, 0, 0, -1))
                if day < limit:
                    os.unlink(os.path.join(directory, name))
                    removed.append(os.path.join(year, month, name))
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if now empty
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, year))
    return removed


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def next_midnight(now: float) -> float:
    """The next local midnight after ``now`` (POSIX seconds)."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, 0, 0, 0, 0, 0, -1))


class ClusterLogFile(Service):
    """Writes the node's log file while running and rotates it daily.

    :param path: ``logs/cluster.log`` (or ``logs/cluster.json`` for the JSON format).
    :param debug: 0 (INFO), 1 (DEBUG) or 2 (DEBUG2).
    :param clock: schedules the midnight rotations.
    :param log_format: ``plain`` or ``json``.
    :param keep_days: archives kept (0: all).
    :param archiver: compresses a rotated file; default: in the reactor's thread pool.
    """

    name = "cluster-log"
    _log = Logger()

    def __init__(self, path: str, debug: int, clock: Any, *, log_format: str = "plain",
                 keep_days: int = 31, publisher: Any = globalLogPublisher,
                 archiver: Archiver | None = None) -> None:
        self.path = path
        self._debug = debug
        self._clock = clock
        self._format = log_format
        self._keep = keep_days
        self._publisher = publisher
        self._archiver = archiver or self._archive_in_thread
        self._stream: IO[str] | None = None
        self._observer: ILogObserver | None = None
        self._next: IDelayedCall | None = None
        #: Archiving in progress (tests and stopService wait on it).
        self.archiving: Deferred[None] = succeed(None)

    def _archive_in_thread(self, *args: Any) -> Deferred[None]:
        d: Deferred[None] = deferToThreadPool(self._clock, self._clock.getThreadPool(),
                                              archive, *args)
        return d

    def startService(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
        now = self._clock.seconds()
        leftovers = self._leftovers()
        try:
            written = os.stat(self.path).st_mtime
        except FileNotFoundError:
            written = now
        if time.localtime(written)[:3] < time.localtime(now)[:3]:
            leftovers.append(self._set_aside(time.localtime(written)))
        self._open()
        super().startService()
        for rotated, day in leftovers:
            self._start_archive(rotated, day)
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._close()
        return self.archiving

    # -- file -------------------------------------------------------------------------------
    def _open(self) -> None:
        self._stream = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        os.chmod(self.path, 0o660)
        formatter = format_json_line if self._format == "json" else format_cluster_line
        debug = self._debug
        self._observer = FileLogObserver(
            self._stream, lambda event: formatter(quiet_port_noise(event), debug))
        self._publisher.addObserver(self._observer)

    def _close(self) -> None:
        if self._observer is not None:
            self._publisher.removeObserver(self._observer)
            self._observer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _set_aside(self, day: time.struct_time) -> tuple[str, time.struct_time]:
        rotated = f"{self.path}{ROTATING_SUFFIX}{time.strftime('%Y%m%d', day)}"
        os.replace(self.path, rotated)
        return rotated, day

    def _leftovers(self) -> list[tuple[str, time.struct_time]]:
        """Files set aside by a rotation that a crash interrupted."""
        directory, base = os.path.split(self.path)
        found = []
        for name in _listdir(directory):
            if name.startswith(base + ROTATING_SUFFIX):
                with contextlib.suppress(ValueError):
                    day = time.strptime(name[len(base + ROTATING_SUFFIX):], "%Y%m%d")
                    found.append((os.path.join(directory, name), day))
        return found

    # -- rotation ---------------------------------------------------------------------------
    def _schedule(self) -> None:
        now = self._clock.seconds()
        self._next = self._clock.callLater(max(0.0, next_midnight(now) - now), self.rotate)

    def rotate(self) -> None:
        """Set the current file aside, open a new one, archive the old one off the reactor."""
        day = time.localtime(self._clock.seconds() - 1)  # the day that just ended
        self._close()
        try:
            rotated = self._set_aside(day)
        finally:
            self._open()
        self._start_archive(*rotated)
        if self.running:
            self._schedule()

    def _start_archive(self, rotated: str, day: time.struct_time) -> None:
        target = archive_path(self.path, day)
        root = os.path.splitext(self.path)[0]

        def run(_: object) -> Deferred[None]:
            return self._archiver(rotated, target, root, self._keep, self._clock.seconds())

        def failed(failure: Any) -> None:
            self._log.failure("[Cluster] [Main] Could not archive {rotated}", failure,
                              rotated=rotated)

        self.archiving = self.archiving.addCallback(run).addErrback(failed)
