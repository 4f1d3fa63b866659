"""``wazuhcluster-control``: ask a node about the cluster, like Wazuh's cluster_control."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from wazuhcluster.cli.runner import decode_answer, run_cli
from wazuhcluster.errors import ClusterError
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.commands import GET_HEALTH, GET_NODES


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="wazuhcluster-control",
                                     description="Query a wazuhcluster node.")
    parser.add_argument("--home", required=True, help="the node's home directory")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("-l", "--list", action="store_true", help="list the cluster's nodes")
    group.add_argument("-i", "--health", action="store_true", help="show the cluster's health")
    group.add_argument("-a", "--agents", action="store_true",
                       help="list the agents as the master sees them")
    group.add_argument("--reload", action="store_true",
                       help="make the node re-read its TLS certificates, CRL and cluster key")
    parser.add_argument("--node", default=None, help="with -a: only agents of this node")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.add_argument("--filter-node", "-fn", nargs="*", default=None,
                        help="restrict to these node names")
    return parser


def format_nodes(answer: dict[str, Any]) -> str:
    """Text table of get_nodes, as cluster_control -l prints it."""
    rows = [("NAME", "TYPE", "VERSION", "ADDRESS")]
    rows += [(n["name"], n["type"], n["version"], n["ip"]) for n in answer["items"]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows) + "\n"


def format_health(answer: dict[str, Any], cluster_name: str) -> str:
    """Text report of get_health, as cluster_control -i prints it."""
    nodes = answer["nodes"]
    workers = {k: v for k, v in nodes.items() if v["info"]["type"] == "worker"}
    lines = [f"Cluster name: {cluster_name}", "",
             f"Connected nodes ({answer['n_connected_nodes']}):"]
    lines += [f"    {name} ({v['info']['ip']})" for name, v in sorted(workers.items())]
    for name, node in nodes.items():
        info = node["info"]
        lines += ["", f"    {name} ({info['ip']})", f"        Version: {info['version']}",
                  f"        Type: {info['type']}",
                  f"        Active agents: {info.get('n_active_agents', 0)}"]
        status = node.get("status")
        if not status:
            continue
        ci = status["last_check_integrity"]
        si = status["last_sync_integrity"]
        ai = status["last_sync_agentinfo"]
        ag = status["last_sync_agentgroup"]
        fg = status["last_sync_full_agentgroup"]
        files = si["total_files"]
        lines += [
            "        Status:",
            f"            Connected since: {status.get('connected_since', 'n/a')}",
            f"            Last keep Alive: {status['last_keep_alive']}",
            "            Integrity check:",
            f"                Last integrity check: {ci['date_start_master']} -> "
            f"{ci['date_end_master']}",
            f"                Permission to check integrity: {status['sync_integrity_free']}",
            "            Integrity sync:",
            f"                Last integrity synchronization: {si['date_start_master']} -> "
            f"{si['date_end_master']}",
            f"                Synchronized files: Shared: {files['shared']} | Missing: "
            f"{files['missing']} | Extra: {files['extra']}",
            "            Agents-info:",
            f"                Last synchronization: {ai['date_start_master']} -> "
            f"{ai['date_end_master']}",
            f"                Number of synchronized chunks: {ai['n_synced_chunks']}",
            f"                Permission to synchronize agent-info: "
            f"{status['sync_agent_info_free']}",
            "            Agents-groups:",
            f"                Last synchronization: {ag['date_start']} -> {ag['date_end']}",
            f"                Number of synchronized chunks: {ag['n_synced_chunks']}",
            f"                Last full synchronization: {fg['date_start']} -> {fg['date_end']}",
        ]
    return "\n".join(lines) + "\n"


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Perform the request and print the answer; return the exit status."""
    socket_path = os.path.join(args.home, "queue", "cluster", "c-internal.sock")
    try:
        if args.agents:
            from wazuhcluster.cli.agents import master_agents

            return await master_agents(reactor, socket_path, args.node, args.json)
        if args.reload:
            answer = decode_answer(await local_request(reactor, socket_path, b"wzc_reload", b""))
            sys.stdout.write(json.dumps(answer) + "\n")
            return 0
        if args.list:
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
                             else format_health(answer, config.get("name", "")))
    except ClusterError as e:
        sys.stderr.write(f"wazuhcluster-control: {e}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    run_cli(run, build_parser().parse_args(argv))
