"""wazuhcluster-control: cluster_control's options and text output (pure parts)."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.cli.control import (
    build_parser,
    check_usage,
    duration,
    filter_agents,
    format_agents_table,
    format_health,
    format_nodes,
    main,
)

AGENTS = [
    {"id": "000", "name": "manager", "ip": "127.0.0.1", "status": "active",
     "version": "Wazuh v4.7.5", "node_name": "master-node"},
    {"id": "001", "name": "web", "ip": "any", "status": "never_connected", "version": None,
     "node_name": None},
    {"id": "002", "name": "db", "ip": "10.0.0.2", "status": "active", "version": "Wazuh v4.7.5",
     "node_name": "worker1"},
    {"id": "003", "name": "mail", "ip": "10.0.0.3", "status": "disconnected",
     "version": "Wazuh v4.7.4", "node_name": "worker2"},
]


def status(end: str = "2026-01-02T03:04:05.500000Z") -> dict[str, Any]:
    start = "2026-01-02T03:04:05.496000Z"
    return {
        "last_keep_alive": "2026-01-02T03:04:00.000000Z",
        "sync_integrity_free": True, "sync_agent_info_free": True,
        "last_check_integrity": {"date_start_master": start, "date_end_master": end},
        "last_sync_integrity": {"date_start_master": "n/a", "date_end_master": "n/a",
                                "total_files": {"missing": 1, "shared": 2, "extra": 3}},
        "last_sync_agentinfo": {"date_start_master": start, "date_end_master": start,
                                "n_synced_chunks": 4},
        "last_sync_agentgroup": {"date_start": start, "date_end": end, "n_synced_chunks": 5},
        "last_sync_full_agentgroup": {"date_start": start, "date_end": end,
                                      "n_synced_chunks": 6},
    }


HEALTH = {"n_connected_nodes": 2, "nodes": {
    "worker1": {"info": {"ip": "10.0.0.9", "version": "4.7.5", "type": "worker",
                         "n_active_agents": 1}, "status": status()},
    "master-node": {"info": {"ip": "10.0.0.1", "version": "4.7.5", "type": "master",
                             "n_active_agents": 0}},
}}


class TableTests(SynchronousTestCase):
    """-l and -a tables."""

    def test_nodes_table_pads_each_column_by_two(self) -> None:
        out = format_nodes({"items": [
            {"name": "master-node", "type": "master", "version": "4.7.5", "ip": "10.0.0.1"},
            {"name": "w1", "type": "worker", "version": "4.7.5", "ip": "10.0.0.2"}]})
        self.assertEqual(out,
                         "NAME         TYPE    VERSION  ADDRESS   \n"
                         "master-node  master  4.7.5    10.0.0.1  \n"
                         "w1           worker  4.7.5    10.0.0.2  \n")

    def test_agents_columns_in_wazuh_order_with_unknown_for_missing(self) -> None:
        lines = format_agents_table(AGENTS[:2]).splitlines()
        self.assertEqual(re.split(r"\s{2,}", lines[0].strip()),
                         ["ID", "NAME", "IP", "STATUS", "VERSION", "NODE NAME"])
        self.assertEqual(lines[1].split(), ["000", "manager", "127.0.0.1", "active",
                                            "Wazuh", "v4.7.5", "master-node"])
        self.assertEqual(lines[2].split(), ["001", "web", "any", "never_connected", "unknown",
                                            "unknown"])

    def test_filters_by_nodes_and_statuses(self) -> None:
        self.assertEqual([a["id"] for a in filter_agents(AGENTS, ["worker1", "worker2"])],
                         ["002", "003"])
        self.assertEqual([a["id"] for a in filter_agents(AGENTS, None, ["active"])],
                         ["000", "002"])
        self.assertEqual([a["id"] for a in filter_agents(AGENTS, ["worker2"], ["active"])], [])
        self.assertEqual(len(filter_agents(AGENTS)), 4)


class HealthTests(SynchronousTestCase):
    """-i compact and -i more."""

    def test_duration(self) -> None:
        self.assertEqual(duration("2026-01-02T03:04:05.496000Z", "2026-01-02T03:04:05.500000Z"),
                         "0.004s")
        self.assertEqual(duration("2026-01-02T03:04:05.496000Z", "2026-01-02T03:04:05.496000Z"),
                         "0.001s")
        self.assertEqual(duration("n/a", "2026-01-02T03:04:05.496000Z"), "n/a")

    def test_compact_is_the_default(self) -> None:
        self.assertEqual(format_health(HEALTH, "wazuh"), (
            "Cluster name: wazuh\n\n"
            "Last completed synchronization for connected nodes (2):\n"
            "    worker1 (10.0.0.9): Integrity check: 2026-01-02T03:04:05.500000Z | "
            "Integrity sync: n/a | Agents-info: 2026-01-02T03:04:05.496000Z | "
            "Agent-groups: 2026-01-02T03:04:05.500000Z | "
            "Agent-groups full: 2026-01-02T03:04:05.500000Z | "
            "Last keep alive: 2026-01-02T03:04:00.000000Z.\n\n"))

    def test_more_has_the_detailed_layout_with_durations(self) -> None:
        out = format_health(HEALTH, "wazuh", more=True)
        self.assertTrue(out.startswith("Cluster name: wazuh\n\nConnected nodes (2):\n\n"
                                       "    master-node (10.0.0.1)\n        Version: 4.7.5\n"
                                       "        Type: master\n        Active agents: 0\n\n"
                                       "    worker1 (10.0.0.9)\n"), out)
        self.assertIn("            Last keep Alive:\n"
                      "                Last received: 2026-01-02T03:04:00.000000Z.\n", out)
        self.assertIn("                Last integrity check: 0.004s "
                      "(2026-01-02T03:04:05.496000Z - 2026-01-02T03:04:05.500000Z).\n", out)
        self.assertIn("                Last integrity synchronization: n/a (n/a - n/a).\n", out)
        self.assertIn("                Synchronized files: Shared: 2 | Missing: 1 | Extra: 3.\n",
                      out)
        self.assertIn("                Permission to synchronize agent-info: True.\n", out)
        self.assertIn("            Agents-groups full:\n"
                      "                Last synchronization: 0.004s", out)
        self.assertTrue(out.endswith("Number of synchronized chunks: 6.\n\n"))


class UsageTests(SynchronousTestCase):
    """Options: cluster_control's, defaults, and wrong usage refused."""

    def parse(self, *argv: str) -> Any:
        return build_parser().parse_args(list(argv))

    def test_defaults(self) -> None:
        args = self.parse("-a", "-fn", "w1", "w2", "-fs", "active")
        self.assertEqual(args.home, "/var/ossec")
        self.assertEqual((args.filter_node, args.filter_status), (["w1", "w2"], ["active"]))
        self.assertEqual(self.parse("-i").health, "health")
        self.assertEqual(self.parse("-i", "more").health, "more")
        self.assertTrue(self.parse("--list-agents").agents)
        self.assertTrue(self.parse("--list-nodes").list)

    def refused(self, *argv: str) -> str:
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()), \
                self.assertRaises(SystemExit) as caught:
            main(list(argv))
        self.assertEqual(caught.exception.code, 1)
        return err.getvalue()

    def test_wrong_usage_is_refused_with_error_prefix(self) -> None:
        self.assertTrue(self.refused("-l", "-fs", "active").startswith(
            "ERROR: Wrong arguments: -fs"))
        self.assertIn("-i takes no value or 'more'", self.refused("-i", "detailed"))
        self.assertIn("--node only goes with -a", self.refused("-l", "--node", "w1"))
        self.assertIn("needs at least one node name", self.refused("-a", "-fn"))
        self.assertIn("only go with --dapi", self.refused("-l", "--kwargs", "{}"))
        self.assertIn("only go with --dapi", self.refused("-a", "--type", "local_any"))

    def test_check_usage_accepts_valid_combinations(self) -> None:
        for argv in (("-a", "-fn", "w1"), ("-a", "-fs", "active"), ("-l", "-fn", "w1"),
                     ("-i", "-fn", "w1"), ("-i", "more"),
                     ("--dapi", "wazuh.agent.get_agents", "--kwargs", '{"limit": 1}', "--type",
                      "local_any", "--json")):
            check_usage(self.parse(*argv))

    def test_usage_and_help_exit_zero(self) -> None:
        out = io.StringIO()
        with redirect_stdout(out):
            main(["-u"])
        self.assertIn("-a -fs active disconnected", out.getvalue())
        out = io.StringIO()
        with redirect_stdout(out):
            main([])
        self.assertIn("usage: wazuhcluster-control", out.getvalue())
