"""Starting a node from ``twistd``: configuration, pre-flight checks, one-line failures.

Every start-up failure ends the process with a non-zero status and one line naming the cause and
the fix, in the foreground (``twistd -n``) and in daemon mode alike:

* the checks of :func:`preflight` run while ``twistd`` builds the service, *before* it forks, so
  a bad configuration, a home or log file that cannot be written, a held lock or a busy port stop
  ``twistd`` itself with the line on stderr and exit status 1;
* a failure while the tree starts (after the fork in daemon mode) is turned by
  :class:`NodeRoot` into :class:`StartupError`. ``twistd`` reports an ``Exception`` raised then
  to the waiting parent, which exits 1 (a ``SystemExit`` would leave the parent waiting forever
  for its child's status).
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.python.lockfile import FilesystemLock

from wazuhcluster.config import ClusterConfig, ClusterDisabled, Role, load_config
from wazuhcluster.errors import ConfigError

#: How the command line names each input (``twistd wazuhcluster`` options).
CLI_NAMES: Mapping[str, str] = {"--home": "--home", "--config": "--config",
                                "--cluster-json": "--cluster-json"}
#: How the tac files name them (environment variables).
TAC_NAMES: Mapping[str, str] = {"--home": "WAZUHCLUSTER_HOME", "--config": "WAZUHCLUSTER_CONFIG",
                                "--cluster-json": "WAZUHCLUSTER_CLUSTER_JSON"}
HOME_DIRS = ("etc", "logs", "queue/cluster", "queue/db", "var/run")


class StartupError(Exception):
    """The node cannot start; the message is one line naming the cause and the fix.

    twistd shows the daemon's parent at most 100 characters of ``module.Class: message``:
    the message starts with the cause (the path or address) so the cut keeps it.
    """


StartupError.__module__ = "wazuhcluster"  # shorter in twistd's 100-character report


def unwritable(path: str, error: OSError, what: str = "") -> str:
    """One line for a file or directory the node cannot create or write."""
    reason = error.strerror or str(error)
    if isinstance(error, FileExistsError | NotADirectoryError):
        reason = "a file is in the way of a directory"
    return (f"wazuhcluster: cannot write {what}{path} ({reason}): make the home writable by the "
            "user running wazuhcluster (see docs/operations.md, 'The home')")


def preflight(config: ClusterConfig, *, log_to_file: bool = True) -> None:
    """Check what would make the node fail to start, before ``twistd`` forks.

    :raises SystemExit: with one line naming the cause and the fix.
    """
    home = config.home
    for sub in HOME_DIRS:
        path = os.path.join(home, sub)
        try:
            os.makedirs(path, mode=0o770, exist_ok=True)
        except OSError as e:
            raise SystemExit(unwritable(path, e)) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise SystemExit(unwritable(path, PermissionError(13, "Permission denied")))
    if log_to_file and os.path.lexists(config.log_path):
        try:
            os.close(os.open(config.log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        except OSError as e:
            raise SystemExit(unwritable(config.log_path, e, "the log file ")) from None
    lock = FilesystemLock(os.path.join(home, "var", "run", "wazuhcluster.lock"))
    try:
        held = not lock.lock()
    except OSError as e:
        raise SystemExit(unwritable(lock.name, e)) from None
    if held:
        raise SystemExit(lock_held_message(lock, home))
    lock.unlock()
    from wazuhcluster.api.plug import api_listen_problem

    api_problem = api_listen_problem(config)
    if api_problem is not None:
        raise SystemExit(api_problem)
    if config.role is Role.MASTER:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((config.bind_addr, config.port))
            except OSError as e:
                raise SystemExit(cannot_listen_message(f"{config.bind_addr}:{config.port}",
                                                       e)) from None


def lock_held_message(lock: FilesystemLock, home: str) -> str:
    """One line for a home already used by another process."""
    try:
        owner = str(os.readlink(lock.name))
    except OSError:
        owner = "?"
    return (f"wazuhcluster: another wazuhcluster process (pid {owner}) is running with --home "
            f"{home}: stop it first")


def cannot_listen_message(address: str, error: object) -> str:
    """One line for a port that cannot be bound."""
    return (f"wazuhcluster: cannot listen on {address} ({error}): stop the process using it or "
            "change <cluster><port>/<bind_addr>")


#: The interpreter's switch interval while a node runs (Python's default is 5 ms). The
#: reactor thread gives the GIL away at every system call (each send, each epoll_wait); when
#: a pool thread is running Python (decoding agent data, writing a container) the reactor
#: waits up to the switch interval to get it back, once per call: a "convoy" that made the
#: master's reactor run late by far more than its own work. At 0.5 ms, a reactor sending to
#: 100 sockets per tick beside two busy pool threads ran p50 6.4 -> 1.2 ms and p99
#: 28 -> 12 ms late (p99 145-250 -> 85 ms with the CPU also taken by other processes), for
#: the same CPU time (docs/performance.md, scale section).
SWITCH_INTERVAL = 0.0005


class NodeRoot(MultiService):
    """The root of a node's tree: turns any start-up failure into one line and, in daemon
    mode, into :class:`StartupError` so that ``twistd`` ends with a non-zero status. While
    it runs, the interpreter switches threads every :data:`SWITCH_INTERVAL` seconds.

    Once the tree has started, the objects that exist then (modules, classes, functions: some
    75 000 on a master) are moved out of the garbage collector's view (``gc.freeze``, after
    one collection), as long-running Python services do: they live as long as the process,
    and every full collection scanned them all (13 ms of CPU on the test VM each time, in
    one piece, holding the GIL: on a busy box the scale bed's master showed full collections
    of 58-330 ms, docs/testbed.md). At stop they are handed back (``gc.unfreeze``)."""

    #: Set by the caller that knows whether twistd daemonizes (plugin: ``--nodaemon``).
    daemon = False
    _switch_interval_before: float | None = None
    _froze = False

    def privilegedStartService(self) -> None:
        with self._one_line():
            super().privilegedStartService()

    def startService(self) -> None:
        if self._switch_interval_before is None:
            self._switch_interval_before = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            with self._one_line():
                super().startService()
        except BaseException:
            self._restore_switch_interval()
            raise
        if not self._froze:
            gc.collect()  # what start-up left as garbage is not frozen with the rest
            gc.freeze()
            self._froze = True

    def stopService(self) -> Any:
        d = super().stopService()
        self._restore_switch_interval()
        if self._froze:
            gc.unfreeze()
            self._froze = False
        return d

    def _restore_switch_interval(self) -> None:
        if self._switch_interval_before is not None:
            sys.setswitchinterval(self._switch_interval_before)
            self._switch_interval_before = None

    @contextlib.contextmanager
    def _one_line(self) -> Any:
        try:
            yield
        except SystemExit as e:
            if not self.daemon or not isinstance(e.code, str):
                raise
            self._fail(e.code)
        except OSError as e:
            self._fail(unwritable(getattr(e, "filename", None) or "the home", e))

    def _fail(self, message: str) -> None:
        if self.daemon:
            sys.stderr.write(message + "\n")  # twistd's log holds the whole line
            raise StartupError(message) from None
        raise SystemExit(message) from None


def build(home: str, *, role: str | None, config_path: str | None, cluster_json: str | None,
          debug: int, reactor: Any, daemon: bool, names: Mapping[str, str] = CLI_NAMES,
          log_format: str | None = None) -> NodeRoot:
    """Configuration, checks and the node's tree; any problem ends in one ``SystemExit`` line.

    :param names: how the caller names ``--home``, ``--config``, ``--cluster-json`` (the tac
        files name environment variables instead).
    """
    try:
        config = load_config(home, config_path=config_path, role=role,
                             cluster_json=cluster_json, debug=debug)
        from wazuhcluster.node import make_node_service

        root = make_node_service(config, reactor, log_format=log_format)
    except ConfigError as e:
        message = str(e)
        for option, name in names.items():
            message = message.replace(f"{option} ", f"{name} ")
        raise SystemExit(f"wazuhcluster: configuration error: {message}") from None
    except ClusterDisabled as e:
        sys.stderr.write(f"wazuhcluster: cluster disabled ({e}); nothing to do.\n")
        raise SystemExit(0) from None
    preflight(config)
    assert isinstance(root, NodeRoot)
    root.daemon = daemon
    return root


def from_environment(role: str, reactor: Any, argv: list[str] | None = None) -> NodeRoot:
    """The tree of a tac file: inputs from ``WAZUHCLUSTER_*``, errors naming those variables."""
    debug_text = os.environ.get("WAZUHCLUSTER_DEBUG") or "0"
    if debug_text not in ("0", "1", "2"):
        raise SystemExit(f"wazuhcluster: configuration error: WAZUHCLUSTER_DEBUG = "
                         f"{debug_text!r} is invalid: expected 0, 1 or 2")
    return build(os.environ.get("WAZUHCLUSTER_HOME") or "/var/ossec", role=role,
                 config_path=os.environ.get("WAZUHCLUSTER_CONFIG") or None,
                 cluster_json=os.environ.get("WAZUHCLUSTER_CLUSTER_JSON") or None,
                 debug=int(debug_text), reactor=reactor,
                 daemon=not nodaemon_in(sys.argv[1:] if argv is None else argv),
                 names=TAC_NAMES, log_format=os.environ.get("WAZUHCLUSTER_LOG_FORMAT") or None)


def nodaemon_in(argv: list[str]) -> bool:
    """Whether twistd's command line asks for the foreground (``-n``/``--nodaemon``)."""
    for arg in argv:
        if arg == "--nodaemon":
            return True
        if arg.startswith("-") and not arg.startswith("--") and "n" in arg[1:]:
            return True
    return False
