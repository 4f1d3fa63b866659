"""``wazuhcluster-agents enrol | remove | simulate``: the enrolment commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.authconfig import load_auth_config
from wazuhcluster.enrolment.forward import SendsyncError, sendsync
from wazuhcluster.enrolment.localsock import auth_request
from wazuhcluster.enrolment.messages import encode_request
from wazuhcluster.enrolment.service import auth_socket_path
from wazuhcluster.enrolment.simulator import SimulationOptions, Simulator, parse_nodes
from wazuhcluster.errors import ConfigError


def add_enrolment_commands(sub: Any) -> None:
    """Add the three subcommands to the ``wazuhcluster-agents`` parser."""
    enrol_cmd = sub.add_parser("enrol", help="enrol an agent (what agent-auth does)")
    enrol_cmd.add_argument("name", metavar="NAME")
    enrol_cmd.add_argument("--group", default=None, help="group or comma-separated groups")
    enrol_cmd.add_argument("--ip", default=None, help="the agent's IP, 'src' or CIDR")
    enrol_cmd.add_argument("--password-file", default=None,
                           help="file whose first line is the enrolment password")
    enrol_cmd.add_argument("--node", default=None, metavar="HOST:PORT",
                           help="registration port (default 127.0.0.1 and this home's "
                                "<auth><port>)")
    enrol_cmd.add_argument("--ca", default=None, help="verify the manager with this CA")
    enrol_cmd.add_argument("--cert", default=None, help="agent certificate (ssl_agent_ca)")
    enrol_cmd.add_argument("--key", default=None, help="agent certificate key")
    remove = sub.add_parser("remove", help="remove agents (their key and row) on the master")
    remove.add_argument("agent_ids", type=int, nargs="+", metavar="ID")
    remove.add_argument("--purge", action="store_true",
                        help="drop the keys from client.keys instead of marking them removed")
    sim = sub.add_parser("simulate", help="simulate many agents enrolling and reporting")
    sim.add_argument("--nodes", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                     help="registration ports, used round-robin")
    sim.add_argument("--homes", default=None, metavar="DIR[,DIR...]",
                     help="the homes of those nodes, same order (keepalives go through each "
                          "node's local socket, as remoted records them); omit to only enrol")
    sim.add_argument("--count", type=int, required=True)
    sim.add_argument("--password-file", default=None)
    sim.add_argument("--rate", type=float, default=None, help="new enrolments per second")
    sim.add_argument("--keepalive", type=float, default=10.0, metavar="S")
    sim.add_argument("--duration", type=float, default=60.0, metavar="S")
    sim.add_argument("--churn", type=float, default=0.0, metavar="P",
                     help="percent of agents moving to another node per minute")
    sim.add_argument("--concurrency", type=int, default=50)
    sim.add_argument("--prefix", default=None, help="agent name prefix (default random)")


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")


async def run_enrolment_command(reactor: Any, args: argparse.Namespace) -> int:
    """Run enrol, remove or simulate; return the exit status."""
    try:
        if args.command == "enrol":
            return await _enrol(reactor, args)
        if args.command == "remove":
            return await _remove(reactor, args)
        return await _simulate(reactor, args)
    except (OSError, ValueError, ConfigError) as e:
        sys.stderr.write(f"wazuhcluster-agents: {e}\n")
        return 1


async def _enrol(reactor: Any, args: argparse.Namespace) -> int:
    if args.node:
        (host, port), *_ = parse_nodes(args.node)
    else:
        auth = load_auth_config(os.path.join(args.home, "etc", "ossec.conf"), args.home)
        host, port = "127.0.0.1", auth.port
    request = encode_request(args.name, password=_password(args.password_file),
                             groups=args.group, ip=args.ip)
    answer = await enrol(reactor, host, port, request,
                         context=make_context(args.ca, args.cert, args.key))
    if answer.agent_id is None:
        sys.stderr.write(f"ERROR: {answer.error}\n")
        return 1
    sys.stdout.write(f"{answer.agent_id} {answer.name} {answer.ip} {answer.key}\n")
    return 0


async def _remove(reactor: Any, args: argparse.Namespace) -> int:
    status = 0
    local = auth_socket_path(args.home)
    for agent_id in args.agent_ids:
        message: dict[str, Any] = {"function": "remove",
                                   "arguments": {"id": f"{agent_id:03d}"}}
        if args.purge:
            message["arguments"]["purge"] = True
        if os.path.exists(local):
            answer = await auth_request(reactor, local, message)
        else:  # a worker: through the cluster to the master, as authd does
            try:
                raw = await sendsync(reactor, os.path.join(args.home, "queue", "cluster",
                                                           "c-internal.sock"),
                                     {"daemon_name": "authd", "message": message}, 60.0)
            except SendsyncError as e:
                sys.stderr.write(f"wazuhcluster-agents: agent {agent_id:03d}: cannot reach the "
                                 f"master ({e})\n")
                status = 1
                continue
            answer = json.loads(raw)
        if answer.get("error") == 0:
            sys.stdout.write(f"Agent {agent_id:03d} removed.\n")
        else:
            sys.stderr.write(f"wazuhcluster-agents: agent {agent_id:03d}: "
                             f"{answer.get('message')} ({answer.get('error')})\n")
            status = 1
    return status


async def _simulate(reactor: Any, args: argparse.Namespace) -> int:
    nodes = parse_nodes(args.nodes)
    homes = [h for h in args.homes.split(",") if h] if args.homes else []
    if homes and len(homes) != len(nodes):
        raise ValueError(f"--homes names {len(homes)} homes for {len(nodes)} --nodes: give "
                         "one home per node, in the same order")
    if args.count < 1 or args.duration <= 0 or args.keepalive <= 0:
        raise ValueError("--count, --duration and --keepalive must be positive")
    options = SimulationOptions(nodes=nodes, count=args.count, homes=homes,
                                password=_password(args.password_file), rate=args.rate,
                                keepalive=args.keepalive, duration=args.duration,
                                churn=args.churn, concurrency=max(1, args.concurrency))
    if args.prefix:
        options.prefix = args.prefix
    result = await Simulator(reactor, options).run()
    return 0 if result.enrolled else 1
