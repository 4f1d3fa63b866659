"""The DAPI on the wire, in memory: a master and a worker (cluster link) and local clients.

Worker local client -> worker -> master and back (``dapi``, long string, ``dapi_res``),
``dapi_fwd`` from the master's local socket to a worker, unknown nodes, a worker lost
mid-request, a local client gone (its request cancelled), ``get_hash``, malformed requests.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import NOW, inline_database, keys, raw
from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import DapiRequest, FunctionName
from wazuhcluster.dapi.results import AffectedItemsWazuhResult, WazuhException
from wazuhcluster.dapi.revalidate import REVALIDATE_CAPABILITY
from wazuhcluster.dapi.wire import DAPI_ANSWERS_CAPABILITY, inline_fits, install
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.factory import LocalAPIFactory
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.chunks import REQUEST_CHUNK
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.node import WorkerNode


def dapi_request(name: str, request_type: str = "local_master", **kwargs: Any) -> bytes:
    return DapiRequest(f=FunctionName.from_dotted(name), f_kwargs=kwargs,
                       request_type=request_type).to_json().encode()



def slow_function(api: Any) -> tuple[Deferred[Any], list[str]]:
    """Register ``wazuh.test.slow`` on ``api``: it waits for the returned gate and records
    the node name of every execution cancelled while waiting."""
    gate: Deferred[Any] = Deferred()
    cancelled: list[str] = []

    async def slow(ctx: Any) -> Any:
        try:
            return await gate
        except CancelledError:
            cancelled.append(ctx.config.node_name)
            raise
    api.register("wazuh.test.slow", slow)
    return gate, cancelled

class WireBase(SynchronousTestCase):
    """A master and a worker linked in memory, each with its DAPI (no tests of its own)."""

    backend = "embedded"  # the master's agent database
    worker_dapi: dict[str, Any] | None = None  # the worker's ``dapi`` settings

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        base = short_tempdir(self)
        self.master = MasterNode(node_config(base), self.clock, SynchronousRunner())
        self.worker = WorkerNode(node_config(base, node_name="worker1", role="worker"),
                                 self.clock, SynchronousRunner())
        for node in (self.master, self.worker):
            db = inline_database(self.clock, node.config.home,
                                 self.backend if node is self.master else "embedded")
            self.addCleanup(db.stopService)
            raw(db).reconcile_keys(keys(10), NOW - 100)
            node.agent_db = db
            if node is self.worker and self.worker_dapi is not None:
                node.config.settings["dapi"] = dict(self.worker_dapi)
            install(node, self.clock)
        self.mapi, self.wapi = self.master.dapi, self.worker.dapi
        self.master_link, self.link, self.link_pump = connected_pair(
            lambda: ClusterServerFactory(self.master).buildProtocol(None),
            lambda: WorkerClientFactory(self.worker).buildProtocol(None), self.clock)
        d = self.worker.hello(self.link)
        self.flush()
        self.successResultOf(d)
        self.pumps: list[Any] = []

    def flush(self) -> None:
        for _ in range(8):
            self.link_pump.flush()
            for pump in getattr(self, "pumps", []):
                pump.flush()

    def local(self, node: Any) -> tuple[ClusterProtocol, LocalClientCommands]:
        commands = LocalClientCommands(self.clock)
        _, client, pump = connected_pair(
            lambda: LocalAPIFactory(node).buildProtocol(None),
            lambda: ClusterProtocol(commands, self.clock, codec=None,
                                    accept_reply_requests=True), self.clock)
        self.pumps.append(pump)
        commands.waiting = True
        return client, commands

    def ask(self, node: Any, command: bytes, payload: bytes) -> tuple[bytes, Any]:
        client, commands = self.local(node)
        d = client.request(command, payload)
        self.flush()
        reply = self.successResultOf(d)
        self.flush()
        return reply, commands.final

    def spy(self, protocol: Any) -> list[bytes]:
        """The commands ``protocol``'s handler is asked to handle from now on."""
        seen: list[bytes] = []
        handle = protocol.handler.handle

        def recording(command: bytes, payload: bytes) -> Any:
            seen.append(command)
            return handle(command, payload)
        protocol.handler.handle = recording
        return seen


class WireTests(WireBase):
    def test_worker_local_client_answered_by_master(self) -> None:
        reply, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.core.agent.Agent.get_agents_overview", limit=None, select=["id"]))
        self.assertEqual(reply, b"Added request to API requests queue")
        answer = codec.loads(self.successResultOf(final))
        self.assertEqual(answer["totalItems"], 11)
        self.assertEqual((self.mapi.executed, self.wapi.executed), (1, 0))

    def test_big_answer_crosses_as_long_string(self) -> None:
        async def big(ctx: Any) -> Any:
            return {"blob": "x" * 6_000_000}
        self.mapi.register("wazuh.test.big", big)
        _, final = self.ask(self.worker, b"dapi", dapi_request("wazuh.test.big"))
        self.assertEqual(len(codec.loads(self.successResultOf(final))["blob"]), 6_000_000)

    def test_distributed_to_worker_and_back(self) -> None:
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.cluster.get_node_wrapper", "distributed_master", node_id="worker1"))
        answer = codec.loads(self.successResultOf(final))
        self.assertIsInstance(answer, AffectedItemsWazuhResult)
        self.assertEqual(answer.affected_items[0]["node"], "worker1")
        self.assertEqual((self.mapi.executed, self.wapi.executed), (0, 1))

    def test_our_nodes_announce_dapi_answers(self) -> None:
        self.assertIn(DAPI_ANSWERS_CAPABILITY, self.worker.master_capabilities)
        session = self.master.registry.get("worker1")
        self.assertIn(DAPI_ANSWERS_CAPABILITY, session.capabilities)

    def test_master_answers_in_one_message(self) -> None:
        """(Toward a worker that keeps no relayed answers: see test_revalidate.py.)"""
        session = self.master.registry.get("worker1")
        session.capabilities = frozenset(session.capabilities - {REVALIDATE_CAPABILITY})
        at_worker = self.spy(self.link)
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.core.agent.Agent.get_agents_overview", limit=None, select=["id"]))
        self.assertEqual(codec.loads(self.successResultOf(final))["totalItems"], 11)
        self.assertEqual(at_worker, [b"wzc_dapi_a"])

    def test_worker_answers_in_one_message(self) -> None:
        at_master = self.spy(self.master_link)
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.cluster.get_node_wrapper", "distributed_master", node_id="worker1"))
        answer = codec.loads(self.successResultOf(final))
        self.assertEqual(answer.affected_items[0]["node"], "worker1")
        self.assertEqual([c for c in at_master if c != b"get_nodes"], [b"dapi", b"wzc_dapi_a"])

    def test_peer_without_the_capability_gets_long_strings(self) -> None:
        """A Wazuh 4.7.5 worker never announces ``dapi-answers``: Wazuh's exchange."""
        session = self.master.registry.get("worker1")
        session.capabilities = frozenset(session.capabilities - {DAPI_ANSWERS_CAPABILITY})
        at_worker = self.spy(self.link)
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.core.agent.Agent.get_agents_overview", limit=None, select=["id"]))
        self.assertEqual(codec.loads(self.successResultOf(final))["totalItems"], 11)
        self.assertEqual(at_worker, [b"new_str", b"str_upd", b"dapi_res"])

    def test_master_without_the_capability_gets_long_strings(self) -> None:
        """A Wazuh 4.7.5 master: the worker answers it with Wazuh's exchange."""
        self.worker.master_capabilities = frozenset()
        at_master = self.spy(self.master_link)
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.cluster.get_node_wrapper", "distributed_master", node_id="worker1"))
        self.assertEqual(codec.loads(self.successResultOf(final)).affected_items[0]["node"],
                         "worker1")
        self.assertEqual([c for c in at_master if c != b"get_nodes"],
                         [b"dapi", b"new_str", b"str_upd", b"dapi_res"])

    def test_answer_beyond_one_frame_takes_long_strings(self) -> None:
        async def big(ctx: Any) -> Any:
            return {"blob": "x" * (REQUEST_CHUNK + 10)}
        self.mapi.register("wazuh.test.big", big)
        at_worker = self.spy(self.link)
        _, final = self.ask(self.worker, b"dapi", dapi_request("wazuh.test.big"))
        self.assertEqual(len(codec.loads(self.successResultOf(final))["blob"]),
                         REQUEST_CHUNK + 10)
        self.assertEqual(at_worker, [b"new_str", b"str_upd", b"str_upd", b"dapi_res"])

    def test_inline_fits_one_frame(self) -> None:
        self.assertTrue(inline_fits(b"12", b"x" * (REQUEST_CHUNK - 3)))
        self.assertFalse(inline_fits(b"12", b"x" * (REQUEST_CHUNK - 2)))

    def test_unknown_request_id_refused(self) -> None:
        d = self.link.request(b"wzc_dapi_a", b"999 {}")
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3032)

    def test_local_sync_dapi_replies_with_the_answer(self) -> None:
        for node, field, executed in ((self.worker, "id", (1, 0)),
                                      (self.master, "name", (2, 0))):
            client, _ = self.local(node)
            at_client = self.spy(client)
            d = client.request(b"wzc_dapi", dapi_request(
                "wazuh.core.agent.Agent.get_agents_overview", limit=None, select=[field]))
            self.flush()
            self.assertEqual(codec.loads(self.successResultOf(d))["totalItems"], 11)
            self.assertEqual(at_client, [])  # nothing but the reply
            self.assertEqual((self.mapi.executed, self.wapi.executed), executed)

    def test_local_sync_dapi_errors(self) -> None:
        client, _ = self.local(self.master)
        d = client.request(b"wzc_dapi", b'{"f": 12')
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3036)
        payload = json.dumps({"f": {"__callable__": {"__name__": "system", "__module__": "os",
                                                     "__qualname__": "system",
                                                     "__type__": "function"}}}).encode()
        d = client.request(b"wzc_dapi", payload)
        self.flush()
        self.assertIsInstance(codec.loads(self.successResultOf(d)), WazuhException)

    def test_local_sync_client_gone_cancels(self) -> None:
        gate, cancelled = slow_function(self.mapi)
        client, commands = self.local(self.master)
        d = client.request(b"wzc_dapi", dapi_request("wazuh.test.slow", "local_any"))
        self.flush()
        self.assertFalse(gate.called)
        client.disconnect("caller went away")
        self.flush()
        self.failureResultOf(d, ClusterError)
        self.failureResultOf(commands.final, ClusterError)  # no final answer comes
        self.assertEqual(cancelled, ["master-node"])
        self.assertEqual(self.mapi.limiter.active, 0)

    def test_dapi_fwd(self) -> None:
        reply, final = self.ask(self.master, b"dapi_fwd", b"worker1 " + dapi_request(
            "wazuh.cluster.get_node_wrapper", "distributed_master"))
        self.assertEqual(reply, b"Request forwarded to worker node")
        answer = codec.loads(self.successResultOf(final))
        self.assertEqual(answer.affected_items[0]["node"], "worker1")

    def test_dapi_fwd_unknown_node(self) -> None:
        client, _ = self.local(self.master)
        d = client.request(b"dapi_fwd", b"ghost " + dapi_request("wazuh.agent.get_agents"))
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3022)

    def test_worker_not_connected_refuses_at_once(self) -> None:
        self.link.disconnect("test drops the link")
        self.flush()
        client, _ = self.local(self.worker)
        d = client.request(b"dapi", dapi_request("wazuh.agent.get_agents"))
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3023)
        _, final = self.ask(self.worker, b"dapi", dapi_request(
            "wazuh.cluster.get_node_wrapper", "local_any"))
        self.assertEqual(codec.loads(self.successResultOf(final)).affected_items[0]["node"],
                         "worker1")

    def test_malformed_request(self) -> None:
        client, _ = self.local(self.master)
        d = client.request(b"dapi", b'{"f": 12')
        self.flush()
        self.assertEqual(self.failureResultOf(d, RemoteCommandError).value.code, 3036)

    def test_unknown_function_answered_as_exception(self) -> None:
        payload = json.dumps({"f": {"__callable__": {"__name__": "system", "__module__": "os",
                                                     "__qualname__": "system",
                                                     "__type__": "function"}},
                              "f_kwargs": {"command": "id"}}).encode()
        _, final = self.ask(self.worker, b"dapi", payload)
        answer = codec.loads(self.successResultOf(final))
        self.assertIsInstance(answer, WazuhException)
        self.assertIn("os.system", answer.extra_message)

    def test_worker_lost_mid_request(self) -> None:
        _gate, cancelled = slow_function(self.wapi)
        d = self.mapi.call("wazuh.test.slow", {"node_list": ["worker1"]}, "distributed_master",
                           wait_for_complete=True)
        self.flush()
        self.assertNoResult(d)
        self.link.disconnect("test drops the link")
        self.flush()
        result = self.successResultOf(d)
        self.assertEqual([e.code for e in result.failed_items], [3022])
        self.assertEqual(cancelled, ["worker1"])  # the worker's execution was cancelled too

    def test_local_client_gone_cancels(self) -> None:
        gate, cancelled = slow_function(self.mapi)
        client, commands = self.local(self.master)
        client.request(b"dapi", dapi_request("wazuh.test.slow", "local_any"))
        self.flush()
        self.assertFalse(gate.called)
        client.disconnect("caller went away")
        self.flush()
        self.assertEqual(self.failureResultOf(commands.final, ClusterError).value.code, 3009)
        self.assertEqual(cancelled, ["master-node"])
        self.assertEqual(self.mapi.limiter.active, 0)

    def test_get_hash(self) -> None:
        path = os.path.join(self.worker.config.home, "etc", "rules", "local_rules.xml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"<group/>")
        client, _ = self.local(self.worker)
        d = client.request(b"get_hash", b"")
        self.flush()
        hashes = json.loads(self.successResultOf(d))
        import hashlib
        self.assertEqual(hashes["etc/rules/local_rules.xml"],
                         hashlib.blake2b(b"<group/>").hexdigest())
