"""DAPI payloads produced by the real Wazuh 4.7.5 code (tests/data/wazuh-4.7.5/dapi/, origin in
tests/data/README.md): we decode them, answer them natively, and encode what Wazuh encodes.

Also the discrepancies the run against real Wazuh 4.7.5 nodes found (docs/interop.md, "DAPI
and Sendsync"): ``-a``'s filters, ``nodes`` filled as Wazuh's API fills it, shares keeping the
caller's keys, and the messages of get_node_wrapper/read_config_wrapper.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.test_service import Env, FakePeer, request, result_of
from wazuhcluster.cli import control
from wazuhcluster.dapi import client, codec
from wazuhcluster.dapi.codec import DapiRequest
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhResourceNotFound,
)
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.commands import GET_NODES

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "wazuh-4.7.5", "dapi")


def text(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


class RequestVectorTests(SynchronousTestCase):
    """Requests as Wazuh's cluster_control, API (DistributedAPI.to_dict) and worker send them."""

    def test_every_request_decodes_to_a_native_function(self) -> None:
        env = Env(self)
        names = sorted(n for n in os.listdir(DATA) if n.endswith(".request.json"))
        self.assertEqual(len(names), 8)
        for name in names:
            raw = text(name)
            req = DapiRequest.from_json(raw)
            self.assertIn(req.f.dotted, env.api.registered(), name)
            # what we re-encode carries the same fields and values as what Wazuh sent
            ours = json.loads(req.to_json())
            theirs = json.loads(raw)
            for key, value in theirs.items():
                if key in ("is_async", "local_client_arg", "basic_services"):
                    continue  # accepted, not acted upon (see docs/protocol.md)
                self.assertEqual(ours.get(key), value, f"{name}: {key}")

    def test_worker_requests_carry_the_node_names(self) -> None:
        req = DapiRequest.from_json(text("worker_node_self.request.json"))
        self.assertEqual(req.nodes, ["our-master", "wz-worker1"])
        self.assertEqual(req.f_kwargs, {"node_id": "wz-worker1"})
        self.assertEqual(req.request_type, "distributed_master")

    def test_cluster_control_a_request_answered_natively(self) -> None:
        env = Env(self)
        env.dapi_env.add_agents(3)
        req = DapiRequest.from_json(text("cluster_control_a.request.json"))
        answer = result_of(Deferred.fromCoroutine(env.api.handle(req, "local")))
        self.assertEqual(answer["totalItems"], 4)
        self.assertEqual([a["id"] for a in answer["items"]], ["000", "001", "002", "003"])
        self.assertEqual(set(answer["items"][0]), {"id", "ip", "name", "status", "node_name",
                                                   "version"})

    def test_our_a_sends_what_cluster_control_sends(self) -> None:
        """Found against a real Wazuh master: our -a sent null filters, which Wazuh reads as
        "status IS NULL AND node_name IS NULL" and answered with no agent."""
        sent: list[DapiRequest] = []

        async def fake_call(reactor: Any, socket_path: str, req: DapiRequest,
                            final_timeout: float = 200.0) -> Any:
            sent.append(req)
            return {"items": [], "totalItems": 0}
        self.patch(client, "dapi_call", fake_call)
        result_of(Deferred.fromCoroutine(control.fetch_agents(Clock(), "/nonexistent")))
        [req] = sent
        theirs = json.loads(text("cluster_control_a.request.json"))
        self.assertEqual(json.loads(req.to_json())["f"], theirs["f"])
        self.assertEqual(req.f_kwargs["filters"], theirs["f_kwargs"]["filters"])
        self.assertEqual(sorted(req.f_kwargs["select"]), sorted(theirs["f_kwargs"]["select"]))
        self.assertIsNone(req.f_kwargs["limit"])


class ResultVectorTests(SynchronousTestCase):
    """Answers (the ``dapi_res`` payload) as Wazuh's WazuhJSONEncoder writes them."""

    def roundtrip(self, name: str) -> Any:
        raw = text(name)
        value = codec.loads(raw)
        self.assertEqual(json.loads(codec.dumps(value)), json.loads(raw), name)
        return value

    def test_affected_items_with_datetimes_and_failed_items(self) -> None:
        result = self.roundtrip("get_agents.result.json")
        self.assertIsInstance(result, AffectedItemsWazuhResult)
        self.assertEqual([a["id"] for a in result.affected_items], ["001", "002"])
        [(error, ids)] = result.failed_items.items()
        self.assertIsInstance(error, WazuhResourceNotFound)
        self.assertEqual((error.code, ids), (1701, {"099"}))
        rendered = result.render()
        self.assertEqual(rendered["message"], "Some agents information was not returned")
        self.assertEqual(rendered["error"], 2)

    def test_plain_dict_result(self) -> None:
        result = self.roundtrip("get_agents_overview.result.json")
        self.assertEqual(result["totalItems"], 3)

    def test_exceptions(self) -> None:
        error = self.roundtrip("wazuh_error.result.json")
        self.assertIsInstance(error, WazuhError)
        self.assertEqual(error.code, 1017)
        self.assertIn("wazuh-db->stopped", str(error))
        missing = self.roundtrip("resource_not_found.result.json")
        self.assertIsInstance(missing, WazuhResourceNotFound)
        self.assertEqual(missing.code, 1730)

    def test_our_get_node_wrapper_encodes_as_wazuh(self) -> None:
        """Wazuh's get_node_wrapper has no some_msg; ours had one."""
        theirs = json.loads(text("get_node_wrapper.result.json"))
        env = Env(self)
        ours = result_of(env.api.call("wazuh.cluster.get_node_wrapper", {}, "local_any"))
        encoded = json.loads(codec.dumps(ours))
        theirs["__wazuh_result__"]["__object__"]["affected_items"] = [
            {"node": "master-node", "cluster": "wazuh", "type": "master"}]
        self.assertEqual(encoded, theirs)
        config = result_of(env.api.call("wazuh.cluster.read_config_wrapper", {}, "local_any"))
        self.assertEqual(config.some_msg, "")


class NodesFieldTests(SynchronousTestCase):
    """A Wazuh 4.7.5 master answers a request naming a node only if ``nodes`` lists it."""

    def test_worker_fills_nodes_from_the_master(self) -> None:
        env = Env(self, role="worker")
        master = FakePeer()
        env.node.peer = master
        asked: list[tuple[bytes, bytes]] = []

        def request_master(command: bytes, payload: bytes) -> Deferred[bytes]:
            asked.append((command, payload))
            return succeed(json.dumps({"items": [{"name": "wz-master"}, {"name": "worker1"}],
                                       "totalItems": 2}).encode())
        env.node.request_master = request_master
        d = env.api.call("wazuh.cluster.get_node_wrapper", {"node_id": "worker1"},
                         "distributed_master")
        [(rid, sent)] = master.requests()
        self.assertEqual(sent.nodes, ["wz-master", "worker1"])
        self.assertEqual([c for c, _ in asked], [GET_NODES])
        env.api.answered(rid, {"ok": 1})
        self.assertEqual(self.successResultOf(d), {"ok": 1})

    def test_worker_leaves_other_requests_alone(self) -> None:
        env = Env(self, role="worker")
        master = FakePeer()
        env.node.peer = master
        env.api.call("wazuh.agent.get_agents", {}, "distributed_master")
        [(_, sent)] = master.requests()
        self.assertEqual(sent.nodes, [])  # no get_nodes round trip for it

    def test_worker_given_nodes_kept(self) -> None:
        env = Env(self, role="worker")
        master = FakePeer()
        env.node.peer = master
        req = request("wazuh.cluster.get_node_wrapper", "distributed_master", node_id="w2")
        req.nodes = ["m", "w2"]
        Deferred.fromCoroutine(env.api.handle(req, "local"))
        [(_, sent)] = master.requests()
        self.assertEqual(sent.nodes, ["m", "w2"])

    def test_master_fills_nodes_for_its_shares(self) -> None:
        env = Env(self)
        w1 = env.add_worker("w1")
        env.api.call("wazuh.cluster.get_node_wrapper", {"node_id": "w1"}, "distributed_master")
        [(_, sent)] = w1.requests()
        self.assertEqual(sent.nodes, ["master-node", "w1"])


class ShareKeysTests(SynchronousTestCase):
    def test_shares_add_no_pagination_keys_the_caller_did_not_give(self) -> None:
        """Wazuh's get_node_wrapper takes no ``offset``: a share to a Wazuh worker that
        carried one failed there with "unexpected keyword argument 'offset'"."""
        env = Env(self)
        w1, w2 = env.add_worker("w1"), env.add_worker("w2")
        d = env.api.call("wazuh.cluster.get_node_wrapper", {"node_list": "*"},
                         "distributed_master")
        for peer in (w1, w2):
            [(rid, sent)] = peer.requests()
            self.assertEqual(sent.f_kwargs, {})
            env.api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": rid}]))
        self.assertEqual(self.successResultOf(d).total_affected_items, 3)


class LinkLostWhileSendingTests(SynchronousTestCase):
    def test_send_failure_is_a_failed_item_said_once(self) -> None:
        """Seen with a stalled Wazuh worker: the link closed before the worker took the
        ``dapi``; the answer was "Error 3018 - Error sending request: Error 3018 - Error
        sending request: connection lost" instead of a failed item for that node."""
        env = Env(self)
        w1, w2 = env.add_worker("w1"), env.add_worker("w2")

        def lost(command: bytes, payload: bytes, timeout: float | None = None
                 ) -> Deferred[bytes]:
            return fail(ClusterError(3018, "connection lost"))
        w2.request = lost  # type: ignore[method-assign]
        d = env.api.call("wazuh.cluster.get_node_wrapper", {"node_list": ["w1", "w2"]},
                         "distributed_master")
        [(rid, _)] = w1.requests()
        env.api.answered(rid, AffectedItemsWazuhResult(affected_items=[{"node": "w1"}]))
        merged = self.successResultOf(d)
        self.assertEqual(merged.affected_items, [{"node": "w1"}])
        [(error, ids)] = merged.failed_items.items()
        self.assertEqual((error.code, ids), (3018, {"w2"}))
        self.assertEqual(str(error), "Error 3018 - Error sending request: connection lost")


class StatusJsonTests(SynchronousTestCase):
    def test_get_status_json_is_wazuhs_wazuh_result(self) -> None:
        """Seen side by side (the same call answered by a Wazuh master and by ours): Wazuh
        answers a WazuhResult {"data": {...}}, ours answered the bare dict."""
        theirs = json.loads(text("get_status_json.result.json"))
        env = Env(self)
        ours = result_of(env.api.call("wazuh.cluster.get_status_json", {}, "local_any"))
        self.assertEqual(json.loads(codec.dumps(ours)), theirs)


class BasicInfoTests(SynchronousTestCase):
    def test_same_fields_as_wazuh_with_compilation_date(self) -> None:
        """Seen side by side: Wazuh's item has ``compilation_date`` (its installation date,
        the current time when it has none), ours had no such field."""
        theirs = json.loads(text("get_basic_info.result.json"))
        [item] = theirs["__wazuh_result__"]["__object__"]["affected_items"]
        env = Env(self)
        ours = result_of(env.api.call("wazuh.manager.get_basic_info", {}, "local_any"))
        [mine] = json.loads(codec.dumps(ours))["__wazuh_result__"]["__object__"][
            "affected_items"]
        self.assertEqual(list(mine), list(item))
        encoded = json.loads(codec.dumps(ours))["__wazuh_result__"]["__object__"]
        for key in ("all_msg", "some_msg", "none_msg"):
            self.assertEqual(encoded[key], theirs["__wazuh_result__"]["__object__"][key])
        self.assertEqual(mine["compilation_date"],
                         {"__wazuh_datetime__": "2023-11-14T22:13:20+00:00"})  # the Clock
        metadata = os.path.join(env.dapi_env.home, "framework", "wazuh", "core")
        os.makedirs(metadata)
        with open(os.path.join(metadata, "wazuh.json"), "w") as f:
            json.dump({"installation_date": "Thu Apr 25 10:43:27 UTC 2024"}, f)
        ours = result_of(env.api.call("wazuh.manager.get_basic_info", {}, "local_any"))
        self.assertEqual(ours.affected_items[0]["compilation_date"].isoformat(),
                         "2024-04-25T10:43:27+00:00")
