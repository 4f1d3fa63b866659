"""Link benchmark: the cluster link over a real loopback connection, with and without TLS.

Run with ``.venv/bin/python bench/link.py``. It prints figures only and asserts nothing.

Three link configurations, both ends being our ClusterProtocol, each end in its own process as
two nodes would be (the receiver is this script started with ``--serve``; 127.0.0.1 only;
messages above 256 KiB are encrypted/decrypted on a 2-thread pool as in a node):

* ``plain+fernet``: TCP, every payload Fernet-encrypted (Wazuh 4.7's link);
* ``tls+fernet``:   mutual TLS (TLS 1.3), Fernet inside as well;
* ``tls``:          mutual TLS, Fernet switched off with the ``wzc_plain`` exchange two of our
  nodes make after ``wzc_caps``.

Measured per configuration (best of ``--runs`` interleaved runs):

* ``connect+hello``: TCP connect, TLS handshake with certificate checks, and one ``hello``
  request/reply (the master side checks the certificate names the hello's node); median of 20;
* ``1 KiB x 1000``: 1 000 sequential 1 KiB requests, each answered with ``ok``;
* ``1 MiB x 64``: 64 requests of 1 MiB (2 in flight), throughput of payload bytes;
* ``100 MiB file``: new_file / file_upd / file_end of a 100 MiB file into the receiver's
  queue/cluster directory (disk writes included).

The floor is a raw TLS 1.3 socket pair (Python's ssl module, one sending and one receiving
thread, the same P-256 certificates, mutual: the client presents the worker's certificate):
100 MiB sent with ``sendall`` in 1 MiB pieces (the message size of the 1 MiB case) and
received with ``recv_into`` a reused buffer (no Python-level copies). The cipher suite and
version it negotiates are printed beside those of our link (both OpenSSL defaults:
TLS_AES_256_GCM_SHA384 on TLS 1.3).

Every process sets glibc's heap thresholds as a node with TLS on does (``tls/heap.py``), in
all three configurations (a node without TLS does not: plain+Fernet is given the same help).

Printed: best and median of the runs, the CPU time per MiB of each side in the 1 MiB case
(less sensitive to other load on the machine than MiB/s), the load average, and a verdict
against each target of the issue.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.stdio import StandardIO

from wazuhcluster.checksums.threaded import ThreadedRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.commands import ECHO, HELLO, Reply
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.protocol.transfers import CommonResponders, FileReceiver, StringStore, send_file
from wazuhcluster.tls import certs
from wazuhcluster.tls.contexts import ClientCreator, ServerCreator, certificate_matches_name
from wazuhcluster.tls.feature import WZC_PLAIN, accept_plain, peer_certificate, start_plain
from wazuhcluster.tls.heap import keep_freed_buffers
from wazuhcluster.tls.keyring import KeyRing, LinkCodec
from wazuhcluster.tls.link import CoalescingTLSFactory, TapFactory, TlsClientEndpoint
from wazuhcluster.tls.settings import Mode, TlsMaterial, TlsSettings, load_material

KEY = b"bench_key_0123456789abcdefghijkl"
KIB = 1024
MIB = 1024 * 1024
HOST = "127.0.0.1"
CONFIGS = ("plain+fernet", "tls+fernet", "tls")


async def _reply(reply: Reply | None) -> Reply | None:
    return reply


class Handler:
    """The receiving side: hello (with the certificate check), echo, wzc_plain, files."""

    def __init__(self, home: str, runner: Any, clock: Any) -> None:
        self.files = FileReceiver(home, runner, max_file=2 * 1024 * MIB)
        self.files.directory_name = b"bench"
        self.common = CommonResponders(StringStore(clock), self.files, lambda: "bench")
        self.responders = self.common.responders()
        self.peer: Any = None

    def connection_made(self, peer: Any) -> None:
        self.peer = peer

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        if command == HELLO:
            cert = peer_certificate(self.peer)
            name = payload.split(b" ")[0].decode()
            if cert is not None and not certificate_matches_name(cert, name):
                raise ClusterError(3061, name)
            return Deferred.fromCoroutine(_reply(Reply.ok(b"Client added")))
        if command == ECHO:
            return Deferred.fromCoroutine(_reply(Reply.ok(b"ok")))
        if command == WZC_PLAIN:
            accept_plain(self.peer)
            start_plain(self.peer)
            return Deferred.fromCoroutine(_reply(None))
        return Deferred.fromCoroutine(self.responders[command](payload))

    def peer_lost(self, reason: Any) -> None:
        self.files.close_all()


class Quiet:
    """The sending side's handler: only the receiver's ``wzc_plain`` comes this way."""

    def __init__(self) -> None:
        self.peer: Any = None

    def connection_made(self, peer: Any) -> None:
        self.peer = peer

    def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
        if command == WZC_PLAIN:
            accept_plain(self.peer)
            return Deferred.fromCoroutine(_reply(None))
        raise ClusterError(3000, "unexpected")

    def peer_lost(self, reason: Any) -> None:
        pass


def make_pki(directory: str) -> TlsMaterial:
    """Throwaway CA, master and worker certificates; the master's side is written to files
    (for the receiving process and the floor); returns the worker's material."""
    ca, ca_key = certs.make_ca("bench CA", days=2)
    master, master_key = certs.issue(ca, ca_key, "master", ips=[HOST], days=2)
    worker, worker_key = certs.issue(ca, ca_key, "worker1", days=2)
    certs.write_public(os.path.join(directory, "ca.pem"), certs.cert_pem(ca))
    certs.write_public(os.path.join(directory, "master.pem"), certs.cert_pem(master))
    certs.write_private(os.path.join(directory, "master.key"), master_key)
    certs.write_public(os.path.join(directory, "worker.pem"), certs.cert_pem(worker))
    certs.write_private(os.path.join(directory, "worker.key"), worker_key)
    return TlsMaterial(cas=(ca,), chain=(worker,), key=worker_key)


def master_material(directory: str) -> TlsMaterial:
    """The receiving side's material, from the files of :func:`make_pki`."""
    return load_material(TlsSettings(mode=Mode.REQUIRE, ca=os.path.join(directory, "ca.pem"),
                                     cert=os.path.join(directory, "master.pem"),
                                     key=os.path.join(directory, "master.key")))


def new_protocol(reactor: Any, handler: Any, config: str, runner: ThreadedRunner
                 ) -> ClusterProtocol:
    codec = FernetCodec(KEY) if config == "plain+fernet" else LinkCodec(KeyRing(KEY))
    return ClusterProtocol(handler, reactor, codec=codec, runner=runner.run,
                           request_timeout=120, max_message=200 * MIB)


async def serve(reactor: Any, config: str, directory: str) -> None:
    """The receiving process: listen, print the port, serve until stdin closes."""
    keep_freed_buffers()
    runner = ThreadedRunner(reactor, max_threads=2)
    runner.startService()

    class ServerFactory(Factory):
        def buildProtocol(self, addr: Any) -> ClusterProtocol:
            return new_protocol(reactor, Handler(directory, runner.run, reactor), config,
                                runner)

    factory: Any = ServerFactory()
    if config != "plain+fernet":
        factory = CoalescingTLSFactory(ServerCreator(master_material(directory)), False,
                                       TapFactory(factory, print))
    port = await TCP4ServerEndpoint(reactor, 0, interface=HOST).listen(factory)
    sys.stdout.write(f"PORT {port.getHost().port}\n")
    sys.stdout.flush()
    done: Deferred[None] = Deferred()

    class Stdin(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            done.callback(None)

    StandardIO(Stdin(), reactor=reactor)
    await done
    runner.stopService()


class Receiver:
    """A ``--serve`` child process for one configuration."""

    def __init__(self, config: str, directory: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", config, "--dir", directory],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the child prints its port at once
        if not line.startswith("PORT "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


class Bench:
    def __init__(self, reactor: Any, directory: str, runner: ThreadedRunner,
                 worker: TlsMaterial) -> None:
        self.reactor = reactor
        self.directory = directory
        self.runner = runner
        self.worker = worker

    async def connect(self, config: str, port: int) -> ClusterProtocol:
        bench = self

        class ClientFactory(Factory):
            def buildProtocol(self, addr: Any) -> ClusterProtocol:
                return new_protocol(bench.reactor, Quiet(), config, bench.runner)

        endpoint: Any = TCP4ClientEndpoint(self.reactor, HOST, port)
        if config != "plain+fernet":
            endpoint = TlsClientEndpoint(endpoint, ClientCreator(self.worker, HOST),
                                         lambda line: print("TLS failure:", line))
        client: ClusterProtocol = await endpoint.connect(ClientFactory())
        await client.request(HELLO, b"worker1 wazuh worker 4.7.5")
        return client

    async def run(self, config: str, file_path: str) -> tuple[dict[str, float], str]:
        receiver = Receiver(config, self.directory)
        try:
            hellos = []
            for _ in range(20):
                start = time.perf_counter()
                client = await self.connect(config, receiver.port)
                hellos.append(time.perf_counter() - start)
                client.disconnect("bench")
                await client.when_lost
            client = await self.connect(config, receiver.port)
            if config == "tls":
                start_plain(client)
                await client.request(ECHO, b"")  # answered after the receiver's wzc_plain
                codec = client.codec
                assert isinstance(codec, LinkCodec) and codec.plain_in and codec.plain_out
            small = b"x" * KIB
            start = time.perf_counter()
            for _ in range(1000):
                await client.request(ECHO, small)
            small_s = time.perf_counter() - start
            big = os.urandom(MIB)
            start = time.perf_counter()
            cpu_start = cpu_seconds(os.getpid()), cpu_seconds(receiver.process.pid)
            in_flight: list[Deferred[bytes]] = []
            for _ in range(64):
                in_flight.append(client.request(ECHO, big))
                if len(in_flight) >= 2:
                    await in_flight.pop(0)
            for d in in_flight:
                await d
            big_s = time.perf_counter() - start
            cpu_end = cpu_seconds(os.getpid()), cpu_seconds(receiver.process.pid)
            cipher = link_cipher(client)
            start = time.perf_counter()
            await send_file(client, file_path, b"/queue/cluster/bench/file.bin", self.runner.run)
            file_s = time.perf_counter() - start
            client.disconnect("bench done")
            await client.when_lost
        finally:
            receiver.stop()
        return {"hello_ms": statistics.median(hellos) * 1000,
                "small_per_s": 1000 / small_s,
                "big_mib_s": 64 / big_s,
                "big_cpu_sender_ms": (cpu_end[0] - cpu_start[0]) * 1000 / 64,
                "big_cpu_receiver_ms": (cpu_end[1] - cpu_start[1]) * 1000 / 64,
                "file_mib_s": 100 / file_s}, cipher


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, all its threads (scheduler nanoseconds: finer than
    the 10 ms ticks of /proc/PID/stat)."""
    total = 0
    for task_id in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task_id}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def link_cipher(client: ClusterProtocol) -> str:
    """The TLS version and cipher suite of a connection ('' without TLS), and whether OpenSSL
    reads and writes the socket itself (tls/direct.py) or Twisted's memory BIOs."""
    connection = getattr(client.transport, "_tlsConnection", None)
    if connection is None:
        return ""
    mode = ("OpenSSL on the socket" if getattr(client.transport, "direct", False)
            else "memory BIO")
    return f"{connection.get_protocol_version_name()} {connection.get_cipher_name()} ({mode})"


def tls_floor(directory: str, total: int = 100 * MIB) -> tuple[float, str, float, float]:
    """MiB/s of a raw mutual-TLS socket pair over loopback (two threads, Python's ssl), its
    version and cipher suite, and the CPU ms per MiB of the sending and receiving thread."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(os.path.join(directory, "master.pem"),
                               os.path.join(directory, "master.key"))
    server_ctx.load_verify_locations(os.path.join(directory, "ca.pem"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(os.path.join(directory, "ca.pem"))
    client_ctx.load_cert_chain(os.path.join(directory, "worker.pem"),
                               os.path.join(directory, "worker.key"))
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # as our link: 1.3 preferred
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    chunk = os.urandom(MIB)

    def receive() -> tuple[int, float]:
        conn, _ = listener.accept()
        buffer = memoryview(bytearray(MIB))
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            got = 0
            cpu = time.thread_time()
            while got < total:
                n = tls.recv_into(buffer)
                if not n:
                    break
                got += n
            return got, time.thread_time() - cpu

    with ThreadPoolExecutor(1) as pool:
        received = pool.submit(receive)
        with socket.create_connection((HOST, port)) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            start = time.perf_counter()
            cpu = time.thread_time()
            for _ in range(total // MIB):
                tls.sendall(chunk)
            send_cpu = time.thread_time() - cpu
            got, receive_cpu = received.result()
            elapsed = time.perf_counter() - start
            version, cipher = tls.version(), tls.cipher()
    listener.close()
    assert got == total
    mib = total / MIB
    return (mib / elapsed, f"{version} {cipher[0] if cipher else ''}",
            send_cpu * 1000 / mib, receive_cpu * 1000 / mib)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main(reactor: Any, args: argparse.Namespace) -> None:
    keep_freed_buffers()
    base = tempfile.mkdtemp(prefix="wzcbench")
    try:
        os.makedirs(os.path.join(base, "queue", "cluster", "bench"))
        worker = make_pki(base)
        file_path = os.path.join(base, "source.bin")
        with open(file_path, "wb") as f:
            for _ in range(100):
                f.write(os.urandom(MIB))
        print(f"load average at start: {load()}")
        runner = ThreadedRunner(reactor, max_threads=2)
        runner.startService()
        bench = Bench(reactor, base, runner, worker)
        all_runs: dict[str, list[dict[str, float]]] = {config: [] for config in CONFIGS}
        floors: list[float] = []
        floor_cpu: list[tuple[float, float]] = []
        ciphers: dict[str, str] = {}
        for _ in range(args.runs):  # interleaved, so that load from elsewhere hits all alike
            floor, ciphers["floor"], send_cpu, receive_cpu = tls_floor(base)
            floors.append(floor)
            floor_cpu.append((send_cpu, receive_cpu))
            for config in CONFIGS:
                figures, ciphers[config] = await bench.run(config, file_path)
                all_runs[config].append(figures)
        runner.stopService()
        print(f"load average at end: {load()}")
        print(f"raw TLS socket floor ({ciphers['floor']}): best {max(floors):.1f} MiB/s, "
              f"median {statistics.median(floors):.1f} MiB/s ({args.runs} runs); CPU ms per MiB "
              f"(sender / receiver thread) median "
              f"{statistics.median(c[0] for c in floor_cpu):.2f} / "
              f"{statistics.median(c[1] for c in floor_cpu):.2f}")
        for config in CONFIGS[1:]:
            print(f"{config} link: {ciphers[config]}")
        best: dict[str, dict[str, float]] = {}
        median: dict[str, dict[str, float]] = {}
        for config, runs in all_runs.items():
            best[config], median[config] = {}, {}
            for key in runs[0]:
                values = [r[key] for r in runs]
                lower_is_better = key == "hello_ms" or key.startswith("big_cpu")
                best[config][key] = min(values) if lower_is_better else max(values)
                median[config][key] = statistics.median(values)
        print(f"{'config':<14}{'':<7}{'connect+hello':>15}{'1 KiB x1000':>14}{'1 MiB x64':>13}"
              f"{'100 MiB file':>15}   CPU ms per MiB at 1 MiB (sender / receiver)")
        for config in CONFIGS:
            for label, r in (("best", best[config]), ("median", median[config])):
                print(f"{config:<14}{label:<7}{r['hello_ms']:>12.2f} ms"
                      f"{r['small_per_s']:>10.0f} r/s{r['big_mib_s']:>7.1f} MiB/s"
                      f"{r['file_mib_s']:>8.1f} MiB/s   {r['big_cpu_sender_ms']:.2f} / "
                      f"{r['big_cpu_receiver_ms']:.2f}")
        floor_best, floor_median = max(floors), statistics.median(floors)
        for label, table, floor in (("best", best, floor_best), ("median", median, floor_median)):
            plain, alone = table["plain+fernet"], table["tls"]
            ratio = alone["big_mib_s"] / plain["big_mib_s"]
            to_floor = floor / alone["big_mib_s"]
            print(f"[{label}] tls / plain+fernet at 1 MiB: {ratio:.2f}x (target >= 5x: "
                  f"{'OK' if ratio >= 5 else 'MISSED'}); floor / tls at 1 MiB: {to_floor:.2f}x "
                  f"(target <= 1.5x: {'OK' if to_floor <= 1.5 else 'MISSED'}); floor / tls "
                  f"file: {floor / alone['file_mib_s']:.2f}x; tls connect+hello "
                  f"{alone['hello_ms']:.2f} ms (target < 20 ms: "
                  f"{'OK' if alone['hello_ms'] < 20 else 'MISSED'})")
        busiest_floor = statistics.median(max(c) for c in floor_cpu)
        busiest_tls = max(median["tls"]["big_cpu_sender_ms"], median["tls"]["big_cpu_receiver_ms"])
        print(f"CPU per MiB of the busier side at 1 MiB (medians; bounds MiB/s on an idle "
              f"machine, insensitive to other load): tls {busiest_tls:.2f} ms, floor "
              f"{busiest_floor:.2f} ms: {busiest_tls / busiest_floor:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        task.react(lambda reactor: ensureDeferred(serve(reactor, arguments.serve,
                                                        arguments.dir)))
    else:
        task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
