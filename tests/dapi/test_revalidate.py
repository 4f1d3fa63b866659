"""Answers a worker relayed, revalidated with our master by digest (``dapi-revalidate``).

In memory: a master and a worker of ours linked as in test_wire.py. What crosses the link
with and without the capability, unchanged and changed answers (the agent database's
generation moves), errors and other functions never kept, the bounds, malformed messages, a
master without the capability (rolling upgrade) and a Wazuh master (no capabilities at all).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import NOW, keys, raw
from tests.dapi.test_wire import WireBase, dapi_request
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.answers import answer_digest
from wazuhcluster.dapi.codec import RawAnswer
from wazuhcluster.dapi.revalidate import REVALIDATE_CAPABILITY, RelayCache, valid_digest
from wazuhcluster.dapi.service import ADDED
from wazuhcluster.dapi.wire import DAPI_ANSWERS_CAPABILITY, UNCHANGED_GRACE, DapiWorker
from wazuhcluster.errors import ClusterError, ConfigError, RemoteCommandError
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.protocol.commands import Reply

PAGE = dapi_request("wazuh.agent.get_agents", limit=5, offset=0)


def gate_master(case: Any) -> Deferred[None]:
    """Hold the master's answers of ``case`` until the returned Deferred fires."""
    gate: Deferred[None] = Deferred()
    handle = case.mapi.handle

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await gate
        return await handle(*args, **kwargs)
    case.mapi.handle = slow
    return gate


class RevalidateTests(WireBase):
    def sync(self, payload: bytes = PAGE) -> bytes:
        """Ask the worker with ``wzc_dapi``; the reply is the answer's bytes."""
        client, _ = self.local(self.worker)
        d = client.request(b"wzc_dapi", payload)
        self.flush()
        return self.successResultOf(d)

    def fresh(self, payload: bytes = PAGE) -> bytes:
        """What the master answers its own local client now (its answer cache off)."""
        saved = self.mapi.answers.max_entries
        self.mapi.answers.max_entries = 0
        try:
            client, _ = self.local(self.master)
            d = client.request(b"wzc_dapi", payload)
            self.flush()
            return self.successResultOf(d)
        finally:
            self.mapi.answers.max_entries = saved

    def test_both_announce_the_capability(self) -> None:
        self.assertIn(REVALIDATE_CAPABILITY, self.worker.master_capabilities)
        self.assertIn(REVALIDATE_CAPABILITY, self.master.registry.get("worker1").capabilities)

    def test_kept_then_unchanged(self) -> None:
        at_worker, at_master = self.spy(self.link), self.spy(self.master_link)
        first = self.sync()
        self.assertEqual((at_master, at_worker), ([b"dapi"], [b"wzc_dapi_k"]))
        self.assertEqual(len(self.wapi.relayed), 1)
        del at_worker[:], at_master[:]
        second = self.sync()
        # the master's reply to wzc_dapi_r says "unchanged": nothing else crosses
        self.assertEqual((at_master, at_worker), ([b"wzc_dapi_r"], []))
        self.assertEqual(second, first)
        self.assertEqual(second, self.fresh())
        self.assertEqual(self.wapi.relayed.revalidated, 1)
        self.assertEqual(codec.loads(second).total_affected_items, 11)

    def test_request_bytes_forwarded_as_they_came(self) -> None:
        """Toward our master the worker forwards the client's bytes (not the request encoded
        again), with ``dapi`` and ``wzc_dapi_r`` alike; the answers are the same."""
        import json
        spaced = json.dumps(json.loads(PAGE), indent=1, sort_keys=True).encode()
        self.assertNotEqual(spaced, PAGE)
        payloads: list[bytes] = []
        handle = self.master_link.handler.handle

        def recording(command: bytes, payload: bytes) -> Any:
            payloads.append(payload)
            return handle(command, payload)
        self.master_link.handler.handle = recording
        first = self.sync(spaced)
        second = self.sync(spaced)
        self.assertEqual(len(payloads), 2)
        self.assertTrue(payloads[0].endswith(b" " + spaced))  # dapi "<id> <request>"
        self.assertTrue(payloads[1].endswith(b" " + spaced))  # wzc_dapi_r "<id> <d> <r>"
        self.assertEqual(second, first)
        self.assertEqual(first, self.fresh(spaced))
        self.assertEqual(self.wapi.relayed.revalidated, 1)

    def test_request_changed_here_is_encoded_again(self) -> None:
        """A request the worker completes (the node names of a ``wazuh.cluster`` function)
        is encoded again: the client's bytes would lack what was added."""
        request = codec.DapiRequest.from_json(PAGE)
        self.assertEqual(request.wire, PAGE)
        self.assertIsNone(request.copy(nodes=["master"]).wire)

    def test_master_runs_its_normal_path(self) -> None:
        """The next second the master's answer cache misses: the function runs again, and
        its answer (the same bytes) is still only a digest on the link."""
        self.sync()
        executed = self.mapi.executed
        self.clock.advance(1)
        at_worker = self.spy(self.link)
        self.assertEqual(self.sync(), self.fresh())
        self.assertEqual(self.mapi.executed, executed + 2)  # ours, then fresh()'s
        self.assertEqual(at_worker, [])

    def test_changed_answer_crosses_in_full(self) -> None:
        first = self.sync()
        raw(self.master.agent_db).reconcile_keys(keys(12), NOW - 50)  # generation moves
        at_worker, at_master = self.spy(self.link), self.spy(self.master_link)
        second = self.sync()
        self.assertEqual((at_master, at_worker), ([b"wzc_dapi_r"], [b"wzc_dapi_k"]))
        self.assertNotEqual(second, first)
        self.assertEqual(second, self.fresh())
        self.assertEqual(codec.loads(second).total_affected_items, 13)
        # the new answer is the one kept now
        del at_worker[:], at_master[:]
        self.assertEqual(self.sync(), second)
        self.assertEqual((at_master, at_worker), ([b"wzc_dapi_r"], []))

    def test_in_process_caller_on_the_worker(self) -> None:
        """The worker's own REST API (in-process, decoded answers) revalidates too."""
        at_worker = self.spy(self.link)
        for _ in range(2):
            d = self.wapi.call("wazuh.agent.get_agents", {"limit": 5, "offset": 0})
            self.flush()
            self.assertEqual(self.successResultOf(d).total_affected_items, 11)
        self.assertEqual(at_worker, [b"wzc_dapi_k"])
        self.assertEqual(self.wapi.relayed.revalidated, 1)

    def test_unchanged_after_the_grace(self) -> None:
        """An answer not ready within the grace: the reply is dapi's, then wzc_dapi_u."""
        first = self.sync()
        gate = gate_master(self)
        at_worker = self.spy(self.link)
        client, _ = self.local(self.worker)
        d = client.request(b"wzc_dapi", PAGE)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(UNCHANGED_GRACE)
        self.flush()
        self.assertNoResult(d)
        gate.callback(None)
        self.flush()
        self.assertEqual(self.successResultOf(d), first)
        self.assertEqual(at_worker, [b"wzc_dapi_u"])

    def test_errors_and_other_functions_not_kept(self) -> None:
        at_worker = self.spy(self.link)
        bad = dapi_request("wazuh.agent.get_agents", limit=5, sort={"fields": ["nope"],
                                                                     "order": "asc"})
        for _ in range(2):
            answer = codec.loads(self.sync(bad))
            self.assertIsInstance(answer, Exception)
        node = dapi_request("wazuh.cluster.get_node_wrapper")
        for _ in range(2):
            self.sync(node)
        self.assertEqual(at_worker, [b"wzc_dapi_a"] * 4)
        self.assertEqual(len(self.wapi.relayed), 0)

    def test_master_without_the_capability(self) -> None:
        """Rolling upgrade: our master of before; and a Wazuh 4.7.5 master (no capability
        at all): plain ``dapi`` even with an answer kept, nothing kept from their answers."""
        self.sync()
        self.assertEqual(len(self.wapi.relayed), 1)
        session = self.master.registry.get("worker1")
        for worker_caps, master_caps, answer in (
                ({DAPI_ANSWERS_CAPABILITY}, {DAPI_ANSWERS_CAPABILITY}, [b"wzc_dapi_a"]),
                (set(), set(), [b"new_str", b"str_upd", b"dapi_res"])):
            session.capabilities = frozenset(worker_caps)
            self.worker.master_capabilities = frozenset(master_caps)
            self.wapi.relayed.clear()
            at_worker, at_master = self.spy(self.link), self.spy(self.master_link)
            for _ in range(2):
                self.assertEqual(self.sync(), self.fresh())
            self.assertEqual(at_master, [b"dapi", b"dapi"])
            self.assertEqual(at_worker, answer * 2)
            self.assertEqual(len(self.wapi.relayed), 0)

    def test_malformed_and_unknown(self) -> None:
        d = self.link.request(b"wzc_dapi_r", b"1 nothex " + PAGE)
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3036)
        for command, payload in ((b"wzc_dapi_u", b"999"),
                                 (b"wzc_dapi_k", b"999 " + b"0" * 64 + b" {}")):
            d = self.master_link.request(command, payload)
            self.flush()
            self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3032)
        for payload in (b"999 short {}", b"999 " + b"0" * 64 + b"{}", b"999",
                        b"9" * 65 + b" " + b"0" * 64 + b" {}", b" " + b"0" * 64 + b" {}"):
            d = self.master_link.request(b"wzc_dapi_k", payload)
            self.flush()
            self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3036)

    def test_unchanged_for_a_request_that_offered_nothing(self) -> None:
        """A master answering ``wzc_dapi_u`` to a plain ``dapi``: an error answer, no crash."""
        def unchanged_instead(command: bytes, payload: bytes) -> Any:
            request_id = payload.split(b" ", 1)[0]
            self.master_link.request(b"wzc_dapi_u", request_id)
            return succeed(Reply.ok(ADDED))
        self.wapi.relayed.clear()
        handle = self.master_link.handler.handle
        self.master_link.handler.handle = lambda c, p: (
            unchanged_instead(c, p) if c == b"dapi" else handle(c, p))
        answer = codec.loads(self.sync())
        self.assertIsInstance(answer, Exception)
        self.assertEqual(answer.code, 3036)


class EarlyAnswerTests(WireBase):
    """``wzc_dapi_e`` on the local socket: a worker revalidating a kept answer sends its bytes
    ahead (``wzc_early``) while the master is asked, and replies ``ok "="`` only when the
    master said unchanged."""

    def sync(self, payload: bytes = PAGE) -> bytes:
        client, _ = self.local(self.worker)
        d = client.request(b"wzc_dapi", payload)
        self.flush()
        return self.successResultOf(d)

    def early(self, node: Any = None, payload: bytes = PAGE
              ) -> tuple[Deferred[bytes], list[bytes], LocalClientCommands]:
        """Ask ``node`` (the worker) with ``wzc_dapi_e``: the reply, and the commands the
        client was sent meanwhile."""
        client, commands = self.local(node or self.worker)
        seen: list[bytes] = []
        handle = commands.handle

        def recording(command: bytes, data: bytes) -> Any:
            seen.append(command)
            return handle(command, data)
        commands.handle = recording  # type: ignore[method-assign]
        d = client.request(b"wzc_dapi_e", payload)
        self.flush()
        return d, seen, commands

    def fresh(self) -> bytes:
        return RevalidateTests.fresh(self)  # type: ignore[arg-type]

    def local(self, node: Any) -> tuple[Any, LocalClientCommands]:
        client, commands = super().local(node)
        commands.waiting = False  # every answer here is a reply: no final answer awaited
        return client, commands

    def test_unchanged_kept_bytes_ahead(self) -> None:
        first = self.sync()
        gate = gate_master(self)
        d, seen, commands = self.early()
        # the master has not answered yet: the kept bytes are already at the client
        self.assertNoResult(d)
        self.assertEqual((seen, commands.early), ([b"wzc_early"], first))
        gate.callback(None)
        self.flush()
        self.assertEqual(self.successResultOf(d), b"=")
        self.assertEqual(commands.early_answer(), first)
        self.assertEqual(first, self.fresh())
        self.assertEqual(self.wapi.relayed.revalidated, 1)

    def test_changed_answer_is_the_reply(self) -> None:
        first = self.sync()
        raw(self.master.agent_db).reconcile_keys(keys(12), NOW - 50)  # generation moves
        d, seen, _ = self.early()
        self.assertEqual(seen, [b"wzc_early"])
        second = self.successResultOf(d)
        self.assertNotEqual(second, b"=")
        self.assertNotEqual(second, first)
        self.assertEqual(second, self.fresh())
        self.assertEqual(codec.loads(second).total_affected_items, 13)

    def test_nothing_kept_nothing_early(self) -> None:
        d, seen, _ = self.early()
        self.assertEqual(seen, [])
        self.assertEqual(codec.loads(self.successResultOf(d)).total_affected_items, 11)

    def test_errors_are_the_reply(self) -> None:
        """A kept answer, then the master's answer is an error (its function timed out):
        the reply is the error, never "="."""
        self.sync()
        self.clock.advance(1)  # the master's answer cache misses: the function runs

        async def failing(*args: Any, **kwargs: Any) -> Any:
            from wazuhcluster.dapi.results import WazuhInternalError
            return WazuhInternalError(3021, extra_message="wazuh.agent.get_agents")
        self.mapi.handle = failing  # type: ignore[method-assign]
        d, seen, _ = self.early()
        self.assertEqual(seen, [b"wzc_early"])
        answer = codec.loads(self.successResultOf(d))
        self.assertIsInstance(answer, Exception)
        self.assertEqual(answer.code, 3021)

    def test_master_socket_answers_in_the_reply(self) -> None:
        d, seen, _ = self.early(self.master)
        self.assertEqual(seen, [])
        self.assertEqual(self.successResultOf(d), self.fresh())

    def test_client_gone_before_the_early_bytes(self) -> None:
        """The client went away while the request waited for the master: nothing is sent
        to it, nothing fails on the worker."""
        self.sync()
        gate = gate_master(self)
        client, _ = self.local(self.worker)
        d = client.request(b"wzc_dapi_e", PAGE)
        self.flush()
        client.transport.loseConnection()
        self.flush()
        gate.callback(None)
        self.flush()
        self.failureResultOf(d)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_reply_naming_bytes_never_sent(self) -> None:
        commands = LocalClientCommands(self.clock)
        with self.assertRaises(ClusterError):
            commands.early_answer()
        self.successResultOf(commands.handle(b"wzc_early", b"{}"))
        self.assertEqual(commands.early_answer(), b"{}")
        with self.assertRaises(ClusterError):
            commands.early_answer()  # used once

class WorkerKeepsNothingTests(WireBase):
    worker_dapi: ClassVar[dict[str, Any]] = {"relay_cache_entries": 0}

    def test_no_capability_no_keeping(self) -> None:
        self.assertNotIn(REVALIDATE_CAPABILITY,
                         self.master.registry.get("worker1").capabilities)
        at_worker, at_master = self.spy(self.link), self.spy(self.master_link)
        client, _ = self.local(self.worker)
        for _ in range(2):
            d = client.request(b"wzc_dapi", PAGE)
            self.flush()
            self.successResultOf(d)
        self.assertEqual((at_master, at_worker), ([b"dapi"] * 2, [b"wzc_dapi_a"] * 2))


class WazuhDbMasterTests(WireBase):
    """A master on wazuh-db (no generation: its answer cache keeps nothing) never marks an
    answer keepable."""

    backend = "wazuh-db"

    def test_not_kept(self) -> None:
        at_worker = self.spy(self.link)
        client, _ = self.local(self.worker)
        for _ in range(2):
            d = client.request(b"wzc_dapi", PAGE)
            self.flush()
            self.successResultOf(d)
        self.assertEqual(at_worker, [b"wzc_dapi_a"] * 2)
        self.assertEqual(len(self.wapi.relayed), 0)


class RelayCacheTests(SynchronousTestCase):
    def cache(self, entries: int = 3, size: int = 100) -> RelayCache:
        return RelayCache(lambda f, *a: succeed(f(*a)), entries, size)

    def offer(self, cache: RelayCache, key: Any, data: bytes,
              digest: bytes | None = None) -> None:
        self.successResultOf(cache.offer(key, RawAnswer(data, digest or answer_digest(data))))

    def test_digest(self) -> None:
        digest = answer_digest(b"abc")
        self.assertEqual(digest, hashlib.sha256(b"abc").hexdigest().encode())
        self.assertTrue(valid_digest(digest))
        self.assertFalse(valid_digest(digest.upper()))
        self.assertFalse(valid_digest(digest[:-1]))

    def test_entries_bound(self) -> None:
        cache = self.cache(entries=2)
        for key in ("a", "b", "c"):
            self.offer(cache, (key,), key.encode())
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get(("a",)))
        self.assertEqual(cache.get(("c",)).data, b"c")

    def test_bytes_bound(self) -> None:
        cache = self.cache(entries=10, size=100)
        self.offer(cache, ("big",), b"x" * 101)
        self.assertEqual(len(cache), 0)
        for key in ("a", "b", "c"):
            self.offer(cache, (key,), b"y" * 40)
        self.assertEqual((len(cache), cache.size), (2, 80))
        self.assertIsNone(cache.get(("a",)))
        self.offer(cache, ("b",), b"z" * 10)  # replaced, not added
        self.assertEqual((len(cache), cache.size), (2, 50))

    def test_zero_keeps_nothing(self) -> None:
        for cache in (self.cache(entries=0), self.cache(size=0)):
            self.assertFalse(cache.enabled)
            self.assertIsNone(cache.key(codec.DapiRequest.from_json(PAGE)))
            self.offer(cache, ("a",), b"a")
            self.assertEqual(len(cache), 0)

    def test_wrong_digest_not_kept(self) -> None:
        cache = self.cache()
        self.offer(cache, ("a",), b"a", answer_digest(b"b"))
        self.offer(cache, ("b",), b"b", b"nothex")
        self.assertEqual((len(cache), cache.refused), (0, 1))

    def test_capability_follows_the_setting(self) -> None:
        api: Any = type("Api", (), {"relayed": self.cache()})()
        self.assertIn(REVALIDATE_CAPABILITY, DapiWorker(api, None).capabilities)
        api.relayed = self.cache(entries=0)
        self.assertNotIn(REVALIDATE_CAPABILITY, DapiWorker(api, None).capabilities)


class SettingTests(WireBase):
    def test_negative_stops_start_up(self) -> None:
        from wazuhcluster.dapi.service import DistributedAPI
        for key in ("relay_cache_entries", "relay_cache_bytes"):
            self.worker.config.settings["dapi"] = {key: -1}
            with self.assertRaises(ConfigError) as caught:
                DistributedAPI(self.worker, self.clock, {})
            self.assertIn(f"dapi.{key}", str(caught.exception))
