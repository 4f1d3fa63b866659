"""Benchmark: agent enrolments per second through the master and through a worker (TLS
included), with 1 and with 50 concurrent agents, and the time until the last key is on every
worker. The floor is a TLS server in its own process that answers every request at once with
a fixed ``OSSEC K:`` line (same certificate, same TLS settings, same client): the TLS
handshake and one exchange, no registration work.

Real ``twistd wazuhcluster`` processes on 127.0.0.1: one master and two workers, each with its
registration port. The client is this process (Twisted, pyOpenSSL), sharing the machine.

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
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import deferLater, react

from tests.integration.harness import FAST_TUNABLES, free_port, random_key
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.keystore import read_keys
from wazuhcluster.enrolment.messages import encode_request
from wazuhcluster.homes import make_home

BIN = os.path.dirname(sys.executable)


def floor_server(port: int, cert: str, key: str) -> None:
    """The floor: TLS with the manager's settings, a fixed answer, no work."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from wazuhcluster.enrolment.authconfig import AuthConfig
    from wazuhcluster.enrolment.tls import ServerContextFactory

    answer = b"OSSEC K:'001 floor any " + b"0" * 64 + b"'"

    class Answer(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(answer)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    context = ServerContextFactory(AuthConfig(ssl_manager_cert=cert, ssl_manager_key=key))
    SSL4ServerEndpoint(reactor, port, context, interface="127.0.0.1").listen(
        Factory.forProtocol(Answer))
    reactor.run()  # type: ignore[attr-defined]


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


async def run_batch(port: int, names: list[str], concurrency: int) -> tuple[float, list[Any]]:
    context = make_context()
    semaphore = DeferredSemaphore(concurrency)

    async def one(name: str) -> Any:
        await semaphore.acquire()
        try:
            return await enrol(reactor, "127.0.0.1", port, encode_request(name),
                               context=context, timeout=120)
        finally:
            semaphore.release()

    start = time.perf_counter()
    answers = await gatherResults([Deferred.fromCoroutine(one(n)) for n in names])
    return time.perf_counter() - start, answers


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
        for target in targets:
            for concurrency in (1, 50):
                n = count if concurrency > 1 else max(50, count // 4)
                names = [f"{target}-{concurrency}-{i}" for i in range(n)]
                seconds, answers = await run_batch(ports[target], names, concurrency)
                done = time.perf_counter()
                ok = [a for a in answers if a.agent_id is not None]
                errors = {a.error for a in answers if a.agent_id is None}
                spread = await keys_everywhere(worker_homes, {a.key for a in ok}, done)
                spread_text = f"{spread:.2f} s" if spread is not None else "not within 60 s"
                print(f"through {target:6s}, {concurrency:2d} concurrent: "
                      f"{len(ok) / seconds:7.1f} /s ({len(ok)}/{n} in {seconds:.2f} s)"
                      f"; last key on every worker {spread_text} after the last answer"
                      f"{'; errors: ' + ', '.join(sorted(errors))[:200] if errors else ''}")
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
    else:
        react(main, [int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
                     sys.argv[2].split(",") if len(sys.argv) > 2 else ["master", "w1"],
                     int(sys.argv[3]) if len(sys.argv) > 3 else 0])
