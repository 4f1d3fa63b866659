"""``wazuhcluster-demo``: a master and two workers on 127.0.0.1, each under ./demo/<name>.

Starts three ``twistd -n wazuhcluster`` processes, prints where everything is and how to look
at it, and stops them all cleanly on Ctrl-C (or when one of them dies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from wazuhcluster.api.users import UserStore, random_password
from wazuhcluster.homes import DEMO_KEY, make_home

NODES = (("master-node", "master"), ("worker1", "worker"), ("worker2", "worker"))


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], out_path: str,
                     timeout: float = 20.0) -> None:
    """Wait until the master serves its local socket (it has bound its port by then)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            raise SystemExit(f"wazuhcluster-demo: the master did not start: "
                             f"{_last_line(out_path)} (full output: {out_path})")
        time.sleep(0.05)


def _last_line(path: str) -> str:
    """The last non-empty line the process wrote (its one-line reason)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _port_problem(port: int) -> str | None:
    """Why the master could not listen on 127.0.0.1:``port``, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            return e.strerror or str(e)
    return None


DEMO_ADMIN = "demo-admin"


def _demo_admin(home: str) -> str:
    """Give the demo administrator a new random password (there is no default one)."""
    store = UserStore(home)
    password = random_password()
    if store.get(DEMO_ADMIN) is None:
        store.add(DEMO_ADMIN, password, "administrator")
    else:
        store.passwd(DEMO_ADMIN, password)
    return password


def main(argv: list[str] | None = None) -> None:
    """Run the demo cluster until interrupted."""
    parser = argparse.ArgumentParser(prog="wazuhcluster-demo")
    parser.add_argument("--dir", default="demo", help="where the node homes go (./demo)")
    parser.add_argument("--port", type=int, default=15160,
                        help="the master's port (make demo PORT=N)")
    parser.add_argument("--metrics-port", type=int, default=9465,
                        help="Prometheus /metrics of the master (plain HTTP on 127.0.0.1); the "
                             "workers use the next ports")
    parser.add_argument("--api-port", type=int, default=55000,
                        help="the master's REST API port (workers use the next ones)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the homes of the last run first (make demo FRESH=1)")
    parser.add_argument("--agents", type=int, default=300,
                        help="simulated agents enrolling through the workers (0: none)")
    args = parser.parse_args(argv)
    base = os.path.abspath(args.dir)
    problem = _port_problem(args.port)
    if problem is not None:
        raise SystemExit(f"wazuhcluster-demo: port {args.port} on 127.0.0.1 cannot be used "
                         f"({problem}): pass --port N (make demo PORT=N)")
    if args.fresh:
        shutil.rmtree(base, ignore_errors=True)
    reused = os.path.isdir(base)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    control = os.path.join(os.path.dirname(sys.executable), "wazuhcluster-control")
    processes: list[subprocess.Popen[bytes]] = []
    auth_ports = {name: args.port + 10 + i for i, (name, _) in enumerate(NODES)}
    for index, (node_name, role) in enumerate(NODES):
        home = make_home(os.path.join(base, node_name), node_name=node_name, node_type=role,
                         key=DEMO_KEY, port=args.port, api_port=args.api_port + index,
                         auth_port=auth_ports[node_name],
                         metrics_port=args.metrics_port + index)
        if role == "master":
            password = _demo_admin(home)
        out_path = os.path.join(home, "logs", "twistd.out")
        out = open(out_path, "ab")  # noqa: SIM115
        processes.append(subprocess.Popen(
            [twistd, "-n", "--pidfile=", "wazuhcluster", "--role", role, "--home", home],
            stdout=out, stderr=subprocess.STDOUT))
        if role == "master":
            _wait_for_socket(os.path.join(home, "queue", "cluster", "c-internal.sock"),
                             processes[-1], out_path)
    print(f"wazuhcluster demo: master on 127.0.0.1:{args.port}, homes under {base}/")
    if reused:
        print("  (reusing the files and agents of the last run: make demo FRESH=1, or --fresh,"
              " starts clean)")
    for (node_name, role), proc in zip(NODES, processes, strict=True):
        print(f"  {role:6}  {node_name:12} pid {proc.pid:<7} "
              f"log {base}/{node_name}/logs/cluster.log")
    workers = [name for name, role in NODES if role == "worker"]
    if args.agents > 0:
        agents_cli = os.path.join(os.path.dirname(sys.executable), "wazuhcluster-agents")
        log = open(os.path.join(base, "simulator.log"), "ab")  # noqa: SIM115
        processes.append(subprocess.Popen(
            [agents_cli, "--home", os.path.join(base, "master-node"), "simulate",
             "--nodes", ",".join(f"127.0.0.1:{auth_ports[w]}" for w in workers),
             "--homes", ",".join(os.path.join(base, w) for w in workers),
             "--count", str(args.agents), "--keepalive", "10", "--churn", "5",
             "--duration", "86400"], stdout=log,
            stderr=subprocess.STDOUT))
        print(f"  {args.agents} simulated agents enrol through the workers' registration ports "
              f"({', '.join(str(auth_ports[w]) for w in workers)}); log {base}/simulator.log")
    print(f"Look at it:\n  {control} --home {base}/worker1 -l\n"
          f"  {control} --home {base}/master-node -a     (agents, their node, status)\n"
          f"  {control} --home {base}/master-node -i\n"
          f"  tail -f {base}/*/logs/cluster.log", flush=True)
    master_api = f"https://127.0.0.1:{args.api_port}"
    print(f"REST API (self-signed HTTPS) on 127.0.0.1:{args.api_port} (master), "
          f":{args.api_port + 1} and :{args.api_port + 2} (workers).\n"
          f"  user: {DEMO_ADMIN}   password: {password}   (a new random one each start)\n"
          f"  TOKEN=$(curl -sk -u '{DEMO_ADMIN}:{password}' -X POST "
          f"'{master_api}/security/user/authenticate?raw=true')\n"
          f"  curl -sk -H \"Authorization: Bearer $TOKEN\" '{master_api}/cluster/nodes?pretty=true'"
          f"\n  (tokens are per node: log in at a worker's port to ask that worker)\n"
          f"  more users: wazuhcluster-users --home {base}/master-node add NAME "
          "--role administrator|readonly\n"
          f"Status page: {master_api}/ui (log in as {DEMO_ADMIN}); Prometheus metrics: "
          f"http://127.0.0.1:{args.metrics_port}/metrics (workers: "
          f":{args.metrics_port + 1}, :{args.metrics_port + 2})\nCtrl-C stops everything.",
          flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    nodes = processes[:len(NODES)]  # the simulator may end on its own; the nodes may not
    while not stopping and all(p.poll() is None for p in nodes):
        time.sleep(0.5)
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("wazuhcluster demo stopped.")
