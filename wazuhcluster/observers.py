"""Log observers writing Wazuh's ``cluster.log`` line format.

``YYYY/MM/DD HH:MM:SS LEVEL: [tag] [subtag] message``, local time. Our log calls put the two
bracketed tags at the start of their format strings (``"[{tag}] [Integrity sync] ..."``);
events from elsewhere (Twisted itself) get ``[Cluster] [Main]``. An event with the field
``debug2=True`` is Wazuh's DEBUG2 level and is shown only with ``-dd``. The node's log file
itself (rotation, JSON lines) is :class:`wazuhcluster.logfiles.ClusterLogFile`.
"""

from __future__ import annotations

import time
from typing import IO

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
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
