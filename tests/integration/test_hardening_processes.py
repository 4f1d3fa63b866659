"""Process-level hardening tests: a connection flood under a 1024 open-file limit, and three
authenticated peers trying to pin gigabytes in unfinished divided messages.

All traffic goes to the master on 127.0.0.1; the flood's connections come *from* other
loopback source addresses (127.0.0.2 and up) so that the per-address cap can be told
apart from the legitimate clients on 127.0.0.1.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.integration.harness import LOCALHOST, PRLIMIT, Cluster, RawClient, rss_kib, sleep
from tests.protocol.test_handler import RecordingHandler
from wazuhcluster.protocol.commands import HELLO
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import HEADER, command_field
from wazuhcluster.protocol.handler import ClusterProtocol

CONNECTED = r"\[Main\] Successfully connected to master\."
MIB = 1024 * 1024
_log = Logger()  # figures go to _trial_temp/test.log


async def open_raw(c: Cluster, source: str) -> RawClient | None:
    """A bare connection to the master from ``source``; None if it could not be made."""
    client = RawClient()
    endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, c.port, timeout=5,
                                  bindAddress=(source, 0))
    try:
        await connectProtocol(endpoint, client)
    except Exception:  # noqa: BLE001 -- a refused or reset connect is part of a flood
        return None
    c.clients.append(client)
    return client


async def hello(c: Cluster, name: str) -> tuple[ClusterProtocol, bytes]:
    """Connect from 127.0.0.1 and say hello as ``name``; return (protocol, answer)."""
    protocol = ClusterProtocol(RecordingHandler(), reactor, codec=FernetCodec(c.key.encode()),
                               request_timeout=10)
    await connectProtocol(TCP4ClientEndpoint(reactor, LOCALHOST, c.port, timeout=5), protocol)
    answer = await protocol.request(HELLO, f"{name} wazuh worker 4.7.5".encode())
    return protocol, answer


class FloodTests(TestCase):
    """Connections that never say hello cannot lock real workers out."""

    timeout = 180

    async def test_flood_under_1024_descriptors_leaves_every_hello_accepted(self) -> None:
        """1 600 idle connections (100 from one address, then 1 500 from 30) against a master
        limited to 1 024 open files: no EMFILE, the worker stays, and 33 hellos made during
        the flood all succeed."""
        c = Cluster(self)
        m = c.add_node("master", "master")
        m.wrapper = [PRLIMIT, "--nofile=1024:1024"]  # prlimit execs twistd: same pid
        m.start()
        await c.wait_ready(m)
        w1 = c.add_node("worker1").start()
        await c.wait_listed(m, {"master", "worker1"})
        flood: list[RawClient] = []
        answers = []
        for _ in range(100):  # one address beyond max_pre_hello_per_address (16)
            client = await open_raw(c, "127.0.0.2")
            if client is not None:
                flood.append(client)
        for i in range(1500):
            client = await open_raw(c, f"127.0.0.{3 + i % 30}")
            if client is not None:
                flood.append(client)
            if i % 45 == 44:  # 33 legitimate hellos spread through the flood
                protocol, answer = await hello(c, f"legit{i // 45}")
                answers.append(answer)
                protocol.disconnect("test done")
        self.assertEqual(answers, [f"Client legit{i} added".encode() for i in range(33)])
        open_now = sum(1 for client in flood if not client.closed.called)
        self.assertLessEqual(open_now, 256 + 30, "the pre-hello cap held")
        self.assertEqual(m.grep(r"EMFILE|Too many open files"), [])
        self.assertTrue(m.grep(r"max_pre_hello_per_address"))
        self.assertTrue(m.grep(r"max_pre_hello_connections"))
        self.assertEqual(await c.node_names(m), {"master", "worker1"})
        self.assertEqual(w1.grep(r"Disconnected from master"), [])


class MemoryAttackTests(TestCase):
    """Authenticated peers cannot make the master hold more than its memory budget."""

    timeout = 180

    async def test_three_connections_stay_within_the_budget(self) -> None:
        """Three connections each opening 10 divided messages of 6 x 8 MiB frames (1.4 GB in
        all, never finished): the master's peak RSS stays under memory_budget + 100 MB
        (without the budget it would pass 1.4 GB), and a real worker is still served."""
        budget = 192 * MIB
        c = Cluster(self)
        # The attackers send no keepalive: the tests' 10 s keepalive limit would close them
        # first when a loaded machine delivers their bytes slowly (seen at load 20), and this
        # test is about the budget; the master's default limit (120 s) applies instead.
        m, (w1,) = await c.start_cluster("worker1", master_tunables={
            "intervals": {"master": {"max_allowed_time_without_keepalive": 120}},
            "wazuhcluster": {
                "memory_budget": budget, "memory_per_connection": 96 * MIB,
                "max_message_size": 64 * MIB, "max_frame_payload": 8 * MIB,
                "partial_frame_timeout": 60}})
        await c.wait_log(w1, CONNECTED)
        baseline = rss_kib(m.live_pid)
        attackers = []
        for n in range(3):
            protocol, answer = await hello(c, f"attacker{n}")
            self.assertEqual(answer, f"Client attacker{n} added".encode())
            attackers.append(protocol)
        frame_body = b"A" * (8 * MIB)
        for counter in range(10):
            header = HEADER.pack(1000 + counter, len(frame_body),
                                 command_field(b"sendsync", divided=True))
            for _ in range(6):
                for protocol in attackers:
                    if protocol.connected_ok:
                        protocol.transport.write(header + frame_body)  # type: ignore
            await sleep(0.05)
        await c.wait_for("the master to close every attacker",
                         lambda: not any(p.connected_ok for p in attackers), timeout=60)
        peak = _peak_kib(m.live_pid)
        _log.info("memory attack: master RSS before {before} KiB, peak {peak} KiB, budget "
                  "{budget} KiB", before=baseline, peak=peak, budget=budget // 1024)
        self.assertLess(peak * 1024, budget + 100 * 10**6,
                        f"peak RSS {peak} KiB, now {rss_kib(m.live_pid)} KiB, before the "
                        f"attack {baseline} KiB")
        # (waited for: under heavy load the line can reach cluster.log after the close)
        await c.wait_log(m, r"memory budget exceeded", timeout=30)
        self.assertEqual(await c.node_names(m), {"master", "worker1"})
        self.assertEqual(w1.grep(r"Disconnected from master"), [])
        out, err, code = await c.control(m, "-l", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual({n["name"] for n in json.loads(out)["items"]}, {"master", "worker1"})


def _peak_kib(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")
