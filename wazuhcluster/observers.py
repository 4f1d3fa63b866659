"""Log observers writing Wazuh's ``cluster.log`` line format.

``YYYY/MM/DD HH:MM:SS LEVEL: [tag] [subtag] message``, local time. Our log calls put the two
bracketed tags at the start of their format strings (``"[{tag}] [Integrity sync] ..."``);
events from elsewhere (Twisted itself) get ``[Cluster] [Main]``. An event with the field
``debug2=True`` is Wazuh's DEBUG2 level and is shown only with ``-dd``.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)

_LEVELS = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARNING",
    LogLevel.error: "ERROR",
    LogLevel.critical: "CRITICAL",
}


def format_cluster_line(event: LogEvent, debug: int = 0) -> str | None:
    """Render one event as a cluster.log line, or None if ``debug`` filters it out."""
    level = event.get("log_level", LogLevel.info)
    if level == LogLevel.debug and (debug < 1 or (event.get("debug2") and debug < 2)):
        return None
    name = "DEBUG2" if event.get("debug2") else _LEVELS.get(level, "INFO")
    text = formatEvent(event)
    if not text.startswith("["):
        text = "[Cluster] [Main] " + text
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}: {failure.getErrorMessage()}"
        if debug >= 2:
            text = f"{text}\n{failure.getTraceback()}"
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(event.get("log_time",
                                                                         time.time())))
    return f"{stamp} {name}: {text}\n"


def cluster_observer(stream: IO[str], debug: int = 0) -> ILogObserver:
    """An observer writing cluster.log lines to ``stream``."""
    return FileLogObserver(stream, lambda event: format_cluster_line(event, debug))




class ClusterLogService(Service):
    """Writes ``logs/cluster.log`` while running (installed by the composition root).

    :param path: the log file.
    :param debug: 0 (INFO), 1 (DEBUG) or 2 (DEBUG2).
    """

    name = "cluster-log"

    def __init__(self, path: str, debug: int = 0, publisher: Any = globalLogPublisher) -> None:
        self._path = path
        self._debug = debug
        self._publisher = publisher
        self._stream: IO[str] | None = None
        self._observer: ILogObserver | None = None

    def startService(self) -> None:
        os.makedirs(os.path.dirname(self._path), mode=0o750, exist_ok=True)
        self._stream = open(self._path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        os.chmod(self._path, 0o660)
        self._observer = cluster_observer(self._stream, self._debug)
        self._publisher.addObserver(self._observer)
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        if self._observer is not None:
            self._publisher.removeObserver(self._observer)
            self._observer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
