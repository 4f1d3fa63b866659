"""wazuhcluster.startup: one-line start-up failures, in the foreground and in daemon mode."""

from __future__ import annotations

import gc
import io
import sys
from contextlib import redirect_stderr

from twisted.application.service import Service
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.startup import SWITCH_INTERVAL, NodeRoot, StartupError, nodaemon_in


class Failing(Service):
    """A child whose start fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def startService(self) -> None:
        raise self.error


class NodeRootTests(SynchronousTestCase):
    """How NodeRoot reports a child's start-up failure."""

    def root(self, error: BaseException, daemon: bool) -> NodeRoot:
        root = NodeRoot()
        root.daemon = daemon
        Failing(error).setServiceParent(root)
        return root

    def test_foreground_os_error_is_one_line_system_exit(self) -> None:
        error = PermissionError(13, "Permission denied", "/h/logs/cluster.log")
        with self.assertRaises(SystemExit) as caught:
            self.root(error, daemon=False).startService()
        self.assertEqual(caught.exception.code,
                         "wazuhcluster: cannot write /h/logs/cluster.log (Permission denied): "
                         "make the home writable by the user running wazuhcluster (see "
                         "docs/operations.md, 'The home')")

    def test_daemon_failures_become_startup_error(self) -> None:
        for error in (SystemExit("wazuhcluster: cannot listen on x"),
                      FileExistsError(17, "File exists", "/h/var/run")):
            err = io.StringIO()
            with redirect_stderr(err), self.assertRaises(StartupError) as caught:
                self.root(error, daemon=True).startService()
            self.assertTrue(str(caught.exception).startswith("wazuhcluster: "))
            self.assertEqual(err.getvalue(), str(caught.exception) + "\n")
        self.assertIn("a file is in the way of a directory", str(caught.exception))

    def test_foreground_system_exit_passes_unchanged(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            self.root(SystemExit("wazuhcluster: x"), daemon=False).startService()
        self.assertEqual(caught.exception.code, "wazuhcluster: x")

    def test_short_switch_interval_while_running(self) -> None:
        """While the node runs, threads switch every 0.5 ms (the reactor thread gets the GIL
        back from a busy pool thread sooner); the interval before is restored at stop, and
        after a failed start."""
        before = sys.getswitchinterval()
        self.addCleanup(sys.setswitchinterval, before)
        seen: list[float] = []

        class Watching(Service):
            def startService(self) -> None:
                seen.append(sys.getswitchinterval())

        root = NodeRoot()
        Watching().setServiceParent(root)
        root.startService()
        self.assertEqual(seen, [SWITCH_INTERVAL])
        self.assertAlmostEqual(SWITCH_INTERVAL, 0.0005)
        self.assertAlmostEqual(sys.getswitchinterval(), SWITCH_INTERVAL)
        root.stopService()
        self.assertAlmostEqual(sys.getswitchinterval(), before)
        with self.assertRaises(SystemExit):
            self.root(SystemExit("wazuhcluster: x"), daemon=False).startService()
        self.assertAlmostEqual(sys.getswitchinterval(), before)

    def test_start_up_objects_frozen_while_running(self) -> None:
        """Once the tree has started, the objects of the start-up are out of the collector's
        view (a full collection no longer scans them); at stop they are handed back. A failed
        start freezes nothing."""
        self.addCleanup(gc.unfreeze)
        self.assertEqual(gc.get_freeze_count(), 0)
        root = NodeRoot()
        Service().setServiceParent(root)
        root.startService()
        self.assertGreater(gc.get_freeze_count(), 1000)
        root.stopService()
        self.assertEqual(gc.get_freeze_count(), 0)
        with self.assertRaises(SystemExit):
            self.root(SystemExit("wazuhcluster: x"), daemon=False).startService()
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_nodaemon_detection(self) -> None:
        self.assertTrue(nodaemon_in(["-n", "--pidfile=", "-y", "tac/master.tac"]))
        self.assertTrue(nodaemon_in(["-ny", "tac/master.tac"]))
        self.assertTrue(nodaemon_in(["--nodaemon", "-y", "x.tac"]))
        self.assertFalse(nodaemon_in(["--pidfile=/p", "--logfile=/l", "-y", "tac/master.tac"]))


class LogFormatOptionTests(SynchronousTestCase):
    """``twistd wazuhcluster --log-format``."""

    def test_values(self) -> None:
        from twisted.python import usage

        from wazuhcluster.tap import Options

        options = Options()
        options.parseOptions(["--home", "/h", "--log-format", "json"])
        self.assertEqual(options["log-format"], "json")
        self.assertRaises(usage.UsageError, Options().parseOptions,
                          ["--home", "/h", "--log-format", "xml"])
