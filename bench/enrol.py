"""Benchmark: agent enrolments per second through the master and through a worker (TLS
included), with 1 and with 50 concurrent agents, and the time until the last key is on every
worker. The floor is the cheapest TLS server answering a fixed ``OSSEC K:`` line (its own
process, blocking stdlib TLS, same certificate and TLS settings, same clients): the TLS
handshake and one exchange, no registration work.

Real ``twistd wazuhcluster`` processes on 127.0.0.1: one master and two workers, each with its
registration port. The agents run in separate processes (blocking stdlib TLS clients in
threads, their start-up not timed), so the figures are the servers', not a Python client's.
Prints the figures, the verdicts for the issue's targets and the load average.

Run: ``.venv/bin/python bench/enrol.py [agents-per-run [master,w1 [agents-already-registered]]]``
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from twisted.internet import reactor
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from tests.integration.harness import FAST_TUNABLES, free_port, random_key
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.messages import encode_request, parse_answer
from wazuhcluster.homes import make_home

BIN = os.path.dirname(sys.executable)


def floor_server(port: int, cert: str, key: str) -> None:
    """The floor: the cheapest TLS server answering a fixed string. One thread, blocking
    stdlib TLS (OpenSSL in C for the whole handshake), the manager's certificate, TLS 1.2 and
    the default ciphers, one connection at a time: accept, handshake, read, answer, close.
    A node does this plus the registration work, in Twisted, so it cannot beat this."""
    import socket
    import ssl

    from wazuhcluster.enrolment.authconfig import AuthConfig

    answer = b"OSSEC K:'001 floor any " + b"0" * 64 + b"'"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(AuthConfig().ciphers)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                tls.sendall(answer)
        except OSError:
            conn.close()


def start_node(base: str, name: str, role: str, port: int, key: str,
               auth_port: int) -> subprocess.Popen[bytes]:
    home = make_home(os.path.join(base, name), node_name=name, node_type=role, key=key,
                     port=port, auth_port=auth_port, api_port=free_port(), metrics_port=free_port())
    cluster_json = os.path.join(home, "etc", "cluster-bench.json")
    with open(cluster_json, "w") as f:
        json.dump(FAST_TUNABLES, f)
    return subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "wazuhcluster", "--role", role,
         "--home", home, "--cluster-json", cluster_json],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)


async def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    context = make_context()
    while time.monotonic() < deadline:
        try:
            await enrol(reactor, "127.0.0.1", port, b"probe", context=context, timeout=5)
            return
        except Exception:  # noqa: BLE001 - not listening yet
            await deferLater(reactor, 0.2, lambda: None)
    raise RuntimeError(f"port {port} not ready")


def agents_process(port: int, threads: int) -> None:
    """The agents: a separate process with blocking stdlib TLS clients in threads (the
    handshake crypto runs without the GIL), so the figures measure the server, not a Python
    client's event loop. Reads the names from stdin after the line ``go``, prints one answer
    per line (``repr`` of the raw bytes) in the names' order."""
    import socket
    import ssl
    from concurrent.futures import ThreadPoolExecutor

    names = sys.stdin.readline().split()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # as agent-auth without -a

    def one(name: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(encode_request(name))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data

    def guarded(name: str) -> bytes:
        try:
            return one(name)
        except OSError as e:
            return f"ERROR: client: {e}".encode()

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # go
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(guarded, names))
    sys.stdout.write("".join(repr(a) + "\n" for a in answers))
    sys.stdout.flush()


CLIENT_PROCESSES = 2


def run_batch_blocking(port: int, names: list[str], concurrency: int) -> tuple[float, list[Any]]:
    """Enrol ``names`` with ``concurrency`` agents at once, spread over up to
    CLIENT_PROCESSES agent processes started beforehand (their start-up is not timed)."""
    import ast

    procs = min(CLIENT_PROCESSES, concurrency)
    shares = [names[i::procs] for i in range(procs)]
    children = [subprocess.Popen(
        [sys.executable, __file__, "--agents", str(port), str(concurrency // procs)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    for child, share in zip(children, shares, strict=True):
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(" ".join(share) + "\n")
        child.stdin.flush()
        child.stdout.readline()  # ready
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate()[0] for child in children]
    seconds = time.perf_counter() - start
    answers = [parse_answer(ast.literal_eval(line)) for out in outputs
               for line in out.splitlines()]
    return seconds, answers


async def run_batch(port: int, names: list[str], concurrency: int) -> tuple[float, list[Any]]:
    """:func:`run_batch_blocking` in a thread, so this process's reactor stays free."""
    return await deferToThread(run_batch_blocking, port, names, concurrency)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def keys_everywhere(homes: list[str], wanted: set[str], start: float,
                          timeout: float = 60.0) -> float | None:
    while time.perf_counter() - start < timeout:
        if all(wanted <= {ln.key for ln in read_keys(os.path.join(h, "etc", "client.keys"))}
               for h in homes):
            return time.perf_counter() - start
        await deferLater(reactor, 0.02, lambda: None)
    return None


async def main(_: Any, count: int, targets: list[str], existing: int) -> None:
    base = tempfile.mkdtemp(prefix="wzcb", dir="/tmp")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        key, port = random_key(), free_port()
        ports = {n: free_port() for n in ("master", "w1", "w2")}
        if existing:
            make_home(os.path.join(base, "master"), node_name="master", node_type="master",
                      key=key, port=port, auth_port=ports["master"])
            with open(os.path.join(base, "master", "etc", "client.keys"), "w") as f:
                f.writelines(f"{i:03d} old-{i} any {i:064x}\n" for i in range(1, existing + 1))
        processes.append(start_node(base, "master", "master", port, key, ports["master"]))
        await wait_port(ports["master"])
        for w in ("w1", "w2"):
            processes.append(start_node(base, w, "worker", port, key, ports[w]))
        for w in ("w1", "w2"):
            await wait_port(ports[w])
        await deferLater(reactor, 3.0, lambda: None)  # workers connected and synced
        nodes = list(processes)  # master, w1, w2
        master_home = os.path.join(base, "master")
        worker_homes = [os.path.join(base, w) for w in ("w1", "w2")]
        floor_port = free_port()
        processes.append(subprocess.Popen(
            [sys.executable, __file__, "--floor", str(floor_port),
             os.path.join(master_home, "etc", "sslmanager.cert"),
             os.path.join(master_home, "etc", "sslmanager.key")]))
        await wait_port(floor_port)
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}; {count} enrolments per run, "
              f"{existing} agents registered before")
        for concurrency in (1, 50):
            n = count if concurrency > 1 else max(50, count // 4)
            seconds, _ = await run_batch(floor_port, [f"f{concurrency}-{i}" for i in range(n)],
                                         concurrency)
            print(f"floor (TLS + fixed answer), {concurrency:2d} concurrent: "
                  f"{n / seconds:7.1f} /s ({n} in {seconds:.2f} s)")
        verdicts: list[str] = []
        for target in targets:
            for concurrency in (1, 50):
                n = count if concurrency > 1 else max(50, count // 4)
                names = [f"{target}-{concurrency}-{i}" for i in range(n)]
                cpu_before = [cpu_seconds(p.pid) for p in nodes]
                seconds, answers = await run_batch(ports[target], names, concurrency)
                done = time.perf_counter()
                ok = [a for a in answers if a.agent_id is not None]
                errors = {a.error for a in answers if a.agent_id is None}
                spread = await keys_everywhere(worker_homes, {a.key for a in ok}, done)
                spread_text = f"{spread:.2f} s" if spread is not None else "not within 60 s"
                cpu = [(cpu_seconds(p.pid) - b) * 1000 / max(1, len(ok))
                       for p, b in zip(nodes, cpu_before, strict=True)]
                print(f"through {target:6s}, {concurrency:2d} concurrent: "
                      f"{len(ok) / seconds:7.1f} /s ({len(ok)}/{n} in {seconds:.2f} s)"
                      f"; last key on every worker {spread_text} after the last answer"
                      f"{'; errors: ' + ', '.join(sorted(errors))[:200] if errors else ''}")
                print(f"  node CPU per enrolment (until the keys are everywhere): master "
                      f"{cpu[0]:.2f} ms, w1 {cpu[1]:.2f} ms, w2 {cpu[2]:.2f} ms, "
                      f"total {sum(cpu):.2f} ms")
                if target != "master" and concurrency == 50:
                    rate = len(ok) / seconds
                    verdict = ("MISSED" if rate < 200 else "met" if existing >= 20000
                               else "not shown (fewer agents registered)")
                    verdicts.append(
                        f"target >= 200 enrolments/s through worker {target} with 50 concurrent "
                        f"agents at 20 000 registered: {rate:.1f} /s with {existing} registered"
                        f" -> {verdict}")
                if spread is not None or ok:
                    verdicts.append(
                        f"target last key on every worker < 2 s after the answer ({target}, "
                        f"{concurrency} concurrent): {spread_text} -> "
                        f"{'met' if spread is not None and spread < 2 else 'MISSED'}")
        for line in verdicts:
            print(line)
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
              f"{os.getloadavg()[2]:.2f}")
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--floor":
        floor_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--agents":
        agents_process(int(sys.argv[2]), int(sys.argv[3]))
    else:
        react(main, [int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
                     sys.argv[2].split(",") if len(sys.argv) > 2 else ["master", "w1"],
                     int(sys.argv[3]) if len(sys.argv) > 3 else 0])
