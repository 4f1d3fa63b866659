"""The DAPI service: allow-list, local execution and timeouts (Clock), fair concurrency,
the routing decisions and master routing with OR-merge and pagination, peers gone."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.dapi.support import DapiEnv
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import DapiRequest, FunctionName
from wazuhcluster.dapi.functions import ALL_FUNCTIONS
from wazuhcluster.dapi.functions.cluster import FUNCTIONS as CLUSTER_FUNCTIONS
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhException,
    WazuhInternalError,
)
from wazuhcluster.dapi.service import DistributedAPI, FairLimiter, origin_key
from wazuhcluster.interfaces import IDistributedAPI
from wazuhcluster.master.registry import WorkerRegistry, WorkerSession

DANGEROUS = [
    ("posix", "system"), ("os", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
    ("builtins", "__import__"), ("", "__import__"), ("builtins", "exec"),
]


class FakePeer:
    """Records requests; answers ``ok``."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def request(self, command: bytes, payload: bytes, timeout: float | None = None
                ) -> Deferred[bytes]:
        self.sent.append((command, payload))
        return succeed(b"ok")

    def requests(self) -> list[tuple[str, DapiRequest]]:
        out = []
        for command, payload in self.sent:
            if command == b"dapi":
                rid, _, body = payload.partition(b" ")
                out.append((rid.decode(), DapiRequest.from_json(body)))
        return out


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "not fired"
    return box[0]


class Env:
    def __init__(self, testcase: SynchronousTestCase, role: str = "master") -> None:
        self.dapi_env = DapiEnv(testcase, role)
        self.clock = self.dapi_env.clock
        self.node = self.dapi_env.node
        self.node.run = self.dapi_env.ctx.run
        self.node.registry = WorkerRegistry()
        self.node.peer = None
        self.node.node_list = lambda: [{"name": self.dapi_env.config.node_name}] + [
            {"name": s.name} for s in sorted(self.node.registry, key=lambda s: s.name)]
        # a worker asks its master for the node names (get_nodes) to fill ``nodes``
        self.node.request_master = lambda command, payload: succeed(json.dumps(
            {"items": [{"name": "master-node"}, {"name": self.dapi_env.config.node_name}],
             "totalItems": 2}).encode())
        self.api = DistributedAPI(self.node, self.clock, {**ALL_FUNCTIONS, **CLUSTER_FUNCTIONS})
        self.peers: dict[str, FakePeer] = {}

    def add_worker(self, name: str) -> FakePeer:
        peer = FakePeer()
        self.peers[name] = peer
        self.node.registry.join(WorkerSession(name=name, version="4.7.5", node_type="worker",
                                              ip="127.0.0.1", peer=peer, connected_since=0,
                                              last_keepalive=0))
        return peer


def request(name: str, request_type: str = "local_master", **kwargs: Any) -> DapiRequest:
    return DapiRequest(f=FunctionName.from_dotted(name), f_kwargs=kwargs,
                       request_type=request_type)


class AllowListTests(SynchronousTestCase):
    def test_interface(self) -> None:
        env = Env(self)
        verifyObject(IDistributedAPI, env.api)
        self.assertIn("wazuh.core.agent.Agent.get_agents_overview", env.api.registered())
        self.assertIn("wazuh.cluster.get_node_wrapper", env.api.registered())

    def test_dangerous_names_run_nothing(self) -> None:
        env = Env(self)
        for module, qualname in DANGEROUS:
            payload = json.dumps({"f": {"__callable__": {
                "__name__": qualname, "__module__": module, "__qualname__": qualname,
                "__type__": "builtin_function_or_method"}},
                "f_kwargs": {"command": "touch /tmp/pwned"}, "request_type": "local_any"})
            req = DapiRequest.from_json(payload)
            answer = result_of(Deferred.fromCoroutine(env.api.handle(req, "local")))
            self.assertIsInstance(answer, WazuhInternalError)
            self.assertEqual(answer.code, 1000)
            self.assertIn(qualname, answer.extra_message)
            encoded = json.loads(codec.dumps(answer))["__wazuh_exception__"]
            self.assertEqual(encoded["__class__"], "WazuhInternalError")
            self.assertEqual(encoded["__object__"]["title"], "Wazuh Internal Error")
        self.assertEqual(env.api.executed, 0)

    def test_call_raises_the_exception(self) -> None:
        env = Env(self)
        failure = result_of(env.api.call("os.system", {"command": "id"}, "local_any"))
        self.assertTrue(failure.check(WazuhInternalError))


class LocalExecutionTests(SynchronousTestCase):
    def test_runs_natively(self) -> None:
        env = Env(self)
        env.dapi_env.add_agents(3)
        answer = result_of(env.api.call("wazuh.core.agent.Agent.get_agents_overview",
                                        {"limit": None}, "local_master"))
        self.assertEqual(answer["totalItems"], 4)
        node = result_of(env.api.call("wazuh.cluster.get_node_wrapper", {}, "local_any"))
        self.assertEqual(node.affected_items, [{"node": "master-node", "cluster": "wazuh",
                                                "type": "master"}])

    def test_timeout_3021_with_clock(self) -> None:
        env = Env(self)
        never: Deferred[Any] = Deferred()

        async def slow(ctx: Any) -> Any:
            return await never
        env.api.register("wazuh.test.slow", slow)
        d = env.api.call("wazuh.test.slow", {}, "local_any", api_timeout=30)
        self.assertNoResult(d)
        env.clock.advance(29)
        self.assertNoResult(d)
        env.clock.advance(2)
        self.assertEqual(self.failureResultOf(d, WazuhInternalError).value.code, 3021)
        self.assertEqual(env.api.limiter.active, 0)

    def test_wait_for_complete_has_no_timeout(self) -> None:
        env = Env(self)
        gate: Deferred[Any] = Deferred()

        async def slow(ctx: Any) -> Any:
            return await gate
        env.api.register("wazuh.test.slow", slow)
        d = env.api.call("wazuh.test.slow", {}, "local_any", wait_for_complete=True)
        env.clock.advance(10_000)
        self.assertNoResult(d)
        gate.callback({"ok": 1})
        self.assertEqual(self.successResultOf(d), {"ok": 1})

    def test_agent_list_star_dropped(self) -> None:
        env = Env(self)
        seen: list[dict[str, Any]] = []

        async def probe(ctx: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return {}
        env.api.register("wazuh.test.probe", probe)
        result_of(env.api.call("wazuh.test.probe", {"agent_list": "*", "x": 1}, "local_any"))
        self.assertEqual(seen, [{"x": 1}])

    def test_errors_of_f_are_answers(self) -> None:
        env = Env(self)

        async def boom(ctx: Any) -> Any:
            raise RuntimeError("kaput")
        env.api.register("wazuh.test.boom", boom)
        answer = result_of(Deferred.fromCoroutine(env.api.handle(
            request("wazuh.test.boom", "local_any"), "local")))
        self.assertEqual(answer.code, 1000)
        self.flushLoggedErrors(RuntimeError)


class FairnessTests(SynchronousTestCase):
    def test_bound_per_origin_and_round_robin(self) -> None:
        limiter = FairLimiter(total=2, per_origin=1)
        order: list[str] = []
        for origin in ("a", "a", "a", "b", "b"):
            limiter.acquire(origin).addCallback(lambda _, o=origin: order.append(o))
        self.assertEqual(order, ["a", "b"])
        limiter.release("a")
        self.assertEqual(order, ["a", "b", "a"])
        limiter.release("b")
        self.assertEqual(order, ["a", "b", "a", "b"])
        limiter.release("a")
        self.assertEqual(order, ["a", "b", "a", "b", "a"])

    def test_slow_origin_does_not_stall_others(self) -> None:
        env = Env(self)
        gates: list[Deferred[Any]] = []

        async def slow(ctx: Any) -> Any:
            gate: Deferred[Any] = Deferred()
            gates.append(gate)
            return await gate

        env.api.register("wazuh.test.slow", slow)

        def finish() -> None:  # let every request end: nothing suspended is left behind
            while gates:
                gates.pop(0).callback(None)
        self.addCleanup(finish)
        per_origin = env.api.limiter.per_origin
        for i in range(per_origin + 3):
            Deferred.fromCoroutine(env.api.handle(request("wazuh.test.slow", "local_any"),
                                                  f"w1*{i}"))
        self.assertEqual(len(gates), per_origin)
        other = Deferred.fromCoroutine(env.api.handle(
            request("wazuh.cluster.get_status_json", "local_any"), "w2*1"))
        self.assertEqual(self.successResultOf(other).dikt["data"],
                         {"enabled": "yes", "running": "yes"})

    def test_cancelled_waiter_leaves_the_queue(self) -> None:
        limiter = FairLimiter(total=1, per_origin=1)
        self.successResultOf(limiter.acquire("a"))
        waiting = limiter.acquire("b")
        waiting.cancel()
        self.failureResultOf(waiting)
        nxt = limiter.acquire("c")
        limiter.release("a")
        self.successResultOf(nxt)
        self.assertEqual(dict(limiter.running), {"c": 1})

    def test_origin_keys(self) -> None:
        self.assertEqual(origin_key("w1*42"), "w1")
        self.assertEqual(origin_key("master*x"), "master")
        self.assertEqual(origin_key("17"), "local")


class DecisionTests(SynchronousTestCase):
    """Where a request runs, for every row of the decision table."""

    def test_worker(self) -> None:
        env = Env(self, role="worker")
        master = FakePeer()
        env.node.peer = master
        for kind in ("local_master", "distributed_master"):
            d = Deferred.fromCoroutine(env.api.handle(
                request("wazuh.cluster.get_node_wrapper", kind), "1"))
            self.assertNoResult(d)
            rid, sent = master.requests()[-1]
            self.assertEqual(sent.request_type, kind)
            env.api.answered(rid, {"answered": kind})
            self.assertEqual(self.successResultOf(d), {"answered": kind})
        runs_here = [request("wazuh.cluster.get_node_wrapper", "local_any"),
                     request("wazuh.cluster.get_node_wrapper", "distributed_master")]
        runs_here[1].from_cluster = True
        for req in runs_here:
            answer = result_of(Deferred.fromCoroutine(env.api.handle(req, "master*1")))
            self.assertEqual(answer.affected_items[0]["node"], "worker1")
        self.assertEqual(len(master.requests()), 2)

    def test_worker_not_connected(self) -> None:
        env = Env(self, role="worker")
        answer = result_of(Deferred.fromCoroutine(env.api.handle(
            request("wazuh.agent.get_agents"), "1")))
        self.assertEqual(answer.code, 3023)

    def test_worker_master_lost_mid_request(self) -> None:
        env = Env(self, role="worker")
        env.node.peer = FakePeer()
        d = env.api.call("wazuh.agent.get_agents", {}, "local_master")
        self.assertNoResult(d)
        env.api.peer_gone("master", WazuhClusterError(3023))
        self.assertEqual(self.failureResultOf(d, WazuhClusterError).value.code, 3023)

    def test_forward_timeout(self) -> None:
        env = Env(self, role="worker")
        env.node.peer = FakePeer()
        d = env.api.call("wazuh.agent.get_agents", {}, "local_master")
        env.clock.advance(env.dapi_env.config.intervals.timeout_dapi_request + 1)
        self.assertEqual(self.failureResultOf(d, WazuhClusterError).value.code, 3021)
        self.assertEqual(env.api._pending, {})

    def test_master_local(self) -> None:
        env = Env(self)
        w1 = env.add_worker("w1")
        for kind in ("local_any", "local_master"):
            answer = result_of(env.api.call("wazuh.cluster.get_node_wrapper", {}, kind))
            self.assertEqual(answer.affected_items[0]["node"], "master-node")
        self.assertEqual(w1.sent, [])


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.env = Env(self)
        self.env.dapi_env.add_agents(6)
        self.env.dapi_env.set([1, 2], node_name="master-node")
        self.env.dapi_env.set([3, 4], node_name="w1")
        self.env.dapi_env.set([5, 6], node_name="w2")
        self.w1 = self.env.add_worker("w1")
        self.w2 = self.env.add_worker("w2")

    def answer_all(self, peer: FakePeer, f: Any) -> None:
        for rid, req in peer.requests():
            self.assertTrue(req.from_cluster)
            self.env.api.answered(rid, f(req))

    def test_agent_list_by_node(self) -> None:
        api = self.env.api
        d = api.call("wazuh.agent.get_agents", {"agent_list": ["002", "005", "006", "999"]},
                     "distributed_master")
        self.assertNoResult(d)
        self.assertEqual(self.w1.sent, [])
        [(rid, req)] = self.w2.requests()
        self.assertEqual(req.f_kwargs["agent_list"], ["005", "006"])
        result = AffectedItemsWazuhResult(affected_items=[{"id": "005"}, {"id": "006"}],
                                          sort_fields=["id"], all_msg="a", none_msg="n")
        api.answered(rid, result)
        merged = self.successResultOf(d)
        self.assertEqual([i["id"] for i in merged.affected_items], ["002", "005", "006"])
        self.assertEqual([e.code for e in merged.failed_items], [1701])

    def test_all_agents_broadcast_and_pagination(self) -> None:
        api = self.env.api
        d = api.call("wazuh.agent.get_agents", {"agent_list": "*", "offset": 1, "limit": 3,
                                                "sort": {"fields": ["id"], "order": "asc"}},
                     "distributed_master", broadcasting=True)
        reqs = {n: p.requests() for n, p in (("w1", self.w1), ("w2", self.w2))}
        self.assertEqual(reqs["w1"][0][1].f_kwargs["agent_list"], ["003", "004"])
        self.assertEqual(reqs["w1"][0][1].f_kwargs["offset"], 0)
        self.assertEqual(reqs["w1"][0][1].f_kwargs["limit"], 4)

        def page(req: DapiRequest) -> AffectedItemsWazuhResult:
            ids = req.f_kwargs["agent_list"]
            return AffectedItemsWazuhResult(affected_items=[{"id": i} for i in ids],
                                            sort_fields=["id"])
        self.answer_all(self.w1, page)
        self.answer_all(self.w2, page)
        merged = self.successResultOf(d)
        self.assertEqual([i["id"] for i in merged.affected_items], ["001", "002", "003"])
        self.assertEqual(merged.total_affected_items, 7)  # 000..006

    def test_node_id_and_unknown_node(self) -> None:
        api = self.env.api
        d = api.call("wazuh.cluster.get_node_wrapper", {"node_id": "w2"}, "distributed_master")
        [(rid, req)] = self.w2.requests()
        self.assertNotIn("node_id", req.f_kwargs)
        api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": "w2"}]))
        self.assertEqual(self.successResultOf(d).affected_items, [{"node": "w2"}])
        d = api.call("wazuh.cluster.get_node_wrapper", {"node_list": ["w1", "ghost"]},
                     "distributed_master")
        [(rid, _)] = self.w1.requests()
        api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": "w1"}]))
        merged = self.successResultOf(d)
        self.assertEqual(merged.affected_items, [{"node": "w1"}])
        [(error, ids)] = merged.failed_items.items()
        self.assertEqual((error.code, ids), (3022, {"ghost"}))

    def test_node_list_star_and_broadcast_reach_every_node(self) -> None:
        api = self.env.api
        for kwargs in ({"node_list": "*"}, {}):
            d = api.call("wazuh.cluster.get_node_wrapper", kwargs, "distributed_master",
                         broadcasting=True)
            for peer in (self.w1, self.w2):
                rid, _ = peer.requests()[-1]
                api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": rid}]))
            self.assertEqual(self.successResultOf(d).total_affected_items, 3)

    def test_agents_and_node_id(self) -> None:
        """With node_id too, only that node runs it, listed even without those agents."""
        solver = Deferred.fromCoroutine(self.env.api.solver_nodes(request(
            "wazuh.agent.get_agents", "distributed_master", agent_list=["001", "003"],
            node_id="w2")))
        self.assertEqual(self.successResultOf(solver), {"w2": []})
        solver = Deferred.fromCoroutine(self.env.api.solver_nodes(request(
            "wazuh.agent.get_agents", "distributed_master", agent_list=["003", "005"],
            node_id="w1")))
        self.assertEqual(self.successResultOf(solver), {"w1": ["003"]})
        d = self.env.api.call("wazuh.agent.get_agents", {"agent_list": ["003", "005"],
                                                         "node_id": "w1"},
                              "distributed_master")
        [(rid, req)] = self.w1.requests()
        self.assertEqual(req.f_kwargs, {"agent_list": ["003"]})
        self.assertEqual(self.w2.sent, [])
        self.env.api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"id": "003"}]))
        self.assertEqual(self.successResultOf(d).affected_items, [{"id": "003"}])

    def test_agents_without_list_go_where_agents_are(self) -> None:
        """No agents, no nodes named, no broadcast: the nodes that have agents."""
        solver = Deferred.fromCoroutine(self.env.api.solver_nodes(request(
            "wazuh.agent.get_agents_summary_status", "distributed_master")))
        # agent 000 has no node in this database: "unknown", merged into the master's share
        self.assertEqual(set(self.successResultOf(solver)), {"master-node", "unknown", "w1", "w2"})

    def test_worker_lost_mid_request_fails_at_once(self) -> None:
        api = self.env.api
        d = api.call("wazuh.cluster.get_node_wrapper", {"node_list": ["w1", "w2"]},
                     "distributed_master")
        rid, _ = self.w1.requests()[-1]
        api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": "w1"}]))
        self.assertNoResult(d)
        api.peer_gone("w2", WazuhClusterError(3022, extra_message="w2 disconnected"))
        merged = self.successResultOf(d)
        self.assertEqual(merged.affected_items, [{"node": "w1"}])
        self.assertEqual([e.code for e in merged.failed_items], [3022])

    def test_from_cluster_runs_locally(self) -> None:
        req = request("wazuh.cluster.get_node_wrapper", "distributed_master", node_id="w1")
        req.from_cluster = True
        answer = result_of(Deferred.fromCoroutine(self.env.api.handle(req, "w1*1")))
        self.assertEqual(answer.affected_items[0]["node"], "master-node")
        self.assertEqual(self.w1.sent, [])

    def test_exception_answer_wins(self) -> None:
        d = self.env.api.call("wazuh.cluster.get_node_wrapper", {"node_list": ["w1", "w2"]},
                              "distributed_master")
        for peer in (self.w1, self.w2):
            rid, _ = peer.requests()[-1]
            self.env.api.answered(rid, WazuhInternalError(1000, extra_message="x"))
        self.assertIsInstance(self.failureResultOf(d).value, WazuhException)


