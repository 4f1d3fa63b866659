"""make_node_service(): the composition root. The only place objects are wired together."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Any

from twisted.application.service import Service
from twisted.python.lockfile import FilesystemLock

from wazuhcluster.api.plug import add_api
from wazuhcluster.checksums.threaded import ThreadedRunner
from wazuhcluster.config import ClusterConfig, Role
from wazuhcluster.interfaces import IBlockingRunner
from wazuhcluster.localapi.factory import LocalAPIFactory, LocalSocketService
from wazuhcluster.logfiles import ClusterLogFile, logging_settings
from wazuhcluster.metrics.plug import add_metrics
from wazuhcluster.startup import HOME_DIRS, NodeRoot, lock_held_message
from wazuhcluster.turns import TurnBound
from wazuhcluster.ui.plug import add_ui


class WorkDirService(Service):
    """Prepares the home at start-up: one daemon per home, directories, an empty
    ``queue/cluster/``, and Wazuh's ``var/run/wazuh-clusterd-<pid>.pid``."""

    name = "work-dir"

    def __init__(self, config: ClusterConfig) -> None:
        self._config = config
        self._lock: FilesystemLock | None = None
        self._pidfile: str | None = None

    def privilegedStartService(self) -> None:
        self._acquire()  # before the listeners of later siblings bind
        super().privilegedStartService()

    def _acquire(self) -> None:
        if self._lock is not None:
            return
        home = self._config.home
        for sub in HOME_DIRS:
            os.makedirs(os.path.join(home, sub), mode=0o770, exist_ok=True)
        lock = FilesystemLock(os.path.join(home, "var", "run", "wazuhcluster.lock"))
        if not lock.lock():
            raise SystemExit(lock_held_message(lock, home))
        self._lock = lock

    def startService(self) -> None:
        self._acquire()
        home = self._config.home
        remove_stale_pidfiles(os.path.join(home, "var", "run"))
        self._pidfile = os.path.join(home, "var", "run", f"wazuh-clusterd-{os.getpid()}.pid")
        with open(self._pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.chmod(self._pidfile, 0o640)
        cluster_dir = os.path.join(home, "queue", "cluster")
        for entry in os.listdir(cluster_dir):
            if entry.startswith("c-internal.sock"):
                continue
            path = os.path.join(cluster_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        if self._pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pidfile)
            self._pidfile = None
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None


def remove_stale_pidfiles(run_dir: str) -> list[str]:
    """Remove ``wazuh-clusterd-<pid>.pid`` files whose process is gone (a SIGKILLed run);
    return their names. Called with the home's lock held, so no live node of this home
    can own one; a pid that is alive (whoever it is) is left alone."""
    removed = []
    for entry in os.listdir(run_dir):
        match = _PIDFILE.match(entry)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        if _alive(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(run_dir, entry))
            removed.append(entry)
    return removed


_PIDFILE = re.compile(r"^wazuh-clusterd-(\d{1,10})\.pid$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OverflowError:
        return False
    return True


def make_node_service(config: ClusterConfig, reactor: Any, *,
                      runner: IBlockingRunner | None = None,
                      log_to_file: bool = True, log_format: str | None = None) -> NodeRoot:
    """Build the whole tree for one node: log, pool, role node, local API, metrics, REST API
    and its status page (in that order)."""
    root = NodeRoot()
    root.setName("wazuhcluster")
    if log_to_file:
        fmt, keep_days = logging_settings(config.settings, log_format)
        path = config.log_path if fmt == "plain" else (
            os.path.splitext(config.log_path)[0] + ".json")
        ClusterLogFile(path, config.debug, reactor, log_format=fmt,
                       keep_days=keep_days).setServiceParent(root)
    WorkDirService(config).setServiceParent(root)
    if config.role is Role.MASTER and config.ext.master_nice:
        from wazuhcluster.priority import ProcessPriority
        ProcessPriority(config.ext.master_nice).setServiceParent(root)
    turns = TurnBound(reactor, config.ext.max_events_per_turn)
    turns.setName("turn-bound")
    turns.setServiceParent(root)
    if runner is None:
        pool = ThreadedRunner(reactor, max_threads=max(1, config.intervals.process_pool_size))
        pool.setServiceParent(root)
        runner = pool
    # Only the role's own modules are imported: start-up CPU counts when 100 workers start
    # on one box.
    node: Any
    if config.role is Role.MASTER:
        from wazuhcluster.master.service import make_master_service
        node = make_master_service(config, reactor, runner)
    else:
        from wazuhcluster.worker.service import make_worker_service
        node = make_worker_service(config, reactor, runner)
    from wazuhcluster.status.local import install as install_status
    install_status(node, reactor, turns.meter)  # reactor lag, wzc_status on the local socket
    node.setServiceParent(root)
    LocalSocketService(reactor, config.local_socket_path,
                       LocalAPIFactory(node)).setServiceParent(root)
    add_metrics(config, node, reactor, root)  # Prometheus /metrics (service "metrics")
    add_api(config, node, reactor, root)  # the REST API (service "api")
    add_ui(node, reactor, root)  # the status page at /ui of the REST API
    return root
