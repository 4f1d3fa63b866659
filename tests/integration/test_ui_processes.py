"""The status page and the Prometheus metrics on three real ``twistd wazuhcluster`` processes
(a master and two workers, a few agents): ``/metrics`` of every node parsed with
prometheus_client's own parser, its counters moving when a sync happens; ``/ui/data``
validated against the OpenAPI document; ``/ui`` loaded in headless Chromium.

The browser gets the API's bearer token through ``/ui?token=...`` (it cannot send a header
from the command line; the page accepts the token in the URL for that case, see
docs/operations.md). Chromium comes from the OS packages: ``make test`` installs it when it is
missing and we are root; this test fails (never skips) when it is still not there.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.api.harness import ADMIN, APIClient
from tests.integration.harness import BIN, Cluster, NodeProcess
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.api.users import UserStore

AGENTS = 6
TUNABLES: dict[str, Any] = {
    "intervals": {
        "worker": {"sync_agent_info": 1, "sync_integrity": 1},
        "master": {"recalculate_integrity": 1},
    },
}
CHROMIUM = os.environ.get("WAZUHCLUSTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--ignore-certificate-errors"]  # the node's self-signed certificate


def write_keys(node: NodeProcess) -> None:
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, AGENTS + 1)]
    with open(os.path.join(node.home, "etc", "client.keys"), "w", encoding="utf-8") as f:
        f.write(format_client_keys(entries))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(node: NodeProcess) -> Samples:
    """Every sample of ``node``'s /metrics, parsed by prometheus_client."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.get(f"http://127.0.0.1:{node.metrics_port}/metrics", pool=pool)
    assert response.code == 200, response.code
    assert (response.headers.getRawHeaders("content-type") or [""])[0].startswith(
        "text/plain"), response.headers
    text = (await treq.content(response)).decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class UIProcessTests(TestCase):
    timeout = 240

    async def api_client(self, c: Cluster, node: NodeProcess) -> APIClient:
        client: APIClient = await c.api_client(node)
        return client

    async def test_metrics_page_and_browser(self) -> None:
        c = Cluster(self)
        master = c.add_node("master", "master", tunables=TUNABLES)
        write_keys(master)
        UserStore(master.home).add(*ADMIN, role="administrator")
        master.start()
        await c.wait_ready(master)
        workers = [c.add_node(name, tunables=TUNABLES) for name in ("worker1", "worker2")]
        for w in workers:
            write_keys(w)
            w.start()
        await c.wait_listed(master, {"master", "worker1", "worker2"})
        for node in (master, *workers):
            await c.wait_log(node, r"\[Metrics\] Serving Prometheus metrics on http://127\.0\.0"
                                   rf"\.1:{node.metrics_port}/metrics")

        # -- metrics: every node serves its own; the master's counters move with a sync ---
        async def both_checked() -> Samples | None:
            s = await scrape(master)
            done = all(value(s, "wazuhcluster_sync_duration_seconds_count", worker=w.name,
                             kind="integrity_check") >= 1 for w in workers)
            # the reactor lag is observed once a second
            lagged = value(s, "wazuhcluster_reactor_lag_distribution_seconds_count") > 0
            return s if done and lagged else None
        before = await c.wait_for("an integrity check of both workers and a reactor-lag "
                                  "observation in the master's metrics", both_checked, 60)
        self.assertEqual(value(before, "wazuhcluster_connected_workers"), 2)
        self.assertGreater(value(before, "wazuhcluster_link_frames_total", direction="in"), 0)
        self.assertGreater(value(before, "wazuhcluster_link_bytes_total", direction="out"), 0)
        self.assertGreater(value(before, "wazuhcluster_reactor_lag_distribution_seconds_count"),
                           0)
        pushed = value(before, "wazuhcluster_integrity_files_pushed_total", worker="worker1",
                       action="created")
        sent = value(before, "wazuhcluster_integrity_bytes_pushed_total", worker="worker1")
        syncs = value(before, "wazuhcluster_sync_duration_seconds_count", worker="worker1",
                      kind="integrity_sync")
        path = os.path.join(master.home, "etc", "rules", "ui_test_rules.xml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("<group name='ui_test'><rule id='100300' level='3'/></group>\n")

        async def synced() -> Samples | None:
            s = await scrape(master)
            moved = (value(s, "wazuhcluster_sync_duration_seconds_count", worker="worker1",
                           kind="integrity_sync") > syncs
                     and value(s, "wazuhcluster_integrity_files_pushed_total",
                               worker="worker1", action="created") > pushed)
            return s if moved else None
        after = await c.wait_for("worker1's integrity sync in the master's metrics", synced, 60)
        self.assertGreater(value(after, "wazuhcluster_integrity_bytes_pushed_total",
                                 worker="worker1"), sent)
        self.assertGreater(value(after, "wazuhcluster_sync_last_success_timestamp_seconds",
                                 worker="worker1", kind="integrity_sync"), 0)

        for index, w in enumerate(workers):  # agents 1-3 report to worker1, 4-6 to worker2
            ids = [str(i) for i in range(1 + 3 * index, 4 + 3 * index)]
            out, err, code = await getProcessOutputAndValue(
                os.path.join(BIN, "wazuhcluster-agents"),
                ["--home", w.home, "keepalive", *ids, "--version", "Wazuh v4.7.5"],
                env=dict(os.environ))
            self.assertEqual(code, 0, err + out)

        async def rows_synced() -> Samples | None:
            s = await scrape(master)
            return s if value(s, "wazuhcluster_agent_info_rows_synced_total",
                              worker="worker1") >= 3 else None
        await c.wait_for("an agent-info sync in the master's metrics", rows_synced, 60)

        async def agents_counted() -> Samples | None:
            s = await scrape(master)
            return s if all(value(s, "wazuhcluster_agents", node=w.name, status="active") == 3
                            for w in workers) else None
        await c.wait_for("the agents by status in the master's metrics", agents_counted, 60)
        for w in workers:
            ws = await scrape(w)
            self.assertEqual(value(ws, "wazuhcluster_master_connected"), 1)
            self.assertGreater(value(ws, "wazuhcluster_link_frames_total", direction="out"), 0)

        # -- the page's data, validated against the OpenAPI document ---------------------
        client = await self.api_client(c, master)
        token = await client.login()
        r = await client.request("GET", "/ui/data", token=token)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([n["name"] for n in r.body["nodes"]], ["master", "worker1", "worker2"])
        self.assertTrue(any(s["kind"] == "integrity_sync" and s["worker"] == "worker1"
                            for s in r.body["syncs"]))
        r = await client.request("GET", "/ui/data")
        self.assertEqual(r.status, 401)
        s = await scrape(master)
        self.assertGreater(value(s, "wazuhcluster_dapi_requests_total",
                                 function="wazuhcluster.ui.get_status", outcome="ok"), 0)
        # a worker's page asks the master through the DAPI: the same cluster
        at_worker = await self.api_client(c, workers[0])
        r = await at_worker.request("GET", "/ui/data", token=await at_worker.login())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(len(r.body["nodes"]), 3)

        # -- the page in a real browser ----------------------------------------------------
        if not os.access(CHROMIUM, os.X_OK):
            self.fail(f"{CHROMIUM} is missing: `make test` installs it as root with apt-get "
                      "(apt-get install chromium); install it, or set WAZUHCLUSTER_CHROMIUM")
        out_dir = os.path.abspath(self.mktemp())
        os.makedirs(out_dir)
        url = f"https://127.0.0.1:{master.api_port}/ui?token={token}"
        dom = await self.chromium(out_dir, "--dump-dom", url)
        for name in ("master", "worker1", "worker2"):
            self.assertIn(f'data-node="{name}"', dom)
        self.assertIn('<span id="node-count">3</span>', dom)
        total = re.search(r'<span id="agent-total">(\d+)</span>', dom)
        self.assertIsNotNone(total, dom[:2000])
        assert total is not None
        self.assertGreaterEqual(int(total.group(1)), AGENTS)
        for w in workers:
            self.assertRegex(dom, rf'<tr class="agents" data-node="{w.name}"><td>{w.name}</td>'
                                  r'(<td[^>]*>\d+</td>)*<td class="n" data-status="active">3<')
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart"', dom)
        self.assertRegex(dom, r'<tr class="worker-sync" data-worker="worker1">')
        shot = os.path.join(out_dir, "ui.png")
        await self.chromium(out_dir, f"--screenshot={shot}", "--window-size=1280,1600", url)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        # Without a token the browser gets the login form.
        form = await self.chromium(out_dir, "--dump-dom",
                                   f"https://127.0.0.1:{master.api_port}/ui")
        self.assertIn('<form method="post" action="/ui/login" id="login">', form)
        self.assertNotIn('data-node="worker1"', form)

    async def chromium(self, out_dir: str, *args: str) -> str:
        profile = tempfile.mkdtemp(prefix="chromium-", dir=out_dir)
        try:
            out, err, code = await getProcessOutputAndValue(
                CHROMIUM, [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                env={"HOME": out_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
        return out.decode("utf-8", "replace")
