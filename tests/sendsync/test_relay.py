"""Settings, request parsing and the concurrency bound of the master's relay."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.errors import ConfigError
from wazuhcluster.sendsync.daemon import DaemonError, DaemonUnreachable
from wazuhcluster.sendsync.relay import (
    SendSyncError,
    SendSyncRelay,
    SendSyncSettings,
    parse_request,
)


def request(daemon: str = "authd", message: Any = None) -> bytes:
    return json.dumps({"daemon_name": daemon, "message": message or {"function": "add"}}).encode()


class SettingsTests(SynchronousTestCase):
    """Section ``sendsync`` of etc/wazuhcluster.yaml."""

    def test_defaults(self) -> None:
        s = SendSyncSettings.from_settings("/h", {})
        self.assertEqual(dict(s.sockets), {
            "authd": "/h/queue/sockets/auth", "remoted": "/h/queue/sockets/remote",
            "task-manager": "/h/queue/tasks/task", "wazuh-db": "/h/queue/db/wdb"})
        self.assertEqual((s.timeout, s.max_concurrent, s.max_queued), (30.0, 16, 1024))

    def test_overrides(self) -> None:
        s = SendSyncSettings.from_settings("/h", {"sendsync": {
            "sockets": {"authd": "/run/auth.sock", "remoted": "x/remote"}, "timeout": 2,
            "max_concurrent": 3}})
        self.assertEqual((s.sockets["authd"], s.sockets["remoted"]),
                         ("/run/auth.sock", "/h/x/remote"))
        self.assertEqual((s.timeout, s.max_concurrent), (2.0, 3))

    def test_bad_values_name_the_key(self) -> None:
        cases = [({"sockets": {"analysisd": "x"}}, "sendsync.sockets.analysisd"),
                 ({"sockets": ["x"]}, "sendsync.sockets"),
                 ({"timeout": 0}, "sendsync.timeout"),
                 ({"max_concurrent": "many"}, "sendsync.max_concurrent"),
                 ({"other": 1}, "sendsync.other")]
        for section, key in cases:
            with self.assertRaises(ConfigError) as caught:
                SendSyncSettings.from_settings("/h", {"sendsync": section})
            self.assertIn(key, str(caught.exception))


class ParseTests(SynchronousTestCase):
    """``{"daemon_name", "message"}``."""

    def test_object_message_serialised_like_wazuh(self) -> None:
        parsed = parse_request(request("authd", {"function": "add", "arguments": {"a": 1}}))
        self.assertEqual(parsed.daemon_name, "authd")
        self.assertEqual(parsed.message, b'{"function": "add", "arguments": {"a": 1}}')

    def test_string_message_sent_as_is(self) -> None:
        self.assertEqual(parse_request(request("wazuh-db", "global sql SELECT 1")).message,
                         b"global sql SELECT 1")

    def test_invalid(self) -> None:
        for payload in (b"{not json", b"[1]", b'{"daemon_name": "authd"}', b"\xff\xfe"):
            self.assertRaises(SendSyncError, parse_request, payload)
        with self.assertRaises(SendSyncError) as caught:
            parse_request(request("analysisd"))
        self.assertIn("unknown daemon 'analysisd'", str(caught.exception))


class RelayTests(SynchronousTestCase):
    """Requests run concurrently, at most max_concurrent at a time; errors become text."""

    def setUp(self) -> None:
        self.calls: list[tuple[str, bytes, Deferred[bytes]]] = []

    async def _ask(self, reactor: Any, path: str, message: bytes, timeout: float) -> bytes:
        d: Deferred[bytes] = Deferred()
        self.calls.append((path, message, d))
        return await d

    def _relay(self, **section: Any) -> SendSyncRelay:
        settings = SendSyncSettings.from_settings("/h", {"sendsync": section})
        return SendSyncRelay(None, settings, ask=self._ask)

    def test_bound_and_order(self) -> None:
        relay = self._relay(max_concurrent=2, max_queued=2)
        results = [Deferred.fromCoroutine(relay.forward(request())) for _ in range(4)]
        self.assertEqual(len(self.calls), 2)  # two at once, not one (Wazuh) nor four
        self.assertEqual((relay.active, relay.queued), (2, 2))
        refused = Deferred.fromCoroutine(relay.forward(request()))
        self.assertIn("too many sendsync requests", str(self.failureResultOf(
            refused, SendSyncError).value))
        self.calls[1][2].callback(b"second")  # answers in any order
        self.assertEqual(self.successResultOf(results[1]), b"second")
        self.assertEqual(len(self.calls), 3)
        for _, _, d in self.calls:  # the list grows as slots free up
            if not d.called:
                d.callback(b"x")
        self.assertEqual(len(self.calls), 4)
        for r in results:
            self.successResultOf(r)
        self.assertEqual((relay.active, relay.queued), (0, 0))
        self.assertEqual(self.calls[0][0], "/h/queue/sockets/auth")

    def test_daemon_error_becomes_text(self) -> None:
        relay = self._relay()
        d = Deferred.fromCoroutine(relay.forward(request("remoted")))
        self.calls[0][2].errback(DaemonUnreachable("cannot connect to /h/queue/sockets/"
                                                   "remote: No such file or directory"))
        text = str(self.failureResultOf(d, SendSyncError).value)
        # what a Wazuh 4.7.5 master answers ("Error 1013 - Unable to connect with socket:
        # remote"), then our detail
        self.assertEqual(text, "Error 1013 - Unable to connect with socket: remote (cannot "
                               "connect to /h/queue/sockets/remote: No such file or "
                               "directory)")
        self.assertEqual(relay.active, 0)
        d = Deferred.fromCoroutine(relay.forward(request("remoted")))
        self.calls[1][2].errback(DaemonError("no answer from /h/queue/sockets/remote within "
                                             "5 s"))
        text = str(self.failureResultOf(d, SendSyncError).value)
        self.assertEqual(text, "Error 1014 - Error communicating with socket: remote (no "
                               "answer from /h/queue/sockets/remote within 5 s)")
        self.assertEqual(relay.active, 0)
