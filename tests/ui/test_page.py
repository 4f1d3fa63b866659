"""The sync history ring, the status data function and the page's HTML (escaping, chart)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.api.fakes import FakeNode
from tests.support import node_config, short_tempdir
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.interfaces import IClusterEvents, IWebPage
from wazuhcluster.ui.history import SyncHistory
from wazuhcluster.ui.page import ORIGIN_STEP, login_page, status_page
from wazuhcluster.ui.resource import StatusPage
from wazuhcluster.ui.status import make_get_status, problem_lines, status_json

EVIL = "<script>alert('x')</script>\"&"
SERIES = re.compile(r'<path class="series" data-kind="([^"]*)" data-worker="([^"]*)" '
                    r'stroke="[^"]*" marker-start="url\(#dot\d\)" marker-mid="url\(#dot\d\)" '
                    r'marker-end="url\(#dot\d\)" d="M([^"]*)"><title>([^<]*)</title></path>')


def series(html: str) -> dict[tuple[str, str], tuple[int, str]]:
    """The chart's lines: (kind, worker) -> (points drawn, title)."""
    found = {}
    for kind, worker, d, title in SERIES.findall(html):
        numbers = d.split()
        assert len(numbers) % 2 == 0, d
        assert numbers[:2] == numbers[2:4], d  # the first point twice
        found[(kind, worker)] = (len(numbers) // 2 - 1, title)
    return found


class HistoryTests(SynchronousTestCase):
    def test_keeps_the_last_hour_in_a_bounded_ring(self) -> None:
        clock = Clock()
        history = SyncHistory(clock, keep=3600.0, max_records=3)
        verifyObject(IClusterEvents, history)
        for i in range(5):
            history.sync_done("w1", "integrity_check", float(i), float(i) + 0.5, True, {})
        self.assertEqual([r.started for r in history.recent()], [2.0, 3.0, 4.0])
        clock.advance(3600 + 3.6)  # 2.5 and 3.5 are now more than an hour old
        self.assertEqual([r.started for r in history.recent()], [4.0])
        history.sync_done("w1", "integrity_sync", clock.seconds() - 2, clock.seconds(), True,
                          {"created": 1})
        history.sync_done("w1", "integrity_sync", clock.seconds(), clock.seconds(), False, {})
        last = history.last("w1", "integrity_sync")
        assert last is not None
        self.assertEqual((last.duration, last.counts["created"]), (2.0, 1))
        self.assertIsNone(history.last("w2", "integrity_sync"))


def status_data(now: float = 10_000.0) -> dict[str, Any]:
    def node(name: str, kind: str) -> dict[str, Any]:
        return {"name": name, "type": kind, "version": EVIL, "ip": EVIL, "active_agents": 2,
                "connected_since": EVIL, "last_keep_alive": EVIL,
                "last_check_integrity": {"start": "n/a", "end": EVIL},
                "last_sync_integrity": {"start": "n/a", "end": "n/a", "created": 0,
                                        "updated": 0, "deleted": 0},
                "last_sync_agentinfo": {"start": "n/a", "end": "n/a", "chunks": 0}}
    return {"cluster": EVIL, "node": "master", "now": now, "history_seconds": 3600.0,
            "nodes": [node("master", "master"), node(EVIL, "worker"), node("w2", "worker")],
            "agents": {EVIL: {"active": 3, EVIL: 1}},
            "syncs": [{"worker": EVIL, "kind": "integrity_sync", "started": now - 60,
                       "ended": now - 58.5, "duration": 1.5, "ok": True,
                       "counts": {"created": 4, "updated": 5, "deleted": 6}},
                      {"worker": "w2", "kind": "agent_info", "started": now - 10,
                       "ended": now - 9.99, "duration": 0.01, "ok": True,
                       "counts": {"rows": 9}}],
            "log": [f"2026/11/28 10:00:00 ERROR: [Worker {EVIL}] bad"]}


class PageTests(SynchronousTestCase):
    def test_every_peer_string_is_escaped(self) -> None:
        html = status_page(status_data(), EVIL, "csrf-token", "nonce1", cookie_session=True)
        self.assertNotIn("<script>", html)
        self.assertNotIn("alert('x')", html)
        self.assertIn("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;", html)
        self.assertNotIn("<script", html.lower())

    def test_content_chart_refresh_and_logout_form(self) -> None:
        html = status_page(status_data(), "admin", "csrf-token", "nonce1", cookie_session=True)
        self.assertIn('<meta http-equiv="refresh" content="10">', html)
        self.assertIn('<span id="node-count">3</span>', html)
        self.assertIn('<span id="agent-total">4</span>', html)
        self.assertIn('<style nonce="nonce1">', html)
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart"', html)
        self.assertEqual(series(html), {
            ("integrity_sync", "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;"):
            (1, "Integrity sync &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;: 1 "
                "syncs, last 1.50 s at 1970-01-01 02:45:41 UTC, slowest 1.50 s"),
            ("agent_info", "w2"): (1, "Agent-info sync w2: 1 syncs, last 10 ms at 1970-01-01 "
                                      "02:46:30 UTC, slowest 10 ms")})
        self.assertIn("Integrity sync (1)", html)
        self.assertIn("1.50 s", html)  # the last integrity sync's duration
        self.assertIn('<td class="n">4</td><td class="n">5</td><td class="n">6</td>', html)
        self.assertIn('<input type="hidden" name="csrf" value="csrf-token">', html)
        self.assertNotIn("http://", html.replace("http://www.w3.org/2000/svg", ""))
        self.assertNotIn("https://", html)  # nothing from a CDN
        bare = status_page(status_data(), "admin", "c", "n", cookie_session=False)
        self.assertNotIn("/ui/logout", bare)

    def test_login_form(self) -> None:
        html = login_page("tok", "n", EVIL)
        self.assertIn('<form method="post" action="/ui/login" id="login">', html)
        self.assertIn('value="tok"', html)
        self.assertNotIn("<script>", html)
        self.assertNotIn("http-equiv=\"refresh\"", html)


class StatusFunctionTests(SynchronousTestCase):
    def test_problem_lines_are_the_last_errors_and_warnings(self) -> None:
        path = os.path.join(short_tempdir(self), "cluster.log")
        with open(path, "w") as f:
            for i in range(30):
                f.write(f"2026/11/28 10:00:{i:02d} INFO: [Master] [Main] fine {i}\n")
                f.write(f"2026/11/28 10:00:{i:02d} ERROR: [Master] [Main] broken {i}\n")
                f.write(f"2026/11/28 10:00:{i:02d} WARNING: [Master] [Main] odd {i}\n")
        lines = problem_lines(path, limit=3)
        self.assertEqual([line.split("] ")[-1] for line in lines],
                         ["odd 28", "broken 29", "odd 29"])
        self.assertEqual(problem_lines(path + ".missing"), [])

    def test_status_without_workers(self) -> None:
        clock = Clock()
        clock.advance(500)
        node = FakeNode(node_config(short_tempdir(self)), clock=clock)
        history = SyncHistory(clock)
        history.sync_done("w1", "integrity_check", 499.0, 499.5, True, {})
        ctx = DapiContext.for_node(node)
        result = self.successResultOf(Deferred.fromCoroutine(make_get_status(history)(ctx)))
        data = result.render()["data"]
        self.assertEqual((data["node"], data["now"], data["nodes"]), ("master-node", 500.0, []))
        self.assertEqual([s["worker"] for s in data["syncs"]], ["w1"])

    def test_many_syncs_keep_the_newest_and_the_slowest(self) -> None:
        from wazuhcluster.ui.history import SyncRecord
        from wazuhcluster.ui.status import shown_syncs

        records = [SyncRecord("w", "integrity_check", float(i), float(i) + (50.0 if i == 3
                                                                            else 0.1), True, {})
                   for i in range(100)]
        shown = shown_syncs(records, limit=20)
        self.assertEqual(len(shown), 20)
        self.assertEqual(shown[-18:], records[-18:])
        self.assertIn(records[3], shown)
        self.assertEqual(shown, sorted(shown, key=lambda r: r.ended))
        self.assertEqual(shown_syncs(records[:5], limit=20), records[:5])

    def test_page_provides_its_interface(self) -> None:
        verifyObject(IWebPage, StatusPage(object(), Clock()))


class KeptRenderingTests(SynchronousTestCase):
    """Each sync's dict, JSON text and chart point are made once and kept with the sync; what
    is kept must never show anything else than a page made from scratch."""

    def views(self, history: SyncHistory) -> list[Any]:
        return [r.view() for r in history.recent()]

    def page_and_plain(self, history: SyncHistory, now: float) -> tuple[str, str]:
        data = dict(status_data(now), syncs=self.views(history))
        plain = dict(data, syncs=[r.to_dict() for r in history.recent()])
        return (status_page(data, "admin", "c", "n", cookie_session=False),
                status_page(plain, "admin", "c", "n", cookie_session=False))

    def test_sync_view_is_made_once_and_is_the_record(self) -> None:
        history = SyncHistory(Clock())
        history.sync_done(EVIL, "integrity_sync", 1.0, 2.5, True, {"created": 3})
        record = history.recent()[0]
        view = record.view()
        self.assertIs(record.view(), view)
        self.assertEqual(view, record.to_dict())
        self.assertEqual(json.loads(view.json), record.to_dict())

    def test_data_json_is_the_plain_encoding(self) -> None:
        history = SyncHistory(Clock())
        for i in range(3):
            history.sync_done(EVIL, "agent_info", float(i), i + 0.25, True, {"rows": i})
        data = dict(status_data(), syncs=self.views(history))
        self.assertEqual(json.loads(status_json(data)), json.loads(json.dumps(data)))
        plain = dict(data, syncs=[dict(s) for s in data["syncs"]])
        self.assertEqual(json.loads(status_json(plain)), json.loads(json.dumps(data)))
        self.assertEqual(json.loads(status_json(dict(data, syncs=[]))),
                         dict(json.loads(json.dumps(data)), syncs=[]))

    def test_chart_points_are_kept_and_drawn_again_when_the_data_moves(self) -> None:
        clock = Clock()
        clock.advance(100_000.0)
        history = SyncHistory(clock)
        for _ in range(5):
            now = clock.seconds()
            history.sync_done("w1", "integrity_check", now - 0.02, now, True, {})
            clock.advance(7.0)
        page, plain = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page, plain)
        first = [v.fragment for v in self.views(history)]
        self.assertNotIn(None, first)
        # Later, same origin and scale: the kept points are reused; the page still equals a
        # page made from scratch (the group moved, not the points).
        clock.advance(5.0)
        history.sync_done("w2", "integrity_sync", clock.seconds() - 0.015, clock.seconds(),
                          True, {"created": 1})
        page2, plain2 = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page2, plain2)
        self.assertNotEqual(page2, page)
        self.assertEqual([v.fragment for v in self.views(history)][:5], first)
        self.assertEqual({k: v[0] for k, v in series(page2).items()},
                         {("integrity_check", "w1"): 5, ("integrity_sync", "w2"): 1})
        # A slow sync changes the scale: every point is drawn again.
        history.sync_done("w1", "integrity_sync", clock.seconds() - 40.0, clock.seconds(),
                          True, {})
        page3, plain3 = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page3, plain3)
        self.assertNotIn(first[0], [v.fragment for v in self.views(history)])
        # Time passes the origin's step: drawn again, still the same as from scratch.
        kept = [v.fragment for v in self.views(history)]
        clock.advance(ORIGIN_STEP)
        page4, plain4 = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page4, plain4)
        self.assertFalse(set(kept) & {v.fragment for v in self.views(history)})
        # An hour later the old points are gone from the page.
        clock.advance(3600.0)
        history.sync_done("w1", "agent_info", clock.seconds() - 0.01, clock.seconds(), True, {})
        page5, plain5 = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page5, plain5)
        self.assertEqual({k: v[0] for k, v in series(page5).items()},
                         {("agent_info", "w1"): 1})

    def test_an_hour_of_syncs_is_one_line_per_worker_and_kind(self) -> None:
        """2 000 syncs of two workers: six lines holding every point, in a page of some
        40 kB (a circle with its own title per sync made it 268 kB)."""
        clock = Clock()
        clock.advance(100_000.0)
        history = SyncHistory(clock)
        for i in range(2000):
            kind = ("integrity_check", "integrity_sync", "agent_info")[i % 3]
            history.sync_done(f"worker{i % 2 + 1}", kind, clock.seconds() - 0.01 * (i % 7 + 1),
                              clock.seconds(), True, {"created": 1})
            clock.advance(1.75)
        page, plain = self.page_and_plain(history, clock.seconds())
        self.assertEqual(page, plain)
        lines = series(page)
        self.assertEqual(len(lines), 6)
        self.assertEqual(sum(points for points, _ in lines.values()), 2000)
        self.assertIn("Integrity sync worker2: 334 syncs, last 50 ms at", lines[
            ("integrity_sync", "worker2")][1])
        self.assertIn("slowest 70 ms", lines[("integrity_sync", "worker2")][1])
        self.assertLess(len(page.encode()), 45_000)
