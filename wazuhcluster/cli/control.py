"""``wazuhcluster-control``: ask a node about the cluster, with the options and text output of
Wazuh's ``cluster_control``.

Options (as ``cluster_control``)::

    -l, --list-nodes                 nodes             (-fn NODE ... to restrict)
    -a, --list-agents                agents            (-fn NODE ..., -fs STATUS ...)
    -i, --health [more]              health: compact, or the detailed layout with ``more``
    -u, --usage                      usage examples
    -fn, --filter-node NODE ...      -fs, --filter-agent-status STATUS ...

Extras: ``--home`` (default ``/var/ossec``) and ``--json`` (print the node's JSON answer). Errors
are printed as ``ERROR: <message>`` with exit status 1; wrong usage is refused, never ignored.

The agents table is built in two steps so that the source of the agents can change: a source
returns agent dicts (keys ``id``, ``name``, ``ip``, ``status``, ``version``, ``node_name``),
:func:`filter_agents` and :func:`format_agents_table` turn them into the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from wazuhcluster.cli.runner import decode_answer, run_cli
from wazuhcluster.dapi.results import WazuhException
from wazuhcluster.errors import ClusterError
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.commands import GET_HEALTH, GET_NODES

DEFAULT_HOME = "/var/ossec"
#: The agents table: dict key and column title, in Wazuh's order.
AGENT_COLUMNS = (("id", "ID"), ("name", "Name"), ("ip", "IP"), ("status", "Status"),
                 ("version", "Version"), ("node_name", "Node name"))
USAGE = """
Examples ({0}):
  {0} -l                             the cluster's nodes
  {0} -l -fn worker1 worker2         only these nodes
  {0} -a                             every agent, as the master sees it
  {0} -a -fn worker1                 agents reporting to worker1
  {0} -a -fs active disconnected     agents with one of these statuses
  {0} -i                             health: last synchronizations of each worker
  {0} -i more                        health in detail, with durations
  {0} -i -fn worker1                 health of worker1 only
Add --home DIR for a home other than /var/ossec, --json for the node's JSON answer.
"""


class UsageError(Exception):
    """Options that do not go together; printed as ``ERROR: ...`` with the usage."""


def build_parser() -> argparse.ArgumentParser:
    """The command line (cluster_control's options, plus ``--home`` and ``--json``)."""
    parser = argparse.ArgumentParser(prog="wazuhcluster-control",
                                     description="Query a wazuhcluster node, like Wazuh's "
                                                 "cluster_control.")
    parser.add_argument("--home", default=DEFAULT_HOME,
                        help=f"the node's home directory (default {DEFAULT_HOME})")
    parser.add_argument("-d", "--debug", action="store_true", help="enable debug mode")
    parser.add_argument("-fn", "--filter-node", dest="filter_node", nargs="*", default=None,
                        help="filter by node name")
    parser.add_argument("-fs", "--filter-agent-status", dest="filter_status", nargs="*",
                        default=None, help="filter by agent status (with -a)")
    parser.add_argument("--node", default=None, help=argparse.SUPPRESS)  # older -a --node N
    parser.add_argument("--json", action="store_true", help="print the node's JSON answer")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-a", "--list-agents", "--agents", dest="agents", action="store_true",
                       help="list agents")
    group.add_argument("-l", "--list-nodes", "--list", dest="list", action="store_true",
                       help="list nodes")
    group.add_argument("-i", "--health", nargs="?", const="health", default=None,
                       help="show cluster health ('-i more': detailed)")
    group.add_argument("-u", "--usage", action="store_true", help="show usage")
    group.add_argument("--dapi", metavar="FUNCTION", default=None,
                       help="run one DAPI function (Wazuh's dotted name, e.g. "
                            "wazuh.agent.get_agents) and print its answer")
    parser.add_argument("--kwargs", default=None, help="with --dapi: its arguments (JSON)")
    parser.add_argument("--type", default="local_master",
                        choices=("local_any", "local_master", "distributed_master"),
                        help="with --dapi: where it runs (default local_master)")
    group.add_argument("--reload", action="store_true",
                       help="make the node re-read its TLS certificates, CRL and cluster key")
    return parser


def check_usage(args: argparse.Namespace) -> None:
    """Refuse option combinations cluster_control refuses, and those it would ignore.

    :raises UsageError: with the reason.
    """
    if args.filter_status is not None and not args.agents:
        raise UsageError("Wrong arguments: -fs/--filter-agent-status only goes with -a")
    if args.node is not None and not args.agents:
        raise UsageError("Wrong arguments: --node only goes with -a (use -fn)")
    if args.health is not None and args.health.lower() not in ("health", "more"):
        raise UsageError(f"Wrong arguments: -i takes no value or 'more', not {args.health!r}")
    if args.filter_node is not None and not args.filter_node:
        raise UsageError("Wrong arguments: -fn/--filter-node needs at least one node name")
    if args.filter_status is not None and not args.filter_status:
        raise UsageError("Wrong arguments: -fs/--filter-agent-status needs at least one status")
    if (args.kwargs is not None or args.type != "local_master") and not args.dapi:
        raise UsageError("Wrong arguments: --kwargs and --type only go with --dapi")
    if args.usage and (args.filter_node or args.filter_status):
        raise UsageError("Wrong arguments: -u takes no filters")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """cluster_control's table: upper-case headers, each column as wide as its widest cell
    plus two spaces (trailing spaces kept, as it prints them)."""
    table = [tuple(h.upper() for h in headers), *(tuple(str(c) for c in r) for r in rows)]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(headers))]
    return "\n".join("".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     for row in table) + "\n"


def format_nodes(answer: dict[str, Any]) -> str:
    """``-l``: the get_nodes items as cluster_control prints them."""
    return format_table(["Name", "Type", "Version", "Address"],
                        [(n["name"], n["type"], n["version"], n["ip"])
                         for n in answer["items"]])


def filter_agents(agents: Iterable[dict[str, Any]], nodes: Sequence[str] | None = None,
                  statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Agents reporting to one of ``nodes`` and with one of ``statuses`` (None: all)."""
    return [a for a in agents
            if (not nodes or a.get("node_name") in nodes)
            and (not statuses or a.get("status") in statuses)]


def format_agents_table(agents: Iterable[dict[str, Any]]) -> str:
    """``-a``: ID, Name, IP, Status, Version, Node name; a missing value shows ``unknown``
    (as cluster_control fills it for never-connected agents)."""
    def cell(agent: dict[str, Any], key: str) -> str:
        value = agent.get(key)
        return "unknown" if value is None or value == "" else str(value)
    return format_table([title for _, title in AGENT_COLUMNS],
                        [[cell(a, key) for key, _ in AGENT_COLUMNS] for a in agents])


def duration(start: str, end: str) -> str:
    """cluster_control's duration of a health step: seconds rounded to 3 decimals, at least
    ``0.001s``; ``n/a`` when a date is ``n/a``."""
    if start == "n/a" or end == "n/a":
        return "n/a"
    def parse(text: str) -> datetime.datetime:
        return datetime.datetime.strptime(text + "+0000", "%Y-%m-%dT%H:%M:%S.%fZ%z")
    try:
        seconds = (parse(end) - parse(start)).total_seconds()
    except ValueError:
        return "n/a"
    return f"{round(seconds, 3) if seconds >= 0.0005 else 0.001}s"


def format_health(answer: dict[str, Any], cluster_name: str, more: bool = False) -> str:
    """``-i`` (compact) or ``-i more`` (detailed) as cluster_control prints them."""
    head = f"Cluster name: {cluster_name}\n\n"
    head += (f"Connected nodes ({answer['n_connected_nodes']}):" if more else
             f"Last completed synchronization for connected nodes "
             f"({answer['n_connected_nodes']}):\n")
    detail = ""
    for name, node in sorted(answer["nodes"].items()):
        info = node["info"]
        detail += (f"\n    {name} ({info['ip']})\n        Version: {info['version']}\n"
                   f"        Type: {info['type']}\n"
                   f"        Active agents: {info.get('n_active_agents', 0)}\n")
        if info["type"] == "master":
            continue
        status = node["status"]
        ci, si = status["last_check_integrity"], status["last_sync_integrity"]
        ai, ag = status["last_sync_agentinfo"], status["last_sync_agentgroup"]
        fg = status["last_sync_full_agentgroup"]
        if not more:
            head += (f"    {name} ({info['ip']}): Integrity check: {ci['date_end_master']} | "
                     f"Integrity sync: {si['date_end_master']} | "
                     f"Agents-info: {ai['date_end_master']} | Agent-groups: {ag['date_end']} | "
                     f"Agent-groups full: {fg['date_end']} | "
                     f"Last keep alive: {status['last_keep_alive']}.\n")
        files = si["total_files"]

        def span(step: dict[str, Any], start: str, end: str) -> str:
            return f"{duration(step[start], step[end])} ({step[start]} - {step[end]})."

        master = ("date_start_master", "date_end_master")
        plain = ("date_start", "date_end")
        detail += (
            "        Status:\n"
            "            Last keep Alive:\n"
            f"                Last received: {status['last_keep_alive']}.\n"
            "            Integrity check:\n"
            f"                Last integrity check: {span(ci, *master)}\n"
            f"                Permission to check integrity: {status['sync_integrity_free']}.\n"
            "            Integrity sync:\n"
            f"                Last integrity synchronization: {span(si, *master)}\n"
            f"                Synchronized files: Shared: {files['shared']} | Missing: "
            f"{files['missing']} | Extra: {files['extra']}.\n"
            "            Agents-info:\n"
            f"                Last synchronization: {span(ai, *master)}\n"
            f"                Number of synchronized chunks: {ai['n_synced_chunks']}.\n"
            "                Permission to synchronize agent-info: "
            f"{status['sync_agent_info_free']}.\n"
            "            Agents-groups:\n"
            f"                Last synchronization: {span(ag, *plain)}\n"
            f"                Number of synchronized chunks: {ag['n_synced_chunks']}.\n"
            "            Agents-groups full:\n"
            f"                Last synchronization: {span(fg, *plain)}\n"
            f"                Number of synchronized chunks: {fg.get('n_synced_chunks', 0)}.\n")
    return head + "\n" + (detail + "\n" if more else "")


async def fetch_agents(reactor: Any, socket_path: str) -> list[dict[str, Any]]:
    """Every agent as the master sees it: ``Agent.get_agents_overview`` through the DAPI
    (``local_master``), from any node."""
    from wazuhcluster.dapi.client import build_request, dapi_call

    # The filters as 4.7.5's cluster_control sends them: "all", not null (a Wazuh master
    # reads a null filter as "column IS NULL" and answers no agent at all).
    request = build_request("wazuh.core.agent.Agent.get_agents_overview",
                            {"filters": {"status": "all", "node_name": "all"}, "limit": None,
                             "select": ["id", "ip", "name", "status", "node_name", "version"]})
    answer = await dapi_call(reactor, socket_path, request)
    agents: list[dict[str, Any]] = answer["items"]
    return agents


async def run_dapi(reactor: Any, socket_path: str, args: argparse.Namespace) -> int:
    """``--dapi FUNCTION``: one DAPI request; print the decoded answer."""
    from wazuhcluster.dapi import codec
    from wazuhcluster.dapi.client import build_request, dapi_call
    from wazuhcluster.dapi.results import AbstractWazuhResult, WazuhException, json_default

    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        sys.stderr.write(f"ERROR: --kwargs must be a JSON object ({e})\n")
        return 1
    try:
        answer = await dapi_call(reactor, socket_path,
                                 build_request(args.dapi, kwargs, args.type))
    except WazuhException as e:
        sys.stderr.write(f"ERROR: {e}\n")
        return 1
    if args.json:
        sys.stdout.write(codec.dumps(answer) + "\n")
    else:
        body = answer.render() if isinstance(answer, AbstractWazuhResult) else answer
        sys.stdout.write(json.dumps(body, indent=2, default=json_default) + "\n")
    return 0


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Perform the request and print the answer; return the exit status."""
    socket_path = os.path.join(args.home, "queue", "cluster", "c-internal.sock")
    try:
        if args.dapi:
            return await run_dapi(reactor, socket_path, args)
        if args.reload:
            answer = decode_answer(await local_request(reactor, socket_path, b"wzc_reload", b""))
            sys.stdout.write(json.dumps(answer) + "\n")
            return 0
        if args.agents:
            nodes = list(args.filter_node or []) + ([args.node] if args.node else [])
            agents = filter_agents(await fetch_agents(reactor, socket_path), nodes,
                                   args.filter_status)
            sys.stdout.write(json.dumps(agents, indent=1) + "\n" if args.json
                             else format_agents_table(agents))
        elif args.list:
            kwargs = {"filter_node": args.filter_node, "offset": 0, "limit": None,
                      "sort": None, "search": None, "select": None, "filter_type": "all"}
            answer = decode_answer(await local_request(reactor, socket_path, GET_NODES,
                                                       json.dumps(kwargs).encode()))
            sys.stdout.write(json.dumps(answer, indent=2) + "\n" if args.json
                             else format_nodes(answer))
        else:
            answer = decode_answer(await local_request(
                reactor, socket_path, GET_HEALTH, json.dumps(args.filter_node).encode()))
            config = json.loads(await local_request(reactor, socket_path, b"get_config", b""))
            sys.stdout.write(json.dumps(answer, indent=2) + "\n" if args.json
                             else format_health(answer, config.get("name", ""),
                                                args.health.lower() == "more"))
    except (ClusterError, OSError, WazuhException) as e:
        sys.stderr.write(f"ERROR: {e}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_usage(args)
    except UsageError as e:
        sys.stderr.write(f"ERROR: {e}\n")
        sys.stderr.write(USAGE.format(parser.prog))
        raise SystemExit(1) from None
    if args.usage:
        sys.stdout.write(USAGE.format(parser.prog))
        return
    if not (args.agents or args.list or args.health or args.dapi or args.reload):
        parser.print_help()
        return
    run_cli(run, args)
