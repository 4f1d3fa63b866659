"""The DAPI's tagged JSON and request object: round trips, and names that never run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import CodecError, DapiRequest, FunctionName, UnhandledException
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhInternalError,
    WazuhResourceNotFound,
    WazuhResult,
)

#: The request 4.7.5's cluster_control -a sends (its shape, as documented).
OVERVIEW_REQUEST = json.dumps({
    "f": {"__callable__": {"__name__": "get_agents_overview", "__module__": "wazuh.core.agent",
                           "__qualname__": "Agent.get_agents_overview", "__type__": "function"}},
    "f_kwargs": {"filters": {"status": None, "node_name": None}, "limit": None,
                 "select": ["id", "ip", "name", "status", "node_name", "version"]},
    "from_cluster": False, "is_async": False, "wait_for_complete": False,
    "local_client_arg": None, "request_type": "local_master", "basic_services": None,
    "rbac_permissions": {"rbac_mode": "black"}, "current_user": "", "broadcasting": False,
    "nodes": [], "api_timeout": 10})


class TagsTests(SynchronousTestCase):
    def roundtrip(self, value: object) -> object:
        return codec.loads(codec.dumps(value))

    def test_callable(self) -> None:
        f = FunctionName("wazuh.core.agent", "Agent.get_agents_overview")
        encoded = json.loads(codec.dumps(f))
        self.assertEqual(encoded["__callable__"]["__name__"], "get_agents_overview")
        self.assertEqual(self.roundtrip(f), f)
        self.assertEqual(f.dotted, "wazuh.core.agent.Agent.get_agents_overview")
        self.assertEqual(FunctionName.from_dotted(f.dotted), f)
        self.assertEqual(FunctionName.from_dotted("wazuh.agent.get_agents"),
                         FunctionName("wazuh.agent", "get_agents"))

    def test_wazuh_result(self) -> None:
        result = WazuhResult({"data": {"a": 1}, "message": "m"}, str_priority=["KO", "OK"])
        back = self.roundtrip(result)
        self.assertIsInstance(back, WazuhResult)
        self.assertEqual(back.render(), result.render())
        self.assertEqual(back.str_priority, ["KO", "OK"])

    def test_affected_items_result(self) -> None:
        result = AffectedItemsWazuhResult(affected_items=[{"id": "001"}], all_msg="all",
                                          some_msg="some", none_msg="none")
        result.add_failed_item("002", WazuhResourceNotFound(1701))
        back = self.roundtrip(result)
        self.assertIsInstance(back, AffectedItemsWazuhResult)
        self.assertEqual(back.render(), result.render())
        self.assertEqual(back.render()["data"]["failed_items"][0]["error"]["code"], 1701)

    def test_exception(self) -> None:
        back = self.roundtrip(WazuhError(1724, extra_message="x", ids=["1"]))
        self.assertIsInstance(back, WazuhError)
        self.assertEqual((back.code, back.extra_message), (1724, "x"))
        encoded = json.loads(codec.dumps(WazuhInternalError(3021)))
        self.assertEqual(encoded["__wazuh_exception__"]["__class__"], "WazuhInternalError")
        self.assertEqual(encoded["__wazuh_exception__"]["__object__"]["title"],
                         "Wazuh Internal Error")

    def test_datetime(self) -> None:
        when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        self.assertEqual(json.loads(codec.dumps(when)), {"__wazuh_datetime__":
                                                          "2024-01-02T03:04:05+00:00"})
        self.assertEqual(self.roundtrip({"t": when}), {"t": when})
        naive = codec.loads('{"__wazuh_datetime__": "2024-01-02T03:04:05"}')
        self.assertEqual(naive, when)

    def test_unhandled_exception(self) -> None:
        back = self.roundtrip(ValueError("bad"))
        self.assertIsInstance(back, UnhandledException)
        self.assertEqual((back.class_name, back.args), ("ValueError", ("bad",)))

    def test_unhandled_exception_names_are_data(self) -> None:
        """A class name outside the allow-list is never looked up: it becomes Exception."""
        back = codec.loads('{"__unhandled_exc__": {"__class__": "__import__(\'os\').system",'
                           ' "__args__": ["id"]}}')
        self.assertIsInstance(back, UnhandledException)
        self.assertEqual(back.class_name, "Exception")

    def test_unknown_exception_class_is_safe(self) -> None:
        back = codec.loads('{"__wazuh_exception__": {"__class__": "os.system", "__object__": '
                           '{"code": 1000}}}')
        self.assertIsInstance(back, WazuhInternalError)

    def test_malformed(self) -> None:
        for text in ("{", '{"__callable__": 3}', '{"__wazuh_datetime__": 5}',
                     '{"__wazuh_result__": {"__class__": "Nope", "__object__": {}}}'):
            self.assertRaises((CodecError, ValueError), codec.loads, text)


class RequestTests(SynchronousTestCase):
    def test_wazuh_request(self) -> None:
        request = DapiRequest.from_json(OVERVIEW_REQUEST)
        self.assertEqual(request.f.dotted, "wazuh.core.agent.Agent.get_agents_overview")
        self.assertEqual(request.request_type, "local_master")
        self.assertEqual(request.api_timeout, 10)
        self.assertEqual(request.f_kwargs["limit"], None)
        again = DapiRequest.from_json(request.to_json())
        self.assertEqual(again, request)
        self.assertEqual(json.loads(request.to_json())["f"],
                         json.loads(OVERVIEW_REQUEST)["f"])

    def test_defaults(self) -> None:
        request = DapiRequest.from_json('{"f": {"__callable__": {"__name__": "get_agents", '
                                        '"__module__": "wazuh.agent", "__qualname__": '
                                        '"get_agents", "__type__": "function"}}}')
        self.assertEqual((request.request_type, request.from_cluster, request.f_kwargs),
                         ("local_master", False, {}))

    def test_wazuh_call_fields(self) -> None:
        """Requests a Wazuh node may execute say how Wazuh calls the function."""
        self.assertEqual(codec.request_fields("wazuh.cluster.get_health_nodes"),
                         {"is_async": True, "local_client_arg": "lc"})
        self.assertEqual(codec.request_fields("wazuh.agent.get_agents"),
                         {"is_async": False, "local_client_arg": None})
        from wazuhcluster.dapi.client import build_request
        request = json.loads(build_request("wazuh.cluster.get_nodes_info").to_json())
        self.assertEqual((request["is_async"], request["local_client_arg"]), (True, "lc"))
        request = json.loads(build_request("wazuh.core.agent.Agent.get_agents_overview")
                             .to_json())
        self.assertEqual((request["is_async"], request["local_client_arg"]), (False, None))
        self.assertEqual(request["api_timeout"], 10)  # Wazuh nodes expect a number

    def test_invalid(self) -> None:
        for text in ("[]", "{}", '{"f": 3}',
                     '{"f": "wazuh.agent.get_agents", "request_type": "remote"}',
                     '{"f": "wazuh.agent.get_agents", "f_kwargs": []}'):
            self.assertRaises(CodecError, DapiRequest.from_json, text)

    def test_error_from_text(self) -> None:
        error = codec.error_from_text("Error 3022 - Unknown node ID")
        self.assertEqual((error.code, error.extra_message), (3022, "Unknown node ID"))
        self.assertEqual(codec.error_from_text(codec.dumps(WazuhError(1701))).code, 1701)
        self.assertEqual(codec.error_from_text("garbage").code, 3000)
