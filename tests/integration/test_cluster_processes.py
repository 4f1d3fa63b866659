"""Process-level integration tests: real ``twistd wazuhcluster`` masters and workers on 127.0.0.1.

Each test starts its own nodes (see :mod:`tests.integration.harness`), waits for events by
polling the local sockets and the cluster.log files, and kills everything in its cleanup.
"""

from __future__ import annotations

import json
import signal
import struct
from functools import partial

from twisted.trial.unittest import TestCase

from tests.integration.harness import Cluster, NodeProcess, ended_by, rss_kib

VERSION = "4.7.5"
HEADER = struct.Struct("!II12s")
CONNECTED = r"\[Main\] Successfully connected to master\."
KEEPALIVE_OK = r"\[Keep Alive\] Successful response from master: keepalive"


class MembershipTests(TestCase):
    """Nodes join, leave and rejoin the cluster as processes start, die and restart."""

    timeout = 60

    async def test_three_nodes_listed_from_every_node(self) -> None:
        """wazuhcluster-control -l --json on the master and on each worker lists exactly the master
        and both workers, with the right types and versions.
        """
        c = Cluster(self)
        m, workers = await c.start_cluster("worker1", "worker2")
        for w in workers:
            await c.wait_log(w, CONNECTED)
        expected = {"master": ("master", VERSION, "127.0.0.1"),
                    "worker1": ("worker", VERSION, "127.0.0.1"),
                    "worker2": ("worker", VERSION, "127.0.0.1")}
        for node in (m, *workers):
            out, err, code = await c.control(node, "-l", "--json")
            self.assertEqual(code, 0, f"control -l on {node.name} failed: {err}")
            answer = json.loads(out)
            self.assertEqual(answer["totalItems"], 3, out)
            got = {n["name"]: (n["type"], n["version"], n["ip"]) for n in answer["items"]}
            self.assertEqual(got, expected, f"as seen from {node.name}")
            self.assertEqual(answer["items"][0]["name"], "master", "the master is listed first")
        out, err, code = await c.control(workers[1], "-l")
        self.assertEqual(code, 0, err)
        rows = [line.split() for line in out.splitlines()]
        self.assertEqual(rows, [["NAME", "TYPE", "VERSION", "ADDRESS"],
                                ["master", "master", VERSION, "127.0.0.1"],
                                ["worker1", "worker", VERSION, "127.0.0.1"],
                                ["worker2", "worker", VERSION, "127.0.0.1"]])
        out, err, code = await c.control(m, "-i", "--json")
        self.assertEqual(code, 0, err)
        for node in (m, *workers):
            with open(node.log_path, encoding="utf-8") as f:
                log = f.read()
            self.assertIn("[Main]", log)
            self.assertNotIn(c.key, log, f"the cluster key appears in {node.name}'s log")

    async def test_killed_worker_leaves_and_rejoins_under_same_name(self) -> None:
        """A SIGKILLed worker disappears from the master's list, and once restarted rejoins under
        the same name on its first attempt (no 3028) with a working local socket.
        """
        c = Cluster(self)
        m, (w1, _w2) = await c.start_cluster("worker1", "worker2")
        await c.wait_log(w1, CONNECTED)
        m_mark = m.log_size()
        await w1.stop(signal.SIGKILL)
        await c.wait_listed(m, {"master", "worker2"})
        await c.wait_log(m, r"\[Worker worker1\] \[Main\] Worker disconnected", since=m_mark)

        w1_mark, m_mark = w1.log_size(), m.log_size()
        w1.start()
        await c.wait_listed(m, {"master", "worker1", "worker2"})
        await c.wait_log(w1, CONNECTED, since=w1_mark)
        after_restart = "\n".join(w1.log_lines(w1_mark))
        self.assertNotIn("3028", after_restart)
        self.assertNotIn("already exists", after_restart)
        self.assertNotIn("Could not connect to master", after_restart)
        self.assertEqual(m.grep(r"Refused worker worker1", since=m_mark), [])
        # The local API came back although the killed process left its socket and lock.
        await c.wait_for("the restarted worker1 to list the cluster",
                         partial(_lists, c, w1, {"master", "worker1", "worker2"}))

    async def test_master_restart_workers_reconnect(self) -> None:
        """After the master is stopped with SIGTERM (exiting cleanly) and started again, both
        workers notice the loss and reconnect on their own.
        """
        c = Cluster(self)
        m, workers = await c.start_cluster("worker1", "worker2")
        for w in workers:
            await c.wait_log(w, CONNECTED)
        marks = [w.log_size() for w in workers]
        reason = await m.stop(signal.SIGTERM)
        self.assertIn(ended_by(reason), [(0, None), (None, signal.SIGTERM)], repr(reason))
        self.assertIn(b"Main loop terminated.", bytes(m.output), "the master shut down cleanly")
        for w, mark in zip(workers, marks, strict=True):
            await c.wait_log(w, r"\[Main\] Disconnected from master", since=mark)

        m.start()
        await c.wait_listed(m, {"master", "worker1", "worker2"})
        for w, mark in zip(workers, marks, strict=True):
            await c.wait_log(w, CONNECTED, since=mark)
            await c.wait_for(f"{w.name} to list the cluster through the new master",
                             partial(_lists, c, w, {"master", "worker1", "worker2"}))


class RefusalTests(TestCase):
    """The master refuses workers that must not join, and says why on both sides."""

    timeout = 60

    async def _master(self, c: Cluster) -> None:
        m = c.add_node("master", "master").start()
        await c.wait_ready(m)

    async def test_wrong_key_is_dropped_and_never_listed(self) -> None:
        """A worker with a different cluster key is disconnected by the master (logged as
        undecryptable) on every attempt and never appears in the node list.
        """
        c = Cluster(self)
        await self._master(c)
        m = c.nodes[0]
        intruder = c.add_node("worker9", key="x" * 32).start()
        await c.wait_log(m, r"WARNING: \[Master\] \[Main\] Dropping connection with 127\.0\.0\.1:"
                            r" could not decrypt a message", count=2)
        await c.wait_log(intruder, r"ERROR: \[Worker\] \[Main\] Could not connect to master",
                         count=2)
        self.assertEqual(await c.node_names(m), {"master"})
        self.assertEqual(m.grep(r"worker9"), [], "the master never registered worker9")
        self.assertEqual(intruder.grep(CONNECTED), [])

    async def test_wrong_cluster_name_is_refused_with_3030(self) -> None:
        """A worker of another cluster gets error 3030, logged by the worker ("Could not connect to
        master") and by the master ("Refused worker").
        """
        c = Cluster(self)
        await self._master(c)
        m = c.nodes[0]
        stranger = c.add_node("worker9", cluster_name="othercluster").start()
        lines = await c.wait_log(stranger, r"ERROR: \[Worker\] \[Main\] Could not connect to "
                                           r"master: Error 3030")
        self.assertIn("othercluster", lines[0])
        await c.wait_log(m, r"ERROR: \[Master\] \[Main\] Refused worker worker9 from "
                            r"127\.0\.0\.1: Error 3030")
        self.assertEqual(await c.node_names(m), {"master"})
        self.assertEqual(stranger.grep(CONNECTED), [])

    async def test_other_version_is_refused_with_3031(self) -> None:
        """A worker announcing compatibility_version 4.7.4 gets error 3031, logged clearly on both
        sides, and is not listed.
        """
        c = Cluster(self)
        await self._master(c)
        m = c.nodes[0]
        old = c.add_node("worker9", tunables={"wazuhcluster": {"compatibility_version": "4.7.4"}})
        old.start()
        lines = await c.wait_log(old, r"ERROR: \[Worker\] \[Main\] Could not connect to "
                                      r"master: Error 3031")
        self.assertIn("4.7.4", lines[0])
        lines = await c.wait_log(m, r"ERROR: \[Master\] \[Main\] Refused worker worker9 from "
                                    r"127\.0\.0\.1: Error 3031")
        self.assertIn("4.7.4", lines[0])
        self.assertEqual(await c.node_names(m), {"master"})
        self.assertEqual(old.grep(CONNECTED), [])

    async def test_duplicate_name_is_refused_with_3028_and_original_stays(self) -> None:
        """A second live process using an already connected worker's name gets 3028 (on every retry)
        while the original keeps its connection and its keepalives.
        """
        c = Cluster(self)
        m, (w1,) = await c.start_cluster("worker1")
        await c.wait_log(w1, CONNECTED)
        since_before = (await c.health(m))["nodes"]["worker1"]["status"]["connected_since"]
        w1_mark = w1.log_size()
        dup = c.add_node("worker1", home_name="worker1-dup").start()
        await c.wait_log(dup, r"ERROR: \[Worker\] \[Main\] Could not connect to master: "
                              r"Error 3028", count=2)
        await c.wait_log(m, r"ERROR: \[Master\] \[Main\] Refused worker worker1 from "
                            r"127\.0\.0\.1: Error 3028", count=2)
        after_refusals = w1.log_size()
        await c.wait_log(w1, KEEPALIVE_OK, since=after_refusals)
        self.assertEqual(w1.grep(r"Disconnected from master", since=w1_mark), [])
        self.assertEqual(m.grep(r"replaced by", since=0), [])
        self.assertEqual(await c.node_names(m), {"master", "worker1"})
        since_after = (await c.health(m))["nodes"]["worker1"]["status"]["connected_since"]
        self.assertEqual(since_after, since_before, "worker1's original session was kept")
        self.assertEqual(dup.grep(CONNECTED), [])

    async def test_silently_dead_worker_is_replaced_by_a_new_process_of_that_name(self) -> None:
        """While a worker is frozen (its connection still open), a new process with its name is
        admitted after the master's echo-m probe goes unanswered, and the old one, once thawed,
        is refused with 3028.
        """
        c = Cluster(self)
        slow_reaper = {"intervals": {"master": {"max_allowed_time_without_keepalive": 60}}}
        m, (old,) = await c.start_cluster("worker1", master_tunables=slow_reaper)
        await c.wait_log(old, CONNECTED)
        old.send_signal(signal.SIGSTOP)
        m_mark = m.log_size()
        new = c.add_node("worker1", home_name="worker1-new").start()
        await c.wait_log(new, CONNECTED)
        await c.wait_log(m, r"WARNING: \[Master\] \[Main\] Worker worker1: old connection from "
                            r"127\.0\.0\.1 did not answer; replaced", since=m_mark)
        self.assertEqual(new.grep(r"Could not connect to master"), [])
        self.assertEqual(await c.node_names(m), {"master", "worker1"})

        old_mark = old.log_size()
        old.send_signal(signal.SIGCONT)
        await c.wait_log(old, r"\[Main\] Disconnected from master", since=old_mark)
        await c.wait_log(old, r"Could not connect to master: Error 3028", since=old_mark)
        new_mark = new.log_size()
        await c.wait_log(new, KEEPALIVE_OK, since=new_mark)
        self.assertEqual(new.grep(r"Disconnected from master"), [])
        self.assertEqual(await c.node_names(m), {"master", "worker1"})

    async def test_refused_worker_logs_no_unhandled_error(self) -> None:
        """A worker whose hello is refused logs the refusal and retries without CRITICAL "Unhandled
        Error" / NoTransition tracebacks.
        """
        c = Cluster(self)
        await self._master(c)
        stranger = c.add_node("worker9", cluster_name="othercluster").start()
        await c.wait_log(stranger, r"Could not connect to master: Error 3030", count=3)
        self.assertEqual(stranger.grep(r"CRITICAL|Unhandled Error|[Nn]o ?[Tt]ransition"), [])



class HostileClientTests(TestCase):
    """Clients that do not speak the protocol are dropped without hurting the master."""

    timeout = 60

    async def test_garbage_and_huge_headers_dropped_without_memory_growth(self) -> None:
        """Garbage bytes and 4 GiB payload announcements are dropped well before the hello timeout,
        50 of the latter add under 20 MB RSS, and the worker stays connected with keepalives
        flowing.
        """
        c = Cluster(self)
        m, (w1,) = await c.start_cluster("worker1")  # hello_timeout stays at its 20 s default
        await c.wait_log(w1, CONNECTED)
        malformed = r"Dropping connection with 127\.0\.0\.1: malformed stream: "
        undecryptable = r"Dropping connection with 127\.0\.0\.1: could not decrypt a message"
        garbage = [
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", malformed + "announced payload"),
            (HEADER.pack(3, 0, b" hello -----"), malformed + "empty command name"),
            (b"\x00" * 64, undecryptable),
            (HEADER.pack(1, 16, b"hello ------") + b"not-a-fernet-tok", undecryptable),
            (HEADER.pack(2, 200, b"hello ------") + b"A" * 200, undecryptable),
        ]
        for blob, reason in garbage:
            mark = m.log_size()
            client = await c.raw_connect()
            client.send(blob)
            await c.wait_closed(client, f"the master to drop a client that sent {blob[:24]!r}",
                                timeout=10)  # well under the 20 s hello timeout
            await c.wait_log(m, reason, since=mark)
            self.assertEqual(bytes(client.received), b"", "nothing is answered to garbage")

        huge = HEADER.pack(7, 0xFFFFFFFF, b"hello ------")
        await self._flood(c, huge, 5)  # warm up allocator and code paths
        before = rss_kib(m.live_pid)
        for _ in range(5):
            await self._flood(c, huge, 10)
        after = rss_kib(m.live_pid)
        self.assertLess(after - before, 20 * 1024,
                        f"master RSS grew from {before} KiB to {after} KiB")
        await c.wait_log(m, r"malformed stream: announced payload of 4294967295 bytes exceeds",
                         count=55)

        w1_mark = w1.log_size()
        await c.wait_log(w1, KEEPALIVE_OK, since=w1_mark, count=2)
        self.assertEqual(await c.node_names(m), {"master", "worker1"})
        self.assertEqual(w1.grep(r"Disconnected from master"), [])
        out, err, code = await c.control(m, "-l", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual({n["name"] for n in json.loads(out)["items"]}, {"master", "worker1"})

    async def _flood(self, c: Cluster, header: bytes, n: int) -> None:
        """Open ``n`` connections at once, each sending ``header`` plus 64 KiB, and wait until all
        are dropped.
        """
        clients = [await c.raw_connect() for _ in range(n)]
        for client in clients:
            client.send(header + b"x" * 65536)
        for client in clients:
            await c.wait_closed(client, "the master to drop a 4 GiB announcement", timeout=10)

    async def test_silent_client_dropped_after_hello_timeout(self) -> None:
        """A client that connects and never sends hello is disconnected by the master after
        hello_timeout (1 s), while a real worker connected before it stays.
        """
        c = Cluster(self)
        m, (w1,) = await c.start_cluster(
            "worker1", master_tunables={"wazuhcluster": {"hello_timeout": 1}})
        await c.wait_log(w1, CONNECTED)
        client = await c.raw_connect()
        await c.wait_closed(client, "the master to drop a silent client", timeout=15)
        await c.wait_log(m, r"\[Master\] \[Main\] Closing connection with 127\.0\.0\.1: "
                            r"no hello within 1")
        self.assertEqual(bytes(client.received), b"")
        self.assertEqual(await c.node_names(m), {"master", "worker1"})
        self.assertEqual(w1.grep(r"Disconnected from master"), [])


class KeepaliveTests(TestCase):
    """The master's keepalive check drops workers that stop answering."""

    timeout = 60

    async def test_frozen_worker_dropped_then_rejoins_after_sigcont(self) -> None:
        """A SIGSTOPped worker is dropped by the master's keepalive check (3 s limit) while the
        other worker stays, and after SIGCONT it reconnects and is listed again.
        """
        c = Cluster(self)
        m, (w1, w2) = await c.start_cluster(
            "worker1", "worker2",
            master_tunables={"intervals": {"master": {"max_allowed_time_without_keepalive": 3}}})
        await c.wait_log(w1, CONNECTED)
        m_mark = m.log_size()
        w1.send_signal(signal.SIGSTOP)
        await c.wait_listed(m, {"master", "worker2"})
        await c.wait_log(m, r"ERROR: \[Worker worker1\] \[Keep alive\] No keepalive for",
                         since=m_mark)

        w1_mark = w1.log_size()
        w1.send_signal(signal.SIGCONT)
        await c.wait_listed(m, {"master", "worker1", "worker2"})
        await c.wait_log(w1, CONNECTED, since=w1_mark)
        self.assertEqual(m.grep(r"\[Worker worker2\] \[Keep alive\] No keepalive", since=m_mark),
                         [])
        self.assertTrue(w2.running)


async def _lists(c: Cluster, node: NodeProcess, names: set[str]) -> bool:
    """True when ``node`` answers get_nodes with exactly ``names``."""
    return await c.node_names(node) == names
