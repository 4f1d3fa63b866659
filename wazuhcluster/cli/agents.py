"""``wazuhcluster-agents``: list agents, assign groups and record keepalives through a node's
local socket.

Examples::

    wazuhcluster-agents --home /var/ossec list --json
    wazuhcluster-agents --home /var/ossec list --node worker1
    wazuhcluster-agents --home /var/ossec set-group 1 default,web      (master only)
    wazuhcluster-agents --home /var/ossec keepalive 1 2 3 --os-name Ubuntu --version v4.7.5
    wazuhcluster-agents --home /var/ossec enrol web-01 --group web --node 10.0.0.2:1515
    wazuhcluster-agents --home /var/ossec remove 7 8 --purge              (master only)
    wazuhcluster-agents --home /var/ossec simulate --nodes 10.0.0.2:1515,10.0.0.3:1515 \
        --homes /var/w1,/var/w2 --count 500 --keepalive 10 --duration 120 --churn 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from wazuhcluster.agents.listing import (
    WZC_AG_GRP,
    WZC_AG_KAL,
    WZC_AG_LIST,
    KeepaliveRequest,
    encode_groups_request,
    encode_keepalive_request,
    encode_list_request,
)
from wazuhcluster.cli.runner import decode_answer, run_cli
from wazuhcluster.errors import ClusterError
from wazuhcluster.localapi.client import local_request


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="wazuhcluster-agents",
                                     description="Agents of a wazuhcluster node.")
    parser.add_argument("--home", required=True, help="the node's home directory")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="agents in this node's database")
    listing.add_argument("--node", default=None, help="only agents reporting to this node")
    listing.add_argument("--json", action="store_true", help="print JSON")
    group = sub.add_parser("set-group", help="assign groups to an agent (master only)")
    group.add_argument("agent_id", type=int, metavar="ID")
    group.add_argument("groups", metavar="GROUP[,GROUP...]")
    keepalive = sub.add_parser("keepalive", help="record keepalives of agents of this node")
    keepalive.add_argument("agent_ids", type=int, nargs="+", metavar="ID")
    keepalive.add_argument("--os-name", default=None)
    keepalive.add_argument("--os-version", default=None)
    keepalive.add_argument("--version", default=None, help="agent version, e.g. 'Wazuh v4.7.5'")
    from wazuhcluster.cli.enrolment import add_enrolment_commands
    add_enrolment_commands(sub)
    return parser


def _date(seconds: Any) -> str:
    if not isinstance(seconds, int) or seconds <= 0:
        return "n/a"
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return "never"  # agent 000's keepalive is year 9999


def format_agents(agents: list[dict[str, Any]]) -> str:
    """A text table of agents."""
    rows = [("ID", "NAME", "IP", "STATUS", "NODE", "LAST KEEPALIVE", "VERSION", "GROUPS")]
    rows += [(a["id"], a["name"], a["ip"] or "-", a["status"], a["node_name"] or "-",
              _date(a["last_keepalive"]), a["version"] or "-", ",".join(a["groups"]) or "-")
             for a in agents]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows) + "\n"


def _print_agents(answer: list[dict[str, Any]], as_json: bool) -> None:
    sys.stdout.write(json.dumps(answer, indent=1) + "\n" if as_json else format_agents(answer))


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Perform the subcommand; return the exit status."""
    socket_path = os.path.join(args.home, "queue", "cluster", "c-internal.sock")
    if args.command in ("enrol", "remove", "simulate"):
        from wazuhcluster.cli.enrolment import run_enrolment_command
        return await run_enrolment_command(reactor, args)
    try:
        if args.command == "list":
            answer = decode_answer(await local_request(
                reactor, socket_path, WZC_AG_LIST, encode_list_request(args.node)))
            _print_agents(answer, args.json)
        elif args.command == "set-group":
            if args.agent_id == 0:
                sys.stderr.write("wazuhcluster-agents: agent 000 is the manager: its groups "
                                 "cannot be set\n")
                return 1
            groups = [g for g in args.groups.split(",") if g]
            answer = decode_answer(await local_request(
                reactor, socket_path, WZC_AG_GRP, encode_groups_request(args.agent_id, groups)))
            sys.stdout.write(f"Agent {args.agent_id:03d}: groups set to {','.join(groups)}.\n")
        else:
            request = KeepaliveRequest(tuple(args.agent_ids), args.os_name, args.os_version,
                                       args.version)
            answer = decode_answer(await local_request(
                reactor, socket_path, WZC_AG_KAL, encode_keepalive_request(request),
                timeout=60.0))
            unknown = f", {answer['unknown']} unknown agents" if answer["unknown"] else ""
            sys.stdout.write(f"{answer['updated']} keepalives recorded{unknown}.\n")
            if answer["unknown"]:
                return 2
    except ClusterError as e:
        sys.stderr.write(f"wazuhcluster-agents: {e}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    run_cli(run, build_parser().parse_args(argv))
