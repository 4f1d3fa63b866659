"""Liveness benchmark: how fast each side notices a frozen peer, and how fast it rejoins.

Run with ``.venv/bin/python bench/liveness.py [rounds]``. It prints figures only.

A real ``twistd wazuhcluster`` master and worker on 127.0.0.1 with the shipped defaults
(``idle_probe_after`` 3 s, ``liveness_timeout`` 5 s, master check every
``reaper_check_interval`` 1 s, worker tick 1 s). Each round:

1. SIGSTOP the master; time until the worker's cluster.log says it closed the link
   (worker-side detection), then SIGCONT and time until the worker logs "Successfully
   connected to master" again (rejoin);
2. SIGSTOP the worker; time until the master's cluster.log says it dropped the worker
   (master-side detection), then SIGCONT and time until the worker is connected again.

Times are taken by polling the log files every 10 ms from the moment the signal is sent.

3. (``--agents N``, default 50 000) both nodes know N agents (client.keys); the worker
   records a keepalive of every one (``wazuhcluster-agents keepalive``) and the agent-info
   sync carries them to the master: the time until the master lists them all with the new
   version, and every liveness line either node logged meanwhile (none expected).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time

from wazuhcluster.homes import make_home

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
WORKER_NOTICED = "Nothing received from the master for"
MASTER_NOTICED = "no answer to a liveness probe"
CONNECTED = "Successfully connected to master"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(home: str, role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([TWISTD, "-n", "--pidfile=", "wazuhcluster", "--role", role,
                             "--home", home], cwd=home, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def log_size(home: str) -> int:
    try:
        return os.path.getsize(os.path.join(home, "logs", "cluster.log"))
    except OSError:
        return 0


def wait_for(home: str, text: str, since: int, timeout: float = 60.0) -> float:
    """Seconds until ``text`` appears in the log after offset ``since``."""
    started = time.monotonic()
    path = os.path.join(home, "logs", "cluster.log")
    while time.monotonic() - started < timeout:
        if os.path.exists(path):
            with open(path, "rb") as f:
                f.seek(since)
                if text.encode() in f.read():
                    return time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError(f"{text!r} not logged in {home} within {timeout} s")


def agents_sync(count: int) -> None:
    """Part 3: a 50 000-agent agent-info sync keeps the link busy; no false alarm."""
    from wazuhcluster.agents.keys import KeyEntry, format_client_keys

    base = tempfile.mkdtemp(prefix="wzcl", dir="/tmp")
    key = "".join(secrets.choice(string.ascii_letters) for _ in range(32))
    port = free_port()
    homes = {role: make_home(os.path.join(base, name), node_name=name, node_type=role,
                             key=key, port=port, api_port=free_port(), metrics_port=free_port())
             for role, name in (("master", "master"), ("worker", "worker1"))}
    entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, count + 1)]
    for home in homes.values():
        with open(os.path.join(home, "etc", "client.keys"), "w", encoding="utf-8") as f:
            f.write(format_client_keys(entries))
    processes = [start(homes["master"], "master")]
    cli = os.path.join(os.path.dirname(sys.executable), "wazuhcluster-agents")
    try:
        time.sleep(1)
        processes.append(start(homes["worker"], "worker"))
        wait_for(homes["worker"], CONNECTED, 0)
        marks = {role: log_size(home) for role, home in homes.items()}
        started = time.monotonic()
        subprocess.run([cli, "--home", homes["worker"], "keepalive",
                        *map(str, range(1, count + 1)), "--os-name", "Ubuntu", "--version",
                        "v4.7.5"], check=True, capture_output=True)
        recorded = time.monotonic() - started
        while True:
            out = subprocess.run([cli, "--home", homes["master"], "list", "--json"],
                                 check=True, capture_output=True).stdout
            agents = json.loads(out)
            if sum(1 for a in agents if a.get("version") == "v4.7.5") >= count:
                break
            if time.monotonic() - started > 300:
                raise RuntimeError("the master did not get every agent in 300 s")
            time.sleep(0.5)
        synced = time.monotonic() - started
        alarms = []
        for role, home in homes.items():
            with open(os.path.join(home, "logs", "cluster.log"), "rb") as f:
                f.seek(marks[role])
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if (any(t in line for t in ("liveness", "sent nothing", "Disconnected",
                                                "closing the connection", "Keepalive",
                                                "keepalive ("))
                            and "Successful response" not in line and "DEBUG" not in line):
                        alarms.append(line)
        print(f"{count} agents: keepalives recorded on the worker in {recorded:.1f} s; all on "
              f"the master after {synced:.1f} s; liveness alarms meanwhile: {len(alarms)}")
        for line in alarms[:5]:
            print("  " + line)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def main(rounds: int = 3) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    base = tempfile.mkdtemp(prefix="wzcl", dir="/tmp")
    key = "".join(secrets.choice(string.ascii_letters) for _ in range(32))
    port = free_port()
    master_home = make_home(os.path.join(base, "master"), node_name="master",
                            node_type="master", key=key, port=port, api_port=free_port(),
                            metrics_port=free_port())
    worker_home = make_home(os.path.join(base, "worker1"), node_name="worker1",
                            node_type="worker", key=key, port=port, api_port=free_port(),
                            metrics_port=free_port())
    master = start(master_home, "master")
    worker = None
    try:
        time.sleep(1)
        worker = start(worker_home, "worker")
        wait_for(worker_home, CONNECTED, 0)
        time.sleep(4)  # idle link: the probes are running
        for n in range(1, rounds + 1):
            mark = log_size(worker_home)
            master.send_signal(signal.SIGSTOP)
            noticed = wait_for(worker_home, WORKER_NOTICED, mark)
            mark = log_size(worker_home)
            master.send_signal(signal.SIGCONT)
            rejoin = wait_for(worker_home, CONNECTED, mark)
            print(f"round {n}: master SIGSTOPped -> worker noticed after {noticed:.2f} s; "
                  f"after SIGCONT the worker was connected again in {rejoin:.2f} s")
            time.sleep(4)
            mark, wmark = log_size(master_home), log_size(worker_home)
            worker.send_signal(signal.SIGSTOP)
            noticed = wait_for(master_home, MASTER_NOTICED, mark)
            worker.send_signal(signal.SIGCONT)
            rejoin = wait_for(worker_home, CONNECTED, wmark)
            print(f"round {n}: worker SIGSTOPped -> master noticed after {noticed:.2f} s; "
                  f"after SIGCONT the worker was connected again in {rejoin:.2f} s")
            time.sleep(4)
    finally:
        for process in (worker, master):
            if process is not None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--agents":
        agents_sync(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
